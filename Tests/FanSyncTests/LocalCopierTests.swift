import XCTest
@testable import FanSync
import CLinux

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's own copier for local targets, held to rsync: the same batch goes to one
/// backup through `LocalCopier` and to another through the real rsync (the arguments the
/// daemon uses), both starting from the same awkward backup, and the two results must be
/// identical entry by entry: type, content, link target, mode, owner, group, mtime (files,
/// symlinks and directories), device numbers.
final class LocalCopierTests: XCTestCase {
    private var dir: [UInt8] = []
    private var source: [UInt8] { dir + Array("/src".utf8) }
    private var outside: [UInt8] { dir + Array("/outside".utf8) }

    override func setUpWithError() throws {
        dir = try RulesTestSupport.makeTemporaryDirectory("copier")
        try RulesTestSupport.makeDirectory(source)
        try RulesTestSupport.makeDirectory(outside)
        try RulesTestSupport.writeFile(outside + Array("/keep".utf8), Array("outside\n".utf8))
    }
    override func tearDown() { RulesTestSupport.removeTree(dir) }

    static let hostile: [[UInt8]] = [
        Array("with space".utf8), Array("new\nline".utf8), Array("single'quote \"double\"".utf8), Array("$(touch pwned)".utf8),
        Array("star*".utf8), Array("-leading-dash".utf8), Array("--delete".utf8), [0x69, 0x6e, 0x76, 0xff, 0xfe],
        Array("back\\slash".utf8), Array("é ü 日本".utf8),
    ]

    private func path(_ base: [UInt8], _ rel: String) -> [UInt8] { base + [0x2F] + Array(rel.utf8) }
    private func write(_ p: [UInt8], _ content: [UInt8], mode: mode_t = 0o644, mtime: Int64? = nil, owner: (uid_t, gid_t)? = nil) throws {
        try RulesTestSupport.writeFile(p, content)
        _ = withCPath(p) { chmod($0, mode) }
        if let owner { _ = withCPath(p) { lchown($0, owner.0, owner.1) } }
        if let mtime { setMtime(p, mtime) }
    }
    private func setMtime(_ p: [UInt8], _ ns: Int64) {
        _ = withCPath(p) { clinux_set_mtime(AT_FDCWD, $0, ns / 1_000_000_000, Int(ns % 1_000_000_000), AT_SYMLINK_NOFOLLOW) }
    }
    private func mkdirs(_ p: [UInt8], mode: mode_t = 0o755) throws {
        try RulesTestSupport.makeDirectories(p)
        _ = withCPath(p) { chmod($0, mode) }
    }

