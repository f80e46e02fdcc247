import CLinux
import CURing
import Glibc
import Synchronization

/// Walks the source tree (or one subtree of it) and yields every path in it with its
/// `statx`, in strictly increasing `SyncPath` order: what `TreeComparison.compare` merges
/// with the index at start and after a missed-event rescan.
///
/// How: worker threads read directories ahead of the consumer (`getdents` through
/// `readdir`, then `statx` of every entry in batches through an io_uring of their own,
/// or plain `statx` where io_uring is refused). Each directory's names are sorted by bytes
/// and directories are entered depth first, which is `SyncPath` order because `/` sorts
/// before every other byte ("a" < "a/b" < "a0"). Workers always read the pending
/// directory that comes first in that order, so the one the consumer needs next is never
/// behind the others.
///
/// Memory stays bounded: workers stop reading ahead once `prefetch` entries wait for the
/// consumer (except for the directory the consumer waits on), so a walk of 1,000,000
/// files holds a window of the tree, not the tree. What cannot be bounded is one
/// directory: its names must all be read to be sorted, as with `ls` or `rsync`.
///
/// Rules of the walk:
/// - Symlinks are entries, never followed; directories are opened beneath the source root
///   without following any symlink (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), so
///   a directory swapped for a symlink during the walk is not entered.
/// - Submounts are entered (a source may span filesystems, as `rsync -a` does).
/// - An excluded path (`isExcluded(path, isDirectory)`) is not yielded, and an excluded
///   directory is not read at all.
/// - A path that vanishes during the walk (ENOENT, ENOTDIR, a directory turned into a file
///   or a symlink) is skipped silently: it is simply no longer in the tree. Any other
///   failure (EACCES, EIO, ...) is passed to `onError` and the walk goes on. The caller
///   must not read the absence of a path at or below a reported path as a delete.
/// - The starting directory (the source root, and `under`) must open: any failure,
///   ENOENT included, is reported, so that an empty walk is never mistaken for an empty
///   tree.
///
/// `isExcluded` and `onError` are called on the worker threads.
///
/// Each `makeIterator()` is one walk; dropping the iterator, or `cancel()`, stops its
/// threads. Worker threads run at idle I/O priority, like the hasher.
public final class TreeWalker: Sequence, Sendable {
    /// How entries are `statx`ed.
    public enum Backend: Sendable, Equatable {
        /// io_uring batches, or plain `statx` when io_uring cannot be set up.
        case automatic
        /// One `statx` call per entry.
        case plain
    }

    public let source: [UInt8]
    public let under: SyncPath
    public let threads: Int
    public let backend: Backend
    /// Entries read ahead of the consumer, at most (beyond the directories in progress).
    let prefetch: Int
    let isExcluded: @Sendable (SyncPath, Bool) -> Bool
    let onError: @Sendable (SyncPath, Int32) -> Void

    private struct Control {
        var cancelled = false
        var walks: [WeakWalk] = []
        var fallbackReason: String?
        var backendsUsed: Set<String> = []
    }
    private struct WeakWalk {
        weak var walk: Walk?
    }
    private let control = Mutex(Control())

    /// - Parameters:
    ///   - source: the absolute source root (a symlink there is followed: it is the user's
    ///     choice of root; below it, none is).
    ///   - under: walk only this subtree; yielded paths are still relative to `source`, and
    ///     `under` itself is not yielded.
    ///   - threads: worker threads reading directories (at least 1).
    public convenience init(source: [UInt8],
                            under: SyncPath = .root,
                            threads: Int = 2,
                            backend: Backend = .automatic,
                            isExcluded: @escaping @Sendable (SyncPath, _ isDirectory: Bool) -> Bool = { _, _ in false },
                            onError: @escaping @Sendable (SyncPath, Int32) -> Void = { _, _ in }) {
        self.init(source: source, under: under, threads: threads, backend: backend, prefetch: 16_384,
                  isExcluded: isExcluded, onError: onError)
    }

