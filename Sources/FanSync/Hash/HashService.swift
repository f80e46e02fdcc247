import CLinux
import Glibc

/// A content hasher on a thread of its own: the io_uring (or the plain fallback) is
/// created on that thread and never leaves it; callers hand over batches of absolute
/// paths and get the results back, in order. The thread runs at idle I/O priority.
public final class HashService: Sendable {
    public enum Backend: Sendable, Equatable {
        /// io_uring, or the plain read loop when io_uring cannot be set up.
        case automatic
        /// io_uring only: `init` throws when it cannot be set up.
        case uring
        /// The plain read loop.
        case plain
    }

    private struct Request {
        var paths: [[UInt8]]
        var done: @Sendable ([HashResult]) -> Void
    }

    private struct State {
        var requests: [Request] = []
        var stopping = false
        var started: Result<(name: String, fallback: String?), HashBackendError>?
    }

    private let state = Monitor(State())
    private let thread: WorkerThread
    /// "io_uring" or "read".
    public let backendName: String
    /// Why io_uring is not used (`.automatic` only), for the log; nil when it is.
    public let fallbackReason: String?
    /// False when the kernel refused idle I/O priority for the thread.
    public let idlePriority: Bool

    public convenience init(chunkSize: Int = ContentHash.defaultChunkSize, backend: Backend = .automatic) throws(HashBackendError) {
        try self.init(chunkSize: chunkSize, backend: backend) { () throws(HashBackendError) in
            try UringReader(chunkSize: chunkSize)
        }
    }

    /// `makeUring` runs on the service's thread (tests make it fail to exercise the fallback).
    init(chunkSize: Int, backend: Backend,
         makeUring: @escaping @Sendable () throws(HashBackendError) -> UringReader) throws(HashBackendError) {
        let state = self.state
        let idle = Monitor(true)
        thread = WorkerThread(name: "fansync-hash") {
            if clinux_set_idle_io_priority() != 0 { idle.withLock { $0 = false } }
            let hasher: FileHasher
            var fallback: String?
            switch backend {
            case .plain:
                hasher = PlainReader(chunkSize: chunkSize)
            case .uring, .automatic:
                do throws(HashBackendError) {
                    hasher = try makeUring()
                } catch {
                    if backend == .uring {
                        state.update { $0.started = .failure(error) }
                        return
                    }
                    fallback = "\(error.description); hashing with plain reads"
                    hasher = PlainReader(chunkSize: chunkSize)
                }
            }
            state.update { $0.started = .success((hasher.backendName, fallback)) }
            while true {
                let next: Request? = state.wait { s in
                    if !s.requests.isEmpty { return (.some(s.requests.removeFirst()), nil) }
                    if s.stopping { return (.some(nil), nil) }
                    return (nil, nil)
                }
                guard let next else { return }
                next.done(hasher.hash(next.paths))
            }
        }
        let started = state.wait { s in (s.started, nil) }
        switch started {
        case .failure(let error):
            thread.join()
            throw error
        case .success(let info):
            backendName = info.name
            fallbackReason = info.fallback
        }
        idlePriority = idle.withLock { $0 }
    }

    deinit { shutdown() }

    /// Hashes `paths` (absolute) on the service's thread; one result per path, in order.
    public func hash(_ paths: [[UInt8]]) async -> [HashResult] {
        await withCheckedContinuation { (c: CheckedContinuation<[HashResult], Never>) in
            submit(paths) { c.resume(returning: $0) }
        }
    }

    /// The blocking form, for callers on their own threads.
    public func hashBlocking(_ paths: [[UInt8]]) -> [HashResult] {
        let box = Monitor<[HashResult]?>(nil)
        submit(paths) { r in box.update { $0 = r } }
        return box.wait { v in (v, nil) }
    }

    /// Queues `paths`; `done` runs on the service's thread. After `shutdown`, `done` gets
    /// a `HashError` for every path (ECANCELED).
    public func submit(_ paths: [[UInt8]], done: @escaping @Sendable ([HashResult]) -> Void) {
        let accepted = state.update { s -> Bool in
            guard !s.stopping else { return false }
            s.requests.append(Request(paths: paths, done: done))
            return true
        }
        if !accepted {
            done(paths.map { .failure(HashError(path: $0, operation: .open, errno: ECANCELED)) })
        }
    }

    /// Finishes the queued batches, then stops the thread. Idempotent.
    public func shutdown() {
        let first = state.update { s -> Bool in
            defer { s.stopping = true }
            return !s.stopping
        }
        if first { thread.join() }
    }
}
