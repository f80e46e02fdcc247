import Glibc
import Synchronization
import XCTest
@testable import FanSync

/// Events a watcher delivered, collected under a lock.
private final class EventLog: Sendable {
    let events = Mutex<[WatchEvent]>([])
    let batches = Mutex<Int>(0)
    let lines = Mutex<[String]>([])

    var snapshot: [WatchEvent] { events.withLock { $0 } }
    func append(_ batch: [WatchEvent]) {
        events.withLock { $0.append(contentsOf: batch) }
        batches.withLock { $0 += 1 }
    }
}

final class InotifyWatcherTests: XCTestCase {
    private var root: [UInt8] = []
    private var outside: [UInt8] = []
    private var watchers: [InotifyWatcher] = []

    override func setUp() {
        super.setUp()
        root = Self.makeTempDir("fansync-inotify-src")
        outside = Self.makeTempDir("fansync-inotify-out")
    }

    override func tearDown() {
        for w in watchers { w.stop() }
        watchers = []
        Self.removeTree(root)
        Self.removeTree(outside)
        super.tearDown()
    }

    // MARK: - Helpers

    private static func makeTempDir(_ prefix: String) -> [UInt8] {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed: errno \(errno)")
        return template.dropLast().map { UInt8(bitPattern: $0) }
    }

