import XCTest
import Foundation
import Glibc
@testable import FanSync

/// Collects delivered batches; tests wait on it with a deadline.
final class EventCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [WatchEvent] = []
    private var batchCount = 0

    func add(_ batch: [WatchEvent]) {
        lock.lock()
        events.append(contentsOf: batch)
        batchCount += 1
        lock.unlock()
    }

    var all: [WatchEvent] {
        lock.lock(); defer { lock.unlock() }
        return events
    }

    var batches: Int {
        lock.lock(); defer { lock.unlock() }
        return batchCount
    }

    /// Polls until `done` holds or `timeout` passes; returns whether it held.
    @discardableResult
    func wait(timeout: Double = 15, _ done: ([WatchEvent]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if done(all) { return true }
            usleep(5_000)
        }
        return done(all)
    }
}

final class LogCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ line: String) {
        if ProcessInfo.processInfo.environment["FANSYNC_TEST_LOG"] != nil { print("log: \(line)") }
        lock.lock(); lines.append(line); lock.unlock()
    }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}

// Byte-path file helpers: no name goes through String or a shell.
enum FS {
    static func c<R>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (path + [0]).withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) } }
    }

    static func write(_ path: [UInt8], _ content: String = "x", append: Bool = false) {
        let flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC) | O_CLOEXEC
        let fd = c(path) { open($0, flags, 0o644) }
        precondition(fd >= 0, "open \(SyncPath.displayString(path)): \(String(cString: strerror(errno)))")
        let bytes = Array(content.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    static func mkdir(_ path: [UInt8]) {
        let r = c(path) { Glibc.mkdir($0, 0o755) }
        precondition(r == 0 || errno == EEXIST, "mkdir \(SyncPath.displayString(path)): \(String(cString: strerror(errno)))")
    }

    static func rename(_ from: [UInt8], _ to: [UInt8]) {
        let r = c(from) { f in c(to) { t in Glibc.rename(f, t) } }
        precondition(r == 0, "rename: \(String(cString: strerror(errno)))")
    }

    static func unlink(_ path: [UInt8]) {
        precondition(c(path) { Glibc.unlink($0) } == 0, "unlink: \(String(cString: strerror(errno)))")
    }

    static func rmdir(_ path: [UInt8]) {
        precondition(c(path) { Glibc.rmdir($0) } == 0, "rmdir: \(String(cString: strerror(errno)))")
    }

    static func symlink(_ target: String, _ path: [UInt8]) {
        precondition(c(path) { Glibc.symlink(target, $0) } == 0, "symlink: \(String(cString: strerror(errno)))")
    }

    static func link(_ existing: [UInt8], _ path: [UInt8]) {
        precondition(c(existing) { e in c(path) { Glibc.link(e, $0) } } == 0, "link: \(String(cString: strerror(errno)))")
    }

    static func chmod(_ path: [UInt8], _ mode: mode_t) {
        precondition(c(path) { Glibc.chmod($0, mode) } == 0, "chmod: \(String(cString: strerror(errno)))")
    }

    static func removeTree(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    @discardableResult
    static func run(_ tool: String, _ args: [String]) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        do { try p.run() } catch { return -1 }
        p.waitUntilExit()
        return p.terminationStatus
    }
}

func b(_ s: String) -> [UInt8] { Array(s.utf8) }