    /// `prefetch`: tests make the window tiny to exercise waiting on it.
    init(source: [UInt8], under: SyncPath, threads: Int, backend: Backend, prefetch: Int,
         isExcluded: @escaping @Sendable (SyncPath, Bool) -> Bool,
         onError: @escaping @Sendable (SyncPath, Int32) -> Void) {
        self.source = source
        self.under = under
        self.threads = Swift.max(1, threads)
        self.backend = backend
        self.prefetch = Swift.max(1, prefetch)
        self.isExcluded = isExcluded
        self.onError = onError
    }

    /// Stops every walk of this walker (their iterators end: `next()` returns nil) and
    /// every later one. A walk that ended after `cancel()` may have missed paths: see
    /// `isCancelled`.
    public func cancel() {
        let walks = control.withLock { c -> [Walk] in
            c.cancelled = true
            return c.walks.compactMap(\.walk)
        }
        for walk in walks { walk.stop() }
    }

    /// True once `cancel()` was called: a walk may have ended early, so its output is not
    /// the whole tree.
    public var isCancelled: Bool { control.withLock { $0.cancelled } }

    /// Why io_uring is not used (`.automatic` only), for the log; nil while it is.
    public var fallbackReason: String? { control.withLock { $0.fallbackReason } }

    /// The `statx` backends the walks' threads used ("io_uring", "statx").
    public var backendsUsed: Set<String> { control.withLock { $0.backendsUsed } }

    public func makeIterator() -> Iterator {
        let cancelled = control.withLock { $0.cancelled }
        let rootFD = cancelled ? -1 : openSourceRoot()
        guard rootFD >= 0 else { return Iterator(walk: nil, threads: []) }
        let walk = Walk(rootFD: rootFD, start: under, prefetch: prefetch)
        control.withLock { c in
            c.walks.removeAll { $0.walk == nil }
            c.walks.append(WeakWalk(walk: walk))
        }
        let workers = (0..<threads).map { i in
            WorkerThread(name: "fansync-walk-\(i)") { [self] in work(walk) }
        }
        return Iterator(walk: walk, threads: workers)
    }

    /// The source root, followed if it is a symlink; -1 (reported) when it cannot be opened.
    private func openSourceRoot() -> Int32 {
        if source.contains(0) {
            onError(.root, EINVAL)
            return -1
        }
        let fd = (source + [0]).withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        }
        if fd < 0 { onError(.root, errno) }
        return fd
    }

    /// One worker thread: reads the directories the walk hands out until it ends.
    private func work(_ walk: Walk) {
        _ = clinux_set_idle_io_priority()
        let statter = makeStatter()
        let reader = DirectoryReader(walk: walk, statter: statter, isExcluded: isExcluded, onError: onError)
        while let directory = walk.nextDirectory() {
            let entries = reader.read(directory)
            walk.finished(directory, entries)
        }
    }

    private func makeStatter() -> EntryStatter {
        if backend == .automatic {
            do throws(HashBackendError) {
                let uring = try UringStatter()
                control.withLock { _ = $0.backendsUsed.insert(uring.name) }
                return uring
            } catch {
                control.withLock { c in
                    if c.fallbackReason == nil { c.fallbackReason = "\(error.description); statx one call at a time" }
                }
            }
        }
        let plain = PlainStatter()
        control.withLock { _ = $0.backendsUsed.insert(plain.name) }
        return plain
    }

    /// Yields the walk's entries in order on the caller's thread. Dropping it stops the
    /// walk's threads and waits for them (a directory each, at most, is being read).
    public final class Iterator: IteratorProtocol {
        private let walk: Walk?
        private var threads: [WorkerThread]
        private var frames: [Frame] = []
        /// The directory just yielded: its entries come next.
        private var descend: SyncPath?
        private var ended = false

        /// A directory being yielded, and how far.
        private struct Frame {
            var entries: [TreeEntry]
            var next = 0
        }

        fileprivate init(walk: Walk?, threads: [WorkerThread]) {
            self.walk = walk
            self.threads = threads
            descend = walk?.start
        }

        deinit { end() }

        public func next() -> TreeEntry? {
            guard let walk, !ended else { return nil }
            if walk.isStopping {
                end()
                return nil
            }
            while true {
                if let directory = descend {
                    descend = nil
                    guard let entries = walk.take(directory) else {
                        end()
                        return nil
                    }
                    if !entries.isEmpty { frames.append(Frame(entries: entries)) }
                }
                guard !frames.isEmpty else {
                    end()
                    return nil
                }
                let top = frames.count - 1
                if frames[top].next < frames[top].entries.count {
                    let entry = frames[top].entries[frames[top].next]
                    frames[top].next += 1
                    if entry.stat.kind == .directory { descend = entry.path }
                    return entry
                }
                frames.removeLast()
            }
        }

        /// Stops the workers, waits for them and closes the root.
        private func end() {
            guard !ended else { return }
            ended = true
            frames = []
            guard let walk else { return }
            walk.stop()
            for thread in threads { thread.join() }
            threads = []
            walk.closeRoot()
        }
    }
}

