import FanSync
import Foundation
import Glibc
import XCTest

/// `fansync verify` end to end: the real binary, real rsync, a local target and sshd on
/// loopback; backups made with a plain `rsync -a` and then damaged by hand.
final class VerifyTests: XCTestCase {
    override func setUp() { continueAfterFailure = false }

    /// The mirror tests' hostile names, and a few that matter to rsync's escaping.
    static let names: [[UInt8]] = MirrorScenarioTests.hostileNames + [
        Array("back\\#012slash".utf8),          // what rsync would write for "back\nslash"
        Array("tab\tname".utf8),
        Array("trailing space ".utf8),
        Array("cr\rname".utf8),
    ]

    func testLocal() throws { try scenario(ssh: nil) }

    func testSSH() throws {
        let server = try SSHServer()
        defer { server.stop() }
        try scenario(ssh: server)
    }

    struct Run {
        let status: Int32
        let out: String
        let err: String
        var lines: [String] { out.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
        /// The difference lines, without the summaries.
        var differences: Set<String> {
            Set(lines.filter { l in ["missing ", "extra ", "different ", "metadata "].contains { l.hasPrefix($0) } })
        }
    }

    func verify(_ args: [String]) throws -> Run {
        let r = try Subprocess.run([Harness.fansyncBinary, "verify"] + args)
        return Run(status: r.status, out: r.outputText, err: r.errorText)
    }

    func show(_ rel: [UInt8]) -> String { SyncPath(bytes: rel).description }

