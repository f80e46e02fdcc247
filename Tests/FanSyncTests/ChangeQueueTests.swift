import XCTest
@testable import FanSync

final class ChangeQueueTests: XCTestCase {
    typealias Job = ChangeQueue.Job
    let a = SyncPath("a"), b = SyncPath("b"), c = SyncPath("c")

    func created(_ p: SyncPath, dir: Bool = false, closed: Bool = true) -> WatchEvent {
        .changed(p, isDirectory: dir, created: true, closed: closed)
    }
    func written(_ p: SyncPath, closed: Bool = true) -> WatchEvent {
        .changed(p, isDirectory: false, created: false, closed: closed)
    }
    func removed(_ p: SyncPath, dir: Bool = false) -> WatchEvent { .removed(p, isDirectory: dir) }
    func renamed(_ f: SyncPath, _ t: SyncPath, dir: Bool = false) -> WatchEvent { .renamed(from: f, to: t, isDirectory: dir) }

    /// Runs the queue to completion with one worker, returning the jobs in order.
    func drain(_ q: inout ChangeQueue, now: Double = 100) -> [Job] {
        var jobs: [Job] = []
        while true {
            let tickets = q.next(now: now, idle: 1)
            if tickets.isEmpty { break }
            for t in tickets {
                jobs.append(t.job)
                q.succeeded(t)
            }
        }
        XCTAssertTrue(q.isIdle)
        return jobs
    }

    func syncs(_ paths: SyncPath...) -> Job { .sync(paths) }

    func testCreateWriteCloseIsOneChange() {
        var q = ChangeQueue()
        q.add([created(a, closed: false), written(a, closed: false), written(a)], now: 0)
        XCTAssertEqual(drain(&q), [syncs(a)])
    }

    func testCreateThenDeleteIsNothing() {
        var q = ChangeQueue()
        q.add([created(a, closed: false), written(a), removed(a)], now: 0)
        XCTAssertEqual(drain(&q), [])
    }

    func testDeleteOfExistingFileIsSent() {
        var q = ChangeQueue()
        q.add([written(a), removed(a)], now: 0)
        XCTAssertEqual(drain(&q), [syncs(a)])
        q.add([removed(b)], now: 0)
        XCTAssertEqual(drain(&q), [syncs(b)])
    }

    /// A delete seen while a batch is in flight waits `deleteHold` (a copy closed just
    /// before, from a move across filesystems, is being made on the backup from what the
    /// delete would remove); with nothing in flight, or found by a start, it goes at once.
    func testDeleteWaitsBrieflyWhileABatchIsSent() {
        var q = ChangeQueue()
        q.add([written(c)], now: 0)
        let copy = q.next(now: 0, idle: 2)
        q.add([removed(a)], now: 0)
        XCTAssertEqual(q.next(now: 0.01, idle: 1), [])
        XCTAssertEqual(q.nextWakeup(now: 0.01), q.policy.deleteHold)
        q.add([written(b)], now: 0.02)
        XCTAssertEqual(q.next(now: 0.02, idle: 1).map(\.job), [syncs(b)])
        q.succeeded(copy[0])
        XCTAssertEqual(q.next(now: q.policy.deleteHold, idle: 1).map(\.job), [syncs(a)])
        // Nothing in flight: a delete and a create arriving together go in one batch.
        var q2 = ChangeQueue()
        q2.add([removed(a), created(b)], now: 0)
        XCTAssertEqual(q2.next(now: 0, idle: 1).map(\.job), [syncs(a, b)])
        // Found by a start: at once, whatever runs.
        var q3 = ChangeQueue()
        q3.add([written(c)], now: 0)
        _ = q3.next(now: 0, idle: 2)
        q3.add([removed(a)], now: 0, live: false)
        XCTAssertEqual(q3.next(now: 0, idle: 1).map(\.job), [syncs(a)])
    }

