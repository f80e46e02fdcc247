import CLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Per-directory rules files with git's ignore semantics, answered from a cache.
///
/// A rules file (`.fansyncignore`, optionally `.gitignore`) applies to its directory's
/// subtree exactly as a `.gitignore` does for git: deeper files override shallower ones,
/// later lines override earlier ones, a path inside an excluded directory is excluded
/// whatever a negation says, and the global patterns (the config's `exclude`) apply as if
/// written at the root, below every rules file (git's `info/exclude`). Several rules file
/// names in one directory: the first name in `rulesFileNames` has the highest priority.
///
/// Decisions are cached per directory in a tree mirroring the source tree: a path costs one
/// dictionary lookup per component plus the patterns of its own ancestors' rules files, never
/// more with the number of rules files elsewhere. A directory's rules files are read when a
/// path inside it is first decided, through `openat2(RESOLVE_NO_SYMLINKS)` beneath the
/// source root: no symlink is ever followed, and a symlinked rules file is ignored (as git
/// does) with a warning. An excluded directory's rules files are never read.
///
/// Call `rulesChanged(in:)` when a rules file is created, changed or deleted in a directory,
/// and when a directory is created, moved in or out, or deleted (its cached state is then
/// stale). All methods are thread-safe.
public final class RulesEngine: @unchecked Sendable {
    public let sourceRoot: [UInt8]
    public let rulesFileNames: [[UInt8]]
    /// The global patterns (`<exclude>`), lowest priority.
    let globals: RuleList

    /// Above this many cached directories the cache is dropped and rebuilt on demand.
    let maximumCachedDirectories: Int
    /// Rules files larger than this are ignored with a warning.
    static let maximumRulesFileSize = 16 << 20

    final class DirNode {
        /// The pattern that excludes this directory (its own, or an ancestor's).
        let excludedBy: IgnorePattern?
        /// The last pattern matching this directory itself (possibly a negation); nil when
        /// an ancestor is excluded.
        let selfMatch: IgnorePattern?
        /// The rule lists that apply to entries of this directory, deepest and highest
        /// priority first; nil until this directory's rules files are read.
        var lists: [RuleList]?
        /// Keyed by name; each key owns its own small array (never a slice of a longer path).
        var children: [ArraySlice<UInt8>: DirNode] = [:]

        init(excludedBy: IgnorePattern?, selfMatch: IgnorePattern?) {
            self.excludedBy = excludedBy
            self.selfMatch = selfMatch
        }
    }

    struct State {
        var root = DirNode(excludedBy: nil, selfMatch: nil)
        var nodeCount = 1
        /// Warnings of the rules files currently loaded, by file.
        var warningsByFile: [[UInt8]: [RulesWarning]] = [:]
        var warningHandler: (@Sendable (RulesWarning) -> Void)?
    }

    private let state = Mutex(State())

    /// - Parameters:
    ///   - sourceRoot: absolute path of the source directory.
    ///   - rulesFileNames: names of the per-directory rules files, highest priority first
    ///     (`[".fansyncignore"]`, or `[".fansyncignore", ".gitignore"]`).
    ///   - globalPatterns: the config's exclude patterns, one line each (gitignore syntax),
    ///     applied as if at the root, below every rules file. Reported as `<exclude>`, line N.
    public convenience init(sourceRoot: [UInt8], rulesFileNames: [[UInt8]], globalPatterns: [String]) {
        self.init(sourceRoot: sourceRoot, rulesFileNames: rulesFileNames, globalPatterns: globalPatterns,
                  maximumCachedDirectories: 50_000)
    }

    init(sourceRoot: [UInt8], rulesFileNames: [[UInt8]], globalPatterns: [String], maximumCachedDirectories: Int) {
        self.sourceRoot = sourceRoot
        var names: [[UInt8]] = []
        for name in rulesFileNames where !name.isEmpty && !name.contains(UInt8(ascii: "/")) && !names.contains(name) {
            names.append(name)
        }
        self.rulesFileNames = names
        var joined: [UInt8] = []
        for (i, line) in globalPatterns.enumerated() {
            if i > 0 { joined.append(UInt8(ascii: "\n")) }
            joined.append(contentsOf: line.utf8)
        }
        self.globals = RuleList.parse(joined, source: RuleMatch.globalSource, base: [])
        self.maximumCachedDirectories = max(2, maximumCachedDirectories)
    }

    // MARK: - Public API

    /// Whether `path` is excluded: by its own last matching pattern, or because a directory
    /// above it is excluded. The root is never excluded.
    public func isExcluded(_ path: SyncPath, isDirectory: Bool) -> Bool {
        guard !path.isRoot, let p = decide(path.bytes, isDirectory: isDirectory) else { return false }
        return !p.negated
    }

