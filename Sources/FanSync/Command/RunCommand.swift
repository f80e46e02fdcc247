import Glibc

/// `fansync run SOURCE TARGET [options]` and `fansync run --config FILE`.
public enum RunCommand {
    public static let help = """
    Usage: fansync run SOURCE TARGET [options]
           fansync run --config FILE [options]

    Mirrors SOURCE (a local directory) to TARGET and keeps it mirrored: an initial full
    sync, then every change as it happens. Stays in the foreground, logs to stderr, stops
    cleanly on SIGINT or SIGTERM.

    TARGET is a local directory (/backup/workspace), or a directory on another host over
    ssh: [user@]host:dir, [user@]host:port:dir or ssh://[user@]host[:port]/dir. ssh is the
    system's ssh, so ~/.ssh/config applies; host keys are checked (BatchMode).

    Options:
      --config FILE             Lua config (lsyncd's settings{} and sync{}), instead of
                                SOURCE and TARGET
      --exclude PATTERN         exclude paths matching PATTERN (gitignore syntax, as if in
                                a rules file at the source root); repeatable
      --exclude-from FILE       read exclude patterns from FILE, one per line
      --delay SECONDS           wait this long to aggregate changes, as lsyncd's delay
                                (default 0: send at once; what arrives meanwhile forms the
                                next batch)
      --max-delays N            send at once when N changes are queued (default 0: no limit)
      --max-processes N         transfers at a time, to local and ssh targets (default 2)
      --open-file-interval S    sync a file written but not closed at most every S seconds
                                (default 2)
      --backend B               auto, fanotify or inotify (default auto: fanotify when
                                allowed, inotify otherwise; the log says which and why)
      --delete MODE             true, false, startup or running, as lsyncd's delete
                                (default true); --no-delete is --delete false
      --no-initial-sync         do not run the initial full sync (lsyncd's init = false)
      --rules-file NAME         per-directory rules file name (default .fansyncignore)
      --use-gitignore           also read .gitignore files
      --delete-excluded         delete on the backup what the rules newly exclude
      --compress                rsync --compress
      --bwlimit KBPS            rsync --bwlimit, in KiB per second
      --rsync-option ARG        extra rsync argument, passed as it is; repeatable
      --rsync-binary PATH       rsync to run (default rsync)
      --local-copy MODE         auto or rsync: how batches reach a local target (default
                                auto: fansync copies them itself as rsync -a would, unless
                                an rsync option needs rsync; the initial sync is rsync's)
      --ssh-option OPT          extra ssh -o option (e.g. UserKnownHostsFile=/path);
                                repeatable
      --ssh-identity FILE       ssh -i FILE
      --ssh-binary PATH         ssh to run (default ssh)
      --status-file FILE        write the status as JSON to FILE about once a second
                                (default none; fansync status reads it)
      --status-interval S       seconds between status writes (default 1)
      --log-file FILE           also log to FILE, with timestamps
      --pid-file FILE           write the daemon's pid to FILE
      --name NAME               the mirror's name in logs, status and state directory
                                (default: the source's directory name)
      --state-dir DIR           keep each mirror's index in DIR/NAME (default
                                /var/lib/fansync; settings.stateDir in a config)
      --no-index                no index: every start is a full rsync, nothing is deduplicated
      --max-delete-share S      hold a start or batch that would delete more than this share
                                of the backup (0..1, default 0.5) until `fansync
                                confirm-deletes`
      --allow-mass-delete       never hold deletes (this run only)
      -v, --verbose             log every event and every path sent
      -h, --help                this help
    """

    public struct Parsed: Sendable {
        public var settings = DaemonSettings()
        public var mirrors: [MirrorConfig] = []
    }