    func testDeleteThenCreateIsOneSync() {
        var q = ChangeQueue()
        q.add([removed(a), created(a)], now: 0)
        XCTAssertEqual(drain(&q), [syncs(a)])
        // delete, create, delete: the backup still holds the old file, so it is deleted.
        q.add([removed(a), created(a), removed(a)], now: 0)
        XCTAssertEqual(drain(&q), [syncs(a)])
    }

    func testCreateWhileBeingSentIsNotCancelledByDelete() {
        var q = ChangeQueue()
        q.add([created(a)], now: 0)
        let t = q.next(now: 1, idle: 1)
        XCTAssertEqual(t.map(\.job), [syncs(a)])
        q.add([removed(a), created(a), removed(a)], now: 1)   // the in-flight send may create it
        q.succeeded(t[0])
        XCTAssertEqual(drain(&q), [syncs(a)])
    }

    func testRenameOfNewFileIsCreateOfNewName() {
        var q = ChangeQueue()
        q.add([created(a, closed: false), written(a), renamed(a, b)], now: 0)
        XCTAssertEqual(drain(&q), [syncs(b)])
    }

    func testEditorSaveIsOneSyncOfTheTarget() {
        var q = ChangeQueue()
        let tmp = SyncPath(".a.swp")
        q.add([created(tmp, closed: false), written(tmp), renamed(tmp, a)], now: 0)
        XCTAssertEqual(drain(&q), [syncs(a)])
    }

    func testRenameOfExistingFileIsRenamedOnBackup() {
        var q = ChangeQueue()
        q.add([renamed(a, b)], now: 0)
        XCTAssertEqual(drain(&q), [.rename(from: a, to: b, isDirectory: false)])
    }

    func testRenameChainsCollapse() {
        var q = ChangeQueue()
        q.add([renamed(a, b), renamed(b, c)], now: 0)
        XCTAssertEqual(drain(&q), [.rename(from: a, to: c, isDirectory: false)])
        q.add([renamed(a, b), renamed(b, a)], now: 0)
        XCTAssertEqual(drain(&q), [])
    }

    func testWriteThenRenameSendsRenameThenNewName() {
        var q = ChangeQueue()
        q.add([written(a), renamed(a, b)], now: 0)
        XCTAssertEqual(drain(&q), [.rename(from: a, to: b, isDirectory: false), syncs(b)])
    }

    func testRenameThenWriteOfNewName() {
        var q = ChangeQueue()
        q.add([renamed(a, b), written(b)], now: 0)
        XCTAssertEqual(drain(&q), [.rename(from: a, to: b, isDirectory: false), syncs(b)])
    }

    func testRenameThenDeleteOfNewName() {
        var q = ChangeQueue()
        q.add([renamed(a, b), removed(b)], now: 0)
        XCTAssertEqual(drain(&q), [.rename(from: a, to: b, isDirectory: false), syncs(b)])
    }

    func testDirectoryRenameMovesPendingChildren() {
        var q = ChangeQueue()
        let ax = SyncPath("a/x"), by = SyncPath("b/y")
        q.add([written(ax), written(by), renamed(a, b, dir: true)], now: 0)
        let jobs = drain(&q)
        XCTAssertEqual(jobs.first, .rename(from: a, to: b, isDirectory: true))
        XCTAssertEqual(jobs.count, 2)
        if case .sync(let paths) = jobs[1] { XCTAssertEqual(Set(paths), [SyncPath("b/x"), by]) } else { XCTFail() }
    }

    func testSyncsBeforeBarrierGoFirstAndLaterOnesWait() {
        var q = ChangeQueue()
        q.add([written(c)], now: 0)
        q.add([renamed(a, b)], now: 0)
        q.add([written(SyncPath("d"))], now: 0)
        XCTAssertEqual(drain(&q), [syncs(c), .rename(from: a, to: b, isDirectory: false), syncs(SyncPath("d"))])
    }

