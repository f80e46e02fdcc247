import Glibc
import CLinux
import Synchronization

// Event bits as UInt64 (the simple FAN_* macros import as Int32).
@inline(__always) private func bit(_ v: Int32) -> UInt64 { UInt64(UInt32(bitPattern: v)) }

enum FanBits {
    static let modify = bit(FAN_MODIFY)
    static let attrib = bit(FAN_ATTRIB)
    static let closeWrite = bit(FAN_CLOSE_WRITE)
    static let movedFrom = bit(FAN_MOVED_FROM)
    static let movedTo = bit(FAN_MOVED_TO)
    static let create = bit(FAN_CREATE)
    static let delete = bit(FAN_DELETE)
    static let deleteSelf = bit(FAN_DELETE_SELF)
    static let moveSelf = bit(FAN_MOVE_SELF)
    static let rename = bit(FAN_RENAME)
    static let onDir = bit(FAN_ONDIR)
    static let qOverflow = bit(FAN_Q_OVERFLOW)

    /// What the filesystem marks ask for (FAN_RENAME variant).
    static let fsMaskRename = create | delete | closeWrite | modify | attrib | onDir | rename
    /// The same without FAN_RENAME, for kernels that refuse it (before 5.17).
    static let fsMaskMoves = create | delete | closeWrite | modify | attrib | onDir | movedFrom | movedTo
    /// The inode mark on the source root itself.
    static let rootMask = deleteSelf | moveSelf | onDir

    static let gone = delete | movedFrom
    static let present = create | movedTo | modify | closeWrite | attrib
}

/// A file handle as the kernel reports it, usable as a dictionary key without allocating
/// for handles up to 32 bytes (ext4: 8, tmpfs: 12, xfs/btrfs: up to 20-24).
struct HandleKey: Hashable {
    var fsid: UInt64
    var type: Int32
    var length: UInt32
    var w0: UInt64 = 0
    var w1: UInt64 = 0
    var w2: UInt64 = 0
    var w3: UInt64 = 0
    var rest: [UInt8]? = nil

    init(fsid: UInt64, type: Int32, bytes: UnsafeRawBufferPointer) {
        self.fsid = fsid
        self.type = type
        self.length = UInt32(bytes.count)
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        let inline = min(bytes.count, 32)
        withUnsafeMutableBytes(of: &words) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<inline]))
        }
        (w0, w1, w2, w3) = words
        if bytes.count > 32 { rest = Array(bytes[32...]) }
    }
}

/// A resolved directory: its absolute path now, and its path relative to the source root
/// (nil when it is outside the source).
struct DirInfo {
    var abs: [UInt8]
    var rel: [UInt8]?
    /// The directory that contains the source root (events naming the root from outside).
    var isSourceParent: Bool
    /// The read buffer during which it was resolved: a path resolved while reading a buffer
    /// already reflects the directory renames that buffer reports later.
    var batch: Int = 0
}

/// One way to reach a marked filesystem for `open_by_handle_at`.
struct MountRef {
    var mountID: Int
    var mountPoint: [UInt8]
    var fsType: String
    var device: dev_t
    /// What to open to reach this mount: the source root for the source's own filesystem,
    /// the mount point for one below it. Opened (O_RDONLY: open_by_handle_at refuses O_PATH
    /// descriptors with EBADF) for the lookups of one read buffer and closed after it, so
    /// that fansync never keeps a mount busy for umount nor a deleted root alive.
    var openPath: [UInt8]
}

struct MarkedFilesystem {
    var fsid: UInt64
    var mounts: [MountRef]
}

/// Owns the fanotify descriptor, the marks, the handle cache and the read buffer. Lives on
/// the watcher's thread once started; never shared.
final class FanotifyReader {
    let root: [UInt8]              // canonical absolute source root
    let requestedRoot: [UInt8]
    let filter: WatchFilter
    let log: @Sendable (String) -> Void
    let updateDescription: @Sendable ([String]) -> Void

    private(set) var fanFD: Int32 = -1
    private var mountInfoFD: Int32 = -1
    private(set) var usesRename = true
    private(set) var reportsTargetFID = true
    private var fsMask: UInt64 = FanBits.fsMaskRename
    private var filesystems: [UInt64: MarkedFilesystem] = [:]
    private var knownSubMounts: [Int: MountEntry] = [:]
    /// Mounts at the source root or one of its parents, as seen at start.
    private var coveringMounts: Set<Int> = []
    private var rootMountID: Int = -1
    private var rootKey: HandleKey?
    private let rootParent: [UInt8]
    private let rootName: [UInt8]

    private var cache: [HandleKey: DirInfo] = [:]
    /// Mount descriptors opened during the current read buffer (mount id -> fd or -1).
    private var batchMountFDs: [Int: Int32] = [:]

    // Putting paths back in time (see `undoLaterRenames`).
    private var batchNumber = 0
    /// Events of this buffer whose directory part was resolved during it: output index and
    /// the length of the directory part of its path (and of a rename's second path), or -1.
    private struct Fixup { var index: Int; var dirLen: Int; var dirLen2: Int }
    private var fixups: [Fixup] = []
    /// Directory renames inside the source reported in this buffer: output index, paths.
    private var batchRenames: [(index: Int, from: [UInt8], to: [UInt8])] = []
    private let cacheLimit = 1 << 18
    private let bufferSize = 256 * 1024
    private let buffer: UnsafeMutableRawPointer
    private var scratch: [CChar] = []
    private var linkBuffer: [UInt8] = []

    // Counters, for the log and for tests.
    private(set) var staleHandles = 0
    private(set) var overflows = 0
    private(set) var eventsRead = 0
    private(set) var eventsOutside = 0
    private(set) var handleLookups = 0
    private(set) var cacheResets = 0
    private(set) var batchesRead = 0
    private var resolveErrorsLogged = 0
    /// Set when a handle could not be resolved in the current read (see `parse`).
    private var unresolvedInBatch = false