    /// The rule that decides `path`, as `git check-ignore -v` reports it: the excluding
    /// pattern of an excluded ancestor directory, or the path's own last matching pattern
    /// (a `!` negation included, which means "not excluded"); nil when nothing matches.
    public func explain(_ path: SyncPath, isDirectory: Bool) -> RuleMatch? {
        guard !path.isRoot else { return nil }
        return decide(path.bytes, isDirectory: isDirectory).map(RuleMatch.init)
    }

    /// git's answer for a path as `check-ignore` receives it after its own normalisation:
    /// possibly empty (the root) or ending with `/`, which git matches literally.
    func explainRaw(_ raw: [UInt8], isDirectory: Bool) -> RuleMatch? {
        decide(raw, isDirectory: isDirectory).map(RuleMatch.init)
    }

    /// Forget what is cached for `directory` and below: its rules files are read again and
    /// every decision inside it is recomputed. Call when a rules file in `directory` is
    /// created, edited or deleted, or when `directory` itself appears, moves or disappears.
    public func rulesChanged(in directory: SyncPath) {
        state.withLock { state in
            var node = state.root
            for component in directory.components {
                guard let next = node.children[component] else { return }
                node = next
            }
            var removed = 0
            var stack = Array(node.children.values)
            while let n = stack.popLast() {
                removed += 1
                stack.append(contentsOf: n.children.values)
            }
            node.children = [:]
            node.lists = nil
            state.nodeCount -= removed
            for file in state.warningsByFile.keys where SyncPath(bytes: file).parent.isInside(directory) {
                state.warningsByFile[file] = nil
            }
        }
    }

    /// Forget everything cached (same as `rulesChanged(in: .root)`).
    public func invalidateAll() {
        rulesChanged(in: .root)
    }

    /// True when `path`'s last component is a rules file name (without copying it out: this
    /// is asked for every event).
    public func isRulesFile(_ path: SyncPath) -> Bool {
        let b = path.bytes
        return rulesFileNames.contains { n in
            b.count >= n.count && b.suffix(n.count).elementsEqual(n)
                && (b.count == n.count || b[b.count - n.count - 1] == UInt8(ascii: "/"))
        }
    }

    /// Problems in the global patterns and in the rules files read so far (unterminated
    /// classes, trailing backslashes, unreadable or symlinked files), by file and line.
    public var warnings: [RulesWarning] {
        let loaded = state.withLock { state in state.warningsByFile.values.flatMap { $0 } }
        return globals.warnings + loaded.sorted {
            $0.file != $1.file ? SyncPath(bytes: $0.file) < SyncPath(bytes: $1.file) : $0.line < $1.line
        }
    }

    /// Called (outside the engine's lock) for each warning of a rules file when it is read.
    public var warningHandler: (@Sendable (RulesWarning) -> Void)? {
        get { state.withLock { $0.warningHandler } }
        set { state.withLock { $0.warningHandler = newValue } }
    }

    /// Number of directories whose decision is cached (for tests and status).
    var cachedDirectoryCount: Int { state.withLock { $0.nodeCount } }

    // MARK: - Decisions

    /// The deciding pattern for a raw path (git's `last_matching_pattern`).
    private func decide(_ raw: [UInt8], isDirectory: Bool) -> IgnorePattern? {
        var pending: [RulesWarning] = []
        let result: IgnorePattern? = state.withLock { state in
            trimIfNeeded(&state)
            if isDirectory, !raw.isEmpty, raw.last != UInt8(ascii: "/") {
                // A directory's decision is cached in its own node.
                switch resolve(raw[...], state: &state, loadLastLists: false, primer: nil, pending: &pending) {
                case .excluded(let p): return p
                case .node(let n): return n.selfMatch
                }
            }
            let slash = raw.lastIndex(of: UInt8(ascii: "/"))
            let dir = slash.map { raw[..<$0] } ?? raw[0..<0]
            let basenameOffset = slash.map { $0 + 1 } ?? 0
            switch resolve(dir, state: &state, loadLastLists: true, primer: nil, pending: &pending) {
            case .excluded(let p):
                return p
            case .node(let n):
                return lastMatch(raw, basenameOffset: basenameOffset, isDirectory: isDirectory, lists: n.lists!)
            }
        }
        report(pending)
        return result
    }

    enum Resolved {
        case excluded(IgnorePattern)
        case node(DirNode)
    }

    struct Primer {
        let directoryFD: Int32
        let present: Set<[UInt8]>
    }