    /// Parses `run`'s arguments into the daemon's settings and mirrors. Other commands that
    /// take a mirror the same way (`verify`) pass their name and a handler for their own
    /// options, asked first: it returns true when it took the option.
    public static func parse(_ arguments: [String], cwd: String = currentDirectory(), command: String = "run",
                             otherOption: ((_ option: (name: String, inline: String?), _ reader: inout ArgumentReader) throws -> Bool)? = nil) throws -> Parsed {
        var reader = ArgumentReader(arguments)
        var settings = DaemonSettings()
        var configFile: String? = nil
        var excludeFiles: [String] = []
        var deleteSet: DeleteMode? = nil
        var nameSet: String? = nil
        // What the options set on a mirror: applied to the one on the command line, or to
        // every mirror of the config.
        var overrides: [(inout MirrorConfig) -> Void] = []
        while let opt = reader.nextOption() {
            if let otherOption, try otherOption(opt, &reader) { continue }
            switch opt.name {
            case "--config": configFile = try reader.value(for: opt)
            case "--exclude":
                let v = try reader.value(for: opt)
                overrides.append { $0.excludes.append(v) }
            case "--exclude-from": excludeFiles.append(try reader.value(for: opt))
            case "--delay":
                let v = try reader.number(for: opt); overrides.append { $0.delay = v }
            case "--max-delays":
                let v = try reader.integer(for: opt); overrides.append { $0.maxDelays = v }
            case "--max-processes":
                let v = try reader.integer(for: opt, min: 1); overrides.append { $0.maxProcesses = v }
            case "--open-file-interval":
                let v = try reader.number(for: opt); overrides.append { $0.openFileInterval = v }
            case "--backend":
                let text = try reader.value(for: opt)
                guard let b = Backend(rawValue: text) else { throw ArgumentReader.UsageError("--backend: '\(text)' is not auto, fanotify or inotify") }
                overrides.append { $0.backend = b }
            case "--delete":
                let text = try reader.value(for: opt)
                switch text {
                case "true", "yes", "always": deleteSet = .always
                case "false", "no", "never": deleteSet = DeleteMode.never
                case "startup": deleteSet = .startup
                case "running": deleteSet = .running
                default: throw ArgumentReader.UsageError("--delete: '\(text)' is not true, false, startup or running")
                }
            case "--no-delete": try reader.flag(opt); deleteSet = DeleteMode.never
            case "--no-initial-sync": try reader.flag(opt); overrides.append { $0.initialSync = false }
            case "--rules-file":
                let v = try reader.value(for: opt)
                guard !v.isEmpty, !v.contains("/") else { throw ArgumentReader.UsageError("--rules-file: '\(v)' must be a file name without '/'") }
                overrides.append { $0.rulesFile = v }
            case "--use-gitignore": try reader.flag(opt); overrides.append { $0.useGitignore = true }
            case "--delete-excluded": try reader.flag(opt); overrides.append { $0.deleteExcluded = true }
            case "--compress": try reader.flag(opt); overrides.append { $0.rsync.compress = true }
            case "--bwlimit":
                let v = try reader.integer(for: opt, min: 1); overrides.append { $0.rsync.bwlimit = v }
            case "--rsync-option":
                let v = try reader.value(for: opt); overrides.append { $0.rsync.extra.append(v) }
            case "--rsync-binary":
                let v = try reader.value(for: opt); overrides.append { $0.rsync.binary = v }
            case "--local-copy":
                let v = try reader.value(for: opt)
                guard let mode = LocalCopyMode(rawValue: v) else { throw ArgumentReader.UsageError("--local-copy: '\(v)' is not auto or rsync") }
                overrides.append { $0.localCopy = mode }
            case "--ssh-option":
                let v = try reader.value(for: opt)
                guard v.contains("=") || v.contains(" ") else { throw ArgumentReader.UsageError("--ssh-option: '\(v)' is not an ssh option (Key=Value)") }
                overrides.append { $0.ssh.options.append(v) }
            case "--ssh-identity":
                let v = try reader.value(for: opt); overrides.append { $0.ssh.identityFile = v }
            case "--ssh-binary":
                let v = try reader.value(for: opt); overrides.append { $0.ssh.binary = v }
            case "--status-file": settings.statusFile = try reader.value(for: opt)
            case "--status-interval": settings.statusInterval = try reader.number(for: opt, min: 0.1)
            case "--log-file": settings.logFile = try reader.value(for: opt)
            case "--pid-file": settings.pidFile = try reader.value(for: opt)
            case "--name": nameSet = try reader.value(for: opt)
            case "--state-dir":
                let v = try reader.value(for: opt)
                guard !v.isEmpty else { throw ArgumentReader.UsageError("--state-dir: give a directory") }
                settings.stateDir = absolute(v, cwd: cwd)
            case "--no-index": try reader.flag(opt); overrides.append { $0.useIndex = false }
            case "--max-delete-share":
                let v = try reader.number(for: opt)
                guard v <= 1 else { throw ArgumentReader.UsageError("--max-delete-share: \(v) is not a share between 0 and 1 (0.5 = half)") }
                overrides.append { $0.maxDeleteShare = v }
            case "--allow-mass-delete": try reader.flag(opt); settings.allowMassDelete = true
            case "-v", "--verbose": try reader.flag(opt); settings.verbose = true
            default:
                throw ArgumentReader.UsageError("unknown option \(opt.name) (see fansync \(command) --help)")
            }
        }
        for file in excludeFiles {
            let patterns = try readPatternFile(file)
            overrides.append { $0.excludes += patterns }
        }
        if let deleteSet { overrides.append { $0.delete = deleteSet } }

        if let configFile {
            guard reader.positional.isEmpty else {
                throw ArgumentReader.UsageError("with --config, give no SOURCE or TARGET (got \(reader.positional.joined(separator: " ")))")
            }
            let loaded = try ConfigLoader.load(path: configFile)
            var parsed = Parsed()
            parsed.settings = loaded.settings
            if settings.statusFile != nil { parsed.settings.statusFile = settings.statusFile }
            if settings.logFile != nil { parsed.settings.logFile = settings.logFile }
            if settings.pidFile != nil { parsed.settings.pidFile = settings.pidFile }
            if settings.verbose { parsed.settings.verbose = true }
            if settings.stateDir != nil { parsed.settings.stateDir = settings.stateDir }
            if settings.allowMassDelete { parsed.settings.allowMassDelete = true }
            parsed.mirrors = loaded.mirrors.map { mirror in
                var c = mirror
                for o in overrides { o(&c) }
                return c
            }
            return parsed
        }
        guard reader.positional.count == 2 else {
            throw ArgumentReader.UsageError(reader.positional.count < 2
                ? "give a SOURCE directory and a TARGET (see fansync \(command) --help)"
                : "too many arguments: \(reader.positional.dropFirst(2).joined(separator: " "))")
        }
        var m = MirrorConfig(name: "", source: absolute(reader.positional[0], cwd: cwd), target: .local(path: []))
        for o in overrides { o(&m) }
        m.target = try TargetParser.parse(reader.positional[1])
        if case .local(let path) = m.target {
            let src = SyncPath(bytes: m.source), dst = SyncPath(bytes: path)
            if dst.isInside(src) || src.isInside(dst) {
                throw ArgumentReader.UsageError("the target \(m.target) must not be inside the source, nor the source inside the target")
            }
        }
        m.name = nameSet ?? {
            let n = SyncPath(bytes: m.source).name
            return n.isEmpty ? "root" : SyncPath.displayString(n)
        }()
        return Parsed(settings: settings, mirrors: [m])
    }