final class FanotifyWatcherTests: XCTestCase {
    var base = ""
    var src: [UInt8] = []
    var outside: [UInt8] = []
    var watcher: FanotifyWatcher?
    var events = EventCollector()
    var logs = LogCollector()
    var mounted: [String] = []

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("fanotify filesystem marks need root (CAP_SYS_ADMIN)") }
        var template = Array("/tmp/fansync-fan-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw XCTSkip("mkdtemp failed") }
        base = String(cString: dir)
        src = b(base + "/src")
        outside = b(base + "/outside")
        FS.mkdir(src)
        FS.mkdir(outside)
        events = EventCollector()
        logs = LogCollector()
    }

    override func tearDown() {
        watcher?.stop()
        watcher = nil
        for m in mounted.reversed() { FS.run("/bin/umount", ["-l", m]) }
        mounted = []
        if !base.isEmpty { FS.removeTree(base) }
    }

    func p(_ rel: String) -> [UInt8] { src + [UInt8(ascii: "/")] + b(rel) }
    func p(_ rel: [UInt8]) -> [UInt8] { src + [UInt8(ascii: "/")] + rel }

    @discardableResult
    func startWatcher(filter: @escaping WatchFilter = { _, _ in true }, renameEvents: Bool = true) throws -> FanotifyWatcher {
        let logs = self.logs
        let w = FanotifyWatcher(sourceRoot: src, filter: filter, log: { logs.add($0) }, useRenameEvents: renameEvents)
        let events = self.events
        try w.start { events.add($0) }
        watcher = w
        return w
    }

    func mountTmpfs(_ path: String) throws {
        FS.mkdir(b(path))
        let rc = FS.run("/bin/mount", ["-t", "tmpfs", "-o", "size=16m", "fansync-test", path])
        guard rc == 0 else { throw XCTSkip("cannot mount a tmpfs at \(path) (status \(rc))") }
        mounted.append(path)
    }

    /// Writes a marker file and waits for it: everything done before it has been read.
    func sync(_ marker: String = "zz-marker") {
        FS.write(p(marker))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath(marker)) }, "marker \(marker) not seen")
    }

    func hasChange(_ evs: [WatchEvent], _ path: SyncPath, closed wantClosed: Bool? = true, isDirectory: Bool? = nil) -> Bool {
        evs.contains {
            if case let .changed(q, dir, _, c) = $0, q == path {
                return (wantClosed == nil || c == wantClosed) && (isDirectory == nil || dir == isDirectory)
            }
            return false
        }
    }

    func paths(_ evs: [WatchEvent]) -> [SyncPath] {
        evs.flatMap { e -> [SyncPath] in
            switch e {
            case let .changed(q, _, _, _), let .removed(q, _), let .rescan(q): return [q]
            case let .renamed(f, t, _): return [f, t]
            }
        }
    }

    // MARK: - Tests

    func testCreateWriteCloseIsOneClosedCreatedChange() throws {
        let w = try startWatcher()
        XCTAssertEqual(w.name, "fanotify")
        XCTAssertFalse(w.watchedDescription.isEmpty)
        FS.write(p("a.txt"), "hello")
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("a.txt")) })
        let evs = events.all.filter { paths([$0]).contains(SyncPath("a.txt")) }
        XCTAssertTrue(evs.contains { if case .changed(_, false, true, _) = $0 { return true }; return false },
                      "the creation is reported: \(evs)")
        XCTAssertFalse(evs.contains { if case .removed = $0 { return true }; return false })
    }

    func testModifyWithoutCloseThenClose() throws {
        FS.write(p("log.txt"), "start\n")
        try startWatcher()
        let fd = FS.c(p("log.txt")) { open($0, O_WRONLY | O_APPEND) }
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = "more\n".withCString { Glibc.write(fd, $0, 5) }
        XCTAssertTrue(events.wait { $0.contains(.changed(SyncPath("log.txt"), isDirectory: false, created: false, closed: false)) },
                      "an open file's write is reported as not closed: \(events.all)")
        close(fd)
        XCTAssertTrue(events.wait { $0.contains(.changed(SyncPath("log.txt"), isDirectory: false, created: false, closed: true)) })
    }

    func testAttributeChange() throws {
        FS.write(p("f"))
        FS.mkdir(p("d"))
        try startWatcher()
        FS.chmod(p("f"), 0o600)
        FS.chmod(p("d"), 0o700)
        XCTAssertTrue(events.wait {
            $0.contains(.changed(SyncPath("f"), isDirectory: false, created: false, closed: true))
                && $0.contains(.changed(SyncPath("d"), isDirectory: true, created: false, closed: true))
        }, "\(events.all)")
        FS.chmod(src, 0o755)
        XCTAssertTrue(events.wait { $0.contains(.changed(.root, isDirectory: true, created: false, closed: true)) },
                      "an attribute change of the root itself: \(events.all)")
    }

    func testDeleteFileAndDirectory() throws {
        FS.write(p("gone"))
        FS.mkdir(p("dir"))
        try startWatcher()
        FS.unlink(p("gone"))
        FS.rmdir(p("dir"))
        XCTAssertTrue(events.wait {
            $0.contains(.removed(SyncPath("gone"), isDirectory: false)) && $0.contains(.removed(SyncPath("dir"), isDirectory: true))
        }, "\(events.all)")
    }

    func testCreateThenDeleteBeforeReadEndsRemoved() throws {
        try startWatcher()
        FS.write(p("brief"))
        FS.unlink(p("brief"))
        sync()
        let evs = events.all.filter { paths([$0]).contains(SyncPath("brief")) }
        XCTAssertEqual(evs.last, .removed(SyncPath("brief"), isDirectory: false), "\(evs)")
    }

    func testRenameFile() throws {
        FS.write(p("a"))
        try startWatcher()
        FS.rename(p("a"), p("b"))
        XCTAssertTrue(events.wait { $0.contains(.renamed(from: SyncPath("a"), to: SyncPath("b"), isDirectory: false)) },
                      "\(events.all)")
    }

    func testRenameDirectoryThenWriteInsideUsesNewPath() throws {
        FS.mkdir(p("d"))
        FS.mkdir(p("d/sub"))
        FS.write(p("d/sub/old"))
        try startWatcher()
        // Resolve (and cache) d and d/sub first.
        FS.write(p("d/sub/first"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("d/sub/first")) })
        FS.rename(p("d"), p("e"))
        XCTAssertTrue(events.wait { $0.contains(.renamed(from: SyncPath("d"), to: SyncPath("e"), isDirectory: true)) },
                      "\(events.all)")
        FS.write(p("e/sub/second"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("e/sub/second")) }, "\(events.all)")
        XCTAssertFalse(paths(events.all).contains(SyncPath("d/sub/second")), "a stale cached path was used")
    }

    /// Paths are resolved when read. With the reader held up, a directory is filled and
    /// renamed twice before anything is read: the batch must still read in order, with the
    /// names things had when they happened.
    func testDirectoryRenamedBeforeItsEventsAreReadKeepsOrderAndNames() throws {
        let gate = Gate()
        let events = self.events
        let w = FanotifyWatcher(sourceRoot: src, filter: { _, _ in true }, log: { _ in }, useRenameEvents: true)
        try w.start { batch in
            gate.passOrWait(batch)
            events.add(batch)
        }
        watcher = w
        gate.close(whenSeeing: SyncPath("gate"))
        FS.write(p("gate"))
        XCTAssertTrue(gate.waitUntilHolding(), "the reader was not held")
        FS.mkdir(p("d"))
        FS.write(p("d/f"))
        FS.mkdir(p("d/sub"))
        FS.write(p("d/sub/g"))
        FS.rename(p("d"), p("e"))
        FS.write(p("e/h"))
        FS.rename(p("e"), p("g"))
        gate.open()
        XCTAssertTrue(events.wait { $0.contains(.renamed(from: SyncPath("e"), to: SyncPath("g"), isDirectory: true)) },
                      "\(events.all)")
        sync()
        let evs = events.all
        func index(_ e: WatchEvent) -> Int? { evs.firstIndex(of: e) }
        func changeIndex(_ path: String) -> Int? {
            evs.firstIndex { if case let .changed(q, _, _, _) = $0 { return q == SyncPath(path) }; return false }
        }
        let iF = changeIndex("d/f"), iG = changeIndex("d/sub/g"), iH = changeIndex("e/h")
        let r1 = index(.renamed(from: SyncPath("d"), to: SyncPath("e"), isDirectory: true))
        let r2 = index(.renamed(from: SyncPath("e"), to: SyncPath("g"), isDirectory: true))
        XCTAssertNotNil(iF, "\(evs)"); XCTAssertNotNil(iG, "\(evs)"); XCTAssertNotNil(iH, "\(evs)")
        XCTAssertNotNil(r1, "\(evs)"); XCTAssertNotNil(r2, "\(evs)")
        if let iF, let iG, let iH, let r1, let r2 {
            XCTAssertLessThan(iF, r1); XCTAssertLessThan(iG, r1)
            XCTAssertLessThan(r1, iH); XCTAssertLessThan(iH, r2)
        }
        XCTAssertFalse(paths(evs).contains { $0.bytes.starts(with: b("g/")) }, "no event under the final name: \(evs)")
    }

    /// The same across read buffers: thousands of events queue up before the rename.
    func testDirectoryRenamedAfterMoreThanOneBufferOfEvents() throws {
        let gate = Gate()
        let events = self.events
        let w = FanotifyWatcher(sourceRoot: src, filter: { _, _ in true }, log: { _ in }, useRenameEvents: true)
        try w.start { batch in
            gate.passOrWait(batch)
            events.add(batch)
        }
        watcher = w
        gate.close(whenSeeing: SyncPath("gate"))
        FS.write(p("gate"))
        XCTAssertTrue(gate.waitUntilHolding(), "the reader was not held")
        FS.mkdir(p("big"))
        let count = 4000 // about 400 KiB of events: more than one 256 KiB read
        for i in 0..<count { FS.write(p("big/file-\(i)")) }
        FS.rename(p("big"), p("renamed"))
        gate.open()
        XCTAssertTrue(events.wait { $0.contains(.renamed(from: SyncPath("big"), to: SyncPath("renamed"), isDirectory: true)) },
                      "rename not seen")
        // Every file is reported, under its old name or (when the reads outran the batching
        // window, as on a loaded machine) already under its new one: the queue syncs the
        // current state of a path, and moves what it holds under the new name behind the
        // rename, so both orders leave the backup right. Only the common case keeps the old
        // names, so it is not asserted here (timing on a shared machine decides it).
        let evs = events.all
        let r = evs.firstIndex(of: .renamed(from: SyncPath("big"), to: SyncPath("renamed"), isDirectory: true))!
        let seen = Set(paths(evs))
        XCTAssertTrue((0..<count).allSatisfy { seen.contains(SyncPath("big/file-\($0)")) || seen.contains(SyncPath("renamed/file-\($0)")) },
                      "a file written before the rename was not reported")
        XCTAssertFalse(paths(Array(evs[(r + 1)...])).contains { $0.bytes.starts(with: b("big/")) }, "an old name after the rename")
    }

    func testMoveInFromOutside() throws {
        FS.write(outside + b("/file"))
        FS.mkdir(outside + b("/tree"))
        FS.write(outside + b("/tree/inner"))
        try startWatcher()
        FS.rename(outside + b("/file"), p("file"))
        FS.rename(outside + b("/tree"), p("tree"))
        XCTAssertTrue(events.wait {
            $0.contains(.changed(SyncPath("file"), isDirectory: false, created: true, closed: true))
                && $0.contains(.rescan(SyncPath("tree")))
                && $0.contains(.changed(SyncPath("tree"), isDirectory: true, created: true, closed: true))
        }, "\(events.all)")
        // The moved-in directory's handle resolves inside the source from now on.
        FS.write(p("tree/new"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("tree/new")) }, "\(events.all)")
    }

    func testMoveOut() throws {
        FS.write(p("leaving"))
        FS.mkdir(p("dirleaving"))
        FS.write(p("dirleaving/x"))
        try startWatcher()
        FS.rename(p("leaving"), outside + b("/leaving"))
        FS.rename(p("dirleaving"), outside + b("/dirleaving"))
        XCTAssertTrue(events.wait {
            $0.contains(.removed(SyncPath("leaving"), isDirectory: false))
                && $0.contains(.removed(SyncPath("dirleaving"), isDirectory: true))
        }, "\(events.all)")
        // Writes in the moved-out directory are outside now.
        FS.write(outside + b("/dirleaving/after"))
        sync()
        XCTAssertFalse(paths(events.all).contains { $0.bytes.starts(with: b("dirleaving/")) }, "\(events.all)")
    }

    func testEditorStyleSave() throws {
        FS.write(p("doc.txt"), "v1")
        try startWatcher()
        FS.write(p(".doc.txt.swp"), "v2")
        FS.rename(p(".doc.txt.swp"), p("doc.txt"))
        XCTAssertTrue(events.wait {
            $0.contains(.renamed(from: SyncPath(".doc.txt.swp"), to: SyncPath("doc.txt"), isDirectory: false))
        }, "\(events.all)")
    }

    func testWithoutRenameEventsRenamesBecomeRemovalAndCreation() throws {
        FS.write(p("a"))
        FS.mkdir(p("d"))
        FS.write(p("d/inner"))
        let w = try startWatcher(renameEvents: false)
        XCTAssertFalse(w.reportsRenames)
        FS.rename(p("a"), p("b"))
        FS.rename(p("d"), p("e"))
        XCTAssertTrue(events.wait {
            $0.contains(.removed(SyncPath("a"), isDirectory: false))
                && $0.contains(.changed(SyncPath("b"), isDirectory: false, created: true, closed: true))
                && $0.contains(.removed(SyncPath("d"), isDirectory: true))
                && $0.contains(.changed(SyncPath("e"), isDirectory: true, created: true, closed: true))
                && $0.contains(.rescan(SyncPath("e")))
        }, "\(events.all)")
        FS.write(p("e/after"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("e/after")) }, "\(events.all)")
        FS.rename(p("b"), outside + b("/b"))
        FS.rename(outside + b("/b"), p("back"))
        XCTAssertTrue(events.wait {
            $0.contains(.removed(SyncPath("b"), isDirectory: false))
                && $0.contains(.changed(SyncPath("back"), isDirectory: false, created: true, closed: true))
        }, "\(events.all)")
    }

    func testSourceRootMovedOrDeletedIsLoggedLoudly() throws {
        try startWatcher()
        FS.rename(src, b(base + "/src-moved"))
        XCTAssertTrue(events.wait { _ in self.logs.all.contains { $0.contains("WARNING") && $0.contains("moved") } },
                      "\(logs.all)")
        FS.rmdir(b(base + "/src-moved"))
        XCTAssertTrue(events.wait { _ in self.logs.all.contains { $0.contains("WARNING") && $0.contains("deleted") } },
                      "\(logs.all)")
        XCTAssertFalse(events.all.contains { if case .removed = $0 { return true }; return false },
                       "the root's own removal is not a removal of its content: \(events.all)")
    }

    func testMkdirPWithFiles() throws {
        try startWatcher()
        FS.mkdir(p("a"))
        FS.mkdir(p("a/b"))
        FS.mkdir(p("a/b/c"))
        FS.write(p("a/b/c/deep"))
        FS.write(p("a/top"))
        XCTAssertTrue(events.wait {
            self.hasChange($0, SyncPath("a"), isDirectory: true) && self.hasChange($0, SyncPath("a/b"), isDirectory: true)
                && self.hasChange($0, SyncPath("a/b/c"), isDirectory: true)
                && self.hasChange($0, SyncPath("a/b/c/deep")) && self.hasChange($0, SyncPath("a/top"))
        }, "\(events.all)")
        // Order: a directory's creation comes before what is created in it.
        let evs = events.all
        let iDir = evs.firstIndex { if case .changed(SyncPath("a/b/c"), true, true, _) = $0 { return true }; return false }
        let iFile = evs.firstIndex { paths([$0]) == [SyncPath("a/b/c/deep")] }
        XCTAssertNotNil(iDir)
        XCTAssertNotNil(iFile)
        if let iDir, let iFile { XCTAssertLessThan(iDir, iFile) }
        // New directories are known by the handle in their creation event (kernels from
        // 5.17 report it): only the root, the first event's directory, is looked up.
        watcher?.stop()
        watcher = nil
        let stats = logs.all.first { $0.contains("handle lookups") } ?? ""
        if Self.kernelAtLeast(5, 17) { XCTAssertTrue(stats.contains(" 1 handle lookups"), "directories looked up: \(stats)") }
    }

    static func kernelAtLeast(_ major: Int, _ minor: Int) -> Bool {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        return parts.count >= 2 && (parts[0], parts[1]) >= (major, minor)
    }

    func testEventsOutsideTheSourceAreNotDelivered() throws {
        // A sibling whose name starts with the source's name must not count as inside.
        let sibling = b(base + "/src2")
        FS.mkdir(sibling)
        try startWatcher()
        FS.write(outside + b("/noise"))
        FS.write(sibling + b("/noise"))
        FS.mkdir(sibling + b("/dir"))
        FS.write(b(base + "/noise-in-parent"))
        sync()
        let got = Set(paths(events.all))
        XCTAssertEqual(got, [SyncPath("zz-marker")], "\(events.all)")
    }

    /// The daemon's own writes to a backup on the source's filesystem: while a directory of
    /// the backup is quiet, what happens in it is not even queued; once resumed its events
    /// come again, and a directory moved from the backup into the source after its batch is
    /// watched like any other.
    func testOwnWritesInAQuietDirectoryAreNotQueued() throws {
        let w = try startWatcher()
        guard let own = w.ownWrites else { return XCTFail("a started fanotify watcher offers ownWrites") }
        let backup = b(base + "/backup")
        FS.mkdir(backup)
        let dir = FS.c(backup) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        XCTAssertGreaterThanOrEqual(dir, 0)
        defer { close(dir) }
        guard own.quiet(dir) else { throw XCTSkip("this kernel refuses FAN_MARK_IGNORE (before 6.0)") }
        for i in 0..<200 { FS.write(backup + b("/f\(i)")) }
        FS.mkdir(backup + b("/sub"))
        FS.rename(backup + b("/f0"), backup + b("/renamed"))
        sync("m1")
        own.resume(dir)
        FS.write(backup + b("/after"))
        sync("m2")
        FS.rename(backup, p("restored"))
        FS.write(p("restored/new"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("restored/new")) }, "\(events.all)")
        w.stop()
        XCTAssertFalse(own.quiet(dir), "no mark once the watcher stopped")
        // The watcher's statistics: "..., N outside the source, ...".
        let line = logs.all.first { $0.contains(" outside the source") } ?? ""
        let outsideCount = line.components(separatedBy: " outside the source").first?.split(separator: " ").last.flatMap { Int($0) }
        guard let outsideCount else { return XCTFail("no statistics line: \(logs.all)") }
        XCTAssertGreaterThan(outsideCount, 0, "the file written after resume is reported (and dropped)")
        XCTAssertLessThan(outsideCount, 20, "the 200 files written while quiet are not: \(line)")
    }

    func testFilterDropsEvents() throws {
        try startWatcher(filter: { path, _ in !path.bytes.starts(with: b("skip")) })
        FS.mkdir(p("skip"))
        FS.write(p("skip/x"))
        FS.write(p("skipfile"))
        FS.write(p("keep"))
        sync()
        let got = Set(paths(events.all))
        XCTAssertEqual(got, [SyncPath("keep"), SyncPath("zz-marker")], "\(events.all)")
    }

    func testRenameAcrossTheFilterBecomesRemovalOrCreation() throws {
        FS.write(p("visible"))
        FS.write(p("tmp-hidden"))
        try startWatcher(filter: { path, _ in !path.bytes.starts(with: b("tmp-")) })
        FS.rename(p("visible"), p("tmp-now-hidden"))
        FS.rename(p("tmp-hidden"), p("shown"))
        XCTAssertTrue(events.wait {
            $0.contains(.removed(SyncPath("visible"), isDirectory: false))
                && $0.contains(.changed(SyncPath("shown"), isDirectory: false, created: true, closed: true))
        }, "\(events.all)")
    }

    func testHostileNames() throws {
        try startWatcher()
        let names: [[UInt8]] = [
            b("with space"), b("new\nline"), b("quote'\"both"), b("$(touch pwned)"), b("*"), b("-leading"),
            [0x66, 0xff, 0xfe, 0x2e, 0x74], b("tab\there"), b("back\\slash"), b(" (deleted)"),
        ]
        for n in names { FS.write(p(n)) }
        // A directory with hostile bytes, resolved through its handle.
        let dir: [UInt8] = b("dir\nwith ") + [0xc3, 0x28] + b(" (deleted)")
        FS.mkdir(p(dir))
        FS.write(p(dir + b("/inner $(x)")))
        XCTAssertTrue(events.wait { evs in
            names.allSatisfy { self.hasChange(evs, SyncPath(bytes: $0)) }
                && self.hasChange(evs, SyncPath(bytes: dir + b("/inner $(x)")))
        }, "\(events.all.map { String(describing: $0) })")
        FS.rename(p(names[1]), p(names[6] + b(".moved")))
        XCTAssertTrue(events.wait {
            $0.contains(.renamed(from: SyncPath(bytes: names[1]), to: SyncPath(bytes: names[6] + b(".moved")), isDirectory: false))
        })
    }

    func testSymlinkAndHardLinkAreComplete() throws {
        FS.write(p("target"))
        try startWatcher()
        FS.symlink("../../etc/passwd", p("link"))
        FS.link(p("target"), p("hard"))
        XCTAssertTrue(events.wait {
            $0.contains(.changed(SyncPath("link"), isDirectory: false, created: true, closed: true))
                && $0.contains(.changed(SyncPath("hard"), isDirectory: false, created: true, closed: true))
        }, "\(events.all)")
    }

    func testNewFileStillOpenIsNotClosed() throws {
        try startWatcher()
        let fd = FS.c(p("open-new")) { open($0, O_WRONLY | O_CREAT, 0o644) }
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertTrue(events.wait { $0.contains(.changed(SyncPath("open-new"), isDirectory: false, created: true, closed: false)) },
                      "\(events.all)")
        close(fd)
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("open-new"), closed: true) })
    }

    func testTmpfsMountedInsideIsWatched() throws {
        let mnt = base + "/src/mnt"
        try mountTmpfs(mnt)
        let w = try startWatcher()
        XCTAssertEqual(w.watchedDescription.count, 2, "\(w.watchedDescription)")
        XCTAssertTrue(w.watchedDescription.contains { $0.hasPrefix(mnt + " (tmpfs") }, "\(w.watchedDescription)")
        FS.mkdir(p("mnt/d"))
        FS.write(p("mnt/d/f"))
        // Paths are resolved when read: wait, so that f is seen under its first name.
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("mnt/d/f")) }, "\(events.all)")
        FS.rename(p("mnt/d"), p("mnt/e"))
        FS.write(p("mnt/e/g"))
        XCTAssertTrue(events.wait {
            $0.contains(.renamed(from: SyncPath("mnt/d"), to: SyncPath("mnt/e"), isDirectory: true))
                && self.hasChange($0, SyncPath("mnt/e/g"))
        }, "\(events.all)")
        // Other tmpfs mounts (/dev/shm) are not this filesystem and are not seen.
        XCTAssertFalse(paths(events.all).contains { !$0.bytes.starts(with: b("mnt")) })
    }

    func testSourceRootThatIsAMountPoint() throws {
        let root = base + "/mounted-root"
        try mountTmpfs(root)
        src = b(root)
        let w = try startWatcher()
        XCTAssertEqual(w.watchedDescription.count, 1)
        XCTAssertTrue(w.watchedDescription[0].hasPrefix(root + " (tmpfs"), "\(w.watchedDescription)")
        FS.mkdir(p("x"))
        FS.write(p("x/y"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("x/y")) }, "\(events.all)")
    }

    func testBindMountOfTheSameFilesystemInsideTheSource() throws {
        FS.mkdir(outside + b("/shared"))
        FS.mkdir(outside + b("/shared/sub"))
        let bound = base + "/src/bound"
        FS.mkdir(b(bound))
        guard FS.run("/bin/mount", ["--bind", base + "/outside/shared", bound]) == 0 else {
            throw XCTSkip("cannot bind-mount")
        }
        mounted.append(bound)
        let w = try startWatcher()
        XCTAssertEqual(w.watchedDescription.count, 1, "one filesystem, one mark: \(w.watchedDescription)")
        // Written through the other path: still a change of the source's content.
        FS.write(outside + b("/shared/sub/f"))
        FS.write(p("bound/g"))
        XCTAssertTrue(events.wait {
            self.hasChange($0, SyncPath("bound/sub/f")) && self.hasChange($0, SyncPath("bound/g"))
        }, "\(events.all)")
    }

    func testMountAndUnmountAfterStart() throws {
        let w = try startWatcher()
        XCTAssertEqual(w.watchedDescription.count, 1)
        let late = base + "/src/late"
        try mountTmpfs(late)
        XCTAssertTrue(events.wait { $0.contains(.rescan(SyncPath("late"))) }, "\(events.all) \(logs.all)")
        XCTAssertTrue(events.wait(timeout: 5) { _ in w.watchedDescription.count == 2 }, "\(w.watchedDescription)")
        FS.write(p("late/f"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("late/f")) }, "\(events.all)")
        // fansync must not keep the mount busy.
        XCTAssertEqual(FS.run("/bin/umount", [late]), 0, "umount refused while watched")
        mounted.removeAll { $0 == late }
        XCTAssertTrue(events.wait { $0.filter { $0 == .rescan(SyncPath("late")) }.count >= 2 }, "\(events.all)")
    }

    func testBurstOfManyFilesIsSeenCompletely() throws {
        try startWatcher()
        let dirs = 20, perDir = 500
        for d in 0..<dirs {
            FS.mkdir(p("burst\(d)"))
            for f in 0..<perDir { FS.write(p("burst\(d)/f\(f)"), "content \(f)") }
        }
        XCTAssertTrue(events.wait(timeout: 60) { evs in
            var seen = Set<SyncPath>()
            for e in evs { if case let .changed(q, false, _, true) = e { seen.insert(q) } }
            return seen.count >= dirs * perDir
        }, "saw \(events.all.count) events")
        XCTAssertLessThan(events.batches, events.all.count, "events arrive in batches")
    }

    /// Not a timed assertion: prints how far the watcher lags behind a 100,000-file burst.
    /// Run with FANSYNC_PERF=1.
    func testPerfBurst100k() throws {
        guard ProcessInfo.processInfo.environment["FANSYNC_PERF"] != nil else { throw XCTSkip("set FANSYNC_PERF=1") }
        let counter = ClosedCounter()
        let w = FanotifyWatcher(sourceRoot: src, filter: { _, _ in true }, log: { print("perf log: \($0)") })
        try w.start { counter.add($0) }
        watcher = w
        let dirs = 100, perDir = 1000
        // Build the tree outside the source (its events must be dropped cheaply), then
        // copy it in with cp -a, as a dataset unpacked into the source would arrive.
        let tree = outside + b("/tree")
        FS.mkdir(tree)
        for d in 0..<dirs {
            FS.mkdir(tree + b("/p\(d)"))
            for f in 0..<perDir { FS.write(tree + b("/p\(d)/file-\(f).txt"), "some content \(f)") }
        }
        var usage0 = rusage(); getrusage(Int32(RUSAGE_SELF.rawValue), &usage0)
        let t0 = Date()
        XCTAssertEqual(FS.run("/bin/cp", ["-a", base + "/outside/tree", base + "/src/tree"]), 0)
        let written = Date().timeIntervalSince(t0)
        while counter.closedCount < dirs * perDir && Date().timeIntervalSince(t0) < 300 { usleep(1000) }
        let seen = Date().timeIntervalSince(t0)
        var usage1 = rusage(); getrusage(Int32(RUSAGE_SELF.rawValue), &usage1)
        func secs(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        let cpu = secs(usage1.ru_utime) - secs(usage0.ru_utime) + secs(usage1.ru_stime) - secs(usage0.ru_stime)
        print("perf: cp -a of \(dirs * perDir) files took \(written) s; all seen after \(seen) s; lag \(seen - written) s; watcher CPU \(cpu) s; \(counter.batchCount) batches, \(counter.eventCount) events")
        XCTAssertEqual(counter.closedCount, dirs * perDir)
        w.stop()
    }

    func testStopIsPromptAndFinal() throws {
        let w = try startWatcher()
        FS.write(p("before"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("before")) })
        let done = DispatchSemaphore(value: 0)
        let box = UncheckedBox(w)
        Thread.detachNewThread {
            box.value.stop()
            done.signal()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success, "stop() did not return")
        let count = events.all.count
        FS.write(p("after"))
        usleep(200_000)
        XCTAssertEqual(events.all.count, count, "nothing is delivered after stop()")
        w.stop() // idempotent
    }

    /// Without CAP_SYS_ADMIN, start() must throw (naming the cause) so the caller falls back
    /// to inotify. Runs this same test in a child process whose bounding set lacks it.
    func testWithoutCapSysAdminStartThrows() throws {
        if ProcessInfo.processInfo.environment["FANSYNC_TEST_CHILD_NO_SYS_ADMIN"] != nil {
            let w = FanotifyWatcher(sourceRoot: src, filter: { _, _ in true }, log: { _ in })
            XCTAssertThrowsError(try w.start { _ in }) { error in
                XCTAssertTrue("\(error)".contains("CAP_SYS_ADMIN"), "\(error)")
                XCTAssertTrue("\(error)".contains("Operation not permitted"), "\(error)")
            }
            return
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else { throw XCTSkip("no setpriv") }
        let exe = CommandLine.arguments[0]
        guard exe.hasSuffix(".xctest") else { throw XCTSkip("not run from an .xctest binary: \(exe)") }
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        child.arguments = ["--bounding-set", "-sys_admin", exe, "FanSyncTests.FanotifyWatcherTests/testWithoutCapSysAdminStartThrows"]
        var env = ProcessInfo.processInfo.environment
        env["FANSYNC_TEST_CHILD_NO_SYS_ADMIN"] = "1"
        child.environment = env
        let out = Pipe()
        child.standardOutput = out
        child.standardError = out
        try child.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        child.waitUntilExit()
        XCTAssertEqual(child.terminationStatus, 0, text)
        XCTAssertTrue(text.contains("Executed 1 test, with 0 failures"), text)
    }

    func testStopFromInsideADeliveryDoesNotDeadlock() throws {
        let box = LockedRef()
        let stopped = DispatchSemaphore(value: 0)
        let w = FanotifyWatcher(sourceRoot: src, filter: { _, _ in true }, log: { _ in })
        box.set(w)
        try w.start { _ in
            if let me = box.get() {
                me.stop()
                stopped.signal()
            }
        }
        FS.write(p("trigger"))
        XCTAssertEqual(stopped.wait(timeout: .now() + 15), .success, "stop() inside a delivery did not return")
        box.set(nil)
        w.stop()
    }

    func testSymlinkedSourcePathIsResolved() throws {
        let link = b(base + "/link-to-src")
        FS.c(src) { target in FS.c(link) { _ = Glibc.symlink(target, $0) } }
        let logs = self.logs, events = self.events
        let w = FanotifyWatcher(sourceRoot: link, filter: { _, _ in true }, log: { logs.add($0) })
        try w.start { events.add($0) }
        watcher = w
        FS.write(p("via-link"))
        XCTAssertTrue(events.wait { self.hasChange($0, SyncPath("via-link")) }, "\(events.all)")
        XCTAssertTrue(logs.all.contains { $0.contains("once symlinks are resolved") }, "\(logs.all)")
    }

    func testStartFailsClearlyForMissingSource() {
        let w = FanotifyWatcher(sourceRoot: b(base + "/does-not-exist"), filter: { _, _ in true }, log: { _ in })
        XCTAssertThrowsError(try w.start { _ in }) { error in
            XCTAssertTrue("\(error)".contains("does-not-exist"), "\(error)")
            XCTAssertTrue("\(error)".contains("No such file"), "\(error)")
        }
        FS.write(outside + b("/plain"))
        let f = FanotifyWatcher(sourceRoot: outside + b("/plain"), filter: { _, _ in true }, log: { _ in })
        XCTAssertThrowsError(try f.start { _ in }) { error in
            XCTAssertTrue("\(error)".contains("not a directory"), "\(error)")
        }
    }

    func testOverflowAndMalformedRecordsFromSyntheticBuffer() throws {
        let reader = try FanotifyReader(sourceRoot: src, filter: { _, _ in true }, log: { _ in }, updateDescription: { _ in })
        // struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid.
        var record: [UInt8] = []
        func put<T>(_ v: T) { withUnsafeBytes(of: v) { record.append(contentsOf: $0) } }
        put(UInt32(24)); put(UInt8(3)); put(UInt8(0)); put(UInt16(24))
        put(FanBits.qOverflow); put(Int32(-1)); put(Int32(0))
        XCTAssertEqual(reader.parseForTesting(record), [.rescan(.root)])
        // A record claiming more bytes than were read: rescan rather than trust it.
        var bad = record
        bad[0] = 200
        XCTAssertEqual(reader.parseForTesting(bad), [.rescan(.root)])
    }
}

