import XCTest
@testable import FanSync

/// The matcher and the line parser on their own: git's wildmatch cases, gitignore line
/// syntax, and the warnings for malformed lines.
final class RulesMatchTests: XCTestCase {
    func wild(_ pattern: String, _ text: String, pathname: Bool) -> Bool {
        wild(bytes(pattern), bytes(text), pathname: pathname)
    }

    func wild(_ pattern: [UInt8], _ text: [UInt8], pathname: Bool) -> Bool {
        (pattern + [0]).withUnsafeBufferPointer { p in
            (text + [0]).withUnsafeBufferPointer { t in
                Wildmatch.matches(p.baseAddress!, t.baseAddress!, pathname: pathname)
            }
        }
    }

    /// (text, pattern, matches with WM_PATHNAME, matches without), from git's t3070.
    static let wildmatchCases: [(String, String, Bool, Bool)] = [
        ("foo", "foo", true, true),
        ("foo", "bar", false, false),
        ("foo", "???", true, true),
        ("foo", "??", false, false),
        ("foo", "*", true, true),
        ("foo", "f*", true, true),
        ("foo", "*f", false, false),
        ("foo", "*foo*", true, true),
        ("foobar", "*ob*a*r*", true, true),
        ("aaaaaaabababab", "*ab", true, true),
        ("foo*", "foo\\*", true, true),
        ("foobar", "foo\\*bar", false, false),
        ("f\\oo", "f\\\\oo", true, true),
        ("ball", "*[al]?", true, true),
        ("ten", "[ten]", false, false),
        ("ten", "**[!te]", true, true),
        ("ten", "**[!ten]", false, false),
        ("ten", "t[a-g]n", true, true),
        ("ten", "t[!a-g]n", false, false),
        ("ton", "t[!a-g]n", true, true),
        ("ton", "t[^a-g]n", true, true),
        ("a]b", "a[]]b", true, true),
        ("a-b", "a[]-]b", true, true),
        ("a]b", "a[]-]b", true, true),
        ("aab", "a[]-]b", false, false),
        ("aab", "a[]a-]b", true, true),
        ("]", "]", true, true),
        // Slashes and **.
        ("foo/baz/bar", "foo*bar", false, true),
        ("foo/baz/bar", "foo**bar", false, true),
        ("foobazbar", "foo**bar", true, true),
        ("foo/baz/bar", "foo/**/bar", true, true),
        ("foo/b/a/z/bar", "foo/**/bar", true, true),
        ("foo/bar", "foo/**/bar", true, false),
        ("foo/bar", "foo?bar", false, true),
        ("foo/bar", "foo[/]bar", false, true),
        ("foo/bar", "foo[^a-z]bar", false, true),
        ("foo-bar", "f[^eiu][^eiu][^eiu][^eiu][^eiu]r", true, true),
        ("foo", "**/foo", true, false),
        ("bar/baz/foo", "**/foo", true, false),
        ("bar/baz/foo", "*/foo", false, true),
        ("foo/bar/baz", "**/bar*", false, true),
        ("deep/foo/bar/baz", "**/bar/*", true, true),
        ("deep/foo/bar/baz/", "**/bar/*", false, true),
        ("deep/foo/bar/baz/", "**/bar/**", true, true),
        ("deep/foo/bar", "**/bar/*", false, false),
        ("deep/foo/bar/", "**/bar/**", true, true),
        ("foo/bar/baz", "**/bar**", false, true),
        ("foo/bar/baz/x", "*/bar/**", true, true),
        ("deep/foo/bar/baz/x", "*/bar/**", false, true),
        ("deep/foo/bar/baz/x", "**/bar/*/*", true, true),
        // Classes.
        ("a1B", "[[:alpha:]][[:digit:]][[:upper:]]", true, true),
        ("a", "[[:digit:][:upper:][:space:]]", false, false),
        ("A", "[[:digit:][:upper:][:space:]]", true, true),
        (" ", "[[:digit:][:upper:][:space:]]", true, true),
        (".", "[[:digit:][:upper:][:space:]]", false, false),
        (".", "[[:digit:][:punct:][:space:]]", true, true),
        ("5", "[[:xdigit:]]", true, true),
        ("f", "[[:xdigit:]]", true, true),
        ("g", "[[:xdigit:]]", false, false),
        ("\t", "[[:blank:]]", true, true),
        ("\u{0B}", "[[:space:]]", false, false),  // git's isspace: no \v, no \f
        ("\u{0B}", "[[:cntrl:]]", true, true),
        ("a", "[[:foo:]]", false, false),           // unknown class: never matches
        ("x", "[[:alpha:]x", false, false),        // unterminated
        ("[", "[[]", true, true),
        ("[", "[[:]", true, true),                 // no ":]": "[" and ":" are plain members
        ("-", "[a-]", true, true),
        ("\\", "[\\\\]", true, true),
        ("foo", "foo\\", false, false),            // trailing backslash
        ("foo\\", "foo\\", false, false),
        ("-adobe-courier-bold-o-normal--12-120-75-75-m-70-iso8859-1", "-*-*-*-*-*-*-12-*-*-*-m-*-*-*", true, true),
        ("XXX/adobe/courier/bold/o/normal//12/120/75/75/m/70/iso8859/1", "XXX/*/*/*/*/*/*/12/*/*/*/m/*/*/*", true, true),
        ("abcd/abcdefg/abcdefghijk/abcdefghijklmnop.txt", "**/*a*b*g*n*t", true, false),
        ("abcd/abcdefg/abcdefghijk/abcdefghijklmnop.txtz", "**/*a*b*g*n*t", false, false),
    ]

