import FanSync
import Foundation
import Glibc
import XCTest

/// The mirror end to end: a real daemon on a real directory, real rsync to a real target
/// (a local directory, or sshd on loopback), each step ending with a byte-for-byte compare.
final class MirrorScenarioTests: XCTestCase {
    override func setUp() { continueAfterFailure = false }

    static let hostileNames: [[UInt8]] = [
        Array("with space".utf8),
        Array("new\nline".utf8),
        Array("single'quote".utf8),
        Array("double\"quote".utf8),
        Array("$(touch pwned)".utf8),
        Array("`touch pwned2`".utf8),
        Array("star*".utf8),
        Array("-leading-dash".utf8),
        Array("--delete".utf8),
        Array("back\\slash".utf8),
        Array("semi;colon && echo hi".utf8),
        [0x69, 0x6e, 0x76, 0xff, 0xfe, 0x2d, 0x75, 0x74, 0x66, 0x38],   // "inv\xff\xfe-utf8"
        Array("ünïcødé 名前".utf8),
    ]

    /// Local targets: batches copied by the daemon itself (the default), and by rsync.
    func testLocalFanotify() throws { try runScenarios(backend: "fanotify", ssh: nil) }
    func testLocalInotify() throws { try runScenarios(backend: "inotify", ssh: nil) }
    func testLocalFanotifyRsyncBatches() throws { try runScenarios(backend: "fanotify", ssh: nil, extra: ["--local-copy", "rsync"]) }

    func testSSHFanotify() throws {
        let server = try SSHServer()
        defer { server.stop() }
        try runScenarios(backend: "fanotify", ssh: server)
    }

    func testSSHInotify() throws {
        let server = try SSHServer()
        defer { server.stop() }
        try runScenarios(backend: "inotify", ssh: server)
    }

