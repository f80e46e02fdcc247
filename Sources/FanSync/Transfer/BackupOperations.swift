import Glibc

/// Work done on the backup itself, before a batch's rsync, so that the rsync finds the
/// backup already holding the content and sends no file: a delete and a create of the
/// same content become a rename, a new file whose content the backup holds elsewhere
/// becomes a copy there, and a file saved again unchanged gets its new mtime.
///
/// Every operation is best effort: the rsync that follows lists the same paths and is the
/// authority on the result (a failed rename or copy just means rsync sends the file, and
/// a rename's source, missing on the source, is deleted by `--delete-missing-args`).
public struct BackupOperations: Sendable, Equatable {
    public struct Move: Sendable, Equatable {
        public var from: SyncPath
        public var to: SyncPath
        public init(from: SyncPath, to: SyncPath) { self.from = from; self.to = to }
    }
    public struct Times: Sendable, Equatable {
        public var path: SyncPath
        public var mtimeNs: Int64
        public init(path: SyncPath, mtimeNs: Int64) { self.path = path; self.mtimeNs = mtimeNs }
    }

    /// Applied first, in order.
    public var renames: [Move] = []
    /// Applied after the renames: `from` holds the content then.
    public var copies: [Move] = []
    /// The source's mtime, set last (without following symlinks) so rsync's quick check
    /// (size and mtime) finds the file unchanged.
    public var times: [Times] = []

    public init() {}

    public var isEmpty: Bool { renames.isEmpty && copies.isEmpty && times.isEmpty }

    /// What was done.
    public struct Result: Sendable, Equatable {
        public var renamed = 0
        public var copied = 0
    }
}

extension Transport {
    /// Applies `ops` on the backup: with syscalls for a local target (`LocalCopier`: nothing
    /// opened through a symlink), as one `sh` script read from stdin over ssh (one
    /// connection, whatever the number of operations; every name single-quoted). An
    /// unreachable target is `.failed`; failed operations are not errors.
    func apply(_ ops: BackupOperations, onStart: ((pid_t) -> Void)? = nil) -> (BackupOperations.Result, TransferOutcome?) {
        var result = BackupOperations.Result()
        guard !ops.isEmpty else { return (result, nil) }
        switch config.target {
        case .local:
            guard let local else { return (result, nil) }
            for m in ops.renames where local.renameInTarget(m.from, m.to) == nil { result.renamed += 1 }
            for m in ops.copies where local.copyInTarget(m.from, m.to) { result.copied += 1 }
            for t in ops.times { local.setMtimeInTarget(t.path, t.mtimeNs) }
            return (result, nil)
        case .ssh(let t):
            let script = remoteScript(ops, directory: t.directory)
            ensureMaster()
            let run: Subprocess.Result
            do {
                run = try Subprocess.run(remoteShell(t) + [Array("sh -s".utf8)], input: script, onStart: onStart)
            } catch {
                return (result, .fatal("\(error)"))
            }
            if run.status == 255 { return (result, classify(status: 255, errorText: run.errorText, program: "ssh")) }
            // The script's last line: "fansync-ops RENAMED COPIED".
            if let line = run.outputText.split(separator: "\n").last(where: { $0.hasPrefix("fansync-ops ") }) {
                let n = line.split(separator: " ").dropFirst().compactMap { Int($0) }
                if n.count == 2 { result.renamed = n[0]; result.copied = n[1] }
            }
            return (result, nil)
        }
    }

    /// The remote command prefix: our ssh (through the master), or the config's rsync.rsh
    /// split as rsync splits it, then the destination.
    func remoteShell(_ t: SSHTarget) -> [[UInt8]] {
        let shell = config.rsync.rsh.map { splitCommandLine($0) + [t.destination] } ?? (sshArguments + ["--", t.destination])
        return shell.map { Array($0.utf8) }
    }

