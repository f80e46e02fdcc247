/// What one mirror is: a source directory, a target, and how changes travel between them.
///
/// The command line (`fansync run SRC DST ...`) and the Lua config (`sync { ... }`) both
/// produce these; the daemon only ever sees this form.
public struct MirrorConfig: Sendable, Equatable {
    /// A name for logs, status and the state directory ("workspace", or "sync 2").
    public var name: String
    /// Absolute path of the source directory, as bytes (no trailing slash).
    public var source: [UInt8]
    public var target: Target
    /// Seconds a change waits before it is sent (lsyncd's `delay`); 0 = group commit.
    public var delay: Double = 0
    /// Send at once when this many changes are queued, whatever `delay` says (0 = no limit).
    public var maxDelays: Int = 0
    /// Transfers run at once for this mirror.
    public var maxProcesses: Int = 2
    /// Run the initial full sync on start (lsyncd's `init`).
    public var initialSync: Bool = true
    public var delete: DeleteMode = .always
    /// Global exclude patterns (gitignore syntax, applied as if at the source root, below
    /// every rules file). lsyncd's `exclude` and the lines of `excludeFrom`.
    public var excludes: [String] = []
    /// rsync filter rules ("- pattern", "+ pattern") from lsyncd's `filter`/`filterFrom`.
    public var filters: [String] = []
    public var rsync = RsyncOptions()
    public var ssh = SSHOptions()
    public var backend: Backend = .auto
    /// Seconds between syncs of a file that is written but not closed.
    public var openFileInterval: Double = 2
    /// Per-directory rules file name (gitignore syntax).
    public var rulesFile: String = ".fansyncignore"
    /// Also read `.gitignore` files.
    public var useGitignore: Bool = false
    /// Delete on the backup what a rules change newly excludes.
    public var deleteExcluded: Bool = false

    /// The patterns that apply below every rules file, in gitignore order (the last match
    /// wins): `excludes`, then lsyncd's filter rules mapped to patterns. rsync's filter
    /// rules ("- pat" excludes, "+ pat" includes) let the first match win, so they go in
    /// reverse order, "+" as a negation. The daemon and `check-ignore --config` both use it.
    public var globalPatterns: [String] {
        var patterns = excludes
        for rule in filters.reversed() {
            let t = rule.trimmingLeadingSpaces
            if t.hasPrefix("- ") { patterns.append(String(t.dropFirst(2))) }
            else if t.hasPrefix("+ ") { patterns.append("!" + t.dropFirst(2)) }
        }
        return patterns
    }

    /// The rules file names to read in every directory, highest priority first.
    public var rulesFileNames: [[UInt8]] {
        var names: [[UInt8]] = rulesFile.isEmpty ? [] : [Array(rulesFile.utf8)]
        if useGitignore { names.append(Array(".gitignore".utf8)) }
        return names
    }
    /// Where this mirror keeps its index and queue (nil: the daemon's default state directory).
    public var stateDir: [UInt8]? = nil
    /// Keep an index of what the backup holds (content hashes, dedup, restarts that send
    /// only what differs); false runs on rsync alone (`--no-index`).
    public var useIndex: Bool = true
    /// A start or batch that would delete more than this share of what the backup holds
    /// waits for `fansync confirm-deletes` (0…1).
    public var maxDeleteShare: Double = 0.5
    /// Files larger than this (bytes) go to the large-file workers, in chunks.
    public var largeFileThreshold: Int64 = 64 << 20
    /// How batches reach a local target: copied by fansync itself (`.auto`, when the rsync
    /// options are ones it reproduces) or always by rsync.
    public var localCopy: LocalCopyMode = .auto

    public init(name: String, source: [UInt8], target: Target) {
        self.name = name
        self.source = source
        self.target = target
    }
}

public enum Backend: String, Sendable, Equatable, CaseIterable {
    case auto, fanotify, inotify
}

/// `localCopy`: `auto` copies a local target's batches in the daemon (what rsync -a would
/// do, without an rsync per batch) unless an rsync option asks for rsync; `rsync` always
/// runs rsync. Recursive transfers (the initial sync) are rsync's either way.
public enum LocalCopyMode: String, Sendable, Equatable, CaseIterable {
    case auto, rsync
}

/// lsyncd's `delete`: true, false, 'startup' (only the initial sync deletes) or 'running'
/// (only live changes delete).
public enum DeleteMode: String, Sendable, Equatable {
    case always, never, startup, running

    public var onStartup: Bool { self == .always || self == .startup }
    public var whileRunning: Bool { self == .always || self == .running }
}

/// Where the backup lives.
public enum Target: Sendable, Equatable, CustomStringConvertible {
    /// A directory on this machine (absolute path bytes).
    case local(path: [UInt8])
    /// A directory on another host, reached with the system's ssh.
    case ssh(SSHTarget)

