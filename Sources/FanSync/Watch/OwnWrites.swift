import CLinux
import Glibc
import Synchronization

/// Keeps the daemon's own writes to a local backup out of its fanotify queue.
///
/// A filesystem mark sees every change on its filesystem, so a backup on the source's
/// filesystem reports the daemon's own copies back to it: for each file copied a creation,
/// writes, attribute changes and a rename, each encoded by the kernel, read by the watcher
/// and dropped there as outside the source (a fifth of the daemon's work in a burst of small
/// files). While a batch writes into a directory of the backup, that directory carries an
/// ignore mark (`FAN_MARK_IGNORE` with `FAN_EVENT_ON_CHILD` and `FAN_ONDIR`: events on what
/// it holds and on itself are not queued); the batch removes it when it is done with the
/// directory, so that a directory moved from the backup into the source is never left
/// unwatched. The marks are evictable (`FAN_MARK_EVICTABLE`): they never pin a directory in
/// memory, and an evicted one only means events that are dropped as before. Source and
/// backup never overlap (refused at start), so no event of the source is hidden.
///
/// Kernels before 6.0 refuse `FAN_MARK_IGNORE`: then nothing is marked and the events are
/// dropped by the watcher as before.
public final class OwnWrites: Sendable {
    /// A duplicate of the watcher's fanotify descriptor (the same group), -1 once the
    /// watcher stopped or when the kernel refused an ignore mark. Calls hold the lock, so
    /// the descriptor is never used after `close` (nor its number once reused).
    private let fd: Mutex<Int32>

    /// Every event the watcher's marks ask for, on a directory and on its children.
    static let mask = FanBits.create | FanBits.delete | FanBits.closeWrite | FanBits.modify | FanBits.attrib
        | FanBits.rename | FanBits.movedFrom | FanBits.movedTo | FanBits.onDir | UInt64(FAN_EVENT_ON_CHILD)

    init(duplicating fanFD: Int32) {
        fd = Mutex(fcntl(fanFD, F_DUPFD_CLOEXEC, 0))
    }

    /// Ignores events in and on the directory open as `dir` until `resume(_:)`. False when
    /// nothing was marked.
    @discardableResult
    func quiet(_ dir: Int32) -> Bool {
        fd.withLock { fan in
            guard fan >= 0 else { return false }
            let flags = UInt32(FAN_MARK_ADD) | UInt32(FAN_MARK_IGNORE) | UInt32(FAN_MARK_IGNORED_SURV_MODIFY) | UInt32(FAN_MARK_EVICTABLE)
            if clinux_fanotify_mark(fan, flags, Self.mask, dir, nil) == 0 { return true }
            if errno == EINVAL {
                // A kernel without FAN_MARK_IGNORE (before 6.0): never again.
                Glibc.close(fan)
                fan = -1
            }
            return false
        }
    }

    /// Removes the ignore mark `quiet(_:)` placed on `dir` (gone already when the directory
    /// was evicted or deleted: nothing to do then).
    func resume(_ dir: Int32) {
        fd.withLock { fan in
            guard fan >= 0 else { return }
            let flags = UInt32(FAN_MARK_REMOVE) | UInt32(FAN_MARK_IGNORE) | UInt32(FAN_MARK_IGNORED_SURV_MODIFY)
            _ = clinux_fanotify_mark(fan, flags, Self.mask, dir, nil)
        }
    }

    /// The watcher stopped: no mark from now on.
    func close() {
        fd.withLock { fan in
            if fan >= 0 { Glibc.close(fan) }
            fan = -1
        }
    }

    deinit { close() }
}