    /// Walks (and fills) the cache down to directory `dir`, as git's `prep_exclude` does:
    /// each directory on the way is checked against the rules above it, and the walk stops at
    /// the first excluded one. With `loadLastLists`, the rules files of `dir` itself are read.
    private func resolve(_ dir: ArraySlice<UInt8>, state: inout State, loadLastLists: Bool,
                         primer: Primer?, pending: inout [RulesWarning]) -> Resolved {
        let slash = UInt8(ascii: "/")
        let start = dir.startIndex, end = dir.endIndex
        var current = state.root
        let isRootDirectory = !dir.contains { $0 != slash }
        ensureLists(current, path: [], parentLists: [], primer: isRootDirectory ? primer : nil,
                    state: &state, pending: &pending)
        var i = start
        while i < end {
            if dir[i] == slash {
                i += 1
                continue
            }
            var j = i
            while j < end && dir[j] != slash { j += 1 }
            var next = j
            while next < end && dir[next] == slash { next += 1 }
            let isLast = next == end
            let component = dir[i..<j]
            let child: DirNode
            if let existing = current.children[component] {
                child = existing
            } else {
                let path = Array(dir[start..<j])
                let match = lastMatch(path, basenameOffset: i - start, isDirectory: true, lists: current.lists!)
                child = DirNode(excludedBy: (match?.negated == false) ? match : nil, selfMatch: match)
                current.children[ArraySlice(Array(component))] = child
                state.nodeCount += 1
            }
            if let p = child.excludedBy { return .excluded(p) }
            if isLast && !loadLastLists { return .node(child) }
            if child.lists == nil {
                ensureLists(child, path: Array(dir[start..<j]), parentLists: current.lists!, primer: isLast ? primer : nil,
                            state: &state, pending: &pending)
            }
            current = child
            i = next
        }
        return .node(current)
    }

    private func ensureLists(_ node: DirNode, path: [UInt8], parentLists: [RuleList], primer: Primer?,
                             state: inout State, pending: inout [RulesWarning]) {
        if node.lists != nil { return }
        let own = loadRules(directory: path, primer: primer)
        for list in own where !list.warnings.isEmpty {
            state.warningsByFile[list.source] = list.warnings
            pending.append(contentsOf: list.warnings)
        }
        let effective = own.filter { !$0.patterns.isEmpty }
        node.lists = effective.isEmpty ? parentLists : effective + parentLists
    }

    /// git's `last_matching_pattern_from_lists`: the last matching line of the deepest file
    /// that has one, then the global patterns.
    private func lastMatch(_ pathname: [UInt8], basenameOffset: Int, isDirectory: Bool, lists: [RuleList]) -> IgnorePattern? {
        var terminated = pathname
        terminated.append(0)
        return terminated.withUnsafeBufferPointer { buffer -> IgnorePattern? in
            let path = buffer.baseAddress!
            let length = pathname.count
            for list in lists {
                for pattern in list.patterns.reversed()
                where pattern.matches(path, length, basenameOffset: basenameOffset, isDirectory: isDirectory) {
                    return pattern
                }
            }
            for pattern in globals.patterns.reversed()
            where pattern.matches(path, length, basenameOffset: basenameOffset, isDirectory: isDirectory) {
                return pattern
            }
            return nil
        }
    }

    private func trimIfNeeded(_ state: inout State) {
        guard state.nodeCount > maximumCachedDirectories else { return }
        state.root = DirNode(excludedBy: nil, selfMatch: nil)
        state.nodeCount = 1
        state.warningsByFile = [:]
    }

    private func report(_ pending: [RulesWarning]) {
        guard !pending.isEmpty, let handler = warningHandler else { return }
        for warning in pending { handler(warning) }
    }

    // MARK: - Reading rules files

    /// Reads the rules files of `directory` (relative to the root); absent files give nothing.
    private func loadRules(directory: [UInt8], primer: Primer?) -> [RuleList] {
        var lists: [RuleList] = []
        if let primer {
            for name in rulesFileNames where primer.present.contains(name) {
                let source = directory.isEmpty ? name : directory + [UInt8(ascii: "/")] + name
                if let list = readRulesFile(directoryFD: primer.directoryFD, name: name, source: source, base: directory) {
                    lists.append(list)
                }
            }
            return lists
        }
        if rulesFileNames.isEmpty { return [] }
        let rootFD = RulesEngine.openDirectory(sourceRoot)
        guard rootFD >= 0 else { return [] }
        defer { close(rootFD) }
        var dirFD = rootFD
        if !directory.isEmpty {
            dirFD = RulesEngine.openBeneath(rootFD, directory, flags: clinux_o_path | O_DIRECTORY)
            // Absent, not a directory, or under a symlink: no rules apply from there.
            guard dirFD >= 0 else { return [] }
        }
        defer { if dirFD != rootFD { close(dirFD) } }
        for name in rulesFileNames {
            let source = directory.isEmpty ? name : directory + [UInt8(ascii: "/")] + name
            if let list = readRulesFile(directoryFD: dirFD, name: name, source: source, base: directory) {
                lists.append(list)
            }
        }
        return lists
    }

