import CLinux
import CURing
import Glibc
import Synchronization

/// Walks the source tree (or one subtree of it) and yields every path in it with its
/// `statx`, in strictly increasing `SyncPath` order: what `TreeComparison.compare` merges
/// with the index at start and after a missed-event rescan.
///
/// How: worker threads read directories ahead of the consumer. Each takes a group of
/// pending directories (the first in path order first, so the one the consumer needs
/// next is never behind the others), reads their names (`getdents64`), sorts each
/// directory's names by bytes, and `statx`es every entry: in batches through an io_uring
/// of its own (the kernel runs them on its io-wq workers while this thread reads the
/// next group), or with plain `statx` calls where io_uring is refused. Directories are
/// then entered depth first, which is `SyncPath` order because `/` sorts before every
/// other byte ("a" < "a/b" < "a0"); the consumer, on its own thread, yields entries in
/// that order.
///
/// Memory stays bounded: workers stop reading ahead once `prefetch` entries (16,384,
/// about 2 MB) wait for the consumer, except for the directory the consumer waits on, so
/// a walk of 1,000,000 files holds a window of the tree, not the tree (plus the
/// directories being yielded, root to current, as any sorted walk must). What cannot be
/// bounded is one directory: its names must all be read to be sorted, as `ls` does.
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
    /// How entries are `statx`ed (Perf/hash/README.md, "Tree walk", has both measured).
    public enum Backend: Sendable, Equatable {
        /// io_uring batches, or plain `statx` when io_uring cannot be set up. Ahead where
        /// metadata must come from the disk (many requests at once); on a warm tree it
        /// costs somewhat more CPU than plain calls (the io-wq hand-offs).
        case automatic
        /// One `statx` call per entry, on the worker threads.
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
    /// Decides a whole directory's entries at once (with the directory's descriptor, for
    /// its rules files): one call, one lock, per directory instead of per path.
    public typealias DirectoryFilter = @Sendable (_ directory: SyncPath, _ fd: Int32, _ entries: [TreeEntry]) -> [TreeEntry]
    let filterDirectory: DirectoryFilter?

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
                            filterDirectory: DirectoryFilter? = nil,
                            onError: @escaping @Sendable (SyncPath, Int32) -> Void = { _, _ in }) {
        self.init(source: source, under: under, threads: threads, backend: backend, prefetch: 16_384,
                  isExcluded: isExcluded, filterDirectory: filterDirectory, onError: onError)
    }

    /// `prefetch`: tests make the window tiny to exercise waiting on it.
    init(source: [UInt8], under: SyncPath, threads: Int, backend: Backend, prefetch: Int,
         isExcluded: @escaping @Sendable (SyncPath, Bool) -> Bool,
         filterDirectory: DirectoryFilter? = nil,
         onError: @escaping @Sendable (SyncPath, Int32) -> Void) {
        self.filterDirectory = filterDirectory
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
        DirectoryReader(walk: walk, threads: threads, statter: statter, isExcluded: isExcluded,
                        filterDirectory: filterDirectory, onError: onError).run()
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
    /// walk's threads and waits for them (each finishes the directories it is reading and
    /// lets its `statx` in flight complete: milliseconds).
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

    /// Worker: the next directories to read (up to `groupSize`, first in path order
    /// first), or nil when the walk is over (every directory read, or stopped). Past the
    /// prefetch window, only the directory the consumer waits for is handed out.
    ///
    /// A group rather than one directory: one lock round and one wake-up per group, and
    /// one io_uring submission for the entries of several small directories. A group takes
    /// no more than its share of what is pending, so the other threads have work too.
    /// With `wait` false, returns [] at once when there is nothing to hand out now.
    func nextDirectories(threads: Int, wait: Bool) -> [SyncPath]? {
        locked {
            while true {
                if stopped { return nil }
                if let first = pending.first, buffered < prefetch || first == wanted {
                    let share = first == wanted && buffered >= prefetch
                        ? 1 : Swift.min(Walk.groupSize, Swift.max(1, pending.count / threads))
                    var group: [SyncPath] = []
                    group.reserveCapacity(share)
                    while group.count < share, let next = pending.first {
                        pending.popFirst()
                        group.append(next)
                    }
                    inProgress += group.count
                    return group
                }
                if pending.isEmpty && inProgress == 0 {
                    // Nothing left and nothing that could find more: the others end too.
                    pthread_cond_broadcast(workCond)
                    return nil
                }
                if !wait { return [] }
                idleWorkers += 1
                pthread_cond_wait(workCond, mutex)
                idleWorkers -= 1
            }
        }
    }

    /// Directories handed out together, at most.
    static let groupSize = 8

    /// Worker: the entries of each directory of `group` (sorted, filtered); their
    /// subdirectories become pending.
    func finished(_ group: [SyncPath], _ listings: [[TreeEntry]]) {
        locked {
            inProgress -= group.count
            guard !stopped else { return }
            var found = false
            var waitedFor = false
            for (directory, entries) in zip(group, listings) {
                done[directory] = entries
                buffered += entries.count
                for entry in entries where entry.stat.kind == .directory {
                    pending.push(entry.path)
                    found = true
                }
                if directory == wanted { waitedFor = true }
            }
            if consumerWaiting && waitedFor { pthread_cond_signal(readyCond) }
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

    /// Ends the walk: workers return once their statx in flight complete, the consumer
    /// gets nil.
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
    var count: Int { items.count }
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

// MARK: - Reading directories

/// A group of directories on its way through a worker: opened, names read and sorted,
/// `statx` jobs queued, entries built as the results come back in order.
private final class Group {
    var paths: [SyncPath] = []
    /// Per directory: its descriptor (-1 when it did not open), kept open until every
    /// `statx` relative to it has completed.
    var fds: [Int32] = []
    /// The names, each followed by a NUL: C strings for `statx`, at addresses that stay
    /// put while the kernel may read them (one buffer, not one allocation per name).
    var names = UnsafeMutablePointer<UInt8>.allocate(capacity: 4096)
    var namesCapacity = 4096
    var namesCount = 0
    /// Where each name starts and its length, sorted per directory, and its directory.
    var refs: [NameRef] = []
    var directoryOf: [Int32] = []
    var listings: [[TreeEntry]] = []
    /// Jobs queued, and jobs whose result was turned into an entry (in order).
    var queued = 0
    var converted = 0

    struct NameRef {
        var start: Int32
        var length: Int32
    }

    deinit { names.deallocate() }

    var isComplete: Bool { converted == refs.count }

    func reset() {
        paths = []
        fds.removeAll(keepingCapacity: true)
        namesCount = 0
        refs.removeAll(keepingCapacity: true)
        directoryOf.removeAll(keepingCapacity: true)
        listings.removeAll(keepingCapacity: true)
        queued = 0
        converted = 0
    }

    func appendName(_ name: UnsafePointer<UInt8>, length: Int, directory: Int) {
        if namesCount + length + 1 > namesCapacity {
            let grown = UnsafeMutablePointer<UInt8>.allocate(capacity: Swift.max(namesCapacity * 2, namesCount + length + 1))
            grown.update(from: names, count: namesCount)
            names.deallocate()
            names = grown
            namesCapacity = Swift.max(namesCapacity * 2, namesCount + length + 1)
        }
        refs.append(NameRef(start: Int32(namesCount), length: Int32(length)))
        directoryOf.append(Int32(directory))
        (names + namesCount).update(from: name, count: length + 1)  // with its NUL
        namesCount += length + 1
    }

    /// Byte order of one directory's names (no name holds a '/', so this is `SyncPath` order).
    func sortNames(_ range: Range<Int>) {
        guard range.count > 1 else { return }
        let base = names
        refs[range].sort { x, y in
            let c = memcmp(base + Int(x.start), base + Int(y.start), Int(Swift.min(x.length, y.length)))
            return c != 0 ? c < 0 : x.length < y.length
        }
    }

    func closeAll() {
        for i in fds.indices where fds[i] >= 0 {
            close(fds[i])
            fds[i] = -1
        }
    }
}

/// One worker's pipeline. It reads a group of directories (open, `getdents64`, sort),
/// queues a `statx` for every name, and, while those run, reads the next group; results
/// are turned into entries in queue order, and a group whose entries are all built is
/// handed to the walk. At most `slots` jobs are in flight (their results are kept in
/// place until converted) and `maxGroups` groups are in progress.
private final class DirectoryReader {
    private let walk: Walk
    private let threads: Int
    private let statter: EntryStatter
    private let isExcluded: @Sendable (SyncPath, Bool) -> Bool
    private let filterDirectory: TreeWalker.DirectoryFilter?
    private let onError: @Sendable (SyncPath, Int32) -> Void
    private var groups: [Group] = []
    private var spare: [Group] = []
    /// Jobs queued and converted since the start: job `n` uses slot `n % slots`.
    private var queuedJobs = 0
    private var convertedJobs = 0
    private let direntBuffer: UnsafeMutableRawPointer
    private static let direntBufferSize = 64 << 10

    /// `statx` jobs in flight at most (and statx buffers: 256 bytes each).
    static let slots = 512
    static let maxGroups = 2

    init(walk: Walk, threads: Int, statter: EntryStatter,
         isExcluded: @escaping @Sendable (SyncPath, Bool) -> Bool,
         filterDirectory: TreeWalker.DirectoryFilter?,
         onError: @escaping @Sendable (SyncPath, Int32) -> Void) {
        self.walk = walk
        self.threads = threads
        self.statter = statter
        self.isExcluded = isExcluded
        self.filterDirectory = filterDirectory
        self.onError = onError
        direntBuffer = .allocate(byteCount: Self.direntBufferSize, alignment: 8)
    }

    deinit {
        abandon()
        direntBuffer.deallocate()
    }

    /// Reads the directories the walk hands out until it ends or stops.
    func run() {
        while true {
            guard let paths = walk.nextDirectories(threads: threads, wait: groups.isEmpty) else { break }
            if paths.isEmpty {
                // Nothing to start now: what this thread holds may be what others wait for.
                finishOldest()
                continue
            }
            start(paths)
            if groups.count >= Self.maxGroups { finishOldest() }
        }
        abandon()
    }

    // MARK: Steps

    private func start(_ paths: [SyncPath]) {
        let group = spare.popLast() ?? Group()
        group.paths = paths
        group.listings.reserveCapacity(paths.count)
        for (d, directory) in paths.enumerated() {
            let fd = open(directory)
            let first = group.refs.count
            if fd < 0 {
                let code = errno
                if directory == walk.start || !Self.vanished(code) { onError(directory, code) }
            } else if let code = readNames(fd, into: group, directory: d) {
                // What was read is still there; the rest of the directory is not known.
                onError(directory, code)
            }
            group.fds.append(fd)
            group.sortNames(first..<group.refs.count)
            var listing: [TreeEntry] = []
            listing.reserveCapacity(group.refs.count - first)
            group.listings.append(listing)
        }
        groups.append(group)
        queueJobs(of: group)
    }

    /// Queues a `statx` per name; converts results whenever every slot is taken. Stops
    /// queueing when the walk stops (a large directory would otherwise hold the thread).
    private func queueJobs(of group: Group) {
        while group.queued < group.refs.count {
            if walk.isStopping { break }
            if queuedJobs - convertedJobs == Self.slots {
                // Every slot taken: wait for a quarter of them rather than one at a time.
                statter.waitForCompletions(atLeast: Self.slots / 4)
                convertCompleted()
                continue
            }
            let ref = group.refs[group.queued]
            let fd = group.fds[Int(group.directoryOf[group.queued])]
            let name = UnsafeRawPointer(group.names + Int(ref.start)).assumingMemoryBound(to: CChar.self)
            statter.start(slot: queuedJobs % Self.slots, dirFD: fd, name: name)
            group.queued += 1
            queuedJobs += 1
        }
        statter.submit()
        convertCompleted()
    }

    /// Waits until the oldest group is complete and hands it to the walk (once the walk
    /// stopped, `abandon` deals with what is left).
    private func finishOldest() {
        guard let oldest = groups.first else { return }
        while !oldest.isComplete && !walk.isStopping {
            statter.waitForCompletions(atLeast: oldest.queued - oldest.converted)
            convertCompleted()
        }
    }

    /// Turns completed jobs into entries, oldest first, and hands every group whose jobs
    /// are all converted to the walk.
    private func convertCompleted() {
        while let head = groups.first {
            while head.converted < head.queued {
                let slot = convertedJobs % Self.slots
                guard statter.isDone(slot) else { return }
                convert(head, job: head.converted, slot: slot)
                statter.release(slot)
                head.converted += 1
                convertedJobs += 1
            }
            guard head.isComplete else { return }
            groups.removeFirst()
            if let filterDirectory, !walk.isStopping {
                for d in head.paths.indices where head.fds[d] >= 0 && !head.listings[d].isEmpty {
                    head.listings[d] = filterDirectory(head.paths[d], head.fds[d], head.listings[d])
                }
            }
            head.closeAll()
            let listings = walk.isStopping ? head.paths.map { _ in [] } : head.listings
            walk.finished(head.paths, listings)
            head.reset()
            spare.append(head)
        }
    }

    /// The entry for one job's result, appended to its directory's listing unless it
    /// vanished (silently), failed (reported) or is excluded.
    private func convert(_ group: Group, job: Int, slot: Int) {
        let ref = group.refs[job]
        let d = Int(group.directoryOf[job])
        let path = Self.child(of: group.paths[d], UnsafeBufferPointer(start: group.names + Int(ref.start), count: Int(ref.length)))
        let code = statter.error(slot)
        if code != 0 {
            if !Self.vanished(code) { onError(path, code) }
            return
        }
        let stat = FileStat(statx: statter.result(slot))
        if isExcluded(path, stat.kind == .directory) { return }
        group.listings[d].append(TreeEntry(path: path, stat: stat))
    }

    /// The walk stopped (or ended): lets every job in flight complete (the kernel writes
    /// into our buffers and resolves names against our descriptors), then closes them.
    private func abandon() {
        while queuedJobs > convertedJobs {
            let slot = convertedJobs % Self.slots
            while !statter.isDone(slot) { statter.waitForCompletions(atLeast: 1) }
            statter.release(slot)
            convertedJobs += 1
        }
        for group in groups {
            group.closeAll()
            walk.finished(group.paths, group.paths.map { _ in [] })
        }
        groups = []
    }

    // MARK: Directories

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

    /// Appends every name but "." and ".." to the group; returns the errno if reading
    /// stopped on an error.
    private func readNames(_ fd: Int32, into group: Group, directory: Int) -> Int32? {
        while true {
            let n = clinux_getdents64(fd, direntBuffer, Self.direntBufferSize)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if n == 0 { return nil }
            var offset = 0
            while offset < n {
                let record = direntBuffer + offset
                let name = (record + 19).assumingMemoryBound(to: UInt8.self)  // d_name
                let length = strlen(name)
                offset += Int(record.loadUnaligned(fromByteOffset: 16, as: UInt16.self))  // d_reclen
                if name[0] == UInt8(ascii: ".") && (length == 1 || (length == 2 && name[1] == UInt8(ascii: "."))) { continue }
                group.appendName(name, length: length, directory: directory)
            }
        }
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

/// `statx` of names relative to directory descriptors, never following a final symlink
/// and never triggering an automount (what `lstat` does), into numbered slots: a job is
/// started in a free slot, and its slot holds the result until released.
private protocol EntryStatter: AnyObject {
    var name: String { get }
    func start(slot: Int, dirFD: Int32, name: UnsafePointer<CChar>)
    /// Hands the started jobs to the kernel without waiting.
    func submit()
    /// Waits until at least `count` more jobs complete (some must be in flight).
    func waitForCompletions(atLeast count: Int)
    func isDone(_ slot: Int) -> Bool
    /// 0, or the job's errno.
    func error(_ slot: Int) -> Int32
    func result(_ slot: Int) -> statx
    func release(_ slot: Int)
}

private enum StatxFlags {
    /// AT_NO_AUTOMOUNT (linux/fcntl.h), which Glibc shows Swift only under _GNU_SOURCE.
    static let noAutomount: Int32 = 0x800
    static let flags: Int32 = curing_at_symlink_nofollow | curing_at_statx_sync_as_stat | noAutomount
}

/// The slots' storage: results, errnos and completion flags.
private final class StatSlots {
    let results: UnsafeMutablePointer<statx>
    let errors: UnsafeMutablePointer<Int32>
    let done: UnsafeMutablePointer<Bool>

    init(count: Int) {
        results = .allocate(capacity: count)
        results.initialize(repeating: statx(), count: count)
        errors = .allocate(capacity: count)
        errors.initialize(repeating: 0, count: count)
        done = .allocate(capacity: count)
        done.initialize(repeating: false, count: count)
    }

    deinit {
        results.deallocate()
        errors.deallocate()
        done.deallocate()
    }
}

/// One blocking `statx` per name, done when started: the fallback where io_uring is refused.
private final class PlainStatter: EntryStatter {
    let name = "statx"
    private let slots = StatSlots(count: DirectoryReader.slots)

    func start(slot: Int, dirFD: Int32, name: UnsafePointer<CChar>) {
        let rc = clinux_statx(dirFD, name, StatxFlags.flags, FileStat.statxMask, slots.results + slot)
        slots.errors[slot] = rc == 0 ? 0 : errno
        slots.done[slot] = true
    }

    func submit() {}
    func waitForCompletions(atLeast count: Int) {}
    func isDone(_ slot: Int) -> Bool { slots.done[slot] }
    func error(_ slot: Int) -> Int32 { slots.errors[slot] }
    func result(_ slot: Int) -> statx { slots.results[slot] }
    func release(_ slot: Int) { slots.done[slot] = false }
}

/// `IORING_OP_STATX` on a ring that belongs to the calling thread: one `io_uring_enter`
/// for many entries instead of one syscall each. The kernel runs these on its io-wq
/// workers, in parallel: on cold metadata the disk sees many requests at once, and on a
/// warm tree the work overlaps with this thread reading the next directories.
private final class UringStatter: EntryStatter {
    let name: String
    private let ring: OpaquePointer
    private let slots = StatSlots(count: DirectoryReader.slots)
    private var inFlight = 0
    private var prepared = 0
    private var cqeData: [UInt64]
    private var cqeRes: [Int32]

    init() throws(HashBackendError) {
        let entries = UInt32(DirectoryReader.slots)
        var deferred: Int32 = 0
        guard let ring = curing_ring_create_deferred(entries, &deferred) else {
            throw HashBackendError(operation: "io_uring_queue_init(\(entries))", errno: errno)
        }
        self.ring = ring
        name = deferred != 0 ? "io_uring" : "io_uring (immediate task work)"
        cqeData = Array(repeating: 0, count: DirectoryReader.slots)
        cqeRes = Array(repeating: 0, count: DirectoryReader.slots)
    }

    deinit { curing_ring_destroy(ring) }

    func start(slot: Int, dirFD: Int32, name: UnsafePointer<CChar>) {
        var rc = curing_prep_statx(ring, UInt64(slot), dirFD, name, StatxFlags.flags, FileStat.statxMask, slots.results + slot)
        if rc == -EBUSY {
            submit()
            rc = curing_prep_statx(ring, UInt64(slot), dirFD, name, StatxFlags.flags, FileStat.statxMask, slots.results + slot)
        }
        precondition(rc == 0, "io_uring submission queue full after submitting")
        prepared += 1
        inFlight += 1
    }

    func submit() {
        guard prepared > 0 else { return }
        enter(wait: 0)
    }

    func waitForCompletions(atLeast count: Int) {
        precondition(inFlight > 0, "waiting for statx with none in flight")
        enter(wait: Swift.min(count, inFlight))
    }

    func isDone(_ slot: Int) -> Bool { slots.done[slot] }
    func error(_ slot: Int) -> Int32 { slots.errors[slot] }
    func result(_ slot: Int) -> statx { slots.results[slot] }
    func release(_ slot: Int) { slots.done[slot] = false }

    /// Submits what is prepared, waits for `wait` completions, and records every
    /// completion available.
    private func enter(wait: Int) {
        let rc = curing_submit_and_wait(ring, UInt32(wait))
        if rc < 0 && rc != -EBUSY && rc != -EAGAIN {
            // The ring itself failed: nothing more can complete through it.
            fatalError("io_uring_submit_and_wait: \(String(cString: strerror(-rc)))")
        }
        if rc > 0 { prepared -= Int(rc) }
        let n = Int(cqeData.withUnsafeMutableBufferPointer { d in
            cqeRes.withUnsafeMutableBufferPointer { r in curing_reap(ring, d.baseAddress, r.baseAddress, UInt32(d.count)) }
        })
        for k in 0..<n {
            let slot = Int(cqeData[k])
            slots.errors[slot] = cqeRes[k] < 0 ? -cqeRes[k] : 0
            slots.done[slot] = true
        }
        inFlight -= n
    }
}