    func runScenarios(backend: String, ssh: SSHServer?, extra: [String] = []) throws {
        let work = Harness.tempDirectory("work")
        defer { Harness.removeTree(work) }
        let src = work + "/source"
        let outside = work + "/outside"
        mkdir(src, 0o755); mkdir(outside, 0o755)
        let dst = ssh?.makeBackupDirectory("backup") ?? (work + "/backup")
        defer { if ssh != nil { Harness.removeTree(dst) } }

        // Content present before the daemon starts: the initial sync brings it over.
        writeFile(src, "existing.txt", "hello\n")
        mkdirs(src, "empty/dir")
        mkdirs(src, "code/pkg")
        writeFile(src, "code/pkg/mod.py", "print('x')\n", mode: 0o755)
        symlink("code/pkg/mod.py", src + "/link-to-mod")
        symlink("/etc/passwd", src + "/absolute-link")
        for name in Self.hostileNames { writeFile(bytesPath(src, name), name + [10]) }

        // The scenario deletes the 5,000-file burst, most of the tree: allowed here (the
        // delete safety that would hold it has its own tests in IndexMirrorTests).
        var args = [src, ssh?.target(dst) ?? dst, "--backend", backend, "--max-processes", "3", "--open-file-interval", "0.5",
                    "--allow-mass-delete"]
        args += (ssh?.fansyncOptions ?? []) + extra
        let daemon = try DaemonProcess(arguments: args, workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        XCTAssertTrue(daemon.log.contains("with \(backend)"), "backend in log:\n\(daemon.log)")
        let copied = ssh == nil && !extra.contains("rsync")
        XCTAssertEqual(daemon.log.contains("batches copied by fansync"), copied, "how batches travel, in the log:\n\(daemon.log)")
        waitConverged(src, dst, daemon: daemon)

        // create, overwrite, append, truncate, chmod, delete
        writeFile(src, "new.txt", "new file\n")
        waitConverged(src, dst, daemon: daemon)
        writeFile(src, "new.txt", "overwritten\n")
        XCTAssertTrue(writeFile(bytesPath(src, Array("new.txt".utf8)), Array("appended\n".utf8), append: true))
        waitConverged(src, dst, daemon: daemon)
        truncate(src + "/new.txt", 3)
        chmod(src + "/existing.txt", 0o600)
        waitConverged(src, dst, daemon: daemon)
        unlink(src + "/new.txt")
        rmdir(src + "/empty/dir")
        waitConverged(src, dst, daemon: daemon)

        // A hard link, and a file written but not closed (a log appended for days): synced
        // within the open-file interval while the writer still holds it open.
        XCTAssertEqual(link(src + "/code/pkg/mod.py", src + "/hardlink.py"), 0)
        let logFD = open(src + "/train.log", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        XCTAssertGreaterThanOrEqual(logFD, 0)
        defer { close(logFD) }
        _ = "epoch 1\n".withCString { write(logFD, $0, strlen($0)) }
        waitConverged(src, dst, daemon: daemon)
        _ = "epoch 2\n".withCString { write(logFD, $0, strlen($0)) }
        waitConverged(src, dst, daemon: daemon)

        // A directory of many files renamed: one rename on the backup, not a resend.
        mkdirs(src, "data/shard")
        for i in 0..<1000 { writeFile(src, "data/shard/f\(i).bin", String(repeating: "x", count: i)) }
        daemon.waitCaughtUp()
        waitConverged(src, dst, daemon: daemon)
        let sentBefore = daemon.firstSync?["files_sent"]?.number ?? 0
        let renamesBefore = daemon.firstSync?["renames"]?.number ?? 0
        XCTAssertEqual(rename(src + "/data/shard", src + "/data/renamed-shard"), 0)
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        let sentAfter = daemon.firstSync?["files_sent"]?.number ?? 0
        XCTAssertLessThan(sentAfter - sentBefore, 10, "a directory rename resent its files")
        XCTAssertGreaterThan(daemon.firstSync?["renames"]?.number ?? 0, renamesBefore, "no rename on the backup")

        // Rename a file; move out of the tree and into it.
        XCTAssertEqual(rename(src + "/existing.txt", src + "/code/moved.txt"), 0)
        waitConverged(src, dst, daemon: daemon)
        XCTAssertEqual(rename(src + "/code/moved.txt", outside + "/moved-out.txt"), 0)
        waitConverged(src, dst, daemon: daemon)
        mkdirs(outside, "incoming/deep")
        writeFile(outside, "incoming/deep/a.txt", "moved in\n")
        writeFile(outside, "incoming/b.txt", "moved in too\n")
        XCTAssertEqual(rename(outside + "/incoming", src + "/incoming"), 0)
        XCTAssertEqual(rename(outside + "/moved-out.txt", src + "/moved-back.txt"), 0)
        waitConverged(src, dst, daemon: daemon)

        // mkdir -p with files written at once.
        mkdirs(src, "x/y/z")
        for i in 0..<20 { writeFile(src, "x/y/z/file\(i)", "content \(i)\n") }
        writeFile(src, "x/top", "top\n")
        waitConverged(src, dst, daemon: daemon)

        // Editor-style save: write a temporary file, rename it over the original.
        writeFile(src, "code/.mod.py.swp", "print('saved')\n")
        XCTAssertEqual(rename(src + "/code/.mod.py.swp", src + "/code/pkg/mod.py"), 0)
        waitConverged(src, dst, daemon: daemon)

        // Hostile names: renamed, rewritten, deleted, and used as directory names.
        for (i, name) in Self.hostileNames.enumerated() {
            let p = bytesPath(src, name)
            switch i % 3 {
            case 0: XCTAssertEqual(renamePath(p, p + Array(".renamed".utf8)), 0)
            case 1: writeFile(p, Array("rewritten".utf8))
            default: _ = cPath(p) { unlink($0) }
            }
            makeDir(bytesPath(src, Array("dir-".utf8) + name))
            writeFile(bytesPath(src, Array("dir-".utf8) + name + [UInt8(ascii: "/")] + name), name)
        }
        waitConverged(src, dst, daemon: daemon)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/pwned"), "a name reached a shell")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/nonexistent/pwned"))

        // 5,000 files in one burst.
        mkdirs(src, "burst")
        for i in 0..<5000 { writeFile(src, "burst/b\(i % 50)-\(i).txt", "burst \(i)\n") }
        waitConverged(src, dst, daemon: daemon, timeout: 90)

        // A file rewritten while it is being sent.
        let big = [UInt8](repeating: 0x41, count: 32 << 20)
        XCTAssertTrue(writeFile(bytesPath(src, Array("big.bin".utf8)), big))
        usleep(30_000)
        for round in 0..<3 {
            XCTAssertTrue(writeFile(bytesPath(src, Array("big.bin".utf8)), [UInt8](repeating: UInt8(0x42 + round), count: (16 << 20) + round)))
            usleep(20_000)
        }
        waitConverged(src, dst, daemon: daemon, timeout: 60)

        // Delete a directory holding files; replace a directory by a file.
        XCTAssertEqual(try Subprocess.run(["rm", "-rf", "--", src + "/burst"]).status, 0)
        XCTAssertEqual(try Subprocess.run(["rm", "-rf", "--", src + "/x"]).status, 0)
        writeFile(src, "x", "now a file\n")
        waitConverged(src, dst, daemon: daemon, timeout: 60)

        daemon.waitCaughtUp()
        let status = daemon.firstSync
        XCTAssertEqual(status?["backend"]?.string, backend)
        XCTAssertEqual(status?["target_reachable"]?.bool, true)
        XCTAssertEqual(status?["last_error"], .null, "errors: \(daemon.log)")
        daemon.stop()
        XCTAssertTrue(treeDifferences(src, dst).isEmpty)
    }

