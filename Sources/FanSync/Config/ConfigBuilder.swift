#if canImport(Glibc)
import Glibc
#endif

/// Where a value came from, for error messages.
struct ConfigPlace {
    var chunk: String?
    var line: Int?
    var syncIndex: Int? = nil
    var syncSource: String? = nil
    var section: String? = nil
}

/// Turns the recorded `settings`/`sync{}` calls into `LoadedConfig`, collecting every problem.
struct ConfigBuilder {
    let mainPath: String
    let directory: String
    let chunks: [String: LuaChunk]
    var errors: [ConfigError] = []
    var warnings: [String] = []
    /// Lines of recorded calls per chunk (a key is searched between its call and the next).
    private var callLines: [String: [Int]] = [:]

    init(mainPath: String, directory: String, chunks: [String: LuaChunk]) {
        self.mainPath = mainPath
        self.directory = directory
        self.chunks = chunks
    }

    // MARK: - Vocabulary

    static let settingsKeys = [
        "logfile", "statusFile", "statusInterval", "pidfile", "nodaemon", "insist", "inotifyMode",
        "maxProcesses", "maxDelays", "logident", "logfacility",
        // fansync's own
        "verbose", "stateDir", "backend", "openFileInterval", "largeFileThreshold", "rulesFile", "useGitignore",
        "maxDeleteShare", "localCopy",
    ]
    /// Settings keys that are also the default of every sync{}.
    static let settingsMirrorDefaults: Set<String> = [
        "maxProcesses", "maxDelays", "backend", "openFileInterval", "largeFileThreshold", "rulesFile", "useGitignore",
        "maxDeleteShare", "localCopy",
    ]
    static let syncKeys = [
        "source", "target", "host", "targetdir", "delay", "maxDelays", "maxProcesses", "init", "delete",
        "exclude", "excludeFrom", "filter", "filterFrom", "rsync", "ssh",
        // fansync's own
        "name", "backend", "openFileInterval", "rulesFile", "useGitignore", "deleteExcluded", "stateDir",
        "largeFileThreshold", "maxDeleteShare", "localCopy",
    ]
    /// lsyncd's rsync keys that map to a field of RsyncOptions.
    static let rsyncFieldKeys = [
        "archive", "compress", "verbose", "bwlimit", "perms", "owner", "group", "times", "links", "hard_links",
        "acls", "xattrs", "checksum", "sparse", "whole_file", "inplace", "binary", "rsh", "_extra",
    ]
    /// lsyncd's rsync keys that become an rsync flag in `extra` (true -> the flag).
    static let rsyncBoolFlags: [String: String] = [
        "append": "--append", "append_verify": "--append-verify", "backup": "--backup",
        "copy_dirlinks": "--copy-dirlinks", "copy_links": "--copy-links", "cvs_exclude": "--cvs-exclude",
        "executability": "--executability", "ignore_times": "--ignore-times", "ipv4": "--ipv4", "ipv6": "--ipv6",
        "keep_dirlinks": "--keep-dirlinks", "one_file_system": "--one-file-system",
        "omit_dir_times": "--omit-dir-times", "omit_link_times": "--omit-link-times",
        "prune_empty_dirs": "--prune-empty-dirs", "quiet": "--quiet", "update": "--update",
        "devices": "--devices", "specials": "--specials",
    ]
    /// lsyncd's rsync keys that become `--flag=value` in `extra`.
    static let rsyncValueFlags: [String: String] = [
        "backup_dir": "--backup-dir", "chmod": "--chmod", "chown": "--chown", "groupmap": "--groupmap",
        "usermap": "--usermap", "rsync_path": "--rsync-path", "suffix": "--suffix", "temp_dir": "--temp-dir",
        "timeout": "--timeout",
    ]
    static let rsyncRefused: [String: String] = [
        "dry_run": "a dry run would make fansync's record of what the backup holds wrong; to see what a config does, run `fansync check-config`",
        "existing": "rsync would skip new files while fansync records them as sent; remove it",
        "password_file": "it is for rsync daemon targets (host::module), which fansync does not support; reach the backup over ssh",
        "_computed": "it is lsyncd's internal state; remove it",
    ]
    static let sshKeys = ["port", "identityFile", "options", "binary", "_extra"]

    static let noHooks = "fansync runs no Lua code per event: it sends changes with rsync itself, detects renames and does them on the backup. Remove it and use default.rsync or default.rsyncssh"
    static let refusedSyncKeys: [String: String] = [
        "onCreate": noHooks, "onModify": noHooks, "onDelete": noHooks, "onMove": noHooks,
        "onStartup": noHooks, "onAttrib": noHooks, "action": noHooks, "prepare": noHooks, "collect": noHooks,
        "checkgauge": noHooks,
        "exitcodes": "fansync classifies rsync and ssh exit codes itself (network errors are retried with back-off); remove it",
        "rsyncExitCodes": "fansync classifies rsync exit codes itself (network errors are retried with back-off); remove it",
        "sshExitCodes": "fansync classifies ssh exit codes itself (network errors are retried with back-off); remove it",
        "tunnel": "fansync keeps one multiplexed ssh connection per target itself (ControlMaster); remove tunnel and use default.rsyncssh with host and targetdir",
        "crontab": "fansync needs no periodic full sync: a lost event triggers a rescan; to compare source and backup on a schedule run `fansync verify` from cron or a systemd timer",
        "delayMode": "not an option of lsyncd or fansync; remove it",
    ]

    // MARK: - Build

    mutating func build(_ records: [LuaRecord]) -> LoadedConfig {
        for r in records { if let c = r.chunk, let l = r.line { callLines[c, default: []].append(l) } }
        for k in callLines.keys { callLines[k]!.sort() }

        let (settings, defaults) = buildSettings(records.filter { $0.kind != .sync })
        var mirrors: [MirrorConfig] = []
        var origins: [ConfigOrigin] = []
        var explicitNames: [Bool] = []
        var syncIndex = 0
        for r in records where r.kind == .sync {
            syncIndex += 1
            if let (m, preset, named) = buildSync(r, index: syncIndex, defaults: defaults) {
                mirrors.append(m)
                origins.append(ConfigOrigin(file: path(of: r.chunk), line: r.line, index: syncIndex, preset: preset))
                explicitNames.append(named)
            }
        }
        if syncIndex == 0 && errors.isEmpty {
            errors.append(ConfigError(file: mainPath, message: "the config has no sync{}: add one, e.g. sync { default.rsync, source = \"/workspace\", target = \"backup@host:/backups/workspace\" }"))
        }
        if errors.isEmpty { checkAcrossMirrors(&mirrors, origins: origins, explicit: explicitNames) }
        var loaded = LoadedConfig(settings: settings, mirrors: mirrors)
        loaded.origins = origins
        loaded.warnings = warnings
        return loaded
    }