    /// The source tree, and the list of paths a batch names (changed, new and deleted).
    private func makeSource() throws -> [SyncPath] {
        var listed: [SyncPath] = []
        let asRoot = geteuid() == 0
        for (i, n) in Self.hostile.enumerated() {
            try write(source + [0x2F] + n, Array("content \(i)\n".utf8), mode: [0o644, 0o600, 0o755, 0o4755][i % 4],
                      mtime: 1_600_000_000_000_000_000 + Int64(i) * 1_000_123, owner: asRoot && i % 3 == 0 ? (12345, 54321) : nil)
            listed.append(SyncPath(bytes: n))
            // The same name as a directory, deep, with a file inside: implied directories.
            let d = source + Array("/deep/a b/".utf8) + n
            try mkdirs(d, mode: 0o750)
            try write(d + Array("/f".utf8), Array(repeating: UInt8(i), count: i * 100))
            listed.append(SyncPath(bytes: Array("deep/a b/".utf8) + n + Array("/f".utf8)))
        }
        _ = withCPath(path(source, "deep/a b")) { chmod($0, 0o711) }
        setMtime(path(source, "deep/a b"), 1_500_000_000_000_000_001)
        // A file larger than one copy_file_range chunk, an empty one.
        var big = [UInt8](repeating: 0, count: (9 << 20) + 12345)
        for i in stride(from: 0, to: big.count, by: 4096) { big[i] = UInt8(truncatingIfNeeded: i / 4096) }
        try write(path(source, "big.bin"), big)
        try write(path(source, "empty"), [])
        listed += [SyncPath("big.bin"), SyncPath("empty")]
        // Symlinks: relative, absolute, dangling, hostile target; owned by someone else as root.
        for (i, (name, target)) in [("rel", "big.bin"), ("abs", "/etc/passwd"), ("dangling", "no/such"),
                                    ("hostile-link", "$(touch pwned)\n-x")].enumerated() {
            try RulesTestSupport.symlink(target: Array(target.utf8), at: path(source, name))
            if asRoot && i == 1 { _ = withCPath(path(source, name)) { lchown($0, 4242, 4243) } }
            setMtime(path(source, name), 1_400_000_000_000_000_000 + Int64(i))
            listed.append(SyncPath(name))
        }
        // A listed empty directory with its own mode and mtime; a fifo.
        try mkdirs(path(source, "empty-dir"), mode: 0o700)
        setMtime(path(source, "empty-dir"), 1_300_000_000_000_000_000)
        listed.append(SyncPath("empty-dir"))
        XCTAssertEqual(withCPath(path(source, "fifo")) { mkfifo($0, 0o640) }, 0)
        listed.append(SyncPath("fifo"))
        listed += try makeNewTree("new-dir")
        // Type changes against the backup made in `makeBackup`.
        try write(path(source, "was-dir"), Array("now a file\n".utf8))
        try mkdirs(path(source, "was-file"))
        try write(path(source, "was-file/inside"), Array("x".utf8))
        try mkdirs(path(source, "was-link"))
        try write(path(source, "was-link/inside"), Array("not outside\n".utf8))
        try RulesTestSupport.symlink(target: Array("big.bin".utf8), at: path(source, "was-dir-now-link"))
        try write(path(source, "quick-check"), Array("source!\n".utf8), mtime: 1_234_567_890_000_000_000)
        try write(path(source, "same"), Array("same\n".utf8), mode: 0o640, mtime: 1_234_567_890_000_000_000)
        listed += ["was-dir", "was-file/inside", "was-link/inside", "was-dir-now-link", "quick-check", "same"].map { SyncPath($0) }
        // Deleted on the source: a file, a directory tree, something never on the backup.
        listed += ["gone-file", "gone-dir", "never-existed", "gone-parent/child"].map { SyncPath($0) }
        return listed
    }

    /// A listed directory new to the backup (written hidden, see `LocalCopier.makeDirectory`)
    /// with hostile names, a listed subdirectory, a symlink and a fifo in it, its own mode
    /// and mtimes; the paths a batch names for it.
    private func makeNewTree(_ top: String) throws -> [SyncPath] {
        var listed = [SyncPath(top), SyncPath(top + "/sub")]
        try mkdirs(path(source, top + "/sub"), mode: 0o751)
        for (i, n) in Self.hostile.enumerated() {
            let rel = Array((i % 2 == 0 ? top : top + "/sub").utf8) + [0x2F] + n
            try write(source + [0x2F] + rel, Array(repeating: UInt8(i), count: 1 + i * 300), mode: [0o644, 0o600, 0o4755][i % 3],
                      mtime: 1_610_000_000_000_000_000 + Int64(i))
            listed.append(SyncPath(bytes: rel))
        }
        try RulesTestSupport.symlink(target: Array("../outside".utf8), at: path(source, top + "/sub/link"))
        XCTAssertEqual(withCPath(path(source, top + "/fifo")) { mkfifo($0, 0o600) }, 0)
        listed += [SyncPath(top + "/sub/link"), SyncPath(top + "/fifo")]
        setMtime(path(source, top + "/sub"), 1_620_000_000_000_000_000)
        setMtime(path(source, top), 1_620_000_000_000_000_001)
        return listed
    }

    /// `snapshot` without the root's own entry (its mtime is not a batch's to set).
    private func contents(_ root: [UInt8]) -> [String: String] { snapshot(root).filter { !$0.key.isEmpty } }

    /// The names in the backup directory `dir` (for temporary ones left behind).
    private func names(_ dir: [UInt8]) -> [String] {
        snapshot(dir).keys.filter { !$0.isEmpty && !$0.contains("/") }.sorted()
    }

