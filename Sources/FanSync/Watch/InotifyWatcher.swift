import CLinux
import Glibc
import Synchronization

/// Why the inotify backend could not start.
public enum InotifyWatcherError: Error, CustomStringConvertible, Equatable {
    /// `inotify_init1` failed (for example EMFILE: fs.inotify.max_user_instances reached).
    case initFailed(errno: Int32, detail: String)
    /// The eventfd used to wake the reader thread could not be created.
    case wakeupFailed(errno: Int32)
    /// The source root itself cannot be watched (missing, not a directory, no permission).
    case rootNotWatchable(path: String, errno: Int32)
    /// `start` was called while the watcher was already running.
    case alreadyRunning
    /// The reader thread could not be started.
    case threadFailed(errno: Int32)

    public var description: String {
        switch self {
        case .initFailed(let e, let detail):
            return "inotify: inotify_init1 failed: \(InotifyWatcher.errnoText(e))\(detail)"
        case .wakeupFailed(let e):
            return "inotify: cannot create the eventfd that stops the reader: \(InotifyWatcher.errnoText(e))"
        case .rootNotWatchable(let path, let e):
            return "inotify: cannot watch the source directory \(path): \(InotifyWatcher.errnoText(e))"
        case .alreadyRunning:
            return "inotify: the watcher is already running"
        case .threadFailed(let e):
            return "inotify: cannot start the reader thread: \(InotifyWatcher.errnoText(e))"
        }
    }
}

/// The unprivileged fallback: one inotify watch per directory of the source.
///
/// `start` places every watch before it returns (so nothing done after it is missed), then
/// a reader thread turns kernel events into `WatchEvent`s relative to the source root and
/// delivers them in batches, in order. Directories are walked without following symlinks;
/// a directory the filter excludes is never watched nor descended into.
public final class InotifyWatcher: WatchBackend {
    public let name = "inotify"

    private let sourceRoot: [UInt8]
    private let filter: WatchFilter
    private let log: @Sendable (String) -> Void
    private let lifecycle = Mutex<Lifecycle>(Lifecycle())

    private struct Lifecycle: Sendable {
        var running: (thread: pthread_t, wakeFd: Int32, shared: InotifyShared)?
        /// start() is placing watches (outside the lock).
        var starting = false
        /// stop() was called while start() was placing watches.
        var stopWhileStarting = false
        /// Figures of the current (or last) run, for `watchedDescription`.
        var shared: InotifyShared?
    }

    /// - Parameters:
    ///   - sourceRoot: absolute path of the source directory, as bytes.
    ///   - filter: returns false for a path to ignore; an excluded directory gets no watch.
    ///   - log: receives one line per noteworthy condition (watch limit, unwatchable
    ///     directory, overflow).
    public init(sourceRoot: [UInt8], filter: @escaping WatchFilter,
                log: @escaping @Sendable (String) -> Void) {
        var root = sourceRoot
        while root.count > 1 && root.last == UInt8(ascii: "/") { root.removeLast() }
        self.sourceRoot = root
        self.filter = filter
        self.log = log
    }

    deinit {
        stop()
    }

    public var watchedDescription: [String] {
        let shared = lifecycle.withLock { $0.shared }
        let watched = shared?.watched.load(ordering: .relaxed) ?? 0
        let skipped = shared?.limitSkipped.load(ordering: .relaxed) ?? 0
        var line = "inotify: \(watched) director\(watched == 1 ? "y" : "ies") under \(SyncPath.displayString(sourceRoot))"
        if skipped > 0 {
            line += " (\(skipped) not watched: fs.inotify.max_user_watches reached)"
        }
        return [line]
    }

    public func start(deliver: @escaping @Sendable ([WatchEvent]) -> Void) throws {
        // The walk runs outside the lock, so watchedDescription shows it progressing.
        let shared = InotifyShared()
        try lifecycle.withLock { state in
            if state.running != nil || state.starting { throw InotifyWatcherError.alreadyRunning }
            state.starting = true
            state.stopWhileStarting = false
            state.shared = shared
        }
        let started: (pthread_t, Int32)
        do {
            started = try launch(shared: shared, deliver: deliver)
        } catch {
            lifecycle.withLock { $0.starting = false }
            throw error
        }
        let stopAtOnce = lifecycle.withLock { state -> Bool in
            state.starting = false
            if state.stopWhileStarting { return true }
            state.running = (started.0, started.1, shared)
            return false
        }
        if stopAtOnce { Self.halt(thread: started.0, wakeFd: started.1, shared: shared) }
    }

