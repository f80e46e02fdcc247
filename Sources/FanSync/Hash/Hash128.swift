import CURing

/// An XXH3-128 digest in canonical byte order (big-endian): `hex` is exactly what
/// `xxhsum -H2` prints for the same bytes, and `bytes` is what the index stores.
public struct Hash128: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// From the 16 canonical bytes; nil when `bytes` is not 16 bytes long.
    public init?<C: Collection>(bytes: C) where C.Element == UInt8 {
        guard bytes.count == 16 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
        }
        self.init(high: h, low: l)
    }

    /// From 32 hex digits (as `xxhsum -H2` prints them).
    public init?(hex: some StringProtocol) {
        let digits = Array(hex.utf8)
        guard digits.count == 32 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var i = 0
        while i < 32 {
            guard let a = Self.nibble(digits[i]), let b = Self.nibble(digits[i + 1]) else { return nil }
            out.append(a << 4 | b)
            i += 2
        }
        self.init(bytes: out)
    }

    /// The canonical 16 bytes (big-endian high, then low).
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            out[i] = UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64(i)))
            out[8 + i] = UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64(i)))
        }
        return out
    }

    public var hex: String {
        String(high, radix: 16).leftPadded(to: 16) + String(low, radix: 16).leftPadded(to: 16)
    }

    public var description: String { hex }

    public static func < (lhs: Hash128, rhs: Hash128) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }

    /// XXH3-128 of `data` in one call.
    public static func of(_ data: [UInt8]) -> Hash128 {
        var out = [UInt8](repeating: 0, count: 16)
        data.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { curing_xxh3_oneshot(raw.baseAddress, raw.count, $0.baseAddress) }
        }
        return Hash128(bytes: out)!
    }

    /// XXH3-128 of no bytes (an empty file).
    public static let empty = Hash128.of([UInt8]())

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// Streaming XXH3-128 of a whole file and of each fixed-size chunk of it, fed in order.
///
/// Not thread-safe: one instance belongs to the thread that hashes (the reader's thread).
public final class ContentHasher {
    public let chunkSize: Int
    private let whole: OpaquePointer
    private let chunk: OpaquePointer
    private var inChunk = 0
    private var chunks: [Hash128] = []
    public private(set) var byteCount: UInt64 = 0

    public init(chunkSize: Int = ContentHash.defaultChunkSize) {
        precondition(chunkSize > 0, "chunk size must be positive")
        self.chunkSize = chunkSize
        guard let w = curing_xxh3_create(), let c = curing_xxh3_create() else {
            fatalError("XXH3_createState: out of memory")
        }
        whole = w
        chunk = c
        curing_xxh3_reset(whole)
        curing_xxh3_reset(chunk)
    }

    deinit {
        curing_xxh3_free(whole)
        curing_xxh3_free(chunk)
    }

    /// Starts over for the next file.
    public func reset() {
        curing_xxh3_reset(whole)
        curing_xxh3_reset(chunk)
        inChunk = 0
        chunks.removeAll(keepingCapacity: true)
        byteCount = 0
    }

    public func update(_ buffer: UnsafeRawBufferPointer) {
        guard var base = buffer.baseAddress, buffer.count > 0 else { return }
        curing_xxh3_update(whole, base, buffer.count)
        byteCount += UInt64(buffer.count)
        var left = buffer.count
        while left > 0 {
            let n = min(left, chunkSize - inChunk)
            curing_xxh3_update(chunk, base, n)
            inChunk += n
            left -= n
            base += n
            if inChunk == chunkSize { closeChunk() }
        }
    }

    /// The digests of everything fed since the last reset. The file is one chunk per
    /// `chunkSize` bytes, the last one possibly shorter; an empty file has no chunks.
    public func finish() -> ContentHash {
        if inChunk > 0 { closeChunk() }
        return ContentHash(whole: digest(whole), chunks: chunks, chunkSize: chunkSize, size: byteCount)
    }

    private func closeChunk() {
        chunks.append(digest(chunk))
        curing_xxh3_reset(chunk)
        inChunk = 0
    }

    private func digest(_ state: OpaquePointer) -> Hash128 {
        var out = [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBufferPointer { curing_xxh3_digest(state, $0.baseAddress) }
        return Hash128(bytes: out)!
    }
}

/// The content of one file (or of a symlink's target bytes): whole-file XXH3-128 and the
/// XXH3-128 of each `chunkSize` piece.
public struct ContentHash: Hashable, Sendable {
    /// 4 MiB. Measured with `fansync-hashbench chunks` (Perf/hash/README.md): streaming
    /// throughput is flat from 256 KiB chunks upwards (the per-chunk digest/reset costs
    /// well under 1 µs, so the chunk size does not change the hashing speed), so the size
    /// is set by what the chunk hashes are for: 16 bytes per chunk in the index is 4 MB
    /// per TB at 4 MiB (16 MB at 1 MiB, 2 MB at 8 MiB), while a changed region of a large
    /// checkpoint or image is located to within 4 MiB, small next to the files this
    /// matters for (hundreds of MB to GB). 4 MiB is also a whole number of read buffers.
    public static let defaultChunkSize = 4 << 20

    public let whole: Hash128
    public let chunks: [Hash128]
    public let chunkSize: Int
    public let size: UInt64

    public init(whole: Hash128, chunks: [Hash128], chunkSize: Int, size: UInt64) {
        self.whole = whole
        self.chunks = chunks
        self.chunkSize = chunkSize
        self.size = size
    }

    /// The chunk hashes as stored in the index: 16 canonical bytes each, concatenated.
    public var chunkBytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(chunks.count * 16)
        for c in chunks { out.append(contentsOf: c.bytes) }
        return out
    }

    /// Parses concatenated 16-byte chunk hashes; nil when the length is not a multiple of 16.
    public static func chunks(fromBytes bytes: [UInt8]) -> [Hash128]? {
        guard bytes.count % 16 == 0 else { return nil }
        return stride(from: 0, to: bytes.count, by: 16).map { Hash128(bytes: bytes[$0..<($0 + 16)])! }
    }

    /// Hashes bytes held in memory (a symlink's target, tests).
    public static func of(_ data: [UInt8], chunkSize: Int = defaultChunkSize) -> ContentHash {
        let h = ContentHasher(chunkSize: chunkSize)
        data.withUnsafeBytes { h.update($0) }
        return h.finish()
    }
}
