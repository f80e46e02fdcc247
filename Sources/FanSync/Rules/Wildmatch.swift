/// A byte-for-byte port of git's `wildmatch.c` (the matcher behind gitignore patterns).
///
/// Both the pattern and the text are NUL-terminated byte strings, exactly as git sees them;
/// every quirk is kept on purpose (the `**` rules, classes, what an unterminated class or a
/// trailing backslash does), because the rules engine must answer as `git check-ignore` does.
enum Wildmatch {
    static let match: Int32 = 0
    static let noMatch: Int32 = 1
    static let abortAll: Int32 = -1
    static let abortToStarStar: Int32 = -2

    private static let nul: UInt8 = 0
    private static let slash = UInt8(ascii: "/")
    private static let star = UInt8(ascii: "*")
    private static let question = UInt8(ascii: "?")
    private static let backslash = UInt8(ascii: "\\")
    private static let lbracket = UInt8(ascii: "[")
    private static let rbracket = UInt8(ascii: "]")
    private static let bang = UInt8(ascii: "!")
    private static let caret = UInt8(ascii: "^")
    private static let dash = UInt8(ascii: "-")
    private static let colon = UInt8(ascii: ":")

    /// git's `is_glob_special`: `*`, `?`, `[` and `\`.
    @inline(__always)
    static func isGlobSpecial(_ c: UInt8) -> Bool {
        c == star || c == question || c == lbracket || c == backslash
    }

    /// Matches NUL-terminated `pattern` against NUL-terminated `text`. `pathname` is git's
    /// WM_PATHNAME: `*`, `?` and classes never match `/`, and `**` gets its special meaning.
    static func matches(_ pattern: UnsafePointer<UInt8>, _ text: UnsafePointer<UInt8>, pathname: Bool) -> Bool {
        dowild(pattern, text, pathname) == match
    }

    static func dowild(_ patternStart: UnsafePointer<UInt8>, _ textStart: UnsafePointer<UInt8>, _ pathname: Bool) -> Int32 {
        let pattern = patternStart
        var p = patternStart
        var text = textStart
        while true {
            var pCh = p.pointee
            if pCh == nul { break }
            var tCh = text.pointee
            if tCh == nul && pCh != star { return abortAll }
            switch pCh {
            case backslash:
                // Literal match with the following byte; a trailing backslash compares
                // the NUL with a non-NUL text byte and fails.
                p += 1
                pCh = p.pointee
                if tCh != pCh { return noMatch }
            case question:
                if pathname && tCh == slash { return noMatch }
            case star:
                var matchSlash: Bool
                p += 1
                if p.pointee == star {
                    let atStartOrAfterSlash = pattern.distance(to: p) < 2 || (p - 2).pointee == slash
                    repeat { p += 1 } while p.pointee == star
                    if atStartOrAfterSlash
                        && (p.pointee == nul || p.pointee == slash
                            || (p[0] == backslash && p[1] == slash)) {
                        // "foo/**/bar" also matches "foo/bar": try "**/" as matching nothing.
                        if p.pointee == slash && dowild(p + 1, text, pathname) == match {
                            return match
                        }
                        matchSlash = true
                    } else {
                        matchSlash = false
                    }
                } else {
                    matchSlash = !pathname
                }
                if p.pointee == nul {
                    // Trailing "**" matches everything; trailing "*" only if no slash remains.
                    if !matchSlash {
                        var t = text
                        while t.pointee != nul {
                            if t.pointee == slash { return noMatch }
                            t += 1
                        }
                    }
                    return match
                } else if !matchSlash && p.pointee == slash {
                    // One star followed by a slash matches up to the next directory.
                    var t = text
                    while t.pointee != nul && t.pointee != slash { t += 1 }
                    if t.pointee == nul { return noMatch }
                    text = t
                    // The slash is consumed by the loop's increment below.
                } else {
                    while true {
                        if tCh == nul { break }
                        if !isGlobSpecial(p.pointee) {
                            pCh = p.pointee
                            while true {
                                tCh = text.pointee
                                if tCh == nul || (!matchSlash && tCh == slash) { break }
                                if tCh == pCh { break }
                                text += 1
                            }
                            if tCh != pCh { return noMatch }
                        }
                        let matched = dowild(p, text, pathname)
                        if matched != noMatch {
                            if !matchSlash || matched != abortToStarStar { return matched }
                        } else if !matchSlash && tCh == slash {
                            return abortToStarStar
                        }
                        text += 1
                        tCh = text.pointee
                    }
                    return abortAll
                }
            case lbracket:
                p += 1
                pCh = p.pointee
                if pCh == caret { pCh = bang }
                let negated = pCh == bang
                if negated {
                    p += 1
                    pCh = p.pointee
                }
                var prevCh: UInt8 = 0
                var matched = false
                while true {
                    if pCh == nul { return abortAll }
                    if pCh == backslash {
                        p += 1
                        pCh = p.pointee
                        if pCh == nul { return abortAll }
                        if tCh == pCh { matched = true }
                    } else if pCh == dash && prevCh != 0 && p[1] != nul && p[1] != rbracket {
                        p += 1
                        pCh = p.pointee
                        if pCh == backslash {
                            p += 1
                            pCh = p.pointee
                            if pCh == nul { return abortAll }
                        }
                        if tCh <= pCh && tCh >= prevCh { matched = true }
                        pCh = 0  // so that prevCh becomes 0
                    } else if pCh == lbracket && p[1] == colon {
                        p += 2
                        let s = p
                        while p.pointee != nul && p.pointee != rbracket { p += 1 }
                        pCh = p.pointee
                        if pCh == nul { return abortAll }
                        let i = s.distance(to: p) - 1
                        if i < 0 || p[-1] != colon {
                            // No ":]": the "[" is an ordinary member of the set.
                            p = s - 2
                            pCh = lbracket
                            if tCh == pCh { matched = true }
                        } else {
                            guard let cls = CharacterClass(name: UnsafeBufferPointer(start: s, count: i)) else {
                                return abortAll  // malformed [:class:]
                            }
                            if cls.contains(tCh) { matched = true }
                            pCh = 0
                        }
                    } else if tCh == pCh {
                        matched = true
                    }
                    prevCh = pCh
                    p += 1
                    pCh = p.pointee
                    if pCh == rbracket { break }
                }
                if matched == negated || (pathname && tCh == slash) { return noMatch }
            default:
                if tCh != pCh { return noMatch }
            }
            text += 1
            p += 1
        }
        return text.pointee != nul ? noMatch : match
    }
}