    func testTreeBlocksEventsUntilDoneAndCoversCreates() {
        var q = ChangeQueue()
        q.addTree(.root, initial: true, now: 0)
        let t = q.next(now: 0, idle: 2)
        XCTAssertEqual(t.map(\.job), [.tree(.root, initial: true)])
        // Arrives during the initial sync: queued, and a create+delete is not cancelled
        // because the tree sync may have sent the file.
        q.add([created(a), removed(a)], now: 1)
        XCTAssertEqual(q.next(now: 1, idle: 2), [])
        q.succeeded(t[0])
        XCTAssertEqual(drain(&q), [syncs(a)])
    }

    func testTreesMerge() {
        var q = ChangeQueue()
        q.addTree(SyncPath("a/b"), initial: false, now: 0)
        q.addTree(a, initial: false, now: 0)
        q.addTree(SyncPath("a/c"), initial: false, now: 0)
        XCTAssertEqual(drain(&q), [.tree(a, initial: false)])
    }

    func testFailedBatchIsRetriedAfterBackoff() {
        var q = ChangeQueue()
        q.add([written(a)], now: 0)
        let t = q.next(now: 0, idle: 1)
        q.failed(t[0], retryAt: 10)
        XCTAssertEqual(q.queuedCount, 1)
        XCTAssertEqual(q.next(now: 5, idle: 1), [])
        XCTAssertEqual(q.nextWakeup(now: 5), 10)
        XCTAssertEqual(q.next(now: 10, idle: 1).map(\.job), [syncs(a)])
        XCTAssertEqual(q.oldestUnsynced, 0)
    }

    func testFailedBarrierStaysFirst() {
        var q = ChangeQueue()
        q.add([renamed(a, b), written(c)], now: 0)
        let t = q.next(now: 0, idle: 1)
        XCTAssertEqual(t.map(\.job), [.rename(from: a, to: b, isDirectory: false)])
        q.failed(t[0], retryAt: 5)
        XCTAssertEqual(q.next(now: 1, idle: 1), [])
        XCTAssertEqual(drain(&q, now: 5), [.rename(from: a, to: b, isDirectory: false), syncs(c)])
    }

    func testOpenFileWaitsForIntervalUnlessClosed() {
        var p = ChangeQueue.Policy()
        p.openFileInterval = 2
        var q = ChangeQueue(policy: p)
        q.add([written(a, closed: false)], now: 0)
        XCTAssertEqual(q.next(now: 1, idle: 1), [])
        XCTAssertEqual(q.next(now: 2, idle: 1).map(\.job), [syncs(a)])
        q.add([written(b, closed: false), written(b)], now: 3)
        XCTAssertEqual(q.next(now: 3, idle: 1).map(\.job), [syncs(b)])
    }

    func testDelayAndMaxDelays() {
        var p = ChangeQueue.Policy()
        p.delay = 1
        p.maxDelays = 3
        var q = ChangeQueue(policy: p)
        q.add([written(a), written(b)], now: 0)
        XCTAssertEqual(q.next(now: 0.5, idle: 1), [])
        XCTAssertEqual(q.nextWakeup(now: 0.5), 1)
        q.add([written(c)], now: 0.6)
        let t = q.next(now: 0.6, idle: 1)   // three queued: go at once
        XCTAssertEqual(t.count, 1)
        if case .sync(let paths) = t[0].job { XCTAssertEqual(paths.count, 3) } else { XCTFail() }
    }

    func testGroupCommitAndSplitAcrossWorkers() {
        var q = ChangeQueue()
        q.add([written(a)], now: 0)
        let first = q.next(now: 0, idle: 2)
        XCTAssertEqual(first.map(\.job), [syncs(a)])
        let burst = (0..<1000).map { written(SyncPath("f\($0)")) }
        q.add(burst, now: 0)
        let next = q.next(now: 0.1, idle: 1)
        XCTAssertEqual(next.count, 1)
        if case .sync(let paths) = next[0].job { XCTAssertEqual(paths.count, 1000) } else { XCTFail() }
        q.succeeded(first[0]); q.succeeded(next[0])
        q.add(burst, now: 0)
        let split = q.next(now: 0.1, idle: 2)
        XCTAssertEqual(split.count, 2)
    }