    /// Opens the descriptors, places every watch and starts the reader thread.
    private func launch(shared: InotifyShared,
                        deliver: @escaping @Sendable ([WatchEvent]) -> Void) throws -> (pthread_t, Int32) {
        let fd = inotify_init1(Int32(truncatingIfNeeded: IN_CLOEXEC) | Int32(truncatingIfNeeded: IN_NONBLOCK))
        if fd < 0 {
            let e = errno
            let detail = e == EMFILE
                ? " (fs.inotify.max_user_instances is \(Self.readProcValue("/proc/sys/fs/inotify/max_user_instances") ?? "unknown"); raise it with sysctl)"
                : ""
            throw InotifyWatcherError.initFailed(errno: e, detail: detail)
        }
        let wakeFd = eventfd(0, Int32(truncatingIfNeeded: EFD_CLOEXEC) | Int32(truncatingIfNeeded: EFD_NONBLOCK))
        if wakeFd < 0 {
            let e = errno
            close(fd)
            throw InotifyWatcherError.wakeupFailed(errno: e)
        }

        let reader = InotifyReader(inotifyFd: fd, wakeFd: wakeFd, sourceRoot: sourceRoot,
                                   filter: filter, log: log, shared: shared, deliver: deliver)
        // Every watch is in place before start returns.
        let rootErrno = reader.watchInitialTree()
        if rootErrno != 0 {
            close(fd)
            close(wakeFd)
            throw InotifyWatcherError.rootNotWatchable(path: SyncPath.displayString(sourceRoot), errno: rootErrno)
        }

        let box = Unmanaged.passRetained(InotifyReaderBox(reader))
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<InotifyReaderBox>.fromOpaque(raw!).takeRetainedValue()
            box.reader.run()
            return nil
        }, box.toOpaque())
        if rc != 0 {
            box.release()
            close(fd)
            close(wakeFd)
            throw InotifyWatcherError.threadFailed(errno: rc)
        }
        return (thread, wakeFd)
    }

    /// Re-applies the filter under `path` after its answers changed (a rules file was edited):
    /// directories it now admits get watches, those it now excludes lose them, and a
    /// `.rescan(path)` follows so the consumer syncs what became visible. Asynchronous: done
    /// on the reader thread, in order with the events. Ignored when the watcher is not running.
    public func rewatch(_ path: SyncPath) {
        lifecycle.withLock { state in
            guard let (_, wakeFd, shared) = state.running else { return }
            shared.requestRewatch(path)
            var one: UInt64 = 1
            _ = write(wakeFd, &one, MemoryLayout<UInt64>.size)
        }
    }

    public func stop() {
        // Not joined under the lock: a delivery callback may read watchedDescription.
        let taken = lifecycle.withLock { state -> (pthread_t, Int32, InotifyShared)? in
            if state.starting {
                // start() is still walking: it stops the thread itself before it returns.
                state.stopWhileStarting = true
                return nil
            }
            defer { state.running = nil }
            return state.running
        }
        guard let (thread, wakeFd, shared) = taken else { return }
        Self.halt(thread: thread, wakeFd: wakeFd, shared: shared)
    }

    private static func halt(thread: pthread_t, wakeFd: Int32, shared: InotifyShared) {
        shared.stopRequested.store(true, ordering: .sequentiallyConsistent)
        if pthread_equal(thread, pthread_self()) != 0 {
            // Called from a delivery callback: the thread cannot join itself. It ends after
            // this batch and closes both of its descriptors on its way out.
            shared.closeWakeFdOnExit.store(true, ordering: .sequentiallyConsistent)
            pthread_detach(thread)
            return
        }
        var one: UInt64 = 1
        _ = write(wakeFd, &one, MemoryLayout<UInt64>.size)
        pthread_join(thread, nil)
        close(wakeFd)
    }

    static func errnoText(_ e: Int32) -> String {
        "\(String(cString: strerror(e))) (errno \(e))"
    }

    static func readProcValue(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[..<n], as: UTF8.self)
        return text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first.map(String.init)
    }
}

/// What one run's reader thread shares with the watcher: its figures, and the stop flags.
final class InotifyShared: Sendable {
    let watched = Atomic<Int>(0)
    let limitSkipped = Atomic<Int>(0)
    let stopRequested = Atomic<Bool>(false)
    /// Set when stop() ran on the reader thread itself (from a delivery): nobody joins it,
    /// so it closes the wake descriptor itself.
    let closeWakeFdOnExit = Atomic<Bool>(false)
    private let rewatchRequests = Mutex<[SyncPath]>([])

    func requestRewatch(_ path: SyncPath) {
        rewatchRequests.withLock { $0.append(path) }
    }

    func takeRewatchRequests() -> [SyncPath] {
        rewatchRequests.withLock { requests in
            defer { requests.removeAll() }
            return requests
        }
    }
}

/// Carries the reader (which belongs to one thread at a time) into its thread.
private final class InotifyReaderBox: @unchecked Sendable {
    let reader: InotifyReader
    init(_ reader: InotifyReader) { self.reader = reader }
}
