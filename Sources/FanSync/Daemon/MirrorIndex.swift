import CLinux
import CURing
import Glibc
import Synchronization

/// A mirror's index of what the backup holds (`Index`, in the mirror's state directory),
/// and the decisions taken from it: which changed files the backup already holds (same
/// content: nothing sent), which deletes and creates are one move (a rename on the backup),
/// which new files are copies of what the backup holds (a copy there), which deletes must
/// wait for an operator, and what a start has to send at all.
///
/// The index is only ever a hint for what to *skip*: rsync still runs over every path of
/// a batch and decides the final state, and a path's record is acknowledged only when the
/// file was found unchanged (same size, mtime, inode) after the transfer that sent it.
final class MirrorIndex: @unchecked Sendable {
    let name: String
    let source: [UInt8]
    /// This mirror's state directory.
    let directory: [UInt8]
    let log: Logger
    private let store: Monitor<Store>

    /// The index, and what the copier recorded that is not written to it yet.
    private struct Store {
        let index: Index
        /// Entries of copied batches, written together (see `commitCopied`), and the kind
        /// each path has in the last of them.
        var copied: [IndexEntry] = []
        var copiedKinds: [SyncPath: FileKind] = [:]
        /// When the oldest of them was recorded (monotonic).
        var copiedSince = 0.0
    }
    let hasher: HashService
    private let lockFD: Int32

    enum StartMode: Equatable {
        /// Walk the tree, compare it with the index, send only what differs.
        case fromIndex(entries: Int)
        /// A full rsync of the tree (the index fills from it); the reason for the log.
        case fullSync(String)
    }
    private(set) var startMode: StartMode

    /// Deletes waiting for `fansync confirm-deletes` (or refused), for the status.
    struct DeleteHold: Sendable {
        var held: [SyncPath] = []
        var heldCount = 0
        var message: String? = nil
        /// Released by the operator: the next batch deletes these without asking again.
        var confirmed: Set<SyncPath> = []
        /// Deletes propagated lately (monotonic time, count): an `rm -rf` arrives in several
        /// batches, and the share is judged on all of them together.
        var recent: [(time: Double, count: Int)] = []
    }
    /// How long propagated deletes count towards the share of the next batches.
    static let deleteWindow = 60.0
    let deleteHold = Mutex(DeleteHold())
    var policy: DeleteSafety.Policy
    /// A batch deleting fewer paths than this is never held, whatever the share (a small
    /// tree losing three of its five files is not a lost volume).
    static let minimumHeldDeletes = 100

    static let defaultStateRoot: [UInt8] = Array("/var/lib/fansync".utf8)

