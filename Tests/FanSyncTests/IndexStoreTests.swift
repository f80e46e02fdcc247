import CSQLite
import XCTest
@testable import FanSync

#if canImport(Glibc)
import Glibc
#endif

/// The SQLite index: schema and migration, batches, acks, removal by subtree, order of
/// iteration (SyncPath order, through the key encoding), recovery from a damaged file.
final class IndexStoreTests: XCTestCase {
    private var dir: [UInt8] = []
    private var file: String { String(decoding: dir, as: UTF8.self) + "/index.sqlite" }

    override func setUpWithError() throws {
        dir = try RulesTestSupport.makeTemporaryDirectory("index")
    }

    override func tearDown() {
        RulesTestSupport.removeTree(dir)
    }

    private func entry(_ path: [UInt8], size: UInt64 = 10, hash: Hash128? = nil, kind: FileKind = .regular, acked: Bool = false) -> IndexEntry {
        IndexEntry(path: SyncPath(bytes: path), kind: kind, size: size, mtimeNs: 1_700_000_000_123_456_789,
                   ino: UInt64.max - 3, dev: 0x1_0000_0803, mode: 0o100644,
                   linkTarget: kind == .symlink ? Array("t\n\u{ff}".utf8) : nil,
                   wholeHash: hash, chunkHashes: hash.map { $0.bytes + $0.bytes } ?? [], acked: acked)
    }
    private func entry(_ path: String, size: UInt64 = 10, hash: Hash128? = nil, kind: FileKind = .regular, acked: Bool = false) -> IndexEntry {
        entry(Array(path.utf8), size: size, hash: hash, kind: kind, acked: acked)
    }

    /// Anything strictly inside a path (the key range of `path/`), anything at all for the root.
    func testHasEntriesInside() throws {
        let index = try Index(file: file)
        XCTAssertFalse(try index.hasEntries(inside: .root))
        try index.upsert([entry("a/b"), entry("ab"), entry("a-c"), entry("d")])
        XCTAssertTrue(try index.hasEntries(inside: .root))
        XCTAssertTrue(try index.hasEntries(inside: SyncPath("a")))
        for p in ["a/b", "ab", "a-c", "d", "c", "a/b/c"] {
            XCTAssertFalse(try index.hasEntries(inside: SyncPath(p)), p)
        }
    }

    /// A look-up inside a directory reads that directory's range of keys, not the rest of
    /// the table: a burst's new folders are each asked about while the index holds the
    /// whole tree.
    func testSubtreeQueriesReadOnlyTheirRange() throws {
        let index = try Index(file: file)
        try index.upsert((0..<20_000).map { entry("m/dir \($0 / 100)/f \($0)") })
        var before = index.statementSteps
        XCTAssertFalse(try index.hasEntries(inside: SyncPath("c")))
        XCTAssertTrue(try index.hasEntries(inside: SyncPath("m/dir 7")))
        XCTAssertLessThan(index.statementSteps - before, 200, "hasEntries read beyond its range")
        before = index.statementSteps
        XCTAssertEqual(Array(index.entries(inside: SyncPath("c"))).count, 0)
        XCTAssertEqual(Array(index.entries(inside: SyncPath("m/dir 7"))).count, 100)
        XCTAssertLessThan(index.statementSteps - before, 3_000, "a subtree's pages read beyond its range")
    }

    func testFreshIndexHasTheCurrentSchemaAndSettings() throws {
        let index = try Index(file: file)
        XCTAssertNil(index.recovery)
        XCTAssertEqual(try index.schemaVersionOnDisk(), Index.schemaVersion)
        XCTAssertEqual(try index.count(), 0)
        // journal mode and user_version are visible to any SQLite client.
        var db: OpaquePointer?
        XCTAssertEqual(sqlite3_open(file, &db), SQLITE_OK)
        defer { sqlite3_close(db) }
        XCTAssertEqual(scalar(db, "PRAGMA journal_mode"), "wal")
        XCTAssertEqual(scalar(db, "PRAGMA user_version"), "\(Index.schemaVersion)")
        XCTAssertEqual(scalar(db, "SELECT count(*) FROM sqlite_master WHERE name = 'entries_by_hash'"), "1")
        // The background hashing's search goes through its partial index, not every row.
        XCTAssertTrue(scalar(db, "EXPLAIN QUERY PLAN SELECT path FROM entries WHERE path > x'' AND whole_hash IS NULL AND type IN (1, 3) AND acked = 1 ORDER BY path LIMIT 256", column: 3)?.contains("entries_unhashed") == true)
    }

