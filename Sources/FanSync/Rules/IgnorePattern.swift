/// One line of a rules file, parsed as git's `parse_path_pattern` does (dir.c).
struct IgnorePattern: Sendable {
    /// The line as written, after git's trimming (leading `!` and trailing `/` included):
    /// what `check-ignore -v` prints.
    let text: [UInt8]
    /// The pattern proper (no `!`, no trailing `/`), followed by one NUL byte.
    let body: [UInt8]
    /// Bytes of `body` before the NUL (git's `patternlen`).
    let length: Int
    /// Length of the leading part without glob characters (git's `nowildcardlen`).
    let literalPrefix: Int
    let negated: Bool
    let directoryOnly: Bool
    /// No `/` in the pattern (other than a trailing one): matched against the basename.
    let basenameOnly: Bool
    /// `*literal`: a suffix comparison.
    let endsWith: Bool
    /// Line number in its file (1-based).
    let line: Int
    /// The rules file (relative to the source root), or `<exclude>` for global patterns.
    let source: [UInt8]
    /// The directory the rules file is in, relative to the source root, without a trailing
    /// slash ("" for the root).
    let base: [UInt8]

    init(line text: [UInt8], lineNumber: Int, source: [UInt8], base: [UInt8]) {
        self.text = text
        self.line = lineNumber
        self.source = source
        self.base = base
        var p = text[...]
        var negated = false
        if p.first == UInt8(ascii: "!") {
            negated = true
            p = p.dropFirst()
        }
        var len = p.count
        var directoryOnly = false
        if len > 0 && p.last == UInt8(ascii: "/") {
            len -= 1
            directoryOnly = true
        }
        let start = p.startIndex
        let proper = p[start..<(start + len)]
        self.negated = negated
        self.directoryOnly = directoryOnly
        self.basenameOnly = !proper.contains(UInt8(ascii: "/"))
        // git computes these on the text that still has its trailing slash.
        self.literalPrefix = min(IgnorePattern.simpleLength(p), len)
        self.endsWith = p.first == UInt8(ascii: "*") && IgnorePattern.simpleLength(p.dropFirst()) == p.count - 1
        self.length = len
        self.body = Array(proper) + [0]
    }

    /// git's `simple_length`: bytes before the first glob-special byte.
    static func simpleLength(_ s: ArraySlice<UInt8>) -> Int {
        var n = 0
        for c in s {
            if Wildmatch.isGlobSpecial(c) { return n }
            n += 1
        }
        return n
    }

    /// git's `match_basename`. `basename` is NUL-terminated with `basenameLength` bytes.
    func matchBasename(_ basename: UnsafePointer<UInt8>, _ basenameLength: Int) -> Bool {
        body.withUnsafeBufferPointer { buffer in
            let pattern = buffer.baseAddress!
            if literalPrefix == length {
                return length == basenameLength && memoryEqual(pattern, basename, length)
            } else if endsWith {
                let tail = length - 1
                return tail <= basenameLength
                    && memoryEqual(pattern + 1, basename + (basenameLength - tail), tail)
            } else {
                return Wildmatch.matches(pattern, basename, pathname: false)
            }
        }
    }

    /// git's `match_pathname`, with the pattern's base directory implicitly in front of it.
    /// `pathname` is NUL-terminated with `pathLength` bytes.
    func matchPathname(_ pathname: UnsafePointer<UInt8>, _ pathLength: Int) -> Bool {
        body.withUnsafeBufferPointer { buffer in
            var pattern = buffer.baseAddress!
            var patternLength = length
            var prefix = literalPrefix
            if pattern.pointee == UInt8(ascii: "/") {
                pattern += 1
                patternLength -= 1
                prefix -= 1
            }
            let baseLength = base.count
            if pathLength < baseLength + 1 { return false }
            if baseLength > 0 && pathname[baseLength] != UInt8(ascii: "/") { return false }
            let baseMatches = base.withUnsafeBufferPointer { b in
                baseLength == 0 || memoryEqual(b.baseAddress!, pathname, baseLength)
            }
            if !baseMatches { return false }
            var nameLength = baseLength > 0 ? pathLength - baseLength - 1 : pathLength
            var name = pathname + (pathLength - nameLength)
            if prefix > 0 {
                if prefix > nameLength { return false }
                if !memoryEqual(pattern, name, prefix) { return false }
                pattern += prefix
                patternLength -= prefix
                name += prefix
                nameLength -= prefix
                if patternLength == 0 && nameLength == 0 { return true }
            }
            return Wildmatch.matches(pattern, name, pathname: true)
        }
    }