    /// A backup that disagrees with the source in every way a backup can.
    private func makeBackup(_ b: [UInt8]) throws {
        try mkdirs(b)
        try mkdirs(path(b, "was-dir/sub"))
        try write(path(b, "was-dir/sub/old"), Array("old".utf8))
        try write(path(b, "was-file"), Array("a file".utf8))
        // A symlink where the source has a directory: must be replaced, never written through.
        try RulesTestSupport.symlink(target: outside, at: path(b, "was-link"))
        try mkdirs(path(b, "was-dir-now-link/x"))
        // Same size and mtime as the source, other bytes: rsync's quick check leaves it.
        try write(path(b, "quick-check"), Array("backup!\n".utf8), mtime: 1_234_567_890_000_000_000)
        // Same content and mtime, other mode.
        try write(path(b, "same"), Array("same\n".utf8), mode: 0o600, mtime: 1_234_567_890_000_000_000)
        try write(path(b, "gone-file"), Array("gone".utf8))
        try mkdirs(path(b, "gone-dir/a/b"))
        try write(path(b, "gone-dir/a/b/c"), Array("gone".utf8))
        try RulesTestSupport.symlink(target: outside, at: path(b, "gone-dir/link-out"))
        try write(path(b, "gone-parent"), Array("a file, not a directory".utf8))
        // A stale file inside a directory the batch does not name: left alone by both.
        try mkdirs(path(b, "deep/a b"))
        try write(path(b, "deep/a b/stale"), Array("stale".utf8))
    }

    /// Every entry under `root`: type, mode, owner, group, mtime (unless `mtimes` is false),
    /// size, content or link target.
    private func snapshot(_ root: [UInt8], mtimes: Bool = true) -> [String: String] {
        var out: [String: String] = [:]
        func walk(_ rel: [UInt8]) {
            let p = rel.isEmpty ? root : root + [0x2F] + rel
            var st = stat()
            guard withCPath(p, { lstat($0, &st) }) == 0 else { return }
            let type = st.st_mode & S_IFMT
            var d = "type \(type) uid \(st.st_uid) gid \(st.st_gid)"
            if mtimes { d += " mtime \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)" }
            if type != S_IFLNK { d += " mode \(String(st.st_mode & 0o7777, radix: 8))" }
            switch type {
            case S_IFREG: d += " content \(RulesTestSupport.readFile(p)?.hashValue ?? 0) size \(st.st_size)"
            case S_IFLNK: d += " target \(LocalCopier.readLink(AT_FDCWD, p) ?? [])"
            case S_IFDIR:
                guard let stream = withCPath(p, { opendir($0) }) else { break }
                var names: [[UInt8]] = []
                while let e = readdir(stream) {
                    let n = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
                    if n != [46] && n != [46, 46] { names.append(n) }
                }
                closedir(stream)
                for n in names { walk(rel.isEmpty ? n : rel + [0x2F] + n) }
            default: d += " rdev \(st.st_rdev)"
            }
            out[SyncPath(bytes: rel).description] = d
        }
        walk([])
        return out
    }

    private func transport(_ target: [UInt8], _ mode: LocalCopyMode) throws -> Transport {
        var c = MirrorConfig(name: "t", source: source, target: .local(path: target))
        c.localCopy = mode
        return try Transport(config: c)
    }