    /// A backlog far larger than a batch goes out in batches of at most `maxBatch`, every
    /// path exactly once, one worker at a time or several.
    func testLargeBacklogInBatchesOfAtMostMaxBatch() {
        var q = ChangeQueue()
        q.policy.burstHold = 0
        let paths = (0..<25_000).map { SyncPath("d\($0 % 97)/f\($0)") }
        q.add(paths.map { written($0) }, now: 0)
        var sent: [SyncPath] = []
        var round = 0
        while q.queuedCount > 0 && round < 100 {
            round += 1
            let tickets = q.next(now: 1, idle: round % 3 == 0 ? 2 : 1)
            XCTAssertFalse(tickets.isEmpty)
            for t in tickets {
                guard case .sync(let batch) = t.job else { return XCTFail("\(t.job)") }
                XCTAssertLessThanOrEqual(batch.count, q.policy.maxBatch)
                sent += batch
                q.succeeded(t)
            }
        }
        XCTAssertEqual(sent.count, paths.count)
        XCTAssertEqual(Set(sent), Set(paths))
    }

    func testBurstIsHeldBrieflyButALoneChangeIsNot() {
        var q = ChangeQueue()
        q.add([written(a)], now: 10)
        XCTAssertEqual(q.next(now: 10, idle: 1).count, 1, "a lone change goes at once")
        var q2 = ChangeQueue()
        q2.add((0..<300).map { written(SyncPath("f\($0)")) }, now: 0)
        XCTAssertEqual(q2.next(now: 0.01, idle: 1), [], "a burst waits for more")
        XCTAssertEqual(q2.nextWakeup(now: 0.01), 0.05)
        q2.add((300..<600).map { written(SyncPath("f\($0)")) }, now: 0.04)
        XCTAssertEqual(q2.next(now: 0.06, idle: 1), [], "still arriving")
        let t = q2.next(now: 0.1, idle: 1)
        XCTAssertEqual(t.count, 1)
        if case .sync(let paths) = t.first?.job { XCTAssertEqual(paths.count, 600) } else { XCTFail() }
        // Never more than burstHold after the first path queued, however long the burst.
        var q3 = ChangeQueue()
        var now = 0.0
        while now < 0.24 { q3.add((0..<300).map { written(SyncPath("g\(now)-\($0)")) }, now: now); now += 0.02 }
        XCTAssertEqual(q3.next(now: 0.26, idle: 1).count, 1)
    }

    /// A worker waits until `nextWakeup`: a time already past while nothing can go would
    /// have it ask again and again (a spin) for as long as a transfer runs.
    func testNoWakeupInThePastWhileNothingCanGo() {
        // Changes queued during the initial sync wait for its end, not for a clock.
        var q = ChangeQueue()
        q.addTree(.root, initial: true, now: 0)
        let tree = q.next(now: 0, idle: 2)
        q.add([written(a), written(b)], now: 1)
        XCTAssertEqual(q.next(now: 2, idle: 1), [])
        XCTAssertNil(q.nextWakeup(now: 2))
        q.succeeded(tree[0])
        XCTAssertEqual(q.next(now: 3, idle: 2).map(\.job), [syncs(a, b)])

        // A path changed again while it is being sent waits for that transfer to end.
        var q2 = ChangeQueue()
        q2.add([written(a)], now: 0)
        let first = q2.next(now: 0, idle: 2)
        q2.add([written(a)], now: 1)
        XCTAssertEqual(q2.next(now: 2, idle: 1), [])
        XCTAssertNil(q2.nextWakeup(now: 2))
        q2.succeeded(first[0])
        XCTAssertEqual(q2.next(now: 3, idle: 1).map(\.job), [syncs(a)])

        // A rename waits for the batch before it; a retried one for its back-off.
        var q3 = ChangeQueue()
        q3.add([written(c)], now: 0)
        let batch = q3.next(now: 0, idle: 2)
        q3.add([renamed(a, b)], now: 1)
        XCTAssertEqual(q3.next(now: 2, idle: 1), [])
        XCTAssertNil(q3.nextWakeup(now: 2))
        q3.succeeded(batch[0])
        let rename = q3.next(now: 3, idle: 1)
        XCTAssertEqual(rename.map(\.job), [.rename(from: a, to: b, isDirectory: false)])
        q3.failed(rename[0], retryAt: 8)
        XCTAssertEqual(q3.next(now: 4, idle: 1), [])
        XCTAssertEqual(q3.nextWakeup(now: 4), 8)
        XCTAssertEqual(q3.next(now: 8, idle: 1).map(\.job), [.rename(from: a, to: b, isDirectory: false)])
    }