    private static func withC<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (bytes + [0]).withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buf.count) { body($0) }
        }
    }

    /// rm -r without a shell and without following symlinks.
    private static func removeTree(_ path: [UInt8]) {
        var st = stat()
        guard withC(path, { lstat($0, &st) }) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            if let dir = withC(path, { opendir($0) }) {
                var names: [[UInt8]] = []
                while let entry = readdir(dir) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                        Array(raw.prefix(while: { $0 != 0 }))
                    }
                    if name == Array(".".utf8) || name == Array("..".utf8) { continue }
                    names.append(name)
                }
                closedir(dir)
                for name in names { removeTree(path + [UInt8(ascii: "/")] + name) }
            }
            _ = withC(path) { rmdir($0) }
        } else {
            _ = withC(path) { unlink($0) }
        }
    }

    private func abs(_ rel: [UInt8], in base: [UInt8]? = nil) -> [UInt8] {
        (base ?? root) + [UInt8(ascii: "/")] + rel
    }

    private func abs(_ rel: String, in base: [UInt8]? = nil) -> [UInt8] {
        abs(Array(rel.utf8), in: base)
    }

    private func mkdirAt(_ path: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let rc = Self.withC(path) { mkdir($0, 0o755) }
        XCTAssertEqual(rc, 0, "mkdir \(SyncPath.displayString(path)): errno \(errno)", file: file, line: line)
    }

    /// Creates (or truncates) a file, writes `content`, and closes it unless asked not to.
    @discardableResult
    private func writeFile(_ path: [UInt8], _ content: String = "data", keepOpen: Bool = false,
                           file: StaticString = #filePath, line: UInt = #line) -> Int32 {
        let fd = Self.withC(path) { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        XCTAssertGreaterThanOrEqual(fd, 0, "open \(SyncPath.displayString(path)): errno \(errno)", file: file, line: line)
        let bytes = Array(content.utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        XCTAssertEqual(n, bytes.count, file: file, line: line)
        if !keepOpen { close(fd) }
        return fd
    }

    private func renameAt(_ from: [UInt8], _ to: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
        let rc = Self.withC(from) { f in Self.withC(to) { t in rename(f, t) } }
        XCTAssertEqual(rc, 0, "rename: errno \(errno)", file: file, line: line)
    }

    private func startWatcher(filter: @escaping WatchFilter = { _, _ in true }) throws -> (InotifyWatcher, EventLog) {
        let log = EventLog()
        let watcher = InotifyWatcher(sourceRoot: root, filter: filter, log: { line in
            log.lines.withLock { $0.append(line) }
        })
        try watcher.start { log.append($0) }
        watchers.append(watcher)
        return (watcher, log)
    }

    /// Waits (up to `timeout` seconds) until `predicate` holds for the events so far.
    @discardableResult
    private func waitFor(_ log: EventLog, _ what: String, timeout: Double = 5,
                         file: StaticString = #filePath, line: UInt = #line,
                         _ predicate: ([WatchEvent]) -> Bool) -> Bool {
        let deadline = monotonicNanos() + UInt64(timeout * 1e9)
        while monotonicNanos() < deadline {
            if predicate(log.snapshot) { return true }
            usleep(5_000)
        }
        if predicate(log.snapshot) { return true }
        XCTFail("timed out waiting for \(what); got \(log.snapshot)", file: file, line: line)
        return false
    }

    private func waitFor(_ log: EventLog, _ event: WatchEvent,
                         file: StaticString = #filePath, line: UInt = #line) {
        waitFor(log, "\(event)", file: file, line: line) { $0.contains(event) }
    }

    /// Creates a marker file and waits for it: every event caused before it has arrived.
    private func sync(_ log: EventLog, _ name: String = "zz-marker") {
        writeFile(abs(name))
        waitFor(log, .changed(SyncPath(name), isDirectory: false, created: false, closed: true))
    }

    private static func paths(in events: [WatchEvent]) -> [SyncPath] {
        events.flatMap { event -> [SyncPath] in
            switch event {
            case .changed(let p, _, _, _), .removed(let p, _), .rescan(let p): return [p]
            case .renamed(let f, let t, _): return [f, t]
            }
        }
    }

    // MARK: - Tests

    func testCreateWriteAndClose() throws {
        let (_, log) = try startWatcher()
        writeFile(abs("f.txt"))
        let f = SyncPath("f.txt")
        waitFor(log, .changed(f, isDirectory: false, created: false, closed: true))
        let events = log.snapshot
        XCTAssertEqual(events.first, .changed(f, isDirectory: false, created: true, closed: false),
                       "a new regular file is reported created and not yet closed")
        XCTAssertTrue(events.contains(.changed(f, isDirectory: false, created: false, closed: false)), "the write is reported")

        // A symlink is complete when created (no close follows), and is not followed.
        let rc = Self.withC(Array("/etc".utf8)) { t in Self.withC(abs("link")) { symlink(t, $0) } }
        XCTAssertEqual(rc, 0)
        waitFor(log, .changed(SyncPath("link"), isDirectory: false, created: true, closed: true))

        // A hard link makes a complete file at once, too.
        let lrc = Self.withC(abs("f.txt")) { a in Self.withC(abs("hard")) { b in link(a, b) } }
        XCTAssertEqual(lrc, 0)
        waitFor(log, .changed(SyncPath("hard"), isDirectory: false, created: true, closed: true))
    }

    func testModifyWithoutClose() throws {
        writeFile(abs("log.txt"), "start\n")
        let (_, log) = try startWatcher()
        let fd = Self.withC(abs("log.txt")) { open($0, O_WRONLY | O_APPEND | O_CLOEXEC) }
        XCTAssertGreaterThanOrEqual(fd, 0)
        let bytes = Array("more\n".utf8)
        XCTAssertEqual(bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }, bytes.count)
        let p = SyncPath("log.txt")
        waitFor(log, .changed(p, isDirectory: false, created: false, closed: false))
        sync(log)
        XCTAssertFalse(log.snapshot.contains(.changed(p, isDirectory: false, created: false, closed: true)),
                       "no close is reported while the file is open")
        close(fd)
        waitFor(log, .changed(p, isDirectory: false, created: false, closed: true))

        // An attribute change is complete at once.
        let count = log.snapshot.filter { $0 == .changed(p, isDirectory: false, created: false, closed: true) }.count
        XCTAssertEqual(Self.withC(abs("log.txt")) { chmod($0, 0o600) }, 0)
        waitFor(log, "chmod") { events in
            events.filter { $0 == .changed(p, isDirectory: false, created: false, closed: true) }.count > count
        }
    }

    func testDelete() throws {
        writeFile(abs("gone.txt"))
        mkdirAt(abs("gone-dir"))
        let (_, log) = try startWatcher()
        XCTAssertEqual(Self.withC(abs("gone.txt")) { unlink($0) }, 0)
        XCTAssertEqual(Self.withC(abs("gone-dir")) { rmdir($0) }, 0)
        waitFor(log, .removed(SyncPath("gone.txt"), isDirectory: false))
        waitFor(log, .removed(SyncPath("gone-dir"), isDirectory: true))
    }

    func testRenameFileAndEditorStyleSave() throws {
        writeFile(abs("a.txt"))
        writeFile(abs("doc.txt"), "old")
        let (_, log) = try startWatcher()
        renameAt(abs("a.txt"), abs("b.txt"))
        waitFor(log, .renamed(from: SyncPath("a.txt"), to: SyncPath("b.txt"), isDirectory: false))

        writeFile(abs(".doc.txt.swp"), "new")
        renameAt(abs(".doc.txt.swp"), abs("doc.txt"))
        waitFor(log, .renamed(from: SyncPath(".doc.txt.swp"), to: SyncPath("doc.txt"), isDirectory: false))
        XCTAssertFalse(log.snapshot.contains(.removed(SyncPath("a.txt"), isDirectory: false)),
                       "a rename inside the source is not a delete")
    }

    func testRenameDirectoryThenCreateInside() throws {
        mkdirAt(abs("d"))
        mkdirAt(abs("d/sub"))
        writeFile(abs("d/sub/old.txt"))
        let (watcher, log) = try startWatcher()
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 3 directories"), true,
                       "\(watcher.watchedDescription)")
        renameAt(abs("d"), abs("e"))
        waitFor(log, .renamed(from: SyncPath("d"), to: SyncPath("e"), isDirectory: true))
        writeFile(abs("e/new.txt"))
        writeFile(abs("e/sub/deep.txt"))
        waitFor(log, .changed(SyncPath("e/new.txt"), isDirectory: false, created: false, closed: true))
        waitFor(log, .changed(SyncPath("e/sub/deep.txt"), isDirectory: false, created: false, closed: true))
        XCTAssertFalse(Self.paths(in: log.snapshot).contains { $0.isInside(SyncPath("d")) && $0 != SyncPath("d") },
                       "no event names the old directory: \(log.snapshot)")

        // A second rename of the renamed directory, and of a directory inside it.
        renameAt(abs("e/sub"), abs("e/sub2"))
        renameAt(abs("e"), abs("f"))
        waitFor(log, .renamed(from: SyncPath("e"), to: SyncPath("f"), isDirectory: true))
        writeFile(abs("f/sub2/x"))
        waitFor(log, .changed(SyncPath("f/sub2/x"), isDirectory: false, created: false, closed: true))
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 3 directories"), true)
        XCTAssertFalse(log.snapshot.contains { if case .rescan = $0 { return true } else { return false } },
                       "a directory renamed inside the source is a rename, not a rescan: \(log.snapshot)")
    }

    func testMoveInFromOutside() throws {
        let (watcher, log) = try startWatcher()
        mkdirAt(abs("incoming", in: outside))
        mkdirAt(abs("incoming/inner", in: outside))
        writeFile(abs("incoming/inner/file", in: outside))
        writeFile(abs("lonely.txt", in: outside))
        renameAt(abs("incoming", in: outside), abs("incoming"))
        renameAt(abs("lonely.txt", in: outside), abs("lonely.txt"))
        waitFor(log, .rescan(SyncPath("incoming")))
        waitFor(log, .changed(SyncPath("lonely.txt"), isDirectory: false, created: true, closed: true))
        // Its directories are watched now.
        writeFile(abs("incoming/inner/later"))
        waitFor(log, .changed(SyncPath("incoming/inner/later"), isDirectory: false, created: false, closed: true))
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 3 directories"), true,
                       "\(watcher.watchedDescription)")
    }

    func testMoveOutOfTheSource() throws {
        mkdirAt(abs("leaving"))
        mkdirAt(abs("leaving/inner"))
        writeFile(abs("leaving.txt"))
        let (watcher, log) = try startWatcher()
        renameAt(abs("leaving"), abs("leaving", in: outside))
        renameAt(abs("leaving.txt"), abs("leaving.txt", in: outside))
        waitFor(log, .removed(SyncPath("leaving"), isDirectory: true))
        waitFor(log, .removed(SyncPath("leaving.txt"), isDirectory: false))
        // What happens to it out there is not ours.
        writeFile(abs("leaving/inner/after", in: outside))
        sync(log)
        XCTAssertFalse(Self.paths(in: log.snapshot).contains { $0.isInside(SyncPath("leaving/inner")) },
                       "events from a moved-out directory: \(log.snapshot)")
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 1 directory"), true,
                       "\(watcher.watchedDescription)")
    }

    func testMkdirParentsWithFilesWrittenAtOnce() throws {
        let (_, log) = try startWatcher()
        mkdirAt(abs("a"))
        mkdirAt(abs("a/b"))
        mkdirAt(abs("a/b/c"))
        let files = ["a/1", "a/b/2", "a/b/c/3", "a/b/c/4"]
        for f in files { writeFile(abs(f)) }
        // Each file arrives as its own event (its close, or the new directory's scan).
        waitFor(log, "every file of mkdir -p a/b/c") { events in
            files.allSatisfy { f in
                let p = SyncPath(f)
                return events.contains { event in
                    if case .changed(let q, false, _, true) = event { return q == p }
                    return false
                }
            }
        }
        XCTAssertFalse(log.snapshot.contains { if case .rescan = $0 { return true } else { return false } },
                       "a new directory is scanned, not resynced: \(log.snapshot)")
        waitFor(log, .changed(SyncPath("a"), isDirectory: true, created: true, closed: true))
        // And the deepest directory is watched.
        writeFile(abs("a/b/c/5"))
        waitFor(log, .changed(SyncPath("a/b/c/5"), isDirectory: false, created: false, closed: true))
    }

    func testFilterExcludesDirectory() throws {
        mkdirAt(abs("keep"))
        mkdirAt(abs(".git"))
        mkdirAt(abs(".git/objects"))
        let isExcluded: @Sendable (SyncPath) -> Bool = { path in
            path.components.contains { $0.elementsEqual(".git".utf8) } || path.name.elementsEqual("skip.tmp".utf8)
        }
        let asked = Mutex<[SyncPath]>([])
        let (watcher, log) = try startWatcher(filter: { path, _ in
            asked.withLock { $0.append(path) }
            return !isExcluded(path)
        })
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 2 directories"), true,
                       "\(watcher.watchedDescription)")
        XCTAssertFalse(asked.withLock { $0 }.contains(SyncPath(".git/objects")), "an excluded directory is not descended into")

        writeFile(abs(".git/index"))
        writeFile(abs(".git/objects/ab"))
        writeFile(abs("keep/skip.tmp"))
        mkdirAt(abs("keep/.git"))
        writeFile(abs("keep/.git/HEAD"))
        writeFile(abs("keep/ok"))
        waitFor(log, .changed(SyncPath("keep/ok"), isDirectory: false, created: false, closed: true))
        sync(log)
        let leaked = Self.paths(in: log.snapshot).filter(isExcluded)
        XCTAssertEqual(leaked, [], "events for excluded paths")
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 2 directories"), true,
                       "\(watcher.watchedDescription)")

        // A directory renamed into an excluded name is gone for us; renamed back, it is new.
        renameAt(abs("keep"), abs(".git/keep"))
        waitFor(log, .removed(SyncPath("keep"), isDirectory: true))
        renameAt(abs(".git/keep"), abs("back"))
        waitFor(log, .rescan(SyncPath("back")))
        writeFile(abs("back/again"))
        waitFor(log, .changed(SyncPath("back/again"), isDirectory: false, created: false, closed: true))
    }

    func testRewatchAfterTheFilterChanged() throws {
        mkdirAt(abs("build"))
        mkdirAt(abs("build/sub"))
        let excluding = Mutex<Bool>(true)
        let (watcher, log) = try startWatcher(filter: { path, _ in
            !(excluding.withLock { $0 } && path.components.first?.elementsEqual("build".utf8) == true)
        })
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 1 directory"), true)
        // A rules file now includes build/: it gets watched and rescanned.
        excluding.withLock { $0 = false }
        watcher.rewatch(.root)
        waitFor(log, .rescan(.root))
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 3 directories"), true,
                       "\(watcher.watchedDescription)")
        writeFile(abs("build/sub/out.o"))
        waitFor(log, .changed(SyncPath("build/sub/out.o"), isDirectory: false, created: false, closed: true))
        // And excluded again: its watches go.
        excluding.withLock { $0 = true }
        watcher.rewatch(SyncPath("build"))
        waitFor(log, "the watches of build/ dropped") { _ in
            watcher.watchedDescription.first?.hasPrefix("inotify: 1 directory") == true
        }
    }

    func testHostileNamesComeThroughAsBytes() throws {
        let names: [[UInt8]] = [
            Array("with space".utf8),
            Array("new\nline".utf8),
            Array("quote'\"`".utf8),
            Array("$(touch pwned)".utf8),
            Array("*".utf8),
            Array("-leading".utf8),
            Array("back\\slash".utf8),
            [0x66, 0xff, 0xfe, 0x80, 0x0a],     // invalid UTF-8 with a newline
            Array("ünïcödé-名前".utf8),
        ]
        let (_, log) = try startWatcher()
        for name in names { writeFile(abs(name)) }
        let dirName: [UInt8] = [0x64, 0xc3, 0x28, 0x0a, 0x20]  // invalid UTF-8 directory
        mkdirAt(abs(dirName))
        writeFile(abs(dirName + [UInt8(ascii: "/")] + [0xff, 0x2a]))
        for name in names {
            waitFor(log, .changed(SyncPath(bytes: name), isDirectory: false, created: false, closed: true))
        }
        let inner = SyncPath(bytes: dirName + [UInt8(ascii: "/"), 0xff, 0x2a])
        waitFor(log, "the file inside the invalid-UTF-8 directory") { events in
            events.contains(.changed(inner, isDirectory: false, created: false, closed: true))
                || events.contains(.changed(inner, isDirectory: false, created: true, closed: true))
        }
        renameAt(abs(names[7]), abs(names[1] + [0xff]))
        waitFor(log, .renamed(from: SyncPath(bytes: names[7]), to: SyncPath(bytes: names[1] + [0xff]), isDirectory: false))
        var st = stat()
        XCTAssertNotEqual(Self.withC(Array("pwned".utf8)) { lstat($0, &st) }, 0, "no name was run")
    }

    func testQueueOverflowRescansAndKeepsWatching() throws {
        let limit = Int(InotifyWatcher.readProcValue("/proc/sys/fs/inotify/max_queued_events") ?? "") ?? 16384
        let gate = Mutex<Bool>(false)
        let log = EventLog()
        let watcher = InotifyWatcher(sourceRoot: root, filter: { _, _ in true }, log: { line in
            log.lines.withLock { $0.append(line) }
        })
        // The first delivery blocks until the test lets it go, so the kernel queue fills up.
        try watcher.start { batch in
            log.append(batch)
            while !gate.withLock({ $0 }) { usleep(1_000) }
        }
        watchers.append(watcher)
        writeFile(abs("first"))
        waitFor(log, "the first batch") { !$0.isEmpty }
        // Each file costs a CREATE and a CLOSE_WRITE (and a MODIFY when written).
        for i in 0..<(limit / 2 + 100) {
            let fd = Self.withC(abs("f\(i)")) { open($0, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644) }
            close(fd)
        }
        mkdirAt(abs("made-during-overflow"))
        gate.withLock { $0 = true }
        waitFor(log, .rescan(.root))
        XCTAssertTrue(log.lines.withLock { $0 }.contains { $0.contains("overflow") }, "the overflow is logged")
        writeFile(abs("made-during-overflow/x"))
        waitFor(log, .changed(SyncPath("made-during-overflow/x"), isDirectory: false, created: false, closed: true))
    }

    func testStopIsPromptIdempotentAndFinal() throws {
        let (watcher, log) = try startWatcher()
        writeFile(abs("before"))
        waitFor(log, .changed(SyncPath("before"), isDirectory: false, created: false, closed: true))
        watcher.stop()
        watcher.stop()
        let count = log.snapshot.count
        writeFile(abs("after"))
        usleep(100_000)
        XCTAssertEqual(log.snapshot.count, count, "nothing is delivered after stop returns")

        // It can start again, with a fresh walk.
        try watcher.start { log.append($0) }
        writeFile(abs("again"))
        waitFor(log, .changed(SyncPath("again"), isDirectory: false, created: false, closed: true))
        XCTAssertThrowsError(try watcher.start { _ in }) { error in
            XCTAssertEqual(error as? InotifyWatcherError, .alreadyRunning)
        }
        watcher.stop()
    }

    func testStopFromInsideDelivery() throws {
        let stopped = Mutex<Bool>(false)
        let holder = Mutex<InotifyWatcher?>(nil)
        let watcher = InotifyWatcher(sourceRoot: root, filter: { _, _ in true }, log: { _ in })
        holder.withLock { $0 = watcher }
        try watcher.start { _ in
            holder.withLock { $0 }?.stop()
            stopped.withLock { $0 = true }
        }
        writeFile(abs("x"))
        let deadline = monotonicNanos() + 5_000_000_000
        while !stopped.withLock({ $0 }) && monotonicNanos() < deadline { usleep(5_000) }
        XCTAssertTrue(stopped.withLock { $0 }, "stop() called from a delivery returns")
        holder.withLock { $0 = nil }
    }

    func testManyDirectoriesRenamedAndRemoved() throws {
        // 30 x 30 directories: a rename of the top rebases all 931 watches.
        mkdirAt(abs("big"))
        for i in 0..<30 {
            mkdirAt(abs("big/d\(i)"))
            for j in 0..<30 { mkdirAt(abs("big/d\(i)/e\(j)")) }
        }
        let (watcher, log) = try startWatcher()
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 932 directories"), true,
                       "\(watcher.watchedDescription)")
        renameAt(abs("big"), abs("moved"))
        waitFor(log, .renamed(from: SyncPath("big"), to: SyncPath("moved"), isDirectory: true))
        writeFile(abs("moved/d29/e29/f"))
        waitFor(log, .changed(SyncPath("moved/d29/e29/f"), isDirectory: false, created: false, closed: true))
        XCTAssertEqual(watcher.watchedDescription.first?.hasPrefix("inotify: 932 directories"), true)
        XCTAssertFalse(log.snapshot.contains(.rescan(SyncPath("moved"))), "one rename, not a rescan")
        Self.removeTree(abs("moved"))
        waitFor(log, .removed(SyncPath("moved"), isDirectory: true))
        waitFor(log, "watches of the removed tree dropped") { _ in
            watcher.watchedDescription.first?.hasPrefix("inotify: 1 directory") == true
        }
    }

    /// The watch limit is lowered in a child user namespace (user.max_inotify_watches), never
    /// on the machine: this test re-runs itself under `unshare -U -r`.
    func testWatchLimitIsLoggedAndWatchingGoesOn() throws {
        let childMarker = "FANSYNC_INOTIFY_LIMIT_CHILD"
        if getenv(childMarker) != nil {
            try watchLimitChild()
            return
        }
        guard Self.spawnAndWait(["unshare", "-U", "-r", "/bin/true"], extraEnv: []) == 0 else {
            throw XCTSkip("unshare -U -r is not permitted here: cannot lower the watch limit safely")
        }
        let binary = CommandLine.arguments[0]
        let status = Self.spawnAndWait(
            ["unshare", "-U", "-r", binary, "FanSyncTests.InotifyWatcherTests/testWatchLimitIsLoggedAndWatchingGoesOn"],
            extraEnv: ["\(childMarker)=1"])
        XCTAssertEqual(status, 0, "the test in the child user namespace failed (its output is above)")
    }

    private func watchLimitChild() throws {
        let fd = open("/proc/sys/user/max_inotify_watches", O_WRONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0, "open /proc/sys/user/max_inotify_watches: errno \(errno)")
        XCTAssertEqual(write(fd, "3\n", 2), 2)
        close(fd)
        for d in ["d1", "d2", "d3", "d4", "d5"] { mkdirAt(abs(d)) }
        let (watcher, log) = try startWatcher()
        let lines = log.lines.withLock { $0 }
        XCTAssertEqual(lines.count, 1, "one message, not one per directory: \(lines)")
        XCTAssertTrue(lines.first?.contains("fs.inotify.max_user_watches is") == true, "\(lines)")
        XCTAssertTrue(lines.first?.contains("user.max_inotify_watches is 3") == true, "\(lines)")
        XCTAssertEqual(watcher.watchedDescription,
                       ["inotify: 3 directories under \(SyncPath.displayString(root)) (3 not watched: fs.inotify.max_user_watches reached)"])
        // What is watched still works.
        writeFile(abs("top"))
        waitFor(log, .changed(SyncPath("top"), isDirectory: false, created: false, closed: true))
    }

    private static func spawnAndWait(_ argv: [String], extraEnv: [String]) -> Int32 {
        var env: [String] = []
        var p = environ
        while let entry = p.pointee { env.append(String(cString: entry)); p += 1 }
        env += extraEnv
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup($0) } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], nil, nil, cArgs, cEnv)
        guard rc == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    func testUnwatchableRootIsAnError() {
        let missing = root + Array("/does-not-exist".utf8)
        let watcher = InotifyWatcher(sourceRoot: missing, filter: { _, _ in true }, log: { _ in })
        XCTAssertThrowsError(try watcher.start { _ in }) { error in
            guard case InotifyWatcherError.rootNotWatchable(let path, let e) = error else {
                return XCTFail("unexpected error \(error)")
            }
            XCTAssertEqual(e, ENOENT)
            XCTAssertTrue(path.hasSuffix("/does-not-exist"))
            XCTAssertTrue("\(error)".contains("cannot watch the source directory"), "\(error)")
        }
    }
}

