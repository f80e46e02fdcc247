import Glibc
import CLinux
import Synchronization

/// Watches a source tree with fanotify: one `FAN_MARK_FILESYSTEM` mark per filesystem
/// under the source (the source's own and every one mounted below it), events reported as
/// directory handle + name, handles resolved to paths through a cache.
///
/// `start()` throws a `FanotifyError` naming the cause (no CAP_SYS_ADMIN, a filesystem that
/// refuses marks or has no file handles, an old kernel) so that the caller can fall back to
/// inotify. Events are read and delivered by the watcher's own thread, in the order read,
/// one batch per read (consecutive full reads during a burst form one batch). A watcher
/// starts once; after `stop()` make a new one.
///
/// Directory handles are resolved when an event is read, not when it happened. Within one
/// batch, events that precede a directory rename of the same batch get the names they had
/// then ("d/f changed, d renamed to e", not "e/f changed, d renamed to e"); an event read in
/// an earlier batch than a rename that was already done can carry the newer name. The
/// kernel also merges events on the same object (create+write+close arrive as one; a
/// create and a delete of the same file as one, resolved here by looking at what is there
/// now), so a consumer treats events as "look at this path", the source being the truth.
public final class FanotifyWatcher: WatchBackend {
    public let name = "fanotify"

    private let sourceRoot: [UInt8]
    private let useRenameEvents: Bool
    private let filter: WatchFilter
    private let log: @Sendable (String) -> Void
    private let stopSignal = StopSignal()
    private let description = SharedLines()
    private let state = Mutex<State>(State())

    private struct State: ~Copyable {
        var started = false
        var thread: pthread_t? = nil
        var wake: WakeDescriptor? = nil
        var usesRename = false
        var ownWrites: OwnWrites? = nil
    }

    /// - Parameters:
    ///   - sourceRoot: absolute path of the source, without a trailing slash.
    ///   - filter: called with each path (relative to the source) and whether it is a
    ///     directory; `false` drops the event. Called on the watcher thread; keep it cheap.
    ///   - log: receives one line per noteworthy thing (backend chosen, mounts, warnings).
    public convenience init(sourceRoot: [UInt8], filter: @escaping WatchFilter,
                            log: @escaping @Sendable (String) -> Void) {
        self.init(sourceRoot: sourceRoot, filter: filter, log: log, useRenameEvents: true)
    }

    /// `useRenameEvents: false` asks for FAN_MOVED_FROM/FAN_MOVED_TO as kernels before 5.17
    /// must (tests use it to exercise that path on any kernel).
    init(sourceRoot: [UInt8], filter: @escaping WatchFilter,
         log: @escaping @Sendable (String) -> Void, useRenameEvents: Bool) {
        self.sourceRoot = sourceRoot
        self.filter = filter
        self.log = log
        self.useRenameEvents = useRenameEvents
    }

    deinit {
        stop()
    }

    /// One line per filesystem marked: mount point, filesystem type, fsid.
    public var watchedDescription: [String] {
        description.lines.withLock { $0 }
    }

    /// Whether the kernel reports renames as one `FAN_RENAME` event (Linux 5.17+). When
    /// false, a rename arrives as a removal and a creation.
    public var reportsRenames: Bool {
        state.withLock { $0.usesRename }
    }

    /// Ignore marks for the directories a batch writes into on a backup (see `OwnWrites`);
    /// nil until started.
    public var ownWrites: OwnWrites? {
        state.withLock { $0.ownWrites }
    }

    public func start(deliver: @escaping @Sendable ([WatchEvent]) -> Void) throws {
        let already = state.withLock { s -> Bool in
            if s.started { return true }
            s.started = true
            return false
        }
        if already { throw FanotifyError("this fanotify watcher was already started") }
        let reader: FanotifyReader
        do {
            let description = self.description
            reader = try FanotifyReader(sourceRoot: sourceRoot, filter: filter, log: log,
                                        updateDescription: { lines in description.lines.withLock { $0 = lines } },
                                        useRenameEvents: useRenameEvents)
            try reader.setUp()
        } catch {
            state.withLock { $0.started = false }
            throw error
        }
        let wake: WakeDescriptor
        do {
            wake = try WakeDescriptor()
        } catch {
            state.withLock { $0.started = false }
            throw error
        }
        // Read what the caller may ask about before the thread owns the reader.
        let usesRename = reader.usesRename
        let lines = reader.descriptions
        let ownWrites = OwnWrites(duplicating: reader.fanFD)
        let box = ThreadBody(reader: reader, wake: wake, stop: stopSignal, deliver: deliver)
        let context = Unmanaged.passRetained(box).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let body = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
            body.run()
            return nil
        }, context)
        if rc != 0 {
            ownWrites.close()
            Unmanaged<ThreadBody>.fromOpaque(context).release()
            state.withLock { $0.started = false }
            throw FanotifyError("cannot start the fanotify thread", errno: rc)
        }
        state.withLock {
            $0.thread = thread
            $0.wake = wake
            $0.usesRename = usesRename
            $0.ownWrites = ownWrites
        }
        for line in lines { log("fanotify: watching \(line)") }
    }

    public func stop() {
        let taken = state.withLock { s -> (pthread_t, WakeDescriptor)? in
            s.ownWrites?.close()
            guard let t = s.thread, let w = s.wake else { return nil }
            s.thread = nil
            s.wake = nil
            return (t, w)
        }
        guard let (thread, wake) = taken else { return }
        stopSignal.set()
        wake.signal()
        if pthread_equal(thread, pthread_self()) != 0 {
            // Called from a delivery: the thread ends when the delivery returns.
            pthread_detach(thread)
            return
        }
        pthread_join(thread, nil)
    }
}

/// What the watcher thread runs; owns the reader (and so every descriptor) until it ends.
private final class ThreadBody: @unchecked Sendable {
    // The reader is only touched by the thread once it starts (start() read its
    // descriptors before handing it over and does not keep it).
    private let reader: FanotifyReader
    private let wake: WakeDescriptor
    private let stop: StopSignal
    private let deliver: @Sendable ([WatchEvent]) -> Void

    init(reader: FanotifyReader, wake: WakeDescriptor, stop: StopSignal,
         deliver: @escaping @Sendable ([WatchEvent]) -> Void) {
        self.reader = reader
        self.wake = wake
        self.stop = stop
        self.deliver = deliver
    }

    func run() {
        reader.run(wakeFD: wake.fd, stop: stop, deliver: deliver)
        reader.closeAll()
    }
}

/// The eventfd that wakes the watcher thread; closed when neither side holds it.
final class WakeDescriptor: Sendable {
    let fd: Int32

    init() throws(FanotifyError) {
        fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        if fd < 0 { throw FanotifyError("eventfd failed", errno: errno) }
    }

    func signal() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    deinit { close(fd) }
}

final class SharedLines: Sendable {
    let lines = Mutex<[String]>([])
}