    func testWildmatchCasesFromGit() {
        for (text, pattern, withPathname, without) in Self.wildmatchCases {
            XCTAssertEqual(wild(pattern, text, pathname: true), withPathname, "\(pattern.debugDescription) vs \(text.debugDescription) with WM_PATHNAME")
            // Without WM_PATHNAME git only ever matches basenames: check that domain.
            if !text.contains("/") && !pattern.contains("/") {
                XCTAssertEqual(wild(pattern, text, pathname: false), without, "\(pattern.debugDescription) vs \(text.debugDescription) without WM_PATHNAME")
            }
        }
    }

    func testWildmatchOnInvalidUTF8AndHighBytes() {
        XCTAssertTrue(wild([0x61, 0x2A], [0x61, 0xFF, 0xFE], pathname: true))
        XCTAssertTrue(wild([0x3F], [0xFF], pathname: true))
        XCTAssertFalse(wild(bytes("[[:alpha:]]"), [0xE9], pathname: true))
        XCTAssertTrue(wild(bytes("[!a]"), [0xE9], pathname: true))
        XCTAssertTrue(wild([0x5B, 0x80, 0x2D, 0xFF, 0x5D], [0xC3], pathname: true))  // [\x80-\xff]
    }

    // MARK: - Line syntax

    func patterns(_ content: String, base: String = "") -> [IgnorePattern] {
        RuleList.parse(bytes(content), source: bytes(".fansyncignore"), base: bytes(base)).patterns
    }

    func testCommentsBlankLinesAndLineNumbers() {
        let p = patterns("# comment\n\nfoo\n  # not a comment\n\\#hash\n")
        XCTAssertEqual(p.map { $0.text.display }, ["foo", "  # not a comment", "\\#hash"])
        XCTAssertEqual(p.map(\.line), [3, 4, 5])
    }

    func testTrailingSpacesAreTrimmedUnlessEscaped() {
        let p = patterns("foo   \nbar\\ \nbaz\\  \ntab\t\nx\\\\  \n   \n")
        XCTAssertEqual(p.map(\.text), ["foo", "bar\\ ", "baz\\ ", "tab\t", "x\\\\", ""].map(bytes))
    }