// MARK: - The walk's shared state

/// One walk: the directories to read, the listings read ahead, and who waits for what,
/// under one mutex. Workers wait on `workCond`, the consumer on `readyCond`; each side is
/// woken only when the other has something for it (a wake-up is a context switch, and
/// there is one listing per directory).
private final class Walk: @unchecked Sendable {
    let rootFD: Int32
    let start: SyncPath
    let prefetch: Int
    private let stopFlag = Atomic<Bool>(false)

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let workCond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let readyCond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    // Guarded by `mutex`.
    /// Directories found and not yet read; the first in path order is read first.
    private var pending = PathHeap()
    private var inProgress = 0
    /// Listings read and not yet taken by the consumer, and their entry count.
    private var done: [SyncPath: [TreeEntry]] = [:]
    private var buffered = 0
    /// The directory the consumer waits for (always the first of all not yet taken).
    private var wanted: SyncPath?
    private var consumerWaiting = false
    private var idleWorkers = 0
    private var stopped = false
    private var rootClosed = false

    init(rootFD: Int32, start: SyncPath, prefetch: Int) {
        self.rootFD = rootFD
        self.start = start
        self.prefetch = prefetch
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(workCond, nil)
        pthread_cond_init(readyCond, nil)
        pending.push(start)
    }

    deinit {
        closeRoot()
        pthread_cond_destroy(readyCond)
        pthread_cond_destroy(workCond)
        pthread_mutex_destroy(mutex)
        readyCond.deallocate()
        workCond.deallocate()
        mutex.deallocate()
    }