/// The POSIX classes wildmatch knows, with git's own ctype table (`sane_ctype`): ASCII only,
/// `[:space:]` is tab, newline, carriage return and space (not \v or \f).
enum CharacterClass: CaseIterable {
    case alnum, alpha, blank, cntrl, digit, graph, lower, print, punct, space, upper, xdigit

    static let names: [(String, CharacterClass)] = [
        ("alnum", .alnum), ("alpha", .alpha), ("blank", .blank), ("cntrl", .cntrl),
        ("digit", .digit), ("graph", .graph), ("lower", .lower), ("print", .print),
        ("punct", .punct), ("space", .space), ("upper", .upper), ("xdigit", .xdigit),
    ]

    init?(name: UnsafeBufferPointer<UInt8>) {
        for (text, cls) in Self.names where text.utf8.elementsEqual(name) {
            self = cls
            return
        }
        return nil
    }

    init?<C: Collection>(nameBytes: C) where C.Element == UInt8 {
        for (text, cls) in Self.names where text.utf8.elementsEqual(nameBytes) {
            self = cls
            return
        }
        return nil
    }

    func contains(_ c: UInt8) -> Bool {
        let isUpper = c >= 0x41 && c <= 0x5A
        let isLower = c >= 0x61 && c <= 0x7A
        let isDigit = c >= 0x30 && c <= 0x39
        switch self {
        case .alnum: return isUpper || isLower || isDigit
        case .alpha: return isUpper || isLower
        case .blank: return c == 0x20 || c == 0x09
        case .cntrl: return c < 0x20 || c == 0x7F
        case .digit: return isDigit
        case .graph: return c >= 0x21 && c <= 0x7E
        case .lower: return isLower
        case .print: return c >= 0x20 && c <= 0x7E
        case .punct:
            return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40)
                || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E)
        case .space: return c == 0x09 || c == 0x0A || c == 0x0D || c == 0x20
        case .upper: return isUpper
        case .xdigit: return isDigit || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
        }
    }
}