    /// With a delay, changes arriving one by one go together when the first one's delay
    /// ends, every one of them, and a reload's new delay applies to what is queued.
    func testDelayedBurstGoesWhenTheFirstChangeIsDue() {
        var p = ChangeQueue.Policy()
        p.delay = 10
        var q = ChangeQueue(policy: p)
        let paths = (0..<5_000).map { SyncPath("d/f\($0)") }
        for (i, path) in paths.enumerated() {
            let now = Double(i) / 1_000
            q.add([written(path)], now: now)
            XCTAssertEqual(q.next(now: now, idle: 2), [])
        }
        XCTAssertEqual(q.nextWakeup(now: 5), 10)
        XCTAssertEqual(q.next(now: 9.99, idle: 2), [])
        let due = q.next(now: 10.5, idle: 1)
        guard case .sync(let sent) = due.first?.job else { return XCTFail("\(due)") }
        XCTAssertEqual(sent.count, 501, "what arrived by 0.5 s")
        q.succeeded(due[0])
        XCTAssertEqual(q.next(now: 10.5, idle: 1), [])
        XCTAssertEqual(q.nextWakeup(now: 10.5), 10.501)
        q.policy.delay = 0
        let all = sent + drain(&q, now: 10.5).flatMap { job -> [SyncPath] in
            guard case .sync(let more) = job else { XCTFail("\(job)"); return [] }
            return more
        }
        XCTAssertTrue(all.count == paths.count && Set(all) == Set(paths), "\(all.count) sent of \(paths.count)")
    }

    func testSamePathIsNeverInTwoBatches() {
        var q = ChangeQueue()
        q.add([written(a)], now: 0)
        let t = q.next(now: 0, idle: 2)
        q.add([written(a)], now: 0)
        XCTAssertEqual(q.next(now: 0, idle: 1), [])
        q.succeeded(t[0])
        XCTAssertEqual(q.next(now: 0, idle: 1).map(\.job), [syncs(a)])
    }

    func testRenamesAsCopiesWhenDeletesAreOff() {
        var p = ChangeQueue.Policy()
        p.renamesOnBackup = false
        var q = ChangeQueue(policy: p)
        q.add([renamed(a, b), renamed(c, SyncPath("d"), dir: true)], now: 0)
        XCTAssertEqual(drain(&q), [syncs(b), .tree(SyncPath("d"), initial: false)])
    }

    /// Every pair of operations on one path ends in a state the queue reports correctly:
    /// either nothing (when the path never reached the backup) or one sync of it.
    func testEveryPairOnOnePath() {
        let ops: [(String, WatchEvent)] = [("create", created(a)), ("write", written(a)), ("delete", removed(a))]
        for (n1, e1) in ops {
            for (n2, e2) in ops {
                var q = ChangeQueue()
                q.add([e1, e2], now: 0)
                let jobs = drain(&q)
                let expectNothing = n1 == "create" && n2 == "delete"
                XCTAssertEqual(jobs, expectNothing ? [] : [syncs(a)], "\(n1) then \(n2)")
            }
        }
    }
}

