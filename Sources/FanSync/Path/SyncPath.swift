/// A path relative to a mirror's source root, kept as the bytes the kernel gave us.
///
/// File names on Linux are bytes, not text: a name with invalid UTF-8 must reach the
/// backup unchanged, so paths never pass through `String` on their way to rsync or ssh.
/// The root itself is the empty path; components are joined by a single `/`.
public struct SyncPath: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let bytes: [UInt8]

    public static let root = SyncPath(bytes: [])

    public init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// A path from text (tests, command-line arguments); leading and repeated `/` are dropped.
    public init(_ text: String) {
        self.init(normalizing: Array(text.utf8))
    }

    /// Drops empty and `.` components; keeps everything else byte for byte.
    public init(normalizing raw: [UInt8]) {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        for component in raw.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if component.count == 1 && component.first == UInt8(ascii: ".") { continue }
            if !out.isEmpty { out.append(UInt8(ascii: "/")) }
            out.append(contentsOf: component)
        }
        self.bytes = out
    }

    public var isRoot: Bool { bytes.isEmpty }

    // The bytes in one piece (the synthesized hash feeds them to the hasher one at a time).
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    public static func == (a: SyncPath, b: SyncPath) -> Bool { a.bytes == b.bytes }

    public var components: [ArraySlice<UInt8>] {
        bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true)
    }

    /// The last component (empty for the root).
    public var name: [UInt8] {
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return bytes }
        return Array(bytes[(slash + 1)...])
    }

    /// The parent directory (the root's parent is the root).
    public var parent: SyncPath {
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return .root }
        return SyncPath(bytes: Array(bytes[..<slash]))
    }

    public func appending(_ name: [UInt8]) -> SyncPath {
        if bytes.isEmpty { return SyncPath(bytes: name) }
        return SyncPath(bytes: bytes + [UInt8(ascii: "/")] + name)
    }

    public func appending(_ other: SyncPath) -> SyncPath {
        if other.isRoot { return self }
        return appending(other.bytes)
    }

    /// True when `self` is `ancestor` or lies inside it.
    public func isInside(_ ancestor: SyncPath) -> Bool {
        if ancestor.isRoot { return true }
        guard bytes.count >= ancestor.bytes.count else { return false }
        guard bytes.starts(with: ancestor.bytes) else { return false }
        return bytes.count == ancestor.bytes.count || bytes[ancestor.bytes.count] == UInt8(ascii: "/")
    }

    /// The path with `ancestor` replaced by `replacement`; nil when not inside `ancestor`.
    public func rebased(from ancestor: SyncPath, to replacement: SyncPath) -> SyncPath? {
        guard isInside(ancestor) else { return nil }
        if bytes.count == ancestor.bytes.count { return replacement }
        let rest = Array(bytes[(ancestor.bytes.count + (ancestor.isRoot ? 0 : 1))...])
        return replacement.appending(rest)
    }

    /// Byte order, so that a parent sorts before its children ("a" < "a/b" < "a0").
    public static func < (lhs: SyncPath, rhs: SyncPath) -> Bool {
        let n = min(lhs.bytes.count, rhs.bytes.count)
        for i in 0..<n where lhs.bytes[i] != rhs.bytes[i] {
            // '/' sorts before any other byte so a directory's entries stay together.
            let a = lhs.bytes[i] == UInt8(ascii: "/") ? 0 : Int(lhs.bytes[i]) + 1
            let b = rhs.bytes[i] == UInt8(ascii: "/") ? 0 : Int(rhs.bytes[i]) + 1
            return a < b
        }
        return lhs.bytes.count < rhs.bytes.count
    }

    /// For logs and messages only: invalid UTF-8 is shown escaped, never used to name a file.
    public var description: String { Self.displayString(bytes) }

    /// Printable text for a byte name: control bytes and invalid UTF-8 become `\xNN`.
    public static func displayString(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self),
           !text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            return text
        }
        var out = ""
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            let width = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 0
            if width > 1, i + width <= bytes.count,
               let text = String(validating: bytes[i..<(i + width)], as: UTF8.self) {
                out += text
                i += width
                continue
            }
            if b >= 0x20 && b < 0x7f && b != UInt8(ascii: "\\") {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out += "\\x" + String(b, radix: 16, uppercase: false).leftPadded(to: 2)
            }
            i += 1
        }
        return out
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