    /// The ssh form of `ops`: POSIX sh, every name single-quoted, each step independent.
    func remoteScript(_ ops: BackupOperations, directory: [UInt8]) -> [UInt8] {
        var s: [UInt8] = []
        func line(_ parts: [UInt8]...) { for p in parts { s += p }; s.append(UInt8(ascii: "\n")) }
        let txt = { (t: String) in Array(t.utf8) }
        if !directory.isEmpty { line(txt("cd -- "), shellQuote(directory), txt(" || exit 3")) }
        line(txt("r=0; c=0"))
        func mkdirParent(_ p: SyncPath) -> [UInt8] {
            p.parent.isRoot ? txt("true") : txt("mkdir -p -- ") + shellQuote(p.parent.bytes)
        }
        for m in ops.renames {
            line(txt("{ "), mkdirParent(m.to), txt(" && mv -f -T -- "), shellQuote(m.from.bytes), txt(" "), shellQuote(m.to.bytes),
                 txt("; } 2>/dev/null && r=$((r+1))"))
        }
        for (i, m) in ops.copies.enumerated() {
            let tmp = shellQuote(Self.copyTemporary(for: m.to, serial: i).bytes)
            line(txt("{ "), mkdirParent(m.to), txt(" && cp -P -p --reflink=auto -T -- "), shellQuote(m.from.bytes), txt(" "), tmp,
                 txt(" && mv -f -T -- "), tmp, txt(" "), shellQuote(m.to.bytes), txt("; } 2>/dev/null && c=$((c+1)) || rm -f -- "), tmp)
        }
        for t in ops.times where t.mtimeNs >= 0 {
            let stamp = "@\(t.mtimeNs / 1_000_000_000).\(String(t.mtimeNs % 1_000_000_000).leftPadded(to: 9))"
            line(txt("touch -h -c -m -d \(stamp) -- "), shellQuote(t.path.bytes), txt(" 2>/dev/null"))
        }
        line(txt("echo \"fansync-ops $r $c\""))
        return s
    }

    /// A name next to `to` for a copy in progress (so a partial copy never has the final
    /// name; rsync's own temporary files look alike).
    static func copyTemporary(for to: SyncPath, serial: Int) -> SyncPath {
        to.parent.appending(Array(".fansync-copy.\(getpid()).\(serial).tmp".utf8))
    }

}

extension Transport {
    /// What a start from the index checks on the backup before trusting it: the identity of
    /// the backup's root directory ("dev:ino") and the sizes of a few files (-1: missing).
    /// nil when the backup cannot be reached (the transfers then retry on their own).
    func probeBackup(_ samples: [SyncPath]) -> (root: String, sizes: [Int64])? {
        switch config.target {
        case .local(let root):
            var st = stat()
            guard withCPath(root, { stat($0, &st) }) == 0 else { return ("missing", samples.map { _ in -1 }) }
            let identity = "\(st.st_dev):\(st.st_ino)"
            let sizes = samples.map { p -> Int64 in
                withCPath(joinPath(root, p), { lstat($0, &st) }) == 0 && (st.st_mode & S_IFMT) == S_IFREG ? Int64(st.st_size) : -1
            }
            return (identity, sizes)
        case .ssh(let t):
            let dir = t.directory.isEmpty ? [UInt8(ascii: ".")] : t.directory
            var script = Array("cd -- ".utf8) + shellQuote(dir) + Array(" || { echo missing; exit 0; }\nstat -c '%d:%i' -- .\n".utf8)
            for p in samples {
                script += Array("[ -f ".utf8) + shellQuote(p.bytes) + Array(" ] && [ ! -h ".utf8) + shellQuote(p.bytes)
                    + Array(" ] && stat -c %s -- ".utf8) + shellQuote(p.bytes) + Array(" || echo -1\n".utf8)
            }
            ensureMaster()
            guard let r = try? Subprocess.run(remoteShell(t) + [Array("sh -s".utf8)], input: script), r.status == 0 else { return nil }
            let lines = r.outputText.split(separator: "\n").map(String.init)
            guard let first = lines.first else { return nil }
            if first == "missing" { return ("missing", samples.map { _ in -1 }) }
            let sizes = lines.dropFirst().map { Int64($0) ?? -1 }
            guard sizes.count == samples.count else { return nil }
            return (first, sizes)
        }
    }
}