    // MARK: - settings

    private mutating func buildSettings(_ records: [LuaRecord]) -> (DaemonSettings, [String: LuaValue]) {
        var merged: [String: (LuaValue, ConfigPlace)] = [:]
        for r in records {
            let place = ConfigPlace(chunk: r.chunk ?? LuaSandbox.mainChunkId, line: r.line, section: "settings")
            guard case .table(let t) = r.value else {
                fail(place, nil, "settings must be a table, not \(r.value.kindDescription)")
                continue
            }
            for (i, v) in t.array.enumerated() {
                fail(place, nil, "value #\(i + 1) (\(v.kindDescription)) has no key: write settings { key = value, ... }")
            }
            for k in t.oddKeys { fail(place, nil, "the key \(k) is not a name") }
            for (k, v) in t.fields { merged[k] = (v, place) }
        }
        var s = DaemonSettings()
        var defaults: [String: LuaValue] = [:]
        for key in merged.keys.sorted() {
            let (v, place) = merged[key]!
            let before = errors.count
            switch key {
            case "logfile": s.logFile = pathString(v, place, key)
            case "statusFile": s.statusFile = pathString(v, place, key)
            case "pidfile": s.pidFile = pathString(v, place, key)
            case "statusInterval":
                if let d = number(v, place, key, min: 0, exclusive: true, what: "a number of seconds > 0") { s.statusInterval = d }
            case "nodaemon": if let b = bool(v, place, key) { s.nodaemon = b }
            case "insist": if let b = bool(v, place, key) { s.insist = b }
            case "verbose": if let b = bool(v, place, key) { s.verbose = b }
            case "inotifyMode":
                if let t = v.text, let m = InotifyMode(rawValue: t) { s.inotifyMode = m }
                else { fail(place, key, "must be \"CloseWrite\", \"Modify\" or \"CloseWrite or Modify\", got \(v.kindDescription)") }
            case "maxProcesses":
                if let n = integer(v, place, key, min: 1, what: "a whole number >= 1") { s.maxProcesses = n }
            case "maxDelays":
                if let n = integer(v, place, key, min: 0, what: "a whole number >= 0") { s.maxDelays = n }
            case "logident": s.logIdent = plainString(v, place, key)
            case "logfacility":
                let facilities = ["auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "syslog",
                                  "user", "uucp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"]
                if let t = v.text, facilities.contains(t) { s.logFacility = t }
                else { fail(place, key, "must be a syslog facility (\(facilities.joined(separator: ", "))), got \(v.kindDescription)") }
            case "stateDir":
                if let p = pathBytes(v, place, key) { s.stateDir = p }
            case "backend", "openFileInterval", "largeFileThreshold", "rulesFile", "useGitignore", "maxDeleteShare", "localCopy":
                var probe = MirrorConfig(name: "", source: [], target: .local(path: []))
                applyMirrorKey(key, v, &probe, place)
            default:
                if let msg = ConfigBuilder.refusedSyncKeys[key] {
                    fail(place, key, "not supported: \(msg)")
                } else if ConfigBuilder.syncKeys.contains(key) || ConfigBuilder.rsyncFieldKeys.contains(key) {
                    fail(place, key, "belongs in sync { ... }, not in settings")
                } else {
                    fail(place, key, "unknown settings key\(suggestion(key, ConfigBuilder.settingsKeys))")
                }
            }
            if errors.count == before, ConfigBuilder.settingsMirrorDefaults.contains(key) { defaults[key] = v }
        }
        return (s, defaults)
    }

    // MARK: - sync{}

