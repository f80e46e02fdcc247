/// Which directory each inotify watch descriptor stands for, and the reverse, with a tree
/// index so that renaming or dropping a directory costs the size of its subtree, not the
/// number of watches (an `rm -r` of 10,000 directories must not be quadratic).
struct InotifyWatchTable {
    private(set) var pathByWd: [Int32: SyncPath] = [:]
    private var wdByPath: [SyncPath: Int32] = [:]
    /// path -> the paths directly under it that are watched or lead to a watched path.
    private var children: [SyncPath: Set<SyncPath>] = [:]

    var count: Int { pathByWd.count }

    func path(for wd: Int32) -> SyncPath? { pathByWd[wd] }
    func wd(for path: SyncPath) -> Int32? { wdByPath[path] }

    /// Records that `wd` watches `path`, forgetting whatever either was attached to before.
    mutating func set(_ path: SyncPath, wd: Int32) {
        if let old = pathByWd[wd], old != path { remove(path: old) }
        if let previous = wdByPath[path], previous != wd { pathByWd[previous] = nil }
        pathByWd[wd] = path
        wdByPath[path] = wd
        link(path)
    }

    @discardableResult
    mutating func remove(path: SyncPath) -> Int32? {
        guard let wd = wdByPath.removeValue(forKey: path) else { return nil }
        pathByWd[wd] = nil
        prune(path)
        return wd
    }

    @discardableResult
    mutating func remove(wd: Int32) -> SyncPath? {
        guard let path = pathByWd[wd] else { return nil }
        remove(path: path)
        return path
    }

    /// The watched paths at or under `dir` with their descriptors, parents first.
    func subtree(of dir: SyncPath) -> [(path: SyncPath, wd: Int32)] {
        var out: [(SyncPath, Int32)] = []
        var stack = [dir]
        while let p = stack.popLast() {
            if let wd = wdByPath[p] { out.append((p, wd)) }
            if let kids = children[p] { stack.append(contentsOf: kids) }
        }
        return out
    }

    private mutating func link(_ path: SyncPath) {
        var p = path
        while !p.isRoot {
            let parent = p.parent
            if !children[parent, default: []].insert(p).inserted { break }
            p = parent
        }
    }

    private mutating func prune(_ path: SyncPath) {
        var p = path
        while !p.isRoot, wdByPath[p] == nil, children[p]?.isEmpty ?? true {
            children[p] = nil
            let parent = p.parent
            children[parent]?.remove(p)
            if children[parent]?.isEmpty == true { children[parent] = nil }
            p = parent
        }
    }
}
