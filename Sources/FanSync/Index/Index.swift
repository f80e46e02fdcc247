import CSQLite
import Glibc

/// The record of what the backup holds, in SQLite: one row per path, keyed by the path's
/// bytes (in `IndexKey` encoding, so rows stream in `SyncPath` order).
///
/// WAL journal, `synchronous=NORMAL` (a power cut may lose the last transactions, never
/// corrupt the file: the lost rows are re-checked against the tree on the next start),
/// a page cache bounded to `cacheKiB`, the schema versioned in `user_version`.
///
/// One owner at a time: not Sendable. Writes go in batches, one transaction each.
public final class Index {
    /// The schema this build writes.
    public static let schemaVersion: Int32 = 2

    /// Why an index could not be opened.
    public enum OpenError: Error, Sendable, CustomStringConvertible {
        case sqlite(SQLiteError)
        /// The file was written by a newer fansync: left untouched.
        case newerSchema(file: String, version: Int32, supported: Int32)
        /// A damaged file could not be moved aside.
        case cannotMoveAside(file: String, to: String, errno: Int32)

        public var description: String {
            switch self {
            case .sqlite(let e): return "index \(e.description)"
            case .newerSchema(let file, let version, let supported):
                return "index \(file) has schema version \(version); this fansync knows up to \(supported): refusing to touch it"
            case .cannotMoveAside(let file, let to, let errno):
                return "index \(file) is damaged and could not be moved to \(to): \(String(cString: strerror(errno)))"
            }
        }
    }

    /// How much checking `open` does.
    public enum IntegrityCheck: Sendable {
        /// `PRAGMA integrity_check`: everything, including index consistency.
        case full
        /// `PRAGMA quick_check`: page structure and constraints, faster on large files.
        case quick
        case none
    }

    /// A damaged index that `open` moved aside, starting empty.
    public struct Recovery: Sendable, CustomStringConvertible {
        public let file: String
        public let movedTo: String
        public let reason: String
        public var description: String {
            "index \(file) failed its integrity check (\(reason)); moved to \(movedTo) and starting empty: the next sync is a full one"
        }
    }

    public let file: String
    /// Set when the file on disk was damaged and replaced by an empty index.
    public let recovery: Recovery?

    private let db: SQLiteConnection
    private var statements: [String: SQLiteStatement] = [:]

    /// Opens (creating or migrating) the index at `file`. A file that is not a database or
    /// fails the integrity check is renamed to `<file>.corrupt-<unix time>` (with its
    /// `-wal`), and an empty index takes its place: see `recovery`. `exclusive`: this
    /// connection alone uses the file while it is open (SQLite's exclusive locking mode: no
    /// file lock taken and released per transaction, no shared-memory WAL index); the daemon
    /// holds its state directory's lock anyway.
    public init(file: String, cacheKiB: Int = 8000, check: IntegrityCheck = .full, exclusive: Bool = false) throws(OpenError) {
        self.file = file
        let reason: String
        do throws(OpenFailure) {
            db = try Index.openChecked(file: file, cacheKiB: cacheKiB, check: check, exclusive: exclusive)
            recovery = nil
            return
        } catch {
            switch error {
            case .other(let e): throw e
            case .damaged(let r): reason = r
            }
        }
        let aside = "\(file).corrupt-\(Int(time(nil)))"
        if rename(file, aside) != 0 {
            throw .cannotMoveAside(file: file, to: aside, errno: errno)
        }
        _ = rename(file + "-wal", aside + "-wal")
        _ = unlink(file + "-shm")
        recovery = Recovery(file: file, movedTo: aside, reason: reason)
        do throws(OpenFailure) {
            db = try Index.openChecked(file: file, cacheKiB: cacheKiB, check: .none, exclusive: exclusive)
        } catch {
            switch error {
            case .other(let e): throw e
            case .damaged(let r):
                throw .sqlite(SQLiteError(code: SQLITE_CORRUPT, message: r, file: file, operation: "open"))
            }
        }
    }

    private enum OpenFailure: Error {
        case damaged(String)
        case other(OpenError)
    }

