/// One path found by walking the source tree: its `statx` (not following symlinks).
public struct TreeEntry: Hashable, Sendable {
    public var path: SyncPath
    public var stat: FileStat

    public init(path: SyncPath, stat: FileStat) {
        self.path = path
        self.stat = stat
    }
}

/// What differs between a walked path and the index's record of it.
public struct ChangeReasons: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let size = ChangeReasons(rawValue: 1 << 0)
    public static let mtime = ChangeReasons(rawValue: 1 << 1)
    /// Inode or device: the path now names another file (replaced, or a save through a
    /// temporary file renamed over it).
    public static let inode = ChangeReasons(rawValue: 1 << 2)
    /// Permission bits (`mode & 0o7777`).
    public static let mode = ChangeReasons(rawValue: 1 << 3)

    /// Reasons that may mean new content: the file must be hashed to know.
    public static let content: ChangeReasons = [.size, .mtime, .inode]

    public var description: String {
        var parts: [String] = []
        if contains(.size) { parts.append("size") }
        if contains(.mtime) { parts.append("mtime") }
        if contains(.inode) { parts.append("inode") }
        if contains(.mode) { parts.append("mode") }
        return parts.joined(separator: "+")
    }
}

/// The classification of one path when the walked tree is compared with the index.
public enum TreeDifference: Hashable, Sendable {
    /// In the tree, not in the index.
    case new(TreeEntry)
    /// Same kind, different metadata. `needsHash` tells whether the content may differ.
    case changed(TreeEntry, was: IndexEntry, reasons: ChangeReasons)
    /// Metadata equal and the backup acknowledged this version: nothing to do.
    case unchanged(TreeEntry, IndexEntry)
    /// Metadata equal, but the backup never acknowledged this version (a crash between
    /// recording and sending): send it again; the index's hash is still valid.
    case unacknowledged(TreeEntry, IndexEntry)
    /// In the index, not in the tree: delete on the backup (subject to `DeleteSafety`).
    case deleted(IndexEntry)
    /// File, directory, symlink or special file turned into another of these.
    case typeChanged(TreeEntry, was: IndexEntry)

    public var path: SyncPath {
        switch self {
        case .new(let t), .changed(let t, _, _), .unchanged(let t, _), .unacknowledged(let t, _), .typeChanged(let t, _):
            return t.path
        case .deleted(let i):
            return i.path
        }
    }

    /// True when the path's content must be read and hashed to decide what to send: new
    /// files and symlinks (to find renames and copies), content-relevant changes, and a
    /// path that became a file or symlink. Directories and special files never are.
    public var needsHash: Bool {
        switch self {
        case .new(let t), .typeChanged(let t, _):
            return t.stat.kind == .regular || t.stat.kind == .symlink
        case .changed(let t, _, let reasons):
            return (t.stat.kind == .regular || t.stat.kind == .symlink) && !reasons.isDisjoint(with: .content)
        case .unchanged, .unacknowledged, .deleted:
            return false
        }
    }
}

/// Compares a walked tree with the index, both in `SyncPath` order, in one merge pass
/// (constant memory: neither side is held in full).
///
/// What is compared, by kind: files and symlinks by size, mtime (ns), inode and device,
/// and permission bits; directories by inode and device and permission bits only (a
/// directory's mtime moves with every entry made or removed in it, and those entries are
/// compared themselves); special files like files. A file rewritten with the same size
/// and the same mtime is not detected (as with rsync's and git's quick check).
public enum TreeComparison {
    /// An input was not strictly increasing in `SyncPath` order: comparing further would
    /// report paths as deleted that are not, so the comparison stops.
    public struct OrderError: Error, Hashable, Sendable, CustomStringConvertible {
        public enum Side: String, Sendable { case tree = "walked tree", index }
        public let side: Side
        public let previous: SyncPath
        public let path: SyncPath
        public var description: String {
            "\(side.rawValue) is not in path order: \(path) after \(previous); comparison stopped, nothing deleted"
        }
    }

    /// Calls `emit` for every path of either side, in path order.
    public static func compare<T: Sequence, I: Sequence>(
        tree: T, index: I, emit: (TreeDifference) throws -> Void
    ) throws where T.Element == TreeEntry, I.Element == IndexEntry {
        var treeIt = tree.makeIterator()
        var indexIt = index.makeIterator()
        var lastTree: SyncPath?
        var lastIndex: SyncPath?

        func nextTree() throws -> TreeEntry? {
            guard let t = treeIt.next() else { return nil }
            if let last = lastTree, !(last < t.path) { throw OrderError(side: .tree, previous: last, path: t.path) }
            lastTree = t.path
            return t
        }
        func nextIndex() throws -> IndexEntry? {
            guard let i = indexIt.next() else { return nil }
            if let last = lastIndex, !(last < i.path) { throw OrderError(side: .index, previous: last, path: i.path) }
            lastIndex = i.path
            return i
        }

        var t = try nextTree()
        var i = try nextIndex()
        while true {
            switch (t, i) {
            case (nil, nil):
                return
            case (let te?, nil):
                try emit(.new(te))
                t = try nextTree()
            case (nil, let ie?):
                try emit(.deleted(ie))
                i = try nextIndex()
            case (let te?, let ie?):
                if te.path < ie.path {
                    try emit(.new(te))
                    t = try nextTree()
                } else if ie.path < te.path {
                    try emit(.deleted(ie))
                    i = try nextIndex()
                } else {
                    try emit(classify(te, ie))
                    t = try nextTree()
                    i = try nextIndex()
                }
            }
        }
    }

    /// Collects `compare`'s output (tests, small trees).
    public static func differences<T: Sequence, I: Sequence>(tree: T, index: I) throws -> [TreeDifference]
    where T.Element == TreeEntry, I.Element == IndexEntry {
        var out: [TreeDifference] = []
        try compare(tree: tree, index: index) { out.append($0) }
        return out
    }

    /// The classification of a path present on both sides.
    public static func classify(_ t: TreeEntry, _ i: IndexEntry) -> TreeDifference {
        precondition(t.path == i.path)
        if t.stat.kind != i.kind { return .typeChanged(t, was: i) }
        var reasons: ChangeReasons = []
        if t.stat.ino != i.ino || t.stat.dev != i.dev { reasons.insert(.inode) }
        if t.stat.mode & 0o7777 != i.mode & 0o7777 { reasons.insert(.mode) }
        if t.stat.kind != .directory {
            if t.stat.size != i.size { reasons.insert(.size) }
            if t.stat.mtimeNs != i.mtimeNs { reasons.insert(.mtime) }
        }
        if !reasons.isEmpty { return .changed(t, was: i, reasons: reasons) }
        return i.acked ? .unchanged(t, i) : .unacknowledged(t, i)
    }

    /// After hashing a path that `needsHash`: whether the backup already holds this
    /// content at this path.
    public enum ContentCheck: Hashable, Sendable {
        /// Same content as the acknowledged version (saved again unchanged, `touch`, a
        /// checkout of the same bytes): record the new metadata, send no bytes (a mode
        /// change alone still needs its attributes sent: see `reasons`).
        case sameContent
        /// Different content, or the index has no acknowledged hash to compare with.
        case differentContent
    }

    public static func contentCheck(was i: IndexEntry, now hashed: HashedEntry) -> ContentCheck {
        guard i.acked, i.kind == hashed.stat.kind, let old = i.wholeHash, let new = hashed.content?.whole,
              old == new, i.size == hashed.stat.size else { return .differentContent }
        if i.kind == .symlink && i.linkTarget != hashed.linkTarget { return .differentContent }
        return .sameContent
    }
}