    func testTheSameResultAsRsync() throws {
        let listed = try makeSource()
        let viaCopier = dir + Array("/backup-copier".utf8), viaRsync = dir + Array("/backup-rsync".utf8)
        try makeBackup(viaCopier)
        try makeBackup(viaRsync)
        // Directory mtimes of the two backups differ after their set-up; make them equal.
        for b in [viaCopier, viaRsync] {
            for rel in ["", "was-dir", "was-dir/sub", "was-dir-now-link", "was-dir-now-link/x", "gone-dir", "gone-dir/a", "gone-dir/a/b", "deep", "deep/a b"] {
                setMtime(rel.isEmpty ? b : path(b, rel), 1_000_000_000_000_000_000)
            }
        }
        let copier = try transport(viaCopier, .auto)
        XCTAssertNotNil(copier.copier, "a local target with default options is copied by fansync")
        let rsync = try transport(viaRsync, .rsync)
        XCTAssertNil(rsync.copier)

        guard case .done(let files, _, let deleted) = copier.sync(listed.shuffled(), deletes: true) else {
            return XCTFail("copier: \(copier.sync(listed, deletes: true))")
        }
        guard case .done(let rsyncFiles, _, let rsyncDeleted) = rsync.sync(listed, deletes: true) else {
            return XCTFail("rsync failed")
        }
        // The same entries, types, contents, targets, modes and owners as rsync's...
        let a = snapshot(viaCopier, mtimes: false), b = snapshot(viaRsync, mtimes: false)
        for key in Set(a.keys).union(b.keys).sorted() where a[key] != b[key] {
            XCTFail("\(key): copier \(a[key] ?? "missing") / rsync \(b[key] ?? "missing")")
        }
        // ...and every mtime the source's, directories, symlinks and the fifo included (rsync
        // leaves "now" on the parent of a new file, on a fifo, and on a symlink that replaced
        // a directory: the copier is exact where rsync is not).
        let withTimes = snapshot(viaCopier), sourceTimes = snapshot(source)
        for (key, want) in sourceTimes where !key.isEmpty && key != "quick-check" {
            XCTAssertEqual(withTimes[key], want, key)
        }
        XCTAssertEqual(files, rsyncFiles, "regular files copied")
        // rsync counts a replaced directory's contents differently; every removal counts here.
        XCTAssertGreaterThanOrEqual(deleted, rsyncDeleted, "entries deleted")
        // Nothing outside the backup was touched, nothing named by a file name ran.
        XCTAssertEqual(RulesTestSupport.readFile(outside + Array("/keep".utf8)), Array("outside\n".utf8))
        XCTAssertNil(RulesTestSupport.readFile(outside + Array("/inside".utf8)))
        XCTAssertNil(RulesTestSupport.readFile(source + Array("/pwned".utf8)))
        XCTAssertEqual(RulesTestSupport.readFile(path(viaCopier, "quick-check")), Array("backup!\n".utf8), "rsync's quick check")

        // Again: nothing to do, nothing copied.
        guard case .done(let again, let bytes, 0) = copier.sync(listed, deletes: true) else { return XCTFail("second batch") }
        XCTAssertEqual(again, 0)
        XCTAssertEqual(bytes, 0)
        XCTAssertEqual(snapshot(viaCopier), withTimes)
    }

    func testWithoutDeletesMissingPathsStay() throws {
        let b = dir + Array("/backup".utf8)
        try mkdirs(b)
        try write(path(b, "gone"), Array("kept".utf8))
        try write(path(source, "new"), Array("new".utf8))
        let t = try transport(b, .auto)
        guard case .done(1, 3, 0) = t.sync([SyncPath("gone"), SyncPath("new")], deletes: false) else { return XCTFail() }
        XCTAssertEqual(RulesTestSupport.readFile(path(b, "gone")), Array("kept".utf8))
        XCTAssertEqual(RulesTestSupport.readFile(path(b, "new")), Array("new".utf8))
    }

    /// A stop during a large file: the batch ends, the backup keeps its old version and no
    /// temporary file.
    func testAbandonLeavesNoPartialFile() throws {
        let b = dir + Array("/backup".utf8)
        try mkdirs(b)
        try write(path(source, "large"), [UInt8](repeating: 7, count: 24 << 20))
        try write(path(b, "large"), Array("old version".utf8))
        let t = try transport(b, .auto)
        var asked = 0
        let outcome = t.sync([SyncPath("large")], deletes: true, abandon: { asked += 1; return asked > 2 })
        guard case .failed = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(RulesTestSupport.readFile(path(b, "large")), Array("old version".utf8))
        XCTAssertEqual(snapshot(b).keys.sorted(), ["", "large"], "no temporary file left")
    }

    /// A new file is written unnamed and linked under its name once complete. Where
    /// something takes the name while the copy runs (a file, a directory with contents),
    /// the copy goes through a temporary name and replaces it, as rsync would; a stop leaves
    /// no trace of the new file.
    func testNameTakenDuringTheCopy() throws {
        let b = dir + Array("/backup".utf8)
        try mkdirs(b)
        let big = [UInt8](repeating: 3, count: (9 << 20) + 7)   // two chunks: `abandon` is asked between them
        for n in ["file-appears", "dir-appears", "stopped"] { try write(path(source, n), big) }
        let t = try transport(b, .auto)
        for (name, intrude) in [("file-appears", { (p: [UInt8]) in try self.write(p, Array("intruder".utf8)) }),
                                ("dir-appears", { (p: [UInt8]) in
                                    try self.mkdirs(p + Array("/sub".utf8))
                                    try self.write(p + Array("/sub/f".utf8), Array("inside".utf8))
                                })] {
            var asked = 0
            let outcome = t.sync([SyncPath(name)], deletes: true, abandon: {
                asked += 1
                if asked == 2 { try? intrude(self.path(b, name)) }   // the first question is before the batch
                return false
            })
            guard case .done(1, _, _) = outcome else { return XCTFail("\(name): \(outcome)") }
            XCTAssertGreaterThan(asked, 2, name)
            XCTAssertEqual(RulesTestSupport.readFile(path(b, name)), big, name)
        }
        var asked = 0
        guard case .failed = t.sync([SyncPath("stopped")], deletes: true, abandon: { asked += 1; return asked > 1 }) else { return XCTFail() }
        XCTAssertEqual(snapshot(b).keys.sorted(), ["", "dir-appears", "file-appears"], "nothing else: no temporary file, no partial copy")
    }

