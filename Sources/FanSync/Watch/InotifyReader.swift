import CLinux
import Glibc
import Synchronization

/// One event as the kernel queued it, its name kept as bytes.
struct InotifyRawEvent {
    var wd: Int32
    var mask: UInt32
    var cookie: UInt32
    var name: [UInt8]
}

/// Inotify masks as `UInt32`, whatever type the C macros import as.
enum InotifyMask {
    static let access = UInt32(truncatingIfNeeded: IN_ACCESS)
    static let modify = UInt32(truncatingIfNeeded: IN_MODIFY)
    static let attrib = UInt32(truncatingIfNeeded: IN_ATTRIB)
    static let closeWrite = UInt32(truncatingIfNeeded: IN_CLOSE_WRITE)
    static let movedFrom = UInt32(truncatingIfNeeded: IN_MOVED_FROM)
    static let movedTo = UInt32(truncatingIfNeeded: IN_MOVED_TO)
    static let create = UInt32(truncatingIfNeeded: IN_CREATE)
    static let delete = UInt32(truncatingIfNeeded: IN_DELETE)
    static let deleteSelf = UInt32(truncatingIfNeeded: IN_DELETE_SELF)
    static let moveSelf = UInt32(truncatingIfNeeded: IN_MOVE_SELF)
    static let unmount = UInt32(truncatingIfNeeded: IN_UNMOUNT)
    static let overflow = UInt32(truncatingIfNeeded: IN_Q_OVERFLOW)
    static let ignored = UInt32(truncatingIfNeeded: IN_IGNORED)
    static let isDir = UInt32(truncatingIfNeeded: IN_ISDIR)
    static let onlyDir = UInt32(truncatingIfNeeded: IN_ONLYDIR)
    static let dontFollow = UInt32(truncatingIfNeeded: IN_DONT_FOLLOW)
    static let exclUnlink = UInt32(truncatingIfNeeded: IN_EXCL_UNLINK)

    /// What every directory watch asks for.
    static let watch: UInt32 = create | closeWrite | modify | attrib | delete | movedFrom | movedTo
        | deleteSelf | moveSelf | onlyDir | dontFollow | exclUnlink
}

/// The inotify backend's state and event translation. It belongs to one thread at a time:
/// the thread calling `start` while the first watches are placed, then the reader thread.
final class InotifyReader {
    /// How long an unpaired IN_MOVED_FROM waits for its IN_MOVED_TO before it counts as a
    /// move out of the tree.
    static let movePairWindowNanos: UInt64 = 20_000_000
    static let readBufferSize = 256 * 1024

    let inotifyFd: Int32
    let wakeFd: Int32
    let sourceRoot: [UInt8]
    let filter: WatchFilter
    let log: @Sendable (String) -> Void
    let shared: InotifyShared
    let deliver: @Sendable ([WatchEvent]) -> Void

    private var table = InotifyWatchTable()

    /// Events read but not yet translated (held while a MOVED_FROM waits for its pair).
    private var queue: [InotifyRawEvent] = []
    private var head = 0
    /// cookie -> index in `queue` of a MOVED_TO not yet consumed.
    private var movedToByCookie: [UInt32: Int] = [:]
    /// When the MOVED_FROM at `head` stops waiting for its pair.
    private var pairDeadline: UInt64?

    private var output: [WatchEvent] = []
    /// During a full re-walk: the watches found still in place.
    private var walkSeen: Set<Int32>?

    /// Watch-limit reporting: the first hit is logged at once, later ones at most once a minute.
    private var limitHits = 0
    private var limitLastLogged: UInt64 = 0
    private var limitLoggedCount = 0

    init(inotifyFd: Int32, wakeFd: Int32, sourceRoot: [UInt8], filter: @escaping WatchFilter,
         log: @escaping @Sendable (String) -> Void, shared: InotifyShared,
         deliver: @escaping @Sendable ([WatchEvent]) -> Void) {
        self.inotifyFd = inotifyFd
        self.wakeFd = wakeFd
        self.sourceRoot = sourceRoot
        self.filter = filter
        self.log = log
        self.shared = shared
        self.deliver = deliver
    }

    // MARK: - Paths

    func absolutePath(_ path: SyncPath) -> [UInt8] {
        if path.isRoot { return sourceRoot }
        if sourceRoot == [UInt8(ascii: "/")] { return sourceRoot + path.bytes }
        return sourceRoot + [UInt8(ascii: "/")] + path.bytes
    }