final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}

final class MountsTests: XCTestCase {
    func testParsesEscapesAndOptionalFields() {
        let text = """
        27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
        90 27 0:50 / /tmp/with\\040space\\012nl rw,relatime shared:5 master:2 - tmpfs tmp\\134fs rw
        91 27 0:51 /sub /mnt/bind rw - xfs /dev/sdb1 rw

        """
        let entries = Mounts.parseMountInfo(Array(text.utf8))
        XCTAssertEqual(entries.count, 3)
        XCTAssertEqual(entries[1].mountPoint, Array("/tmp/with space\nnl".utf8))
        XCTAssertEqual(entries[1].source, Array("tmp\\fs".utf8))
        XCTAssertEqual(entries[1].fsType, "tmpfs")
        XCTAssertEqual(entries[1].major, 0)
        XCTAssertEqual(entries[1].minor, 50)
        XCTAssertEqual(entries[2].root, Array("/sub".utf8))
        XCTAssertEqual(entries[0].mountID, 27)
        XCTAssertEqual(entries[0].parentID, 1)
    }

    func testUnescapeLeavesNonOctalAlone() {
        XCTAssertEqual(Mounts.unescape(Array("a\\x\\04".utf8)), Array("a\\x\\04".utf8))
        XCTAssertEqual(Mounts.unescape(Array("\\011".utf8)), [9])
    }