    private mutating func buildSync(_ r: LuaRecord, index: Int, defaults: [String: LuaValue]) -> (MirrorConfig, String, Bool)? {
        var place = ConfigPlace(chunk: r.chunk, line: r.line, syncIndex: index)
        guard case .table(let top) = r.value else { return nil }
        var merged: [String: LuaValue] = [:]
        var presets: [String] = []
        flatten(top, into: &merged, presets: &presets, place: place, depth: 0)
        if case .string(let b)? = merged["source"] { place.syncSource = SyncPath.displayString(b) }
        for (k, v) in defaults where merged[k] == nil { merged[k] = v }

        // Custom actions first: without a preset they are what the sync{} is about.
        let refusedHere = merged.keys.sorted().filter { ConfigBuilder.refusedSyncKeys[$0] != nil }
        for key in refusedHere { fail(place, key, "not supported: \(ConfigBuilder.refusedSyncKeys[key]!)") }

        var seen: [String] = []
        for p in presets where !seen.contains(p) { seen.append(p) }
        guard let preset = seen.first else {
            if !refusedHere.isEmpty { return nil }
            fail(place, nil, "no preset: start it with default.rsync (target = a local directory or \"host:/dir\") or default.rsyncssh (host = ..., targetdir = ...)")
            return nil
        }
        if seen.contains("direct") {
            fail(place, nil, "default.direct is not supported: use default.rsync with target = \"/local/dir\" (rsync to a local directory is as quick and never leaves a half-written file)")
            return nil
        }
        let families = Set(seen.map { $0 == "rssh" ? "rsyncssh" : $0 })
        if families.count > 1 {
            fail(place, nil, "it uses both default.rsync and default.rsyncssh: keep one")
            return nil
        }
        let sshPreset = preset == "rsyncssh" || preset == "rssh"

        var used = Set(refusedHere)
        func take(_ key: String) -> LuaValue? {
            used.insert(key)
            return merged[key]
        }
        let errorsBefore = errors.count

        // source
        var source: [UInt8]? = nil
        if let v = take("source") {
            source = pathBytes(v, place, "source")
            if let source { place.syncSource = SyncPath.displayString(source) }
        } else {
            fail(place, "source", "missing: every sync{} needs source = \"/dir/to/mirror\"")
        }

        // target
        var target: Target? = nil
        let targetValue = take("target"), hostValue = take("host"), targetdirValue = take("targetdir")
        if sshPreset {
            if targetValue != nil {
                fail(place, "target", "default.\(preset) takes host and targetdir, not target: write host = \"user@host\", targetdir = \"/dir\" (or use default.rsync with target = \"host:/dir\")")
            }
            var userHost: (String?, String)? = nil
            if let v = hostValue {
                if let t = plainString(v, place, "host") {
                    do { userHost = try TargetParser.parseHost(t) } catch let e as TargetParseError {
                        fail(place, "host", e.message)
                    } catch {}
                }
            } else {
                fail(place, "host", "missing: default.\(preset) needs host = \"user@host\" and targetdir = \"/dir\"")
            }
            var dir: [UInt8]? = nil
            if let v = targetdirValue {
                if case .string(let b) = v, !b.isEmpty {
                    do {
                        dir = try TargetParser.remoteDirectory(b) { TargetParseError(input: SyncPath.displayString(b), message: $0) }
                    } catch let e as TargetParseError { fail(place, "targetdir", e.message) } catch {}
                } else {
                    fail(place, "targetdir", "must be a directory on the host (a non-empty string), got \(v.kindDescription)")
                }
            } else {
                fail(place, "targetdir", "missing: default.\(preset) needs targetdir = \"/dir\" (the directory on the host)")
            }
            if let (user, host) = userHost, let dir {
                target = .ssh(SSHTarget(user: user, host: host, port: nil, directory: dir))
            }
        } else {
            if hostValue != nil || targetdirValue != nil {
                let key = hostValue != nil ? "host" : "targetdir"
                fail(place, key, "host and targetdir belong to default.rsyncssh; with default.rsync write target = \"user@host:/dir\" (or switch to default.rsyncssh)")
            }
            if let v = targetValue {
                if case .string(let b) = v {
                    do {
                        target = try TargetParser.parse(bytes: b, currentDirectory: Array(directory.utf8))
                    } catch let e as TargetParseError { fail(place, "target", e.message) } catch {}
                } else {
                    fail(place, "target", "must be a string (\"/local/dir\" or \"user@host:/dir\"), got \(v.kindDescription)")
                }
            } else {
                fail(place, "target", "missing: default.rsync needs target = \"/local/dir\" or \"user@host:/dir\"")
            }
        }

        var m = MirrorConfig(name: "", source: source ?? [], target: target ?? .local(path: []))
        // lsyncd's rsync defaults: links and times, not archive.
        m.rsync.archive = false
        m.rsync.links = true
        m.rsync.times = true

        if let v = take("delay") {
            if let d = number(v, place, "delay", min: 0, exclusive: false, what: "a number of seconds >= 0") { m.delay = d }
        }
        if let v = take("maxDelays") {
            if let n = integer(v, place, "maxDelays", min: 0, what: "a whole number >= 0 (0 = no limit)") { m.maxDelays = n }
        }
        if let v = take("maxProcesses") {
            if let n = integer(v, place, "maxProcesses", min: 1, what: "a whole number >= 1") { m.maxProcesses = n }
        }
        if let v = take("init") {
            switch v {
            case .boolean(let b): m.initialSync = b
            case .function:
                fail(place, "init", "a custom init function is not supported (\(ConfigBuilder.noHooks)); init = false skips the initial sync, init = true (the default) runs it")
            default: fail(place, "init", "must be true or false, got \(v.kindDescription)")
            }
        }
        var explicitDelete: DeleteMode? = nil
        if let v = take("delete") {
            switch v {
            case .boolean(let b): explicitDelete = b ? .always : .never
            case .string(let b) where b == Array("startup".utf8): explicitDelete = .startup
            case .string(let b) where b == Array("running".utf8): explicitDelete = .running
            default:
                fail(place, "delete", "must be true, false, \"startup\" or \"running\", got \(v.kindDescription)")
            }
            if let d = explicitDelete { m.delete = d }
        }
        if let v = take("exclude") {
            for p in stringList(v, place, "exclude") {
                if p.isEmpty { fail(place, "exclude", "an exclude pattern is empty") } else { m.excludes.append(p) }
            }
        }
        if let v = take("excludeFrom") {
            if let lines = patternFile(v, place, "excludeFrom") { m.excludes += lines }
        }
        if let v = take("filter") {
            for rule in stringList(v, place, "filter") { checkFilterRule(rule, place, "filter") }
            m.filters += stringList(v, ConfigPlace(chunk: nil, line: nil), "filter", quiet: true)
        }
        if let v = take("filterFrom") {
            if let lines = patternFile(v, place, "filterFrom") {
                for rule in lines { checkFilterRule(rule, place, "filterFrom") }
                m.filters += lines
            }
        }
        if let v = take("rsync") {
            applyRsync(v, &m, explicitDelete: explicitDelete, place)
        }
        if let v = take("ssh") {
            if case .ssh(var t) = m.target {
                applySSH(v, &m.ssh, place)
                if let p = m.ssh.port {
                    if let q = t.port, q != p {
                        fail(place, "ssh.port", "\(p) contradicts the port \(q) in the target; keep one")
                    }
                    t.port = p
                    m.target = .ssh(t)
                }
            } else if target != nil {
                fail(place, "ssh", "the target is a local directory, so ssh options have no use; remove ssh = { ... } or give a host:dir target")
            }
        }
        if case .ssh(let t) = m.target, let p = t.port, m.ssh.port == nil { m.ssh.port = p }

        var named = false
        if let v = take("name") {
            if let t = plainString(v, place, "name") {
                if let problem = ConfigBuilder.nameProblem(t) { fail(place, "name", problem) } else { m.name = t; named = true }
            }
        }
        for key in ["backend", "openFileInterval", "rulesFile", "useGitignore", "deleteExcluded", "stateDir", "largeFileThreshold",
                    "maxDeleteShare", "localCopy"] {
            if let v = take(key) { applyMirrorKey(key, v, &m, place) }
        }

        for key in merged.keys.sorted() where !used.contains(key) {
            if ConfigBuilder.rsyncFieldKeys.contains(key) || ConfigBuilder.rsyncBoolFlags[key] != nil
                        || ConfigBuilder.rsyncValueFlags[key] != nil {
                fail(place, key, "an rsync option: put it inside rsync = { \(key) = ... }")
            } else if ConfigBuilder.settingsKeys.contains(key) {
                fail(place, key, "a settings key: put it in settings { \(key) = ... }")
            } else {
                fail(place, key, "unknown key\(suggestion(key, ConfigBuilder.syncKeys))")
            }
        }

        guard errors.count == errorsBefore, source != nil, target != nil else { return nil }

        if case .local(let dst) = m.target {
            if ConfigBuilder.overlaps(dst, m.source) {
                let how = dst == m.source ? "is the source itself" : (ConfigBuilder.inside(dst, m.source) ? "is inside the source (the mirror would copy its own copies forever)" : "contains the source (deleting on the backup would delete the source)")
                fail(place, "target", "the local target \(SyncPath.displayString(dst)) \(how): choose a directory outside \(SyncPath.displayString(m.source))")
                return nil
            }
        }
        if !named { m.name = "" }
        if access(String(decoding: m.source, as: UTF8.self), F_OK) != 0 {
            warnings.append("\(origin(place)): the source \(SyncPath.displayString(m.source)) does not exist (yet)")
        }
        return (m, preset, named)
    }