    /// What the copier records for the index: every path it made or found, the content
    /// hash of small files computed on the way (the hasher's value), none for a large one.
    func testRecordForTheIndex() throws {
        let b = dir + Array("/backup".utf8)
        try mkdirs(path(b, "d"))
        try mkdirs(path(source, "d"))
        let small = Array("small file\n".utf8), large = [UInt8](repeating: 9, count: (1 << 20) + 1)
        try write(path(source, "d/small"), small)
        try write(path(source, "d/large"), large)
        try RulesTestSupport.symlink(target: Array("small".utf8), at: path(source, "d/link"))
        try write(path(b, "d/unchanged"), small, mtime: 1_234_000_000_000_000_000)
        try write(path(source, "d/unchanged"), small, mtime: 1_234_000_000_000_000_000)
        let t = try transport(b, .auto)
        let record = LocalCopier.Record()
        let list = ["d", "d/small", "d/large", "d/link", "d/unchanged", "d/gone"].map { SyncPath($0) }
        guard case .done(2, _, 0) = t.sync(list, deletes: true, record: record) else { return XCTFail() }
        let byPath = Dictionary(uniqueKeysWithValues: record.entries.map { ($0.path.description, $0) })
        XCTAssertEqual(Set(byPath.keys), ["d", "d/small", "d/large", "d/link", "d/unchanged"])
        XCTAssertEqual(byPath["d/small"]?.entry.content, ContentHash.of(small))
        XCTAssertEqual(byPath["d/small"]?.entry.stat, FileStat.of(path(source, "d/small")))
        XCTAssertNil(byPath["d/large"]?.entry.content, "over the limit: hashed later")
        XCTAssertNil(byPath["d/unchanged"]?.entry.content, "left by the quick check: not read")
        XCTAssertEqual(byPath["d/link"]?.entry.linkTarget, Array("small".utf8))
        XCTAssertEqual(byPath["d/link"]?.entry.content, ContentHash.of(Array("small".utf8)))
        XCTAssertEqual(byPath["d"]?.entry.stat.kind, .directory)
        XCTAssertTrue(record.entries.allSatisfy(\.acked))
        XCTAssertEqual(RulesTestSupport.readFile(path(b, "d/large")), large)
    }

    /// A new directory appears on the backup whole: while the batch writes in it, it is
    /// there only under a temporary name; named, it holds everything, with the source's
    /// modes and mtimes.
    func testNewDirectoryAppearsWhole() throws {
        let b = dir + Array("/backup".utf8)
        try mkdirs(b)
        let listed = try makeNewTree("new") + [SyncPath("z-after")]
        try write(path(source, "z-after"), Array("after".utf8))
        let t = try transport(b, .auto)
        var asked = 0, seenWhileWriting: [String] = []
        let outcome = t.sync(listed, deletes: true, abandon: {
            asked += 1
            if asked == 5 { seenWhileWriting = self.names(b) }
            return false
        })
        guard case .done(let files, _, 0) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(files, Self.hostile.count + 1)
        XCTAssertEqual(seenWhileWriting.count, 1, "\(seenWhileWriting)")
        XCTAssertTrue(seenWhileWriting.first?.hasPrefix(".new.") ?? false, "\(seenWhileWriting): only the hidden directory")
        XCTAssertEqual(contents(b), contents(source), "the same tree, modes and mtimes")
    }

