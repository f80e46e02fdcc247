import FanSync
import Foundation
import Glibc
import XCTest

/// The index in the running daemon: what the backup already holds is not sent again
/// (asserted through the status counters, which count rsync's own `--stats`), moves and
/// copies are made on the backup, restarts send only what differs, a kill -9 loses
/// nothing, and deletes that look like a lost volume wait for the operator.
final class IndexMirrorTests: XCTestCase {
    override func setUp() { continueAfterFailure = false }

    /// A temporary folder for one test (removed after it) holding an empty `source`, and
    /// the path of a `backup` beside it.
    func workspace(_ label: String) -> (work: String, src: String, dst: String) {
        let work = Harness.tempDirectory(label)
        addTeardownBlock { Harness.removeTree(work) }
        mkdir(work + "/source", 0o755)
        return (work, work + "/source", work + "/backup")
    }

    func counter(_ d: DaemonProcess, _ key: String) -> Int { Int(d.firstSync?[key]?.number ?? -1) }

    /// Waits until the counter `key` reaches at least `value` (the status is rewritten
    /// 0.2 s after a transfer).
    func waitCounter(_ d: DaemonProcess, _ key: String, atLeast value: Int, timeout: Double = 20,
                     file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if counter(d, key) >= value { return }
            usleep(50_000)
        }
        XCTFail("\(key) = \(counter(d, key)), expected >= \(value); status \(d.firstSync?.serialized() ?? "none")\n\(d.log.suffix(3000))", file: file, line: line)
    }

    /// Two workers: a small change goes beside a long transfer, not behind it (a second
    /// job waits only for a free core, and for at most `Mirror.parallelAfter`).
    func testSmallChangeGoesBesideALongTransfer() throws {
        let (work, src, dst) = workspace("beside-long")
        // --bwlimit makes every batch an rsync run at 4 MB/s: the large file takes ~3 s.
        let daemon = try DaemonProcess(arguments: [src, dst, "--max-processes", "2", "--bwlimit", "4000"], workDir: work)
        daemon.waitCaughtUp()
        XCTAssertTrue(writeFile(Array((src + "/large.bin").utf8), randomBytes(12 << 20)))
        let deadline = Date().addingTimeInterval(10)
        while counter(daemon, "in_flight") < 1 && Date() < deadline { usleep(20_000) }
        XCTAssertGreaterThanOrEqual(counter(daemon, "in_flight"), 1, daemon.log)
        writeFile(src, "-small 'edit'.txt", "small\n")
        var small = false
        while !small && Date() < deadline {
            small = access(dst + "/-small 'edit'.txt", F_OK) == 0
            if !small { usleep(20_000) }
        }
        XCTAssertTrue(small, daemon.log)
        XCTAssertNotEqual(access(dst + "/large.bin", F_OK), 0, "the large file was done first: nothing was tested")
        waitConverged(src, dst, daemon: daemon)
        daemon.stop()
    }

    /// The background hashing of what a tree sync recorded waits until nothing is queued or
    /// being sent: a burst keeps the CPU and the index for its copies.
    func testFillWaitsForTransfersToEnd() throws {
        let (work, src, dst) = workspace("fill-waits")
        // --bwlimit makes every batch an rsync run at 4 MB/s.
        let daemon = try DaemonProcess(arguments: [src, dst, "--bwlimit", "4000"], workDir: work)
        daemon.waitCaughtUp()
        // A directory moved into the source is a tree sync (~1 s here), whose files the
        // fill then hashes; a large file written meanwhile is sent after it (~3 s).
        let staged = work + "/staged"
        mkdir(staged, 0o755)
        mkdirs(staged, "moved in")
        for i in 0..<40 { writeFile(staged, "moved in/f\(i) 'x'", "file \(i)\n") }
        XCTAssertTrue(writeFile(Array((staged + "/moved in/big").utf8), randomBytes(4 << 20)))
        // Made before the tree sync starts: generating it (a debug build: ~1 s) once outlasted
        // the tree sync, and the file was then written after it, the queue idle between.
        let large = randomBytes(12 << 20)
        XCTAssertEqual(renamePath(Array((staged + "/moved in").utf8), Array((src + "/moved in").utf8)), 0)
        let deadline = Date().addingTimeInterval(10)
        while counter(daemon, "in_flight") < 1 && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(writeFile(Array((src + "/large.bin").utf8), large))
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        let log = daemon.log
        guard let tree = log.range(of: "resynced moved in"),
              let large = log.range(of: "sent batch of 1 path(s): 1 file(s)", range: tree.upperBound..<log.endIndex)
        else { return XCTFail("the tree sync, then the large file, expected in the log:\n\(log)") }
        let fill = log.range(of: "recorded by the full sync", range: tree.upperBound..<log.endIndex)
        XCTAssertNotNil(fill, "the moved files were not hashed:\n\(log)")
        if let fill { XCTAssertGreaterThan(fill.lowerBound, large.upperBound, "hashed while the large file was sent:\n\(log)") }
        daemon.stop()
    }

    func testLocalDedupMovesAndCopies() throws { try dedupScenario(ssh: nil) }

    func testSSHDedupMovesAndCopies() throws {
        let server = try SSHServer()
        defer { server.stop() }
        try dedupScenario(ssh: server)
    }

    func dedupScenario(ssh: SSHServer?) throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root (tmpfs mount)") }
        let work = Harness.tempDirectory("idx")
        defer { Harness.removeTree(work) }
        let src = work + "/source", dst = ssh?.makeBackupDirectory("idx-backup") ?? (work + "/backup")
        mkdir(src, 0o755)
        // A second filesystem inside the source: a move from it is a copy and a delete.
        mkdir(src + "/scratch", 0o755)
        XCTAssertEqual(try Subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", src + "/scratch"]).status, 0)
        defer { _ = try? Subprocess.run(["umount", "-l", src + "/scratch"]) }

        let model = randomBytes(3 << 20)
        XCTAssertTrue(writeFile(bytesPath(src, Array("best.pt".utf8)), model))
        let daemon = try DaemonProcess(arguments: [src, ssh?.target(dst) ?? dst] + (ssh?.fansyncOptions ?? []), workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        waitConverged(src, dst, daemon: daemon)
        let sentAtStart = counter(daemon, "files_sent")

        // Saved again with the same bytes (a new inode, through a temporary file): not sent.
        XCTAssertTrue(writeFile(bytesPath(src, Array("-leading dash 'q' $(x)".utf8)), Array("same bytes\n".utf8)))
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        let skippedBefore = counter(daemon, "skipped")
        let sentBefore = counter(daemon, "files_sent")
        XCTAssertTrue(writeFile(bytesPath(src, Array(".best.pt.tmp".utf8)), model))
        XCTAssertEqual(renamePath(bytesPath(src, Array(".best.pt.tmp".utf8)), bytesPath(src, Array("best.pt".utf8))), 0)
        XCTAssertTrue(writeFile(bytesPath(src, Array("-leading dash 'q' $(x)".utf8)), Array("same bytes\n".utf8)))
        waitCounter(daemon, "skipped", atLeast: skippedBefore + 2)
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        XCTAssertEqual(counter(daemon, "files_sent"), sentBefore, "a file saved unchanged was sent again")

        // cp of a file the backup holds: made on the backup from its copy.
        let copiedBefore = counter(daemon, "copied")
        XCTAssertEqual(try Subprocess.run(["cp", src + "/best.pt", src + "/last.pt"]).status, 0)
        waitCounter(daemon, "copied", atLeast: copiedBefore + 1)
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        XCTAssertEqual(counter(daemon, "files_sent"), sentBefore, "a copy of a known file was sent")

        // A move across a filesystem boundary into the tree: the file was sent once, from the
        // scratch filesystem; its move to the source's own filesystem sends nothing.
        let moved = randomBytes(1 << 20)
        let odd: [UInt8] = Array("new\nline ".utf8) + [0xff, 0xfe] + Array(".bin".utf8)
        XCTAssertTrue(writeFile(bytesPath(src, Array("scratch/".utf8) + odd), moved))
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        let sentBeforeMove = counter(daemon, "files_sent")
        let movesBefore = counter(daemon, "renames") + counter(daemon, "copied")
        XCTAssertEqual(try Subprocess.run([Array("mv".utf8), Array("--".utf8), bytesPath(src, Array("scratch/".utf8) + odd),
                                           bytesPath(src, Array("moved-".utf8) + odd)]).status, 0)
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        XCTAssertEqual(counter(daemon, "files_sent"), sentBeforeMove, "a moved file was sent again:\n\(daemon.log.suffix(2000))")
        XCTAssertGreaterThan(counter(daemon, "renames") + counter(daemon, "copied"), movesBefore)
        XCTAssertGreaterThan(sentAtStart, 0)
        XCTAssertEqual(daemon.firstSync?["last_error"], .null, daemon.log)
    }

    /// A burst of new files into a local backup is copied without hashing first: the copier
    /// hashes on the way, and the index holds the same hashes the hasher would have stored
    /// (a file saved again unchanged afterwards is not sent; a file over 1 MiB in such a
    /// batch is hashed in the background; a restart sends nothing).
    func testBurstHashedByTheLocalCopier() throws {
        let (work, src, dst) = workspace("copier-burst")
        var daemon = try DaemonProcess(arguments: [src, dst, "-v", "--max-processes", "1"], workDir: work)
        daemon.waitCaughtUp()
        let staging = work + "/staging"
        mkdir(staging, 0o755)
        mkdirs(staging, "burst/sub dir")
        var contents: [String: [UInt8]] = [:]
        for i in 0..<300 {
            let rel = "burst/\(i % 2 == 0 ? "sub dir/" : "")f \(i) 'q'.txt"
            contents[rel] = Array("content of \(i)\n".utf8)
            writeFile(staging, rel, "content of \(i)\n")
        }
        contents["burst/large.bin"] = randomBytes((1 << 20) + 100)
        XCTAssertTrue(writeFile(Array((staging + "/burst/large.bin").utf8), contents["burst/large.bin"]!))
        symlink("sub dir", staging + "/burst/link")
        // The daemon stopped while the burst is written: its events wait in the kernel's
        // queue, are read together and go as one batch (behind a large file instead, the
        // burst was split whenever `cp` ran slower than that file's copy).
        XCTAssertEqual(kill(daemon.pid, SIGSTOP), 0)
        let copied = try Subprocess.run(["cp", "-a", staging + "/burst", src + "/burst"]).status
        XCTAssertEqual(kill(daemon.pid, SIGCONT), 0)
        XCTAssertEqual(copied, 0)
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        XCTAssertEqual(counter(daemon, "files_sent"), 301, daemon.log)
        XCTAssertTrue(daemon.log.contains("hashed while copied"), daemon.log)

        // Saved again with the same bytes: skipped, so the recorded hash was right.
        let skipped = counter(daemon, "skipped"), sent = counter(daemon, "files_sent")
        writeFile(src, "burst/f 1 'q'.txt", "content of 1\n")
        waitCounter(daemon, "skipped", atLeast: skipped + 1)
        XCTAssertEqual(counter(daemon, "files_sent"), sent)
        daemon.stop()

        do {
            let index = try Index(file: work + "/state/source/index.sqlite")
            for (rel, bytes) in contents where rel != "burst/large.bin" {
                let e = try XCTUnwrap(try index.lookup(SyncPath(rel)), rel)
                XCTAssertEqual(e.wholeHash, ContentHash.of(bytes).whole, rel)
                XCTAssertTrue(e.acked, rel)
            }
            let link = try XCTUnwrap(try index.lookup(SyncPath("burst/link")))
            XCTAssertEqual(link.linkTarget, Array("sub dir".utf8))
            XCTAssertEqual(link.wholeHash, ContentHash.of(Array("sub dir".utf8)).whole)
            XCTAssertEqual(try index.lookup(SyncPath("burst/sub dir"))?.kind, .directory)
            // Copied by the kernel, hashed afterwards by the background hashing (or not yet).
            let large = try XCTUnwrap(try index.lookup(SyncPath("burst/large.bin")))
            XCTAssertTrue(large.wholeHash == nil || large.wholeHash == ContentHash.of(contents["burst/large.bin"]!).whole)
        }
        daemon = try DaemonProcess(arguments: [src, dst], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        XCTAssertTrue(daemon.log.contains("starting from the index"), daemon.log)
        XCTAssertEqual(counter(daemon, "files_sent"), 0, "a restart after the burst sent files again:\n\(daemon.log)")
    }

    /// Restarts send only what differs: unchanged files are not sent, changes made while
    /// fansync was stopped (new, changed, touched, moved, deleted) reach the backup, and a
    /// move is a rename there.
    func testRestartSendsOnlyWhatDiffers() throws {
        let (work, src, dst) = workspace("restart")
        for d in 0..<10 {
            mkdirs(src, "d\(d)")
            for f in 0..<30 { writeFile(src, "d\(d)/f\(f).txt", "file \(d) \(f)\n") }
        }
        XCTAssertTrue(writeFile(bytesPath(src, Array("big".utf8)), randomBytes(2 << 20)))
        var daemon = try DaemonProcess(arguments: [src, dst], workDir: work)
        daemon.waitCaughtUp()
        waitConverged(src, dst, daemon: daemon)
        daemon.stop()

        // While stopped: one new file, one changed, one touched, one moved, one deleted.
        writeFile(src, "new.txt", "new\n")
        writeFile(src, "d1/f1.txt", "changed\n")
        XCTAssertEqual(try Subprocess.run(["touch", src + "/d2/f2.txt"]).status, 0)
        XCTAssertEqual(rename(src + "/big", src + "/d3/big-moved"), 0)
        unlink(src + "/d4/f4.txt")

        daemon = try DaemonProcess(arguments: [src, dst], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        waitConverged(src, dst, daemon: daemon)
        XCTAssertTrue(daemon.log.contains("starting from the index"), daemon.log)
        // new.txt and d1/f1.txt; not the 300 unchanged files, not the moved 2 MiB file.
        XCTAssertLessThanOrEqual(counter(daemon, "files_sent"), 2, daemon.log)
        XCTAssertGreaterThanOrEqual(counter(daemon, "renames"), 1, daemon.log)
        XCTAssertGreaterThanOrEqual(counter(daemon, "skipped"), 1, daemon.log)
        XCTAssertEqual(daemon.firstSync?["last_error"], .null, daemon.log)
        daemon.stop()

        // The backup emptied while fansync was stopped (its directory kept): the index no
        // longer describes it, and the start is a full sync.
        XCTAssertEqual(try Subprocess.run(["sh", "-c", "rm -rf -- \"$1\"/* \"$1\"/.[!.]*", "sh", dst]).status, 0)
        let third = try DaemonProcess(arguments: [src, dst], workDir: work)
        defer { third.stop() }
        third.waitCaughtUp()
        waitConverged(src, dst, daemon: third)
        XCTAssertTrue(third.log.contains("forgetting the index; full sync"), third.log)
    }

    /// kill -9 during a 5,000-file burst, then a restart: the backup converges, and what
    /// was acknowledged before the kill is not sent again.
    func testKillNineDuringBurstThenRestart() throws {
        let (work, src, dst) = workspace("kill9")
        writeFile(src, "before.txt", "before\n")
        var daemon = try DaemonProcess(arguments: [src, dst], workDir: work)
        daemon.waitCaughtUp()
        for i in 0..<5000 {
            if i % 100 == 0 { mkdirs(src, "burst/d\(i / 100)") }
            writeFile(src, "burst/d\(i / 100)/f\(i).txt", "burst file \(i)\n")
            if i == 2500 { usleep(300_000) }
        }
        // Somewhere in the middle of sending it.
        usleep(200_000)
        daemon.signal(SIGKILL)
        while daemon.isRunning { usleep(10_000) }
        let sentBeforeKill = Int(daemon.firstSync?["files_sent"]?.number ?? 0)
        // The rsync it was running dies with it (it would otherwise go on writing into the
        // backup behind the next daemon's back).
        var orphans = "?"
        for _ in 0..<100 {
            orphans = try Subprocess.run(["pgrep", "-a", "-f", "--", "rsync.*" + src]).outputText
            if orphans.isEmpty { break }
            usleep(50_000)
        }
        XCTAssertEqual(orphans, "", "rsync left running after kill -9")
        // More changes while nothing runs.
        writeFile(src, "after.txt", "after\n")
        XCTAssertEqual(try Subprocess.run(["rm", "-rf", "--", src + "/burst/d7"]).status, 0)

        daemon = try DaemonProcess(arguments: [src, dst], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp(timeout: 120)
        waitConverged(src, dst, daemon: daemon, timeout: 60)
        XCTAssertFalse(daemon.log.contains("failed its integrity check"), daemon.log)
        // Killed: a full rsync (quick check) clears what the cut transfer left on the backup.
        XCTAssertTrue(daemon.log.contains("the last run did not stop cleanly"), daemon.log)
        let resent = counter(daemon, "files_sent")
        XCTAssertLessThanOrEqual(resent, 5002 - min(sentBeforeKill, 4900) + 100,
                                 "restart sent \(resent) files; \(sentBeforeKill) were acknowledged before the kill\n\(daemon.log.suffix(3000))")
        XCTAssertEqual(daemon.firstSync?["last_error"], .null, daemon.log)
    }

    /// A batch deleting most of the backup waits for `fansync confirm-deletes`; the
    /// backup keeps everything until then.
    func testMassDeleteWaitsForConfirmation() throws {
        let (work, src, dst) = workspace("massdel")
        for i in 0..<300 { mkdirs(src, "data"); writeFile(src, "data/f\(i)", "data \(i)\n") }
        writeFile(src, "keep.txt", "keep\n")
        let daemon = try DaemonProcess(arguments: [src, dst], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        waitConverged(src, dst, daemon: daemon)

        XCTAssertEqual(try Subprocess.run(["rm", "-rf", "--", src + "/data"]).status, 0)
        waitCounter(daemon, "deletes_held", atLeast: 300)
        XCTAssertNotNil(daemon.firstSync?["delete_hold"]?.string)
        // `fansync status` says so, and exits 1 (the backup is not what the source is).
        let shown = try Subprocess.run([Harness.fansyncBinary, "status", "--status-file", daemon.statusPath])
        XCTAssertEqual(shown.status, 1, shown.outputText)
        XCTAssertTrue(shown.outputText.contains("confirm-deletes"), shown.outputText)
        usleep(500_000)
        // The first batches of the rm -rf may go before the share is crossed (deletes are
        // judged over the last minute together): at most half of the backup goes.
        let kept = (0..<300).filter { access(dst + "/data/f\($0)", F_OK) == 0 }.count
        XCTAssertGreaterThanOrEqual(kept, 140, "held deletes reached the backup:\n\(daemon.log.suffix(3000))")
        var st = stat()
        // The operator confirms: the deletes go.
        let confirm = try Subprocess.run([Harness.fansyncBinary, "confirm-deletes", work + "/state/source"])
        XCTAssertEqual(confirm.status, 0, confirm.errorText)
        waitConverged(src, dst, daemon: daemon)
        XCTAssertEqual(counter(daemon, "deletes_held"), 0)

        // A source that is empty at start while the index holds files deletes nothing.
        daemon.stop()
        XCTAssertEqual(try Subprocess.run(["rm", "-rf", "--", src + "/keep.txt"]).status, 0)
        let again = try DaemonProcess(arguments: [src, dst], workDir: work)
        defer { again.stop() }
        again.waitCaughtUp()
        usleep(500_000)
        XCTAssertEqual(stat(dst + "/keep.txt", &st), 0, "an empty source root emptied the backup:\n\(again.log)")
        XCTAssertTrue(again.log.contains("source root is empty"), again.log)
    }

    /// A damaged index is moved aside and rebuilt from a full sync, with a log line.
    func testDamagedIndexIsRebuiltFromAFullSync() throws {
        let (work, src, dst) = workspace("damaged")
        writeFile(src, "a.txt", "a\n")
        var daemon = try DaemonProcess(arguments: [src, dst], workDir: work)
        daemon.waitCaughtUp()
        daemon.stop()
        let file = work + "/state/source/index.sqlite"
        XCTAssertTrue(writeFile(Array(file.utf8), Array(repeating: 0x5a, count: 8192)))
        writeFile(src, "b.txt", "b\n")
        daemon = try DaemonProcess(arguments: [src, dst], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        waitConverged(src, dst, daemon: daemon)
        XCTAssertTrue(daemon.log.contains("failed its integrity check"), daemon.log)
        XCTAssertTrue(daemon.log.contains("the index was damaged: the first sync is a full one"), daemon.log)
    }

    /// Two daemons cannot share one state directory.
    func testStateDirectoryIsLocked() throws {
        let (work, src, _) = workspace("lock")
        let first = try DaemonProcess(arguments: [src, work + "/b1"], workDir: work)
        defer { first.stop() }
        first.waitCaughtUp()
        let second = try Subprocess.run([Harness.fansyncBinary, "run", src, work + "/b2", "--state-dir", work + "/state"])
        XCTAssertEqual(second.status, 1)
        XCTAssertTrue(second.errorText.contains("in use by another fansync"), second.errorText)
    }

    func randomBytes(_ n: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<n / 8).flatMap { _ in withUnsafeBytes(of: g.next()) { Array($0) } }
    }
}
