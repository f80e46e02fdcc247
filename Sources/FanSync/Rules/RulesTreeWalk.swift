import CLinux

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An excluded path found by the tree walk, with its type as the walk saw it.
public struct ExcludedEntry: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let path: SyncPath
    public let isDirectory: Bool

    public init(path: SyncPath, isDirectory: Bool) {
        self.path = path
        self.isDirectory = isDirectory
    }

    public static func < (lhs: ExcludedEntry, rhs: ExcludedEntry) -> Bool { lhs.path < rhs.path }

    public var description: String { path.description + (isDirectory ? "/" : "") }
}

public struct RulesWalkError: Error, CustomStringConvertible {
    public let path: [UInt8]
    public let code: Int32

    public var description: String {
        "cannot read directory \(SyncPath.displayString(path)): \(RulesEngine.errorText(code))"
    }
}

extension RulesEngine {
    /// The topmost excluded paths under `directory` (relative to the source root), found by
    /// walking the real tree: never following a symlink, never entering an excluded
    /// directory (its content is excluded with it, and is not even listed). When `directory`
    /// itself is excluded the answer is `[directory]`. Sorted in `SyncPath` order.
    public func excludedTopmost(under directory: SyncPath) throws -> [SyncPath] {
        try excludedTopmostEntries(under: directory).map(\.path)
    }

    /// Like `excludedTopmost(under:)`, with each path's type (for `rsyncExcludeFile`).
    public func excludedTopmostEntries(under directory: SyncPath) throws -> [ExcludedEntry] {
        if !directory.isRoot && isExcluded(directory, isDirectory: true) {
            return [ExcludedEntry(path: directory, isDirectory: true)]
        }
        let rootFD = RulesEngine.openDirectory(sourceRoot)
        guard rootFD >= 0 else { throw RulesWalkError(path: sourceRoot, code: errno) }
        defer { close(rootFD) }
        var result: [ExcludedEntry] = []
        var stack: [SyncPath] = [directory]
        var first = true
        while let current = stack.popLast() {
            let fd: Int32
            if current.isRoot {
                fd = openat(rootFD, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            } else {
                fd = RulesEngine.openBeneath(rootFD, current.bytes, flags: O_RDONLY | O_DIRECTORY)
            }
            if fd < 0 {
                let code = errno
                // The starting directory must be readable; below it, what vanished or turned
                // into a symlink or a file meanwhile is simply not there any more.
                if first { throw RulesWalkError(path: current.isRoot ? sourceRoot : current.bytes, code: code) }
                continue
            }
            first = false
            let entries: [(name: [UInt8], isDirectory: Bool)]
            do {
                entries = try RulesEngine.readEntries(fd: fd, path: current)
            } catch {
                close(fd)
                throw error
            }
            let decisions = decideEntries(of: current, directoryFD: fd, entries: entries.map { ($0.name[...], $0.isDirectory) })
            close(fd)
            guard let decisions else { continue }
            for (entry, excluded) in zip(entries, decisions) {
                let child = current.appending(entry.name)
                if excluded {
                    result.append(ExcludedEntry(path: child, isDirectory: entry.isDirectory))
                } else if entry.isDirectory {
                    stack.append(child)
                }
            }
        }
        return result.sorted()
    }

    /// Reads a directory's entries with their types (d_type; lstat where the filesystem
    /// does not say). Symlinks are not directories. Takes no ownership of `fd`.
    static func readEntries(fd: Int32, path: SyncPath) throws -> [(name: [UInt8], isDirectory: Bool)] {
        let dup = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard dup >= 0 else { throw RulesWalkError(path: path.bytes, code: errno) }
        guard let dir = fdopendir(dup) else {
            let code = errno
            close(dup)
            throw RulesWalkError(path: path.bytes, code: code)
        }
        defer { closedir(dir) }
        var entries: [(name: [UInt8], isDirectory: Bool)] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw RulesWalkError(path: path.bytes, code: errno) }
                break
            }
            let name: [UInt8] = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                let bytes = raw.bindMemory(to: UInt8.self)
                let length = bytes.firstIndex(of: 0) ?? bytes.count
                return Array(bytes[0..<length])
            }
            if name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] { continue }
            var isDirectory: Bool
            switch Int32(entry.pointee.d_type) {
            case Int32(DT_DIR): isDirectory = true
            case Int32(DT_UNKNOWN):
                var info = stat()
                let ok = (name + [0]).withUnsafeBufferPointer { buffer in
                    buffer.withMemoryRebound(to: CChar.self) {
                        fstatat(fd, $0.baseAddress!, &info, AT_SYMLINK_NOFOLLOW)
                    }
                }
                if ok != 0 { continue }  // vanished meanwhile
                isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
            default: isDirectory = false
            }
            entries.append((name, isDirectory))
        }
        return entries
    }

    /// NUL-terminated rsync exclude rules for `rsync --from0 --exclude-from=FILE`, one per
    /// path, anchored at `base` (the transfer being `SRC/base/` to `DST/base/`) and exact:
    /// `*`, `?`, `[` and `\` in a name match only themselves. A path equal to `base` gives
    /// `*` (exclude everything); paths outside `base` are left out. Without a type, a rule
    /// matches a file or a directory of that name.
    public static func rsyncExcludeFile(_ paths: [SyncPath], base: SyncPath) -> [UInt8] {
        var out: [UInt8] = []
        for path in paths {
            appendRsyncRule(&out, path: path, isDirectory: false, base: base)
        }
        return out
    }

    /// As above, with a trailing `/` for directories (the rule then matches only a directory).
    public static func rsyncExcludeFile(_ entries: [ExcludedEntry], base: SyncPath) -> [UInt8] {
        var out: [UInt8] = []
        for entry in entries {
            appendRsyncRule(&out, path: entry.path, isDirectory: entry.isDirectory, base: base)
        }
        return out
    }

    private static func appendRsyncRule(_ out: inout [UInt8], path: SyncPath, isDirectory: Bool, base: SyncPath) {
        guard let relative = path.rebased(from: base, to: .root) else { return }
        if relative.isRoot {
            out.append(UInt8(ascii: "*"))
            out.append(0)
            return
        }
        out.append(contentsOf: rsyncPattern(relative.bytes, isDirectory: isDirectory))
        out.append(0)
    }

    /// One anchored, exact rsync pattern. rsync matches a pattern without `*`, `?` or `[`
    /// literally (a `\` is then an ordinary byte); with any of them, it uses wildmatch, where
    /// `\` escapes. So escaping is needed exactly when the path contains a wildcard byte.
    static func rsyncPattern(_ relative: [UInt8], isDirectory: Bool) -> [UInt8] {
        let wild = relative.contains { $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "[") }
        var pattern: [UInt8] = [UInt8(ascii: "/")]
        pattern.reserveCapacity(relative.count + 8)
        for byte in relative {
            if wild && (byte == UInt8(ascii: "*") || byte == UInt8(ascii: "?")
                        || byte == UInt8(ascii: "[") || byte == UInt8(ascii: "\\")) {
                pattern.append(UInt8(ascii: "\\"))
            }
            pattern.append(byte)
        }
        if isDirectory { pattern.append(UInt8(ascii: "/")) }
        return pattern
    }
}