    /// Another batch makes the same directory, with its own files, while this one writes
    /// the hidden one: the two are merged, nothing of either lost, nothing temporary left.
    func testHiddenDirectoryMergesWithOneMadeMeanwhile() throws {
        let b = dir + Array("/backup".utf8)
        try mkdirs(b)
        let listed = try makeNewTree("new")
        // Theirs: a file of the same directory the other batch copies, and one in `sub`.
        try write(path(source, "new/theirs"), Array("theirs".utf8))
        try write(path(source, "new/sub/theirs too"), Array("theirs too".utf8))
        let t = try transport(b, .auto)
        var asked = 0
        let outcome = t.sync(listed, deletes: true, abandon: {
            asked += 1
            if asked == 4 {
                let other = try! self.transport(b, .auto)
                guard case .done(2, _, _) = other.sync([SyncPath("new/theirs"), SyncPath("new/sub/theirs too")], deletes: true) else {
                    XCTFail("the other batch")
                    return false
                }
            }
            return false
        })
        guard case .done = outcome else { return XCTFail("\(outcome)") }
        XCTAssertGreaterThan(asked, 4)
        XCTAssertEqual(names(b), ["new"], "no temporary directory left")
        XCTAssertEqual(contents(b), contents(source), "both batches' files, the source's modes and mtimes")
    }

    /// Where a file takes the directory's name meanwhile (the source changed type), the
    /// batch goes again and leaves nothing temporary; the next one puts the directory there.
    func testHiddenDirectoryWhoseNameAFileTook() throws {
        let b = dir + Array("/backup".utf8)
        try mkdirs(b)
        let listed = try makeNewTree("new")
        let t = try transport(b, .auto)
        var asked = 0
        let outcome = t.sync(listed, deletes: true, abandon: {
            asked += 1
            if asked == 3 { try? self.write(self.path(b, "new"), Array("a file".utf8)) }
            return false
        })
        guard case .failed(_, false, true) = outcome else { return XCTFail("a transient failure, not \(outcome)") }
        XCTAssertEqual(names(b), ["new"], "the file; no temporary directory")
        guard case .done = t.sync(listed, deletes: true) else { return XCTFail("again") }
        XCTAssertEqual(contents(b), contents(source))
    }

    /// A stop in the middle of a new directory: what was complete takes its place (the
    /// queue still holds the rest), no partial file, no temporary directory.
    func testStopInANewDirectory() throws {
        let b = dir + Array("/backup".utf8)
        try mkdirs(b)
        try mkdirs(path(source, "new"))
        let big = [UInt8](repeating: 5, count: (9 << 20) + 3)   // two chunks: a stop between them
        try write(path(source, "new/a"), Array("complete".utf8))
        try write(path(source, "new/b"), big)
        try write(path(source, "new/c"), Array("not reached".utf8))
        let t = try transport(b, .auto)
        var asked = 0
        let outcome = t.sync(["new", "new/a", "new/b", "new/c"].map { SyncPath($0) }, deletes: true, abandon: {
            asked += 1
            return asked > 3   // before `new`, `new/a`, `new/b`; then inside `new/b`
        })
        guard case .failed = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(names(b), ["new"])
        XCTAssertEqual(snapshot(b).keys.sorted(), ["", "new", "new/a"])
        XCTAssertEqual(RulesTestSupport.readFile(path(b, "new/a")), Array("complete".utf8))
    }

    func testTemporaryNamesFitAndDiffer() {
        let long = [UInt8](repeating: UInt8(ascii: "n"), count: 255)
        let a = LocalCopier.temporaryName(for: long, suffix: 1), b = LocalCopier.temporaryName(for: long, suffix: 2)
        XCTAssertLessThanOrEqual(a.count, 255)
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(LocalCopier.temporaryName(for: Array("f".utf8), suffix: 0).prefix(3), [0x2E, 0x66, 0x2E])
    }

    func testOptionsThatNeedRsync() {
        var r = RsyncOptions()
        XCTAssertNil(LocalCopier.optionNeedingRsync(r))
        r.compress = true
        r.verbose = true
        r.extra = ["--delete"]
        XCTAssertNil(LocalCopier.optionNeedingRsync(r), "no effect on a local copy")
        for change: (inout RsyncOptions) -> Void in [{ $0.xattrs = true }, { $0.acls = true }, { $0.hardLinks = true },
                                                     { $0.bwlimit = 100 }, { $0.extra.append("--chmod=u+w") },
                                                     { $0.archive = false }, { $0.binary = "/opt/rsync" }] {
            var o = r
            change(&o)
            XCTAssertNotNil(LocalCopier.optionNeedingRsync(o))
        }
    }
}
