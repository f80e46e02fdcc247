import Glibc

/// `fansync status [--status-file F | --config F] [--json] [--max-lag S]`.
///
/// Exit status, for monitoring: 0 every mirror caught up, 1 a mirror behind more than
/// --max-lag seconds (or its target unreachable, stopped, or holding deletes), 2 the daemon
/// is not running.
public enum StatusCommand {
    public static let help = """
    Usage: fansync status [--status-file FILE | --config FILE] [--json] [--max-lag SECONDS]

    Prints what the running daemon is doing, read from its status file (default
    /run/fansync/status.json, or statusFile from --config).
      --json            print the status file as it is
      --max-lag S       a mirror whose oldest unsynced change is older than S seconds counts
                        as behind (default 60)
    Exit status: 0 all caught up, 1 a mirror is behind, unreachable, stopped or holding deletes, 2 the daemon
    is not running (no status file, a dead pid, or a status older than 3 intervals + 5 s).
    """

    public static let defaultStatusFile = "/run/fansync/status.json"

    public static func main(_ arguments: [String]) -> Int32 {
        var reader = ArgumentReader(arguments)
        var file: String? = nil
        var json = false
        var maxLag = 60.0
        do {
            while let opt = reader.nextOption() {
                switch opt.name {
                case "--status-file": file = try reader.value(for: opt)
                case "--config":
                    let loaded = try ConfigLoader.load(path: try reader.value(for: opt))
                    file = loaded.settings.statusFile
                    if file == nil { throw ArgumentReader.UsageError("the config sets no statusFile") }
                case "--json": try reader.flag(opt); json = true
                case "--max-lag": maxLag = try reader.number(for: opt)
                case "-h", "--help": print(help); return 0
                default: throw ArgumentReader.UsageError("unknown option \(opt.name) (see fansync status --help)")
                }
            }
            if !reader.positional.isEmpty { throw ArgumentReader.UsageError("unexpected argument \(reader.positional[0])") }
        } catch {
            printError("fansync status: \(error)")
            return 2
        }
        let path = file ?? defaultStatusFile
        guard let text = readTextFile(path) else {
            printError("fansync status: no status file at \(path): the daemon is not running (or runs without --status-file)")
            return 2
        }
        guard let status = JSON.parse(text) else {
            printError("fansync status: \(path) is not valid JSON")
            return 2
        }
        let (report, code) = evaluate(status, maxLag: maxLag, now: wallNow(), color: isatty(1) != 0)
        if json { writeOut(Array(text.utf8)) } else { writeOut(Array(report.utf8)) }
        return code
    }

    /// The human report and the exit status for a parsed status file.
    public static func evaluate(_ status: JSON, maxLag: Double, now: Double, color: Bool = false) -> (String, Int32) {
        let pid = Int32(status["pid"]?.number ?? 0)
        let interval = status["status_interval"]?.number ?? 1
        let updated = status["updated"]?.number ?? 0
        var running = status["running"]?.bool ?? false
        if pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH) { running = false }
        if now - updated > 3 * interval + 5 { running = false }
        var lines: [String] = []
        if !running {
            lines.append("fansync is not running (last status \(human(max(0, now - updated))) ago, pid \(pid))")
            return (lines.joined(separator: "\n") + "\n", 2)
        }
        var code: Int32 = 0
        let uptime = status["uptime_seconds"]?.number ?? 0
        lines.append("fansync \(status["version"]?.string ?? "?"), pid \(pid), up \(human(uptime))")
        for s in status["syncs"]?.array ?? [] {
            let name = s["name"]?.string ?? "?"
            let queued = Int(s["queued"]?.number ?? 0), inFlight = Int(s["in_flight"]?.number ?? 0)
            let lag = s["oldest_unsynced_seconds"]?.number ?? 0
            let reachable = s["target_reachable"]?.bool
            var state: String
            if let stopped = s["stopped"]?.string {
                state = "STOPPED: \(stopped)"; code = max(code, 1)
            } else if s["initial_sync_done"]?.bool != true {
                state = "initial sync running, \(human(lag))"
                if lag > maxLag && reachable == false { code = max(code, 1) }
            } else if queued == 0 && inFlight == 0 {
                state = "caught up"
            } else {
                state = "\(queued) queued, \(inFlight) sending, behind by \(human(lag))"
                if lag > maxLag { code = max(code, 1) }
            }
            if reachable == false {
                state += color ? " \u{1b}[31mtarget unreachable\u{1b}[0m" : " target unreachable"
                code = max(code, 1)
            }
            var sent = "\(Int(s["files_sent"]?.number ?? 0)) files, \(bytes(s["bytes_sent"]?.number ?? 0)) sent"
            let skipped = Int(s["skipped"]?.number ?? 0), copied = Int(s["copied"]?.number ?? 0)
            if skipped + copied > 0 { sent += " (\(skipped) unchanged and \(copied) copies not sent)" }
            lines.append("\(name): \(s["source"]?.string ?? "?") -> \(s["target"]?.string ?? "?") [\(s["backend"]?.string ?? "?")]: \(state); \(sent)")
            if let hold = s["delete_hold"]?.string {
                // Deletes waiting for the operator: the backup is not what the source is.
                lines.append("  \(hold)")
                code = max(code, 1)
            }
            if let err = s["last_error"]?.string {
                let when = s["last_error_time"]?.number.map { " \(human(max(0, now - $0))) ago" } ?? ""
                lines.append("  last error\(when): \(err)")
            }
        }
        return (lines.joined(separator: "\n") + "\n", code)
    }

    static func human(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int((seconds * 1000).rounded())) ms" }
        if seconds < 90 { return "\(format1(seconds)) s" }
        if seconds < 5400 { return "\(Int(seconds / 60)) min" }
        if seconds < 172800 { return "\(format1(seconds / 3600)) h" }
        return "\(format1(seconds / 86400)) d"
    }

    static func bytes(_ n: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = n, i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        return i == 0 ? "\(Int(v)) B" : "\(format1(v)) \(units[i])"
    }

    static func format1(_ v: Double) -> String {
        let t = Int((v * 10).rounded())
        return "\(t / 10).\(t % 10)"
    }
}

func readTextFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        data += buf[0..<n]
    }
    return String(decoding: data, as: UTF8.self)
}
