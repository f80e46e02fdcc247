import XCTest
@testable import FanSync

#if canImport(Glibc)
import Glibc
#endif

/// Both hashers (io_uring and the plain read loop) against each other, against one-shot
/// XXH3-128 and against `xxhsum -H2`, on awkward names and every kind of path.
final class HashReaderTests: XCTestCase {
    private var root: [UInt8] = []

    override func setUpWithError() throws {
        root = try RulesTestSupport.makeTemporaryDirectory("hash")
    }

    override func tearDown() {
        RulesTestSupport.removeTree(root)
    }

    private func path(_ name: [UInt8]) -> [UInt8] { root + [UInt8(ascii: "/")] + name }
    private func path(_ name: String) -> [UInt8] { path(Array(name.utf8)) }

    /// Deterministic pseudo-random bytes.
    private func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return UInt8(truncatingIfNeeded: x)
        }
    }

    private static let awkwardNames: [[UInt8]] = [
        Array("with space".utf8), Array("new\nline".utf8), Array("quote'\"s".utf8),
        Array("$(touch pwned)".utf8), Array("star*".utf8), Array("-leading-dash".utf8),
        [0x69, 0x6e, 0x76, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e],  // "inv\xff\xfe.bin"
    ]

    func testHashesMatchOneShotXXH3AndChunkBoundaries() throws {
        let chunk = 64 << 10
        let sizes = [0, 1, 100, chunk - 1, chunk, chunk + 1, 3 * chunk, 5 * chunk + 12_345]
        var paths: [[UInt8]] = []
        var contents: [[UInt8]] = []
        for (i, size) in sizes.enumerated() {
            let data = bytes(size, seed: UInt64(i + 1))
            let p = path("f\(i)")
            try RulesTestSupport.writeFile(p, data)
            paths.append(p)
            contents.append(data)
        }
        // Small buffers and few of them: many reads per file, out-of-order completions,
        // short pools; chunk size not a multiple of the buffer size.
        let uring = try UringReader(chunkSize: chunk, bufferSize: 24 << 10, bufferCount: 5, slotCount: 3, maxReadsPerFile: 4)
        let plain = PlainReader(chunkSize: chunk, bufferSize: 7 << 10)
        for hasher in [uring as FileHasher, plain] {
            let results = hasher.hash(paths)
            XCTAssertEqual(results.count, paths.count)
            for (i, result) in results.enumerated() {
                let entry = try result.get()
                let data = contents[i]
                XCTAssertEqual(entry.stat.kind, .regular)
                XCTAssertEqual(entry.stat.size, UInt64(data.count))
                XCTAssertEqual(entry.content?.whole, Hash128.of(data), "\(hasher.backendName) size \(data.count)")
                let expectedChunks = stride(from: 0, to: data.count, by: chunk).map {
                    Hash128.of(Array(data[$0..<min($0 + chunk, data.count)]))
                }
                XCTAssertEqual(entry.content?.chunks, expectedChunks, "\(hasher.backendName) size \(data.count)")
                XCTAssertEqual(entry.content?.size, UInt64(data.count))
            }
        }
        XCTAssertEqual(Hash128.of([]), Hash128.empty)
        XCTAssertEqual(ContentHash.of([]).chunks, [])
    }

    func testBothBackendsAgreeOnEveryKindOfPath() throws {
        var paths: [[UInt8]] = []
        for (i, name) in Self.awkwardNames.enumerated() {
            let p = path(name)
            try RulesTestSupport.writeFile(p, bytes(1000 + i * 7919, seed: UInt64(i)))
            paths.append(p)
        }
        try RulesTestSupport.makeDirectory(path("dir"))
        paths.append(path("dir"))
        try RulesTestSupport.symlink(target: Array("does/not/exist \u{1}".utf8), at: path("dangling"))
        paths.append(path("dangling"))
        try RulesTestSupport.symlink(target: Array("f-target".utf8), at: path("link-to-file"))
        try RulesTestSupport.writeFile(path("f-target"), Array("the target's content".utf8))
        paths.append(path("link-to-file"))
        XCTAssertEqual(withCPath(path("fifo")) { mkfifo($0, 0o644) }, 0)
        paths.append(path("fifo"))            // never opened: a FIFO read would block
        paths.append(path("missing"))
        paths.append(path("f-target/below-a-file"))
        paths.append(path("empty"))
        try RulesTestSupport.writeFile(path("empty"), [])

        let uring = try UringReader(chunkSize: 4096, bufferSize: 4096, bufferCount: 4, slotCount: 2)
        let plain = PlainReader(chunkSize: 4096)
        let a = uring.hash(paths)
        let b = plain.hash(paths)
        XCTAssertEqual(a, b)

        let byName = Dictionary(uniqueKeysWithValues: zip(paths, a))
        let dir = try byName[path("dir")]!.get()
        XCTAssertEqual(dir.stat.kind, .directory)
        XCTAssertNil(dir.content)
        let dangling = try byName[path("dangling")]!.get()
        XCTAssertEqual(dangling.stat.kind, .symlink)
        XCTAssertEqual(dangling.linkTarget, Array("does/not/exist \u{1}".utf8))
        XCTAssertEqual(dangling.content?.whole, Hash128.of(Array("does/not/exist \u{1}".utf8)))
        let link = try byName[path("link-to-file")]!.get()
        XCTAssertEqual(link.stat.kind, .symlink, "a symlink is not followed")
        XCTAssertEqual(link.content?.whole, Hash128.of(Array("f-target".utf8)))
        XCTAssertEqual(try byName[path("fifo")]!.get().stat.kind, .other)
        XCTAssertNil(try byName[path("fifo")]!.get().content)
        XCTAssertEqual(try byName[path("empty")]!.get().content?.whole, Hash128.empty)
        guard case .failure(let missing) = byName[path("missing")]! else { return XCTFail("missing path hashed") }
        XCTAssertEqual(missing.errno, ENOENT)
        XCTAssertEqual(missing.operation, .statx)
        XCTAssertTrue(missing.isGone)
        guard case .failure(let notDir) = byName[path("f-target/below-a-file")]! else { return XCTFail() }
        XCTAssertEqual(notDir.errno, ENOTDIR)
        XCTAssertTrue(missing.description.contains("missing"), missing.description)

        // Metadata as lstat sees it.
        var st = stat()
        _ = withCPath(path("link-to-file")) { lstat($0, &st) }
        XCTAssertEqual(link.stat.ino, UInt64(st.st_ino))
        XCTAssertEqual(link.stat.dev, UInt64(st.st_dev))
        XCTAssertEqual(link.stat.mode, UInt32(st.st_mode))
        XCTAssertEqual(link.stat.mtimeNs, Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec))
    }

    func testManyFilesThroughFewSlotsKeepRequestOrder() throws {
        var paths: [[UInt8]] = []
        var expected: [Hash128] = []
        for i in 0..<300 {
            let data = bytes(i * 37 % 5000, seed: UInt64(i) + 1000)
            let p = path("many-\(i)")
            try RulesTestSupport.writeFile(p, data)
            paths.append(p)
            expected.append(Hash128.of(data))
        }
        // Duplicated paths are hashed twice, each in its own place.
        paths.append(paths[5])
        expected.append(expected[5])
        let uring = try UringReader(chunkSize: 1 << 20, bufferSize: 2048, bufferCount: 3, slotCount: 5, maxReadsPerFile: 2)
        let results = uring.hash(paths)
        XCTAssertEqual(try results.map { try $0.get().content!.whole }, expected)
        XCTAssertEqual(uring.hash([]).count, 0)
    }

    func testHashesEqualXxhsumOutput() throws {
        // xxhsum -H2 prints XXH128 in canonical (big-endian) order: Hash128.hex must match.
        var paths: [[UInt8]] = []
        for (i, size) in [0, 5, 4096, 1_000_003].enumerated() {
            let p = path("x\(i)")
            try RulesTestSupport.writeFile(p, bytes(size, seed: UInt64(77 + i)))
            paths.append(p)
        }
        let p = path(Self.awkwardNames[6])
        try RulesTestSupport.writeFile(p, Array("invalid UTF-8 name".utf8))
        paths.append(p)
        let hashes = try UringReader().hash(paths)
        for (p, result) in zip(paths, hashes) {
            let out = try Subprocess.run([Array("xxhsum".utf8), Array("-H2".utf8), p])
            XCTAssertEqual(out.status, 0, out.errorText)
            var text = out.outputText
            if text.hasPrefix("\\") { text.removeFirst() }   // xxhsum escapes odd names
            XCTAssertEqual(try result.get().content!.whole.hex, String(text.prefix(32)), SyncPath.displayString(p))
            XCTAssertEqual(Hash128(hex: text.prefix(32)), try result.get().content!.whole)
        }
    }

    func testHash128Encodings() {
        let h = Hash128(high: 0x0011_2233_4455_6677, low: 0x8899_aabb_ccdd_eeff)
        XCTAssertEqual(h.hex, "00112233445566778899aabbccddeeff")
        XCTAssertEqual(h.bytes, [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        XCTAssertEqual(Hash128(bytes: h.bytes), h)
        XCTAssertEqual(Hash128(hex: "00112233445566778899AABBCCDDEEFF"), h)
        XCTAssertNil(Hash128(hex: "0011"))
        XCTAssertNil(Hash128(hex: "g0112233445566778899aabbccddeeff"))
        XCTAssertNil(Hash128(bytes: [1, 2, 3]))
        let c = ContentHash.of(Array(repeating: 7, count: 10), chunkSize: 4)
        XCTAssertEqual(c.chunks.count, 3)
        XCTAssertEqual(ContentHash.chunks(fromBytes: c.chunkBytes), c.chunks)
        XCTAssertNil(ContentHash.chunks(fromBytes: [1]))
    }

    func testFileEndingBeforeItsSizeIsReportedAsChanged() throws {
        // sysfs reports 4096 bytes for a file of a few bytes: to the readers this is a file
        // that shrank between statx and read. Both must refuse to give it a hash.
        let sys = Array("/sys/devices/system/cpu/online".utf8)
        guard case .success(let s) = HashIO.statPath(sys), s.kind == .regular, s.size == 4096 else {
            throw XCTSkip("no sysfs file with a fixed 4096-byte size here")
        }
        for hasher in [try UringReader() as FileHasher, PlainReader()] {
            guard case .failure(let e) = hasher.hash([sys])[0] else { return XCTFail("\(hasher.backendName) hashed it") }
            XCTAssertEqual(e.operation, .changedWhileReading, hasher.backendName)
            XCTAssertTrue(e.description.contains("again"), e.description)
        }
    }

    func testRingThatCannotBeCreatedFallsBackToPlainReads() async throws {
        // More entries than io_uring allows (32768): io_uring_queue_init fails with EINVAL.
        XCTAssertThrowsError(try UringReader(slotCount: 70_000)) { error in
            XCTAssertEqual((error as? HashBackendError)?.errno, EINVAL)
            XCTAssertTrue("\(error)".contains("io_uring_queue_init"), "\(error)")
        }
        let failing: @Sendable () throws(HashBackendError) -> UringReader = { () throws(HashBackendError) in
            try UringReader(slotCount: 70_000)
        }
        let service = try HashService(chunkSize: 1 << 20, backend: .automatic, makeUring: failing)
        XCTAssertEqual(service.backendName, "read")
        XCTAssertNotNil(service.fallbackReason)
        let p = path("fallback")
        try RulesTestSupport.writeFile(p, Array("x".utf8))
        let r = await service.hash([p])
        XCTAssertEqual(try r[0].get().content?.whole, Hash128.of(Array("x".utf8)))
        service.shutdown()
        XCTAssertThrowsError(try HashService(chunkSize: 1 << 20, backend: .uring, makeUring: failing))
        // After shutdown, requests are answered with ECANCELED rather than left hanging.
        XCTAssertEqual(service.hashBlocking([p]).map { (try? $0.get()) == nil }, [true])
    }

    func testServiceHashesOnItsOwnThread() async throws {
        let p = path("svc")
        try RulesTestSupport.writeFile(p, Array("service".utf8))
        for backend in [HashService.Backend.automatic, .plain] {
            let service = try HashService(backend: backend)
            let r = await service.hash([p, path("nope")])
            XCTAssertEqual(try r[0].get().content?.whole, Hash128.of(Array("service".utf8)))
            XCTAssertEqual((try? r[1].get()) == nil, true)
            if backend == .plain { XCTAssertEqual(service.backendName, "read") }
            service.shutdown()
        }
    }
}