    func testCRLFBOMAndNUL() {
        let p = RuleList.parse([0xEF, 0xBB, 0xBF] + bytes("a\r\nb\rc\r\nd\0e\n\r\nlast"), source: [], base: []).patterns
        XCTAssertEqual(p.map { $0.text.display }, ["a", "b\\x0dc", "d", "", "last"])
        XCTAssertEqual(p.map(\.line), [1, 2, 3, 4, 5])
    }

    func testFlags() {
        let p = patterns("!foo/\n/a/b\n*.o\nx/\n**/y\nz")
        XCTAssertTrue(p[0].negated && p[0].directoryOnly && p[0].basenameOnly)
        XCTAssertEqual(p[0].text.display, "!foo/")
        XCTAssertFalse(p[1].basenameOnly)
        XCTAssertEqual(p[1].literalPrefix, 4)
        XCTAssertTrue(p[2].endsWith && p[2].basenameOnly && !p[2].negated)
        XCTAssertTrue(p[3].directoryOnly && p[3].basenameOnly)
        XCTAssertFalse(p[4].basenameOnly)
        XCTAssertEqual(p[5].literalPrefix, 1)
    }

    func testMalformedLinesAreWarningsWithFileAndLine() {
        let list = RuleList.parse(bytes("ok\n[ab\nfoo\\\n[[:nope:]]*\nfine[a]\n[[:alpha:]\n\\[ok]\n"),
                                  source: bytes("sub/.fansyncignore"), base: bytes("sub"))
        XCTAssertEqual(list.patterns.count, 7, "malformed lines are kept (they never match), not fatal")
        XCTAssertEqual(list.warnings.map(\.line), [2, 3, 4, 6])
        XCTAssertTrue(list.warnings.allSatisfy { $0.file == bytes("sub/.fansyncignore") })
        XCTAssertTrue(list.warnings[0].message.contains("unterminated"), list.warnings[0].message)
        XCTAssertTrue(list.warnings[1].message.contains("trailing backslash"), list.warnings[1].message)
        XCTAssertTrue(list.warnings[2].message.contains("[:nope:]"), list.warnings[2].message)
        XCTAssertEqual(list.warnings[0].description.prefix(21), "sub/.fansyncignore:2:")
    }

    func testMatchingThroughPatterns() {
        func m(_ line: String, _ path: String, dir: Bool = false, base: String = "") -> Bool {
            let p = IgnorePattern(line: bytes(line), lineNumber: 1, source: [], base: bytes(base))
            let raw = bytes(path)
            let offset = (raw.lastIndex(of: UInt8(ascii: "/")).map { $0 + 1 }) ?? 0
            return (raw + [0]).withUnsafeBufferPointer {
                p.matches($0.baseAddress!, raw.count, basenameOffset: offset, isDirectory: dir)
            }
        }
        XCTAssertTrue(m("*.o", "a/b/c.o"))
        XCTAssertTrue(m("foo/", "a/foo", dir: true))
        XCTAssertFalse(m("foo/", "a/foo"))
        XCTAssertTrue(m("/foo", "foo"))
        XCTAssertFalse(m("/foo", "a/foo"))
        XCTAssertTrue(m("/foo", "a/foo", base: "a"))
        XCTAssertFalse(m("/foo", "ab/foo", base: "a"))
        XCTAssertTrue(m("b/c", "a/b/c", base: "a"))
        XCTAssertFalse(m("b/c", "a/x/b/c", base: "a"))
        XCTAssertTrue(m("**/c", "a/x/b/c", base: "a"))
        XCTAssertTrue(m("a/**", "a/x/b"))
        XCTAssertFalse(m("a/**", "a"))
        XCTAssertTrue(m("a/**/b", "a/b"))
        XCTAssertTrue(m("a**/b", "ax/y/b"), "after a literal prefix, git's ** still crosses directories")
        XCTAssertFalse(m("x**/b", "ax/y/b"))
        XCTAssertTrue(m("trail\\ ", "trail "))
        XCTAssertTrue(m("\\!x", "!x"))
        XCTAssertTrue(m("\\#x", "#x"))
    }
}
