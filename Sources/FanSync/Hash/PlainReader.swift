import CLinux
import CURing
import Glibc

/// The fallback hasher: one blocking `statx`, `open`, `read` loop and `close` per path.
/// Used where `io_uring_queue_init` is refused (a seccomp filter, an old kernel, a
/// container runtime that blocks it); same results as `UringReader`.
public final class PlainReader: FileHasher {
    public let chunkSize: Int
    public var backendName: String { "read" }
    private let buffer: UnsafeMutableRawBufferPointer
    private let hasher: ContentHasher

    /// - Parameter bufferSize: bytes per `read(2)`.
    public init(chunkSize: Int = ContentHash.defaultChunkSize, bufferSize: Int = 1 << 20) {
        precondition(bufferSize > 0)
        self.chunkSize = chunkSize
        buffer = .allocate(byteCount: bufferSize, alignment: 4096)
        hasher = ContentHasher(chunkSize: chunkSize)
    }

    deinit { buffer.deallocate() }

    public func hash(_ paths: [[UInt8]]) -> [HashResult] {
        paths.map(hashOne)
    }

    private func hashOne(_ path: [UInt8]) -> HashResult {
        let before: FileStat
        switch HashIO.statPath(path) {
        case .failure(let e): return .failure(e)
        case .success(let s): before = s
        }
        switch before.kind {
        case .directory, .other:
            return .success(HashedEntry(stat: before))
        case .symlink:
            return HashIO.symlinkEntry(path, stat: before, chunkSize: chunkSize)
        case .regular:
            if before.size == 0 {
                return .success(HashedEntry(stat: before, content: ContentHash.of([], chunkSize: chunkSize)))
            }
        }
        let fd: Int32
        switch HashIO.openForReading(path) {
        case .failure(let e): return .failure(e)
        case .success(let f): fd = f
        }
        defer { close(fd) }
        hasher.reset()
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(HashError(path: path, operation: .read, errno: errno))
            }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        let content = hasher.finish()
        switch HashIO.statDescriptor(fd, path: path) {
        case .failure(let e): return .failure(e)
        case .success(let after):
            guard before.sameVersion(as: after), content.size == after.size else {
                return .failure(HashError(path: path, operation: .changedWhileReading, errno: EAGAIN))
            }
            return .success(HashedEntry(stat: before, content: content))
        }
    }
}

/// Blocking helpers shared by both readers.
enum HashIO {
    static func statPath(_ path: [UInt8]) -> Result<FileStat, HashError> {
        if path.contains(0) { return .failure(HashError(path: path, operation: .statx, errno: EINVAL)) }
        var s = statx()
        let rc = withCPath(path) { clinux_statx(AT_FDCWD, $0, curing_at_symlink_nofollow | curing_at_statx_sync_as_stat, FileStat.statxMask, &s) }
        if rc != 0 { return .failure(HashError(path: path, operation: .statx, errno: errno)) }
        return .success(FileStat(statx: s))
    }

    static func statDescriptor(_ fd: Int32, path: [UInt8]) -> Result<FileStat, HashError> {
        var s = statx()
        let rc = clinux_statx(fd, "", curing_at_empty_path | curing_at_statx_sync_as_stat, FileStat.statxMask, &s)
        if rc != 0 { return .failure(HashError(path: path, operation: .statx, errno: errno)) }
        return .success(FileStat(statx: s))
    }

    /// Opens for reading without following a final symlink, without blocking on a FIFO
    /// swapped in since the `statx`, and with O_NOATIME where permitted (it needs the
    /// file's owner or CAP_FOWNER: EPERM otherwise, then it retries without it).
    /// O_NONBLOCK is cleared again after the open: io_uring would turn it into EAGAIN
    /// for reads that miss the page cache.
    static func openForReading(_ path: [UInt8]) -> Result<Int32, HashError> {
        var fd = withCPath(path) { open($0, ReadOpenFlags.base | curing_o_noatime) }
        if fd < 0 && errno == EPERM {
            fd = withCPath(path) { open($0, ReadOpenFlags.base) }
        }
        if fd < 0 { return .failure(HashError(path: path, operation: .open, errno: errno)) }
        return clearNonblock(fd, path: path)
    }

    static func clearNonblock(_ fd: Int32, path: [UInt8]) -> Result<Int32, HashError> {
        let flags = fcntl(fd, F_GETFL)
        if flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 {
            let e = errno
            close(fd)
            return .failure(HashError(path: path, operation: .open, errno: e))
        }
        return .success(fd)
    }

    static func readLink(_ path: [UInt8], sizeHint: Int) -> Result<[UInt8], HashError> {
        var capacity = max(sizeHint + 1, 256)
        while true {
            var buf = [CChar](repeating: 0, count: capacity)
            let n = withCPath(path) { p in buf.withUnsafeMutableBufferPointer { readlink(p, $0.baseAddress!, capacity) } }
            if n < 0 { return .failure(HashError(path: path, operation: .readlink, errno: errno)) }
            if n < capacity { return .success(buf[0..<n].map { UInt8(bitPattern: $0) }) }
            capacity *= 2
        }
    }

    static func symlinkEntry(_ path: [UInt8], stat: FileStat, chunkSize: Int) -> HashResult {
        readLink(path, sizeHint: Int(stat.size)).map { target in
            HashedEntry(stat: stat, linkTarget: target, content: ContentHash.of(target, chunkSize: chunkSize))
        }
    }
}