final class TransportArgumentTests: XCTestCase {
    func testRsyncStatsParsing() {
        let stats = RsyncStats(parsing: """
        Number of files: 10 (reg: 7, dir: 3)
        Number of created files: 2 (reg: 2)
        Number of deleted files: 3 (reg: 2, dir: 1)
        Number of regular files transferred: 5
        Total bytes sent: 1,234
        """)
        XCTAssertEqual(stats.files, 5)
        XCTAssertEqual(stats.deleted, 3)
        XCTAssertEqual(stats.bytes, 1234)
    }

    func testShellQuoteKeepsEveryByte() {
        XCTAssertEqual(shellQuote(Array("a'b".utf8)), Array("'a'\\''b'".utf8))
        XCTAssertEqual(shellQuote([0xff, 0x0a]), [UInt8(ascii: "'"), 0xff, 0x0a, UInt8(ascii: "'")])
    }

    func testBatchArgumentsForSSHTarget() throws {
        var c = MirrorConfig(name: "m", source: Array("/src".utf8),
                             target: .ssh(SSHTarget(user: "u", host: "h", port: 2222, directory: Array("/dst dir".utf8))))
        c.ssh.options = ["UserKnownHostsFile=/tmp/k h"]
        c.rsync.extra = ["--delete", "--info=progress2"]
        let t = try Transport(config: c)
        defer { t.close() }
        let args = t.batchArguments(deletes: true).map { String(decoding: $0, as: UTF8.self) }
        XCTAssertEqual(args.first, "rsync")
        XCTAssertTrue(args.contains("--files-from=-"))
        XCTAssertTrue(args.contains("--from0"))
        XCTAssertTrue(args.contains("--delete-missing-args"))
        XCTAssertTrue(args.contains("--force"))
        XCTAssertTrue(args.contains("--protect-args"))
        XCTAssertFalse(args.contains("--delete"), "a --delete extra is the delete mode, not a batch flag")
        XCTAssertTrue(args.contains("--info=progress2"))
        XCTAssertEqual(args.suffix(2), ["/src/", "u@h:/dst dir/"])
        let e = args[args.firstIndex(of: "-e")! + 1]
        XCTAssertTrue(e.contains("-p 2222"))
        XCTAssertTrue(e.contains("\"UserKnownHostsFile=/tmp/k h\""), e)
        XCTAssertTrue(e.contains("BatchMode=yes"))
        XCTAssertTrue(e.contains("ControlPath="))
        let noDeletes = t.batchArguments(deletes: false).map { String(decoding: $0, as: UTF8.self) }
        XCTAssertTrue(noDeletes.contains("--ignore-missing-args"))
        XCTAssertFalse(noDeletes.contains("--delete-missing-args"))
    }

    func testTreeArguments() throws {
        var c = MirrorConfig(name: "m", source: Array("/src".utf8), target: .local(path: Array("/dst".utf8)))
        c.deleteExcluded = true
        let t = try Transport(config: c)
        let args = t.treeArguments(SyncPath("a b"), deletes: true, excludeFile: "/tmp/x").map { String(decoding: $0, as: UTF8.self) }
        XCTAssertTrue(args.contains("--recursive"))
        XCTAssertTrue(args.contains("--delete"))
        XCTAssertTrue(args.contains("--delete-excluded"))
        XCTAssertTrue(args.contains("--exclude-from=/tmp/x"))
        XCTAssertEqual(args.suffix(2), ["/src/a b/", "/dst/a b/"])
        let keep = t.treeArguments(.root, deletes: false, excludeFile: nil).map { String(decoding: $0, as: UTF8.self) }
        XCTAssertFalse(keep.contains("--delete"))
        XCTAssertEqual(keep.suffix(2), ["/src/", "/dst/"])
    }
}