    private func display(_ path: SyncPath) -> String {
        SyncPath.displayString(absolutePath(path))
    }

    private func withCPath<R>(_ path: SyncPath, _ body: (UnsafePointer<CChar>) -> R) -> R {
        var bytes = absolutePath(path)
        bytes.append(0)
        return bytes.withUnsafeBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) { body($0) }
        }
    }

    /// The type of what is at `path`, without following a symlink; nil when it is gone.
    private func fileType(_ path: SyncPath) -> (mode: mode_t, links: UInt)? {
        var st = stat()
        let rc = withCPath(path) { fstatat(AT_FDCWD, $0, &st, AT_SYMLINK_NOFOLLOW) }
        guard rc == 0 else { return nil }
        return (st.st_mode & S_IFMT, UInt(st.st_nlink))
    }

    // MARK: - Watches

    /// Places (or refreshes) the watch on one directory. Returns the errno for the caller
    /// to judge (0 on success); logs what a user must know about.
    private func addWatch(_ dir: SyncPath) -> Int32 {
        let wd = withCPath(dir) { inotify_add_watch(inotifyFd, $0, InotifyMask.watch) }
        if wd < 0 {
            let e = errno
            switch e {
            case ENOENT, ENOTDIR, ELOOP:
                break // gone or replaced before we got to it; its parent's events tell the rest
            case ENOSPC:
                noteWatchLimit(dir)
            default:
                log("inotify: cannot watch \(display(dir)): \(InotifyWatcher.errnoText(e)); changes inside it are not seen until a rescan")
            }
            return e
        }
        // The same directory seen under a new name, or a new directory under an old name:
        // the table keeps the latest.
        table.set(dir, wd: wd)
        publishCount()
        return 0
    }

    private func noteWatchLimit(_ dir: SyncPath) {
        limitHits += 1
        shared.limitSkipped.store(limitHits, ordering: .relaxed)
        let now = monotonicNanos()
        if limitLoggedCount == 0 || now - limitLastLogged >= 60_000_000_000 {
            let limit = InotifyWatcher.readProcValue("/proc/sys/fs/inotify/max_user_watches") ?? "unknown"
            var nsNote = ""
            if let nsLimit = InotifyWatcher.readProcValue("/proc/sys/user/max_inotify_watches"),
               let a = Int(nsLimit), let b = Int(limit), a < b {
                nsNote = " (and user.max_inotify_watches is \(nsLimit) in this user namespace)"
            }
            log("inotify: watch limit reached: fs.inotify.max_user_watches is \(limit)\(nsNote) and \(table.count) directories are watched; "
                + "\(display(dir)) and \(limitHits - 1) other director\(limitHits == 2 ? "y" : "ies") are not watched, so changes there are missed. "
                + "Raise the limit (sysctl -w fs.inotify.max_user_watches=N) or use the fanotify backend.")
            limitLastLogged = now
            limitLoggedCount += 1
        }
    }

    private func publishCount() {
        shared.watched.store(table.count, ordering: .relaxed)
    }

    /// Removes the watches on `dir` and every directory under it.
    private func removeWatches(under dir: SyncPath) {
        for (path, wd) in table.subtree(of: dir) {
            inotify_rm_watch(inotifyFd, wd)
            table.remove(path: path)
        }
        publishCount()
    }

    /// Moves every watched path under `from` to the same place under `to`.
    private func rebaseWatches(from: SyncPath, to: SyncPath) {
        let moving = table.subtree(of: from)
        for (path, _) in moving { table.remove(path: path) }
        for (path, wd) in moving {
            guard let newPath = path.rebased(from: from, to: to) else { continue }
            table.set(newPath, wd: wd)
        }
        // Directories under the new name that the filter now excludes lose their watch
        // (parents come first, so an excluded parent takes its subtree with it).
        for (path, _) in table.subtree(of: to) where path != to && !filter(path, true) {
            if table.wd(for: path) != nil { removeWatches(under: path) }
        }
        publishCount()
    }

    /// Watches `start` and every directory below it that the filter admits, without
    /// following symlinks. The watch on a directory is placed before it is read, so an entry
    /// created meanwhile is either read or reported. `found` is told every admitted entry
    /// read (path, is a directory). Returns the errno of the watch on `start` itself (0
    /// when placed).
    @discardableResult
    private func watchTree(_ start: SyncPath, found: ((SyncPath, Bool) -> Void)? = nil) -> Int32 {
        var startErrno: Int32 = 0
        var stack: [SyncPath] = [start]
        while let dir = stack.popLast() {
            let e = addWatch(dir)
            if dir == start { startErrno = e }
            if e != 0 { continue }
            if walkSeen != nil, let wd = table.wd(for: dir) { walkSeen!.insert(wd) }

            let fd = withCPath(dir) { open($0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if fd < 0 {
                let oe = errno
                if oe != ENOENT && oe != ENOTDIR && oe != ELOOP {
                    log("inotify: cannot read directory \(display(dir)): \(InotifyWatcher.errnoText(oe)); its subdirectories are not watched")
                }
                continue
            }
            guard let stream = fdopendir(fd) else {
                close(fd)
                continue
            }
            while true {
                errno = 0
                guard let entry = readdir(stream) else { break }
                let name = Self.entryName(entry)
                if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
                var isDirectory = entry.pointee.d_type == UInt8(truncatingIfNeeded: DT_DIR)
                if entry.pointee.d_type == UInt8(truncatingIfNeeded: DT_UNKNOWN) {
                    var st = stat()
                    let rc = (name + [0]).withUnsafeBufferPointer { buf in
                        buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buf.count) {
                            fstatat(dirfd(stream), $0, &st, AT_SYMLINK_NOFOLLOW)
                        }
                    }
                    isDirectory = rc == 0 && (st.st_mode & S_IFMT) == S_IFDIR
                }
                guard isDirectory || found != nil else { continue }
                let child = dir.appending(name)
                guard filter(child, isDirectory) else { continue }
                found?(child, isDirectory)
                if isDirectory { stack.append(child) }
            }
            closedir(stream)
        }
        return startErrno
    }

    private static func entryName(_ entry: UnsafeMutablePointer<dirent>) -> [UInt8] {
        let offset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        let base = UnsafeRawPointer(entry).advanced(by: offset).assumingMemoryBound(to: UInt8.self)
        let length = strlen(UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self))
        return Array(UnsafeBufferPointer(start: base, count: length))
    }

    /// The walk `start` does before returning: 0, or the errno that makes the root unwatchable.
    func watchInitialTree() -> Int32 {
        watchTree(.root)
    }

    /// After an overflow: watch whatever is missing and forget watches on directories that
    /// are no longer where we thought.
    private func rewatchEverything() {
        walkSeen = []
        watchTree(.root)
        let seen = walkSeen ?? []
        walkSeen = nil
        let stale = table.pathByWd.keys.filter { !seen.contains($0) }
        for wd in stale {
            inotify_rm_watch(inotifyFd, wd)
            table.remove(wd: wd)
        }
        publishCount()
    }

    /// Brings the watches under `dir` in line with the filter as it answers now (a rules file
    /// changed): watches what it admits, drops what it excludes, and asks for a rescan.
    private func rewatch(_ dir: SyncPath) {
        if !dir.isRoot && !filter(dir, true) {
            removeWatches(under: dir)
            return
        }
        for (path, _) in table.subtree(of: dir) where path != dir && !filter(path, true) {
            if table.wd(for: path) != nil { removeWatches(under: path) }
        }
        watchTree(dir)
        publishCount()
        emit(.rescan(dir))
    }

    // MARK: - Thread

    func run() {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.readBufferSize, alignment: 8)
        defer {
            buffer.deallocate()
            close(inotifyFd)
            if shared.closeWakeFdOnExit.load(ordering: .sequentiallyConsistent) { close(wakeFd) }
        }
        var fds = [pollfd(fd: inotifyFd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeFd, events: Int16(POLLIN), revents: 0)]
        while !shared.stopRequested.load(ordering: .sequentiallyConsistent) {
            var timeout: Int32 = -1
            if let deadline = pairDeadline {
                let now = monotonicNanos()
                timeout = deadline > now ? Int32(min((deadline - now + 999_999) / 1_000_000, 1000)) : 0
            }
            fds[0].revents = 0
            fds[1].revents = 0
            let n = poll(&fds, 2, timeout)
            if n < 0 {
                if errno == EINTR { continue }
                log("inotify: poll failed: \(InotifyWatcher.errnoText(errno)); the watcher stops")
                return
            }
            if fds[1].revents != 0 {
                var counter: UInt64 = 0
                _ = read(wakeFd, &counter, MemoryLayout<UInt64>.size)
                if shared.stopRequested.load(ordering: .sequentiallyConsistent) { return }
                for request in shared.takeRewatchRequests() { rewatch(request) }
            }
            if fds[0].revents & Int16(POLLIN) != 0 {
                if !readAvailable(buffer) { return }
            } else if fds[0].revents != 0 {
                log("inotify: the inotify descriptor reported an error (revents \(fds[0].revents)); the watcher stops")
                return
            }
            translateQueued()
            if !output.isEmpty {
                let batch = output
                output.removeAll(keepingCapacity: true)
                if shared.stopRequested.load(ordering: .sequentiallyConsistent) { return }
                deliver(batch)
            }
        }
    }

    /// Reads what the kernel has queued. False on a fatal read error.
    private func readAvailable(_ buffer: UnsafeMutableRawPointer) -> Bool {
        // A few reads at most per round so a flood still gets delivered in pieces.
        for _ in 0..<4 {
            let n = read(inotifyFd, buffer, Self.readBufferSize)
            if n < 0 {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK { return true }
                if e == EINTR { continue }
                log("inotify: read failed: \(InotifyWatcher.errnoText(e)); the watcher stops")
                return false
            }
            if n == 0 { return true }
            parse(UnsafeRawBufferPointer(start: buffer, count: n))
            if n < Self.readBufferSize / 2 { return true }
        }
        return true
    }

    private func parse(_ bytes: UnsafeRawBufferPointer) {
        let headerSize = 16
        var offset = 0
        while offset + headerSize <= bytes.count {
            let wd = bytes.loadUnaligned(fromByteOffset: offset, as: Int32.self)
            let mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
            let cookie = bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
            let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
            let nameStart = offset + headerSize
            guard nameStart + length <= bytes.count else { break }
            var name: [UInt8] = []
            if length > 0 {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<(nameStart + length)])
                let end = raw.firstIndex(of: 0) ?? raw.count
                name = Array(raw[..<end])
            }
            if mask & InotifyMask.movedTo != 0 { movedToByCookie[cookie] = queue.count }
            queue.append(InotifyRawEvent(wd: wd, mask: mask, cookie: cookie, name: name))
            offset = nameStart + length
        }
    }

    // MARK: - Translation

    private func translateQueued() {
        while head < queue.count {
            let event = queue[head]
            if event.mask == 0 { head += 1; continue } // a MOVED_TO already paired
            if event.mask & InotifyMask.movedFrom != 0 {
                if let j = movedToByCookie[event.cookie], j > head {
                    let partner = queue[j]
                    queue[j].mask = 0
                    movedToByCookie[event.cookie] = nil
                    head += 1
                    pairDeadline = nil
                    handleMove(from: event, to: partner)
                    continue
                }
                let now = monotonicNanos()
                if pairDeadline == nil { pairDeadline = now + Self.movePairWindowNanos }
                if now < pairDeadline! { return } // hold this and what follows for the pair
                pairDeadline = nil
                head += 1
                handleMove(from: event, to: nil)
                continue
            }
            head += 1
            handle(event)
        }
        queue.removeAll(keepingCapacity: queue.count < 65536)
        movedToByCookie.removeAll(keepingCapacity: true)
        head = 0
    }

    /// Adds an event to the batch; an exact repeat of the previous one adds nothing.
    private func emit(_ event: WatchEvent) {
        if output.last == event { return }
        output.append(event)
    }

    private func path(of event: InotifyRawEvent) -> SyncPath? {
        guard let dir = table.path(for: event.wd) else { return nil }
        return event.name.isEmpty ? dir : dir.appending(event.name)
    }

    private func handle(_ event: InotifyRawEvent) {
        let mask = event.mask
        if mask & InotifyMask.overflow != 0 {
            log("inotify: event queue overflowed (fs.inotify.max_queued_events is \(InotifyWatcher.readProcValue("/proc/sys/fs/inotify/max_queued_events") ?? "unknown")); rescanning the whole source")
            rewatchEverything()
            emit(.rescan(.root))
            return
        }
        if mask & InotifyMask.ignored != 0 {
            if table.remove(wd: event.wd) != nil { publishCount() }
            return
        }
        if mask & InotifyMask.unmount != 0 {
            guard let dir = table.remove(wd: event.wd) else { return }
            log("inotify: the filesystem under \(display(dir)) was unmounted; rescanning it")
            watchTree(dir)
            emit(.rescan(dir))
            return
        }
        guard let dir = table.path(for: event.wd) else { return } // a watch we already dropped
        let isDirectory = mask & InotifyMask.isDir != 0

        if event.name.isEmpty {
            // Events on a watched directory itself. Its parent reports the same change with a
            // name, so only the source root's own events matter here.
            guard dir.isRoot else { return }
            if mask & (InotifyMask.deleteSelf | InotifyMask.moveSelf) != 0 {
                let what = mask & InotifyMask.deleteSelf != 0 ? "deleted" : "moved away"
                log("inotify: the source directory \(display(.root)) was \(what); nothing under it is watched any more")
                emit(.rescan(.root))
            } else if mask & InotifyMask.attrib != 0 {
                emit(.changed(.root, isDirectory: true, created: false, closed: true))
            }
            return
        }

        let path = dir.appending(event.name)
        guard filter(path, isDirectory) else { return }

        if mask & InotifyMask.create != 0 {
            if isDirectory {
                emit(.changed(path, isDirectory: true, created: true, closed: true))
                // Whatever was made inside before the watch existed has no event: each entry
                // the walk finds is reported as made (one still being written reports its
                // close later), and goes with the other changes rather than as a resync of
                // the directory (a `cp -a` of a tree would send each directory as one).
                watchTree(path) { entry, isDir in self.emit(.changed(entry, isDirectory: isDir, created: true, closed: true)) }
            } else {
                // A regular file gets its CLOSE_WRITE later; a hard link (more than one link)
                // and everything else (symlink, fifo, socket, device) are complete now.
                var closed = true
                if let type = fileType(path), type.mode == S_IFREG, type.links <= 1 { closed = false }
                emit(.changed(path, isDirectory: false, created: true, closed: closed))
            }
        }
        if mask & InotifyMask.modify != 0 {
            emit(.changed(path, isDirectory: isDirectory, created: false, closed: false))
        }
        if mask & InotifyMask.attrib != 0 {
            emit(.changed(path, isDirectory: isDirectory, created: false, closed: true))
        }
        if mask & InotifyMask.closeWrite != 0 {
            emit(.changed(path, isDirectory: isDirectory, created: false, closed: true))
        }
        if mask & InotifyMask.delete != 0 {
            if isDirectory { removeWatches(under: path) }
            emit(.removed(path, isDirectory: isDirectory))
        }
        if mask & InotifyMask.movedTo != 0 {
            // A MOVED_TO with no MOVED_FROM: moved in from outside the source.
            movedIn(path, isDirectory: isDirectory)
        }
    }

    private func movedIn(_ path: SyncPath, isDirectory: Bool) {
        if isDirectory {
            watchTree(path)
            emit(.rescan(path))
        } else {
            emit(.changed(path, isDirectory: false, created: true, closed: true))
        }
    }

    private func handleMove(from: InotifyRawEvent, to: InotifyRawEvent?) {
        let isDirectory = from.mask & InotifyMask.isDir != 0
        var fromPath = path(of: from)
        if let f = fromPath, !filter(f, isDirectory) { fromPath = nil }
        var toPath = to.flatMap { path(of: $0) }
        if let t = toPath, !filter(t, isDirectory) { toPath = nil }

        switch (fromPath, toPath) {
        case let (f?, t?):
            if isDirectory {
                rebaseWatches(from: f, to: t)
                emit(.renamed(from: f, to: t, isDirectory: true))
                if table.wd(for: t) == nil {
                    // Its watch never existed (renamed before we could place it): watch and scan.
                    watchTree(t)
                    emit(.rescan(t))
                }
            } else {
                emit(.renamed(from: f, to: t, isDirectory: false))
            }
        case let (f?, nil):
            // Moved out of the source, or to a place the filter excludes.
            if isDirectory { removeWatches(under: f) }
            emit(.removed(f, isDirectory: isDirectory))
        case let (nil, t?):
            // Moved in from outside the source, or from an excluded place.
            if isDirectory, let old = path(of: from) { removeWatches(under: old) }
            movedIn(t, isDirectory: isDirectory)
        case (nil, nil):
            if isDirectory, let old = path(of: from) { removeWatches(under: old) }
        }
    }
}

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
