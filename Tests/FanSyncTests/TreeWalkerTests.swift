import Glibc
import Synchronization
import XCTest
@testable import FanSync

/// The tree walker against a plain reference walk (readdir + lstat, sorted in `SyncPath`
/// order) on real directories: order, every stat field, awkward names, subtrees,
/// exclusions, symlinks, a tree changing under the walk, a submount, thread counts, and
/// stopping early.
final class TreeWalkerTests: XCTestCase {
    private var root: [UInt8] = []
    private var mounts: [[UInt8]] = []

    override func setUpWithError() throws {
        root = try RulesTestSupport.makeTemporaryDirectory("walk")
    }

    override func tearDown() {
        for mount in mounts.reversed() {
            _ = RulesTestSupport.withCPath(mount) { umount2($0, Int32(MNT_DETACH)) }
        }
        mounts = []
        RulesTestSupport.removeTree(root)
    }

    // MARK: - Helpers

    private func abs(_ relative: [UInt8]) -> [UInt8] { RulesTestSupport.join(root, relative) }
    private func abs(_ relative: String) -> [UInt8] { abs(bytes(relative)) }

    private func dir(_ relative: String) throws { try RulesTestSupport.makeDirectories(abs(relative)) }
    private func file(_ relative: String, _ content: String = "x") throws {
        try RulesTestSupport.writeFile(abs(relative), bytes(content))
    }

    /// What `lstat` says, as a `FileStat`.
    private static func lstatOf(_ path: [UInt8]) -> FileStat? {
        var st = stat()
        guard RulesTestSupport.withCPath(path, { lstat($0, &st) }) == 0 else { return nil }
        let mode = UInt32(st.st_mode)
        return FileStat(kind: FileKind(mode: mode), size: UInt64(st.st_size),
                        mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                        ino: UInt64(st.st_ino), dev: UInt64(st.st_dev), mode: mode, nlink: UInt32(st.st_nlink))
    }