    /// lsyncd's inheritance: a sync{}'s own keys win over those of the tables listed in it
    /// (layers, like default.rsync), which are read in order.
    private mutating func flatten(_ t: LuaTable, into merged: inout [String: LuaValue], presets: inout [String], place: ConfigPlace, depth: Int) {
        for key in t.fields.keys.sorted() {
            let v = t.fields[key]!
            if let existing = merged[key] { merged[key] = ConfigBuilder.mergeLower(existing, v) } else { merged[key] = v }
        }
        for k in t.oddKeys { fail(place, nil, "the key \(k) is not a name: sync{} keys are names like source, target, delay") }
        for (i, item) in t.array.enumerated() {
            switch item {
            case .preset(let p): presets.append(p)
            case .table(let sub) where depth < 16:
                flatten(sub, into: &merged, presets: &presets, place: place, depth: depth + 1)
            default:
                fail(place, nil, "entry #\(i + 1) has no key (it is \(item.kindDescription)): apart from the preset (default.rsync) every entry needs a name, as in delay = 5")
            }
        }
    }

    static func mergeLower(_ higher: LuaValue, _ lower: LuaValue) -> LuaValue {
        guard case .table(var h) = higher, case .table(let l) = lower else { return higher }
        for (k, v) in l.fields {
            if let hv = h.fields[k] { h.fields[k] = mergeLower(hv, v) } else { h.fields[k] = v }
        }
        h.array += l.array
        h.oddKeys += l.oddKeys
        return .table(h)
    }

    // MARK: - Keys shared by sync{} and settings

    private mutating func applyMirrorKey(_ key: String, _ v: LuaValue, _ m: inout MirrorConfig, _ place: ConfigPlace) {
        switch key {
        case "backend":
            if let t = v.text, let b = Backend(rawValue: t) { m.backend = b }
            else { fail(place, key, "must be \"auto\", \"fanotify\" or \"inotify\", got \(v.kindDescription)") }
        case "openFileInterval":
            if let d = number(v, place, key, min: 0, exclusive: true, what: "a number of seconds > 0") { m.openFileInterval = d }
        case "rulesFile":
            if case .boolean(false) = v { m.rulesFile = ""; return }
            if let t = plainString(v, place, key) {
                if t.contains("/") || t == "." || t == ".." { fail(place, key, "must be a file name (no '/'), like \".fansyncignore\", or false") }
                else { m.rulesFile = t }
            }
        case "useGitignore": if let b = bool(v, place, key) { m.useGitignore = b }
        case "deleteExcluded": if let b = bool(v, place, key) { m.deleteExcluded = b }
        case "stateDir": if let p = pathBytes(v, place, key) { m.stateDir = p }
        case "localCopy":
            if let t = v.text, let mode = LocalCopyMode(rawValue: t) { m.localCopy = mode }
            else { fail(place, key, "must be \"auto\" (fansync copies a local target's batches itself) or \"rsync\", got \(v.kindDescription)") }
        case "maxDeleteShare":
            if let d = number(v, place, key, min: 0, exclusive: false, what: "a share between 0 and 1 (0.5 = half)") {
                if d > 1 { fail(place, key, "must be a share between 0 and 1 (0.5 = half), got \(d)") } else { m.maxDeleteShare = d }
            }
        case "largeFileThreshold":
            if let n = ConfigBuilder.byteSize(v), n > 0 { m.largeFileThreshold = n }
            else { fail(place, key, "must be a size in bytes > 0: a number, or a string like \"64M\" or \"1G\" (K, M, G, T = 1024^n); got \(v.kindDescription)") }
        default: break
        }
    }

    // MARK: - rsync = { ... }

    private mutating func applyRsync(_ v: LuaValue, _ m: inout MirrorConfig, explicitDelete: DeleteMode?, _ place: ConfigPlace) {
        guard case .table(let t) = v else {
            fail(place, "rsync", "must be a table, as in rsync = { archive = true, compress = true }, got \(v.kindDescription)")
            return
        }
        for (i, item) in t.array.enumerated() {
            fail(place, "rsync", "entry #\(i + 1) (\(item.kindDescription)) has no key: rsync options are named (archive = true); raw arguments go in _extra = { ... }")
        }
        for k in t.oddKeys { fail(place, "rsync", "the key \(k) is not a name") }
        var r = m.rsync
        var flags: [String] = []
        var bwlimitFromKey: Int? = nil
        for key in t.fields.keys.sorted() {
            let value = t.fields[key]!
            let full = "rsync.\(key)"
            switch key {
            case "archive": if let b = bool(value, place, full) { r.archive = b }
            case "compress": if let b = bool(value, place, full) { r.compress = b }
            case "verbose": if let b = bool(value, place, full) { r.verbose = b }
            case "perms": if let b = bool(value, place, full) { r.perms = b }
            case "owner": if let b = bool(value, place, full) { r.owner = b }
            case "group": if let b = bool(value, place, full) { r.group = b }
            case "times": if let b = bool(value, place, full) { r.times = b }
            case "links": if let b = bool(value, place, full) { r.links = b }
            case "hard_links": if let b = bool(value, place, full) { r.hardLinks = b }
            case "acls": if let b = bool(value, place, full) { r.acls = b }
            case "xattrs": if let b = bool(value, place, full) { r.xattrs = b }
            case "checksum": if let b = bool(value, place, full) { r.checksum = b }
            case "sparse": if let b = bool(value, place, full) { r.sparse = b }
            case "whole_file": if let b = bool(value, place, full) { r.wholeFile = b }
            case "inplace": if let b = bool(value, place, full) { r.inplace = b }
            case "protect_args":
                if bool(value, place, full) == false {
                    warnings.append("\(origin(place)): rsync.protect_args = false is ignored: fansync always passes file names to rsync safely")
                }
            case "binary": if let s = plainString(value, place, full) { r.binary = s }
            case "rsh":
                if let s = plainString(value, place, full) {
                    r.rsh = s
                    warnIfHostKeysUnchecked(s, place, full)
                }
            case "bwlimit":
                if let n = ConfigBuilder.bwlimit(value), n >= 0 { bwlimitFromKey = n; r.bwlimit = n == 0 ? nil : n }
                else { fail(place, full, "must be KiB per second (a whole number), or a string with a unit like \"10m\" (as rsync's --bwlimit), got \(value.kindDescription)") }
            case "_extra":
                break
            default:
                if let flag = ConfigBuilder.rsyncBoolFlags[key] {
                    if bool(value, place, full) == true { flags.append(flag) }
                } else if let flag = ConfigBuilder.rsyncValueFlags[key] {
                    if key == "timeout" {
                        if let n = integer(value, place, full, min: 0, what: "a whole number of seconds >= 0") { flags.append("\(flag)=\(n)") }
                    } else if let s = plainString(value, place, full) {
                        flags.append("\(flag)=\(s)")
                    }
                } else if let why = ConfigBuilder.rsyncRefused[key] {
                    fail(place, full, "not supported: \(why)")
                } else {
                    let all = ConfigBuilder.rsyncFieldKeys + Array(ConfigBuilder.rsyncBoolFlags.keys) + Array(ConfigBuilder.rsyncValueFlags.keys) + ["protect_args"]
                    fail(place, full, "unknown rsync option\(suggestion(key, all)); raw rsync arguments go in rsync._extra = { \"--option\" }")
                }
            }
        }
        if let extra = t.fields["_extra"] {
            applyExtra(extra, &r, &m, bwlimitFromKey: bwlimitFromKey, explicitDelete: explicitDelete, place)
        }
        r.extra = flags + r.extra
        m.rsync = r
    }

