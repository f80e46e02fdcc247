/// What a watcher backend reports, already made relative to the source root.
///
/// Backends report what they saw; the queue decides what it means for the backup.
public enum WatchEvent: Sendable, Equatable {
    /// Something at `path` was created, written, closed, or its attributes changed.
    /// `closed` is true when the writer closed the file (or the change is complete: mkdir,
    /// symlink, attribute change); false for a write to a file still open.
    case changed(SyncPath, isDirectory: Bool, created: Bool, closed: Bool)
    /// `path` was deleted.
    case removed(SyncPath, isDirectory: Bool)
    /// `from` was renamed to `to`, both inside the source.
    case renamed(from: SyncPath, to: SyncPath, isDirectory: Bool)
    /// Everything under `path` may have changed without events (a directory moved in from
    /// outside, a directory created before its watch existed, a queue overflow at the root).
    case rescan(SyncPath)
}

/// Decides, before any other work, whether a watcher should look at a path at all.
public typealias WatchFilter = @Sendable (_ path: SyncPath, _ isDirectory: Bool) -> Bool

/// A source of `WatchEvent`s for one source directory.
public protocol WatchBackend: AnyObject, Sendable {
    /// Human-readable name for logs and status ("fanotify", "inotify").
    var name: String { get }
    /// Filesystems (or watches) covered, for the status file.
    var watchedDescription: [String] { get }
    /// Starts watching; events are delivered on the backend's own thread, in order, in
    /// batches. Throws when the backend cannot watch this source (the caller falls back).
    func start(deliver: @escaping @Sendable ([WatchEvent]) -> Void) throws
    /// Stops the thread and closes descriptors; no delivery happens after it returns.
    func stop()
    /// How a writer keeps its own writes out of this watcher (nil when it cannot, or
    /// need not: inotify watches only the source's directories).
    var ownWrites: OwnWrites? { get }
}

extension WatchBackend {
    public var ownWrites: OwnWrites? { nil }
}