    private static func openChecked(file: String, cacheKiB: Int, check: IntegrityCheck, exclusive: Bool) throws(OpenFailure) -> SQLiteConnection {
        let db: SQLiteConnection
        do {
            db = try SQLiteConnection(path: file)
        } catch {
            throw error.isCorruption ? .damaged(error.message) : .other(.sqlite(error))
        }
        do {
            // Before WAL mode is entered, so that no shared-memory index is made.
            if exclusive { try db.exec("PRAGMA locking_mode=EXCLUSIVE") }
            // The first read of a damaged file fails here with SQLITE_NOTADB / CORRUPT.
            try db.exec("PRAGMA journal_mode=WAL")
            try db.exec("PRAGMA synchronous=NORMAL")
            try db.exec("PRAGMA cache_size=-\(max(cacheKiB, 256))")
            try db.exec("PRAGMA temp_store=FILE")
            try db.exec("PRAGMA foreign_keys=OFF")
            if check != .none {
                let stmt = try db.prepare(check == .full ? "PRAGMA integrity_check(20)" : "PRAGMA quick_check(20)")
                var problems: [String] = []
                while try stmt.step() {
                    let line = stmt.text(0) ?? ""
                    if line != "ok" { problems.append(line) }
                }
                if !problems.isEmpty { throw OpenFailure.damaged(problems.prefix(3).joined(separator: "; ")) }
            }
            try migrate(db)
        } catch let e as SQLiteError {
            throw e.isCorruption ? .damaged(e.message) : .other(.sqlite(e))
        } catch let e as OpenFailure {
            throw e
        } catch {
            throw .other(.sqlite(SQLiteError(code: SQLITE_ERROR, message: "\(error)", file: file, operation: "open")))
        }
        return db
    }

    /// Each step takes the schema from version `i` to `i + 1`, in one transaction.
    static let migrations: [String] = [
        // 0 -> 1
        """
        CREATE TABLE entries (
            path BLOB NOT NULL PRIMARY KEY,   -- IndexKey encoding of the path bytes
            type INTEGER NOT NULL,            -- FileKind raw value
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ino INTEGER NOT NULL,             -- UInt64 bit pattern
            dev INTEGER NOT NULL,             -- UInt64 bit pattern
            mode INTEGER NOT NULL,
            link_target BLOB,
            whole_hash BLOB,                  -- 16 bytes, canonical XXH3-128
            chunk_hashes BLOB,                -- 16 bytes per chunk
            acked INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        CREATE INDEX entries_by_hash ON entries(whole_hash) WHERE whole_hash IS NOT NULL;
        CREATE INDEX entries_pending ON entries(path) WHERE acked = 0;
        CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value BLOB) WITHOUT ROWID;
        """,
        // 1 -> 2: what the background hashing looks for (acknowledged files and symlinks,
        // FileKind 1 and 3, without a hash), found without reading every row: a start from
        // the index asks for it, and with everything hashed the search read the whole table
        // (110,000 rows) holding the index that batches wait for.
        """
        CREATE INDEX entries_unhashed ON entries(path) WHERE whole_hash IS NULL AND type IN (1, 3) AND acked = 1;
        """,
    ]

    private static func migrate(_ db: SQLiteConnection) throws {
        let version = try userVersion(db)
        if version > schemaVersion {
            throw OpenFailure.other(.newerSchema(file: db.file, version: version, supported: schemaVersion))
        }
        var v = version
        while v < schemaVersion {
            let step = migrations[Int(v)]
            try db.transaction { () throws(SQLiteError) in
                try db.exec(step)
                try db.exec("PRAGMA user_version=\(v + 1)")
            }
            v += 1
        }
    }

    static func userVersion(_ db: SQLiteConnection) throws(SQLiteError) -> Int32 {
        let stmt = try db.prepare("PRAGMA user_version")
        _ = try stmt.step()
        return Int32(truncatingIfNeeded: stmt.int64(0))
    }

    /// The schema version of the open file.
    public func schemaVersionOnDisk() throws(SQLiteError) -> Int32 { try Index.userVersion(db) }

    // MARK: - Writes

    /// Inserts or replaces `entries`, in one transaction.
    public func upsert(_ entries: [IndexEntry]) throws(SQLiteError) {
        guard !entries.isEmpty else { return }
        let stmt = try statement("""
            INSERT OR REPLACE INTO entries
            (path, type, size, mtime_ns, ino, dev, mode, link_target, whole_hash, chunk_hashes, acked)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
            """)
        try db.transaction { () throws(SQLiteError) in
            for e in entries {
                stmt.bind(1, IndexKey.encode(e.path))
                stmt.bind(2, Int64(e.kind.rawValue))
                stmt.bind(3, Int64(bitPattern: e.size))
                stmt.bind(4, e.mtimeNs)
                stmt.bind(5, Int64(bitPattern: e.ino))
                stmt.bind(6, Int64(bitPattern: e.dev))
                stmt.bind(7, Int64(e.mode))
                stmt.bind(8, e.linkTarget)
                stmt.bind(9, e.wholeHash?.bytes)
                stmt.bind(10, e.chunkHashes.isEmpty ? nil : e.chunkHashes)
                stmt.bind(11, e.acked ? 1 : 0)
                try stmt.run()
            }
        }
    }

