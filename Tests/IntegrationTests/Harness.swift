import FanSync
import Foundation
import Glibc
import XCTest

/// Test fixtures that do what a user does: real directories, the real `fansync` binary,
/// real rsync, and a real sshd on loopback.
enum Harness {
    /// The `fansync` executable built next to the test bundle.
    static var fansyncBinary: String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let exe = n > 0 ? String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // swift test runs .build/<config>/fansyncPackageTests.xctest (a file on Linux).
        while !FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("fansync").path) && dir.path != "/" {
            dir = dir.deletingLastPathComponent()
        }
        return dir.appendingPathComponent("fansync").path
    }

    static func tempDirectory(_ label: String) -> String {
        var template = Array("/tmp/fansync-test-\(label)-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(p != nil, "mkdtemp failed")
        return String(cString: p!)
    }

    static func removeTree(_ path: String) {
        _ = try? Subprocess.run(["rm", "-rf", "--", path])
    }
}

// MARK: Files by bytes (names may be invalid UTF-8)

func bytesPath(_ base: String, _ rel: [UInt8]) -> [UInt8] {
    rel.isEmpty ? Array(base.utf8) : Array(base.utf8) + [UInt8(ascii: "/")] + rel
}

func cPath<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
    var z = bytes
    z.append(0)
    return z.withUnsafeBufferPointer { $0.baseAddress!.withMemoryRebound(to: CChar.self, capacity: z.count) { body($0) } }
}

@discardableResult
func writeFile(_ path: [UInt8], _ content: [UInt8], mode: mode_t = 0o644, append: Bool = false) -> Bool {
    let fd = cPath(path) { open($0, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), mode) }
    guard fd >= 0 else { return false }
    var off = 0
    while off < content.count {
        let w = content.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
        if w <= 0 { break }
        off += w
    }
    close(fd)
    return true
}

func writeFile(_ base: String, _ rel: String, _ content: String, mode: mode_t = 0o644) {
    XCTAssertTrue(writeFile(bytesPath(base, Array(rel.utf8)), Array(content.utf8), mode: mode), "write \(rel)")
}

func makeDir(_ path: [UInt8]) { _ = cPath(path) { mkdir($0, 0o755) } }

func mkdirs(_ base: String, _ rel: String) {
    var cur = ""
    for c in rel.split(separator: "/") {
        cur += (cur.isEmpty ? "" : "/") + c
        makeDir(bytesPath(base, Array(cur.utf8)))
    }
}

func renamePath(_ a: [UInt8], _ b: [UInt8]) -> Int32 { cPath(a) { pa in cPath(b) { pb in rename(pa, pb) } } }

func readBytes(_ path: [UInt8]) -> [UInt8]? {
    let fd = cPath(path) { open($0, O_RDONLY | O_NOFOLLOW) }
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}

// MARK: Comparing trees byte for byte

/// Every difference between two trees: type, permission bits, content, symlink targets,
/// directory entries (so empty directories count). Names are shown escaped.
func treeDifferences(_ a: String, _ b: String, limit: Int = 20) -> [String] {
    var diffs: [String] = []
    func entries(_ dir: [UInt8]) -> Set<[UInt8]>? {
        guard let d = cPath(dir, { opendir($0) }) else { return nil }
        defer { closedir(d) }
        var names = Set<[UInt8]>()
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix(while: { $0 != 0 })) }
            if name != [46] && name != [46, 46] { names.insert(name) }
        }
        return names
    }
    func walk(_ rel: [UInt8]) {
        guard diffs.count < limit else { return }
        let pa = bytesPath(a, rel), pb = bytesPath(b, rel)
        var sa = stat(), sb = stat()
        let ra = cPath(pa) { lstat($0, &sa) }, rb = cPath(pb) { lstat($0, &sb) }
        let show = SyncPath(bytes: rel).description
        if ra != 0 || rb != 0 {
            if ra != rb { diffs.append("\(show): \(ra == 0 ? "missing on backup" : "extra on backup")") }
            return
        }
        let ta = sa.st_mode & S_IFMT, tb = sb.st_mode & S_IFMT
        if ta != tb { diffs.append("\(show): type differs"); return }
        if ta != S_IFLNK && (sa.st_mode & 0o7777) != (sb.st_mode & 0o7777) && !rel.isEmpty {
            diffs.append("\(show): mode \(String(sa.st_mode & 0o7777, radix: 8)) vs \(String(sb.st_mode & 0o7777, radix: 8))")
        }
        switch ta {
        case S_IFREG:
            if readBytes(pa) != readBytes(pb) { diffs.append("\(show): content differs (\(sa.st_size) vs \(sb.st_size) bytes)") }
        case S_IFLNK:
            var ba = [UInt8](repeating: 0, count: 4096), bb = [UInt8](repeating: 0, count: 4096)
            let na = cPath(pa) { p in ba.withUnsafeMutableBytes { readlink(p, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4096) } }
            let nb = cPath(pb) { p in bb.withUnsafeMutableBytes { readlink(p, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4096) } }
            if na != nb || ba[0..<max(na, 0)] != bb[0..<max(nb, 0)] { diffs.append("\(show): symlink target differs") }
        case S_IFDIR:
            let ea = entries(pa) ?? [], eb = entries(pb) ?? []
            for name in ea.union(eb).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                walk(rel.isEmpty ? name : rel + [UInt8(ascii: "/")] + name)
            }
        default: break
        }
    }
    walk([])
    return diffs
}