    private func readRulesFile(directoryFD: Int32, name: [UInt8], source: [UInt8], base: [UInt8]) -> RuleList? {
        func problem(_ message: String) -> RuleList {
            RuleList(source: source, patterns: [],
                     warnings: [RulesWarning(file: source, line: 0, message: message)])
        }
        let fd: Int32 = (name + [0]).withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                openat(directoryFD, $0.baseAddress!, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            }
        }
        if fd < 0 {
            let code = errno
            switch code {
            case ENOENT, ENOTDIR:
                return nil
            case ELOOP:
                return problem("is a symbolic link; rules files are never followed, so it is ignored (as git does)")
            default:
                return problem("cannot be read (\(RulesEngine.errorText(code))); it is ignored")
            }
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            return problem("cannot be read (\(RulesEngine.errorText(errno))); it is ignored")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            return problem("is not a regular file; it is ignored")
        }
        guard Int(info.st_size) <= RulesEngine.maximumRulesFileSize else {
            return problem("is larger than \(RulesEngine.maximumRulesFileSize >> 20) MiB; it is ignored")
        }
        var content: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return problem("cannot be read (\(RulesEngine.errorText(errno))); it is ignored")
            }
            if n == 0 { break }
            content.append(contentsOf: chunk[0..<n])
            if content.count > RulesEngine.maximumRulesFileSize {
                return problem("is larger than \(RulesEngine.maximumRulesFileSize >> 20) MiB; it is ignored")
            }
        }
        return RuleList.parse(content, source: source, base: base)
    }

    static func openDirectory(_ path: [UInt8]) -> Int32 {
        (path + [0]).withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                open($0.baseAddress!, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            }
        }
    }

    /// Opens `relative` beneath `directoryFD` without following any symlink.
    static func openBeneath(_ directoryFD: Int32, _ relative: [UInt8], flags: Int32) -> Int32 {
        (relative + [0]).withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                clinux_open_beneath_nofollow(directoryFD, $0.baseAddress!, flags)
            }
        }
    }

    static func errorText(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    // MARK: - Used by the tree walk

    /// Decides the entries of one directory under a single lock: reads the directory's rules
    /// files through `directoryFD` (only those in `entries`), then returns, per entry, whether
    /// it is excluded. nil when `directory` itself turns out to be excluded.
    func decideEntries(of directory: SyncPath, directoryFD: Int32, entries: [(name: ArraySlice<UInt8>, isDirectory: Bool)]) -> [Bool]? {
        var pending: [RulesWarning] = []
        var present = Set<[UInt8]>()
        for entry in entries where rulesFileNames.contains(where: { $0.elementsEqual(entry.name) }) { present.insert(Array(entry.name)) }
        let result: [Bool]? = state.withLock { state in
            trimIfNeeded(&state)
            let primer = Primer(directoryFD: directoryFD, present: present)
            guard case .node(let node) = resolve(directory.bytes[...], state: &state, loadLastLists: true,
                                                 primer: primer, pending: &pending) else { return nil }
            let lists = node.lists!
            if globals.patterns.isEmpty && lists.allSatisfy({ $0.patterns.isEmpty }) {
                // No pattern applies here (no excludes, no rules file on the way): nothing to match.
                return [Bool](repeating: false, count: entries.count)
            }
            var out: [Bool] = []
            out.reserveCapacity(entries.count)
            var path = directory.bytes
            if !path.isEmpty { path.append(UInt8(ascii: "/")) }
            let basenameOffset = path.count
            for entry in entries {
                path.removeSubrange(basenameOffset...)
                path.append(contentsOf: entry.name)
                if entry.isDirectory, let existing = node.children[entry.name[...]] {
                    out.append(existing.excludedBy != nil)
                } else if entry.isDirectory {
                    // Decided without caching a node: a directory of 100,000 subdirectories
                    // would otherwise make 100,000 nodes at once (each is made when entered).
                    let match = lastMatch(path, basenameOffset: basenameOffset, isDirectory: true, lists: lists)
                    out.append(match?.negated == false)
                } else {
                    let match = lastMatch(path, basenameOffset: basenameOffset, isDirectory: false, lists: lists)
                    out.append(match?.negated == false)
                }
            }
            return out
        }
        report(pending)
        return result
    }
}