    /// The reference: a recursive readdir + lstat, never following a symlink, sorted
    /// afterwards with `SyncPath.<` (not in walk order).
    private func referenceWalk(under: SyncPath = .root) -> [TreeEntry] {
        var out: [TreeEntry] = []
        func visit(_ relative: SyncPath) {
            let absolute = relative.isRoot ? root : abs(relative.bytes)
            guard let dir = RulesTestSupport.withCPath(absolute, { opendir($0) }) else { return }
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name: [UInt8] = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    Array(raw.prefix(while: { $0 != 0 }))
                }
                if name == bytes(".") || name == bytes("..") { continue }
                let path = relative.appending(name)
                guard let s = Self.lstatOf(abs(path.bytes)) else { continue }
                out.append(TreeEntry(path: path, stat: s))
                if s.kind == .directory { visit(path) }
            }
        }
        visit(under)
        return out.sorted { $0.path < $1.path }
    }

    private final class Errors: Sendable {
        let list = Mutex<[(SyncPath, Int32)]>([])
        var all: [(SyncPath, Int32)] { list.withLock { $0 } }
    }

    private func walk(under: SyncPath = .root, threads: Int = 2, backend: TreeWalker.Backend = .automatic,
                      prefetch: Int = 16_384,
                      isExcluded: @escaping @Sendable (SyncPath, Bool) -> Bool = { _, _ in false }) -> (entries: [TreeEntry], errors: [(SyncPath, Int32)]) {
        let errors = Errors()
        let walker = TreeWalker(source: root, under: under, threads: threads, backend: backend, prefetch: prefetch,
                                isExcluded: isExcluded, onError: { p, e in errors.list.withLock { $0.append((p, e)) } })
        let entries = Array(walker)
        return (entries, errors.all)
    }

    private func assertStrictlyIncreasing(_ entries: [TreeEntry], file: StaticString = #filePath, line: UInt = #line) {
        for (a, b) in zip(entries, entries.dropFirst()) where !(a.path < b.path) {
            XCTFail("not in SyncPath order: \(a.path) then \(b.path)", file: file, line: line)
            return
        }
    }

    private func assertSameEntries(_ got: [TreeEntry], _ expected: [TreeEntry], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.map(\.path), expected.map(\.path), "paths", file: file, line: line)
        for (g, e) in zip(got, expected) where g != e {
            XCTFail("\(g.path): walker \(g.stat) != lstat \(e.stat)", file: file, line: line)
            return
        }
    }

    /// `count` files spread over `dirs` directories, two levels deep.
    private func makeManyFiles(_ count: Int, dirs: Int) throws {
        let top = Swift.max(1, dirs / 10)
        for d in 0..<dirs {
            try dir("t\(d % top)/d\(d)")
        }
        for i in 0..<count {
            let d = i % dirs
            try file("t\(d % top)/d\(d)/f\(i)", String(repeating: "y", count: i % 7))
        }
    }

    private func threadCount() -> Int {
        guard let dir = opendir("/proc/self/task") else { return -1 }
        defer { closedir(dir) }
        var n = 0
        while let entry = readdir(dir) {
            if entry.pointee.d_name.0 != CChar(UInt8(ascii: ".")) { n += 1 }
        }
        return n
    }

    // MARK: - Order and stats

    /// Names that put plain byte order and `SyncPath` order at odds: bytes below '/'
    /// (space, '!', '-', '.', control bytes) after a directory name.
    func testOrderIsSyncPathOrderAndStatsEqualLstat() throws {
        try dir("a/b/c")
        try file("a/b/c/deep")
        try file("a/x")
        try file("a/b0")
        for name in ["a ", "a!", "a-", "a.", "a0", "ab", "A", "0", "~"] {
            try file(name)
        }
        try dir("a-dir")
        try file("a-dir/in")
        try RulesTestSupport.writeFile(abs([0x61, 0x01]), bytes("ctl"))   // "a\x01"
        try RulesTestSupport.writeFile(abs([0xc3, 0xa9]), bytes("é"))
        try RulesTestSupport.writeFile(abs([0xff, 0x01]), [])
        try dir("empty")
        try RulesTestSupport.symlink(target: bytes("a"), at: abs("link-to-dir"))
        try RulesTestSupport.symlink(target: bytes("nowhere"), at: abs("dangling"))
        XCTAssertEqual(RulesTestSupport.withCPath(abs("fifo")) { mkfifo($0, 0o600) }, 0)

        let expected = referenceWalk()
        // Plain byte order of whole paths differs here ("a " < "a/b"): the walk must not use it.
        XCTAssertNotEqual(expected.map(\.path.bytes), expected.map(\.path.bytes).sorted { $0.lexicographicallyPrecedes($1) })
        XCTAssertEqual(Array(expected.map(\.path).prefix(4)),
                       [SyncPath("0"), SyncPath("A"), SyncPath("a"), SyncPath("a/b")])
        for backend in [TreeWalker.Backend.automatic, .plain] {
            for threads in [1, 2, 4] {
                let (entries, errors) = walk(threads: threads, backend: backend)
                assertStrictlyIncreasing(entries)
                assertSameEntries(entries, expected)
                XCTAssertTrue(errors.isEmpty, "\(errors)")
            }
        }
    }

    func testHostileNamesRoundTrip() throws {
        let names: [[UInt8]] = [
            bytes("with space"), bytes("new\nline"), bytes("quote'\"s"), bytes("$(touch pwned)"),
            bytes("star*"), bytes("-leading-dash"), bytes("--"), bytes("back\\slash"), bytes("tab\there"),
            [0x69, 0x6e, 0x76, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e],  // "inv\xff\xfe.bin"
            [0xff], [0xfe, 0xff],
        ]
        try RulesTestSupport.makeDirectory(abs(bytes("dir $(x) \n\u{ff}")))
        for name in names {
            try RulesTestSupport.writeFile(abs(name), name)
            try RulesTestSupport.writeFile(abs(bytes("dir $(x) \n\u{ff}/") + name), name)
        }
        let (entries, errors) = walk()
        XCTAssertTrue(errors.isEmpty)
        assertSameEntries(entries, referenceWalk())
        let top = Set(entries.map(\.path).filter { $0.parent.isRoot }.map(\.bytes))
        XCTAssertEqual(top, Set(names + [bytes("dir $(x) \n\u{ff}")]))
        for entry in entries where entry.stat.kind == .regular {
            // The bytes name the file: its content is its own name.
            XCTAssertEqual(RulesTestSupport.readFile(abs(entry.path.bytes)), entry.path.name)
        }
    }

    // MARK: - What is walked

    func testUnderWalksOnlyTheSubtree() throws {
        try dir("x/y/z")
        try file("x/y/z/f")
        try file("x/y/g")
        try file("x/y0")
        try file("x/h")
        try file("x/y/z0")
        let (entries, errors) = walk(under: SyncPath("x/y"))
        XCTAssertTrue(errors.isEmpty)
        XCTAssertEqual(entries.map(\.path), [SyncPath("x/y/g"), SyncPath("x/y/z"), SyncPath("x/y/z/f"), SyncPath("x/y/z0")])
        assertSameEntries(entries, referenceWalk(under: SyncPath("x/y")))
    }

    func testExcludedDirectoriesAreNotEntered() throws {
        try dir("keep/sub")
        try file("keep/sub/f")
        try dir("node_modules/deep/er")
        try file("node_modules/deep/er/f")
        try file("keep/skip.o")
        try file("keep/node_modules")   // a file of that name: excluded only as a directory
        let asked = Mutex<[SyncPath]>([])
        let (entries, errors) = walk { path, isDirectory in
            asked.withLock { $0.append(path) }
            return (isDirectory && path.name == bytes("node_modules")) || path.name.starts(with: bytes("skip"))
        }
        XCTAssertTrue(errors.isEmpty)
        XCTAssertEqual(entries.map(\.path), ["keep", "keep/node_modules", "keep/sub", "keep/sub/f"].map { SyncPath($0) })
        let askedPaths = asked.withLock { $0 }
        XCTAssertTrue(askedPaths.contains(SyncPath("node_modules")))
        XCTAssertFalse(askedPaths.contains { $0.isInside(SyncPath("node_modules")) && $0 != SyncPath("node_modules") },
                       "an excluded directory was read")
    }

    func testSymlinkToDirectoryIsNotFollowed() throws {
        try dir("real/inside")
        try file("real/inside/f")
        try RulesTestSupport.symlink(target: abs("real"), at: abs("abs-link"))
        try RulesTestSupport.symlink(target: bytes("real"), at: abs("rel-link"))
        try RulesTestSupport.symlink(target: bytes("/"), at: abs("to-slash"))
        let (entries, errors) = walk()
        XCTAssertTrue(errors.isEmpty)
        XCTAssertEqual(entries.map(\.path),
                       ["abs-link", "real", "real/inside", "real/inside/f", "rel-link", "to-slash"].map { SyncPath($0) })
        for link in ["abs-link", "rel-link", "to-slash"] {
            XCTAssertEqual(entries.first { $0.path == SyncPath(link) }?.stat.kind, .symlink)
        }
    }

    func testEmptyDirectories() throws {
        XCTAssertTrue(walk().entries.isEmpty)
        XCTAssertTrue(walk().errors.isEmpty)
        try dir("e1/e2/e3")
        try dir("e4")
        let (entries, errors) = walk(threads: 4)
        XCTAssertTrue(errors.isEmpty)
        XCTAssertEqual(entries.map(\.path), ["e1", "e1/e2", "e1/e2/e3", "e4"].map { SyncPath($0) })
        XCTAssertTrue(entries.allSatisfy { $0.stat.kind == .directory })
    }

    func testMissingStartIsReportedEvenWhenVanished() throws {
        let (entries, errors) = walk(under: SyncPath("no/such"))
        XCTAssertTrue(entries.isEmpty)
        XCTAssertEqual(errors.map(\.0), [SyncPath("no/such")])
        XCTAssertEqual(errors.map(\.1), [ENOENT])

        let missing = Errors()
        let walker = TreeWalker(source: root + bytes("/absent"), onError: { p, e in missing.list.withLock { $0.append((p, e)) } })
        XCTAssertTrue(Array(walker).isEmpty)
        XCTAssertEqual(missing.all.map(\.0), [.root])
        XCTAssertEqual(missing.all.map(\.1), [ENOENT])

        // A symlink as `under` is not followed.
        try dir("target")
        try file("target/f")
        try RulesTestSupport.symlink(target: bytes("target"), at: abs("via-link"))
        let (linked, linkErrors) = walk(under: SyncPath("via-link"))
        XCTAssertTrue(linked.isEmpty)
        XCTAssertEqual(linkErrors.map(\.0), [SyncPath("via-link")])
        XCTAssertTrue(linkErrors.allSatisfy { $0.1 == ENOTDIR || $0.1 == ELOOP }, "\(linkErrors)")
    }

    // MARK: - A changing tree

    /// Directories removed, turned into a file or into a symlink after their entry was
    /// read but before they are: skipped silently, the rest walked.
    func testDirectoryVanishingDuringTheWalk() throws {
        for d in 0..<30 {
            try dir("d\(d)/sub")
            for f in 0..<5 { try file("d\(d)/sub/f\(f)") }
        }
        let root = self.root
        let removeOnSight: @Sendable (SyncPath, Bool) -> Bool = { path, _ in
            let full = RulesTestSupport.join(root, path.bytes)
            switch path {
            case SyncPath("d3"):
                RulesTestSupport.removeTree(full)
            case SyncPath("d5/sub"):
                RulesTestSupport.removeTree(full)
                try? RulesTestSupport.writeFile(full, bytes("now a file"))
            case SyncPath("d7"):
                RulesTestSupport.removeTree(full)
                try? RulesTestSupport.symlink(target: bytes("d8"), at: full)
            default:
                break
            }
            return false
        }
        for threads in [1, 2, 4] {
            let (entries, errors) = walk(threads: threads, prefetch: 4, isExcluded: removeOnSight)
            XCTAssertTrue(errors.isEmpty, "\(errors)")
            assertStrictlyIncreasing(entries)
            let paths = Set(entries.map(\.path))
            // Their entries were stat'ed before the change; what was inside is not walked.
            XCTAssertTrue(paths.contains(SyncPath("d3")) && paths.contains(SyncPath("d5/sub")) && paths.contains(SyncPath("d7")))
            XCTAssertFalse(paths.contains { $0.isInside(SyncPath("d3")) && $0 != SyncPath("d3") })
            XCTAssertFalse(paths.contains { $0.isInside(SyncPath("d5/sub")) && $0 != SyncPath("d5/sub") })
            XCTAssertFalse(paths.contains { $0.isInside(SyncPath("d7")) && $0 != SyncPath("d7") })
            for d in [0, 1, 2, 4, 6, 8, 29] {
                XCTAssertTrue(paths.contains(SyncPath("d\(d)/sub/f4")), "d\(d) not walked")
            }
            // Rebuild for the next thread count.
            for d in [3, 5, 7] {
                RulesTestSupport.removeTree(abs("d\(d)"))
                try dir("d\(d)/sub")
                for f in 0..<5 { try file("d\(d)/sub/f\(f)") }
            }
        }
    }

    /// Removing whole directories while the consumer is in the middle of the walk (no
    /// hook: the race is real): no crash, no error, everything untouched still walked.
    func testTreeRemovedWhileConsumerIterates() throws {
        try makeManyFiles(3_000, dirs: 100)
        let errors = Errors()
        let walker = TreeWalker(source: root, under: .root, threads: 2, backend: .automatic, prefetch: 64,
                                isExcluded: { _, _ in false }, onError: { p, e in errors.list.withLock { $0.append((p, e)) } })
        var seen: [TreeEntry] = []
        var removed = false
        for entry in walker {
            seen.append(entry)
            if !removed && entry.path == SyncPath("t0/d0/f0") {
                for top in 5..<10 { RulesTestSupport.removeTree(abs("t\(top)")) }
                removed = true
            }
        }
        XCTAssertTrue(removed)
        XCTAssertTrue(errors.all.isEmpty, "\(errors.all)")
        assertStrictlyIncreasing(seen)
        let paths = Set(seen.map(\.path))
        for entry in referenceWalk() {
            XCTAssertTrue(paths.contains(entry.path), "\(entry.path) missing")
        }
    }

    // MARK: - Submounts

    func testWalksIntoMountedTmpfs() throws {
        try dir("outer/mnt")
        try file("outer/before")
        try file("outer/mnt0")
        let point = abs("outer/mnt")
        let rc = RulesTestSupport.withCPath(point) { mount("tmpfs", $0, "tmpfs", 0, "size=4m,mode=0755") }
        guard rc == 0 else { throw XCTSkip("mount -t tmpfs not permitted here: \(String(cString: strerror(errno)))") }
        mounts.append(point)
        try dir("outer/mnt/in/deeper")
        try file("outer/mnt/in/deeper/f", "on tmpfs")
        try file("outer/mnt/g")

        let (entries, errors) = walk()
        XCTAssertTrue(errors.isEmpty)
        assertSameEntries(entries, referenceWalk())
        XCTAssertEqual(entries.map(\.path), ["outer", "outer/before", "outer/mnt", "outer/mnt/g", "outer/mnt/in",
                                             "outer/mnt/in/deeper", "outer/mnt/in/deeper/f", "outer/mnt0"].map { SyncPath($0) })
        let outerDev = entries.first { $0.path == SyncPath("outer") }!.stat.dev
        let mountDev = entries.first { $0.path == SyncPath("outer/mnt") }!.stat.dev
        let innerDev = entries.first { $0.path == SyncPath("outer/mnt/in/deeper/f") }!.stat.dev
        XCTAssertNotEqual(outerDev, mountDev, "the mount point's entry is the mounted root")
        XCTAssertEqual(mountDev, innerDev)
    }

    // MARK: - Scale, threads, the window

    func testManyEntriesIdenticalForEveryThreadCount() throws {
        try makeManyFiles(20_000, dirs: 500)
        let expected = referenceWalk()
        XCTAssertEqual(expected.count, 20_000 + 500 + 50)
        for (threads, backend, prefetch) in [(1, TreeWalker.Backend.automatic, 16_384), (2, .automatic, 16_384),
                                             (4, .automatic, 16_384), (2, .plain, 16_384), (4, .automatic, 8),
                                             (1, .plain, 1)] {
            let (entries, errors) = walk(threads: threads, backend: backend, prefetch: prefetch)
            XCTAssertTrue(errors.isEmpty)
            XCTAssertEqual(entries.count, expected.count, "threads \(threads) \(backend) prefetch \(prefetch)")
            assertSameEntries(entries, expected)
        }
    }

    /// One directory with more names than a `statx` batch (512 slots), next to small
    /// ones: the slots wrap around within a directory and across groups.
    func testDirectoryLargerThanABatch() throws {
        try dir("big")
        for i in 0..<2_000 { try file("big/n\(i)", String(repeating: "z", count: i % 5)) }
        try makeManyFiles(400, dirs: 40)
        let expected = referenceWalk()
        for (threads, backend) in [(1, TreeWalker.Backend.automatic), (2, .automatic), (1, .plain), (3, .plain)] {
            let (entries, errors) = walk(threads: threads, backend: backend)
            XCTAssertTrue(errors.isEmpty)
            assertSameEntries(entries, expected)
        }
    }

    /// A directory whose path from the root is longer than PATH_MAX cannot be opened
    /// (ENAMETOOLONG): reported, its entry still yielded, the rest walked.
    func testErrorIsReportedAndTheWalkGoesOn() throws {
        let name = [UInt8](repeating: UInt8(ascii: "n"), count: 250)
        var fds: [Int32] = [RulesTestSupport.withCPath(root) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }]
        defer {
            // Remove the chain from the bottom, through descriptors (its paths are too long).
            for fd in fds.reversed() {
                _ = RulesTestSupport.withCPath(name) { unlinkat(fd, $0, AT_REMOVEDIR) }
                close(fd)
            }
        }
        for _ in 0..<18 {  // 18 x 251 bytes > 4096
            XCTAssertEqual(RulesTestSupport.withCPath(name) { mkdirat(fds.last!, $0, 0o755) }, 0)
            fds.append(RulesTestSupport.withCPath(name) { openat(fds.last!, $0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) })
        }
        try file("after")
        try file("before")
        let (entries, errors) = walk()
        XCTAssertEqual(errors.count, 1, "\(errors)")
        XCTAssertEqual(errors.first?.1, ENAMETOOLONG)
        let failed = errors.first?.0 ?? .root
        XCTAssertGreaterThan(failed.bytes.count, 4000)
        XCTAssertTrue(entries.contains { $0.path == failed && $0.stat.kind == .directory })
        XCTAssertFalse(entries.contains { $0.path.isInside(failed) && $0.path != failed })
        XCTAssertEqual(entries.first?.path, SyncPath("after"))
        XCTAssertTrue(entries.contains { $0.path == SyncPath("before") })
        assertStrictlyIncreasing(entries)
    }

    // MARK: - Stopping

    func testDroppingTheIteratorStopsTheThreads() throws {
        try makeManyFiles(5_000, dirs: 200)
        let before = threadCount()
        let started = monotonicNow()
        for threads in [1, 2, 4] {
            let walker = TreeWalker(source: root, threads: threads)
            var iterator: TreeWalker.Iterator? = walker.makeIterator()
            for _ in 0..<10 { XCTAssertNotNil(iterator!.next()) }
            iterator = nil
            // A walker stopped after one entry, and one never iterated.
            var one: TreeWalker.Iterator? = walker.makeIterator()
            XCTAssertNotNil(one!.next())
            one = nil
            _ = walker.makeIterator()
        }
        XCTAssertLessThan(monotonicNow() - started, 10)
        print("stopping: \(monotonicNow() - started) s, threads \(before) -> \(threadCount())")
        // The workers are joined; the rings' io-wq threads go with them.
        var after = threadCount()
        for _ in 0..<50 where after > before {
            usleep(100_000)
            after = threadCount()
        }
        XCTAssertLessThanOrEqual(after, before, "threads left behind")
    }

    func testCancelFromAnotherThreadEndsTheWalk() throws {
        try makeManyFiles(5_000, dirs: 200)
        let walker = TreeWalker(source: root, threads: 2)
        XCTAssertFalse(walker.isCancelled)
        var count = 0
        for _ in walker {
            count += 1
            if count == 100 {
                let canceller = WorkerThread(name: "test-cancel") { walker.cancel() }
                canceller.join()
            }
        }
        XCTAssertEqual(count, 100, "no entry after cancel()")
        XCTAssertTrue(walker.isCancelled)
        XCTAssertTrue(Array(walker).isEmpty, "a cancelled walker stays cancelled")
    }

    /// Cancelling while a worker is in the middle of one large directory: its `statx`
    /// stop being queued, the walk ends at once.
    func testCancelDuringALargeDirectory() throws {
        try dir("big")
        for i in 0..<20_000 { try file("big/f\(i)", "") }
        for (threads, backend) in [(1, TreeWalker.Backend.automatic), (2, .plain)] {
            let walker = TreeWalker(source: root, threads: threads, backend: backend)
            let iterator = walker.makeIterator()
            XCTAssertEqual(iterator.next()?.path, SyncPath("big"))
            // The worker is now reading "big"; cancel from another thread while it does.
            let canceller = WorkerThread(name: "test-cancel") {
                usleep(2_000)
                walker.cancel()
            }
            let started = monotonicNow()
            var after = 0
            while iterator.next() != nil { after += 1 }
            canceller.join()
            XCTAssertLessThan(monotonicNow() - started, 5)
            XCTAssertLessThan(after, 20_000, "the walk went on after cancel()")
        }
    }

    /// A consumer blocked waiting for a listing is woken by `cancel()`.
    func testCancelWakesABlockedConsumer() throws {
        try makeManyFiles(200, dirs: 20)
        let gate = Monitor(false)
        let walker = TreeWalker(source: root, under: .root, threads: 1, backend: .automatic, prefetch: 16_384,
                                isExcluded: { path, _ in
                                    // Hold the only worker until the test cancels.
                                    if path == SyncPath("t1") { _ = gate.wait { open in (open ? true : nil, nil) } }
                                    return false
                                }, onError: { _, _ in })
        let canceller = WorkerThread(name: "test-cancel") {
            usleep(200_000)
            walker.cancel()
            gate.update { $0 = true }
        }
        let entries = Array(walker)
        canceller.join()
        XCTAssertTrue(entries.isEmpty)
        XCTAssertTrue(walker.isCancelled)
    }
}