    /// An index made by the first schema (version 1, before `entries_unhashed`) is migrated
    /// in place: rows kept, the new index made.
    func testMigratesVersionOneFile() throws {
        var db: OpaquePointer?
        XCTAssertEqual(sqlite3_open(file, &db), SQLITE_OK)
        XCTAssertEqual(sqlite3_exec(db, Index.migrations[0] + "INSERT INTO entries (path, type, size, mtime_ns, ino, dev, mode, acked) VALUES (x'61', 1, 3, 0, 1, 1, 420, 1); PRAGMA user_version=1;", nil, nil, nil), SQLITE_OK)
        sqlite3_close(db)
        let index = try Index(file: file)
        XCTAssertEqual(try index.schemaVersionOnDisk(), Index.schemaVersion)
        XCTAssertEqual(try index.unhashed().map(\.path), [SyncPath("a")])
        XCTAssertEqual(sqlite3_open(file, &db), SQLITE_OK)
        defer { sqlite3_close(db) }
        XCTAssertEqual(scalar(db, "SELECT count(*) FROM sqlite_master WHERE name = 'entries_unhashed'"), "1")
    }

    func testMigratesVersionZeroFileAndRefusesNewerSchema() throws {
        // A version-0 file: an SQLite database without our tables (user_version 0).
        var db: OpaquePointer?
        XCTAssertEqual(sqlite3_open(file, &db), SQLITE_OK)
        XCTAssertEqual(sqlite3_exec(db, "CREATE TABLE unrelated (x)", nil, nil, nil), SQLITE_OK)
        sqlite3_close(db)
        do {
            let index = try Index(file: file)
            XCTAssertEqual(try index.schemaVersionOnDisk(), Index.schemaVersion)
            try index.upsert([entry("a")])
            XCTAssertEqual(try index.count(), 1)
        }
        // Reopening does not migrate again and keeps the rows.
        XCTAssertEqual(try Index(file: file).count(), 1)
        // A newer schema is left alone.
        XCTAssertEqual(sqlite3_open(file, &db), SQLITE_OK)
        XCTAssertEqual(sqlite3_exec(db, "PRAGMA user_version=7", nil, nil, nil), SQLITE_OK)
        sqlite3_close(db)
        XCTAssertThrowsError(try Index(file: file)) { error in
            guard case Index.OpenError.newerSchema(_, 7, Index.schemaVersion) = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("version 7"))
        }
    }

    func testUpsertLookupRoundTripsEveryFieldAndAwkwardNames() throws {
        let index = try Index(file: file)
        let h = Hash128(high: 0xdead_beef, low: 42)
        let names: [[UInt8]] = [
            Array("with space".utf8), Array("new\nline".utf8), Array("quote'\"s".utf8), Array("$(rm -rf x)".utf8),
            Array("star*".utf8), Array("-dash".utf8), [0x62, 0xff, 0x01, 0x2e], Array("d/sub/f".utf8),
        ]
        let entries = names.map { entry($0, hash: h) } + [entry("link", kind: .symlink), entry("dir", kind: .directory)]
        try index.upsert(entries)
        for e in entries {
            XCTAssertEqual(try index.lookup(e.path), e)
        }
        XCTAssertNil(try index.lookup(SyncPath("absent")))
        XCTAssertEqual(try index.count(), entries.count)
        XCTAssertEqual(try index.count(kind: .symlink), 1)
        // Replacing keeps one row.
        var changed = entries[0]
        changed.size = 99
        changed.wholeHash = nil
        changed.chunkHashes = []
        try index.upsert([changed])
        XCTAssertEqual(try index.lookup(changed.path), changed)
        XCTAssertEqual(try index.count(), entries.count)
    }

    func testIterationFollowsSyncPathOrderAcrossPages() throws {
        let index = try Index(file: file)
        var rng = SystemRandomNumberGenerator()
        var paths = Set<SyncPath>()
        let alphabet: [UInt8] = [0x01, 0x2e, 0x2f, 0x2d, 0x30, 0x41, 0x61, 0x7f, 0xff, 0x20, 0x0a]
        while paths.count < 700 {
            var bytes = (0..<Int.random(in: 1...6, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            bytes = SyncPath(normalizing: bytes).bytes
            if !bytes.isEmpty { paths.insert(SyncPath(bytes: bytes)) }
        }
        try index.upsert(paths.map { IndexEntry(path: $0, kind: .regular, size: 1, mtimeNs: 0, ino: 1, dev: 1, mode: 0o644) })
        let expected = paths.sorted()
        let walk = index.entries(pageSize: 64)
        XCTAssertEqual(walk.map(\.path), expected)
        XCTAssertNil(walk.error)
        // Resuming after a path.
        XCTAssertEqual(index.entries(after: expected[99], pageSize: 7).map(\.path), Array(expected[100...]))
        // The encoding itself preserves order and round-trips.
        for (a, b) in zip(expected, expected.dropFirst()) {
            XCTAssertTrue(IndexKey.encode(a).lexicographicallyPrecedes(IndexKey.encode(b)), "\(a) < \(b)")
        }
        for p in expected { XCTAssertEqual(IndexKey.decode(IndexKey.encode(p)), p) }
    }

    func testAcksAndPending() throws {
        let index = try Index(file: file)
        let h1 = Hash128(high: 1, low: 1), h2 = Hash128(high: 2, low: 2)
        try index.upsert([entry("a", hash: h1), entry("b", hash: h1), entry("c", hash: h2, acked: true)])
        XCTAssertEqual(try index.pending().map(\.path), [SyncPath("a"), SyncPath("b")])
        XCTAssertEqual(try index.markAcked([SyncPath("a"), SyncPath("missing")]), 1)
        XCTAssertEqual(try index.lookup(SyncPath("a"))?.acked, true)
        // A version-checked ack of an older version leaves the newer one pending.
        let old = entry("b", hash: h1)
        try index.upsert([entry("b", size: 11, hash: h2)])
        XCTAssertEqual(try index.markAcked(versions: [old]), 0)
        XCTAssertEqual(try index.lookup(SyncPath("b"))?.acked, false)
        XCTAssertEqual(try index.markAcked(versions: [entry("b", size: 11, hash: h2)]), 1)
        XCTAssertEqual(try index.pending(), [])
    }

    func testContentLookupAndRemovalBySubtree() throws {
        let index = try Index(file: file)
        let h = Hash128(high: 7, low: 7)
        try index.upsert([
            entry("d", kind: .directory), entry("d/x", hash: h), entry("d/sub/y", hash: h),
            entry("d-sibling", hash: h), entry("d.txt"), entry("d0"), entry("e", hash: Hash128(high: 8, low: 8)),
            entry([0x64, 0x01]), // "d\x01": sorts between "d/…" and "d-…" in byte order
        ])
        XCTAssertEqual(try index.paths(withHash: h), [SyncPath("d/x"), SyncPath("d/sub/y"), SyncPath("d-sibling")].sorted())
        XCTAssertEqual(try index.paths(withHash: h, limit: 1).count, 1)
        XCTAssertEqual(try index.paths(withHash: Hash128(high: 9, low: 9)), [])
        XCTAssertEqual(try index.removeSubtree(SyncPath("d")), 3)
        XCTAssertEqual(index.entries().map(\.path), [SyncPath(bytes: [0x64, 0x01]), SyncPath("d-sibling"), SyncPath("d.txt"), SyncPath("d0"), SyncPath("e")])
        XCTAssertEqual(try index.remove([SyncPath("d0"), SyncPath("nothing")]), 1)
        XCTAssertEqual(try index.removeSubtree(.root), 4)
        XCTAssertEqual(try index.count(), 0)
    }

    func testRenameSubtreeRewritesKeysAndReplacesTheDestination() throws {
        let index = try Index(file: file)
        let bad: [UInt8] = [0x64, 0xff, 0x0a, 0x2d]   // "d", invalid UTF-8, newline, "-"
        try index.upsert([entry("a", kind: .directory, acked: true), entry("a/x", acked: true),
                          entry(Array("a/".utf8) + bad + Array("/y".utf8), acked: true), entry("a0", acked: true),
                          entry("b", kind: .directory, acked: true), entry("b/old", acked: true), entry("c", acked: true)])
        try index.renameSubtree(from: SyncPath("a"), to: SyncPath(bytes: Array("b".utf8)))
        let paths = index.entries().map(\.path)
        XCTAssertEqual(paths, [SyncPath("a0"), SyncPath("b"), SyncPath(bytes: Array("b/".utf8) + bad + Array("/y".utf8)),
                               SyncPath("b/x"), SyncPath("c")])
        XCTAssertEqual(try index.lookup(SyncPath("b/x"))?.acked, true)
        // A file renamed into a new directory name.
        try index.renameSubtree(from: SyncPath("c"), to: SyncPath("z/c2"))
        XCTAssertNil(try index.lookup(SyncPath("c")))
        XCTAssertEqual(try index.lookup(SyncPath("z/c2"))?.size, 10)
    }

    func testSubtreeRangesCountsHashFillAndUnack() throws {
        let index = try Index(file: file)
        let h = Hash128.of(Array("x".utf8))
        try index.upsert([entry("d", kind: .directory, acked: true), entry("d/1", acked: true), entry("d/2", acked: true),
                          entry("d0", acked: true), entry("e", hash: h, acked: true), entry("f", acked: false)])
        XCTAssertEqual(index.entries(inside: SyncPath("d")).map(\.path), [SyncPath("d/1"), SyncPath("d/2")])
        XCTAssertEqual(index.entries(inside: .root).map(\.path).count, 6)
        XCTAssertEqual(index.entries(inside: SyncPath("e")).map(\.path), [])
        XCTAssertEqual(try index.countSubtree(SyncPath("d")), 3)
        XCTAssertEqual(try index.countSubtree(.root), 6)
        // Only acknowledged files without a hash are waiting for one.
        XCTAssertEqual(try index.unhashed().map(\.path), [SyncPath("d/1"), SyncPath("d/2"), SyncPath("d0")])
        var v = try XCTUnwrap(index.lookup(SyncPath("d/1")))
        v.wholeHash = h
        var stale = try XCTUnwrap(index.lookup(SyncPath("d/2")))
        stale.mtimeNs += 1
        stale.wholeHash = h
        XCTAssertEqual(try index.setHashes([v, stale]), 1)
        XCTAssertEqual(try index.lookup(SyncPath("d/1"))?.wholeHash, h)
        XCTAssertNil(try index.lookup(SyncPath("d/2"))?.wholeHash)
        XCTAssertEqual(try index.markUnacked([SyncPath("d/1"), SyncPath("f")]), 1)
        XCTAssertEqual(try index.lookup(SyncPath("d/1"))?.acked, false)
    }

    func testMetadataAndSourceDevice() throws {
        do {
            let index = try Index(file: file)
            XCTAssertNil(try index.recordedSourceDevice())
            try index.setRecordedSourceDevice(0xfedc_ba98_7654_3210)
            try index.setMetadata("note", [1, 2, 3])
        }
        let index = try Index(file: file)
        XCTAssertEqual(try index.recordedSourceDevice(), 0xfedc_ba98_7654_3210)
        XCTAssertEqual(try index.metadata("note"), [1, 2, 3])
        try index.setMetadata("note", nil)
        XCTAssertNil(try index.metadata("note"))
    }

    func testDamagedFileIsMovedAsideAndIndexStartsEmpty() throws {
        do {
            let index = try Index(file: file)
            try index.upsert((0..<2000).map { entry("file-\($0)", hash: Hash128(high: UInt64($0), low: 0)) })
            try index.checkpoint()
        }
        // Overwrite pages in the middle of the file with garbage.
        let fd = open(file, O_WRONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let garbage = [UInt8](repeating: 0xA5, count: 8192)
        XCTAssertEqual(pwrite(fd, garbage, garbage.count, 4096 * 3), garbage.count)
        close(fd)
        let index = try Index(file: file)
        let recovery = try XCTUnwrap(index.recovery)
        XCTAssertTrue(recovery.movedTo.hasPrefix(file + ".corrupt-"))
        XCTAssertTrue(recovery.description.contains("full"), recovery.description)
        XCTAssertEqual(access(recovery.movedTo, F_OK), 0, "the damaged file is kept for inspection")
        XCTAssertEqual(try index.count(), 0)
        try index.upsert([entry("new")])
        XCTAssertEqual(try Index(file: file).count(), 1)
    }

    func testNotADatabaseIsMovedAside() throws {
        try RulesTestSupport.writeFile(Array(file.utf8), Array(String(repeating: "not sqlite at all ", count: 300).utf8))
        let index = try Index(file: file)
        XCTAssertNotNil(index.recovery)
        XCTAssertEqual(try index.count(), 0)
    }

    func testUnopenableLocationNamesTheFile() {
        XCTAssertThrowsError(try Index(file: "/nonexistent-dir-\(getpid())/index.sqlite")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent-dir-"), "\(error)")
        }
    }

    private func scalar(_ db: OpaquePointer?, _ sql: String, column: Int32 = 0) -> String? {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &stmt, nil) == SQLITE_OK else { return nil }
        defer { sqlite3_finalize(stmt) }
        guard sqlite3_step(stmt) == SQLITE_ROW, let t = sqlite3_column_text(stmt, column) else { return nil }
        return String(cString: t)
    }
}