    /// Excluded paths are never sent, and an exclude does not delete what the backup holds.
    func testExcludes() throws {
        let work = Harness.tempDirectory("excl")
        defer { Harness.removeTree(work) }
        let src = work + "/source", dst = work + "/backup"
        mkdir(src, 0o755)
        mkdirs(src, ".git/objects")
        writeFile(src, ".git/HEAD", "ref\n")
        mkdirs(src, "pkg/__pycache__")
        writeFile(src, "pkg/__pycache__/m.pyc", "bytecode")
        writeFile(src, "pkg/m.py", "code")
        let daemon = try DaemonProcess(arguments: [src, dst, "--exclude", ".git", "--exclude", "__pycache__", "--exclude", "*.tmp"], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        writeFile(src, "pkg/__pycache__/n.pyc", "bytecode")
        writeFile(src, "scratch.tmp", "tmp")
        writeFile(src, "pkg/n.py", "code")
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: dst + "/pkg/n.py") && Date() < deadline { usleep(50_000) }
        daemon.waitCaughtUp()
        XCTAssertTrue(FileManager.default.fileExists(atPath: dst + "/pkg/m.py"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dst + "/pkg/n.py"))
        for p in [".git", "pkg/__pycache__", "scratch.tmp"] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/" + p), "\(p) was sent")
        }
    }

    /// Bad arguments: a one-line reason and a non-zero exit, nothing started.
    func testBadArgumentsExitNonZero() throws {
        for args in [["run"], ["run", "/tmp"], ["run", "/tmp", "/x", "--delay", "soon"], ["run", "/tmp", "/x", "--bogus"],
                     ["run", "/tmp", "/tmp/inside"], ["run", "/nonexistent-source", "/tmp/x-backup"], ["frobnicate"]] {
            let r = try Subprocess.run([Harness.fansyncBinary] + args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.errorText.contains("fansync"), "\(args): \(r.errorText)")
        }
        let help = try Subprocess.run([Harness.fansyncBinary, "run", "--help"])
        XCTAssertEqual(help.status, 0)
        for flag in ["--exclude", "--delay", "--max-delays", "--max-processes", "--status-file", "--log-file", "--ssh-option", "--backend", "--open-file-interval"] {
            XCTAssertTrue(help.outputText.contains(flag), "help lacks \(flag)")
        }
    }

    /// A target that cannot be reached at start is retried, and the mirror converges once it can.
    func testUnreachableTargetIsRetried() throws {
        let work = Harness.tempDirectory("retry")
        defer { Harness.removeTree(work) }
        let src = work + "/source"
        mkdir(src, 0o755)
        writeFile(src, "a.txt", "a\n")
        // The backup's parent does not exist yet: rsync fails until it does.
        let dst = work + "/later/backup"
        let daemon = try DaemonProcess(arguments: [src, dst, "--rsync-option", "--no-mkpath"], workDir: work)
        defer { daemon.stop() }
        let deadline = Date().addingTimeInterval(20)
        while (daemon.firstSync?["retries"]?.number ?? 0) < 1 && Date() < deadline { usleep(50_000) }
        XCTAssertGreaterThanOrEqual(daemon.firstSync?["retries"]?.number ?? 0, 1, daemon.log)
        XCTAssertNotEqual(daemon.firstSync?["last_error"], .null)
        writeFile(src, "b.txt", "queued while failing\n")
        mkdirs(work, "later/backup")
        waitConverged(src, dst, daemon: daemon, timeout: 40)
    }
}