    /// rsync._extra: kept verbatim, except what fansync must know itself (deletes, excludes,
    /// bandwidth, the remote shell) and what would break it.
    private mutating func applyExtra(_ v: LuaValue, _ r: inout RsyncOptions, _ m: inout MirrorConfig,
                                     bwlimitFromKey: Int?, explicitDelete: DeleteMode?, _ place: ConfigPlace) {
        let key = "rsync._extra"
        guard case .table(let t) = v, t.fields.isEmpty, t.oddKeys.isEmpty else {
            fail(place, key, "must be a list of strings, as in _extra = { \"--numeric-ids\" }, got \(v.kindDescription)")
            return
        }
        var args: [String] = []
        for (i, item) in t.array.enumerated() {
            switch item {
            case .string(let b):
                if b.contains(0) { fail(place, key, "entry #\(i + 1) contains a NUL byte"); return }
                args.append(String(decoding: b, as: UTF8.self))
            case .integer(let n): args.append(String(n))
            default: fail(place, key, "entry #\(i + 1) must be a string, got \(item.kindDescription)"); return
            }
        }
        var kept: [String] = []
        var sawDelete: String? = nil
        var bw: Int? = nil
        var i = 0
        func value(_ option: String, _ a: String) -> String? {
            if a.hasPrefix(option + "=") { return String(a.dropFirst(option.count + 1)) }
            if a == option {
                i += 1
                return i < args.count ? args[i] : nil
            }
            return nil
        }
        let refused: [(String, String)] = [
            ("--include", "an include rule in _extra cannot be honoured by the watcher: use filter = { \"+ pattern\", \"- pattern\" } or a '!pattern' line in .fansyncignore"),
            ("--filter", "use filter = { \"+ pattern\", \"- pattern\" } (or filterFrom)"),
            ("--files-from", "fansync gives rsync the list of changed files itself"),
            ("--from0", "fansync gives rsync the list of changed files itself"),
            ("--delete-missing-args", "fansync propagates deletes itself (see delete = ...)"),
            ("--remove-source-files", "it would delete files from the source"),
            ("--dry-run", "a dry run would make fansync's record of the backup wrong; use `fansync check-config`"),
            ("--existing", "rsync would skip new files while fansync records them as sent"),
            ("--daemon", "not an option for a mirror"), ("--server", "not an option for a mirror"),
            ("--sender", "not an option for a mirror"), ("--list-only", "not an option for a mirror"),
            ("--write-batch", "not an option for a mirror"), ("--only-write-batch", "not an option for a mirror"),
            ("--read-batch", "not an option for a mirror"),
        ]
        let refusedShort: [String: String] = ["-n": "--dry-run", "-0": "--from0", "-f": "--filter", "-F": "--filter"]
        while i < args.count {
            let a = args[i]
            defer { i += 1 }
            if let long = refusedShort[a] {
                fail(place, key, "\"\(a)\" (\(long)) is not supported: \(refused.first { $0.0 == long }!.1)")
                continue
            }
            if let (_, why) = refused.first(where: { a == $0.0 || a.hasPrefix($0.0 + "=") || (a.hasPrefix($0.0 + "-") && $0.0 == "--include") }) {
                fail(place, key, "\"\(a)\" is not supported: \(why)")
                continue
            }
            for opt in ["--exclude", "--exclude-from", "--bwlimit", "--rsh", "--include", "--filter"] where a.hasPrefix(opt + " ") {
                fail(place, key, "\"\(a)\" is one argument containing a space, which rsync rejects: write \"\(opt)=\(a.dropFirst(opt.count + 1))\"")
            }
            if ["--delete", "--del", "--delete-before", "--delete-during", "--delete-delay", "--delete-after"].contains(a) {
                sawDelete = a
            } else if a == "--delete-excluded" {
                m.deleteExcluded = true
            } else if a == "--exclude" || a.hasPrefix("--exclude=") {
                guard let p = value("--exclude", a), !p.isEmpty else { fail(place, key, "\"--exclude\" needs a pattern"); continue }
                m.excludes.append(p)
            } else if a == "--exclude-from" || a.hasPrefix("--exclude-from=") {
                guard let f = value("--exclude-from", a), !f.isEmpty else { fail(place, key, "\"--exclude-from\" needs a file"); continue }
                if let lines = patternFile(.string(Array(f.utf8)), place, key) { m.excludes += lines }
            } else if a == "--bwlimit" || a.hasPrefix("--bwlimit=") {
                guard let s = value("--bwlimit", a), let n = ConfigBuilder.bwlimit(.string(Array(s.utf8))) else {
                    fail(place, key, "\"\(a)\": --bwlimit needs KiB per second, like --bwlimit=10000 or --bwlimit=10m")
                    continue
                }
                bw = n
            } else if a == "-e" || a == "--rsh" || a.hasPrefix("--rsh=") {
                guard let s = value(a == "-e" ? "-e" : "--rsh", a), !s.isEmpty else { fail(place, key, "\"\(a)\" needs a command"); continue }
                r.rsh = s
                warnIfHostKeysUnchecked(s, place, key)
            } else if !a.hasPrefix("-") {
                let previous = kept.last ?? ""
                if previous.hasPrefix("-") && !previous.contains("=") {
                    kept.append(a)   // the value of the option before it
                } else {
                    fail(place, key, "\"\(a)\" is not an option: fansync gives rsync its source and target itself, so _extra may hold only options (\"--name\" or \"--name=value\")")
                }
            } else {
                kept.append(a)
            }
        }
        if let d = sawDelete {
            if let e = explicitDelete, e != .always {
                fail(place, key, "\"\(d)\" deletes always, which contradicts delete = \(e == .never ? "false" : "\"\(e.rawValue)\""); keep one")
            } else {
                m.delete = .always
            }
        }
        if let bw {
            if let k = bwlimitFromKey, k != bw {
                fail(place, key, "--bwlimit=\(bw) contradicts rsync.bwlimit = \(k); keep one")
            } else {
                r.bwlimit = bw == 0 ? nil : bw
            }
        }
        r.extra = kept
    }

