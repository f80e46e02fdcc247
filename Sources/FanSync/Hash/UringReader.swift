import CLinux
import CURing
import Glibc

/// A hasher backend could not be set up (io_uring refused, memory).
public struct HashBackendError: Error, Sendable, CustomStringConvertible {
    public let operation: String
    public let errno: Int32
    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

/// Hashes batches of files through one io_uring: `IORING_OP_STATX` for every path of the
/// batch (up to `slotCount` at a time), `IORING_OP_OPENAT` for the regular files, then
/// `IORING_OP_READ(_FIXED)` with up to `bufferCount` reads in flight across files (at most
/// `maxReadsPerFile` for one file, so large files do not starve small ones), at idle I/O
/// priority (`sqe->ioprio`). Completions arrive out of order; each file's buffers are
/// hashed in file order (XXH3-128 streaming, whole file and per chunk).
///
/// A file is re-checked after its last byte was hashed (`statx` on the open descriptor):
/// if its size, mtime or inode moved, or it ended early, the result is
/// `HashError.changedWhileReading` and the caller hashes it again later.
///
/// Ownership: the ring belongs to the thread that uses it. This class is not Sendable and
/// never leaves that thread (`HashService` runs one on a thread of its own).
public final class UringReader: FileHasher {
    public let chunkSize: Int
    public let bufferSize: Int
    public let bufferCount: Int
    public let slotCount: Int
    public let maxReadsPerFile: Int
    /// Reads of files larger than one buffer go to io-wq workers (IOSQE_ASYNC), so the
    /// copy out of the page cache runs on another core while this thread hashes.
    public let asyncReads: Bool
    /// True when the buffers are registered with the ring (`READ_FIXED`); false when
    /// registering was refused (RLIMIT_MEMLOCK) and plain `READ` is used.
    public let fixedBuffers: Bool
    public var backendName: String { fixedBuffers ? "io_uring" : "io_uring (unregistered buffers)" }

    private let ring: OpaquePointer
    private let buffers: UnsafeMutableRawPointer
    private var freeBuffers: [Int]
    private let statxBuffers: UnsafeMutablePointer<statx>
    private var slots: [Slot]
    private var freeSlots: [Int]
    private let hashers: [ContentHasher]
    private var cqeData: [UInt64]
    private var cqeRes: [Int32]
    private var inFlight = 0

    private enum Op: UInt64 { case statx = 1, open = 2, read = 3 }

    private struct Read {
        var buffer: Int
        var offset: UInt64
        var length: Int
        var result: Int32?
    }

    private struct Slot {
        var job = -1
        var path: [UInt8] = []
        var cPath: UnsafeMutablePointer<CChar>?
        var noatime = true
        var before: FileStat?
        var fd: Int32 = -1
        var reading = false
        var nextOffset: UInt64 = 0
        var reads: [Read] = []
        var failure: HashError?
        var pendingOps = 0
    }

    /// - Parameters:
    ///   - bufferSize: bytes per read; 512 KiB by default (see Perf/hash/README.md).
    ///   - bufferCount: reads in flight at most (and `bufferCount * bufferSize` bytes of
    ///     buffer memory: 8 MiB by default, within the daemon's memory budget).
    ///   - slotCount: files in progress at most (their `statx`/`openat` in flight).
    /// - Throws: `HashBackendError` when io_uring cannot be set up: use `PlainReader`.
    public init(chunkSize: Int = ContentHash.defaultChunkSize, bufferSize: Int = 256 << 10,
                bufferCount: Int = 8, slotCount: Int = 64, maxReadsPerFile: Int = 8,
                asyncReads: Bool = true) throws(HashBackendError) {
        precondition(bufferSize > 0 && bufferSize <= Int(Int32.max) && bufferCount > 0 && bufferCount < 1 << 24)
        precondition(slotCount > 0 && maxReadsPerFile > 0)
        let entries = UInt32(max(64, (slotCount + bufferCount)).nextPowerOf2)
        guard let ring = curing_ring_create(entries) else {
            throw HashBackendError(operation: "io_uring_queue_init(\(entries))", errno: errno)
        }
        self.ring = ring
        self.chunkSize = chunkSize
        self.bufferSize = bufferSize
        self.bufferCount = bufferCount
        self.slotCount = slotCount
        self.maxReadsPerFile = maxReadsPerFile
        self.asyncReads = asyncReads
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, 4096, bufferSize * bufferCount) == 0, let memory else {
            curing_ring_destroy(ring)
            throw HashBackendError(operation: "allocating \(bufferCount) read buffers of \(bufferSize) bytes", errno: ENOMEM)
        }
        buffers = memory
        fixedBuffers = curing_register_buffers(ring, memory, UInt32(bufferCount), bufferSize) == 0
        freeBuffers = Array((0..<bufferCount).reversed())
        statxBuffers = .allocate(capacity: slotCount)
        statxBuffers.initialize(repeating: statx(), count: slotCount)
        slots = Array(repeating: Slot(), count: slotCount)
        freeSlots = Array((0..<slotCount).reversed())
        hashers = (0..<slotCount).map { _ in ContentHasher(chunkSize: chunkSize) }
        let reap = (slotCount + bufferCount) * 2
        cqeData = Array(repeating: 0, count: reap)
        cqeRes = Array(repeating: 0, count: reap)
    }