    public var description: String {
        switch self {
        case .local(let path): return SyncPath.displayString(path)
        case .ssh(let t): return t.description
        }
    }
}

public struct SSHTarget: Sendable, Equatable, CustomStringConvertible {
    public var user: String?
    public var host: String
    public var port: Int?
    /// The directory on the host; relative paths are relative to the login directory.
    public var directory: [UInt8]

    public init(user: String?, host: String, port: Int?, directory: [UInt8]) {
        self.user = user
        self.host = host
        self.port = port
        self.directory = directory
    }

    /// `user@host` or `host`, as ssh takes it.
    public var destination: String { user.map { "\($0)@\(host)" } ?? host }

    /// `user@[v6addr]` or `user@host`: the host part of an rsync remote spec (`\(rsyncHost):dir`).
    public var rsyncHost: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return user.map { "\($0)@\(h)" } ?? h
    }

    /// `host:dir`, or `ssh://host:port/dir` when a port is set (`ssh://host:port/~/dir` for a
    /// directory relative to the login directory); `TargetParser.parse` reads it back.
    public var description: String {
        let dir = SyncPath.displayString(directory)
        if let port {
            if directory.first == UInt8(ascii: "/") { return "ssh://\(rsyncHost):\(port)\(dir)" }
            if directory == [UInt8(ascii: ".")] { return "ssh://\(rsyncHost):\(port)/~" }
            return "ssh://\(rsyncHost):\(port)/~/\(dir)"
        }
        return "\(rsyncHost):\(dir)"
    }
}

/// rsync options with lsyncd's names (`rsync = { ... }`).
public struct RsyncOptions: Sendable, Equatable {
    public var binary: String = "rsync"
    public var archive: Bool = true
    public var compress: Bool = false
    public var verbose: Bool = false
    /// KiB per second, as rsync's `--bwlimit`.
    public var bwlimit: Int? = nil
    // Individual flags (meaningful when `archive` is false, or to add -H, -A, -X, ...).
    public var perms: Bool = false
    public var owner: Bool = false
    public var group: Bool = false
    public var times: Bool = false
    public var links: Bool = false
    public var hardLinks: Bool = false
    public var acls: Bool = false
    public var xattrs: Bool = false
    public var checksum: Bool = false
    public var sparse: Bool = false
    public var wholeFile: Bool = false
    public var inplace: Bool = false
    /// Extra arguments appended verbatim (lsyncd's `_extra`).
    public var extra: [String] = []
    /// The user's remote shell command (lsyncd's `rsync.rsh`, rsync's `-e`), nil for ssh with
    /// `SSHOptions`.
    public var rsh: String? = nil

    public init() {}
}

/// ssh options with lsyncd's names (`ssh = { ... }`) plus `--ssh-option`.
public struct SSHOptions: Sendable, Equatable {
    public var binary: String = "ssh"
    public var port: Int? = nil
    public var identityFile: String? = nil
    /// Values for `-o` (`"StrictHostKeyChecking=yes"`).
    public var options: [String] = []
    /// Extra arguments appended verbatim.
    public var extra: [String] = []

    public init() {}
}

/// Settings that belong to the daemon rather than to one mirror (lsyncd's `settings {}`).
public struct DaemonSettings: Sendable, Equatable {
    public var logFile: String? = nil
    public var statusFile: String? = nil
    public var statusInterval: Double = 1
    public var pidFile: String? = nil
    public var verbose: Bool = false
    /// lsyncd's `nodaemon`: fansync never forks into the background, so this only records it.
    public var nodaemon: Bool = false
    /// lsyncd's `insist`: keep running when a target is unreachable at start (fansync always
    /// retries with back-off; recorded for status).
    public var insist: Bool = false
    /// lsyncd's `inotifyMode`, used by the inotify backend.
    public var inotifyMode: InotifyMode = .closeWrite
    /// lsyncd's global `maxProcesses`/`maxDelays` (also the default of every sync{}).
    public var maxProcesses: Int? = nil
    public var maxDelays: Int? = nil
    /// Syslog identity and facility (lsyncd's `logident`, `logfacility`).
    public var logIdent: String? = nil
    public var logFacility: String? = nil
    /// Where mirrors keep their index and queue (one subdirectory per mirror name) unless a
    /// sync{} sets its own `stateDir`; nil = the daemon's built-in default.
    public var stateDir: [UInt8]? = nil
    /// `--allow-mass-delete`: no delete waits for `fansync confirm-deletes` in this run.
    public var allowMassDelete: Bool = false

    public init() {}
}

/// Which inotify events count as a change (lsyncd's `inotifyMode`).
public enum InotifyMode: String, Sendable, Equatable, CaseIterable {
    case modify = "Modify"
    case closeWrite = "CloseWrite"
    case closeWriteOrModify = "CloseWrite or Modify"
}