// MARK: The daemon

/// A running `fansync run`, its stderr captured to a file. Started and reaped with
/// posix_spawn and waitpid (not Foundation's Process), so its exit is seen exactly.
final class DaemonProcess {
    let pid: pid_t
    private var exitStatus: Int32? = nil
    let logPath: String
    let statusPath: String

    init(arguments: [String], workDir: String, statusInterval: String = "0.2") throws {
        logPath = workDir + "/daemon.log"
        statusPath = workDir + "/status.json"
        // Each test keeps its index in its own directory, never in /var/lib/fansync.
        let state = arguments.contains("--state-dir") || arguments.contains("--no-index") ? [] : ["--state-dir", workDir + "/state"]
        pid = try Subprocess.spawnBackground([Harness.fansyncBinary, "run"] + arguments + state
                                             + ["--status-file", statusPath, "--status-interval", statusInterval],
                                             errorPath: logPath)
    }

    var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            return false
        }
        return true
    }

    var terminationStatus: Int32 { exitStatus ?? -1 }

    func signal(_ sig: Int32) { kill(pid, sig) }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    var status: JSON? {
        guard let text = try? String(contentsOfFile: statusPath, encoding: .utf8) else { return nil }
        return JSON.parse(text)
    }

    var firstSync: JSON? { status?["syncs"]?.array?.first }

    /// Waits until the initial sync is done and nothing is queued.
    func waitCaughtUp(timeout: Double = 60, file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(timeout)
        // Only a status written after this call counts (the file is rewritten every 0.2 s).
        let since = Date().timeIntervalSince1970 + 0.05
        while Date() < deadline {
            if !isRunning { XCTFail("daemon exited (\(terminationStatus)):\n\(log)", file: file, line: line); return }
            if let s = status, (s["updated"]?.number ?? 0) >= since, let syncs = s["syncs"]?.array, !syncs.isEmpty,
               syncs.allSatisfy({ $0["initial_sync_done"]?.bool == true && $0["queued"]?.number == 0 && $0["in_flight"]?.number == 0 }) {
                return
            }
            usleep(50_000)
        }
        XCTFail("daemon not caught up after \(timeout) s; status: \(status?.serialized() ?? "none")\n\(log)", file: file, line: line)
    }

    /// SIGTERM, then waits for a clean exit.
    func stop(file: StaticString = #filePath, line: UInt = #line) {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while isRunning && Date() < deadline { usleep(20_000) }
        if isRunning {
            let threads = (try? Subprocess.run(["sh", "-c", "ps -L -o pid,tid,stat,wchan:30,comm -p \(pid); ps -eo pid,ppid,stat,args | grep -E 'rsync|ssh' | grep -v grep"]))?.outputText ?? ""
            kill(pid, SIGKILL)
            _ = isRunning
            XCTFail("daemon did not stop on SIGTERM:\n\(threads)\n\(String(log.suffix(3000)))", file: file, line: line)
        } else {
            XCTAssertEqual(terminationStatus, 0, "exit status; log:\n\(log)", file: file, line: line)
        }
    }

    deinit {
        if isRunning { kill(pid, SIGKILL); var st: Int32 = 0; waitpid(pid, &st, 0) }
    }
}

/// Waits until the trees are identical (or fails with the differences and the daemon's log).
func waitConverged(_ src: String, _ dst: String, daemon: DaemonProcess?, timeout: Double = 30,
                   file: StaticString = #filePath, line: UInt = #line) {
    let deadline = Date().addingTimeInterval(timeout)
    var diffs: [String] = []
    while Date() < deadline {
        diffs = treeDifferences(src, dst)
        if diffs.isEmpty { return }
        usleep(50_000)
    }
    XCTFail("backup differs from source after \(timeout) s:\n  \(diffs.joined(separator: "\n  "))\n--- daemon log (tail):\n\(daemon.map { String($0.log.suffix(4000)) } ?? "")", file: file, line: line)
}