    func scenario(ssh: SSHServer?) throws {
        let work = Harness.tempDirectory("verify")
        defer { Harness.removeTree(work) }
        let src = work + "/source"
        mkdir(src, 0o755)
        let dst = ssh?.makeBackupDirectory("verify-backup") ?? (work + "/backup")
        defer { if ssh != nil { Harness.removeTree(dst) } }
        let target = ssh?.target(dst) ?? dst
        let common = ["--exclude", "*.tmp"] + (ssh?.fansyncOptions ?? [])
        let slash = UInt8(ascii: "/")

        // The source: a file of every category per hostile name, a directory only the
        // source has, a symlink, an excluded file.
        var big = [UInt8](repeating: 0, count: 256 << 10)
        for i in big.indices { big[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
        XCTAssertTrue(writeFile(bytesPath(src, Array("data.bin".utf8)), big))
        mkdirs(src, "code")
        writeFile(src, "code/main.py", "print('hi')\n")
        symlink("code/main.py", src + "/link")
        mkdirs(src, "missing-dir/sub")
        writeFile(src, "missing-dir/sub/file", "only on the source\n")
        writeFile(src, "scratch.tmp", "excluded\n")
        for category in ["missing", "extra", "different", "metadata"] { mkdirs(src, category) }
        writeFile(src, "extra/keep", "keep\n")
        for name in Self.names {
            for category in ["missing", "different", "metadata"] {
                XCTAssertTrue(writeFile(bytesPath(src, Array(category.utf8) + [slash] + name), name + [10]))
            }
        }

        // An identical backup, made with plain rsync; over ssh, owned by the login user.
        let copy = try Subprocess.run(["rsync", "-a", src + "/", dst + "/"])
        XCTAssertEqual(copy.status, 0, copy.errorText)
        func chownBackup() {
            if let ssh { _ = try? Subprocess.run(["chown", "-R", ssh.user, dst]) }
        }
        chownBackup()

        var r = try verify([src, target] + common)
        XCTAssertEqual(r.status, 0, "identical trees: \(r.out)\n\(r.err)")
        XCTAssertEqual(r.differences, [], r.out)
        XCTAssertTrue(r.lines.last?.hasPrefix("source: identical: \(src) and ") == true, r.out)

        // Damage the backup.
        func changeByteKeepingTimes(_ rel: [UInt8]) {
            let p = bytesPath(dst, rel)
            var st = stat()
            XCTAssertEqual(cPath(p) { lstat($0, &st) }, 0)
            guard var content = readBytes(p), !content.isEmpty else { return XCTFail("read \(show(rel))") }
            content[content.count / 2] ^= 0x20
            let fd = cPath(p) { open($0, O_WRONLY) }
            XCTAssertGreaterThanOrEqual(fd, 0)
            _ = content.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            close(fd)
            var times = [st.st_atim, st.st_mtim]
            XCTAssertEqual(cPath(p) { utimensat(AT_FDCWD, $0, &times, AT_SYMLINK_NOFOLLOW) }, 0)
            var after = stat()
            _ = cPath(p) { lstat($0, &after) }
            XCTAssertEqual(after.st_size, st.st_size)
            XCTAssertEqual(after.st_mtim.tv_sec, st.st_mtim.tv_sec)
            XCTAssertEqual(after.st_mtim.tv_nsec, st.st_mtim.tv_nsec)
        }
        var expected = Set<String>()
        changeByteKeepingTimes(Array("data.bin".utf8))
        expected.insert("different data.bin")
        for name in Self.names {
            let different = Array("different/".utf8) + name
            changeByteKeepingTimes(different)
            expected.insert("different \(show(different))")

            let missing = Array("missing/".utf8) + name
            XCTAssertEqual(cPath(bytesPath(dst, missing)) { unlink($0) }, 0)
            expected.insert("missing \(show(missing))")

            let extra = Array("extra/".utf8) + name
            XCTAssertTrue(writeFile(bytesPath(dst, extra), Array("only on the backup".utf8)))
            expected.insert("extra \(show(extra))")

            let metadata = Array("metadata/".utf8) + name
            XCTAssertEqual(cPath(bytesPath(dst, metadata)) { chmod($0, 0o600) }, 0)
            expected.insert("metadata \(show(metadata)) (perms)")
        }
        Harness.removeTree(dst + "/missing-dir")
        expected.formUnion(["missing missing-dir/", "missing missing-dir/sub/", "missing missing-dir/sub/file"])
        mkdirs(dst, "extra-dir")
        writeFile(dst, "extra-dir/f", "x\n")
        expected.formUnion(["extra extra-dir/", "extra extra-dir/f"])
        // Another symlink target, with the original's time: only the target differs.
        var linkTimes = stat()
        XCTAssertEqual(lstat(dst + "/link", &linkTimes), 0)
        unlink(dst + "/link")
        symlink("data.bin", dst + "/link")
        var times = [linkTimes.st_atim, linkTimes.st_mtim]
        XCTAssertEqual(utimensat(AT_FDCWD, dst + "/link", &times, AT_SYMLINK_NOFOLLOW), 0)
        expected.insert("metadata link (symlink target)")
        // A file's time is a difference; a directory's is not.
        var old = [timespec(tv_sec: 1_000_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000_000, tv_nsec: 0)]
        XCTAssertEqual(utimensat(AT_FDCWD, dst + "/code/main.py", &old, 0), 0)
        XCTAssertEqual(utimensat(AT_FDCWD, dst + "/code", &old, 0), 0)
        expected.insert("metadata code/main.py (mtime)")
        // Excluded: compared on neither side, whatever the backup holds.
        writeFile(dst, "scratch.tmp", "changed on the backup\n")
        chownBackup()

        if ssh == nil {
            // Only content hashing sees the changed bytes: rsync's quick check does not.
            let quick = try Subprocess.run(["rsync", "-a", "--dry-run", "--itemize-changes", src + "/", dst + "/"])
            XCTAssertFalse(quick.outputText.contains("data.bin"), quick.outputText)
        }

        r = try verify([src, target] + common)
        XCTAssertEqual(r.status, 1, "\(r.out)\n\(r.err)")
        XCTAssertEqual(r.differences.subtracting(expected), [], "unexpected lines")
        XCTAssertEqual(expected.subtracting(r.differences), [], "lines not printed; output:\n\(r.out)")
        XCTAssertEqual(r.differences.count, r.lines.count - 1, "one line per difference, then the summary:\n\(r.out)")
        let n = Self.names.count
        XCTAssertTrue(r.lines.last!.hasPrefix("source: \(expected.count) differences (\(n + 3) missing, \(n + 2) extra, \(n + 1) different, \(n + 2) metadata)"), r.lines.last!)
        XCTAssertEqual(r.err, "")

        // JSON: the same, for a program.
        r = try verify([src, target, "--json"] + common)
        XCTAssertEqual(r.status, 1)
        let json = try XCTUnwrap(JSON.parse(r.out), r.out)
        XCTAssertEqual(json["status"]?.number, 1)
        let mirror = try XCTUnwrap(json["mirrors"]?.array?.first)
        XCTAssertEqual(mirror["counts"]?["different"]?.number, Double(n + 1))
        XCTAssertEqual(mirror["differences"]?.array?.count, expected.count)
        let invalid = mirror["differences"]?.array?.first { $0["path_hex"]?.string == (Array("missing/".utf8) + MirrorScenarioTests.hostileNames[11]).map { String(format: "%02x", $0) }.joined() }
        XCTAssertEqual(invalid?["kind"]?.string, "missing", "invalid UTF-8 given exactly in path_hex")

        // A sample: regular files of the source only, each reported; no extras.
        r = try verify([src, target, "--sample", "100000"] + common)
        XCTAssertEqual(r.status, 1, r.out)
        let sampleExpected = expected.filter { !$0.hasPrefix("extra ") && $0 != "metadata link (symlink target)" }
        XCTAssertEqual(r.differences, sampleExpected, r.out)
        XCTAssertTrue(r.lines.contains("ok extra/keep"), r.out)
        XCTAssertTrue(r.lines.last!.contains("a sample of \(3 * n + 4) of the \(3 * n + 4) regular files"), r.lines.last!)
        r = try verify([src, target, "--sample", "3"] + common)
        XCTAssertEqual(r.lines.filter { $0.hasPrefix("ok ") || $0.hasPrefix("different ") || $0.hasPrefix("metadata ") || ($0.hasPrefix("missing ") && !$0.hasSuffix("/")) }.count, 3, r.out)
        XCTAssertTrue(r.lines.last!.contains("a sample of 3 of the \(3 * n + 4) regular files"), r.lines.last!)
        XCTAssertFalse(r.lines.contains { $0.hasPrefix("extra ") })

        // --fix: the differences go with the mirror's own transfer; the second pass is clean.
        r = try verify([src, target, "--fix"] + common)
        XCTAssertEqual(r.status, 0, "\(r.out)\n\(r.err)")
        XCTAssertTrue(r.lines.last!.hasPrefix("source: after --fix: identical"), r.out)
        XCTAssertEqual(treeDifferences(src, dst).filter { !$0.hasPrefix("scratch.tmp") }, [])
        XCTAssertEqual(readBytes(bytesPath(dst, Array("scratch.tmp".utf8))), Array("changed on the backup\n".utf8), "an excluded file is left alone")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/pwned"), "a name reached a shell")
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/pwned"), "a name reached a shell")
        r = try verify([src, target] + common)
        XCTAssertEqual(r.status, 0, r.out)

        if let ssh {
            // A backup directory that is not there is an error, not "everything missing".
            r = try verify([src, ssh.target(dst + "/not-there")] + common)
            XCTAssertEqual(r.status, 2, r.out)
            XCTAssertTrue(r.err.contains("does not exist"), r.err)
            // An unreachable host: exit 2, and why.
            r = try verify([src, "\(ssh.user)@127.0.0.1:1:\(dst)"] + common)
            XCTAssertEqual(r.status, 2, r.out)
            XCTAssertTrue(r.err.hasPrefix("fansync verify: source: rsync exited with status "), r.err)
            XCTAssertTrue(r.err.contains("ssh: connect to host 127.0.0.1 port 1: Connection refused"), r.err)
            XCTAssertEqual(r.err.unicodeScalars.filter { $0 == "\n" || $0 == "\r" }.count, 1, "one line: \(r.err)")
        }
    }

    func testBadArguments() throws {
        let work = Harness.tempDirectory("verify-args")
        defer { Harness.removeTree(work) }
        mkdir(work + "/src", 0o755)
        mkdir(work + "/dst", 0o755)
        for (args, message) in [
            ([], "give a SOURCE directory and a TARGET"),
            ([work + "/src"], "give a SOURCE directory and a TARGET"),
            ([work + "/src", work + "/dst", "--sample", "0"], "--sample: '0' is not a whole number >= 1"),
            ([work + "/src", work + "/dst", "--sample", "many"], "--sample: 'many' is not a whole number >= 1"),
            ([work + "/src", work + "/dst", "--frobnicate"], "unknown option --frobnicate (see fansync verify --help)"),
            ([work + "/src", work + "/dst", "extra-arg"], "too many arguments: extra-arg"),
            ([work + "/nope", work + "/dst"], "the source \(work)/nope cannot be read"),
            ([work + "/src", work + "/not-there"], "the backup directory \(work)/not-there does not exist"),
            ([work + "/src", "rsync://host/module"], "invalid target"),
            (["--config", work + "/none.lua"], "none.lua"),
        ] as [([String], String)] {
            let r = try verify(args)
            XCTAssertEqual(r.status, 2, "\(args): \(r.out) \(r.err)")
            XCTAssertTrue(r.err.hasPrefix("fansync verify: "), r.err)
            XCTAssertTrue(r.err.contains(message), "\(args): \(r.err)")
            XCTAssertEqual(r.err.unicodeScalars.filter { $0 == "\n" || $0 == "\r" }.count, 1, "one line: \(r.err)")
            XCTAssertEqual(r.out, "")
        }
        let help = try verify(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.out.contains("--sample N"))
        let usage = try Subprocess.run([Harness.fansyncBinary, "--help"])
        XCTAssertTrue(usage.outputText.contains("verify SOURCE TARGET"))
    }

    /// --config verifies every sync{}, --name one of them; the mirror's excludes apply.
    func testConfig() throws {
        let work = Harness.tempDirectory("verify-config")
        defer { Harness.removeTree(work) }
        let a = work + "/a", b = work + "/b", da = work + "/backup-a", db = work + "/backup-b"
        for d in [a, b, da, db] { mkdir(d, 0o755) }
        writeFile(a, "one.txt", "1\n")
        writeFile(a, "skip.log", "excluded\n")
        writeFile(b, "two.txt", "2\n")
        func lua(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        let config = """
        sync { default.rsync, source = \(lua(a)), target = \(lua(da)), exclude = { "*.log" } }
        sync { default.rsync, source = \(lua(b)), target = \(lua(db)) }
        """
        try config.write(toFile: work + "/fansync.conf.lua", atomically: true, encoding: .utf8)
        for (s, d) in [(a, da), (b, db)] { XCTAssertEqual(try Subprocess.run(["rsync", "-a", "--exclude", "*.log", s + "/", d + "/"]).status, 0) }

        var r = try verify(["--config", work + "/fansync.conf.lua"])
        XCTAssertEqual(r.status, 0, "\(r.out)\n\(r.err)")
        XCTAssertEqual(r.lines.filter { $0.contains(": identical: ") }.count, 2, r.out)

        unlink(db + "/two.txt")
        r = try verify(["--config", work + "/fansync.conf.lua"])
        XCTAssertEqual(r.status, 1, r.out)
        XCTAssertEqual(r.differences, ["missing two.txt"], r.out)
        XCTAssertTrue(r.lines.contains("b: \(b) -> \(db)"), "a header per mirror: \(r.out)")

        let names = try XCTUnwrap(JSON.parse(try verify(["--config", work + "/fansync.conf.lua", "--json"]).out)?["mirrors"]?.array).compactMap { $0["name"]?.string }
        XCTAssertEqual(names.count, 2)
        r = try verify(["--config", work + "/fansync.conf.lua", "--name", names[0]])
        XCTAssertEqual(r.status, 0, r.out)
        r = try verify(["--config", work + "/fansync.conf.lua", "--name", names[1], "--sample", "10", "--fix"])
        XCTAssertEqual(r.status, 0, r.out)
        XCTAssertEqual(r.lines, ["missing two.txt",
                                 "b: 1 difference (1 missing, 0 extra, 0 different, 0 metadata): a sample of 1 of the 1 regular files of \(b) compared with \(db) by content; files only on the backup not looked for",
                                 "b: --fix: 1 path(s) sent: 1 file(s) transferred, 0 deleted",
                                 "b: after --fix: identical: a sample of 1 of the 1 regular files of \(b) compared with \(db) by content; files only on the backup not looked for"])
        XCTAssertEqual(readBytes(Array((db + "/two.txt").utf8)), Array("2\n".utf8))

        // A mirror that never deletes: files only on the backup are expected there.
        writeFile(db, "old.txt", "deleted on the source long ago\n")
        r = try verify([b, db, "--no-delete"])
        XCTAssertEqual(r.status, 0, r.out)
        XCTAssertTrue(r.lines.last!.hasSuffix("; files only on the backup not looked for (the mirror does not delete)"), r.out)
        r = try verify([b, db])
        XCTAssertEqual(r.status, 1, r.out)
        XCTAssertEqual(r.differences, ["extra old.txt"])
        r = try verify(["--config", work + "/fansync.conf.lua", "--name", "no-such-sync"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.err.contains("no sync{} named 'no-such-sync'"), r.err)
    }
}
