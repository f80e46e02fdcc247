import Glibc

/// How a transfer ended, as far as the mirror needs to know.
public enum TransferOutcome: Sendable, Equatable {
    case done(files: Int, bytes: Int64, deleted: Int = 0)
    /// Worth retrying later: the target is unreachable, a disk is full, a file could not be read.
    case failed(String, targetUnreachable: Bool, transient: Bool = false)
    /// Never worth retrying until a person acts (a changed host key).
    case fatal(String)
}

/// Moves changes to one target with the system's rsync (and ssh), never through a shell.
public final class Transport: Sendable {
    public let config: MirrorConfig
    /// Private directory for the ssh ControlMaster socket (ssh targets only).
    private let controlDirectory: String?
    /// A local target's tree: renames and copies on it, and its batches when fansync copies
    /// them itself (`copier`, see `LocalCopier`).
    let local: LocalCopier?
    private let copiesBatches: Bool
    var copier: LocalCopier? { copiesBatches ? local : nil }

    public init(config: MirrorConfig) throws {
        self.config = config
        if case .local(let path) = config.target {
            local = LocalCopier(source: config.source, target: path)
        } else {
            local = nil
        }
        copiesBatches = LocalCopier.copiesBatches(of: config)
        // A user's own remote shell (lsyncd's rsync.rsh) is used as it is, without our master.
        if case .ssh = config.target, config.rsync.rsh == nil {
            var template = Array("/tmp/fansync-ssh-XXXXXX".utf8CString)
            guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                throw TransportError("cannot create a private directory for ssh's control socket: \(String(cString: strerror(errno)))")
            }
            controlDirectory = String(cString: dir)
        } else {
            controlDirectory = nil
        }
    }

    public struct TransportError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    // MARK: Arguments

    /// The ssh master connection: one per target, a child of the daemon (not ssh's own
    /// ControlPersist background process, which would hold our pipes open).
    private let master = Monitor<SSHMaster?>(nil)

    /// The ssh command line (without destination), shared by rsync's `-e` and by renames.
    /// Each command goes through the master connection when it is up, and connects on its
    /// own when it is not.
    public var sshArguments: [String] {
        var args = [config.ssh.binary]
        if let controlDirectory {
            args += ["-o", "ControlMaster=no", "-o", "ControlPath=\(controlDirectory)/cm"]
        }
        args += baseSSHOptions
        return args
    }

    private var baseSSHOptions: [String] {
        var args = ["-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
        if case .ssh(let t) = config.target, let port = t.port ?? config.ssh.port { args += ["-p", String(port)] }
        else if let port = config.ssh.port { args += ["-p", String(port)] }
        if let id = config.ssh.identityFile { args += ["-i", id] }
        for o in config.ssh.options { args += ["-o", o] }
        // Defaults the user may override (ssh keeps the first value it reads): an
        // unreachable host fails in seconds and is retried, rather than hanging a worker.
        args += ["-o", "ConnectTimeout=15"]
        args += config.ssh.extra
        return args
    }

    /// Starts the master connection if it is not running; returns at once when it is.
    /// Waits up to 10 s for it to come up; a master that cannot connect is not an error
    /// here: the transfer's own ssh reports why.
    func ensureMaster() {
        guard let controlDirectory, case .ssh(let t) = config.target else { return }
        master.withLock { current in
            if let m = current {
                if !m.hasExited { return }
                m.wait()
            }
            let socket = controlDirectory + "/cm"
            unlink(socket)
            let argv = [config.ssh.binary, "-M", "-N", "-o", "ControlPersist=no", "-o", "ControlPath=\(socket)"]
                + baseSSHOptions + ["--", t.destination]
            let m = SSHMaster(argv, errorPath: controlDirectory + "/master.log")
            current = m
            let deadline = monotonicNow() + 10
            var st = stat()
            while monotonicNow() < deadline && !m.hasExited {
                if stat(socket, &st) == 0 { return }
                usleep(10_000)
            }
        }
    }

    /// rsync's `-e` value: each argument quoted so that rsync's splitter keeps it whole.
    var rsyncShell: String {
        sshArguments.map { arg in
            arg.allSatisfy({ $0.isLetter || $0.isNumber || "-_=./%:@,+".contains($0) }) ? arg : "\"" + arg.replacingOccurrences("\\", "\\\\").replacingOccurrences("\"", "\\\"") + "\""
        }.joined(separator: " ")
    }

    /// rsync's options common to every transfer of this mirror.
    public var commonRsyncArguments: [String] {
        let r = config.rsync
        var args = [r.binary]
        if r.archive { args.append("--archive") }
        if r.perms { args.append("--perms") }
        if r.owner { args.append("--owner") }
        if r.group { args.append("--group") }
        if r.times { args.append("--times") }
        if r.links { args.append("--links") }
        if r.hardLinks { args.append("--hard-links") }
        if r.acls { args.append("--acls") }
        if r.xattrs { args.append("--xattrs") }
        if r.checksum { args.append("--checksum") }
        if r.sparse { args.append("--sparse") }
        if r.wholeFile { args.append("--whole-file") }
        if r.inplace { args.append("--inplace") }
        if r.compress { args.append("--compress") }
        if r.verbose { args.append("--verbose") }
        if let bw = r.bwlimit { args.append("--bwlimit=\(bw)") }
        args += ["--stats", "--no-human-readable"]
        if case .ssh = config.target {
            // --protect-args: paths go to the remote rsync inside the protocol, not through
            // the remote shell (which would drop a newline in a name, whatever the quoting).
            args += ["--protect-args", "-e", config.rsync.rsh ?? rsyncShell]
        }
        return args
    }

    /// The user's extra arguments, after ours so that they can override them. Deletes are
    /// the mirror's business: a `--delete` in the extras sets the delete mode (see the
    /// config); it is not passed to batches that list their paths.
    var extraRsyncArguments: [[UInt8]] {
        config.rsync.extra.filter { $0 != "--delete" }.map { Array($0.utf8) }
    }

    /// `SRC/` or `SRC/sub/`, as bytes.
    func sourceArgument(_ sub: SyncPath) -> [UInt8] {
        joinPath(config.source, sub) + [UInt8(ascii: "/")]
    }

    /// `DST/`, `DST/sub/` or `host:DIR/sub/`, as bytes.
    func targetArgument(_ sub: SyncPath) -> [UInt8] {
        switch config.target {
        case .local(let path):
            return joinPath(path, sub) + [UInt8(ascii: "/")]
        case .ssh(let t):
            let host = Array(t.rsyncHost.utf8)
            let dir = t.directory.isEmpty ? [UInt8(ascii: ".")] : t.directory
            return host + [UInt8(ascii: ":")] + joinPath(dir, sub) + [UInt8(ascii: "/")]
        }
    }

    /// The argv of a batch transfer: paths listed on stdin, NUL-separated.
    public func batchArguments(deletes: Bool) -> [[UInt8]] {
        var args = commonRsyncArguments.map { Array($0.utf8) }
        args += ["--files-from=-", "--from0", "--relative"].map { Array($0.utf8) }
        if deletes {
            // --force: a directory deleted on the source goes even if the backup still
            // holds files in it (without it rsync skips it and still exits 0).
            args += ["--delete-missing-args", "--force"].map { Array($0.utf8) }
        } else {
            args.append(Array("--ignore-missing-args".utf8))
        }
        args += extraRsyncArguments
        args.append(sourceArgument(.root))
        args.append(targetArgument(.root))
        return args
    }

    /// The argv of a recursive transfer of `sub`.
    public func treeArguments(_ sub: SyncPath, deletes: Bool, excludeFile: String?) -> [[UInt8]] {
        var args = commonRsyncArguments.map { Array($0.utf8) }
        args += ["--recursive", "--mkpath"].map { Array($0.utf8) }
        if deletes { args += ["--delete", "--force"].map { Array($0.utf8) } }
        if config.deleteExcluded && deletes { args.append(Array("--delete-excluded".utf8)) }
        if let excludeFile { args += [Array("--from0".utf8), Array("--exclude-from=\(excludeFile)".utf8)] }
        args += extraRsyncArguments
        args.append(sourceArgument(sub))
        args.append(targetArgument(sub))
        return args
    }

    // MARK: Running

    /// How batches travel, for the log.
    public var batchDescription: String {
        guard case .local = config.target else { return "batches and trees by rsync over ssh" }
        if copier != nil { return "batches copied by fansync (as rsync -a), trees by rsync" }
        if config.localCopy == .rsync { return "batches and trees by rsync (localCopy = rsync)" }
        return "batches and trees by rsync (\(LocalCopier.optionNeedingRsync(config.rsync) ?? "") needs it)"
    }

    /// Sends `paths` (relative to the source root) to the backup. `onStart` gets rsync's
    /// pid, or 0 when the daemon copies the batch itself; `abandon` stops such a copy (the
    /// daemon is stopping and its grace period is over).
    /// `record`: what the copier made, for the index (local copies only).
    func sync(_ paths: [SyncPath], deletes: Bool, onStart: ((pid_t) -> Void)? = nil,
              abandon: () -> Bool = { false }, record: LocalCopier.Record? = nil, quiet: OwnWrites? = nil) -> TransferOutcome {
        if let copier {
            onStart?(0)
            // It handles what `prepared` does for rsync itself: a path gone or under a file
            // is deleted; the file that replaced a directory has its own event.
            return copier.sync(paths, deletes: deletes, abandon: abandon, record: record, quiet: quiet)
        }
        var list: [UInt8] = []
        for p in prepared(paths) {
            // --files-from with --relative: "dir/./name" is not needed; a path is itself.
            list += p.isRoot ? [UInt8(ascii: ".")] : p.bytes
            list.append(0)
        }
        return runRsync(batchArguments(deletes: deletes), input: list, onStart: onStart)
    }

    /// The batch as rsync can take it. rsync's --delete-missing-args only understands a path
    /// that is missing (ENOENT): a path under something that is now a file (ENOTDIR) is
    /// replaced by that file, and a path under a directory deleted in the same batch is left
    /// to that directory's delete (rsync would report it vanished).
    func prepared(_ paths: [SyncPath]) -> [SyncPath] {
        let set = Set(paths)
        var out: [SyncPath] = []
        var added = Set<SyncPath>()
        out.reserveCapacity(paths.count)
        var missing = Set<SyncPath>()
        var st = stat()
        for p in paths.sorted() {
            if withCPath(joinPath(config.source, p), { lstat($0, &st) }) == 0 { out.append(p); continue }
            if errno == ENOTDIR {
                var a = p.parent
                while !a.isRoot {
                    if withCPath(joinPath(config.source, a), { lstat($0, &st) }) == 0 {
                        if (st.st_mode & S_IFMT) != S_IFDIR && !set.contains(a) && added.insert(a).inserted { out.append(a) }
                        break
                    }
                    a = a.parent
                }
                continue
            }
            var a = p.parent
            var covered = false
            while !a.isRoot {
                if missing.contains(a) { covered = true; break }
                a = a.parent
            }
            missing.insert(p)
            if !covered { out.append(p) }
        }
        return out
    }

    /// Sends the subtree `sub` recursively; excluded paths (NUL-separated rsync patterns) are
    /// neither sent nor deleted.
    public func syncTree(_ sub: SyncPath, deletes: Bool, excludePatterns: [UInt8], onStart: ((pid_t) -> Void)? = nil) -> TransferOutcome {
        var file: String? = nil
        if !excludePatterns.isEmpty {
            let dir = controlDirectory ?? "/tmp"
            var template = Array("\(dir)/excludes-XXXXXX".utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            if fd < 0 { return .failed("cannot write the exclude list: \(String(cString: strerror(errno)))", targetUnreachable: false) }
            _ = excludePatterns.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            Glibc.close(fd)
            file = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        }
        defer { if let file { unlink(file) } }
        return runRsync(treeArguments(sub, deletes: deletes, excludeFile: file), input: [], onStart: onStart)
    }

    func runRsync(_ argv: [[UInt8]], input: [UInt8], onStart: ((pid_t) -> Void)?) -> TransferOutcome {
        ensureMaster()
        let result: Subprocess.Result
        do {
            result = try Subprocess.run(argv, input: input, onStart: onStart)
        } catch {
            return .fatal("\(error)")
        }
        let stats = RsyncStats(parsing: result.outputText)
        switch result.status {
        case 0, 24:   // 24: some files vanished before they could be sent; their events follow.
            return .done(files: stats.files, bytes: stats.bytes, deleted: stats.deleted)
        default:
            return classify(status: result.status, errorText: result.errorText, program: "rsync")
        }
    }

    func classify(status: Int32, errorText: String, program: String) -> TransferOutcome {
        // isNewline: ssh ends its lines with "\r\n", one Character that "\n" does not match.
        let lines = errorText.split(whereSeparator: \.isNewline).filter { !$0.isEmpty }
        let text = lines.suffix(3).joined(separator: " / ")
        let rsyncLines = lines.filter { $0.contains("rsync") || $0.contains("file has vanished") }
        if status == 23 || status == 24, !rsyncLines.isEmpty,
           rsyncLines.allSatisfy({ l in Self.racePhrases.contains { l.contains($0) } }) {
            // Files changed or vanished while rsync read them: their events are queued, or
            // the batch goes again at once; nothing is wrong with the target.
            return .failed("files changed while being sent: \(text)", targetUnreachable: false, transient: true)
        }
        if errorText.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || errorText.contains("Host key verification failed") {
            return .fatal("the ssh host key of \(config.target) is unknown or has changed; check it (ssh-keygen -R / ssh to the host once) and restart: \(text)")
        }
        // 255: ssh could not connect; 10/12/30/35: socket, protocol stream, timeouts.
        let unreachable = [255, 10, 12, 30, 35].contains(status)
        return .failed("\(program) exited with status \(status): \(text)", targetUnreachable: unreachable)
    }

    static let racePhrases = ["file has vanished", "read errors mapping", "some files/attrs were not transferred",
                              "some files vanished before they could be transferred", "failed verification -- update discarded",
                              // A parent turned into a file after the batch was prepared.
                              "failed: Not a directory (20)"]

    /// Renames on the backup. `.done` when renamed; `.failed` with targetUnreachable=false when
    /// the backup cannot rename (it lacks `from`, or `to` is a non-empty directory): the caller
    /// then sends `to` and `from` instead.
    public func rename(from: SyncPath, to: SyncPath) -> TransferOutcome {
        switch config.target {
        case .local:
            if let why = local?.renameInTarget(from, to) { return .failed(why, targetUnreachable: false) }
            return .done(files: 0, bytes: 0)
        case .ssh(let t):
            let dir = t.directory
            var script: [UInt8] = []
            if !dir.isEmpty { script += Array("cd -- ".utf8) + shellQuote(dir) + Array(" && ".utf8) }
            let a = shellQuote(from.bytes), b = shellQuote(to.bytes)
            script += Array("if [ -e ".utf8) + a + Array(" ] || [ -h ".utf8) + a + Array(" ]; then ".utf8)
            if !to.parent.isRoot { script += Array("mkdir -p -- ".utf8) + shellQuote(to.parent.bytes) + Array(" && ".utf8) }
            script += Array("mv -f -T -- ".utf8) + a + [UInt8(ascii: " ")] + b + Array("; else exit 3; fi".utf8)
            ensureMaster()
            // The same remote shell as rsync's.
            let argv = remoteShell(t) + [script]
            let result: Subprocess.Result
            do { result = try Subprocess.run(argv) } catch { return .fatal("\(error)") }
            if result.status == 0 { return .done(files: 0, bytes: 0) }
            if result.status == 255 { return classify(status: 255, errorText: result.errorText, program: "ssh") }
            return .failed("rename \(from) -> \(to) on the backup: exit \(result.status) \(result.errorText)", targetUnreachable: false)
        }
    }

    /// Closes the ssh master connection and removes the private directory.
    public func close() {
        guard let controlDirectory else { return }
        master.withLock { current in
            current?.stop()
            current = nil
        }
        _ = LocalCopier.removeTree(Array(controlDirectory.utf8), in: AT_FDCWD)
    }
}

/// An ssh master process, started by a thread of its own that waits for it to end. A child
/// dies with the thread that started it (`PR_SET_PDEATHSIG`, so that a daemon killed with
/// SIGKILL leaves none behind), and a worker thread ends when the mirror stops or runs
/// fewer workers after a reload, while other transfers still go through the master.
private final class SSHMaster: @unchecked Sendable {
    /// The pid once started (-1: it could not be), and whether it has ended.
    private let state = Monitor<(pid: pid_t, exited: Bool)>((0, false))
    private var thread: WorkerThread! = nil

    init(_ argv: [String], errorPath: String) {
        thread = WorkerThread(name: "ssh master") { [state] in
            let pid = (try? Subprocess.spawnBackground(argv, errorPath: errorPath)) ?? -1
            state.update { $0.pid = pid }
            var status: Int32 = 0
            if pid > 0 { while waitpid(pid, &status, 0) < 0 && errno == EINTR {} }
            state.update { $0.exited = true }
        }
        // Started (or failed) before anyone asks.
        state.wait { s in (s.pid != 0 ? () : nil, nil) }
    }

    var hasExited: Bool { state.withLock { $0.exited } }

    /// Waits for the process (and its thread) to end.
    func wait() { thread.join() }

    /// Asks it to end (SIGTERM) and waits.
    func stop() {
        let pid = state.withLock { $0.exited ? 0 : $0.pid }
        if pid > 0 { kill(pid, SIGTERM) }
        wait()
    }
}

/// Quotes bytes for a POSIX shell: `'...'`, with `'` written as `'\''`. Every byte other than
/// the quote is literal inside single quotes, so no name can be read as anything but itself.
public func shellQuote(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [UInt8(ascii: "'")]
    for b in bytes {
        if b == UInt8(ascii: "'") { out += Array("'\\''".utf8) } else { out.append(b) }
    }
    out.append(UInt8(ascii: "'"))
    return out
}

/// `mkdir -p` for a local path.
@discardableResult
func makeDirectories(_ path: [UInt8]) -> Bool {
    var st = stat()
    if withCPath(path, { stat($0, &st) }) == 0 { return true }
    let parent = SyncPath(bytes: path).parent
    if !parent.bytes.isEmpty && parent.bytes != path { makeDirectories(path.first == UInt8(ascii: "/") ? [UInt8(ascii: "/")] + parent.bytes : parent.bytes) }
    return withCPath(path, { mkdir($0, 0o755) }) == 0 || errno == EEXIST
}

/// What rsync's `--stats` says it did.
struct RsyncStats {
    var files = 0
    var bytes: Int64 = 0
    var deleted = 0

    init(parsing text: String) {
        for line in text.split(separator: "\n") {
            if let v = Self.value(line, "Number of regular files transferred:") { files = Int(v) }
            else if let v = Self.value(line, "Total bytes sent:") { bytes = v }
            else if let v = Self.value(line, "Number of deleted files:") { deleted = Int(v) }
        }
    }

    static func value(_ line: Substring, _ prefix: String) -> Int64? {
        guard line.hasPrefix(prefix) else { return nil }
        // "Number of deleted files: 3 (reg: 2, dir: 1)": the first number is the total.
        let digits = line.dropFirst(prefix.count).drop { $0 == " " }.prefix { $0.isNumber || $0 == "," }.filter { $0 != "," }
        return Int64(digits)
    }
}

extension String {
    func replacingOccurrences(_ a: String, _ b: String) -> String {
        split(separator: a, omittingEmptySubsequences: false).joined(separator: b)
    }
}

/// Splits a command line as rsync splits `-e`: on spaces, with single and double quotes
/// keeping spaces, and a backslash escaping the next character outside single quotes.
public func splitCommandLine(_ text: String) -> [String] {
    var args: [String] = []
    var current = ""
    var inArg = false
    var quote: Character? = nil
    var escape = false
    for c in text {
        if escape { current.append(c); escape = false; inArg = true; continue }
        if let q = quote {
            if c == q { quote = nil } else if c == "\\" && q == "\"" { escape = true } else { current.append(c) }
            continue
        }
        switch c {
        case " ", "\t":
            if inArg { args.append(current); current = ""; inArg = false }
        case "'", "\"":
            quote = c; inArg = true
        case "\\":
            escape = true
        default:
            current.append(c); inArg = true
        }
    }
    if inArg { args.append(current) }
    return args
}