    deinit {
        curing_ring_destroy(ring)
        free(buffers)
        statxBuffers.deallocate()
    }

    public func hash(_ paths: [[UInt8]]) -> [HashResult] {
        var results = [HashResult?](repeating: nil, count: paths.count)
        var next = 0
        var finished = 0
        while finished < paths.count {
            while next < paths.count, let s = freeSlots.popLast() {
                start(slot: s, job: next, path: paths[next], results: &results, finished: &finished)
                next += 1
            }
            issueReads(results: &results, finished: &finished)
            if inFlight == 0 { continue }
            // Wait for half of what is in flight: fewer wake-ups than one at a time, and
            // everything in flight completes without this thread's help.
            let rc = curing_submit_and_wait(ring, UInt32(max(1, inFlight / 2)))
            if rc < 0 && rc != -EBUSY && rc != -EAGAIN {
                // The ring itself failed: nothing more can complete through it.
                fatalError("io_uring_submit_and_wait: \(String(cString: strerror(-rc)))")
            }
            let n = Int(cqeData.withUnsafeMutableBufferPointer { d in
                cqeRes.withUnsafeMutableBufferPointer { r in curing_reap(ring, d.baseAddress, r.baseAddress, UInt32(d.count)) }
            })
            for i in 0..<n {
                inFlight -= 1
                complete(userData: cqeData[i], result: cqeRes[i], results: &results, finished: &finished)
            }
        }
        return results.map { $0! }
    }

    // MARK: - Steps

    private func start(slot s: Int, job: Int, path: [UInt8], results: inout [HashResult?], finished: inout Int) {
        if path.contains(0) {
            results[job] = .failure(HashError(path: path, operation: .statx, errno: EINVAL))
            finished += 1
            freeSlots.append(s)
            return
        }
        let c = UnsafeMutablePointer<CChar>.allocate(capacity: path.count + 1)
        path.withUnsafeBufferPointer { src in
            UnsafeMutableRawPointer(c).copyMemory(from: src.baseAddress!, byteCount: path.count)
        }
        c[path.count] = 0
        slots[s] = Slot(job: job, path: path, cPath: c)
        submitting { curing_prep_statx(ring, tag(s, .statx), AT_FDCWD, c, curing_at_symlink_nofollow | curing_at_statx_sync_as_stat, FileStat.statxMask, statxBuffers + s) }
        slots[s].pendingOps += 1
    }

    private func issueReads(results: inout [HashResult?], finished: inout Int) {
        guard !freeBuffers.isEmpty else { return }
        for s in 0..<slotCount where slots[s].reading && slots[s].failure == nil {
            let size = slots[s].before!.size
            while slots[s].nextOffset < size, slots[s].reads.count < maxReadsPerFile, let b = freeBuffers.popLast() {
                let length = Int(min(UInt64(bufferSize), size - slots[s].nextOffset))
                let read = Read(buffer: b, offset: slots[s].nextOffset, length: length)
                slots[s].reads.append(read)
                slots[s].nextOffset += UInt64(length)
                prepRead(slot: s, read)
            }
            if freeBuffers.isEmpty { return }
        }
    }

    private func prepRead(slot s: Int, _ read: Read) {
        let fd = slots[s].fd
        let address = buffers + read.buffer * bufferSize
        let index = fixedBuffers ? Int32(read.buffer) : -1
        let punt = asyncReads && slots[s].before!.size > UInt64(bufferSize)
        submitting {
            curing_prep_read(ring, tag(s, .read, buffer: read.buffer), fd, address, UInt32(read.length), read.offset, index, curing_ioprio_idle, punt ? 1 : 0)
        }
        slots[s].pendingOps += 1
    }

    private func complete(userData: UInt64, result: Int32, results: inout [HashResult?], finished: inout Int) {
        let s = Int(userData >> 32)
        let op = Op(rawValue: (userData >> 24) & 0xff)!
        slots[s].pendingOps -= 1
        switch op {
        case .statx: statted(slot: s, result: result, results: &results, finished: &finished)
        case .open: opened(slot: s, result: result, results: &results, finished: &finished)
        case .read: readDone(slot: s, buffer: Int(userData & 0xff_ffff), result: result, results: &results, finished: &finished)
        }
    }

    private func statted(slot s: Int, result: Int32, results: inout [HashResult?], finished: inout Int) {
        let path = slots[s].path
        if result < 0 {
            return finish(s, .failure(HashError(path: path, operation: .statx, errno: -result)), &results, &finished)
        }
        let stat = FileStat(statx: statxBuffers[s])
        slots[s].before = stat
        switch stat.kind {
        case .directory, .other:
            finish(s, .success(HashedEntry(stat: stat)), &results, &finished)
        case .symlink:
            finish(s, HashIO.symlinkEntry(path, stat: stat, chunkSize: chunkSize), &results, &finished)
        case .regular:
            if stat.size == 0 {
                finish(s, .success(HashedEntry(stat: stat, content: ContentHash.of([], chunkSize: chunkSize))), &results, &finished)
            } else {
                prepOpen(slot: s)
            }
        }
    }

