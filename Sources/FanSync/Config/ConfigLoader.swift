#if canImport(Glibc)
import Glibc
#endif

/// Where one mirror was declared (for logs, status and `check-config`).
public struct ConfigOrigin: Sendable, Equatable {
    /// The file that made the `sync{}` call (the config or a module it required).
    public var file: String
    public var line: Int?
    /// 1-based number of the `sync{}` call.
    public var index: Int
    /// The preset as written: "rsync", "rsyncssh" or "rssh".
    public var preset: String
}

/// A config file, understood: the daemon's settings and one `MirrorConfig` per `sync{}`.
public struct LoadedConfig: Sendable {
    public var settings: DaemonSettings
    public var mirrors: [MirrorConfig]
    /// `origins[i]` is where `mirrors[i]` was declared.
    public var origins: [ConfigOrigin] = []
    /// Things that load but deserve a look (a source that does not exist yet, host key checking
    /// turned off, an lsyncd option that fansync records but does not need).
    public var warnings: [String] = []

    public init(settings: DaemonSettings, mirrors: [MirrorConfig]) {
        self.settings = settings
        self.mirrors = mirrors
    }
}

/// Loads a config written in Lua with lsyncd's vocabulary (see docs/config.md), in a sandbox.
/// Either every `sync{}` and `settings` key is understood, or nothing is returned: an unknown
/// key, a wrong type, a missing key or an lsyncd feature fansync refuses throws a `ConfigError`
/// (with every problem found in `moreErrors`).
public enum ConfigLoader {
    public static func load(path: String) throws -> LoadedConfig {
        let absolute = String(decoding: TargetParser.normalizeLocal(
            path.hasPrefix("/") ? Array(path.utf8)
                : TargetParser.currentWorkingDirectory() + [UInt8(ascii: "/")] + Array(path.utf8)), as: UTF8.self)
        let source: [UInt8]
        do {
            source = try readFile(absolute)
        } catch let e as FileReadError {
            throw ConfigError(file: path, message: "cannot read the config: \(e.reason)")
        }
        let directory = absolute.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return try load(sourceBytes: source, chunkName: absolute, directory: directory.isEmpty ? "/" : directory)
    }

    /// Loads config text. `chunkName` names it in errors (a path); `directory` is where relative
    /// paths (source, local targets, excludeFrom, required modules) are resolved.
    public static func load(source: String, chunkName: String, directory: String) throws -> LoadedConfig {
        try load(sourceBytes: Array(source.utf8), chunkName: chunkName, directory: directory)
    }

    public static func load(sourceBytes: [UInt8], chunkName: String, directory: String) throws -> LoadedConfig {
        try load(sourceBytes: sourceBytes, chunkName: chunkName, directory: directory,
                 instructionLimit: LuaSandbox.instructionLimit)
    }

    /// `instructionLimit`: Lua VM instructions the config may run (an endless loop fails).
    static func load(sourceBytes: [UInt8], chunkName: String, directory: String, instructionLimit: Int32) throws -> LoadedConfig {
        let sandbox = try LuaSandbox(directory: directory)
        let failure = sandbox.run(source: sourceBytes, path: chunkName, instructionLimit: instructionLimit)
        let chunks = sandbox.chunks()
        if let failure {
            throw luaError(failure, chunks: chunks, mainPath: chunkName)
        }
        var builder = ConfigBuilder(mainPath: chunkName, directory: directory, chunks: chunks)
        let result = builder.build(sandbox.records())
        if var first = builder.errors.first {
            first.moreErrors = Array(builder.errors.dropFirst())
            throw first
        }
        return result
    }

    /// Turns Lua's "chunkid:line: message" into a ConfigError with the real file name.
    static func luaError(_ message: String, chunks: [String: LuaChunk], mainPath: String) -> ConfigError {
        var text = message
        var file = mainPath
        var line: Int? = nil
        // Longest ids first so "fansync-module#12" is not taken for "fansync-module#1".
        for (id, chunk) in chunks.sorted(by: { $0.key.count > $1.key.count }) {
            if text.hasPrefix(id + ":") {
                let rest = text.dropFirst(id.count + 1)
                let digits = rest.prefix(while: { $0.isNumber })
                if !digits.isEmpty, rest.dropFirst(digits.count).hasPrefix(": ") {
                    file = chunk.path
                    line = Int(digits)
                    text = String(rest.dropFirst(digits.count + 2))
                }
            }
        }
        for (id, chunk) in chunks.sorted(by: { $0.key.count > $1.key.count }) {
            text = text.replacingAll(id + ":", with: chunk.path + ":")
        }
        return ConfigError(file: file, line: line, message: text)
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.fansyncRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    func fansyncRange(of target: String) -> Range<Substring.Index>? {
        let t = Array(target.utf8)
        let u = self.utf8
        guard !t.isEmpty, u.count >= t.count else { return nil }
        var i = u.startIndex
        while i != u.endIndex {
            if u[i...].starts(with: t) {
                let end = u.index(i, offsetBy: t.count)
                return i..<end
            }
            i = u.index(after: i)
        }
        return nil
    }
}

struct FileReadError: Error { var reason: String }

/// Reads a whole regular file.
func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { throw FileReadError(reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var st = stat()
    if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
        throw FileReadError(reason: "it is a directory")
    }
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw FileReadError(reason: String(cString: strerror(errno)))
        }
        if n == 0 { break }
        out.append(contentsOf: buffer[0..<n])
        if out.count > 64 << 20 { throw FileReadError(reason: "larger than 64 MiB") }
    }
    return out
}
