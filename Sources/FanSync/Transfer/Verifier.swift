import CLinux
import Glibc

/// Compares a mirror's source and backup by content, and repairs what differs.
///
/// The comparison is a dry run of the mirror's own rsync (its options, its remote shell,
/// its exact exclude list) with `--checksum --delete` and itemized output: each side's rsync
/// hashes its own files (XXH128 when both rsyncs have it, as rsync negotiates), so over ssh
/// the backup is hashed on the backup host and no file data travels. Excluded paths are
/// compared on neither side. When the mirror never deletes (`delete = false`), files only
/// on the backup are expected and not reported.
public final class Verifier {
    public let config: MirrorConfig
    let transport: Transport
    let rules: RulesEngine
    let log: Logger

    public struct VerifyError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// What one comparison found.
    public struct Report: Sendable {
        public var differences: [VerifyDifference] = []
        /// Entries rsync compared (its "Number of files").
        public var compared: Int = 0
        /// The files compared in a sample run (nil: the whole tree).
        public var sampled: [SyncPath]? = nil
        /// Regular files on the source the sample was drawn from.
        public var population: Int = 0
        /// Whether files only on the backup were looked for.
        public var extrasChecked = true
        /// rsync could not compare everything (unreadable files): why. The differences
        /// found are still reported.
        public var incomplete: String? = nil
    }

    public init(config: MirrorConfig, log: Logger) throws {
        // The repairs must see content, not size and time: a file changed on the backup
        // with its size and mtime kept is sent only with --checksum.
        var config = config
        config.rsync.checksum = true
        self.config = config
        self.log = log
        transport = try Transport(config: config)
        rules = Mirror.makeRules(config, log: log)
    }

    public func close() { transport.close() }

    var deletes: Bool { config.delete != .never }

    /// Checks what can be checked before rsync runs: the source is a directory, and a
    /// local backup directory exists.
    public func checkEnds() throws {
        var st = stat()
        guard withCPath(config.source, { stat($0, &st) }) == 0 else {
            throw VerifyError("the source \(SyncPath.displayString(config.source)) cannot be read: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw VerifyError("the source \(SyncPath.displayString(config.source)) is not a directory")
        }
        if case .local(let path) = config.target {
            guard withCPath(path, { stat($0, &st) }) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                throw VerifyError("the backup directory \(SyncPath.displayString(path)) does not exist or is not a directory")
            }
        }
    }

    /// Compares the whole tree, or only `sample` (paths of regular files).
    public func compare(sample: [SyncPath]? = nil) throws -> Report {
        try checkEnds()
        var report = Report()
        var argv: [[UInt8]]
        var input: [UInt8] = []
        var excludeFile: String? = nil
        defer { if let excludeFile { unlink(excludeFile) } }
        if let sample {
            report.sampled = sample
            report.extrasChecked = false
            for p in sample { input += p.bytes; input.append(0) }
            if sample.isEmpty { return report }
            argv = transport.batchArguments(deletes: false)
        } else {
            report.extrasChecked = deletes
            let excluded: [ExcludedEntry]
            do {
                excluded = try rules.excludedTopmostEntries(under: .root)
            } catch {
                throw VerifyError("cannot walk the source: \(error)")
            }
            let patterns = RulesEngine.rsyncExcludeFile(excluded, base: .root)
            if !patterns.isEmpty { excludeFile = try writeTemporary(patterns) }
            argv = transport.treeArguments(.root, deletes: deletes, excludeFile: excludeFile)
        }
        argv = verifyArguments(argv)
        if log.minimum <= .debug { log.debug("\(config.name): \(argv.map { SyncPath.displayString($0) }.joined(separator: " "))") }
        transport.ensureMaster()
        let result: Subprocess.Result
        do {
            result = try Subprocess.run(argv, input: input)
        } catch {
            throw VerifyError("\(error)")
        }
        switch result.status {
        case 0, 24:   // 24: files vanished on a live source while rsync listed them
            break
        case 23:
            let lines = result.errorText.split(separator: "\n").filter { !$0.isEmpty }
            report.incomplete = "rsync could not compare every file (status 23): \(lines.suffix(3).joined(separator: " / "))"
        default:
            switch transport.classify(status: result.status, errorText: result.errorText, program: "rsync") {
            case .failed(let why, _, _), .fatal(let why): throw VerifyError(why)
            case .done: throw VerifyError("rsync exited with status \(result.status)")
            }
        }
        guard let compared = Self.numberOfFiles(result.output) else {
            // -q among the mirror's rsync options, or an rsync that prints no statistics: no
            // itemized line cannot be taken to mean no difference.
            throw VerifyError("rsync printed no statistics, so its silence cannot be read as \"no difference\" (is --quiet among the rsync options?)")
        }
        report.compared = compared
        let differences: [VerifyDifference]
        do {
            differences = try ItemizeParser.parse(result.output)
        } catch {
            throw VerifyError("\(error)")
        }
        if differences.contains(where: { $0.path.isRoot && $0.kind == .missing }) {
            throw VerifyError("the backup directory \(config.target) does not exist")
        }
        // By path (a directory before its entries), not in rsync's order (a directory's
        // deletions first).
        let order = Dictionary(uniqueKeysWithValues: VerifyDifference.Kind.allCases.enumerated().map { ($1, $0) })
        report.differences = differences.sorted { a, b in
            a.path != b.path ? a.path < b.path : order[a.kind]! < order[b.kind]!
        }
        return report
    }