// MARK: sshd on loopback

/// A real sshd on 127.0.0.1 with a throwaway host key, client key and known_hosts, logging
/// in as a test user whose shell is /bin/sh (so no shell start-up files slow each command).
final class SSHServer {
    let dir: String
    let port: Int
    let user = "fansync-test"
    private(set) var pid: pid_t = 0

    init() throws {
        dir = Harness.tempDirectory("sshd")
        chmod(dir, 0o755)
        port = Int.random(in: 20000...60000)
        // The login user: created once per machine, shell /bin/sh, no password.
        // A locked account ("!" password) is refused by sshd even for keys: "*" is no password.
        if getpwnam(user) != nil { _ = try Subprocess.run(["usermod", "--password", "*", "--home", "/tmp", user]) }
        if getpwnam(user) == nil {
            let r = try Subprocess.run(["useradd", "--system", "--no-create-home", "--password", "*", "--home-dir", "/tmp", "--shell", "/bin/sh", user])
            guard r.status == 0 else { throw SSHError("useradd failed: \(r.errorText)") }
        }
        for (args, what) in [(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir + "/host_key"], "host key"),
                             (["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir + "/client_key"], "client key")] {
            let r = try Subprocess.run(args)
            guard r.status == 0 else { throw SSHError("ssh-keygen (\(what)) failed: \(r.errorText)") }
        }
        try FileManager.default.copyItem(atPath: dir + "/client_key.pub", toPath: dir + "/authorized_keys")
        chmod(dir + "/authorized_keys", 0o644)
        let hostPub = try String(contentsOfFile: dir + "/host_key.pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        try "[127.0.0.1]:\(port) \(hostPub)\n".write(toFile: dir + "/known_hosts", atomically: true, encoding: .utf8)
        let config = """
        Port \(port)
        ListenAddress 127.0.0.1
        HostKey \(dir)/host_key
        PidFile \(dir)/sshd.pid
        AuthorizedKeysFile \(dir)/authorized_keys
        AllowUsers \(user)
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        StrictModes no
        PermitRootLogin no
        MaxSessions 64
        MaxStartups 64:30:128
        Subsystem sftp internal-sftp

        """
        try config.write(toFile: dir + "/sshd_config", atomically: true, encoding: .utf8)
        mkdir("/run/sshd", 0o755)
        pid = try Subprocess.spawnBackground(["/usr/sbin/sshd", "-D", "-e", "-f", dir + "/sshd_config"], errorPath: dir + "/sshd.log")
        // Ready when a real login works.
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if let r = try? Subprocess.run(["ssh"] + sshArguments + ["\(user)@127.0.0.1", "true"]), r.status == 0 { return }
            usleep(100_000)
        }
        throw SSHError("sshd on 127.0.0.1:\(port) did not accept a login; log: \((try? String(contentsOfFile: dir + "/sshd.log", encoding: .utf8)) ?? "")")
    }

    struct SSHError: Error, CustomStringConvertible { let description: String; init(_ d: String) { description = d } }

    /// `-o` options pointing ssh at the throwaway key and known_hosts, never the user's.
    var sshOptions: [String] {
        ["IdentityFile=\(dir)/client_key", "IdentitiesOnly=yes", "UserKnownHostsFile=\(dir)/known_hosts",
         "StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null"]
    }
    var sshArguments: [String] { ["-p", String(port), "-o", "BatchMode=yes"] + sshOptions.flatMap { ["-o", $0] } }
    var fansyncOptions: [String] { sshOptions.flatMap { ["--ssh-option", $0] } }

    func target(_ dir: String) -> String { "\(user)@127.0.0.1:\(port):\(dir)" }

    /// A backup directory the test user owns.
    func makeBackupDirectory(_ label: String) -> String {
        let d = Harness.tempDirectory(label)
        if let pw = getpwnam(user) { chown(d, pw.pointee.pw_uid, pw.pointee.pw_gid) }
        chmod(d, 0o755)
        return d
    }

    func stop() {
        if pid > 0 { kill(pid, SIGTERM); var st: Int32 = 0; waitpid(pid, &st, 0); pid = 0 }
        Harness.removeTree(dir)
    }
}
