import Synchronization

/// One watcher per source directory, shared by every mirror of that source (two `sync{}`
/// blocks sending one directory to two targets watch it once). A path is watched when any
/// subscriber wants it; each mirror then applies its own rules to what it receives.
public final class WatcherRegistry: Sendable {
    final class Shared: @unchecked Sendable {
        let backend: WatchBackend
        let subscribers = Mutex<[Int: Subscriber]>([:])
        let reason: String
        init(backend: WatchBackend, reason: String) {
            self.backend = backend
            self.reason = reason
        }
    }

    struct Subscriber {
        let filter: WatchFilter
        let deliver: @Sendable ([WatchEvent]) -> Void
    }

    private struct State {
        var shared: [[UInt8]: Shared] = [:]
        var nextID = 1
    }
    private let state = Mutex(State())
    let log: Logger

    public init(log: Logger) { self.log = log }

    /// A subscription: the backend it reads from, and how to leave.
    public struct Subscription: Sendable {
        public let id: Int
        public let source: [UInt8]
        public let backend: WatchBackend
        /// Why this backend runs (for the log).
        public let reason: String
    }

    /// Subscribes to the watcher of `source`, starting one with `backend` if none runs.
    /// When one runs already, it is shared whatever backend it uses.
    public func subscribe(source: [UInt8], backend: Backend, name: String, filter: @escaping WatchFilter,
                          deliver: @escaping @Sendable ([WatchEvent]) -> Void) throws -> Subscription {
        try state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            let subscriber = Subscriber(filter: filter, deliver: deliver)
            if let existing = s.shared[source] {
                existing.subscribers.withLock { $0[id] = subscriber }
                return Subscription(id: id, source: source, backend: existing.backend,
                                    reason: "shared with another mirror of this source")
            }
            let shared = try start(source: source, backend: backend, name: name, first: (id, subscriber))
            s.shared[source] = shared
            return Subscription(id: id, source: source, backend: shared.backend, reason: shared.reason)
        }
    }

    /// True when more than one mirror reads the watcher of `source`.
    public func isShared(_ source: [UInt8]) -> Bool {
        guard let shared = state.withLock({ $0.shared[source] }) else { return false }
        return shared.subscribers.withLock { $0.count > 1 }
    }

    /// Leaves; the watcher stops when its last subscriber leaves.
    public func unsubscribe(_ subscription: Subscription) {
        let toStop: Shared? = state.withLock { s in
            guard let shared = s.shared[subscription.source] else { return nil }
            let empty = shared.subscribers.withLock { subs -> Bool in
                subs[subscription.id] = nil
                return subs.isEmpty
            }
            if empty { s.shared[subscription.source] = nil; return shared }
            return nil
        }
        toStop?.backend.stop()
    }

    private func start(source: [UInt8], backend: Backend, name: String, first: (Int, Subscriber)) throws -> Shared {
        // The shared object exists before the backend starts so that its filter and
        // delivery can reach the subscribers from the first event on.
        // (`share` fills the box before any backend starts.)
        let box = Mutex<Shared?>(nil)
        let filter: WatchFilter = { path, isDirectory in
            guard let shared = box.withLock({ $0 }) else { return false }
            return shared.subscribers.withLock { subs in subs.values.contains { $0.filter(path, isDirectory) } }
        }
        let deliver: @Sendable ([WatchEvent]) -> Void = { events in
            guard let shared = box.withLock({ $0 }) else { return }
            let targets = shared.subscribers.withLock { Array($0.values) }
            for t in targets { t.deliver(events) }
        }
        func share(_ backend: WatchBackend, reason: String) -> Shared {
            let shared = Shared(backend: backend, reason: reason)
            shared.subscribers.withLock { $0[first.0] = first.1 }
            box.withLock { $0 = shared }
            return shared
        }
        let logLine: @Sendable (String) -> Void = { [log] in log.info("\(name): \($0)") }
        var reasons: [String] = []
        if backend != .inotify {
            let fan = FanotifyWatcher(sourceRoot: source, filter: filter, log: logLine)
            let shared = share(fan, reason: backend == .fanotify ? "--backend fanotify" : "allowed here")
            do {
                try fan.start(deliver: deliver)
                return shared
            } catch {
                if backend == .fanotify { throw WatchStartError(description: "fanotify cannot watch \(SyncPath.displayString(source)): \(error)") }
                reasons.append("\(error)")
            }
        }
        let ino = InotifyWatcher(sourceRoot: source, filter: filter, log: logLine)
        let shared = share(ino, reason: backend == .inotify ? "--backend inotify" : "fanotify unavailable: \(reasons.joined(separator: "; "))")
        try ino.start(deliver: deliver)
        return shared
    }

    struct WatchStartError: Error, CustomStringConvertible { let description: String }
}
