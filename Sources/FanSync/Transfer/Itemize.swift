/// One difference between a source and its backup, as `fansync verify` reports it.
public struct VerifyDifference: Sendable, Equatable, Hashable {
    public enum Kind: String, Sendable, CaseIterable {
        /// On the source, not on the backup (or of another type there).
        case missing
        /// On the backup only.
        case extra
        /// Content differs (a regular file).
        case different
        /// Same content, other attributes: `details` names them.
        case metadata
    }

    public var kind: Kind
    public var path: SyncPath
    public var isDirectory: Bool
    /// What differs besides content: "perms", "owner", "group", "mtime", "symlink target",
    /// "device", "special file", "hard link", "atime", "crtime", "acl", "xattrs".
    public var details: [String]

    public init(kind: Kind, path: SyncPath, isDirectory: Bool = false, details: [String] = []) {
        self.kind = kind
        self.path = path
        self.isDirectory = isDirectory
        self.details = details
    }

    /// The path for a person: escaped as `SyncPath.displayString`, `/` after a directory,
    /// `./` for the root.
    public var displayPath: String {
        if path.isRoot { return "./" }
        return path.description + (isDirectory ? "/" : "")
    }

    /// `missing PATH`, `metadata PATH (perms, owner)`.
    public var line: String {
        kind == .metadata && !details.isEmpty
            ? "\(kind.rawValue) \(displayPath) (\(details.joined(separator: ", ")))"
            : "\(kind.rawValue) \(displayPath)"
    }
}