final class InotifyWatchTableTests: XCTestCase {
    func testSubtreeFollowsTheIndexThroughUnwatchedDirectories() {
        var table = InotifyWatchTable()
        table.set(.root, wd: 1)
        table.set(SyncPath("a"), wd: 2)
        table.set(SyncPath("a/b"), wd: 3)
        table.set(SyncPath("a/b/c"), wd: 4)
        table.set(SyncPath("ab"), wd: 5)
        XCTAssertEqual(Set(table.subtree(of: SyncPath("a")).map(\.wd)), [2, 3, 4], "a sibling with a common prefix is not inside")
        // Dropping a middle directory alone keeps what is under it reachable.
        XCTAssertEqual(table.remove(wd: 3), SyncPath("a/b"))
        XCTAssertEqual(Set(table.subtree(of: SyncPath("a")).map(\.wd)), [2, 4])
        XCTAssertEqual(table.count, 4)
        XCTAssertEqual(Set(table.subtree(of: .root).map(\.wd)), [1, 2, 4, 5])
    }

    func testSetReplacesStaleEntriesBothWays() {
        var table = InotifyWatchTable()
        table.set(SyncPath("old"), wd: 7)
        table.set(SyncPath("new"), wd: 7)          // the same directory under a new name
        XCTAssertNil(table.wd(for: SyncPath("old")))
        XCTAssertEqual(table.path(for: 7), SyncPath("new"))
        table.set(SyncPath("new"), wd: 8)          // another directory took the name
        XCTAssertNil(table.path(for: 7))
        XCTAssertEqual(table.wd(for: SyncPath("new")), 8)
        XCTAssertEqual(table.count, 1)
        XCTAssertTrue(table.subtree(of: SyncPath("old")).isEmpty)
    }
}