    /// Marks `paths` as held by the backup, whatever version the index has for them.
    /// Returns how many rows changed.
    @discardableResult
    public func markAcked(_ paths: [SyncPath]) throws(SQLiteError) -> Int {
        try runPerPath("UPDATE entries SET acked = 1 WHERE path = ?1 AND acked = 0", paths)
    }

    /// Runs `sql` (one `?1` for the path key) for each path in one transaction; returns the
    /// number of rows changed.
    private func runPerPath(_ sql: String, _ paths: [SyncPath]) throws(SQLiteError) -> Int {
        let stmt = try statement(sql)
        return try db.transaction { () throws(SQLiteError) -> Int in
            var n = 0
            for p in paths {
                stmt.bind(1, IndexKey.encode(p))
                try stmt.run()
                n += db.changes
            }
            return n
        }
    }

    /// Marks entries as held by the backup only where the index still records the same
    /// version (size, mtime, inode, content hash): a newer version recorded while the
    /// older one was being sent stays pending. Returns how many rows changed.
    @discardableResult
    public func markAcked(versions: [IndexEntry]) throws(SQLiteError) -> Int {
        let stmt = try statement("""
            UPDATE entries SET acked = 1
            WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 AND ino = ?4 AND whole_hash IS ?5 AND acked = 0
            """)
        return try runPerVersion(stmt, versions) { _, _ in }
    }

    /// Runs `stmt` once per entry in one transaction, its version bound as ?1 path, ?2 size,
    /// ?3 mtime, ?4 inode, ?5 whole hash, then whatever `more` binds; returns the rows changed.
    private func runPerVersion(_ stmt: SQLiteStatement, _ entries: [IndexEntry],
                               more: (SQLiteStatement, IndexEntry) -> Void) throws(SQLiteError) -> Int {
        try db.transaction { () throws(SQLiteError) -> Int in
            var n = 0
            for e in entries {
                stmt.bind(1, IndexKey.encode(e.path))
                stmt.bind(2, Int64(bitPattern: e.size))
                stmt.bind(3, e.mtimeNs)
                stmt.bind(4, Int64(bitPattern: e.ino))
                stmt.bind(5, e.wholeHash?.bytes)
                more(stmt, e)
                try stmt.run()
                n += db.changes
            }
            return n
        }
    }

    /// Removes exactly these paths (not their subtrees). Returns how many rows went.
    @discardableResult
    public func remove(_ paths: [SyncPath]) throws(SQLiteError) -> Int {
        try runPerPath("DELETE FROM entries WHERE path = ?1", paths)
    }

    /// Removes `path` and everything inside it (one key range). The root removes all.
    @discardableResult
    public func removeSubtree(_ path: SyncPath) throws(SQLiteError) -> Int {
        if path.isRoot {
            return try db.transaction { () throws(SQLiteError) -> Int in
                try db.exec("DELETE FROM entries")
                return db.changes
            }
        }
        let (lower, upper) = IndexKey.descendants(of: path)
        let stmt = try statement("DELETE FROM entries WHERE path = ?1 OR (path >= ?2 AND path < ?3)")
        return try db.transaction { () throws(SQLiteError) -> Int in
            stmt.bind(1, IndexKey.encode(path))
            stmt.bind(2, lower)
            stmt.bind(3, upper)
            try stmt.run()
            return db.changes
        }
    }

    /// Moves `from` and everything inside it to `to` (a rename on the backup), replacing
    /// whatever the index held at `to`. Keys are rewritten in SQL: the key encoding maps
    /// bytes one to one, so a path prefix is a key prefix.
    public func renameSubtree(from: SyncPath, to: SyncPath) throws(SQLiteError) {
        guard from != to, !from.isRoot, !to.isInside(from) else { return }
        let old = IndexKey.encode(from), new = IndexKey.encode(to)
        let (lower, upper) = IndexKey.descendants(of: from)
        let (toLower, toUpper) = IndexKey.descendants(of: to)
        let clear = try statement("DELETE FROM entries WHERE path = ?1 OR (path >= ?2 AND path < ?3)")
        let move = try statement("""
            UPDATE entries SET path = CAST(?1 || substr(path, ?2) AS BLOB)
            WHERE path = ?3 OR (path >= ?4 AND path < ?5)
            """)
        try db.transaction { () throws(SQLiteError) in
            clear.bind(1, new)
            clear.bind(2, toLower)
            clear.bind(3, toUpper)
            try clear.run()
            move.bind(1, new)
            move.bind(2, Int64(old.count + 1))
            move.bind(3, old)
            move.bind(4, lower)
            move.bind(5, upper)
            try move.run()
        }
    }