final class DaemonPrivilegeTests: XCTestCase {
    /// Running as root, the daemon keeps only the capabilities it needs, and so do the
    /// rsync and ssh it starts (bounding set).
    func testKeepsOnlyNeededCapabilities() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root") }
        let work = Harness.tempDirectory("caps")
        defer { Harness.removeTree(work) }
        let src = work + "/src"
        mkdir(src, 0o755)
        writeFile(src, "a", "a")
        let daemon = try DaemonProcess(arguments: [src, work + "/dst"], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        let status = try String(contentsOfFile: "/proc/\(daemon.pid)/status", encoding: .utf8)
        func mask(_ key: String) -> UInt64 {
            let line = status.split(separator: "\n").first { $0.hasPrefix(key + ":") }!
            return UInt64(line.split(separator: "\t").last!.trimmingCharacters(in: .whitespaces), radix: 16)!
        }
        let sysAdmin: UInt64 = 1 << 21, netAdmin: UInt64 = 1 << 12, sysModule: UInt64 = 1 << 16, setuid: UInt64 = 1 << 7
        for key in ["CapEff", "CapBnd"] {
            XCTAssertNotEqual(mask(key) & sysAdmin, 0, "\(key) lacks CAP_SYS_ADMIN")
            XCTAssertEqual(mask(key) & (netAdmin | sysModule | setuid), 0, "\(key) keeps capabilities it does not need")
        }
        XCTAssertTrue(daemon.log.contains("capabilities: keeping"), daemon.log)
    }
}

final class StopTests: XCTestCase {
    /// SIGTERM while a large file is being sent: the daemon stops (after its grace period)
    /// and the backup holds no partial file, neither under its name nor as rsync's temporary.
    func testStopDuringTransferLeavesNoPartialFile() throws {
        let work = Harness.tempDirectory("stop")
        defer { Harness.removeTree(work) }
        let src = work + "/src", dst = work + "/dst"
        mkdir(src, 0o755)
        let daemon = try DaemonProcess(arguments: [src, dst, "--bwlimit", "2000"], workDir: work)
        daemon.waitCaughtUp()
        var big = [UInt8](repeating: 0, count: 64 << 20)
        for i in stride(from: 0, to: big.count, by: 4096) { big[i] = UInt8(truncatingIfNeeded: i >> 12) }
        XCTAssertTrue(writeFile(Array((src + "/checkpoint.pt").utf8), big))
        // Wait until rsync has started writing its temporary file on the backup.
        let deadline = Date().addingTimeInterval(20)
        var sawTemp = false
        while Date() < deadline && !sawTemp {
            sawTemp = ((try? FileManager.default.contentsOfDirectory(atPath: dst)) ?? []).contains { $0.hasPrefix(".checkpoint.pt.") }
            usleep(20_000)
        }
        XCTAssertTrue(sawTemp, "no transfer in progress: \(daemon.log)")
        daemon.stop()
        let left = (try? FileManager.default.contentsOfDirectory(atPath: dst)) ?? []
        XCTAssertFalse(left.contains { $0.hasPrefix(".checkpoint.pt.") }, "rsync's temporary file was left: \(left)")
        if left.contains("checkpoint.pt") {
            XCTAssertEqual(readBytes(Array((dst + "/checkpoint.pt").utf8)), big, "a partial file appeared under the real name")
        }
        XCTAssertTrue(daemon.log.contains("stopping 1 transfer"), daemon.log)
    }
}

final class SourceSafetyTests: XCTestCase {
    override func setUp() { continueAfterFailure = false }

    /// A source that is a mount point, unmounted under the running daemon: the empty
    /// directory underneath is not mirrored, nothing is deleted on the backup.
    func testUnmountedSourceDeletesNothing() throws {
        try unmounted(backend: "fanotify")
        try unmounted(backend: "inotify")
    }

    func unmounted(backend: String) throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root to mount a tmpfs") }
        let work = Harness.tempDirectory("umount")
        defer { Harness.removeTree(work) }
        let src = work + "/src", dst = work + "/dst"
        mkdir(src, 0o755)
        let m = try Subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", src])
        guard m.status == 0 else { throw XCTSkip("cannot mount tmpfs: \(m.errorText)") }
        var mounted = true
        defer { if mounted { _ = try? Subprocess.run(["umount", "-l", src]) } }
        mkdirs(src, "data")
        for i in 0..<20 { writeFile(src, "data/f\(i)", "precious \(i)") }
        let daemon = try DaemonProcess(arguments: [src, dst, "--backend", backend], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        waitConverged(src, dst, daemon: daemon)
        XCTAssertEqual(try Subprocess.run(["umount", src]).status, 0)
        mounted = false
        // Something changes on the directory left behind: the daemon must not mirror it.
        writeFile(src, "stray", "x")
        let deadline = Date().addingTimeInterval(4)
        while Date() < deadline { usleep(100_000) }
        for i in 0..<20 {
            XCTAssertEqual(readBytes(Array("\(dst)/data/f\(i)".utf8)), Array("precious \(i)".utf8), "\(backend): backup lost data/f\(i)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/stray"))
        XCTAssertTrue(daemon.log.contains("not the directory the mirror started on") || daemon.log.contains("unmounted"),
                      "\(backend): the log says why nothing is sent:\n\(daemon.log)")
    }
}