/// Reads rsync's itemized changes (`--out-format='fansync-verify %i %n'`) into differences.
///
/// Each line is the marker, the 11 characters of `%i` (`YXcstpoguax`, or `*deleting  `), a
/// space, and the name relative to the transfer root (a directory ends with `/`). rsync
/// writes a byte it does not print (a control byte, a newline, invalid UTF-8) as `\#ooo`
/// in octal, and writes the backslash of a literal `\#` followed by three digits as `\#134`,
/// so an escape is exactly `\#` and three digits and every name decodes to its bytes
/// without ambiguity. Lines without the marker (rsync's statistics, warnings) are not items.
public enum ItemizeParser {
    public static let marker = "fansync-verify "
    /// The `--out-format` that produces the lines this parser reads.
    public static let outFormat = "fansync-verify %i %n"

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// The differences in rsync's standard output, in rsync's order. Items that are not
    /// differences (a directory's modification time, an unchanged entry) are left out.
    public static func parse(_ output: [UInt8]) throws -> [VerifyDifference] {
        let marker = Array(Self.marker.utf8)
        var out: [VerifyDifference] = []
        for line in output.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            guard line.starts(with: marker) else { continue }
            if let d = try parseItem(line.dropFirst(marker.count)) { out.append(d) }
        }
        return out
    }

    /// One item, without the marker: `%i`, a space, the escaped name. Nil when the item is
    /// not a difference.
    public static func parseItem(_ item: ArraySlice<UInt8>) throws -> VerifyDifference? {
        let flags = Array(item.prefix(11))
        guard flags.count == 11, item.count > 12, item[item.startIndex + 11] == UInt8(ascii: " ") else {
            throw ParseError(description: "cannot read rsync's itemized line '\(SyncPath.displayString(Array(item)))'")
        }
        var name = decodeName(item.dropFirst(12))
        var isDirectory = false
        if name.count > 1, name.last == UInt8(ascii: "/") {
            name.removeLast()
            isDirectory = true
        }
        let path = SyncPath(normalizing: name)
        let y = flags[0], x = flags[1]
        if flags.starts(with: Array("*deleting".utf8)) {
            return VerifyDifference(kind: .extra, path: path, isDirectory: isDirectory)
        }
        if y == UInt8(ascii: "*") { return nil }   // another message: not an item
        guard "<>ch.".utf8.contains(y), "fdLDS".utf8.contains(x) else {
            throw ParseError(description: "cannot read rsync's itemized line '\(SyncPath.displayString(Array(item)))'")
        }
        isDirectory = x == UInt8(ascii: "d")
        let attributes = flags[2...]
        if attributes.allSatisfy({ $0 == UInt8(ascii: "+") }) {
            return VerifyDifference(kind: .missing, path: path, isDirectory: isDirectory)
        }
        // All blank: nothing differs (an unchanged entry, listed with -ii).
        if attributes.allSatisfy({ $0 == UInt8(ascii: " ") }) { return nil }
        if attributes.allSatisfy({ $0 == UInt8(ascii: "?") }) {
            return VerifyDifference(kind: .different, path: path, isDirectory: isDirectory, details: ["unknown"])
        }
        var details: [String] = []
        if flags[2] == UInt8(ascii: "c") && x != UInt8(ascii: "f") {
            switch x {
            case UInt8(ascii: "L"): details.append("symlink target")
            case UInt8(ascii: "D"): details.append("device")
            case UInt8(ascii: "S"): details.append("special file")
            default: break
            }
        }
        if y == UInt8(ascii: "h") { details.append("hard link") }
        // 't': the time differs and is preserved. 'T' (times not preserved) is no difference.
        // A directory's time is left out: on a live mirror it changes whenever an entry is
        // added or removed on either side, and says nothing about what the backup holds.
        if flags[4] == UInt8(ascii: "t") && !isDirectory { details.append("mtime") }
        if flags[5] == UInt8(ascii: "p") { details.append("perms") }
        if flags[6] == UInt8(ascii: "o") { details.append("owner") }
        if flags[7] == UInt8(ascii: "g") { details.append("group") }
        switch flags[8] {
        case UInt8(ascii: "u"): details.append("atime")
        case UInt8(ascii: "n"): details.append("crtime")
        case UInt8(ascii: "b"): details += ["atime", "crtime"]
        default: break
        }
        if flags[9] == UInt8(ascii: "a") { details.append("acl") }
        if flags[10] == UInt8(ascii: "x") { details.append("xattrs") }
        // A regular file rsync would send: with --checksum, its content differs.
        if x == UInt8(ascii: "f") && (y == UInt8(ascii: "<") || y == UInt8(ascii: ">")) {
            return VerifyDifference(kind: .different, path: path, isDirectory: false, details: details)
        }
        if details.isEmpty { return nil }
        return VerifyDifference(kind: .metadata, path: path, isDirectory: isDirectory, details: details)
    }

    /// rsync's `\#ooo` escapes back to bytes; every other byte is itself.
    public static func decodeName(_ text: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        let bytes = Array(text)
        var i = 0
        func digit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 4 < bytes.count, bytes[i + 1] == UInt8(ascii: "#"),
               digit(bytes[i + 2]), digit(bytes[i + 3]), digit(bytes[i + 4]) {
                let value = Int(bytes[i + 2] - 48) * 64 + Int(bytes[i + 3] - 48) * 8 + Int(bytes[i + 4] - 48)
                // rsync writes only octal digits of a byte; anything else is left as it is.
                if value <= 255 && bytes[(i + 2)...(i + 4)].allSatisfy({ $0 <= UInt8(ascii: "7") }) {
                    out.append(UInt8(value))
                    i += 5
                    continue
                }
            }
            out.append(bytes[i])
            i += 1
        }
        return out
    }

    /// rsync's escaping of a name (log.c, filtered_fwrite) in the C locale: for tests, and
    /// to show what the parser undoes.
    public static func encodeName(_ name: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        func digit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        for (i, b) in name.enumerated() {
            let literalEscape = b == UInt8(ascii: "\\") && i + 4 < name.count && name[i + 1] == UInt8(ascii: "#")
                && digit(name[i + 2]) && digit(name[i + 3]) && digit(name[i + 4])
            if literalEscape || (b != UInt8(ascii: "\t") && (b < 0x20 || b >= 0x7f)) {
                let octal = String(b, radix: 8)
                out += Array("\\#".utf8) + Array(String(repeating: "0", count: 3 - octal.count).utf8) + Array(octal.utf8)
            } else {
                out.append(b)
            }
        }
        return out
    }
}