    private mutating func warnIfHostKeysUnchecked(_ command: String, _ place: ConfigPlace, _ key: String) {
        let flat = command.lowercased().replacingAll(" ", with: "")
        if flat.contains("stricthostkeychecking=no") || flat.contains("userknownhostsfile=/dev/null") {
            warnings.append("\(origin(place)): \(key) turns off ssh host key checking: a changed or impostor backup host would not be noticed")
        }
    }

    // MARK: - ssh = { ... }

    private mutating func applySSH(_ v: LuaValue, _ s: inout SSHOptions, _ place: ConfigPlace) {
        guard case .table(let t) = v else {
            fail(place, "ssh", "must be a table, as in ssh = { port = 2222, identityFile = \"/root/.ssh/backup\" }, got \(v.kindDescription)")
            return
        }
        for (i, item) in t.array.enumerated() {
            fail(place, "ssh", "entry #\(i + 1) (\(item.kindDescription)) has no key: ssh options are port, identityFile, options, binary and _extra")
        }
        for key in t.fields.keys.sorted() {
            let value = t.fields[key]!
            let full = "ssh.\(key)"
            switch key {
            case "port":
                if let n = integer(value, place, full, min: 1, what: "a port number from 1 to 65535") {
                    if n > 65535 { fail(place, full, "must be a port number from 1 to 65535, got \(n)") } else { s.port = n }
                }
            case "identityFile":
                if case .string(let b) = value, !b.isEmpty, !b.contains(0) {
                    let p = b.first == UInt8(ascii: "~") || b.first == UInt8(ascii: "/") ? b
                        : TargetParser.normalizeLocal(Array(directory.utf8) + [UInt8(ascii: "/")] + b)
                    s.identityFile = String(decoding: p, as: UTF8.self)
                    if b.first != UInt8(ascii: "~"), access(s.identityFile!, R_OK) != 0 {
                        warnings.append("\(origin(place)): ssh.identityFile \(s.identityFile!) cannot be read")
                    }
                } else {
                    fail(place, full, "must be the path of a private key file (a string), got \(value.kindDescription)")
                }
            case "binary": if let b = plainString(value, place, full) { s.binary = b }
            case "options":
                s.options = sshOptions(value, place, full)
            case "_extra":
                s.extra = stringList(value, place, full)
            default:
                fail(place, full, "unknown ssh option\(suggestion(key, ConfigBuilder.sshKeys))")
            }
        }
    }

