#if canImport(Glibc)
import Glibc
#endif

/// A target string that cannot be understood; `description` says what and how to fix it.
public struct TargetParseError: Error, CustomStringConvertible, Equatable {
    public var input: String
    public var message: String

    public init(input: String, message: String) {
        self.input = input
        self.message = message
    }

    public var description: String { "invalid target \"\(input)\": \(message)" }
}

/// Parses where a mirror goes: the command line's DST and the config's `target =`.
///
/// - `/abs/dir`, `rel/dir`, `./a:b`: a local directory. A relative path is made absolute
///   against the current directory (the config file's directory for a config). As in rsync,
///   a colon after a slash belongs to the path, so `./a:b` and `dir/x:y` are local.
/// - `[user@]host:dir` and `[user@]host:port:dir` (port all digits): `dir` on `host` over ssh,
///   relative to the login directory unless it starts with `/`; `host:` alone is the login
///   directory. To name a remote directory that starts with digits and a colon, write
///   `host:./2024:data`.
/// - `ssh://[user@]host[:port]/abs/dir` is the absolute `/abs/dir` (as in git);
///   `ssh://host/~/dir` is `dir` in the login directory.
/// - IPv6: `[::1]:dir`, `user@[fe80::1%eth0]:2222:dir`, `ssh://[::1]:22/dir`.
/// - `host::module` and `rsync://` (rsync daemon) are refused: fansync talks to the backup
///   through ssh only.
public enum TargetParser {
    /// Parses `text`, resolving a relative local path against the process's current directory.
    public static func parse(_ text: String) throws -> Target {
        try parse(bytes: Array(text.utf8), currentDirectory: nil)
    }

    public static func parse(_ text: String, currentDirectory: String) throws -> Target {
        try parse(bytes: Array(text.utf8), currentDirectory: Array(currentDirectory.utf8))
    }