    init(sourceRoot: [UInt8], filter: @escaping WatchFilter,
         log: @escaping @Sendable (String) -> Void,
         updateDescription: @escaping @Sendable ([String]) -> Void,
         useRenameEvents: Bool = true) throws(FanotifyError) {
        if !useRenameEvents {
            usesRename = false
            fsMask = FanBits.fsMaskMoves
        }
        self.requestedRoot = sourceRoot
        self.filter = filter
        self.log = log
        self.updateDescription = updateDescription
        self.root = try Self.canonical(sourceRoot)
        if let slash = root.lastIndex(of: UInt8(ascii: "/")) {
            rootParent = slash == 0 ? [UInt8(ascii: "/")] : Array(root[..<slash])
            rootName = Array(root[(slash + 1)...])
        } else {
            rootParent = []
            rootName = root
        }
        buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 16)
        linkBuffer = [UInt8](repeating: 0, count: Int(PATH_MAX) * 2 + 64)
        scratch.reserveCapacity(Int(PATH_MAX) + 64)
    }

    deinit {
        closeAll()
        buffer.deallocate()
    }

    func closeAll() {
        filesystems.removeAll()
        if fanFD >= 0 { close(fanFD); fanFD = -1 }
        if mountInfoFD >= 0 { close(mountInfoFD); mountInfoFD = -1 }
    }

    var descriptions: [String] {
        filesystems.values.sorted { ($0.mounts.first?.mountPoint ?? []).lexicographicallyPrecedes($1.mounts.first?.mountPoint ?? []) }
            .filter { !$0.mounts.isEmpty }
            .map { fs in
                let m = fs.mounts[0]
                let extra = fs.mounts.count > 1
                    ? " (also at " + fs.mounts.dropFirst().map { Mounts.display($0.mountPoint) }.joined(separator: ", ") + ")" : ""
                return "\(Mounts.display(m.mountPoint)) (\(m.fsType), fsid \(Self.hex(fs.fsid)))\(extra)"
            }
    }

    static func hex(_ fsid: UInt64) -> String {
        let lo = UInt32(truncatingIfNeeded: fsid), hi = UInt32(truncatingIfNeeded: fsid >> 32)
        return String(lo, radix: 16).leftPadded(to: 8) + ":" + String(hi, radix: 16).leftPadded(to: 8)
    }

    // MARK: - Setup

    static func canonical(_ path: [UInt8]) throws(FanotifyError) -> [UInt8] {
        guard path.first == UInt8(ascii: "/") else {
            throw FanotifyError("source \(Mounts.display(path)) is not an absolute path")
        }
        let resolved: UnsafeMutablePointer<CChar>? = (path + [0]).withUnsafeBufferPointer {
            $0.withMemoryRebound(to: CChar.self) { realpath($0.baseAddress!, nil) }
        }
        guard let resolved else {
            throw FanotifyError("cannot resolve source \(Mounts.display(path))", errno: errno)
        }
        defer { free(resolved) }
        let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(resolved).assumingMemoryBound(to: UInt8.self),
                                              count: strlen(resolved)))
        return bytes
    }

    /// Creates the group and places every mark. Throws when fanotify cannot watch this source.
    func setUp() throws(FanotifyError) {
        do {
            try setUpInner()
        } catch {
            closeAll()
            throw error
        }
    }

    private func setUpInner() throws(FanotifyError) {
        let rootText = Mounts.display(root)
        if root != requestedRoot {
            log("fanotify: source \(Mounts.display(requestedRoot)) is \(rootText) once symlinks are resolved; paths are matched against the latter")
        }
        var st = stat()
        guard lstatBytes(root, &st) == 0 else {
            throw FanotifyError("cannot stat source \(rootText)", errno: errno)
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw FanotifyError("source \(rootText) is not a directory")
        }

        // The group.
        let base = UInt32(FAN_CLASS_NOTIF) | UInt32(FAN_REPORT_DFID_NAME) | UInt32(FAN_REPORT_FID)
            | UInt32(FAN_UNLIMITED_QUEUE) | UInt32(FAN_CLOEXEC) | UInt32(FAN_NONBLOCK)
        // O_LARGEFILE is implied on 64-bit kernels, and with FID reporting no descriptor is
        // opened for events at all.
        let eventFlags = UInt32(O_RDONLY)
        var fd = clinux_fanotify_init(base | UInt32(FAN_REPORT_TARGET_FID), eventFlags)
        if fd < 0 && errno == EINVAL {
            reportsTargetFID = false
            fd = clinux_fanotify_init(base, eventFlags)
        }
        if fd < 0 {
            let e = errno
            switch e {
            case EPERM:
                throw FanotifyError("fanotify_init needs CAP_SYS_ADMIN (filesystem marks are privileged)", errno: e)
            case ENOSYS:
                throw FanotifyError("this kernel has no fanotify", errno: e)
            case EINVAL:
                throw FanotifyError("this kernel refuses FAN_REPORT_DFID_NAME (needs Linux 5.9 or later)", errno: e)
            default:
                throw FanotifyError("fanotify_init failed", errno: e)
            }
        }
        fanFD = fd

        // The source root: its handle (proves the filesystem has handles), mount id and fsid.
        var handleBytes = [UInt8](repeating: 0, count: Int(clinux_max_handle_sz))
        var handleLen: UInt32 = 0
        var handleType: Int32 = 0
        var mountID: Int32 = 0
        let hr = withCString(root) { p in
            handleBytes.withUnsafeMutableBufferPointer {
                clinux_name_to_handle_at(AT_FDCWD, p, 0, $0.baseAddress, UInt32($0.count),
                                         &handleLen, &handleType, &mountID)
            }
        }
        if hr != 0 {
            let e = errno
            throw FanotifyError("the filesystem of \(rootText) cannot report file handles (name_to_handle_at)", errno: e)
        }
        rootMountID = Int(mountID)

        let rootFD = withCString(root) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        if rootFD < 0 { throw FanotifyError("cannot open source \(rootText)", errno: errno) }
        defer { close(rootFD) }
        var rootStat = stat()
        fstat(rootFD, &rootStat)
        var sfs = statfs()
        if fstatfs(rootFD, &sfs) != 0 {
            let e = errno
            throw FanotifyError("fstatfs on \(rootText) failed", errno: e)
        }
        let rootFsid = Self.fsid(sfs)
        rootKey = handleBytes.withUnsafeBytes {
            HandleKey(fsid: rootFsid, type: handleType, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<Int(handleLen)]))
        }

        let table = try Mounts.readMountInfo()
        coveringMounts = Set(table.filter { Mounts.isInsideOrEqual(root, $0.mountPoint) }.map(\.mountID))
        let rootEntry = table.last { $0.mountID == rootMountID }
        let rootRef = MountRef(mountID: rootMountID, mountPoint: rootEntry?.mountPoint ?? root,
                               fsType: rootEntry?.fsType ?? "unknown", device: rootStat.st_dev, openPath: root)
        filesystems[rootFsid] = MarkedFilesystem(fsid: rootFsid, mounts: [rootRef])
        try placeFilesystemMark(fd: rootFD, what: "\(rootText) (\(rootRef.fsType) mounted at \(Mounts.display(rootRef.mountPoint)))")

        // Every filesystem mounted below the source.
        for entry in table where Mounts.isStrictlyInside(entry.mountPoint, root) {
            switch try addSubMount(entry) {
            case .added, .alreadyMarked, .hidden: break
            }
        }

        // The root itself: deleted or moved away is worth a loud log line.
        let rr = withCString(root) { clinux_fanotify_mark(fanFD, UInt32(FAN_MARK_ADD), FanBits.rootMask, AT_FDCWD, $0) }
        if rr != 0 {
            log("fanotify: cannot watch the source root itself for deletion or move: \(String(cString: strerror(errno)))")
        }

        mountInfoFD = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        if mountInfoFD < 0 {
            log("fanotify: cannot open /proc/self/mountinfo to follow mounts below the source: \(String(cString: strerror(errno)))")
        }
        updateDescription(descriptions)
    }

    enum SubMountResult { case added, alreadyMarked, hidden }

    /// Kernel pseudo filesystems: they hold no data to mirror and most cannot be marked.
    static let pseudoFilesystems: Set<String> = [
        "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs",
        "pstore", "bpf", "configfs", "fusectl", "binfmt_misc", "autofs", "hugetlbfs", "nsfs",
        "efivarfs", "selinuxfs", "rpc_pipefs",
    ]

    /// Marks the filesystem of a mount below the source (once per filesystem).
    private func addSubMount(_ entry: MountEntry) throws(FanotifyError) -> SubMountResult {
        let where_ = "\(Mounts.display(entry.mountPoint)) (\(entry.fsType))"
        if Self.pseudoFilesystems.contains(entry.fsType) {
            log("fanotify: \(where_) is a kernel pseudo filesystem; not watched")
            knownSubMounts[entry.mountID] = entry
            return .hidden
        }
        let fd = withCString(entry.mountPoint) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        if fd < 0 {
            let e = errno
            if e == ENOENT || e == EACCES || e == ENOTDIR {
                log("fanotify: mount \(where_) is not reachable (\(String(cString: strerror(e)))); skipped")
                return .hidden
            }
            throw FanotifyError("cannot open mount point \(where_)", errno: e)
        }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        if Self.major(st.st_dev) != entry.major || Self.minor(st.st_dev) != entry.minor {
            // Another mount covers this one: what is visible there is another entry.
            return .hidden
        }
        var sfs = statfs()
        if fstatfs(fd, &sfs) != 0 { throw FanotifyError("fstatfs on \(where_) failed", errno: errno) }
        let fsid = Self.fsid(sfs)
        let ref = MountRef(mountID: entry.mountID, mountPoint: entry.mountPoint, fsType: entry.fsType,
                           device: st.st_dev, openPath: entry.mountPoint)
        // Marking again is harmless (same superblock: the masks merge) and re-marks a
        // filesystem whose fsid was seen before an unmount destroyed its mark.
        try placeFilesystemMark(fd: fd, what: where_)
        knownSubMounts[entry.mountID] = entry
        if let known = filesystems[fsid], !known.mounts.isEmpty {
            filesystems[fsid]!.mounts.append(ref)
            return .alreadyMarked
        }
        filesystems[fsid] = MarkedFilesystem(fsid: fsid, mounts: [ref])
        return .added
    }

    private func placeFilesystemMark(fd dirFD: Int32, what: String) throws(FanotifyError) {
        let flags = UInt32(FAN_MARK_ADD) | UInt32(FAN_MARK_FILESYSTEM)
        var r = clinux_fanotify_mark(fanFD, flags, fsMask, dirFD, ".")
        if r != 0 && errno == EINVAL && fsMask == FanBits.fsMaskRename {
            r = clinux_fanotify_mark(fanFD, flags, FanBits.fsMaskMoves, dirFD, ".")
            if r == 0 {
                fsMask = FanBits.fsMaskMoves
                usesRename = false
                log("fanotify: FAN_RENAME refused by this kernel; renames are reported as a removal and a creation")
            }
        }
        if r != 0 {
            let e = errno
            let hint: String
            switch e {
            case ENODEV, EOPNOTSUPP: hint = " (this filesystem cannot report file handles)"
            case EXDEV: hint = " (this filesystem's fsid is not unique or it is a subvolume fanotify cannot mark)"
            case EPERM: hint = " (needs CAP_SYS_ADMIN)"
            case EINVAL: hint = " (this filesystem or kernel refuses a filesystem mark with these events)"
            default: hint = ""
            }
            throw FanotifyError("fanotify_mark(FAN_MARK_FILESYSTEM) on \(what) failed\(hint)", errno: e)
        }
    }

    static func fsid(_ s: statfs) -> UInt64 {
        withUnsafeBytes(of: s.f_fsid) { $0.loadUnaligned(as: UInt64.self) }
    }

    static func major(_ dev: dev_t) -> UInt32 {
        UInt32(truncatingIfNeeded: ((UInt64(dev) >> 8) & 0xfff) | ((UInt64(dev) >> 32) & ~UInt64(0xfff)))
    }

    static func minor(_ dev: dev_t) -> UInt32 {
        UInt32(truncatingIfNeeded: (UInt64(dev) & 0xff) | ((UInt64(dev) >> 12) & ~UInt64(0xff)))
    }

    // MARK: - The loop

    /// Reads until `stop` is set or the wake descriptor is written.
    func run(wakeFD: Int32, stop: StopSignal, deliver: @Sendable ([WatchEvent]) -> Void) {
        defer { log("fanotify: stopped; \(statistics)") }
        var fds: [pollfd] = [
            pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: fanFD, events: Int16(POLLIN), revents: 0),
        ]
        if mountInfoFD >= 0 {
            fds.append(pollfd(fd: mountInfoFD, events: Int16(POLLPRI), revents: 0))
        }
        var consecutiveErrors = 0
        var lastBatch: UInt64 = 0
        loop: while !stop.isSet {
            let pr = poll(&fds, nfds_t(fds.count), -1)
            if pr < 0 {
                if errno == EINTR { continue }
                log("fanotify: poll failed: \(String(cString: strerror(errno))); watcher stops")
                break
            }
            if fds[0].revents != 0 || stop.isSet { break }
            if fds.count > 2, fds[2].revents != 0 {
                var events: [WatchEvent] = []
                mountsChanged(into: &events)
                if !events.isEmpty && !stop.isSet { deliver(events) }
            }
            guard fds[1].revents != 0 else { continue }
            var events: [WatchEvent] = []
            var buffersInWindow = 0
            func flush() {
                guard buffersInWindow > 0 else { return }
                finishWindow(&events)
                if !events.isEmpty && !stop.isSet { deliver(events) }
                events = []
                buffersInWindow = 0
            }
            defer { flush() }
            while !stop.isSet {
                let n = read(fanFD, buffer, bufferSize)
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e == EAGAIN || e == EWOULDBLOCK { break }
                    flush()
                    consecutiveErrors += 1
                    log("fanotify: read failed: \(String(cString: strerror(e))); rescanning the source")
                    if !stop.isSet { deliver([.rescan(.root)]) }
                    if consecutiveErrors > 100 {
                        log("fanotify: giving up after repeated read errors")
                        break loop
                    }
                    usleep(100_000)
                    break
                }
                if n == 0 { break }
                consecutiveErrors = 0
                batchesRead += 1
                if buffersInWindow == 0 {
                    beginWindow()
                    events.reserveCapacity(n / 64)
                }
                parse(count: n, into: &events)
                buffersInWindow += 1
                if n >= bufferSize / 2 && buffersInWindow < Self.maxBuffersPerWindow { continue }
                flush()
                // A short read drained the queue: poll again rather than pay a read that
                // would only say EAGAIN (one syscall per wake-up saved when keeping up).
                if n < bufferSize / 2 {
                    // Events streaming in less than 2 ms apart (a burst): let a
                    // few accumulate instead of waking once per event. An isolated change is
                    // still read at once; within a burst this adds at most `burstPause`.
                    let now = Self.monotonicNanoseconds()
                    let streaming = now &- lastBatch < 2_000_000
                    lastBatch = now
                    if streaming { usleep(Self.burstPauseMicroseconds) }
                    break
                }
            }
        }
    }

    /// Counters for the log: what the thread read and what it cost.
    var statistics: String {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        let cpu = Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
        return "\(eventsRead) events in \(batchesRead) reads, \(eventsOutside) outside the source, "
            + "\(handleLookups) handle lookups, \(cacheResets) cache resets, \(staleHandles) stale handles, "
            + "\(overflows) overflows, thread CPU \((cpu * 1000).rounded() / 1000) s"
    }

    static let burstPauseMicroseconds: UInt32 = 1000
    /// At most this many full reads (256 KiB each, about 2,500 events) form one batch.
    static let maxBuffersPerWindow = 16

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    // MARK: - Parsing

    @inline(__always) private func u8(_ off: Int) -> UInt8 { buffer.load(fromByteOffset: off, as: UInt8.self) }
    @inline(__always) private func u16(_ off: Int) -> UInt16 { buffer.loadUnaligned(fromByteOffset: off, as: UInt16.self) }
    @inline(__always) private func u32(_ off: Int) -> UInt32 { buffer.loadUnaligned(fromByteOffset: off, as: UInt32.self) }
    @inline(__always) private func i32(_ off: Int) -> Int32 { buffer.loadUnaligned(fromByteOffset: off, as: Int32.self) }
    @inline(__always) private func u64(_ off: Int) -> UInt64 { buffer.loadUnaligned(fromByteOffset: off, as: UInt64.self) }

    /// An info record: where it starts and ends in the buffer.
    struct Record {
        var start: Int
        var end: Int
        var valid: Bool { start >= 0 }
        static let none = Record(start: -1, end: -1)
    }

    /// A window is what is delivered as one batch: one read, or consecutive full reads while
    /// the kernel queue holds more (a burst), so that a directory rename read in the second
    /// buffer still corrects paths resolved while reading the first.
    func beginWindow() {
        batchNumber += 1
        fixups.removeAll(keepingCapacity: true)
        batchRenames.removeAll(keepingCapacity: true)
    }

    func finishWindow(_ out: inout [WatchEvent]) {
        if !batchRenames.isEmpty { undoLaterRenames(&out) }
    }

    /// Parses `count` bytes of event records in the buffer into `out`, within the current
    /// window (see `beginWindow`).
    func parse(count n: Int, into out: inout [WatchEvent]) {
        defer { closeBatchMountFDs() }
        defer {
            // A directory that could not be resolved (other than deleted) may be inside the
            // source: nothing observed is forgotten, so the source is rescanned.
            if unresolvedInBatch {
                unresolvedInBatch = false
                out.append(.rescan(.root))
            }
        }
        let metaMin = Int(clinux_fan_event_metadata_len)
        var off = 0
        while off + metaMin <= n {
            let eventLen = Int(u32(off))
            guard eventLen >= metaMin, off + eventLen <= n else {
                log("fanotify: malformed event record (length \(eventLen)) at offset \(off) of \(n); rest of the read skipped, rescanning")
                out.append(.rescan(.root))
                return
            }
            defer { off += eventLen }
            eventsRead += 1
            let version = u8(off + 4)
            let metaLen = Int(u16(off + 6))
            let mask = u64(off + 8)
            let fd = i32(off + 16)
            if fd >= 0 { close(fd) }
            guard version == UInt8(FANOTIFY_METADATA_VERSION), metaLen >= metaMin, metaLen <= eventLen else {
                log("fanotify: unexpected event metadata version \(version); rescanning")
                out.append(.rescan(.root))
                continue
            }
            if mask & FanBits.qOverflow != 0 {
                overflows += 1
                log("fanotify: event queue overflow; rescanning the source")
                out.append(.rescan(.root))
                continue
            }
            var fid = Record.none, dfidName = Record.none, dfid = Record.none
            var oldName = Record.none, newName = Record.none
            var r = off + metaLen
            let end = off + eventLen
            while r + 4 <= end {
                let type = u8(r)
                let len = Int(u16(r + 2))
                guard len >= 4, r + len <= end else { break }
                let rec = Record(start: r, end: r + len)
                switch Int32(type) {
                case FAN_EVENT_INFO_TYPE_FID: fid = rec
                case FAN_EVENT_INFO_TYPE_DFID_NAME: dfidName = rec
                case FAN_EVENT_INFO_TYPE_DFID: dfid = rec
                case FAN_EVENT_INFO_TYPE_OLD_DFID_NAME: oldName = rec
                case FAN_EVENT_INFO_TYPE_NEW_DFID_NAME: newName = rec
                default: break
                }
                r += len
            }
            handle(mask: mask, fid: fid, dfidName: dfidName, dfid: dfid, oldName: oldName, newName: newName, into: &out)
        }
    }

    /// Parses records given as bytes, as if just read (tests feed synthetic records).
    func parseForTesting(_ bytes: [UInt8]) -> [WatchEvent] {
        precondition(bytes.count <= bufferSize)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        var out: [WatchEvent] = []
        beginWindow()
        parse(count: bytes.count, into: &out)
        finishWindow(&out)
        return out
    }

    /// The handle key of a FID-carrying record (fsid + file_handle).
    private func key(_ rec: Record) -> HandleKey? {
        guard rec.start + 20 <= rec.end else { return nil }
        let fsid = u64(rec.start + 4)
        let length = Int(u32(rec.start + 12))
        let type = i32(rec.start + 16)
        guard rec.start + 20 + length <= rec.end else { return nil }
        return HandleKey(fsid: fsid, type: type,
                         bytes: UnsafeRawBufferPointer(start: buffer + rec.start + 20, count: length))
    }

    /// The name that follows the handle in a *_DFID_NAME record.
    private func name(_ rec: Record) -> UnsafeRawBufferPointer {
        let length = Int(u32(rec.start + 12))
        let start = rec.start + 20 + length
        guard start < rec.end else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        let p = buffer + start
        let limit = rec.end - start
        let n = memchr(p, 0, limit).map { $0 - p } ?? limit
        return UnsafeRawBufferPointer(start: p, count: n)
    }

    private func isDot(_ name: UnsafeRawBufferPointer) -> Bool {
        name.count == 1 && name[0] == UInt8(ascii: ".")
    }

    private func handle(mask: UInt64, fid: Record, dfidName: Record, dfid: Record,
                        oldName: Record, newName: Record, into out: inout [WatchEvent]) {
        let isDir = mask & FanBits.onDir != 0
        if mask & (FanBits.deleteSelf | FanBits.moveSelf) != 0 {
            // A directory's own events carry its handle as DFID (or DFID_NAME with ".").
            let selfRecord = fid.valid ? fid : dfid.valid ? dfid : dfidName
            if selfRecord.valid, let k = key(selfRecord), k == rootKey {
                let what = mask & FanBits.deleteSelf != 0 ? "was deleted" : "was moved away"
                log("fanotify: WARNING: the source root \(Mounts.display(root)) \(what); the mirror has no source until a directory is there again")
            }
        }
        let m = mask & ~(FanBits.deleteSelf | FanBits.moveSelf | FanBits.onDir)
        if m == 0 { return }

        if m & FanBits.rename != 0 {
            handleRename(isDir: isDir, oldName: oldName, newName: newName, into: &out)
            return
        }

        // Directory entries that go away change what cached paths mean.
        if isDir && m & FanBits.movedFrom != 0 {
            clearCache()
        } else if isDir && m & FanBits.delete != 0 {
            if fid.valid, let k = key(fid) { cache.removeValue(forKey: k) } else { clearCache() }
        }

        let rec = dfidName.valid ? dfidName : dfid
        guard rec.valid, let k = key(rec), let dir = resolve(k, rec) else { return }
        let nm = dfidName.valid ? name(dfidName) : UnsafeRawBufferPointer(start: nil, count: 0)
        let path: [UInt8]
        if nm.count == 0 || isDot(nm) {
            guard let rel = dir.rel else { eventsOutside += 1; return }
            path = rel
        } else if let rel = dir.rel {
            path = join(rel, nm)
        } else {
            // Outside the source; only the root itself, seen from its parent, is of interest.
            if dir.isSourceParent && nm.elementsEqual(rootName) {
                // Its removal is logged through the root's own mark (FAN_DELETE_SELF).
                if m & FanBits.gone != 0 { return }
                path = []
            } else {
                eventsOutside += 1
                if isDir && m & FanBits.gone != 0 { warnIfAncestor(dir.abs, nm) }
                return
            }
        }
        if isDir && reportsTargetFID && m & FanBits.create != 0 && m & FanBits.gone == 0 && fid.valid && nm.count > 0,
           let parentRel = dir.rel, let k = key(fid), cache[k] == nil {
            // A new directory's handle is in its creation event (FAN_REPORT_TARGET_FID): its
            // path is known without `open_by_handle_at` when its own events come. Kept with
            // the parent's read buffer: its path is the parent's, whose renames later in that
            // buffer are undone the same way (`fixups`).
            let abs = dir.abs == [UInt8(ascii: "/")] ? [UInt8(ascii: "/")] + Array(nm) : join(dir.abs, nm)
            store(k, DirInfo(abs: abs, rel: join(parentRel, nm), isSourceParent: false, batch: dir.batch))
        }
        let sp = SyncPath(bytes: path)
        guard filter(sp, isDir) else { return }
        let first = out.count
        map(m, path: sp, isDir: isDir, into: &out)
        if dir.batch == batchNumber, let rel = dir.rel {
            for k in first..<out.count { fixups.append(Fixup(index: k, dirLen: rel.count, dirLen2: -1)) }
        }
    }

    /// Turns one (possibly merged) event mask on one path into watch events.
    private func map(_ m: UInt64, path: SyncPath, isDir: Bool, into out: inout [WatchEvent]) {
        let created = m & (FanBits.create | FanBits.movedTo) != 0
        if m & FanBits.gone != 0 {
            if m & FanBits.present != 0 {
                // The kernel merged events on the same name and object; their order is lost,
                // so what is there now decides.
                var st = stat()
                if lstatRel(path.bytes, &st) == 0 {
                    let nowDir = (st.st_mode & S_IFMT) == S_IFDIR
                    out.append(.changed(path, isDirectory: nowDir, created: created, closed: true))
                    if nowDir && m & FanBits.movedTo != 0 { out.append(.rescan(path)) }
                } else {
                    out.append(.removed(path, isDirectory: isDir))
                }
            } else {
                out.append(.removed(path, isDirectory: isDir))
            }
            return
        }
        if m & FanBits.movedTo != 0 {
            // Moved in (kernels without FAN_RENAME): content arrived without events.
            out.append(.changed(path, isDirectory: isDir, created: true, closed: true))
            if isDir { out.append(.rescan(path)) }
            return
        }
        if m & FanBits.create != 0 {
            var closed = true
            if !isDir && m & FanBits.closeWrite == 0 {
                // A new regular file with one link will be followed by CLOSE_WRITE; links,
                // symlinks, fifos and hard links are complete now.
                var st = stat()
                if lstatRel(path.bytes, &st) == 0 {
                    closed = (st.st_mode & S_IFMT) != S_IFREG || st.st_nlink > 1
                }
            }
            out.append(.changed(path, isDirectory: isDir, created: true, closed: closed))
            return
        }
        if m & FanBits.closeWrite != 0 || m & FanBits.attrib != 0 {
            out.append(.changed(path, isDirectory: isDir, created: false, closed: true))
            return
        }
        if m & FanBits.modify != 0 {
            out.append(.changed(path, isDirectory: isDir, created: false, closed: false))
        }
    }

    private func handleRename(isDir: Bool, oldName: Record, newName: Record, into out: inout [WatchEvent]) {
        var fromPath: [UInt8]? = nil
        var toPath: [UInt8]? = nil
        var fromDirLen = -1, toDirLen = -1
        if oldName.valid, let k = key(oldName), let dir = resolve(k, oldName) {
            let nm = name(oldName)
            if let rel = dir.rel {
                fromPath = join(rel, nm)
                if dir.batch == batchNumber { fromDirLen = rel.count }
            } else if isDir && !(dir.isSourceParent && nm.elementsEqual(rootName)) {
                // (The root itself reports FAN_MOVE_SELF through its own mark.)
                warnIfAncestor(dir.abs, nm)
            }
        }
        if newName.valid, let k = key(newName), let dir = resolve(k, newName), let rel = dir.rel {
            toPath = join(rel, name(newName))
            if dir.batch == batchNumber { toDirLen = rel.count }
        }
        // Every cached path below the moved directory is wrong now (resolved above first).
        if isDir { clearCache() }

        var from = fromPath.map { SyncPath(bytes: $0) }
        var to = toPath.map { SyncPath(bytes: $0) }
        if let f = from, !filter(f, isDir) { from = nil }
        if let t = to, !filter(t, isDir) { to = nil }
        let first = out.count
        switch (from, to) {
        case let (f?, t?):
            if isDir { batchRenames.append((index: out.count, from: f.bytes, to: t.bytes)) }
            out.append(.renamed(from: f, to: t, isDirectory: isDir))
            if fromDirLen >= 0 || toDirLen >= 0 {
                fixups.append(Fixup(index: first, dirLen: fromDirLen, dirLen2: toDirLen))
            }
        case let (f?, nil):
            out.append(.removed(f, isDirectory: isDir))
            if fromDirLen >= 0 { fixups.append(Fixup(index: first, dirLen: fromDirLen, dirLen2: -1)) }
        case let (nil, t?):
            if isDir {
                out.append(.changed(t, isDirectory: true, created: true, closed: true))
                out.append(.rescan(t))
            } else {
                out.append(.changed(t, isDirectory: false, created: true, closed: true))
            }
            if toDirLen >= 0 {
                for k in first..<out.count { fixups.append(Fixup(index: k, dirLen: toDirLen, dirLen2: -1)) }
            }
        case (nil, nil):
            break
        }
    }

    /// A directory handle is resolved when the buffer is read, so an event written into a
    /// directory that a later event of the same buffer renames already carries the new name:
    /// `d/f` written then `d` renamed to `e` would read as "e/f changed, d renamed to e".
    /// This puts such paths back to the names they had when the event happened, so that the
    /// batch reads in order: "d/f changed, d renamed to e". Renames are undone latest first;
    /// a rename's own paths are corrected first, by the renames after it. (Renames not yet
    /// read, in a later buffer, cannot be undone: the queue must still treat paths as hints.)
    private func undoLaterRenames(_ out: inout [WatchEvent]) {
        guard !fixups.isEmpty, batchRenames.count <= 1024 else { return }
        var renameAt: [Int: Int] = [:]
        for (i, r) in batchRenames.enumerated() { renameAt[r.index] = i }
        var dropped: Set<Int> = []
        for f in fixups.reversed() {
            let j = f.index
            guard batchRenames.last!.index > j else { continue }
            switch out[j] {
            case let .changed(p, isDir, created, closed):
                guard let q = undo(p, dirLen: f.dirLen, after: j) else { continue }
                if filter(q, isDir) { out[j] = .changed(q, isDirectory: isDir, created: created, closed: closed) } else { dropped.insert(j) }
            case let .removed(p, isDir):
                guard let q = undo(p, dirLen: f.dirLen, after: j) else { continue }
                if filter(q, isDir) { out[j] = .removed(q, isDirectory: isDir) } else { dropped.insert(j) }
            case let .rescan(p):
                guard let q = undo(p, dirLen: f.dirLen, after: j) else { continue }
                if filter(q, true) { out[j] = .rescan(q) } else { dropped.insert(j) }
            case let .renamed(from, to, isDir):
                let f2 = undo(from, dirLen: f.dirLen, after: j) ?? from
                let t2 = undo(to, dirLen: f.dirLen2, after: j) ?? to
                guard f2 != from || t2 != to, filter(f2, isDir), filter(t2, isDir) else { continue }
                out[j] = .renamed(from: f2, to: t2, isDirectory: isDir)
                if let i = renameAt[j] { batchRenames[i].from = f2.bytes; batchRenames[i].to = t2.bytes }
            }
        }
        if !dropped.isEmpty {
            out = out.enumerated().filter { !dropped.contains($0.offset) }.map(\.element)
        }
    }

    /// `path` with its first `dirLen` bytes (the part named by a directory handle) moved back
    /// through the directory renames after output index `j`; nil when none applies.
    private func undo(_ path: SyncPath, dirLen: Int, after j: Int) -> SyncPath? {
        guard dirLen >= 0, dirLen <= path.bytes.count else { return nil }
        var dir = SyncPath(bytes: Array(path.bytes[0..<dirLen]))
        var moved = false
        var i = batchRenames.count - 1
        while i >= 0 && batchRenames[i].index > j {
            let r = batchRenames[i]
            if let back = dir.rebased(from: SyncPath(bytes: r.to), to: SyncPath(bytes: r.from)) {
                dir = back
                moved = true
            }
            i -= 1
        }
        guard moved else { return nil }
        return SyncPath(bytes: dir.bytes + path.bytes[dirLen...])
    }

    private func warnIfAncestor(_ dirAbs: [UInt8], _ nm: UnsafeRawBufferPointer) {
        // Cheap test first: the source root must start with the directory's path.
        guard root.starts(with: dirAbs) else { return }
        var full = dirAbs
        if full != [UInt8(ascii: "/")] { full.append(UInt8(ascii: "/")) }
        full.append(contentsOf: nm)
        if Mounts.isInsideOrEqual(root, full) {
            log("fanotify: WARNING: \(Mounts.display(full)), which contains the source root \(Mounts.display(root)), was removed or renamed away")
        }
    }

    @inline(__always) private func join(_ dir: [UInt8], _ nm: UnsafeRawBufferPointer) -> [UInt8] {
        if dir.isEmpty { return Array(nm) }
        var out: [UInt8] = []
        out.reserveCapacity(dir.count + 1 + nm.count)
        out.append(contentsOf: dir)
        out.append(UInt8(ascii: "/"))
        out.append(contentsOf: nm)
        return out
    }

    // MARK: - Handle resolution

    private func closeBatchMountFDs() {
        if batchMountFDs.isEmpty { return }
        for fd in batchMountFDs.values where fd >= 0 { close(fd) }
        batchMountFDs.removeAll(keepingCapacity: true)
    }

    private func clearCache() {
        cacheResets += 1
        cache.removeAll(keepingCapacity: true)
    }

    /// The directory a handle names, from the cache or through `open_by_handle_at`. Nil
    /// when it cannot be known (deleted: ESTALE, or an unknown filesystem).
    private func resolve(_ key: HandleKey, _ rec: Record) -> DirInfo? {
        if let hit = cache[key] { return hit }
        guard let fs = filesystems[key.fsid], !fs.mounts.isEmpty else {
            if filesystems[key.fsid] != nil { return nil } // unmounted below the source
            noteResolveError("an event from an unmarked filesystem (fsid \(Self.hex(key.fsid)))")
            return nil
        }
        let handle = UnsafeRawPointer(buffer + rec.start + 20).assumingMemoryBound(to: UInt8.self)
        handleLookups += 1
        var firstOutside: DirInfo? = nil
        for mount in fs.mounts {
            guard let abs = openAndName(mount, handle, key) else { continue }
            let info = dirInfo(abs)
            if info.rel != nil {
                store(key, info)
                return info
            }
            if firstOutside == nil { firstOutside = info }
        }
        if let outside = firstOutside { store(key, outside) }
        return firstOutside
    }

    private func store(_ key: HandleKey, _ info: DirInfo) {
        if cache.count >= cacheLimit { clearCache() }
        cache[key] = info
    }

    private func dirInfo(_ abs: [UInt8]) -> DirInfo {
        var rel: [UInt8]? = nil
        if abs == root {
            rel = []
        } else if root == [UInt8(ascii: "/")] {
            rel = Array(abs.dropFirst())
        } else if abs.count > root.count, abs[root.count] == UInt8(ascii: "/"), abs.starts(with: root) {
            rel = Array(abs[(root.count + 1)...])
        }
        return DirInfo(abs: abs, rel: rel, isSourceParent: rel == nil && abs == rootParent, batch: batchNumber)
    }

    private func openAndName(_ mount: MountRef, _ handle: UnsafePointer<UInt8>, _ key: HandleKey) -> [UInt8]? {
        var mountFD: Int32
        if let open = batchMountFDs[mount.mountID] {
            mountFD = open
        } else {
            mountFD = withCString(mount.openPath) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
            if mountFD >= 0 {
                var st = stat()
                if fstat(mountFD, &st) != 0 || st.st_dev != mount.device {
                    close(mountFD)
                    mountFD = -1
                }
            }
            // Remembered even when it failed, so a missing root costs one open per batch.
            batchMountFDs[mount.mountID] = mountFD
        }
        if mountFD < 0 { return nil }
        var fd = clinux_open_by_handle_at(mountFD, handle, key.length, key.type, clinux_o_path | O_CLOEXEC)
        if fd < 0 && errno != ESTALE && errno != ENOENT {
            // A transient failure (ENOMEM seen under memory pressure): once more.
            fd = clinux_open_by_handle_at(mountFD, handle, key.length, key.type, clinux_o_path | O_CLOEXEC)
        }
        if fd < 0 {
            let e = errno
            if e == ESTALE || e == ENOENT {
                staleHandles += 1
            } else {
                noteResolveError("open_by_handle_at: \(String(cString: strerror(e)))")
            }
            return nil
        }
        defer { close(fd) }
        var procPath = Array("/proc/self/fd/\(fd)".utf8CString)
        let n = procPath.withUnsafeMutableBufferPointer { p in
            linkBuffer.withUnsafeMutableBytes { readlink(p.baseAddress!, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        }
        if n <= 0 {
            noteResolveError("readlink of a resolved handle: \(String(cString: strerror(errno)))")
            return nil
        }
        let abs = Array(linkBuffer[0..<n])
        guard abs.first == UInt8(ascii: "/") else { return nil } // not reachable from our root
        let deletedSuffix = Array(" (deleted)".utf8)
        if abs.count > deletedSuffix.count, abs.suffix(deletedSuffix.count).elementsEqual(deletedSuffix) {
            // Either a deleted directory or one really named "... (deleted)": ask the inode.
            var st = stat()
            if fstat(fd, &st) == 0 && st.st_nlink == 0 {
                staleHandles += 1
                return nil
            }
        }
        return abs
    }

    private func noteResolveError(_ what: String) {
        resolveErrorsLogged += 1
        unresolvedInBatch = true
        if resolveErrorsLogged <= 10 {
            log("fanotify: cannot resolve a directory handle: \(what); rescanning the source")
        } else if resolveErrorsLogged == 11 {
            log("fanotify: further handle resolution errors are not logged")
        }
    }

    // MARK: - Mount changes

    private func mountsChanged(into out: inout [WatchEvent]) {
        guard let table = try? Mounts.readMountInfo() else { return }
        var current: [Int: MountEntry] = [:]
        for entry in table where Mounts.isStrictlyInside(entry.mountPoint, root) {
            current[entry.mountID] = entry
        }
        for entry in table where Mounts.isInsideOrEqual(root, entry.mountPoint)
            && !coveringMounts.contains(entry.mountID) {
            coveringMounts.insert(entry.mountID)
            log("fanotify: WARNING: a filesystem was mounted at \(entry.displayMountPoint), over the source root or one of its parents; what the source shows may have changed")
        }
        for (id, entry) in knownSubMounts where current[id] == nil && Mounts.isStrictlyInside(entry.mountPoint, root) {
            knownSubMounts[id] = nil
            for (fsid, var fs) in filesystems {
                // An emptied entry stays: late events of that filesystem are then skipped quietly.
                fs.mounts.removeAll { $0.mountID == id }
                filesystems[fsid] = fs
            }
            clearCache()
            log("fanotify: \(entry.displayMountPoint) (\(entry.fsType)) was unmounted; rescanning it")
            if let rel = dirInfo(entry.mountPoint).rel { out.append(.rescan(SyncPath(bytes: rel))) }
        }
        for (id, entry) in current.sorted(by: { $0.key < $1.key }) where knownSubMounts[id] == nil {
            do {
                let result = try addSubMount(entry)
                if result == .hidden { continue }
                log("fanotify: \(entry.displayMountPoint) (\(entry.fsType)) was mounted below the source; watching it and rescanning it")
            } catch {
                knownSubMounts[id] = entry
                log("fanotify: WARNING: cannot watch \(entry.displayMountPoint), newly mounted below the source: \(error); changes there are not seen")
            }
            clearCache()
            if let rel = dirInfo(entry.mountPoint).rel { out.append(.rescan(SyncPath(bytes: rel))) }
        }
        updateDescription(descriptions)
    }

    // MARK: - Small helpers

    private func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        scratch.removeAll(keepingCapacity: true)
        for b in bytes { scratch.append(CChar(bitPattern: b)) }
        scratch.append(0)
        return scratch.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    private func lstatBytes(_ abs: [UInt8], _ st: inout stat) -> Int32 {
        withCString(abs) { lstat($0, &st) }
    }

    /// lstat of a path relative to the source root.
    private func lstatRel(_ rel: [UInt8], _ st: inout stat) -> Int32 {
        scratch.removeAll(keepingCapacity: true)
        for b in root { scratch.append(CChar(bitPattern: b)) }
        if !rel.isEmpty {
            if root != [UInt8(ascii: "/")] { scratch.append(CChar(UInt8(ascii: "/"))) }
            for b in rel { scratch.append(CChar(bitPattern: b)) }
        }
        scratch.append(0)
        return scratch.withUnsafeBufferPointer { lstat($0.baseAddress!, &st) }
    }
}

/// Set once by `stop()`; read by the watcher thread between reads.
final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}