    func testMountsUnderAPath() {
        let table = Mounts.parseMountInfo(Array("""
        1 0 1:1 / / rw - ext4 a rw
        2 1 1:2 / /work rw - ext4 b rw
        3 2 1:3 / /work/sub rw - tmpfs c rw
        4 1 1:4 / /workshop rw - tmpfs d rw
        """.utf8))
        XCTAssertEqual(Mounts.mounts(under: Array("/work".utf8), in: table).map(\.mountID), [2, 3])
        XCTAssertTrue(Mounts.isStrictlyInside(Array("/work/sub".utf8), Array("/work".utf8)))
        XCTAssertFalse(Mounts.isStrictlyInside(Array("/workshop".utf8), Array("/work".utf8)))
        XCTAssertTrue(Mounts.isInsideOrEqual(Array("/x".utf8), Array("/".utf8)))
    }
}

final class ClosedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var closed = Set<SyncPath>()
    private(set) var batchCount = 0
    private(set) var eventCount = 0
    func add(_ batch: [WatchEvent]) {
        lock.lock()
        batchCount += 1
        eventCount += batch.count
        for e in batch { if case let .changed(q, false, _, true) = e { closed.insert(q) } }
        lock.unlock()
    }
    var closedCount: Int { lock.lock(); defer { lock.unlock() }; return closed.count }
}