    /// The byte form: a Lua string or a command-line argument need not be valid UTF-8.
    public static func parse(bytes input: [UInt8], currentDirectory: [UInt8]? = nil) throws -> Target {
        let shown = SyncPath.displayString(input)
        func fail(_ message: String) -> TargetParseError { TargetParseError(input: shown, message: message) }

        if input.isEmpty { throw fail("the target is empty") }
        if input.contains(0) { throw fail("a path cannot contain a NUL byte") }
        let colon = UInt8(ascii: ":"), slash = UInt8(ascii: "/")

        // scheme://
        if let schemeEnd = schemeLength(input) {
            let scheme = String(decoding: input[..<schemeEnd], as: UTF8.self).lowercased()
            let rest = Array(input[(schemeEnd + 3)...])
            switch scheme {
            case "ssh": return .ssh(try parseSSHURL(rest, fail: fail))
            case "rsync":
                throw fail("rsync daemon targets (rsync://) are not supported: fansync reaches the backup over ssh; write host:/dir or ssh://host/dir")
            case "file":
                guard rest.first == slash else { throw fail("a file:// URL needs an absolute path: file:///dir") }
                return .local(path: normalizeLocal(rest))
            default:
                throw fail("unsupported scheme \(scheme)://; use a local path, host:dir or ssh://host/dir")
            }
        }

        // rsync's rule: a colon before any slash separates a host; an IPv6 host is bracketed.
        var hostEnd: Int? = nil
        if let open = input.firstIndex(of: UInt8(ascii: "[")),
           !input[..<open].contains(slash), !input[..<open].contains(colon),
           open == 0 || input[open - 1] == UInt8(ascii: "@") {
            guard let close = input[open...].firstIndex(of: UInt8(ascii: "]")) else {
                throw fail("'[' opens an IPv6 address that is never closed")
            }
            guard close + 1 < input.count, input[close + 1] == colon else {
                throw fail("an IPv6 host must be followed by ':dir', as in [::1]:/backup")
            }
            hostEnd = close + 1
        } else if let c = input.firstIndex(of: colon), !input[..<c].contains(slash) {
            hostEnd = c
        }

        guard let hostEnd else {
            return .local(path: try makeLocal(input, currentDirectory: currentDirectory, fail: fail))
        }
        let hostPart = Array(input[..<hostEnd])
        var rest = Array(input[(hostEnd + 1)...])
        if hostPart.isEmpty {
            throw fail("the host before ':' is empty; for a local path that starts with ':' write ./\(shown)")
        }
        if rest.first == colon {
            throw fail("host::module is an rsync daemon target, which fansync does not support: it reaches the backup over ssh; write host:/dir")
        }
        if hostPart.count == 1, (rest.first == UInt8(ascii: "\\")) {
            throw fail("this looks like a Windows drive path; give a Linux path (a local path with a colon must contain a slash before it, e.g. ./C:\\x)")
        }
        let (user, host) = try splitUserHost(hostPart, fail: fail)
        var port: Int? = nil
        if let c = rest.firstIndex(of: colon), c > 0, rest[..<c].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            port = try parsePort(Array(rest[..<c]), fail: fail)
            rest = Array(rest[(c + 1)...])
        }
        return .ssh(SSHTarget(user: user, host: host, port: port, directory: try remoteDirectory(rest, fail: fail)))
    }

    /// Parses lsyncd's `host` (`[user@]host`, an IPv6 address bare or in brackets).
    public static func parseHost(_ text: String) throws -> (user: String?, host: String) {
        let bytes = Array(text.utf8)
        func fail(_ message: String) -> TargetParseError { TargetParseError(input: text, message: message) }
        if bytes.isEmpty { throw fail("the host is empty") }
        return try splitUserHost(bytes, fail: fail)
    }

    /// Normalizes a remote directory: `~/x` is `x` (the login directory), empty or `~` is `.`,
    /// repeated and trailing slashes are dropped.
    public static func remoteDirectory(_ raw: [UInt8], fail: (String) -> TargetParseError) throws -> [UInt8] {
        if raw.contains(0) { throw fail("a path cannot contain a NUL byte") }
        var dir = raw
        let tilde = UInt8(ascii: "~"), slash = UInt8(ascii: "/")
        if dir.first == tilde {
            if dir.count == 1 { dir = [] }
            else if dir[1] == slash { dir = Array(dir[2...]) }
            else { throw fail("~user paths are not supported; give the directory's absolute path") }
        }
        let absolute = dir.first == slash
        let parts = dir.split(separator: slash, omittingEmptySubsequences: true)
            .filter { !($0.count == 1 && $0.first == UInt8(ascii: ".")) }
        var out: [UInt8] = absolute ? [slash] : []
        for (i, p) in parts.enumerated() {
            if i > 0 { out.append(slash) }
            out.append(contentsOf: p)
        }
        if out.isEmpty { return [UInt8(ascii: ".")] }
        return out
    }

    // MARK: - Pieces

    /// Length of `scheme` when `input` starts with `scheme://` (letters, digits, + . -).
    private static func schemeLength(_ input: [UInt8]) -> Int? {
        guard let first = input.first, isAlpha(first) else { return nil }
        var i = 1
        while i < input.count, isAlpha(input[i]) || isDigit(input[i]) || input[i] == UInt8(ascii: "+")
                || input[i] == UInt8(ascii: ".") || input[i] == UInt8(ascii: "-") { i += 1 }
        guard input.count >= i + 3,
              input[i] == UInt8(ascii: ":"), input[i + 1] == UInt8(ascii: "/"), input[i + 2] == UInt8(ascii: "/")
        else { return nil }
        return i
    }

    private static func parseSSHURL(_ rest: [UInt8], fail: (String) -> TargetParseError) throws -> SSHTarget {
        let slash = UInt8(ascii: "/")
        // The authority ends at the first slash after any bracketed IPv6 address.
        var searchFrom = 0
        if let open = rest.firstIndex(of: UInt8(ascii: "[")), let close = rest[open...].firstIndex(of: UInt8(ascii: "]")),
           !rest[..<open].contains(slash) {
            searchFrom = close
        }
        guard let pathStart = rest[searchFrom...].firstIndex(of: slash) else {
            throw fail("an ssh:// target needs a directory: ssh://host/abs/dir, or ssh://host/~/dir inside the login directory")
        }
        var authority = Array(rest[..<pathStart])
        let path = Array(rest[pathStart...])
        var port: Int? = nil
        // host:port, where the host may be [v6].
        let hostStart = (authority.lastIndex(of: UInt8(ascii: "@")).map { $0 + 1 }) ?? 0
        if authority[hostStart...].first == UInt8(ascii: "[") {
            guard let close = authority[hostStart...].firstIndex(of: UInt8(ascii: "]")) else {
                throw fail("'[' opens an IPv6 address that is never closed")
            }
            if close + 1 < authority.count {
                guard authority[close + 1] == UInt8(ascii: ":") else {
                    throw fail("only ':port' may follow a bracketed IPv6 address")
                }
                port = try parsePort(Array(authority[(close + 2)...]), fail: fail)
                authority = Array(authority[...close])
            }
        } else if let c = authority[hostStart...].firstIndex(of: UInt8(ascii: ":")) {
            if authority[(c + 1)...].contains(UInt8(ascii: ":")) {
                throw fail("an IPv6 address in an ssh:// URL must be in brackets: ssh://[::1]:22/dir")
            }
            port = try parsePort(Array(authority[(c + 1)...]), fail: fail)
            authority = Array(authority[..<c])
        }
        if authority.count <= hostStart {
            throw fail("the host is empty")
        }
        let (user, host) = try splitUserHost(authority, fail: fail)
        // ssh://host/~/dir is in the login directory; anything else is absolute.
        var dir = path
        if dir.count >= 2, dir[1] == UInt8(ascii: "~") { dir = Array(dir[1...]) }
        return SSHTarget(user: user, host: host, port: port, directory: try remoteDirectory(dir, fail: fail))
    }

    private static func parsePort(_ digits: [UInt8], fail: (String) -> TargetParseError) throws -> Int {
        guard !digits.isEmpty, digits.allSatisfy(isDigit), digits.count <= 5,
              let port = Int(String(decoding: digits, as: UTF8.self)), (1...65535).contains(port) else {
            throw fail("the port \"\(SyncPath.displayString(digits))\" is not a number from 1 to 65535")
        }
        return port
    }

    private static func splitUserHost(_ part: [UInt8], fail: (String) -> TargetParseError) throws -> (String?, String) {
        var user: String? = nil
        var hostBytes = part
        if let at = part.lastIndex(of: UInt8(ascii: "@")) {
            let u = Array(part[..<at])
            guard !u.isEmpty else { throw fail("the user name before '@' is empty") }
            guard let s = String(validating: u, as: UTF8.self) else { throw fail("the user name is not valid UTF-8") }
            if u.first == UInt8(ascii: "-") { throw fail("a user name cannot start with '-'") }
            if u.contains(where: { $0 <= 0x20 || $0 == 0x7f || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "/") }) {
                throw fail("the user name \"\(SyncPath.displayString(u))\" contains a space, control character, ':' or '/'")
            }
            user = s
            hostBytes = Array(part[(at + 1)...])
        }
        if hostBytes.first == UInt8(ascii: "[") {
            guard hostBytes.last == UInt8(ascii: "]"), hostBytes.count > 2 else {
                throw fail("a bracketed IPv6 address must look like [::1]")
            }
            hostBytes = Array(hostBytes[1..<(hostBytes.count - 1)])
            guard hostBytes.allSatisfy({ isHexDigit($0) || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".")
                    || $0 == UInt8(ascii: "%") || isAlpha($0) || isDigit($0) }),
                  hostBytes.contains(UInt8(ascii: ":")) else {
                throw fail("\"[\(SyncPath.displayString(hostBytes))]\" is not an IPv6 address")
            }
            return (user, String(decoding: hostBytes, as: UTF8.self))
        }
        guard !hostBytes.isEmpty else { throw fail("the host is empty") }
        if hostBytes.first == UInt8(ascii: "-") { throw fail("a host name cannot start with '-'") }
        let bareIPv6 = hostBytes.filter { $0 == UInt8(ascii: ":") }.count >= 2
        for b in hostBytes {
            let ok = isAlpha(b) || isDigit(b) || b == UInt8(ascii: ".") || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
                || (bareIPv6 && (b == UInt8(ascii: ":") || b == UInt8(ascii: "%")))
            if !ok {
                throw fail("the host \"\(SyncPath.displayString(hostBytes))\" contains \"\(SyncPath.displayString([b]))\"; a host is a name or an address (for a local path containing ':' put a slash before the colon, e.g. ./\(SyncPath.displayString(part)):...)")
            }
        }
        return (user, String(decoding: hostBytes, as: UTF8.self))
    }

    private static func makeLocal(_ raw: [UInt8], currentDirectory: [UInt8]?, fail: (String) -> TargetParseError) throws -> [UInt8] {
        if raw.first == UInt8(ascii: "~") {
            throw fail("'~' is not expanded here (no shell is involved); write the absolute path, e.g. os.getenv(\"HOME\") .. \"/backup\" in a config")
        }
        if raw.first == UInt8(ascii: "/") { return normalizeLocal(raw) }
        let cwd = currentDirectory ?? currentWorkingDirectory()
        return normalizeLocal(cwd + [UInt8(ascii: "/")] + raw)
    }

    /// An absolute path with repeated slashes, `.` components and a trailing slash removed
    /// (`..` is kept: it is resolved by the kernel, through symbolic links, not by text).
    public static func normalizeLocal(_ path: [UInt8]) -> [UInt8] {
        let slash = UInt8(ascii: "/")
        var out: [UInt8] = []
        for part in path.split(separator: slash, omittingEmptySubsequences: true) {
            if part.count == 1 && part.first == UInt8(ascii: ".") { continue }
            out.append(slash)
            out.append(contentsOf: part)
        }
        return out.isEmpty ? [slash] : out
    }

    static func currentWorkingDirectory() -> [UInt8] {
        guard let p = getcwd(nil, 0) else { return [UInt8(ascii: "/")] }
        defer { free(p) }
        return Array(UnsafeRawBufferPointer(start: p, count: strlen(p)))
    }

    private static func isAlpha(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) }
    private static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    private static func isHexDigit(_ b: UInt8) -> Bool { isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66) }
}