final class RunArgumentTests: XCTestCase {
    func testParsesEveryFlag() throws {
        let p = try RunCommand.parse(["/w", "u@h:/b", "--exclude", ".git", "--exclude=__pycache__", "--delay", "0.5",
                                      "--max-delays", "100", "--max-processes", "4", "--status-file", "/run/s.json",
                                      "--log-file", "/tmp/l", "--backend", "inotify", "--open-file-interval", "3",
                                      "--ssh-option", "Port=22", "--bwlimit", "1000", "--compress", "--delete", "running",
                                      "--rules-file", ".ignore", "--use-gitignore", "-v"], cwd: "/")
        let m = try XCTUnwrap(p.mirrors.first)
        XCTAssertEqual(m.excludes, [".git", "__pycache__"])
        XCTAssertEqual(m.delay, 0.5)
        XCTAssertEqual(m.maxDelays, 100)
        XCTAssertEqual(m.maxProcesses, 4)
        XCTAssertEqual(m.backend, .inotify)
        XCTAssertEqual(m.openFileInterval, 3)
        XCTAssertEqual(m.ssh.options, ["Port=22"])
        XCTAssertEqual(m.rsync.bwlimit, 1000)
        XCTAssertTrue(m.rsync.compress)
        XCTAssertEqual(m.delete, .running)
        XCTAssertEqual(m.rulesFile, ".ignore")
        XCTAssertTrue(m.useGitignore)
        XCTAssertEqual(p.settings.statusFile, "/run/s.json")
        XCTAssertEqual(p.settings.logFile, "/tmp/l")
        XCTAssertTrue(p.settings.verbose)
        XCTAssertEqual(m.source, Array("/w".utf8))
        XCTAssertEqual(m.name, "w")
        guard case .ssh(let t) = m.target else { return XCTFail("not ssh") }
        XCTAssertEqual(t.host, "h")
    }

    func testRelativeSourceAndErrors() throws {
        let p = try RunCommand.parse(["src/../work", "/backup"], cwd: "/home/u")
        XCTAssertEqual(p.mirrors[0].source, Array("/home/u/work".utf8))
        XCTAssertEqual(p.mirrors[0].localCopy, .auto)
        XCTAssertEqual(try RunCommand.parse(["/a", "/b", "--local-copy", "rsync"]).mirrors[0].localCopy, .rsync)
        for bad in [["/a"], ["/a", "/b", "/c"], ["/a", "/b", "--delay", "x"], ["/a", "/b", "--delay", "-1"],
                    ["/a", "/b", "--max-processes", "0"], ["/a", "/b", "--backend", "magic"], ["/a", "/b", "--nope"],
                    ["/a", "/a/b"], ["/a/b", "/a"], ["/a", "/b", "--delete", "maybe"], ["/a", "/b", "--ssh-option", "novalue"],
                    ["/a", "/b", "--compress=yes"], ["/a", "/b", "--rules-file", "a/b"],
                    ["/a", "/b", "--local-copy", "cp"], ["/a", "/b", "--local-copy"]] {
            XCTAssertThrowsError(try RunCommand.parse(bad, cwd: "/"), "\(bad)")
        }
    }
}

final class CommandLineSplitTests: XCTestCase {
    func testSplitsLikeRsync() {
        XCTAssertEqual(splitCommandLine("/usr/bin/ssh -l user -i /root/.ssh/id"), ["/usr/bin/ssh", "-l", "user", "-i", "/root/.ssh/id"])
        XCTAssertEqual(splitCommandLine("ssh -o 'ProxyCommand=nc %h %p'  -p 2222"), ["ssh", "-o", "ProxyCommand=nc %h %p", "-p", "2222"])
        XCTAssertEqual(splitCommandLine("ssh -i \"/keys/my key\" x\\ y ''"), ["ssh", "-i", "/keys/my key", "x y", ""])
    }
}