    /// Whether this pattern matches `pathname` (NUL-terminated, `pathLength` bytes, the
    /// basename starting at `basenameOffset`), git's `last_matching_pattern_from_list` test.
    @inline(__always)
    func matches(_ pathname: UnsafePointer<UInt8>, _ pathLength: Int, basenameOffset: Int, isDirectory: Bool) -> Bool {
        if directoryOnly && !isDirectory { return false }
        if basenameOnly {
            return matchBasename(pathname + basenameOffset, pathLength - basenameOffset)
        }
        return matchPathname(pathname, pathLength)
    }

    /// Why git will never match this pattern, if it is malformed: an unterminated `[` class,
    /// an unknown `[:class:]`, a trailing backslash. nil when well formed.
    var malformation: String? {
        IgnorePattern.lint(Array(body.dropLast()))
    }

    /// Walks a pattern the way wildmatch consumes it, looking for what makes it abort.
    static func lint(_ b: [UInt8]) -> String? {
        let n = b.count
        func at(_ i: Int) -> UInt8 { i < n ? b[i] : 0 }
        var i = 0
        while i < n {
            let c = b[i]
            if c == UInt8(ascii: "\\") {
                if i + 1 >= n {
                    return "trailing backslash: the pattern can never match (git ignores it the same way)"
                }
                i += 2
                continue
            }
            if c != UInt8(ascii: "[") {
                i += 1
                continue
            }
            let open = i
            let unterminated = "unterminated character class \"[\" at byte \(open + 1): the pattern can never match (git ignores it the same way; write \\[ for a literal [)"
            i += 1
            var pc = at(i)
            if pc == UInt8(ascii: "!") || pc == UInt8(ascii: "^") {
                i += 1
                pc = at(i)
            }
            var prev: UInt8 = 0
            while true {
                if pc == 0 { return unterminated }
                if pc == UInt8(ascii: "\\") {
                    i += 1
                    pc = at(i)
                    if pc == 0 { return unterminated }
                } else if pc == UInt8(ascii: "-") && prev != 0 && at(i + 1) != 0 && at(i + 1) != UInt8(ascii: "]") {
                    i += 1
                    pc = at(i)
                    if pc == UInt8(ascii: "\\") {
                        i += 1
                        pc = at(i)
                        if pc == 0 { return unterminated }
                    }
                    pc = 0
                } else if pc == UInt8(ascii: "[") && at(i + 1) == UInt8(ascii: ":") {
                    let s = i + 2
                    var j = s
                    while at(j) != 0 && at(j) != UInt8(ascii: "]") { j += 1 }
                    if at(j) == 0 { return unterminated }
                    let len = j - s - 1
                    if len < 0 || b[j - 1] != UInt8(ascii: ":") {
                        pc = UInt8(ascii: "[")  // an ordinary "[" in the set
                    } else {
                        let name = b[s..<(s + len)]
                        if CharacterClass(nameBytes: name) == nil {
                            return "unknown character class \"[:\(SyncPath.displayString(Array(name))):]\": the pattern can never match (git ignores it the same way)"
                        }
                        i = j
                        pc = 0
                    }
                }
                prev = pc
                i += 1
                pc = at(i)
                if pc == UInt8(ascii: "]") { break }
            }
            i += 1
        }
        return nil
    }
}

@inline(__always)
func memoryEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ count: Int) -> Bool {
    var i = 0
    while i < count {
        if a[i] != b[i] { return false }
        i += 1
    }
    return true
}

/// A parsed rules file (or the global patterns): its patterns in file order and the
/// problems found in it.
final class RuleList: Sendable {
    let source: [UInt8]
    let patterns: [IgnorePattern]
    let warnings: [RulesWarning]

    init(source: [UInt8], patterns: [IgnorePattern], warnings: [RulesWarning]) {
        self.source = source
        self.patterns = patterns
        self.warnings = warnings
    }

