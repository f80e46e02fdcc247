import Glibc

/// A mutex with a condition variable, guarding a value: what worker threads wait on.
public final class Monitor<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    /// Runs `body` with the lock held.
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }

    /// Runs `body` with the lock held and wakes every waiter afterwards.
    public func update<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(cond)
            pthread_mutex_unlock(mutex)
        }
        return try body(&value)
    }

    /// With the lock held, calls `body` until it returns a result, waiting between calls
    /// until woken or until the monotonic deadline `body` asks for (nil: wait until woken).
    public func wait<R>(_ body: (inout Value) -> (result: R?, deadline: Double?)) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while true {
            let (result, deadline) = body(&value)
            if let result { return result }
            if let deadline {
                var ts = timespec()
                let d = max(deadline, 0)
                ts.tv_sec = Int(d)
                ts.tv_nsec = Int((d - Double(Int(d))) * 1e9)
                pthread_cond_timedwait(cond, mutex, &ts)
            } else {
                pthread_cond_wait(cond, mutex)
            }
        }
    }

    public func broadcast() {
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }
}

/// Starts a detached-style joinable thread running `body`.
public final class WorkerThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void

    public init(name: String, _ body: @escaping () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self)
        pthread_create(&thread, nil, { raw in
            let me = Unmanaged<WorkerThread>.fromOpaque(raw!).takeRetainedValue()
            me.body()
            return nil
        }, box.toOpaque())
    }

    public func join() {
        pthread_join(thread, nil)
    }
}