    /// Runs the command; returns the exit status.
    public static func main(_ arguments: [String]) -> Int32 {
        if arguments.contains("-h") || arguments.contains("--help") {
            print(help)
            return 0
        }
        let parsed: Parsed
        do {
            parsed = try parse(arguments)
        } catch {
            printError("fansync run: \(error)")
            return 2
        }
        let log: Logger
        do {
            log = try Logger(minimum: parsed.settings.verbose ? .debug : .info, logFile: parsed.settings.logFile)
        } catch {
            printError("fansync run: \(error)")
            return 1
        }
        log.info("fansync \(fansyncVersion) starting, pid \(getpid())")
        if parsed.settings.logIdent != nil || parsed.settings.logFacility != nil {
            let facility = parsed.settings.logFacility ?? "user"
            if !log.enableSyslog(ident: parsed.settings.logIdent ?? "fansync", facility: facility) {
                log.warning("logfacility '\(facility)' is not a syslog facility; logging to stderr and the logfile only")
            }
        }
        if parsed.settings.inotifyMode != .closeWrite {
            log.info("inotifyMode '\(parsed.settings.inotifyMode.rawValue)': fansync always sends a file when it is closed, and a file written but not closed every openFileInterval")
        }
        let reload: (() throws -> (DaemonSettings, [MirrorConfig]))? = arguments.contains(where: { $0 == "--config" || $0.hasPrefix("--config=") })
            ? { let p = try parse(arguments); return (p.settings, p.mirrors) } : nil
        return Daemon(settings: parsed.settings, mirrors: parsed.mirrors, log: log, reload: reload).run()
    }
}

/// Lines of a pattern file (excludeFrom), without blank lines; errors name the file.
func readPatternFile(_ path: String) throws -> [String] {
    guard let text = readTextFile(path) else {
        throw ArgumentReader.UsageError("cannot read \(path): \(String(cString: strerror(errno)))")
    }
    return text.split(separator: "\n", omittingEmptySubsequences: true)
        .map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
        .filter { !$0.isEmpty }
}

public func currentDirectory() -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    guard getcwd(&buf, buf.count) != nil else { return "/" }
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// An absolute, normalized path (no trailing slash; "." and ".." resolved lexically).
func absolute(_ path: String, cwd: String) -> [UInt8] {
    let full = path.hasPrefix("/") ? Array(path.utf8) : Array(cwd.utf8) + [UInt8(ascii: "/")] + Array(path.utf8)
    var parts: [ArraySlice<UInt8>] = []
    for c in full.split(separator: UInt8(ascii: "/")) {
        if c.elementsEqual([UInt8(ascii: ".")]) { continue }
        if c.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) { _ = parts.popLast(); continue }
        parts.append(c)
    }
    var out: [UInt8] = []
    for p in parts { out.append(UInt8(ascii: "/")); out += p }
    return out.isEmpty ? [UInt8(ascii: "/")] : out
}