    /// Records content hashes computed after the fact (the first full sync fills the index
    /// without reading files): each is stored only where the index still records the same
    /// version and no hash yet. Returns how many rows changed.
    @discardableResult
    public func setHashes(_ versions: [IndexEntry]) throws(SQLiteError) -> Int {
        let stmt = try statement("""
            UPDATE entries SET whole_hash = ?5, chunk_hashes = ?6, link_target = ?7
            WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3 AND ino = ?4 AND whole_hash IS NULL
            """)
        return try runPerVersion(stmt, versions) { stmt, e in
            stmt.bind(6, e.chunkHashes.isEmpty ? nil : e.chunkHashes)
            stmt.bind(7, e.linkTarget)
        }
    }

    /// Marks exactly these paths as not held by the backup in their recorded version (a
    /// transfer saw the file change under it). Returns how many rows changed.
    @discardableResult
    public func markUnacked(_ paths: [SyncPath]) throws(SQLiteError) -> Int {
        try runPerPath("UPDATE entries SET acked = 0 WHERE path = ?1 AND acked = 1", paths)
    }

    // MARK: - Reads

    public func lookup(_ path: SyncPath) throws(SQLiteError) -> IndexEntry? {
        let stmt = try statement("SELECT \(Self.columns) FROM entries WHERE path = ?1")
        defer { stmt.reset() }
        stmt.bind(1, IndexKey.encode(path))
        return try stmt.step() ? Self.entry(stmt, includeChunks: true) : nil
    }

    /// Paths whose content hash is `hash`, in path order (at most `limit`); only entries
    /// of `kind` when given, only those the backup acknowledged with `ackedOnly`.
    public func paths(withHash hash: Hash128, kind: FileKind? = nil, ackedOnly: Bool = false, limit: Int = 100) throws(SQLiteError) -> [SyncPath] {
        let stmt = try statement("""
            SELECT path FROM entries WHERE whole_hash = ?1 AND (?2 IS NULL OR type = ?2) AND (?3 = 0 OR acked = 1)
            ORDER BY path LIMIT ?4
            """)
        defer { stmt.reset() }
        stmt.bind(1, hash.bytes)
        if let kind { stmt.bind(2, Int64(kind.rawValue)) } else { stmt.bindNull(2) }
        stmt.bind(3, ackedOnly ? 1 : 0)
        stmt.bind(4, Int64(limit))
        var out: [SyncPath] = []
        while try stmt.step() { out.append(IndexKey.decode(stmt.blob(0) ?? [])) }
        return out
    }

    /// Entries in `SyncPath` order, strictly after `after` when given, read `pageSize` rows
    /// at a time (constant memory, and no read transaction held between pages, so writes
    /// and WAL checkpoints go on while a caller walks the index).
    public func entries(after: SyncPath? = nil, includeChunks: Bool = false, pageSize: Int = 1000) -> IndexEntries {
        IndexEntries(after: after.map { IndexKey.encode($0) }, pageSize: pageSize) { after, limit throws(SQLiteError) in
            try self.page(after: after, includeChunks: includeChunks, limit: limit)
        }
    }

    /// The entries strictly inside `path`, in path order, one page at a time (the whole
    /// index for the root).
    public func entries(inside path: SyncPath, pageSize: Int = 1000) -> IndexEntries {
        if path.isRoot { return entries(pageSize: pageSize) }
        let (lower, upper) = IndexKey.descendants(of: path)
        // lower ("path/") is never a key itself; every key inside starts with it and is
        // longer, so "after lower" starts at the first of them.
        return IndexEntries(after: lower, pageSize: pageSize) { after, limit throws(SQLiteError) in
            try self.page(after: after, below: upper, includeChunks: false, limit: limit)
        }
    }