/// Holds the watcher's delivery (and so its reading) while a test changes the tree.
final class Gate: @unchecked Sendable {
    private let cond = NSCondition()
    private var trigger: SyncPath?
    private var holding = false
    private var isOpen = true

    func close(whenSeeing path: SyncPath) {
        cond.lock(); trigger = path; isOpen = false; cond.unlock()
    }

    func passOrWait(_ batch: [WatchEvent]) {
        cond.lock()
        defer { cond.unlock() }
        guard !isOpen, let t = trigger, batch.contains(where: {
            if case let .changed(q, _, _, _) = $0 { return q == t }; return false
        }) else { return }
        holding = true
        cond.broadcast()
        while !isOpen { cond.wait() }
        holding = false
    }

    func waitUntilHolding() -> Bool {
        cond.lock(); defer { cond.unlock() }
        let deadline = Date().addingTimeInterval(15)
        while !holding { if !cond.wait(until: deadline) { return holding } }
        return true
    }

    func open() {
        cond.lock(); isOpen = true; cond.broadcast(); cond.unlock()
    }
}

final class LockedRef: @unchecked Sendable {
    private let lock = NSLock()
    private var watcher: FanotifyWatcher?
    func set(_ w: FanotifyWatcher?) { lock.lock(); watcher = w; lock.unlock() }
    func get() -> FanotifyWatcher? { lock.lock(); defer { lock.unlock() }; return watcher }
}