    /// A cheap check for long loops (one large directory) and for the consumer.
    var isStopping: Bool { stopFlag.load(ordering: .relaxed) }

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Worker: the next directory to read, or nil when the walk is over (every directory
    /// read, or stopped). Past the prefetch window, only the directory the consumer waits
    /// for is handed out.
    func nextDirectory() -> SyncPath? {
        locked {
            while true {
                if stopped { return nil }
                if let first = pending.first, buffered < prefetch || first == wanted {
                    pending.popFirst()
                    inProgress += 1
                    return first
                }
                if pending.isEmpty && inProgress == 0 {
                    // Nothing left and nothing that could find more: the others end too.
                    pthread_cond_broadcast(workCond)
                    return nil
                }
                idleWorkers += 1
                pthread_cond_wait(workCond, mutex)
                idleWorkers -= 1
            }
        }
    }

    /// Worker: `directory`'s entries (sorted, filtered); its subdirectories become pending.
    func finished(_ directory: SyncPath, _ entries: [TreeEntry]) {
        locked {
            inProgress -= 1
            guard !stopped else { return }
            done[directory] = entries
            buffered += entries.count
            var found = false
            for entry in entries where entry.stat.kind == .directory {
                pending.push(entry.path)
                found = true
            }
            if consumerWaiting && wanted == directory { pthread_cond_signal(readyCond) }
            if idleWorkers > 0 && (found || (pending.isEmpty && inProgress == 0)) {
                pthread_cond_broadcast(workCond)
            }
        }
    }

    /// Consumer: `directory`'s entries, once a worker has read them; nil when stopped.
    func take(_ directory: SyncPath) -> [TreeEntry]? {
        locked {
            while true {
                if stopped { return nil }
                if let entries = done.removeValue(forKey: directory) {
                    let wasFull = buffered >= prefetch
                    buffered -= entries.count
                    wanted = nil
                    if wasFull && buffered < prefetch && idleWorkers > 0 { pthread_cond_broadcast(workCond) }
                    return entries
                }
                if wanted != directory {
                    wanted = directory
                    // Past the window, an idle worker may be waiting for exactly this.
                    if idleWorkers > 0 && pending.first == directory { pthread_cond_broadcast(workCond) }
                }
                consumerWaiting = true
                pthread_cond_wait(readyCond, mutex)
                consumerWaiting = false
            }
        }
    }

    /// Ends the walk: workers return after their current directory, the consumer gets nil.
    func stop() {
        locked {
            stopped = true
            stopFlag.store(true, ordering: .relaxed)
            pending = PathHeap()
            done = [:]
            pthread_cond_broadcast(workCond)
            pthread_cond_broadcast(readyCond)
        }
    }

    /// After the workers are joined.
    func closeRoot() {
        let close = locked { () -> Bool in
            defer { rootClosed = true }
            return !rootClosed
        }
        if close { Glibc.close(rootFD) }
    }
}

/// A binary min-heap of paths in `SyncPath` order.
private struct PathHeap {
    private var items: [SyncPath] = []

    var isEmpty: Bool { items.isEmpty }
    var first: SyncPath? { items.first }