    /// The mirror's argv with the comparison's options added after the user's (so that they
    /// win) and before SOURCE and TARGET. Left out: --quiet, which would silence the
    /// itemized list, and --delete-excluded: excluded paths are compared on neither side
    /// (a repair could not delete them: a batch sends what the source has).
    func verifyArguments(_ argv: [[UInt8]]) -> [[UInt8]] {
        var args = argv
        let ends = Array(args.suffix(2))
        args.removeLast(2)
        let dropped = ["-q", "--quiet", "--delete-excluded"].map { Array($0.utf8) }
        args.removeAll { dropped.contains($0) }
        args += ["--dry-run", "--checksum", "--info=stats2", "--out-format=\(ItemizeParser.outFormat)"].map { Array($0.utf8) }
        return args + ends
    }

    /// rsync's "Number of files: 1,234 (reg: ...)".
    static func numberOfFiles(_ output: [UInt8]) -> Int? {
        let prefix = Array("Number of files:".utf8)
        for line in output.split(separator: UInt8(ascii: "\n")) where line.starts(with: prefix) {
            let digits = line.dropFirst(prefix.count).drop { $0 == UInt8(ascii: " ") }
                .prefix { ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: ",") }.filter { $0 != UInt8(ascii: ",") }
            return Int(String(decoding: digits, as: UTF8.self))
        }
        return nil
    }

    func writeTemporary(_ bytes: [UInt8]) throws -> String {
        var template = Array("/tmp/fansync-verify-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 { throw VerifyError("cannot write the exclude list: \(String(cString: strerror(errno)))") }
        var off = 0
        while off < bytes.count {
            let w = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
            if w <= 0 {
                let code = errno
                Glibc.close(fd)
                throw VerifyError("cannot write the exclude list: \(String(cString: strerror(code)))")
            }
            off += w
        }
        Glibc.close(fd)
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    // MARK: Sample

    /// Up to `count` regular files of the source chosen at random (every file equally
    /// likely), not excluded by the mirror's rules, and how many there were to choose from.
    public func sample(_ count: Int) throws -> (paths: [SyncPath], population: Int) {
        try checkEnds()
        var chosen: [SyncPath] = []
        var seen = 0
        var generator = SystemRandomNumberGenerator()
        try walkRegularFiles { path in
            seen += 1
            if chosen.count < count {
                chosen.append(path)
            } else {
                let j = Int.random(in: 0..<seen, using: &generator)
                if j < count { chosen[j] = path }
            }
        }
        return (chosen.sorted(), seen)
    }

    /// Every regular file under the source that the rules do not exclude; never follows a
    /// symlink, never enters an excluded directory.
    func walkRegularFiles(_ body: (SyncPath) -> Void) throws {
        let rootFD = RulesEngine.openDirectory(config.source)
        guard rootFD >= 0 else { throw VerifyError("cannot read the source \(SyncPath.displayString(config.source)): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(rootFD) }
        var stack: [SyncPath] = [.root]
        while let current = stack.popLast() {
            let fd = current.isRoot ? openat(rootFD, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                : RulesEngine.openBeneath(rootFD, current.bytes, flags: O_RDONLY | O_DIRECTORY)
            if fd < 0 { continue }   // vanished, or replaced by a symlink, meanwhile
            guard let dir = fdopendir(fd) else { Glibc.close(fd); continue }
            var entries: [(SyncPath, Bool)] = []
            while let entry = readdir(dir) {
                let name: [UInt8] = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    let b = raw.bindMemory(to: UInt8.self)
                    return Array(b[0..<(b.firstIndex(of: 0) ?? b.count)])
                }
                if name == [46] || name == [46, 46] { continue }
                var type = Int32(entry.pointee.d_type)
                if type == Int32(DT_UNKNOWN) {
                    var st = stat()
                    let rc = (name + [0]).withUnsafeBufferPointer {
                        $0.withMemoryRebound(to: CChar.self) { fstatat(dirfd(dir), $0.baseAddress!, &st, AT_SYMLINK_NOFOLLOW) }
                    }
                    if rc != 0 { continue }
                    type = (st.st_mode & S_IFMT) == S_IFDIR ? Int32(DT_DIR) : (st.st_mode & S_IFMT) == S_IFREG ? Int32(DT_REG) : Int32(DT_UNKNOWN)
                }
                guard type == Int32(DT_DIR) || type == Int32(DT_REG) else { continue }
                entries.append((current.appending(name), type == Int32(DT_DIR)))
            }
            closedir(dir)
            for (path, isDirectory) in entries where !rules.isExcluded(path, isDirectory: isDirectory) {
                if isDirectory { stack.append(path) } else { body(path) }
            }
        }
    }

    // MARK: Repair

    /// What `fix` sent.
    public struct FixSummary: Sendable {
        public var paths = 0
        public var files = 0
        public var deleted = 0
        public var bytes: Int64 = 0
    }

    /// Sends the differences with the mirror's own transfer, in batches: files missing or
    /// different are sent, metadata is set, files only on the backup are deleted.
    public func fix(_ differences: [VerifyDifference], batchSize: Int = 5000) throws -> FixSummary {
        // A directory deleted goes with everything in it: its entries need not be listed.
        let extraDirectories = Set(differences.filter { $0.kind == .extra && $0.isDirectory }.map(\.path))
        var seen = Set<SyncPath>()
        var paths: [SyncPath] = []
        for d in differences where seen.insert(d.path).inserted {
            if d.kind == .extra {
                var parent = d.path.parent
                var covered = false
                while !parent.isRoot {
                    if extraDirectories.contains(parent) { covered = true; break }
                    parent = parent.parent
                }
                if covered { continue }
            }
            paths.append(d.path)
        }
        var summary = FixSummary()
        paths.sort()
        var start = 0
        while start < paths.count {
            let batch = Array(paths[start..<min(paths.count, start + batchSize)])
            try check(transport.sync(batch, deletes: deletes), into: &summary)
            summary.paths += batch.count
            start += batchSize
        }
        return summary
    }

    private func check(_ outcome: TransferOutcome, into summary: inout FixSummary) throws {
        switch outcome {
        case .done(let files, let bytes, let deleted):
            summary.files += files
            summary.bytes += bytes
            summary.deleted += deleted
        case .failed(let why, _, _), .fatal(let why):
            throw VerifyError("the repair failed: \(why)")
        }
    }
}
