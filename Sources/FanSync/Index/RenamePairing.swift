/// Turns deletes and creates of identical content into renames and copies on the backup.
///
/// Pure logic: the caller supplies what was deleted (with the hash the index holds for
/// it) and what was created (with the hash just computed), and a lookup of paths where
/// the backup already holds some content. The result is deterministic: it does not
/// depend on the order of the inputs.
public enum RenamePairing {
    public struct Deleted: Hashable, Sendable {
        public var path: SyncPath
        public var kind: FileKind
        public var size: UInt64
        /// The index's hash; nil when unknown (a directory, never hashed).
        public var hash: Hash128?
        /// The backup acknowledged this version. An unacknowledged entry may not be on the
        /// backup at all (or be an older version there), so it is never a rename source.
        public var acked: Bool

        public init(path: SyncPath, kind: FileKind, size: UInt64, hash: Hash128?, acked: Bool) {
            self.path = path
            self.kind = kind
            self.size = size
            self.hash = hash
            self.acked = acked
        }

        public init(_ entry: IndexEntry) {
            self.init(path: entry.path, kind: entry.kind, size: entry.size, hash: entry.wholeHash, acked: entry.acked)
        }
    }

    public struct Created: Hashable, Sendable {
        public var path: SyncPath
        public var kind: FileKind
        public var size: UInt64
        /// The computed hash; nil when not hashed (directories, special files).
        public var hash: Hash128?

        public init(path: SyncPath, kind: FileKind, size: UInt64, hash: Hash128?) {
            self.path = path
            self.kind = kind
            self.size = size
            self.hash = hash
        }
    }

    /// Content moved or copied on the backup.
    public struct Move: Hashable, Sendable, CustomStringConvertible {
        public var from: SyncPath
        public var to: SyncPath
        public var hash: Hash128
        public var description: String { "\(from) -> \(to)" }
    }

    public struct Plan: Hashable, Sendable {
        /// Apply first, in this order (sorted by destination).
        public var renames: [Move] = []
        /// Apply after the renames: each `from` holds the content on the backup then (a
        /// path the backup already held and that is neither deleted nor replaced, or the
        /// destination of one of `renames`).
        public var copies: [Move] = []
        /// Creates whose content the backup does not hold: transfer them.
        public var sends: [SyncPath] = []
        /// Deletes not used as a rename source: delete on the backup.
        public var deletes: [SyncPath] = []
        /// Paths both deleted and created with the same content (a save through a
        /// temporary file renamed over the original): the backup already holds them.
        public var unchanged: [SyncPath] = []
    }

    /// - Parameters:
    ///   - minimumSize: content smaller than this is never paired (empty files are
    ///     cheaper to send than to match, and every empty file has the same hash).
    ///   - heldAt: paths where the backup holds content of this hash and kind (the index's
    ///     acknowledged entries: `Index.paths(withHash:kind:ackedOnly: true)`).
    public static func plan(deleted: [Deleted], created: [Created], minimumSize: UInt64 = 1,
                            heldAt: (Hash128, FileKind) -> [SyncPath]) -> Plan {
        struct Key: Hashable, Comparable {
            var hash: Hash128
            var kind: FileKind
            static func < (a: Key, b: Key) -> Bool { (a.hash, a.kind.rawValue) < (b.hash, b.kind.rawValue) }
        }
        var plan = Plan()
        var deletesByKey: [Key: [Deleted]] = [:]
        var createsByKey: [Key: [Created]] = [:]
        let deletedPaths = Set(deleted.map(\.path))
        let createdPaths = Set(created.map(\.path))

        for d in deleted {
            if d.acked, let h = d.hash, d.size >= minimumSize, d.kind == .regular || d.kind == .symlink {
                deletesByKey[Key(hash: h, kind: d.kind), default: []].append(d)
            } else {
                plan.deletes.append(d.path)
            }
        }
        for c in created {
            if let h = c.hash, c.size >= minimumSize, c.kind == .regular || c.kind == .symlink {
                createsByKey[Key(hash: h, kind: c.kind), default: []].append(c)
            } else {
                plan.sends.append(c.path)
            }
        }

        for key in createsByKey.keys.sorted() {
            let creates = createsByKey[key]!.sorted { $0.path < $1.path }
            var sources = (deletesByKey.removeValue(forKey: key) ?? []).sorted { $0.path < $1.path }
            var unpaired: [Created] = []
            var destinations: [SyncPath] = []
            // Pair in passes of decreasing likeness: same name (a move to another
            // directory), same directory (a rename in place), then any, in path order.
            var remaining: [Created] = []
            for c in creates {
                if let j = sources.firstIndex(where: { $0.path == c.path }) {
                    sources.remove(at: j)
                    plan.unchanged.append(c.path)
                } else {
                    remaining.append(c)
                }
            }
            for rule in [PairRule.sameName, .sameParent, .any] {
                var next: [Created] = []
                for c in remaining {
                    if let j = sources.firstIndex(where: { rule.matches($0.path, c.path) }) {
                        let d = sources.remove(at: j)
                        plan.renames.append(Move(from: d.path, to: c.path, hash: key.hash))
                        destinations.append(c.path)
                    } else {
                        next.append(c)
                    }
                }
                remaining = next
            }
            unpaired = remaining
            plan.deletes.append(contentsOf: sources.map(\.path))
            guard !unpaired.isEmpty else { continue }
            let held = heldAt(key.hash, key.kind)
                .filter { !deletedPaths.contains($0) && !createdPaths.contains($0) }
                .sorted()
            let copySource = held.first ?? destinations.sorted().first
            for c in unpaired {
                if let from = copySource {
                    plan.copies.append(Move(from: from, to: c.path, hash: key.hash))
                } else {
                    plan.sends.append(c.path)
                }
            }
        }
        for (_, rest) in deletesByKey { plan.deletes.append(contentsOf: rest.map(\.path)) }

        plan.renames.sort { $0.to < $1.to }
        plan.copies.sort { $0.to < $1.to }
        plan.sends.sort()
        plan.deletes.sort()
        plan.unchanged.sort()
        return plan
    }

    private enum PairRule {
        case sameName, sameParent, any
        func matches(_ a: SyncPath, _ b: SyncPath) -> Bool {
            switch self {
            case .sameName: return a.name == b.name
            case .sameParent: return a.parent == b.parent
            case .any: return true
            }
        }
    }
}