    /// Parses a rules file's content as git's `add_patterns_from_buffer` does: a UTF-8 BOM
    /// is skipped, lines end at `\n` (a `\r` before it is dropped), empty lines and lines
    /// starting with `#` are skipped, a line ends at a NUL byte, unescaped trailing spaces
    /// are trimmed.
    static func parse(_ content: [UInt8], source: [UInt8], base: [UInt8]) -> RuleList {
        var patterns: [IgnorePattern] = []
        var warnings: [RulesWarning] = []
        var start = 0
        if content.count >= 3 && content[0] == 0xEF && content[1] == 0xBB && content[2] == 0xBF {
            start = 3
        }
        var lineNumber = 1
        var entry = start
        let n = content.count
        var i = start
        while i <= n {
            // git appends a newline to a file that does not end with one.
            let atEnd = i == n
            if atEnd && (n == start || content[n - 1] == UInt8(ascii: "\n")) { break }
            if atEnd || content[i] == UInt8(ascii: "\n") {
                if entry != i && content[entry] != UInt8(ascii: "#") {
                    var end = i
                    if content[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                    var line = Array(content[entry..<end])
                    if let nul = line.firstIndex(of: 0) { line.removeSubrange(nul...) }
                    trimTrailingSpaces(&line)
                    let pattern = IgnorePattern(line: line, lineNumber: lineNumber, source: source, base: base)
                    if let problem = pattern.malformation {
                        warnings.append(RulesWarning(file: source, line: lineNumber, message: problem))
                    }
                    patterns.append(pattern)
                }
                lineNumber += 1
                entry = i + 1
            }
            i += 1
        }
        return RuleList(source: source, patterns: patterns, warnings: warnings)
    }

    /// git's `trim_trailing_spaces`: spaces (not tabs) at the end, unless escaped by `\`.
    static func trimTrailingSpaces(_ line: inout [UInt8]) {
        var lastSpace: Int? = nil
        var i = 0
        while i < line.count {
            switch line[i] {
            case UInt8(ascii: " "):
                if lastSpace == nil { lastSpace = i }
            case UInt8(ascii: "\\"):
                i += 1
                if i >= line.count { return }
                lastSpace = nil
            default:
                lastSpace = nil
            }
            i += 1
        }
        if let cut = lastSpace { line.removeSubrange(cut...) }
    }
}

/// A problem in a rules file or in the global patterns; never fatal.
public struct RulesWarning: Sendable, Equatable, CustomStringConvertible {
    /// The rules file, relative to the source root (`<exclude>` for the global patterns).
    public let file: [UInt8]
    /// 1-based line number (0 when the problem concerns the whole file).
    public let line: Int
    public let message: String

    public init(file: [UInt8], line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        line > 0
            ? "\(SyncPath.displayString(file)):\(line): \(message)"
            : "\(SyncPath.displayString(file)): \(message)"
    }
}

/// The rule that decides a path, as `git check-ignore -v` reports it.
public struct RuleMatch: Sendable, Equatable, CustomStringConvertible {
    /// The rules file, relative to the source root, or `<exclude>` for a global pattern.
    public let source: [UInt8]
    /// 1-based line number in `source` (for global patterns: the position in the list).
    public let line: Int
    /// The pattern as written (after git's trimming), with its leading `!` if any.
    public let pattern: [UInt8]
    /// A `!` pattern: the path is explicitly not excluded.
    public let negated: Bool

    public static let globalSource: [UInt8] = Array("<exclude>".utf8)

    public init(source: [UInt8], line: Int, pattern: [UInt8], negated: Bool) {
        self.source = source
        self.line = line
        self.pattern = pattern
        self.negated = negated
    }

    init(_ p: IgnorePattern) {
        self.init(source: p.source, line: p.line, pattern: p.text, negated: p.negated)
    }

    public var isGlobal: Bool { source == RuleMatch.globalSource }

    /// `source:line:pattern`, as git prints it (display form: invalid UTF-8 escaped).
    public var description: String {
        "\(SyncPath.displayString(source)):\(line):\(SyncPath.displayString(pattern))"
    }
}
