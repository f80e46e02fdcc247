/// What the index knows about one path: the metadata of the version last recorded, its
/// content hash, and whether the backup is known to hold that version.
public struct IndexEntry: Hashable, Sendable {
    public var path: SyncPath
    public var kind: FileKind
    public var size: UInt64
    public var mtimeNs: Int64
    public var ino: UInt64
    public var dev: UInt64
    /// The full `st_mode`.
    public var mode: UInt32
    /// Symlinks: the target bytes.
    public var linkTarget: [UInt8]?
    /// Files: XXH3-128 of the content. Symlinks: of the target bytes. nil: not hashed.
    public var wholeHash: Hash128?
    /// The chunk hashes, 16 canonical bytes each (see `ContentHash.chunkBytes`). Empty when
    /// not hashed, for empty files, or when read with `includeChunks: false`.
    public var chunkHashes: [UInt8]
    /// The backup holds this version (the transfer was acknowledged).
    public var acked: Bool

    public init(path: SyncPath, kind: FileKind, size: UInt64, mtimeNs: Int64, ino: UInt64, dev: UInt64,
                mode: UInt32, linkTarget: [UInt8]? = nil, wholeHash: Hash128? = nil,
                chunkHashes: [UInt8] = [], acked: Bool = false) {
        self.path = path
        self.kind = kind
        self.size = size
        self.mtimeNs = mtimeNs
        self.ino = ino
        self.dev = dev
        self.mode = mode
        self.linkTarget = linkTarget
        self.wholeHash = wholeHash
        self.chunkHashes = chunkHashes
        self.acked = acked
    }

    /// An entry from what a hasher found at `path`.
    public init(path: SyncPath, hashed: HashedEntry, acked: Bool = false) {
        self.init(path: path, kind: hashed.stat.kind, size: hashed.stat.size, mtimeNs: hashed.stat.mtimeNs,
                  ino: hashed.stat.ino, dev: hashed.stat.dev, mode: hashed.stat.mode,
                  linkTarget: hashed.linkTarget, wholeHash: hashed.content?.whole,
                  chunkHashes: hashed.content?.chunkBytes ?? [], acked: acked)
    }

    public var chunks: [Hash128] { ContentHash.chunks(fromBytes: chunkHashes) ?? [] }
}

/// The index's key encoding of a path: a byte permutation under which plain byte
/// comparison (SQLite's BLOB order) equals `SyncPath` order, so the primary key streams
/// entries in the order the tree walk produces them and a subtree is one key range.
///
/// `SyncPath` order puts `/` below every other byte. Paths never hold a NUL byte, so `/`
/// (0x2F) is stored as 0x01 and bytes 0x01…0x2E move up by one; 0x30…0xFF are unchanged.
public enum IndexKey {
    public static func encode(_ path: SyncPath) -> [UInt8] {
        path.bytes.map { b in b == 0x2F ? 0x01 : (b >= 0x01 && b < 0x2F ? b + 1 : b) }
    }

    public static func decode(_ key: [UInt8]) -> SyncPath {
        SyncPath(bytes: key.map { b in b == 0x01 ? 0x2F : (b >= 0x02 && b <= 0x2F ? b - 1 : b) })
    }

    /// The half-open key range of everything strictly inside `path` (`path/…`).
    static func descendants(of path: SyncPath) -> (lower: [UInt8], upper: [UInt8]) {
        let k = encode(path)
        return (k + [0x01], k + [0x02])
    }
}
