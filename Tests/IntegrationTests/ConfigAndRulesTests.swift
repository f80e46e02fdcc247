import FanSync
import Foundation
import Glibc
import XCTest

/// lsyncd configs run as they are, SIGHUP reloads, `fansync status` as a monitoring check,
/// and rules files changed under a running daemon.
final class ConfigAndRulesTests: XCTestCase {
    override func setUp() { continueAfterFailure = false }

    func luaString(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }

    func sshOptionsLua(_ server: SSHServer) -> String {
        "{ " + server.sshOptions.map { opt -> String in
            let kv = opt.split(separator: "=", maxSplits: 1)
            return "\(kv[0]) = \(luaString(String(kv[1])))"
        }.joined(separator: ", ") + " }"
    }

    /// Two sync{} blocks, a local folder and sshd on loopback, from one daemon.
    func testTwoSyncsToTwoTargets() throws {
        let server = try SSHServer()
        defer { server.stop() }
        let work = Harness.tempDirectory("two")
        defer { Harness.removeTree(work) }
        let srcA = work + "/a", srcB = work + "/b", dstA = work + "/backup-a"
        mkdir(srcA, 0o755); mkdir(srcB, 0o755)
        let dstB = server.makeBackupDirectory("backup-b")
        defer { Harness.removeTree(dstB) }
        writeFile(srcA, "one.txt", "1\n")
        writeFile(srcB, "two.txt", "2\n")
        let config = """
        settings { logfile = \(luaString(work + "/fansync.log")), statusInterval = 1 }
        sync { default.rsync, source = \(luaString(srcA)), target = \(luaString(dstA)), delay = 0,
               rsync = { archive = true } }
        sync { default.rsyncssh, source = \(luaString(srcB)), host = "\(server.user)@127.0.0.1", targetdir = \(luaString(dstB)),
               delay = 0, maxProcesses = 2, rsync = { archive = true },
               ssh = { port = \(server.port), options = \(sshOptionsLua(server)) } }
        """
        try config.write(toFile: work + "/fansync.conf.lua", atomically: true, encoding: .utf8)
        let check = try Subprocess.run([Harness.fansyncBinary, "check-config", work + "/fansync.conf.lua"])
        XCTAssertEqual(check.status, 0, check.errorText)
        let daemon = try DaemonProcess(arguments: ["--config", work + "/fansync.conf.lua"], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        XCTAssertEqual(daemon.status?["syncs"]?.array?.count, 2)
        writeFile(srcA, "later-a.txt", "a\n")
        writeFile(srcB, "later b.txt", "b\n")
        waitConverged(srcA, dstA, daemon: daemon)
        waitConverged(srcB, dstB, daemon: daemon)
        daemon.stop()
        let log = (try? String(contentsOfFile: work + "/fansync.log", encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("initial sync ended"), "the logfile has timestamped lines: \(log)")
    }

    /// One source to two targets with different excludes: one watcher, each mirror its own rules.
    func testSameSourceSharesOneWatcher() throws {
        let work = Harness.tempDirectory("shared")
        defer { Harness.removeTree(work) }
        let src = work + "/src", d1 = work + "/d1", d2 = work + "/d2"
        mkdir(src, 0o755)
        let config = """
        sync { default.rsync, source = \(luaString(src)), target = \(luaString(d1)), delay = 0, exclude = { "*.log" } }
        sync { default.rsync, source = \(luaString(src)), target = \(luaString(d2)), delay = 0, exclude = { "cache/" } }
        """
        try config.write(toFile: work + "/c.lua", atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(arguments: ["--config", work + "/c.lua"], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        XCTAssertTrue(daemon.log.contains("shared with another mirror"), daemon.log)
        mkdirs(src, "cache")
        writeFile(src, "cache/blob", "c")
        writeFile(src, "run.log", "l")
        writeFile(src, "code.py", "p")
        let deadline = Date().addingTimeInterval(20)
        while !(FileManager.default.fileExists(atPath: d1 + "/cache/blob") && FileManager.default.fileExists(atPath: d2 + "/run.log")) && Date() < deadline {
            usleep(50_000)
        }
        daemon.waitCaughtUp()
        XCTAssertTrue(FileManager.default.fileExists(atPath: d1 + "/code.py"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: d2 + "/code.py"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: d1 + "/cache/blob"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: d2 + "/run.log"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: d1 + "/run.log"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: d2 + "/cache"))
    }

    /// lsyncd's `rsync.rsh` (a remote shell command of the user's): used for rsync and for
    /// renames on the backup.
    func testRemoteShellFromConfig() throws {
        let server = try SSHServer()
        defer { server.stop() }
        let work = Harness.tempDirectory("rsh")
        defer { Harness.removeTree(work) }
        let src = work + "/src"
        mkdir(src, 0o755)
        let dst = server.makeBackupDirectory("rsh-backup")
        defer { Harness.removeTree(dst) }
        mkdirs(src, "dir")
        for i in 0..<50 { writeFile(src, "dir/f\(i)", "\(i)") }
        let rsh = (["ssh", "-p", String(server.port), "-o", "BatchMode=yes"] + server.sshOptions.flatMap { ["-o", $0] }).joined(separator: " ")
        let config = """
        sync { default.rsync, source = \(luaString(src)), target = "\(server.user)@127.0.0.1:\(dst)", delay = 0,
               rsync = { archive = true, rsh = \(luaString(rsh)) } }
        """
        try config.write(toFile: work + "/c.lua", atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(arguments: ["--config", work + "/c.lua"], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        waitConverged(src, dst, daemon: daemon)
        XCTAssertEqual(rename(src + "/dir", src + "/moved dir"), 0)
        waitConverged(src, dst, daemon: daemon)
        daemon.waitCaughtUp()
        XCTAssertEqual(daemon.firstSync?["renames"]?.number, 1, daemon.log)
        XCTAssertEqual(daemon.firstSync?["last_error"], .null, daemon.log)
    }

    /// The seed document's config, with only host and paths changed, mirrors to sshd.
    func testSeedConfigRuns() throws {
        let server = try SSHServer()
        defer { server.stop() }
        let work = Harness.tempDirectory("seed")
        defer { Harness.removeTree(work) }
        let src = work + "/workspace"
        mkdir(src, 0o755)
        let dst = server.makeBackupDirectory("seed-backup")
        defer { Harness.removeTree(dst) }
        mkdirs(src, ".git/objects"); writeFile(src, ".git/HEAD", "ref\n")
        mkdirs(src, "pkg/__pycache__"); writeFile(src, "pkg/__pycache__/x.pyc", "b")
        writeFile(src, "pkg/train.py", "print(1)\n")
        let config = """
        settings {
            logfile = \(luaString(work + "/lsyncd.log")),
            statusFile = \(luaString(work + "/lsyncd.status")),

            -- ⚡ INSTANTÂNEO
            maxDelays = 1,      -- Máx 1 segundo de espera
            maxProcesses = 10,  -- 10 rsyncs paralelos
        }

        sync {
            default.rssh,
            source = \(luaString(src)),
            host = "\(server.user)@127.0.0.1",
            targetdir = \(luaString(dst)),

            -- Sync imediato após mudança
            delay = 1,  -- 1 segundo após detectar mudança

            rsync = {
                archive = true,
                compress = true,
                _extra = {
                    "--delete",              -- Remove arquivos deletados
                    "--exclude=.git",        -- Ignora cache
                    "--exclude=__pycache__",
                    "--bwlimit=10000",       -- Limite: 10MB/s
                }
            },
        }
        """
        try config.write(toFile: work + "/lsyncd.conf.lua", atomically: true, encoding: .utf8)
        // The test's sshd listens on its own port with its own keys: given on the command line.
        let daemon = try DaemonProcess(arguments: ["--config", work + "/lsyncd.conf.lua", "--ssh-option", "Port=\(server.port)"] + server.fansyncOptions,
                                       workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        writeFile(src, "pkg/model.py", "print(2)\n")
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: dst + "/pkg/model.py") && Date() < deadline { usleep(50_000) }
        XCTAssertEqual(readBytes(Array((dst + "/pkg/model.py").utf8)), Array("print(2)\n".utf8))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/.git"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/pkg/__pycache__"))
        // --delete in _extra: deletes reach the backup.
        unlink(src + "/pkg/train.py")
        let deadline2 = Date().addingTimeInterval(20)
        while FileManager.default.fileExists(atPath: dst + "/pkg/train.py") && Date() < deadline2 { usleep(50_000) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/pkg/train.py"))
    }

    /// SIGHUP with a changed exclude: what is no longer excluded is sent; a broken config
    /// leaves the running one in place.
    func testSIGHUPReloadsExcludes() throws {
        let work = Harness.tempDirectory("hup")
        defer { Harness.removeTree(work) }
        let src = work + "/src", dst = work + "/dst"
        mkdir(src, 0o755)
        writeFile(src, "keep.txt", "k\n")
        writeFile(src, "debug.log", "log\n")
        func config(_ excludes: String) -> String {
            "sync { default.rsync, source = \(luaString(src)), target = \(luaString(dst)), delay = 0, exclude = { \(excludes) } }"
        }
        let path = work + "/c.lua"
        try config("\"*.log\"").write(toFile: path, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(arguments: ["--config", path], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()
        XCTAssertTrue(FileManager.default.fileExists(atPath: dst + "/keep.txt"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/debug.log"))

        try "sync { default.rsync, source = 42 }".write(toFile: path, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let d1 = Date().addingTimeInterval(10)
        while !daemon.log.contains("reload failed") && Date() < d1 { usleep(50_000) }
        XCTAssertTrue(daemon.log.contains("reload failed"), daemon.log)
        writeFile(src, "still.log", "x\n")
        writeFile(src, "still.txt", "x\n")
        daemon.waitCaughtUp()
        XCTAssertTrue(daemon.isRunning)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/still.log"), "the old excludes still apply")

        try config("").write(toFile: path, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        waitConverged(src, dst, daemon: daemon)
        XCTAssertTrue(daemon.log.contains("configuration reloaded"), daemon.log)
    }

    /// `fansync status`: 0 caught up, 1 behind or unreachable, 2 not running.
    func testStatusExitCodes() throws {
        let work = Harness.tempDirectory("status")
        defer { Harness.removeTree(work) }
        let src = work + "/src"
        mkdir(src, 0o755)
        writeFile(src, "a", "a")
        let daemon = try DaemonProcess(arguments: [src, work + "/dst"], workDir: work)
        daemon.waitCaughtUp()
        let ok = try Subprocess.run([Harness.fansyncBinary, "status", "--status-file", daemon.statusPath])
        XCTAssertEqual(ok.status, 0, ok.outputText + ok.errorText)
        XCTAssertTrue(ok.outputText.contains("caught up"), ok.outputText)
        let json = try Subprocess.run([Harness.fansyncBinary, "status", "--status-file", daemon.statusPath, "--json"])
        XCTAssertNotNil(JSON.parse(json.outputText))
        daemon.stop()
        let stopped = try Subprocess.run([Harness.fansyncBinary, "status", "--status-file", daemon.statusPath])
        XCTAssertEqual(stopped.status, 2, stopped.outputText)
        let missing = try Subprocess.run([Harness.fansyncBinary, "status", "--status-file", work + "/none.json"])
        XCTAssertEqual(missing.status, 2)

        // An ssh target nobody listens on: unreachable, so behind.
        let work2 = Harness.tempDirectory("status2")
        defer { Harness.removeTree(work2) }
        let down = try DaemonProcess(arguments: [src, "nobody@127.0.0.1:1:/tmp/x", "--ssh-option", "ConnectTimeout=2"], workDir: work2)
        defer { down.stop() }
        let deadline = Date().addingTimeInterval(20)
        while down.firstSync?["target_reachable"]?.bool != false && Date() < deadline { usleep(100_000) }
        let behind = try Subprocess.run([Harness.fansyncBinary, "status", "--status-file", down.statusPath])
        XCTAssertEqual(behind.status, 1, behind.outputText)
        XCTAssertTrue(behind.outputText.contains("unreachable"), behind.outputText)
    }

    // MARK: Rules files under a running daemon

    func testRulesFilesLiveFanotify() throws { try rulesFilesLive(backend: "fanotify") }
    func testRulesFilesLiveInotify() throws { try rulesFilesLive(backend: "inotify") }

    func rulesFilesLive(backend: String) throws {
        let work = Harness.tempDirectory("rules")
        defer { Harness.removeTree(work) }
        let src = work + "/src", dst = work + "/dst"
        mkdir(src, 0o755)
        mkdirs(src, "proj/wandb")
        writeFile(src, "proj/train.py", "x")
        let daemon = try DaemonProcess(arguments: [src, dst, "--backend", backend], workDir: work)
        defer { daemon.stop() }
        daemon.waitCaughtUp()

        // A rules file added while running: new files in its subtree are not sent.
        writeFile(src, "proj/.fansyncignore", "wandb/\n*.tmp\n!keep.tmp\n")
        daemon.waitCaughtUp()
        writeFile(src, "proj/wandb/run1.log", "metrics")
        writeFile(src, "proj/scratch.tmp", "tmp")
        writeFile(src, "proj/keep.tmp", "kept by a negation")
        writeFile(src, "proj/model.py", "y")
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: dst + "/proj/model.py") && Date() < deadline { usleep(50_000) }
        daemon.waitCaughtUp()
        XCTAssertTrue(FileManager.default.fileExists(atPath: dst + "/proj/keep.tmp"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dst + "/proj/.fansyncignore"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/proj/wandb/run1.log"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dst + "/proj/scratch.tmp"))

        // 50,000 files in an excluded directory: no rsync call at all.
        let batches = daemon.firstSync?["batches"]?.number ?? -1
        let sent = daemon.firstSync?["files_sent"]?.number ?? -1
        mkdirs(src, "proj/wandb/big")
        for i in 0..<50_000 { writeFile(src, "proj/wandb/big/f\(i)", "") }
        usleep(500_000)
        daemon.waitCaughtUp()
        XCTAssertEqual(daemon.firstSync?["batches"]?.number, batches, "an excluded directory caused transfers")
        XCTAssertEqual(daemon.firstSync?["files_sent"]?.number, sent)
        Harness.removeTree(src + "/proj/wandb/big")

        // Removing the rules file: what it excluded is sent.
        unlink(src + "/proj/.fansyncignore")
        waitConverged(src, dst, daemon: daemon, timeout: 60)
    }

    /// check-ignore answers like git's for a daemon's source.
    func testCheckIgnoreCommand() throws {
        let work = Harness.tempDirectory("ci")
        defer { Harness.removeTree(work) }
        mkdirs(work, "a/b")
        writeFile(work, ".fansyncignore", "*.log\n")
        writeFile(work, "a/.fansyncignore", "!keep.log\nb/\n")
        let r = try Subprocess.run([Harness.fansyncBinary, "check-ignore", "-v", "--source", work, "x.log", "a/keep.log", "a/b/c", "a/ok.txt"])
        XCTAssertEqual(r.status, 0, r.errorText)
        XCTAssertEqual(r.outputText, ".fansyncignore:1:*.log\tx.log\na/.fansyncignore:1:!keep.log\ta/keep.log\na/.fansyncignore:2:b/\ta/b/c\n")
        let none = try Subprocess.run([Harness.fansyncBinary, "check-ignore", "--source", work, "a/ok.txt"])
        XCTAssertEqual(none.status, 1)
    }
}