    private func prepOpen(slot s: Int) {
        let flags = ReadOpenFlags.base | (slots[s].noatime ? curing_o_noatime : 0)
        let c = slots[s].cPath!
        submitting { curing_prep_openat(ring, tag(s, .open), AT_FDCWD, c, flags, 0) }
        slots[s].pendingOps += 1
    }

    private func opened(slot s: Int, result: Int32, results: inout [HashResult?], finished: inout Int) {
        let path = slots[s].path
        if result == -EPERM && slots[s].noatime {
            // O_NOATIME needs the file's owner or CAP_FOWNER.
            slots[s].noatime = false
            return prepOpen(slot: s)
        }
        if result < 0 {
            return finish(s, .failure(HashError(path: path, operation: .open, errno: -result)), &results, &finished)
        }
        switch HashIO.clearNonblock(result, path: path) {
        case .failure(let e):
            finish(s, .failure(e), &results, &finished)
        case .success(let fd):
            slots[s].fd = fd
            slots[s].reading = true
            slots[s].nextOffset = 0
            hashers[s].reset()
        }
    }

    private func readDone(slot s: Int, buffer: Int, result: Int32, results: inout [HashResult?], finished: inout Int) {
        guard let i = slots[s].reads.firstIndex(where: { $0.buffer == buffer && $0.result == nil }) else {
            fatalError("io_uring completion for a read that is not in flight (slot \(s), buffer \(buffer))")
        }
        slots[s].reads[i].result = result
        // Hash the completed reads at the front, in file order.
        while let first = slots[s].reads.first, let r = first.result {
            if slots[s].failure == nil {
                if r == -EINTR || r == -EAGAIN {
                    slots[s].reads[0].result = nil
                    prepRead(slot: s, slots[s].reads[0])
                    break
                }
                if r < 0 {
                    slots[s].failure = HashError(path: slots[s].path, operation: .read, errno: -r)
                } else if r == 0 {
                    // End of file before the size statx reported: it shrank.
                    slots[s].failure = HashError(path: slots[s].path, operation: .changedWhileReading, errno: EAGAIN)
                } else {
                    let address = buffers + first.buffer * bufferSize
                    hashers[s].update(UnsafeRawBufferPointer(start: address, count: Int(r)))
                    if Int(r) < first.length {
                        // A short read: read the rest into the same buffer before going on.
                        slots[s].reads[0].offset += UInt64(r)
                        slots[s].reads[0].length -= Int(r)
                        slots[s].reads[0].result = nil
                        prepRead(slot: s, slots[s].reads[0])
                        break
                    }
                }
            }
            freeBuffers.append(first.buffer)
            slots[s].reads.removeFirst()
        }
        guard slots[s].reads.isEmpty else { return }
        if let failure = slots[s].failure {
            return finish(s, .failure(failure), &results, &finished)
        }
        guard slots[s].nextOffset >= slots[s].before!.size else { return }
        let content = hashers[s].finish()
        let result: HashResult
        switch HashIO.statDescriptor(slots[s].fd, path: slots[s].path) {
        case .failure(let e):
            result = .failure(e)
        case .success(let after):
            if slots[s].before!.sameVersion(as: after) && content.size == after.size {
                result = .success(HashedEntry(stat: slots[s].before!, content: content))
            } else {
                result = .failure(HashError(path: slots[s].path, operation: .changedWhileReading, errno: EAGAIN))
            }
        }
        finish(s, result, &results, &finished)
    }

    private func finish(_ s: Int, _ result: HashResult, _ results: inout [HashResult?], _ finished: inout Int) {
        precondition(slots[s].pendingOps == 0, "finishing a file with requests in flight")
        if slots[s].fd >= 0 { close(slots[s].fd) }
        slots[s].cPath?.deallocate()
        results[slots[s].job] = result
        slots[s] = Slot()
        freeSlots.append(s)
        finished += 1
    }

    // MARK: - Ring

    private func tag(_ slot: Int, _ op: Op, buffer: Int = 0) -> UInt64 {
        UInt64(slot) << 32 | op.rawValue << 24 | UInt64(buffer)
    }

    /// Runs a prep, submitting first when the submission queue is full.
    private func submitting(_ prep: () -> Int32) {
        var rc = prep()
        while rc == -EBUSY {
            let s = curing_submit_and_wait(ring, 0)
            if s < 0 && s != -EBUSY && s != -EAGAIN {
                fatalError("io_uring_submit: \(String(cString: strerror(-s)))")
            }
            rc = prep()
        }
        inFlight += 1
    }
}

extension Int {
    fileprivate var nextPowerOf2: Int {
        var p = 1
        while p < self { p <<= 1 }
        return p
    }
}