    /// `<root>/<name>`, the name made safe as one path component.
    static func stateDirectory(name: String, root: [UInt8]?) -> [UInt8] {
        let safe = name.utf8.map { b -> UInt8 in
            let c = Character(Unicode.Scalar(b))
            return (c.isLetter || c.isNumber || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")) && b < 0x80 ? b : UInt8(ascii: "_")
        }
        let component = safe.isEmpty || safe.allSatisfy({ $0 == UInt8(ascii: ".") }) ? Array("mirror".utf8) : safe
        return (root ?? defaultStateRoot) + [UInt8(ascii: "/")] + component
    }

    /// The state directory of `config`'s mirror: its own `stateDir`, else its name under
    /// `root`.
    static func stateDirectory(of config: MirrorConfig, root: [UInt8]?) -> [UInt8] {
        config.stateDir ?? stateDirectory(name: config.name, root: root)
    }

    /// The index in a state directory.
    static func indexFile(in directory: [UInt8]) -> [UInt8] { directory + Array("/index.sqlite".utf8) }

    struct OpenError: Error, CustomStringConvertible {
        let description: String
    }

    init(config: MirrorConfig, stateRoot: [UInt8]?, allowMassDelete: Bool, log: Logger) throws {
        name = config.name
        source = config.source
        self.log = log
        directory = Self.stateDirectory(of: config, root: stateRoot)
        policy = DeleteSafety.Policy(maxDeleteShare: config.maxDeleteShare, massDeleteConfirmed: allowMassDelete)
        let dirText = SyncPath.displayString(directory)
        guard makeDirectories(directory) else {
            throw OpenError(description: "cannot create the state directory \(dirText): \(String(cString: strerror(errno))) (set another with --state-dir or stateDir)")
        }
        // One daemon per state directory: two writers would each trust an index the other changes.
        let lockPath = directory + Array("/lock".utf8)
        lockFD = withCPath(lockPath) { open($0, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        guard lockFD >= 0 else {
            throw OpenError(description: "cannot open \(dirText)/lock: \(String(cString: strerror(errno)))")
        }
        if flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(lockFD, &buf, 31, 0)
            let holder = String(decoding: buf.prefix(max(0, n)), as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "?"
            Glibc.close(lockFD)
            throw OpenError(description: "the state directory \(dirText) is in use by another fansync (pid \(holder)); give each mirror its own (--name or --state-dir)")
        }
        _ = ftruncate(lockFD, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pwrite(lockFD, pid, pid.count, 0)

        let file = SyncPath.displayString(Self.indexFile(in: directory))
        let index: Index
        do {
            index = try Index(file: file, cacheKiB: 4000, check: .quick, exclusive: true)
        } catch {
            Glibc.close(lockFD)
            throw OpenError(description: "\(error)")
        }
        if let recovery = index.recovery { log.error("\(config.name): \(recovery)") }

        // The index describes one source on one target: anything else starts afresh.
        let target = Array(config.target.description.utf8)
        var mode: StartMode
        do {
            let count = try index.count()
            let recordedSource = try index.metadata("source"), recordedTarget = try index.metadata("target")
            if index.recovery != nil {
                mode = .fullSync("the index was damaged")
            } else if count == 0 {
                mode = .fullSync("no index yet")
            } else if recordedSource != config.source || recordedTarget != target {
                try index.removeSubtree(.root)
                try index.setMetadata("complete", nil)
                mode = .fullSync("the index was kept for another source or target")
            } else if try index.metadata("complete") != Array("1".utf8) {
                mode = .fullSync("the last full sync did not finish")
            } else if try index.metadata("running") == Array("1".utf8) {
                // Killed (or the machine went down): a transfer cut short may have left
                // rsync's temporary file on the backup, which no event will ever name. The
                // full rsync removes it; the quick check sends nothing the backup holds.
                mode = .fullSync("the last run did not stop cleanly")
            } else {
                mode = .fromIndex(entries: count)
            }
            try index.setMetadata("source", config.source)
            try index.setMetadata("target", target)
            try index.setMetadata("running", Array("1".utf8))
        } catch {
            Glibc.close(lockFD)
            throw OpenError(description: "\(error)")
        }
        startMode = mode
        store = Monitor(Store(index: index))
        do {
            hasher = try HashService()
        } catch {
            Glibc.close(lockFD)
            throw OpenError(description: "cannot start the hasher: \(error)")
        }
        if let why = hasher.fallbackReason { log.warning("\(config.name): \(why)") }
    }

    /// Says the backup no longer matches the index (the target directory is gone): the
    /// start is a full sync.
    func forgetEverything(_ why: String) {
        withIndex { index in
            try index.removeSubtree(.root)
            try index.setMetadata("complete", nil)
        }
        startMode = .fullSync(why)
    }

    func close() {
        hasher.shutdown()
        withIndex { index in
            try index.setMetadata("running", nil)
            try index.checkpoint()
        }
        Glibc.close(lockFD)
    }

    /// Runs `body` on the index; an SQLite error is logged (the index is a cache of what the
    /// backup holds: a failed write costs a resend later, never a wrong backup). The
    /// copier's records not yet written go first: every use sees them, and the index's
    /// writes keep their order.
    @discardableResult
    func withIndex<R>(_ body: (Index) throws -> R) -> R? {
        store.withLock { s -> R? in
            writeCopied(&s)
            return run(s.index, body)
        }
    }

    private func run<R>(_ index: Index, _ body: (Index) throws -> R) -> R? {
        do { return try body(index) } catch {
            log.error("\(name): index: \(error)")
            return nil
        }
    }

    private func writeCopied(_ s: inout Store) {
        guard !s.copied.isEmpty else { return }
        let entries = s.copied
        s.copied = []
        s.copiedKinds = [:]
        run(s.index) { try $0.upsert(entries) }
        log.debug("\(name): index: \(entries.count) record(s) of the copier written")
    }

    /// Writes what the copier recorded (when the mirror is idle: see `commitCopied`).
    func writeCopied() {
        store.withLock { writeCopied(&$0) }
    }

    /// The number of paths the index holds, counted at most every 10 s (a count is a scan
    /// of the whole table: the delete share does not need it exact).
    var count: Int {
        let now = monotonicNow()
        if let (n, at) = cachedCount.withLock({ $0 }), now - at < 10 { return n }
        let n = withIndex { try $0.count() } ?? 0
        cachedCount.withLock { $0 = (n, now) }
        return n
    }
    private let cachedCount = Mutex<(Int, Double)?>(nil)

    // MARK: - Batches

    /// What a batch does, decided before its rsync.
    struct BatchPlan {
        var ops = BackupOperations()
        /// What rsync is given (every path of the batch, less held deletes).
        var rsyncPaths: [SyncPath] = []
        /// Paths found, with the version read: acknowledged after the transfer if unchanged.
        var present: [(SyncPath, HashedEntry)] = []
        /// Paths not found: removed from the index after the transfer (with their subtree).
        var gone: [SyncPath] = []
        /// Paths that could not be read (rsync reports them): unacknowledged.
        var unreadable: [SyncPath] = []
        /// Directories in the index that are files or symlinks now: their old contents'
        /// records go after the transfer.
        var replacedDirectories: [SyncPath] = []
        var held = 0
        var skipped = 0
        /// Nothing hashed beforehand: the local copier records what it makes (`commitCopied`).
        var copierRecords = false
    }

    /// A batch of at least this many paths, none of them in the index (a burst of new
    /// files), is not hashed before a local copy: nothing in it can be unchanged or a move,
    /// and the copier hashes what it copies on the way.
    static let copierRecordsMinimum = 64

    /// Hashes the batch's paths (io_uring), compares them with the index, and pairs deletes
    /// and creates of the same content. `localCopy`: the batch goes to the daemon's own
    /// copier (see `copierRecordsMinimum`).
    func plan(_ paths: [SyncPath], deletes: Bool, localCopy: Bool = false) -> BatchPlan {
        var plan = BatchPlan()
        if localCopy && paths.count >= Self.copierRecordsMinimum, onlyNewFiles(paths) {
            plan.copierRecords = true
            plan.rsyncPaths = paths
            return plan
        }
        let results = hasher.hashBlocking(paths.map { joinPath(source, $0) })
        for (p, r) in zip(paths, results) {
            switch r {
            case .success(let h): plan.present.append((p, h))
            case .failure(let e): if e.isGone { plan.gone.append(p) } else { plan.unreadable.append(p) }
            }
        }
        var deleted: [RenamePairing.Deleted] = []
        var created: [RenamePairing.Created] = []
        var goneCounts: [SyncPath: Int] = [:]
        withIndex { index in
            for (p, h) in plan.present {
                let was = try index.lookup(p)
                if was?.kind == .directory && h.stat.kind != .directory { plan.replacedDirectories.append(p) }
                if let was, TreeComparison.contentCheck(was: was, now: h) == .sameContent {
                    plan.skipped += 1
                    if was.mtimeNs != h.stat.mtimeNs { plan.ops.times.append(.init(path: p, mtimeNs: h.stat.mtimeNs)) }
                } else if let content = h.content {
                    created.append(.init(path: p, kind: h.stat.kind, size: h.stat.size, hash: content.whole))
                }
            }
            for p in plan.gone {
                guard let was = try index.lookup(p) else { continue }
                goneCounts[p] = was.kind == .directory ? try index.countSubtree(p) : 1
                if deletes { deleted.append(.init(was)) }
            }
        }
        let pairing = withIndex { index in
            RenamePairing.plan(deleted: deleted, created: created) { hash, kind in
                (try? index.paths(withHash: hash, kind: kind, ackedOnly: true, limit: 8)) ?? []
            }
        } ?? RenamePairing.Plan()
        let mtimes = Dictionary(plan.present.map { ($0.0, $0.1.stat.mtimeNs) }, uniquingKeysWith: { a, _ in a })
        for m in pairing.renames {
            plan.ops.renames.append(.init(from: m.from, to: m.to))
            if let t = mtimes[m.to] { plan.ops.times.append(.init(path: m.to, mtimeNs: t)) }
        }
        for m in pairing.copies {
            plan.ops.copies.append(.init(from: m.from, to: m.to))
            if let t = mtimes[m.to] { plan.ops.times.append(.init(path: m.to, mtimeNs: t)) }
        }

        // Deletes that are not moves: subject to the delete safety rules.
        var withheld: Set<SyncPath> = []
        if deletes {
            let moved = Set(pairing.renames.map(\.from))
            let candidates = plan.gone.filter { !moved.contains($0) }
            // Released by the operator: deleted now without asking again.
            let unconfirmed = deleteHold.withLock { h in candidates.filter { h.confirmed.remove($0) == nil } }
            let deleteCount = unconfirmed.reduce(0) { $0 + (goneCounts[$1] ?? 1) }
            if deleteCount > 0 {
                let now = monotonicNow()
                let recent = deleteHold.withLock { h -> Int in
                    h.recent.removeAll { now - $0.time > Self.deleteWindow }
                    return h.recent.reduce(0) { $0 + $1.count }
                }
                let decision = decide(deleteCount: recent + deleteCount, indexCount: count + recent, minimum: Self.minimumHeldDeletes)
                switch decision {
                case .allow:
                    deleteHold.withLock { $0.recent.append((now, deleteCount)) }
                case .hold:
                    withheld = Set(unconfirmed)
                    hold(unconfirmed, count: deleteCount, message: decision.description)
                case .refuse:
                    withheld = Set(unconfirmed)
                    log.error("\(name): \(decision.description); \(unconfirmed.count) delete(s) dropped")
                }
            }
        }
        plan.held = withheld.count
        plan.gone.removeAll { withheld.contains($0) }
        plan.rsyncPaths = paths.filter { !withheld.contains($0) }
        return plan
    }

    /// Records what the backup now holds after the batch's rsync succeeded.
    func commit(_ plan: BatchPlan, deletes: Bool) {
        // Acknowledge a version only if the file is still that version: a write during the
        // transfer leaves it pending (its event follows, and dedup never skips it).
        let entries = plan.present.map { p, h in
            IndexEntry(path: p, hashed: h, acked: FileStat.of(joinPath(source, p)).map { $0.sameVersion(as: h.stat) } ?? false)
        }
        withIndex { index in
            if deletes { for p in plan.gone { try index.removeSubtree(p) } }
            for p in plan.replacedDirectories { try index.removeSubtree(p) }
            try index.upsert(entries)
            try index.markUnacked(plan.unreadable)
        }
    }

    /// True when no file or symlink of `paths` is in the index, and the directories that
    /// are (a burst sets its directories' times last) are still directories: nothing in the
    /// batch can be unchanged, moved or deleted.
    private func onlyNewFiles(_ paths: [SyncPath]) -> Bool {
        var directories: [SyncPath] = []
        // The copier's waiting records count as written (and stay waiting: in a burst a
        // directory's attributes change after its files, and its path comes again).
        let clean = store.withLock { s in
            run(s.index) { index -> Bool in
                // A directory the index holds nothing under (a burst's new ones): its paths
                // need no look-up each.
                var emptyDirectories: [SyncPath: Bool] = [:]
                func inEmptyDirectory(_ p: SyncPath) throws -> Bool {
                    let parent = p.parent
                    if let known = emptyDirectories[parent] { return known }
                    let empty = try !index.hasEntries(inside: parent)
                    emptyDirectories[parent] = empty
                    return empty
                }
                for p in paths {
                    guard let kind = try s.copiedKinds[p] ?? (inEmptyDirectory(p) ? nil : index.lookup(p)?.kind) else { continue }
                    if kind != .directory || directories.count >= 16 { return false }
                    directories.append(p)
                }
                return true
            }
        } ?? false
        guard clean else { return false }
        if directories.isEmpty { return true }
        return hasher.hashBlocking(directories.map { joinPath(source, $0) }).allSatisfy { r in
            if case .success(let h) = r { return h.stat.kind == .directory }
            return false
        }
    }

    /// Records what the local copier made or found (a batch planned with `copierRecords`).
    /// Returns true when some entries still need their content hash.
    ///
    /// Written before the next other use of the index (so every use sees them), once the
    /// mirror's queue has stayed idle a moment (`writeCopied()`, from `Mirror.workerLoop`),
    /// `copiedMaxAge` seconds after the oldest, or once `copiedLimit` wait: during a burst
    /// the copies go first, and one transaction after it rewrites the hash index's pages
    /// once instead of once per batch (and takes no CPU from the copies). A crash loses them;
    /// the start after it finds those files on the backup as it finds any the index does
    /// not know.
    func commitCopied(_ record: LocalCopier.Record) -> Bool {
        let now = monotonicNow()
        store.withLock { s in
            if s.copied.isEmpty { s.copiedSince = now }
            for e in record.entries {
                s.copied.append(IndexEntry(path: e.path, hashed: e.entry, acked: e.acked))
                s.copiedKinds[e.path] = e.entry.stat.kind
            }
            if s.copied.count >= Self.copiedLimit || now - s.copiedSince >= Self.copiedMaxAge { writeCopied(&s) }
        }
        return record.entries.contains { $0.entry.content == nil && $0.entry.stat.kind == .regular }
    }

    /// How many of the copier's entries wait to be written.
    var copiedWaiting: Int { store.withLock { $0.copied.count } }

    /// At most this many copied entries wait to be written (about 200 bytes each).
    static let copiedLimit = 1 << 15
    /// Nor longer than this (seconds) while changes keep coming.
    static let copiedMaxAge = 10.0

    /// A rename done on the backup.
    func renamed(from: SyncPath, to: SyncPath) {
        withIndex { try $0.renameSubtree(from: from, to: to) }
    }

    // MARK: - Trees

    /// The index's entries strictly inside `path`, one page at a time, each page read under
    /// the lock (writers go on between pages; the merge only needs each page in order). An
    /// SQLite error is logged and ends the sequence. `metadataOnly`: without hashes and link
    /// targets (cheaper to read: the start's comparison).
    func entries(inside path: SyncPath, metadataOnly: Bool = false) -> IndexEntries {
        let (lower, upper): ([UInt8], [UInt8]?) = path.isRoot ? ([], nil) : IndexKey.descendants(of: path)
        return IndexEntries(after: lower, pageSize: 2000) { [self] after, limit in
            withIndex { try $0.page(after: after, below: upper, includeChunks: false, metadataOnly: metadataOnly, limit: limit) } ?? []
        }
    }

    /// Paths the walk could not read (so what the index holds below them is not deleted).
    final class WalkErrors: @unchecked Sendable {
        private let paths = Mutex<[SyncPath]>([])
        func add(_ p: SyncPath) { paths.withLock { $0.append(p) } }
        func covers(_ p: SyncPath) -> Bool { paths.withLock { $0.contains { p.isInside($0) } } }
        var isEmpty: Bool { paths.withLock { $0.isEmpty } }
    }

    func walker(under path: SyncPath, rules: RulesEngine, errors: WalkErrors) -> TreeWalker {
        Self.walker(source: source, under: path, rules: rules, errors: errors, name: name, log: log)
    }

    static func walker(source: [UInt8], under path: SyncPath, rules: RulesEngine, errors: WalkErrors,
                       name: String, log: Logger) -> TreeWalker {
        // One rules decision per directory (its listing at hand, so no rules file is looked
        // for that is not there); plain statx: on a warm tree io_uring's statx goes through
        // kernel workers and takes twice the wall time here (Perf/hash/README.md).
        let filter: TreeWalker.DirectoryFilter = { dir, fd, entries in
            // Each entry's name, as a slice of its path.
            let nameStart = dir.isRoot ? 0 : dir.bytes.count + 1
            guard let verdicts = rules.decideEntries(of: dir, directoryFD: fd,
                                                     entries: entries.map { ($0.path.bytes[nameStart...], $0.stat.kind == .directory) }) else { return [] }
            if !verdicts.contains(true) { return entries }
            var kept: [TreeEntry] = []
            kept.reserveCapacity(entries.count)
            for (e, excluded) in zip(entries, verdicts) where !excluded { kept.append(e) }
            return kept
        }
        return TreeWalker(source: source, under: path, threads: 2, backend: .plain, filterDirectory: filter) { p, code in
            errors.add(p)
            log.warning("\(name): cannot read \(p.isRoot ? "the source root" : p.description): \(String(cString: strerror(code)))")
        }
    }

    /// The start-up walk, begun before the index is opened (checking a large index takes a
    /// moment, during which the walk's threads read ahead, as far as their bound).
    final class StartWalk: @unchecked Sendable {
        let walker: TreeWalker
        let errors = WalkErrors()
        let iterator: TreeWalker.Iterator

        init(source: [UInt8], name: String, rules: RulesEngine, log: Logger) {
            walker = MirrorIndex.walker(source: source, under: .root, rules: rules, errors: errors, name: name, log: log)
            iterator = walker.makeIterator()
        }
    }

    /// True when the mirror's state directory holds an index (a start may come from it).
    static func exists(config: MirrorConfig, stateRoot: [UInt8]?) -> Bool {
        var st = stat()
        return withCPath(indexFile(in: stateDirectory(of: config, root: stateRoot))) { stat($0, &st) } == 0 && st.st_size > 0
    }

    /// Before a recursive rsync of `path`: records the tree as it is now (new and changed
    /// paths unacknowledged, without a hash unless only the mode changed), and forgets
    /// what is gone.
    func beforeTree(_ path: SyncPath, rules: RulesEngine) {
        let errors = WalkErrors()
        var upserts: [IndexEntry] = []
        var removals: [SyncPath] = []
        func flush() {
            let (u, r) = (upserts, removals)
            upserts.removeAll(keepingCapacity: true)
            removals.removeAll(keepingCapacity: true)
            withIndex { index in
                try index.remove(r)
                try index.upsert(u)
            }
        }
        if !path.isRoot, let st = FileStat.of(joinPath(source, path)) {
            upserts.append(Self.entry(TreeEntry(path: path, stat: st), hash: nil))
        }
        do {
            try TreeComparison.compare(tree: walker(under: path, rules: rules, errors: errors),
                                       index: entries(inside: path)) { d in
                switch d {
                case .new(let t), .typeChanged(let t, _):
                    upserts.append(Self.entry(t, hash: nil))
                case .changed(let t, let was, let reasons):
                    // A mode change keeps the content, and its hash.
                    upserts.append(Self.entry(t, hash: reasons.isDisjoint(with: .content) ? was : nil))
                case .deleted(let i):
                    if !errors.covers(i.path) { removals.append(i.path) }
                case .unchanged, .unacknowledged:
                    break
                }
                if upserts.count + removals.count >= 5000 { flush() }
            }
        } catch {
            log.error("\(name): index: \(error)")
        }
        flush()
    }

    /// After the recursive rsync of `path` succeeded: acknowledges every path still as
    /// `beforeTree` recorded it. Marks the index complete after the full sync of the root.
    func afterTree(_ path: SyncPath, rules: RulesEngine) {
        let errors = WalkErrors()
        var acks: [IndexEntry] = []
        func flush() {
            let a = acks
            acks.removeAll(keepingCapacity: true)
            withIndex { try $0.markAcked(versions: a) }
        }
        if !path.isRoot, let st = FileStat.of(joinPath(source, path)),
           let was = withIndex({ try $0.lookup(path) }) ?? nil,
           case .unacknowledged = TreeComparison.classify(TreeEntry(path: path, stat: st), was) {
            acks.append(was)
        }
        do {
            try TreeComparison.compare(tree: walker(under: path, rules: rules, errors: errors),
                                       index: entries(inside: path)) { d in
                if case .unacknowledged(_, let i) = d { acks.append(i) }
                if acks.count >= 5000 { flush() }
            }
        } catch {
            log.error("\(name): index: \(error)")
        }
        flush()
        if path.isRoot && errors.isEmpty {
            var st = stat()
            if withCPath(source, { stat($0, &st) }) == 0 {
                withIndex { index in
                    try index.setRecordedSourceDevice(UInt64(st.st_dev))
                    try index.setMetadata("complete", Array("1".utf8))
                }
            }
        }
    }

    /// The backup's root directory ("dev:ino") when the index was filled.
    var backupRoot: String? {
        get { withIndex { try $0.metadata("backup_root") }.flatMap { $0.map { String(decoding: $0, as: UTF8.self) } } }
        set { withIndex { try $0.setMetadata("backup_root", newValue.map { Array($0.utf8) }) } }
    }

    /// Why the backup does not hold what the index says (nil: it does, as far as a probe of
    /// its root and of a few files can tell).
    func backupMismatch(root: String, sizes: [Int64], samples: [(path: SyncPath, size: UInt64)]) -> String? {
        if root == "missing" { return "the backup directory is missing" }
        if let recorded = backupRoot, recorded != root { return "the backup directory was replaced (\(recorded) is now \(root))" }
        for (s, size) in zip(samples, sizes) where size != Int64(s.size) {
            return "the backup lacks \(s.path) (or holds another version), which the index records"
        }
        return nil
    }

    static func entry(_ t: TreeEntry, hash from: IndexEntry?) -> IndexEntry {
        IndexEntry(path: t.path, kind: t.stat.kind, size: t.stat.size, mtimeNs: t.stat.mtimeNs, ino: t.stat.ino,
                   dev: t.stat.dev, mode: t.stat.mode, linkTarget: from?.linkTarget, wholeHash: from?.wholeHash,
                   chunkHashes: from?.chunkHashes ?? [], acked: false)
    }

    /// What a start from the index found.
    struct ScanResult {
        var walked = 0
        var changes = 0
        var deletes = 0
        var held = false
        /// The differences were too many to queue one by one: a full rsync is needed.
        var tooMany = false
        /// The comparison broke off (the index could not be read, the walk came out of
        /// order): what it did not reach is unknown, a full rsync is needed.
        var failure: String? = nil
        /// Files the index says the backup holds unchanged, drawn at random: checked on the
        /// backup before the index is trusted (a backup emptied or replaced under it).
        var samples: [(path: SyncPath, size: UInt64)] = []
    }

    /// How many files a start checks on the backup.
    static let sampleCount = 24

    /// Start from the index: walks the tree, compares it with the index, and hands every
    /// path that differs to `emit` (as events, in chunks), then the deletes, if the delete
    /// safety rules allow them. Runs while live events flow.
    func scan(rules: RulesEngine, deletes: Bool, started: StartWalk? = nil,
              limit: Int = 200_000, stop: @escaping () -> Bool, emit: ([WatchEvent]) -> Void) -> ScanResult {
        var result = ScanResult()
        let started = started ?? StartWalk(source: source, name: name, rules: rules, log: log)
        let errors = started.errors
        var events: [WatchEvent] = []
        var deleteRoots: [SyncPath] = []
        var deleteCount = 0
        var forget: [SyncPath] = []
        var lastDeletedDirectory: (SyncPath, Bool)? = nil
        var seen = 0
        var rng = SplitMix64(seed: UInt64.random(in: 0...UInt64.max))
        let walk = started.walker
        do {
            try TreeComparison.compare(tree: IteratorSequence(started.iterator), index: entries(inside: .root, metadataOnly: true)) { d in
                if stop() { walk.cancel(); throw CancellationError() }
                if case .deleted = d {} else { result.walked += 1 }
                switch d {
                case .new(let t), .changed(let t, _, _), .typeChanged(let t, _), .unacknowledged(let t, _):
                    events.append(.changed(t.path, isDirectory: t.stat.kind == .directory, created: false, closed: true))
                    result.changes += 1
                case .deleted(let i):
                    if let (dir, counts) = lastDeletedDirectory, i.path.isInside(dir) {
                        if counts { deleteCount += 1 }
                        return
                    }
                    if errors.covers(i.path) { return }
                    let excluded = rules.isExcluded(i.path, isDirectory: i.kind == .directory)
                    if excluded {
                        forget.append(i.path)   // newly excluded: stays on the backup
                    } else {
                        deleteRoots.append(i.path)
                        deleteCount += 1
                    }
                    if i.kind == .directory { lastDeletedDirectory = (i.path, !excluded) }
                case .unchanged(_, let i):
                    if i.kind == .regular {
                        // Reservoir sampling: every unchanged file equally likely.
                        seen += 1
                        if result.samples.count < Self.sampleCount { result.samples.append((i.path, i.size)) }
                        else {
                            // A cheap generator: the system one costs a syscall per call.
                            let k = Int(rng.next() % UInt64(seen))
                            if k < Self.sampleCount { result.samples[k] = (i.path, i.size) }
                        }
                    }
                }
                if events.count >= 5000 {
                    emit(events)
                    events.removeAll(keepingCapacity: true)
                }
                if result.changes > limit {
                    result.tooMany = true
                    walk.cancel()
                    throw CancellationError()
                }
            }
        } catch is CancellationError {
            emit(events)
            return result
        } catch {
            result.failure = "\(error)"
            emit(events)
            return result
        }
        for p in forget { withIndex { try $0.removeSubtree(p) } }
        result.deletes = deleteCount
        guard deletes, !deleteRoots.isEmpty else {
            emit(events)
            return result
        }
        let decision = decide(deleteCount: deleteCount, indexCount: count, minimum: Self.minimumHeldDeletes)
        switch decision {
        case .allow:
            // With the last changes, in one batch: a file moved while fansync was stopped is
            // a delete and a create of the same content, made one rename on the backup.
            emit(events + deleteRoots.map { p in .removed(p, isDirectory: false) })
            events = []
        case .hold:
            result.held = true
            hold(deleteRoots, count: deleteCount, message: "start: " + decision.description)
        case .refuse:
            log.error("\(name): start: \(decision.description)")
        }
        emit(events)
        return result
    }

    // MARK: - Hashes after the fact

    /// Hashes what the index holds without a hash (after a full sync filled it from the
    /// tree), in batches, storing a hash only where the file is still the version the
    /// backup acknowledged. Returns how many were stored.
    func fillHashes(stop: () -> Bool) -> Int {
        var after: SyncPath? = nil
        var stored = 0
        while !stop() {
            let a = after
            guard let page = withIndex({ try $0.unhashed(after: a, limit: 256) }), let last = page.last else { break }
            after = last.path
            let results = hasher.hashBlocking(page.map { joinPath(source, $0.path) })
            var versions: [IndexEntry] = []
            for (e, r) in zip(page, results) {
                guard case .success(let h) = r, h.stat.kind == e.kind, h.stat.size == e.size,
                      h.stat.mtimeNs == e.mtimeNs, h.stat.ino == e.ino else { continue }
                versions.append(IndexEntry(path: e.path, hashed: h, acked: true))
            }
            stored += withIndex { try $0.setHashes(versions) } ?? 0
        }
        return stored
    }

    // MARK: - Delete safety

    func decide(deleteCount: Int, indexCount: Int, minimum: Int) -> DeleteSafety.Decision {
        var st = stat()
        let exists = withCPath(source, { stat($0, &st) }) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
        let recorded = withIndex { try $0.recordedSourceDevice() } ?? nil
        let facts = DeleteSafety.Facts(rootExists: exists, rootEntryCount: exists ? Self.entryCount(source, upTo: 1) : 0,
                                       rootDevice: exists ? UInt64(st.st_dev) : nil, recordedDevice: recorded,
                                       indexCount: indexCount, deleteCount: deleteCount)
        var policy = self.policy
        if deleteCount < minimum { policy.massDeleteConfirmed = true }
        return DeleteSafety.decide(facts, policy: policy)
    }

    private func hold(_ paths: [SyncPath], count: Int, message: String) {
        let first = deleteHold.withLock { h -> Bool in
            let first = h.held.isEmpty
            h.held += paths
            h.heldCount += count
            h.message = "holding \(h.heldCount) delete(s): run `fansync confirm-deletes` (state directory \(SyncPath.displayString(directory))) or restart with --allow-mass-delete"
            return first
        }
        log.warning("\(name): \(message)\(first ? "" : " (more deletes held)")")
    }

    /// The operator's confirmation: `<state dir>/confirm-deletes`, written by `fansync
    /// confirm-deletes`. Returns the held paths to queue again (as deletes) when present.
    func takeConfirmation() -> [SyncPath] {
        let file = directory + Array("/confirm-deletes".utf8)
        var st = stat()
        guard withCPath(file, { stat($0, &st) }) == 0 else { return [] }
        _ = withCPath(file) { unlink($0) }
        let released = deleteHold.withLock { h -> [SyncPath] in
            let r = h.held
            h.confirmed.formUnion(r)
            h = DeleteHold(confirmed: h.confirmed)   // and the recent deletes are forgiven
            return r
        }
        log.info("\(name): deletes confirmed by the operator: \(released.count) held path(s) released")
        return released
    }

    static func entryCount(_ dir: [UInt8], upTo limit: Int) -> Int {
        guard let d = withCPath(dir, { opendir($0) }) else { return 0 }
        defer { closedir(d) }
        var n = 0
        while n < limit, let e = readdir(d) {
            let isDot = withUnsafeBytes(of: e.pointee.d_name) { b in b[0] == 0x2E && (b[1] == 0 || (b[1] == 0x2E && b[2] == 0)) }
            if !isDot { n += 1 }
        }
        return n
    }
}

extension FileStat {
    /// `statx` of `path`, not following a final symlink; nil when it cannot be read.
    static func of(_ path: [UInt8]) -> FileStat? {
        var buf = statx()
        let rc = withCPath(path) { clinux_statx(AT_FDCWD, $0, curing_at_symlink_nofollow | curing_at_statx_sync_as_stat, FileStat.statxMask, &buf) }
        return rc == 0 ? FileStat(statx: buf) : nil
    }
}

/// SplitMix64: a fast, good-enough generator for sampling (not for secrets).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