    /// How many entries `path` and its subtree hold (all entries for the root).
    public func countSubtree(_ path: SyncPath) throws(SQLiteError) -> Int {
        if path.isRoot { return try count() }
        let (lower, upper) = IndexKey.descendants(of: path)
        let stmt = try statement("SELECT count(*) FROM entries WHERE path = ?1 OR (path >= ?2 AND path < ?3)")
        defer { stmt.reset() }
        stmt.bind(1, IndexKey.encode(path))
        stmt.bind(2, lower)
        stmt.bind(3, upper)
        _ = try stmt.step()
        return Int(stmt.int64(0))
    }

    /// Acknowledged files and symlinks without a content hash, in path order (at most
    /// `limit`, strictly after `after`).
    public func unhashed(after: SyncPath? = nil, limit: Int = 1000) throws(SQLiteError) -> [IndexEntry] {
        let stmt = try statement("""
            SELECT \(Self.columnsWithoutChunks) FROM entries
            WHERE path > ?1 AND whole_hash IS NULL AND type IN (\(FileKind.regular.rawValue), \(FileKind.symlink.rawValue)) AND acked = 1
            ORDER BY path LIMIT ?2
            """)
        defer { stmt.reset() }
        stmt.bind(1, after.map { IndexKey.encode($0) } ?? [])
        stmt.bind(2, Int64(limit))
        var out: [IndexEntry] = []
        while try stmt.step() { out.append(Self.entry(stmt, includeChunks: false)) }
        return out
    }

    /// Entries not yet acknowledged by the backup, in path order (at most `limit`).
    public func pending(after: SyncPath? = nil, limit: Int = 1000) throws(SQLiteError) -> [IndexEntry] {
        let stmt = try statement("SELECT \(Self.columns) FROM entries INDEXED BY entries_pending WHERE acked = 0 AND path > ?1 ORDER BY path LIMIT ?2")
        defer { stmt.reset() }
        stmt.bind(1, after.map { IndexKey.encode($0) } ?? [])
        stmt.bind(2, Int64(limit))
        var out: [IndexEntry] = []
        while try stmt.step() { out.append(Self.entry(stmt, includeChunks: true)) }
        return out
    }

    /// True when the index holds anything strictly inside `path` (anything at all for the root).
    public func hasEntries(inside path: SyncPath) throws(SQLiteError) -> Bool {
        // Two statements, not one with `?2 IS NULL OR path < ?2`: SQLite bounds its search
        // by `path >= ?1` alone there, and an empty range scanned the rest of the table.
        if path.isRoot {
            let stmt = try statement("SELECT 1 FROM entries LIMIT 1")
            defer { stmt.reset() }
            return try stmt.step()
        }
        let (lower, upper) = IndexKey.descendants(of: path)
        let stmt = try statement("SELECT 1 FROM entries WHERE path >= ?1 AND path < ?2 LIMIT 1")
        defer { stmt.reset() }
        stmt.bind(1, lower)
        stmt.bind(2, upper)
        return try stmt.step()
    }

    /// The number of entries (of one kind when given).
    public func count(kind: FileKind? = nil) throws(SQLiteError) -> Int {
        let stmt = try statement(kind == nil ? "SELECT count(*) FROM entries" : "SELECT count(*) FROM entries WHERE type = ?1")
        defer { stmt.reset() }
        if let kind { stmt.bind(1, Int64(kind.rawValue)) }
        _ = try stmt.step()
        return Int(stmt.int64(0))
    }

    // MARK: - Metadata

    /// A small named value kept with the index (the source's device, the chunk size…).
    public func metadata(_ key: String) throws(SQLiteError) -> [UInt8]? {
        let stmt = try statement("SELECT value FROM meta WHERE key = ?1")
        defer { stmt.reset() }
        stmt.bind(1, text: key)
        return try stmt.step() ? stmt.blob(0) : nil
    }