    /// lsyncd's `options = { User = "x", StrictHostKeyChecking = "yes" }` (also accepted: a list
    /// of "Key=value" strings), as values for `-o`, sorted by key.
    private mutating func sshOptions(_ v: LuaValue, _ place: ConfigPlace, _ key: String) -> [String] {
        guard case .table(let t) = v, t.oddKeys.isEmpty else {
            fail(place, key, "must be a table, as in options = { User = \"backup\", ConnectTimeout = 10 }, got \(v.kindDescription)")
            return []
        }
        var out: [(String, String)] = []
        func check(_ k: String, _ value: String) {
            if k.isEmpty || !k.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) {
                fail(place, key, "\"\(k)\" is not an ssh option name (letters and digits, like ServerAliveInterval)")
            } else if value.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\0" }) {
                fail(place, key, "the value of \(k) contains a line break")
            } else {
                out.append((k, value))
                let lower = k.lowercased(), val = value.lowercased()
                if (lower == "stricthostkeychecking" && (val == "no" || val == "off"))
                    || (lower == "userknownhostsfile" && val == "/dev/null") {
                    warnings.append("\(origin(place)): ssh option \(k)=\(value) turns off host key checking: a changed or impostor backup host would not be noticed")
                }
            }
        }
        for k in t.fields.keys.sorted() {
            switch t.fields[k]! {
            case .string(let b): check(k, String(decoding: b, as: UTF8.self))
            case .integer(let n): check(k, String(n))
            case .number(let d): check(k, String(d))
            case .boolean(let b): check(k, b ? "yes" : "no")
            case let other: fail(place, key, "the value of \(k) must be a string, number or boolean, got \(other.kindDescription)")
            }
        }
        for item in t.array {
            guard let s = item.text, let eq = s.firstIndex(of: "=") else {
                fail(place, key, "a list entry must be \"Key=value\", got \(item.kindDescription)")
                continue
            }
            check(String(s[..<eq]), String(s[s.index(after: eq)...]))
        }
        return out.map { "\($0.0)=\($0.1)" }
    }

    // MARK: - Across mirrors

    private mutating func checkAcrossMirrors(_ mirrors: inout [MirrorConfig], origins: [ConfigOrigin], explicit: [Bool]) {
        var names: [String: Int] = [:]
        for (i, m) in mirrors.enumerated() where explicit[i] {
            if let j = names[m.name] {
                failAt(origins[i], m, key: "name", "the name \"\(m.name)\" is already used by sync{} #\(origins[j].index)")
            }
            names[m.name] = i
        }
        for (i, m) in mirrors.enumerated() where !explicit[i] {
            var base = String(decoding: SyncPath(bytes: m.source).name, as: UTF8.self)
            base = String(base.map { $0.isNewline || $0 == "\0" ? "_" : $0 })
            if base.isEmpty || m.source == [UInt8(ascii: "/")] { base = "root" }
            var candidate = base
            var n = 2
            while names[candidate] != nil { candidate = "\(base)-\(n)"; n += 1 }
            mirrors[i].name = candidate
            names[candidate] = i
        }
        for i in mirrors.indices {
            for j in 0..<i where ConfigBuilder.sameTarget(mirrors[i].target, mirrors[j].target) {
                failAt(origins[i], mirrors[i], key: "target", "the same target as sync{} #\(origins[j].index) (\(mirrors[j].target)): two mirrors would overwrite each other's files")
            }
        }
    }

    static func sameTarget(_ a: Target, _ b: Target) -> Bool {
        switch (a, b) {
        case (.local(let x), .local(let y)): return overlaps(x, y)
        case (.ssh(let x), .ssh(let y)):
            return x.host.lowercased() == y.host.lowercased() && (x.port ?? 22) == (y.port ?? 22)
                && x.user == y.user && x.directory == y.directory
        default: return false
        }
    }

    static func inside(_ path: [UInt8], _ ancestor: [UInt8]) -> Bool {
        if ancestor == [UInt8(ascii: "/")] { return true }
        guard path.count >= ancestor.count, path.starts(with: ancestor) else { return false }
        return path.count == ancestor.count || path[ancestor.count] == UInt8(ascii: "/")
    }

    static func overlaps(_ a: [UInt8], _ b: [UInt8]) -> Bool { inside(a, b) || inside(b, a) }

    static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "must not be empty" }
        if name == "." || name == ".." { return "must not be \".\" or \"..\"" }
        if name.utf8.count > 200 { return "must be at most 200 bytes" }
        if name.contains("/") { return "must not contain '/' (it names the mirror's state directory)" }
        if name.contains(where: { $0.isNewline || $0 == "\0" || ($0.asciiValue.map { $0 < 0x20 } ?? false) }) {
            return "must not contain control characters"
        }
        return nil
    }

    // MARK: - Typed values

    private mutating func bool(_ v: LuaValue, _ place: ConfigPlace, _ key: String) -> Bool? {
        if case .boolean(let b) = v { return b }
        fail(place, key, "must be true or false, got \(v.kindDescription)")
        return nil
    }

    private mutating func number(_ v: LuaValue, _ place: ConfigPlace, _ key: String, min: Double, exclusive: Bool, what: String) -> Double? {
        let d: Double
        switch v {
        case .integer(let i): d = Double(i)
        case .number(let x): d = x
        default:
            fail(place, key, "must be \(what), got \(v.kindDescription)")
            return nil
        }
        if !d.isFinite || d < min || (exclusive && d == min) || d > 1e9 {
            fail(place, key, "must be \(what), got \(v.kindDescription)")
            return nil
        }
        return d
    }

    private mutating func integer(_ v: LuaValue, _ place: ConfigPlace, _ key: String, min: Int, what: String) -> Int? {
        var n: Int? = nil
        switch v {
        case .integer(let i): n = Int(exactly: i)
        case .number(let d) where d.isFinite && d.rounded() == d && abs(d) < 1e15: n = Int(d)
        default: break
        }
        guard let n, n >= min, n <= 1_000_000_000 else {
            fail(place, key, "must be \(what), got \(v.kindDescription)")
            return nil
        }
        return n
    }

    private mutating func plainString(_ v: LuaValue, _ place: ConfigPlace, _ key: String) -> String? {
        guard case .string(let b) = v, !b.isEmpty else {
            fail(place, key, "must be a non-empty string, got \(v.kindDescription)")
            return nil
        }
        if b.contains(0) || b.contains(0x0a) || b.contains(0x0d) {
            fail(place, key, "must not contain a NUL byte or a line break")
            return nil
        }
        return String(decoding: b, as: UTF8.self)
    }

    /// A local path, made absolute against the config's directory.
    private mutating func pathBytes(_ v: LuaValue, _ place: ConfigPlace, _ key: String) -> [UInt8]? {
        guard case .string(let b) = v, !b.isEmpty else {
            fail(place, key, "must be a path (a non-empty string), got \(v.kindDescription)")
            return nil
        }
        if b.contains(0) { fail(place, key, "a path cannot contain a NUL byte"); return nil }
        if b.first == UInt8(ascii: "~") {
            fail(place, key, "'~' is not expanded (no shell reads the config): write the absolute path, or os.getenv(\"HOME\") .. \"/...\"")
            return nil
        }
        if b.first == UInt8(ascii: "/") { return TargetParser.normalizeLocal(b) }
        return TargetParser.normalizeLocal(Array(directory.utf8) + [UInt8(ascii: "/")] + b)
    }

    private mutating func pathString(_ v: LuaValue, _ place: ConfigPlace, _ key: String) -> String? {
        pathBytes(v, place, key).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A string or a list of strings (lsyncd accepts both for exclude).
    private mutating func stringList(_ v: LuaValue, _ place: ConfigPlace, _ key: String, quiet: Bool = false) -> [String] {
        switch v {
        case .string(let b): return [String(decoding: b, as: UTF8.self)]
        case .table(let t) where t.fields.isEmpty && t.oddKeys.isEmpty:
            var out: [String] = []
            for (i, item) in t.array.enumerated() {
                if case .string(let b) = item, !b.contains(0) { out.append(String(decoding: b, as: UTF8.self)) }
                else if !quiet { fail(place, key, "entry #\(i + 1) must be a string, got \(item.kindDescription)") }
            }
            return out
        default:
            if !quiet { fail(place, key, "must be a string or a list of strings, got \(v.kindDescription)") }
            return []
        }
    }

    /// excludeFrom / filterFrom: one pattern per line; blank lines and '#' comments skipped.
    private mutating func patternFile(_ v: LuaValue, _ place: ConfigPlace, _ key: String) -> [String]? {
        guard let p = pathBytes(v, place, key) else { return nil }
        let path = String(decoding: p, as: UTF8.self)
        let data: [UInt8]
        do { data = try readFile(path) } catch let e as FileReadError {
            fail(place, key, "cannot read \(path): \(e.reason)")
            return nil
        } catch { return nil }
        var out: [String] = []
        for raw in data.split(separator: 0x0a, omittingEmptySubsequences: true) {
            var line = Array(raw)
            if line.last == 0x0d { line.removeLast() }
            let trimmed = line.drop(while: { $0 == 0x20 || $0 == 0x09 })
            if trimmed.isEmpty || trimmed.first == UInt8(ascii: "#") { continue }
            out.append(String(decoding: line, as: UTF8.self))
        }
        return out
    }

    private mutating func checkFilterRule(_ rule: String, _ place: ConfigPlace, _ key: String) {
        if !(rule.hasPrefix("+ ") || rule.hasPrefix("- ")) || rule.count < 3 {
            fail(place, key, "\"\(rule)\" is not a filter rule: write \"+ pattern\" (include) or \"- pattern\" (exclude), as lsyncd does")
        }
    }

    /// KiB per second from a number or an rsync size ("10000", "10m", "1.5M", "512KB").
    static func bwlimit(_ v: LuaValue) -> Int? {
        switch v {
        case .integer(let i): return i >= 0 && i < Int64(Int32.max) ? Int(i) : nil
        case .number(let d): return d >= 0 && d < 2e9 ? Int(d.rounded()) : nil
        case .string(let b):
            guard let bytes = parseSize(String(decoding: b, as: UTF8.self), defaultUnit: 1024) else { return nil }
            return Int((bytes / 1024).rounded())
        default: return nil
        }
    }

    /// A byte count from a number or a string with a unit (K/M/G/T = 1024^n, KB/MB/... = 1000^n).
    static func byteSize(_ v: LuaValue) -> Int64? {
        switch v {
        case .integer(let i): return i
        case .number(let d) where d.isFinite && d < 9e18: return Int64(d)
        case .string(let b):
            return parseSize(String(decoding: b, as: UTF8.self), defaultUnit: 1).map { Int64($0) }
        default: return nil
        }
    }

    static func parseSize(_ text: String, defaultUnit: Double) -> Double? {
        let t = text.trimmingSpaces()
        let numberPart = t.prefix(while: { $0.isNumber || $0 == "." })
        guard !numberPart.isEmpty, let value = Double(numberPart) else { return nil }
        let unit = t.dropFirst(numberPart.count).lowercased()
        let powers: [Character: Double] = ["k": 1, "m": 2, "g": 3, "t": 4]
        var multiplier = defaultUnit
        if !unit.isEmpty {
            guard let p = powers[unit.first!] else { return nil }
            let rest = unit.dropFirst()
            switch rest {
            case "", "ib", "i": multiplier = pow1024(p, base: 1024)
            case "b": multiplier = pow1024(p, base: 1000)
            default: return nil
            }
        }
        let result = value * multiplier
        return result.isFinite && result < 9e18 ? result : nil
    }

    private static func pow1024(_ p: Double, base: Double) -> Double {
        var r = 1.0
        for _ in 0..<Int(p) { r *= base }
        return r
    }

    // MARK: - Errors

    func path(of chunk: String?) -> String {
        chunk.flatMap { chunks[$0]?.path } ?? mainPath
    }

    private func origin(_ place: ConfigPlace) -> String {
        var s = path(of: place.chunk)
        if let l = place.line { s += ":\(l)" }
        if let i = place.syncIndex { s += ": sync{} #\(i)" } else if let sec = place.section { s += ": \(sec)" }
        return s
    }

    mutating func fail(_ place: ConfigPlace, _ key: String?, _ message: String) {
        let line = key.flatMap { keyLine($0, place) } ?? place.line
        errors.append(ConfigError(file: path(of: place.chunk), line: line, syncIndex: place.syncIndex,
                                  syncLine: place.line, syncSource: place.syncSource, section: place.section,
                                  key: key, message: message))
    }

    private mutating func failAt(_ origin: ConfigOrigin, _ m: MirrorConfig, key: String, _ message: String) {
        errors.append(ConfigError(file: origin.file, line: origin.line, syncIndex: origin.index, syncLine: origin.line,
                                  syncSource: SyncPath.displayString(m.source), key: key, message: message))
    }

    /// The line where `key = ` is written for this call: searched from the call's line up to the
    /// next recorded call in the same file; else the only place in the file it appears.
    private func keyLine(_ key: String, _ place: ConfigPlace) -> Int? {
        let chunkId = place.chunk ?? LuaSandbox.mainChunkId
        guard let text = chunks[chunkId]?.text else { return nil }
        let name = Array((key.split(separator: ".").last.map(String.init) ?? key).utf8)
        let lines = text.split(separator: 0x0a, omittingEmptySubsequences: false)
        if let start = place.line, start >= 1, start <= lines.count {
            let next = callLines[chunkId]?.first(where: { $0 > start }) ?? (lines.count + 1)
            for i in (start - 1)..<min(next - 1, lines.count) where ConfigBuilder.lineAssigns(lines[i], name) { return i + 1 }
        }
        let all = lines.indices.filter { ConfigBuilder.lineAssigns(lines[$0], name) }
        return all.count == 1 ? all[0] + 1 : nil
    }

    /// Whether a source line contains `name =` (or `["name"] =`) outside a `--` comment.
    static func lineAssigns(_ line: ArraySlice<UInt8>, _ name: [UInt8]) -> Bool {
        var l = Array(line)
        if let c = (0..<max(0, l.count - 1)).first(where: { l[$0] == UInt8(ascii: "-") && l[$0 + 1] == UInt8(ascii: "-") }) {
            l = Array(l[..<c])
        }
        guard !name.isEmpty, l.count >= name.count else { return false }
        func ident(_ b: UInt8) -> Bool {
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x5f || b == 0x2e
        }
        for i in 0...(l.count - name.count) where l[i..<(i + name.count)].elementsEqual(name) {
            if i > 0 && ident(l[i - 1]) { continue }
            var j = i + name.count
            if j < l.count && ident(l[j]) { continue }
            if j < l.count && (l[j] == UInt8(ascii: "\"") || l[j] == UInt8(ascii: "'")) { j += 1 }
            if j < l.count && l[j] == UInt8(ascii: "]") { j += 1 }
            while j < l.count && (l[j] == 0x20 || l[j] == 0x09) { j += 1 }
            if j < l.count && l[j] == UInt8(ascii: "=") && (j + 1 == l.count || l[j + 1] != UInt8(ascii: "=")) { return true }
        }
        return false
    }

    /// " (did you mean 'delay'?)" for a near miss, else "".
    private func suggestion(_ key: String, _ known: [String]) -> String {
        let lower = key.lowercased()
        if let same = known.first(where: { $0.lowercased() == lower }) { return " (did you mean '\(same)'? keys are case-sensitive)" }
        let best = known.map { ($0, ConfigBuilder.editDistance(Array(lower), Array($0.lowercased()))) }.min { $0.1 < $1.1 }
        if let (k, d) = best, d <= max(1, key.count / 3) { return " (did you mean '\(k)'?)" }
        return ""
    }

    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count)
        var prevPrev = prev
        for i in 1...a.count {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    cur[j] = min(cur[j], prevPrev[j - 2] + 1)   // a transposition ("prot" -> "port")
                }
            }
            prevPrev = prev
            prev = cur
        }
        return prev[b.count]
    }
}

extension String {
    func trimmingSpaces() -> String {
        let s = self.drop(while: { $0 == " " || $0 == "\t" })
        return String(s.reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}
