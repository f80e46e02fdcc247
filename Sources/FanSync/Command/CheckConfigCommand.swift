#if canImport(Glibc)
import Glibc
#endif

/// `fansync check-config FILE`: loads the config as the daemon would, and prints what each
/// `sync{}` will do; exit 0. On a problem, prints every error found to stderr; exit 1.
public enum CheckConfigCommand {
    public static let usage = "usage: fansync check-config FILE\n  Load a fansync or lsyncd config and print what each sync{} will do (exit 0), or why it cannot be used (exit 1)."

    public static func run(arguments: [String]) -> Int32 {
        var files: [String] = []
        var onlyFiles = false
        for a in arguments {
            if !onlyFiles && (a == "-h" || a == "--help") { writeOut(usage + "\n"); return 0 }
            if !onlyFiles && a == "--" { onlyFiles = true; continue }
            if !onlyFiles && a.hasPrefix("-") && a != "-" {
                writeErr("fansync check-config: unknown option \(a)\n\(usage)\n")
                return 2
            }
            files.append(a)
        }
        guard files.count == 1 else {
            writeErr("fansync check-config: \(files.isEmpty ? "no config file given" : "one config file at a time")\n\(usage)\n")
            return 2
        }
        do {
            let loaded = try ConfigLoader.load(path: files[0])
            writeOut(report(loaded, file: files[0]))
            for w in loaded.warnings { writeErr("warning: \(w)\n") }
            return 0
        } catch let e as ConfigError {
            let all = e.allErrors
            for err in all { writeErr("error: \(err.headline)\n") }
            writeErr("\(files[0]): \(all.count) error\(all.count == 1 ? "" : "s"); the config cannot be used\n")
            return 1
        } catch {
            writeErr("error: \(files[0]): \(error)\n")
            return 1
        }
    }

    /// What a loaded config will do, for a person.
    public static func report(_ loaded: LoadedConfig, file: String) -> String {
        var out = "\(file): OK, \(loaded.mirrors.count) mirror\(loaded.mirrors.count == 1 ? "" : "s")\n"
        let s = loaded.settings
        var settings: [(String, String)] = []
        if let v = s.logFile { settings.append(("logfile", v)) }
        if let v = s.statusFile { settings.append(("statusFile", "\(v) (every \(seconds(s.statusInterval)))")) }
        if let v = s.pidFile { settings.append(("pidfile", v)) }
        if let v = s.stateDir { settings.append(("stateDir", SyncPath.displayString(v))) }
        if s.inotifyMode != .closeWrite { settings.append(("inotifyMode", s.inotifyMode.rawValue)) }
        if let v = s.logIdent { settings.append(("logident", v)) }
        if let v = s.logFacility { settings.append(("logfacility", v)) }
        if s.verbose { settings.append(("verbose", "yes")) }
        if !settings.isEmpty {
            out += "\nsettings\n"
            for (k, v) in settings { out += "  " + pad(k) + v + "\n" }
        }
        for (i, m) in loaded.mirrors.enumerated() {
            let origin = i < loaded.origins.count ? loaded.origins[i] : nil
            var head = "\nsync{} #\(origin?.index ?? i + 1) \"\(m.name)\""
            if let o = origin {
                var where_ = o.file
                if let l = o.line { where_ += ":\(l)" }
                let preset = o.preset == "rssh" ? "default.rssh = default.rsyncssh" : "default.\(o.preset)"
                head += " (\(where_), \(preset))"
            }
            out += head + "\n"
            var rows: [(String, String)] = []
            rows.append(("source", SyncPath.displayString(m.source)))
            rows.append(("target", m.target.description))
            switch m.target {
            case .local(let p):
                rows.append(("transport", "rsync to the local directory \(SyncPath.displayString(p))"))
            case .ssh(let t):
                var how = "rsync over ssh to \(t.destination)"
                how += t.port.map { ", port \($0)" } ?? ""
                if let rsh = m.rsync.rsh { how += ", remote shell \"\(rsh)\"" }
                rows.append(("transport", how))
                var ssh: [String] = []
                if m.ssh.binary != "ssh" { ssh.append("binary \(m.ssh.binary)") }
                if let f = m.ssh.identityFile { ssh.append("-i \(f)") }
                ssh += m.ssh.options.map { "-o \($0)" }
                ssh += m.ssh.extra
                if !ssh.isEmpty { rows.append(("ssh", ssh.joined(separator: " "))) }
            }
            var delay = m.delay == 0 ? "0 (a change is sent as soon as a worker is free; what arrives meanwhile forms the next batch)"
                : "\(seconds(m.delay)) (a change waits that long before it is sent)"
            if m.maxDelays > 0 { delay += "; sent at once when \(m.maxDelays) change\(m.maxDelays == 1 ? " is" : "s are") queued" }
            rows.append(("delay", delay))
            rows.append(("maxDelays", m.maxDelays == 0 ? "0 (no limit)" : "\(m.maxDelays)"))
            rows.append(("maxProcesses", "\(m.maxProcesses) rsync\(m.maxProcesses == 1 ? "" : "s") at once"))
            rows.append(("init", m.initialSync ? "yes: a full sync at start" : "no initial full sync"))
            let deleteText: String
            switch m.delete {
            case .always: deleteText = "always (at start and while running)"
            case .never: deleteText = "never (files deleted from the source stay on the backup)"
            case .startup: deleteText = "startup (only the initial sync deletes)"
            case .running: deleteText = "running (only live changes delete)"
            }
            rows.append(("delete", deleteText))
            rows.append(("excludes", m.excludes.isEmpty ? "(none)" : m.excludes.map { "\"\($0)\"" }.joined(separator: ", ")))
            if !m.filters.isEmpty { rows.append(("filters", m.filters.map { "\"\($0)\"" }.joined(separator: ", "))) }
            rows.append(("rsync", ([m.rsync.binary] + m.rsync.flagArguments).joined(separator: " ")))
            rows.append(("rules", m.rulesFile.isEmpty ? "no per-directory rules files" : "\(m.rulesFile) in any directory\(m.useGitignore ? ", and .gitignore" : "")"))
            if m.deleteExcluded { rows.append(("deleteExcluded", "yes")) }
            rows.append(("backend", m.backend.rawValue))
            rows.append(("openFileInterval", seconds(m.openFileInterval)))
            rows.append(("largeFileThreshold", "\(m.largeFileThreshold) bytes"))
            if let d = m.stateDir { rows.append(("stateDir", SyncPath.displayString(d))) }
            for (k, v) in rows { out += "  " + pad(k) + v + "\n" }
        }
        return out
    }

    private static func pad(_ s: String) -> String {
        s.count >= 20 ? s + " " : s + String(repeating: " ", count: 20 - s.count)
    }

    private static func seconds(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e15 ? "\(Int(d)) s" : "\(d) s"
    }

    private static func writeOut(_ s: String) { write(1, s) }
    private static func writeErr(_ s: String) { write(2, s) }
    private static func write(_ fd: Int32, _ s: String) {
        var bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}
