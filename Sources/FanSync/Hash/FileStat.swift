import CLinux
import Glibc

/// What a path is, as far as mirroring cares.
public enum FileKind: UInt8, Sendable, Hashable, CustomStringConvertible {
    case regular = 1
    case directory = 2
    case symlink = 3
    /// FIFOs, sockets, devices: mirrored by rsync as metadata, never read or hashed.
    case other = 4

    public init(mode: UInt32) {
        switch mode & 0o170000 {      // S_IFMT
        case 0o100000: self = .regular   // S_IFREG
        case 0o040000: self = .directory // S_IFDIR
        case 0o120000: self = .symlink   // S_IFLNK
        default: self = .other
        }
    }

    public var description: String {
        switch self {
        case .regular: return "file"
        case .directory: return "directory"
        case .symlink: return "symlink"
        case .other: return "special file"
        }
    }
}

/// The `statx` fields the index compares (never following a final symlink).
public struct FileStat: Hashable, Sendable {
    public var kind: FileKind
    public var size: UInt64
    /// Modification time in nanoseconds since the epoch.
    public var mtimeNs: Int64
    public var ino: UInt64
    /// `makedev(stx_dev_major, stx_dev_minor)` as glibc computes it.
    public var dev: UInt64
    /// The full `st_mode` (type and permission bits).
    public var mode: UInt32
    public var nlink: UInt32

    public init(kind: FileKind, size: UInt64, mtimeNs: Int64, ino: UInt64, dev: UInt64, mode: UInt32, nlink: UInt32) {
        self.kind = kind
        self.size = size
        self.mtimeNs = mtimeNs
        self.ino = ino
        self.dev = dev
        self.mode = mode
        self.nlink = nlink
    }

    public init(statx s: statx) {
        let mode = UInt32(s.stx_mode)
        self.init(
            kind: FileKind(mode: mode),
            size: s.stx_size,
            mtimeNs: Int64(s.stx_mtime.tv_sec) * 1_000_000_000 + Int64(s.stx_mtime.tv_nsec),
            ino: s.stx_ino,
            dev: FileStat.makedev(major: s.stx_dev_major, minor: s.stx_dev_minor),
            mode: mode,
            nlink: s.stx_nlink)
    }

    public init(stat s: stat) {
        let mode = UInt32(s.st_mode)
        self.init(kind: FileKind(mode: mode), size: UInt64(max(0, s.st_size)),
                  mtimeNs: Int64(s.st_mtim.tv_sec) * 1_000_000_000 + Int64(s.st_mtim.tv_nsec),
                  ino: UInt64(s.st_ino), dev: UInt64(s.st_dev), mode: mode, nlink: UInt32(s.st_nlink))
    }

    /// glibc's `makedev` (the encoding `stat.st_dev` uses).
    public static func makedev(major: UInt32, minor: UInt32) -> UInt64 {
        let ma = UInt64(major), mi = UInt64(minor)
        return (ma & 0x0000_0fff) << 8 | (ma & 0xffff_f000) << 32 | (mi & 0x0000_00ff) | (mi & 0xffff_ff00) << 12
    }

    /// The fields `statx` must fill for a `FileStat`.
    public static let statxMask: UInt32 = UInt32(STATX_TYPE | STATX_MODE | STATX_NLINK | STATX_INO | STATX_SIZE | STATX_MTIME)

    /// True when a file read between `self` (before) and `other` (after) saw one version.
    func sameVersion(as other: FileStat) -> Bool {
        kind == other.kind && size == other.size && mtimeNs == other.mtimeNs && ino == other.ino && dev == other.dev
    }
}

/// A hashed path: its metadata, and its content hash for files and symlinks.
public struct HashedEntry: Hashable, Sendable {
    public var stat: FileStat
    /// The bytes of a symlink's target (not followed); nil for other kinds.
    public var linkTarget: [UInt8]?
    /// Regular files: the file's bytes. Symlinks: the target's bytes. Others: nil.
    public var content: ContentHash?

    public init(stat: FileStat, linkTarget: [UInt8]? = nil, content: ContentHash? = nil) {
        self.stat = stat
        self.linkTarget = linkTarget
        self.content = content
    }
}

/// Why a path could not be hashed.
public struct HashError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Operation: String, Sendable {
        case statx, open, read, readlink, close
        /// The file changed while it was read (size, mtime or inode differ after the read,
        /// or it ended early): hash it again later.
        case changedWhileReading = "check after read"
    }

    public let path: [UInt8]
    public let operation: Operation
    /// The errno (EAGAIN for `changedWhileReading`).
    public let errno: Int32

    public init(path: [UInt8], operation: Operation, errno: Int32) {
        self.path = path
        self.operation = operation
        self.errno = errno
    }

    /// ENOENT / ENOTDIR: the path is gone (deleted since it was listed), not a failure.
    public var isGone: Bool { errno == ENOENT || errno == ENOTDIR }

    public var description: String {
        let name = SyncPath.displayString(path)
        if operation == .changedWhileReading { return "\(name): changed while it was read; hash it again" }
        return "\(operation.rawValue) \(name): \(String(cString: strerror(errno)))"
    }
}

/// The result for one requested path, in request order.
public typealias HashResult = Result<HashedEntry, HashError>

/// Hashes batches of absolute paths. An instance belongs to one thread (it is not
/// Sendable); `HashService` gives it a thread of its own.
public protocol FileHasher: AnyObject {
    /// The content chunk size (see `ContentHash.defaultChunkSize`).
    var chunkSize: Int { get }
    /// A short name for logs and benchmarks ("io_uring", "read").
    var backendName: String { get }
    /// `statx` each path (not following a final symlink), then hashes regular files and
    /// symlink targets. One result per path, in the same order.
    func hash(_ paths: [[UInt8]]) -> [HashResult]
}

/// Opening flags for content reads: never follow a symlink, never block on a FIFO that
/// replaced the file, and leave atime alone where the kernel lets us.
enum ReadOpenFlags {
    static let base: Int32 = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY
}