    mutating func push(_ path: SyncPath) {
        items.append(path)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popFirst() {
        let last = items.removeLast()
        guard !items.isEmpty else { return }
        items[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count && items[left] < items[smallest] { smallest = left }
            if right < items.count && items[right] < items[smallest] { smallest = right }
            if smallest == parent { return }
            items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}

// MARK: - Reading one directory

/// Reads one directory at a time on a worker thread: open beneath the root, names,
/// sort, `statx` in batches, filter. Owns its `statx` backend (and so its ring).
private final class DirectoryReader {
    private let walk: Walk
    private let statter: EntryStatter
    private let isExcluded: @Sendable (SyncPath, Bool) -> Bool
    private let onError: @Sendable (SyncPath, Int32) -> Void
    /// The directory's names, each followed by a NUL (C strings for `statx`), and where
    /// each starts: one buffer per thread rather than one allocation per name.
    private var names: [UInt8] = []
    private var refs: [NameRef] = []
    private let stats: UnsafeMutablePointer<statx>
    private var errors: [Int32]
    private var cNames: [UnsafePointer<CChar>?]

    private struct NameRef {
        var start: Int32
        var length: Int32
    }

    /// `statx` calls per batch (one io_uring submission).
    static let batch = 256

    init(walk: Walk, statter: EntryStatter,
         isExcluded: @escaping @Sendable (SyncPath, Bool) -> Bool,
         onError: @escaping @Sendable (SyncPath, Int32) -> Void) {
        self.walk = walk
        self.statter = statter
        self.isExcluded = isExcluded
        self.onError = onError
        stats = .allocate(capacity: Self.batch)
        stats.initialize(repeating: statx(), count: Self.batch)
        errors = Array(repeating: 0, count: Self.batch)
        cNames = Array(repeating: nil, count: Self.batch)
    }

    deinit { stats.deallocate() }

    /// The directory's entries in path order, excluded ones left out. Empty when it cannot
    /// be opened (reported unless it vanished) or the walk stopped.
    func read(_ directory: SyncPath) -> [TreeEntry] {
        let fd = open(directory)
        if fd < 0 {
            let code = errno
            if directory == walk.start || !Self.vanished(code) { onError(directory, code) }
            return []
        }
        guard let dir = fdopendir(fd) else {
            onError(directory, errno)
            close(fd)
            return []
        }
        defer { closedir(dir) }
        if let code = readNames(dir) {
            // What was read is still there; the rest of the directory is not known.
            onError(directory, code)
        }
        sortNames()
        return statAndFilter(directory, dirFD: dirfd(dir))
    }

    /// ENOENT / ENOTDIR / ELOOP: the path is gone or is no longer a directory.
    static func vanished(_ code: Int32) -> Bool { code == ENOENT || code == ENOTDIR || code == ELOOP }

    private func open(_ directory: SyncPath) -> Int32 {
        if directory.isRoot { return openat(walk.rootFD, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        return (directory.bytes + [0]).withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) {
                clinux_open_beneath_nofollow(walk.rootFD, $0.baseAddress!, O_RDONLY | O_DIRECTORY)
            }
        }
    }

    /// Reads every name but "." and ".."; returns the errno if reading stopped on an error.
    private func readNames(_ dir: OpaquePointer) -> Int32? {
        names.removeAll(keepingCapacity: true)
        refs.removeAll(keepingCapacity: true)
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        while true {
            errno = 0
            guard let entry = readdir(dir) else { return errno == 0 ? nil : errno }
            let name = UnsafeRawPointer(entry).advanced(by: nameOffset).assumingMemoryBound(to: UInt8.self)
            let length = strlen(name)
            if name[0] == UInt8(ascii: ".") && (length == 1 || (length == 2 && name[1] == UInt8(ascii: "."))) { continue }
            refs.append(NameRef(start: Int32(names.count), length: Int32(length)))
            names.append(contentsOf: UnsafeBufferPointer(start: name, count: length + 1))  // with its NUL
        }
    }

    /// Byte order of the names (no name holds a '/', so this is `SyncPath` order).
    private func sortNames() {
        names.withUnsafeBufferPointer { base in
            let b = base.baseAddress!
            refs.sort { x, y in
                let c = memcmp(b + Int(x.start), b + Int(y.start), Int(min(x.length, y.length)))
                return c != 0 ? c < 0 : x.length < y.length
            }
        }
    }

    /// `statx` of the names in batches; vanished entries dropped, errors reported, excluded
    /// entries dropped.
    private func statAndFilter(_ directory: SyncPath, dirFD: Int32) -> [TreeEntry] {
        var entries: [TreeEntry] = []
        entries.reserveCapacity(refs.count)
        names.withUnsafeBufferPointer { base in
            let b = base.baseAddress!
            var first = 0
            while first < refs.count {
                if walk.isStopping { entries = []; return }
                let count = min(Self.batch, refs.count - first)
                for i in 0..<count {
                    cNames[i] = UnsafeRawPointer(b + Int(refs[first + i].start)).assumingMemoryBound(to: CChar.self)
                }
                cNames.withUnsafeBufferPointer { c in
                    errors.withUnsafeMutableBufferPointer { e in
                        statter.stat(dirFD: dirFD, names: c.baseAddress!, count: count, into: stats, errors: e.baseAddress!)
                    }
                }
                for i in 0..<count {
                    let ref = refs[first + i]
                    let path = Self.child(of: directory, UnsafeBufferPointer(start: b + Int(ref.start), count: Int(ref.length)))
                    if errors[i] != 0 {
                        if !Self.vanished(errors[i]) { onError(path, errors[i]) }
                        continue
                    }
                    let stat = FileStat(statx: stats[i])
                    if isExcluded(path, stat.kind == .directory) { continue }
                    entries.append(TreeEntry(path: path, stat: stat))
                }
                first += count
            }
        }
        return entries
    }

    /// `directory/name`, built in one allocation.
    static func child(of directory: SyncPath, _ name: UnsafeBufferPointer<UInt8>) -> SyncPath {
        let prefix = directory.bytes.count
        let count = prefix + (prefix == 0 ? 0 : 1) + name.count
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            var i = 0
            for byte in directory.bytes { out[i] = byte; i += 1 }
            if prefix > 0 { out[i] = UInt8(ascii: "/"); i += 1 }
            for byte in name { out[i] = byte; i += 1 }
            initialized = i
        }
        return SyncPath(bytes: bytes)
    }
}

// MARK: - statx backends

/// `statx` of names relative to a directory descriptor, never following a final symlink
/// and never triggering an automount (what `lstat` does).
private protocol EntryStatter: AnyObject {
    var name: String { get }
    /// Fills `out[i]`, or sets `errors[i]` to the errno (0 on success), for `count` names.
    func stat(dirFD: Int32, names: UnsafePointer<UnsafePointer<CChar>?>, count: Int,
              into out: UnsafeMutablePointer<statx>, errors: UnsafeMutablePointer<Int32>)
}

private enum StatxFlags {
    /// AT_NO_AUTOMOUNT (linux/fcntl.h), which Glibc shows Swift only under _GNU_SOURCE.
    static let noAutomount: Int32 = 0x800
    static let flags: Int32 = curing_at_symlink_nofollow | curing_at_statx_sync_as_stat | noAutomount
}

/// One blocking `statx` per name: the fallback where io_uring is refused.
private final class PlainStatter: EntryStatter {
    let name = "statx"

    func stat(dirFD: Int32, names: UnsafePointer<UnsafePointer<CChar>?>, count: Int,
              into out: UnsafeMutablePointer<statx>, errors: UnsafeMutablePointer<Int32>) {
        for i in 0..<count {
            let rc = clinux_statx(dirFD, names[i]!, StatxFlags.flags, FileStat.statxMask, out + i)
            errors[i] = rc == 0 ? 0 : errno
        }
    }
}

/// A batch of `IORING_OP_STATX` per call, on a ring that belongs to the calling thread:
/// one `io_uring_enter` per batch instead of one syscall per entry, and, where the
/// metadata is not cached, the kernel works on the whole batch at once.
private final class UringStatter: EntryStatter {
    let name = "io_uring"
    private let ring: OpaquePointer
    private var cqeData: [UInt64]
    private var cqeRes: [Int32]

    init() throws(HashBackendError) {
        let entries = UInt32(DirectoryReader.batch)
        guard let ring = curing_ring_create(entries) else {
            throw HashBackendError(operation: "io_uring_queue_init(\(entries))", errno: errno)
        }
        self.ring = ring
        cqeData = Array(repeating: 0, count: DirectoryReader.batch)
        cqeRes = Array(repeating: 0, count: DirectoryReader.batch)
    }

    deinit { curing_ring_destroy(ring) }

    func stat(dirFD: Int32, names: UnsafePointer<UnsafePointer<CChar>?>, count: Int,
              into out: UnsafeMutablePointer<statx>, errors: UnsafeMutablePointer<Int32>) {
        precondition(count <= cqeData.count)
        for i in 0..<count {
            // The ring has `batch` submission slots and all of them are free here.
            let rc = curing_prep_statx(ring, UInt64(i), dirFD, names[i]!, StatxFlags.flags, FileStat.statxMask, out + i)
            precondition(rc == 0, "io_uring submission queue full")
        }
        var completed = 0
        while completed < count {
            let rc = curing_submit_and_wait(ring, UInt32(count - completed))
            if rc < 0 && rc != -EBUSY && rc != -EAGAIN {
                // The ring itself failed: nothing more can complete through it.
                fatalError("io_uring_submit_and_wait: \(String(cString: strerror(-rc)))")
            }
            let n = Int(cqeData.withUnsafeMutableBufferPointer { d in
                cqeRes.withUnsafeMutableBufferPointer { r in curing_reap(ring, d.baseAddress, r.baseAddress, UInt32(d.count)) }
            })
            for k in 0..<n {
                errors[Int(cqeData[k])] = cqeRes[k] < 0 ? -cqeRes[k] : 0
            }
            completed += n
        }
    }
}