    public func setMetadata(_ key: String, _ value: [UInt8]?) throws(SQLiteError) {
        let stmt = try statement(value == nil ? "DELETE FROM meta WHERE key = ?1"
                                              : "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
        stmt.bind(1, text: key)
        if let value { stmt.bind(2, value) }
        try stmt.run()
    }

    /// The device the source root was on when the index was filled (`DeleteSafety`).
    public func recordedSourceDevice() throws(SQLiteError) -> UInt64? {
        guard let b = try metadata("source_device"), b.count == 8 else { return nil }
        return b.reduce(0) { $0 << 8 | UInt64($1) }
    }

    public func setRecordedSourceDevice(_ dev: UInt64) throws(SQLiteError) {
        try setMetadata("source_device", (0..<8).map { UInt8(truncatingIfNeeded: dev >> (56 - 8 * UInt64($0))) })
    }

    /// Folds the WAL back into the database file (after a large batch, or at shutdown).
    public func checkpoint() throws(SQLiteError) {
        try db.exec("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    // MARK: - Internals

    static let columns = "path, type, size, mtime_ns, ino, dev, mode, link_target, whole_hash, chunk_hashes, acked"
    static let columnsWithoutChunks = "path, type, size, mtime_ns, ino, dev, mode, link_target, whole_hash, NULL, acked"
    /// Metadata only (a start's comparison of the tree with the index needs no hash).
    static let metadataColumns = "path, type, size, mtime_ns, ino, dev, mode, NULL, NULL, NULL, acked"

    static func entry(_ s: SQLiteStatement, includeChunks: Bool) -> IndexEntry {
        IndexEntry(
            path: IndexKey.decode(s.blob(0) ?? []),
            kind: FileKind(rawValue: UInt8(truncatingIfNeeded: s.int64(1))) ?? .other,
            size: UInt64(bitPattern: s.int64(2)),
            mtimeNs: s.int64(3),
            ino: UInt64(bitPattern: s.int64(4)),
            dev: UInt64(bitPattern: s.int64(5)),
            mode: UInt32(truncatingIfNeeded: s.int64(6)),
            linkTarget: s.blob(7),
            wholeHash: s.blob(8).flatMap { Hash128(bytes: $0) },
            chunkHashes: includeChunks ? (s.blob(9) ?? []) : [],
            acked: s.int64(10) != 0)
    }

    /// The steps every prepared statement has run (for tests of how much a query reads).
    var statementSteps: Int { statements.values.reduce(0) { $0 + $1.steps } }

    func statement(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        if let s = statements[sql] { return s }
        let s = try db.prepare(sql)
        statements[sql] = s
        return s
    }

    func page(after: [UInt8]?, below upper: [UInt8]? = nil, includeChunks: Bool, metadataOnly: Bool = false,
              limit: Int) throws(SQLiteError) -> [IndexEntry] {
        let cols = metadataOnly ? Self.metadataColumns : includeChunks ? Self.columns : Self.columnsWithoutChunks
        // With an upper bound in the search (see `hasEntries`): the last page of a subtree
        // would otherwise read on to the end of the table.
        let stmt = try statement(upper == nil ? "SELECT \(cols) FROM entries WHERE path > ?1 ORDER BY path LIMIT ?2"
                                              : "SELECT \(cols) FROM entries WHERE path > ?1 AND path < ?3 ORDER BY path LIMIT ?2")
        defer { stmt.reset() }
        stmt.bind(1, after ?? [])
        stmt.bind(2, Int64(limit))
        if let upper { stmt.bind(3, upper) }
        var out: [IndexEntry] = []
        out.reserveCapacity(limit)
        while try stmt.step() { out.append(Self.entry(stmt, includeChunks: includeChunks)) }
        return out
    }
}

/// A walk over the index in path order, one page in memory at a time. Iteration stops at
/// the first SQLite error, which is then in `error` (check it after the loop).
public final class IndexEntries: Sequence, IteratorProtocol {
    /// Reads the page of at most `limit` entries after a key (nil: from the start).
    public typealias Fetch = (_ after: [UInt8]?, _ limit: Int) throws(SQLiteError) -> [IndexEntry]
    private let fetch: Fetch
    private let pageSize: Int
    private var lastKey: [UInt8]?
    private var buffer: [IndexEntry] = []
    private var position = 0
    private var exhausted = false
    public private(set) var error: SQLiteError?

    /// Entries after the key `after`, a page (`fetch`) at a time: the caller decides how a
    /// page is read (which columns, which range, under which lock).
    public init(after: [UInt8]?, pageSize: Int, fetch: @escaping Fetch) {
        self.fetch = fetch
        self.pageSize = Swift.max(1, pageSize)
        self.lastKey = after
    }

    public func next() -> IndexEntry? {
        if position == buffer.count {
            if exhausted { return nil }
            do {
                buffer = try fetch(lastKey, pageSize)
            } catch {
                self.error = error
                exhausted = true
                buffer = []
            }
            position = 0
            if buffer.count < pageSize { exhausted = true }
            guard let last = buffer.last else { return nil }
            lastKey = IndexKey.encode(last.path)
        }
        defer { position += 1 }
        return buffer[position]
    }
}
