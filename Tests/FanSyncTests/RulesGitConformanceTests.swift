import Foundation
import XCTest
@testable import FanSync

/// The rules engine against git itself: the same trees and rules files, every path asked of
/// `git check-ignore --no-index -v -n --stdin -z` and of the engine, answers compared field
/// by field (rules file, line, pattern as written, or no match).
final class RulesGitConformanceTests: XCTestCase {
    /// A tree with `.gitignore` rules files (so git reads them) and global patterns (written
    /// to `.git/info/exclude`, which is what git ranks below every `.gitignore`).
    struct Scenario {
        var name: String
        var directories: [[UInt8]] = []
        var files: [[UInt8]] = []
        var rules: [[UInt8]: [UInt8]] = [:]
        var globals: [String] = []
        var symlinks: [(path: [UInt8], target: [UInt8])] = []
        /// Paths that do not exist (git and the engine then treat them as files).
        var missing: [[UInt8]] = []
    }

    struct Answer: Equatable, CustomStringConvertible {
        var source: [UInt8]
        var line: String
        var pattern: [UInt8]
        var description: String {
            source.isEmpty ? "(no match)" : "\(source.display):\(line):\(pattern.display)"
        }
    }

    static let gitignore = bytes(".gitignore")
    /// What the compared answers contained (to make sure the cases exercise something).
    var matchedPaths = 0
    var negatedMatches = 0
    static let infoExclude = bytes(".git/info/exclude")

    // MARK: - The harness

    /// A tree on disk inside a fresh `git init` repository; rules files come and go per case.
    final class Workspace {
        let root: [UInt8]
        let repo: [UInt8]
        let env: [String: String]
        /// Every path of the tree (not the rules files), with its type.
        var types: [[UInt8]: Bool] = [:]
        var missing: [[UInt8]] = []
        var writtenRules: [[UInt8]] = []

        init() throws {
            root = try RulesTestSupport.makeTemporaryDirectory("conf")
            env = RulesTestSupport.gitEnvironment(home: root)
            repo = root + bytes("/repo")
            let result = try RulesTestSupport.run("/usr/bin/git", ["init", "-q", "repo"], directory: root, environment: env)
            guard result.status == 0 else { throw RulesTestSupport.Failure(description: "git init: \(result.err)") }
        }

        deinit { RulesTestSupport.removeTree(root) }
    }

    func makeWorkspace(_ tree: Scenario) throws -> Workspace {
        let ws = try Workspace()
        let repo = ws.repo
        for dir in tree.directories.sorted(by: { $0.count < $1.count }) {
            var prefix: [UInt8] = []
            for component in dir.split(separator: UInt8(ascii: "/")) {
                prefix = prefix.isEmpty ? Array(component) : prefix + [UInt8(ascii: "/")] + component
                try RulesTestSupport.makeDirectory(RulesTestSupport.join(repo, prefix))
                ws.types[prefix] = true
            }
        }
        for file in tree.files {
            let parent = SyncPath(bytes: file).parent
            if !parent.isRoot {
                try RulesTestSupport.makeDirectories(RulesTestSupport.join(repo, parent.bytes))
                var p = parent
                while !p.isRoot { ws.types[p.bytes] = true; p = p.parent }
            }
            try RulesTestSupport.writeFile(RulesTestSupport.join(repo, file), bytes("x"))
            ws.types[file] = false
        }
        for link in tree.symlinks {
            try RulesTestSupport.symlink(target: link.target, at: RulesTestSupport.join(repo, link.path))
            ws.types[link.path] = false
        }
        ws.missing = tree.missing
        return ws
    }

    /// Builds the scenario on disk, asks git and the engine, fails on any difference;
    /// returns the number of paths compared.
    @discardableResult
    func check(_ scenario: Scenario, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let ws = try makeWorkspace(scenario)
        return try compare(ws, rules: scenario.rules, globals: scenario.globals, name: scenario.name, file: file, line: line)
    }

    @discardableResult
    func compare(_ ws: Workspace, rules: [[UInt8]: [UInt8]], globals: [String], name: String,
                 file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let repo = ws.repo
        let env = ws.env
        let scenario = Scenario(name: name, rules: rules, globals: globals, missing: ws.missing)
        for old in ws.writtenRules { RulesTestSupport.remove(RulesTestSupport.join(repo, old)) }
        ws.writtenRules = []
        var types = ws.types
        for (dir, content) in scenario.rules {
            if !dir.isEmpty { try RulesTestSupport.makeDirectories(RulesTestSupport.join(repo, dir)) }
            let path = dir.isEmpty ? Self.gitignore : dir + [UInt8(ascii: "/")] + Self.gitignore
            try RulesTestSupport.writeFile(RulesTestSupport.join(repo, path), content)
            ws.writtenRules.append(path)
            if types[path] == nil { types[path] = false }
        }
        var exclude: [UInt8] = []
        for g in scenario.globals { exclude += bytes(g) + [UInt8(ascii: "\n")] }
        try RulesTestSupport.writeFile(repo + bytes("/.git/info/exclude"), exclude)
        for m in scenario.missing where types[m] == nil { types[m] = false }

        let queries = types.keys.sorted { SyncPath(bytes: $0) < SyncPath(bytes: $1) }
        var stdin: [UInt8] = []
        for q in queries { stdin += bytes("./") + q + [0] }  // "./": a leading ':' is not pathspec magic
        let result = try RulesTestSupport.run("/usr/bin/git", ["check-ignore", "--no-index", "-v", "-n", "--stdin", "-z"],
                                              directory: repo, environment: env, stdin: stdin)
        XCTAssertTrue(result.status == 0 || result.status == 1, "git failed: \(result.err)", file: file, line: line)
        var fields = result.out.split(separator: 0, omittingEmptySubsequences: false).map(Array.init)
        if fields.last == [] { fields.removeLast() }
        XCTAssertEqual(fields.count, queries.count * 4, "\(scenario.name): unexpected git output size; stderr: \(result.err)", file: file, line: line)
        guard fields.count == queries.count * 4 else { return 0 }

        let engine = RulesEngine(sourceRoot: repo, rulesFileNames: [Self.gitignore], globalPatterns: scenario.globals)
        var mismatches: [String] = []
        var gitExcluded: Set<[UInt8]> = []
        for (i, query) in queries.enumerated() {
            let src = fields[i * 4], lineNo = fields[i * 4 + 1], pattern = fields[i * 4 + 2], path = fields[i * 4 + 3]
            XCTAssertEqual(path, bytes("./") + query, "git answered out of order", file: file, line: line)
            let expected = Answer(source: src == Self.infoExclude ? RuleMatch.globalSource : src,
                                  line: String(decoding: lineNo, as: UTF8.self), pattern: pattern)
            let isDirectory = types[query] ?? false
            if !src.isEmpty { matchedPaths += 1 }
            if pattern.first == UInt8(ascii: "!") { negatedMatches += 1 }
            let m = engine.explain(SyncPath(bytes: query), isDirectory: isDirectory)
            let actual = m.map { Answer(source: $0.source, line: String($0.line), pattern: $0.pattern) }
                ?? Answer(source: [], line: "", pattern: [])
            if expected != actual {
                mismatches.append("\(query.display)\(isDirectory ? "/" : ""): git \(expected), engine \(actual)")
            }
            let excluded = engine.isExcluded(SyncPath(bytes: query), isDirectory: isDirectory)
            let gitSaysExcluded = !src.isEmpty && pattern.first != UInt8(ascii: "!")
            if excluded != gitSaysExcluded {
                mismatches.append("\(query.display): isExcluded \(excluded), git \(gitSaysExcluded)")
            }
            if gitSaysExcluded && scenario.missing.firstIndex(of: query) == nil { gitExcluded.insert(query) }
        }

        // The tree walk must find exactly the topmost excluded existing paths.
        let expectedTopmost = gitExcluded.filter { path in
            var p = SyncPath(bytes: path).parent
            while !p.isRoot {
                if gitExcluded.contains(p.bytes) { return false }
                p = p.parent
            }
            return true
        }.map { SyncPath(bytes: $0) }.sorted()
        let walkEngine = RulesEngine(sourceRoot: repo, rulesFileNames: [Self.gitignore], globalPatterns: scenario.globals)
        let walked = try walkEngine.excludedTopmost(under: .root).filter { !$0.isInside(SyncPath(".git")) }
        let expectedWalk = expectedTopmost
        if walked != expectedWalk {
            mismatches.append("tree walk: got \(walked.map(\.description)), git says \(expectedWalk.map(\.description))")
        }

        if !mismatches.isEmpty {
            var report = "\(scenario.name): \(mismatches.count) mismatches with git\n"
            for (dir, content) in scenario.rules.sorted(by: { $0.key.count < $1.key.count }) {
                report += "  \(dir.isEmpty ? "." : dir.display)/.gitignore: \(content.display)\n"
            }
            if !scenario.globals.isEmpty { report += "  globals: \(scenario.globals)\n" }
            for m in mismatches.prefix(25) { report += "  \(m)\n" }
            XCTFail(report, file: file, line: line)
        }
        return queries.count
    }

    override func setUpWithError() throws {
        try XCTSkipUnless(RulesTestSupport.gitAvailable, "git is not installed")
    }

    // MARK: - A fixed tree for the written cases

    static let hostileNames: [[UInt8]] = [
        bytes("a b"), bytes("trail "), bytes(" lead"), bytes("new\nline"), bytes("tab\t"),
        bytes("quote\"d"), bytes("it's"), bytes("$(rm -rf x)"), bytes("we*rd"), bytes("q?"),
        bytes("[ab]"), bytes("back\\slash"), bytes("-dash"), bytes("#hash"), bytes("!bang"),
        [0x69, 0x6E, 0x76, 0xFF, 0xFE], bytes("é"), bytes(":colon"), bytes("cr\r"),
    ]

    static func fixedTree(_ name: String) -> Scenario {
        var s = Scenario(name: name)
        s.directories = [
            "a", "a/b", "a/b/c", "a/b/c/d", "build", "build/sub", "src", "src/build", "logs", "x", "x/y",
            "node_modules/pkg", "deep/er/est", "sp ace", "foo.d", "a/foo",
        ].map(bytes)
        s.files = [
            "foo", "foo.o", "bar.c", "a/bar.log", "a/b/foo.o", "a/b/c/keep.txt", "a/b/c/x.tmp", "a/b/c/d/foo",
            "build/out", "build/sub/keep", "src/main.c", "src/main.h", "src/build/x", "logs/1.log",
            "logs/important.log", "x/y/z", "node_modules/pkg/index.js", "deep/er/est/f", "sp ace/f", "doc.md",
            "README", "a/a", "a/abc", "a/b2", "x/foo", "a/foo/bar", "Foo", "1.log", "foo.d/inner",
        ].map(bytes)
        for hostile in hostileNames {
            s.files.append(hostile)
            s.files.append(bytes("x/") + hostile)
        }
        s.directories.append(bytes("we*rd dir"))
        s.files.append(bytes("we*rd dir/f"))
        s.missing = [bytes("missing"), bytes("a/missing.o"), bytes("nothere/foo")]
        return s
    }

    static let writtenRootRules: [String] = [
        // Basics.
        "*.o", "foo", "/foo", "foo/", "/foo/", "a/", "a", "a/b", "/a/b/", "b", "b/",
        "build/\n!build/sub/", "build/*\n!build/sub/", "/build", "build", "**/build", "build/**",
        "logs/*\n!logs/important.log", "logs/\n!logs/important.log", "*.log\n!important.log",
        "*\n!*/\n!*.c", "/*\n!/src", "*\n!.gitignore", "!foo\nfoo", "foo\n!foo", "*\n!a\n!a/b",
        // ** in every position.
        "**/foo", "**/b/**", "a/**/foo", "a/**/d", "a/**", "a/**/", "**", "**/", "/**", "**/*.o",
        "a**/b", "**a", "a/**b", "x/**/z", "deep/**/f", "**/**/foo", "a/**/**/foo", "***", "a/***/foo",
        "*/", "*/*", "/*/", "a/*/c", "a/*", "*/b", "a/*/*/d", "foo/**", "a/b/**/", "**/c/",
        // ? and classes.
        "?", "??", "a/?", "*.[ch]", "*.[!c]", "*.[^c]", "[ab]", "[!ab]*", "[a-c]*", "[[:alpha:]]*",
        "[[:digit:]].log", "[[:upper:]]*", "[[:space:]]*", "*[[:space:]]", "[[:punct:]]*", "*[[:cntrl:]]*",
        "[]]", "[!]]*", "[\\]]", "[a-]", "[-a]*", "[[]ab]", "\\[ab]", "[[:alpha:][:digit:]]*",
        "*[\\\\]*", "[[:xdigit:]]*", "*[[:^alpha:]]",
        // Escapes, comments, spaces.
        "\\#hash", "#hash", "\\!bang", "!bang", "trail\\ ", "trail ", "trail", " lead", "back\\\\slash",
        "we\\*rd", "we\\*rd/", "we*", "q\\?", "a\\ b", "a b", "sp ace/", "tab\t", "new?line", "new*",
        "\\a\\/b", "foo\\", "a/b\\/", "foo  \\ ", "trail\\  ", "foo\\\\ ",
        // Malformed lines.
        "[ab\n*.o", "foo[\n!foo", "[[:foo:]]*\n*.log", "x[\n*.c", "[a-\nfoo", "[[:alpha:\nfoo", "foo\\",
        // File format corner cases.
        "*.o\r\nfoo\r\n", "\u{FEFF}foo\nbar.c", "\n\n\nfoo\n\n", "#comment\n  #not comment\nfoo",
        "foo\n\r\n \n", "/", "!", "!/", "//foo", "a//b", "/a/b//", "./foo", "a/./b", "../foo",
    ]

    // MARK: - Tests

    func testWrittenRootRules() throws {
        let ws = try makeWorkspace(Self.fixedTree("fixed"))
        var compared = 0
        for (i, rules) in Self.writtenRootRules.enumerated() {
            compared += try compare(ws, rules: [[]: bytes(rules)], globals: [], name: "root rules #\(i) \(rules.debugDescription)")
        }
        XCTAssertGreaterThan(compared, 1000)
    }

    func testWrittenNestedRules() throws {
        let cases: [[String: String]] = [
            ["": "*.log", "logs": "!important.log"],
            ["": "!foo", "a": "foo"],
            ["": "a/foo", "a": "!foo"],
            ["": "foo", "a/b/c/d": "!foo"],
            ["a": "/bar.log\nb/c/", "a/b": "c/\n!keep.txt"],
            ["a": "b", "a/b/c": "!*"],
            ["": "a/b/", "a/b": "!c/"],
            ["a": "**/foo", "a/b": "!foo"],
            ["a": "/*\n!/b", "a/b": "*.o"],
            ["": "*", "a": "!*"],
            ["": "*\n!*/", "a": "!bar.log", "a/b/c": "!keep.txt"],
            ["src": "build/", "src/build": "!x"],
            ["": "build", "build/sub": "!keep"],
            ["x": "y/z", "x/y": "!z"],
            ["deep": "er/est/", "deep/er": "!est/"],
            ["a": "[ab\nfoo\\", "a/b": "c/\n\\"],
            ["": "a/**/foo", "a/b": "!c/d/foo"],
            ["sp ace": "f", "": "sp\\ ace/"],
        ]
        let ws = try makeWorkspace(Self.fixedTree("fixed"))
        for (i, c) in cases.enumerated() {
            var rules: [[UInt8]: [UInt8]] = [:]
            for (dir, content) in c { rules[bytes(dir)] = bytes(content) }
            try compare(ws, rules: rules, globals: [], name: "nested #\(i) \(c)")
        }
    }

    func testGlobalPatternsRankBelowEveryRulesFile() throws {
        let cases: [([String], [String: String])] = [
            (["*.o"], [:]),
            (["*.o"], ["": "!foo.o"]),
            (["*.o"], ["a": "!*.o"]),
            (["a/"], ["": "!a/"]),
            (["!foo"], ["": "foo"]),
            (["foo", "!foo"], [:]),
            (["build/", "!build/sub/"], [:]),
            (["*.log"], ["logs": "!important.log"]),
            (["/a/b/"], ["a": "!b/"]),
            (["*"], ["": "!*/\n!*.c"]),
            (["[ab", "*.tmp", "  ", "#c", "\\#hash"], ["a/b/c": "!x.tmp"]),
        ]
        let ws = try makeWorkspace(Self.fixedTree("fixed"))
        for (i, c) in cases.enumerated() {
            var rules: [[UInt8]: [UInt8]] = [:]
            for (dir, content) in c.1 { rules[bytes(dir)] = bytes(content) }
            try compare(ws, rules: rules, globals: c.0, name: "globals #\(i) \(c)")
        }
    }

    func testSymlinksAreNotFollowed() throws {
        var s = Self.fixedTree("symlinks")
        s.rules[[]] = bytes("*.o\nlink/\nlinkdir/")
        s.symlinks = [(bytes("link"), bytes("a")), (bytes("linkdir"), bytes("a/b")), (bytes("x/y/.gitignore"), bytes("../../.gitignore"))]
        try check(s)
    }

    // MARK: - Random trees and rules from a fixed seed

    static let namePool: [[UInt8]] = [
        "a", "b", "c", "ab", "abc", "foo", "bar", "x.o", "y.log", "z.tmp", "build", "sub", "deep", "src",
        "main.c", "Foo", "a1", "1a", ".hidden", "node_modules", "__pycache__", "doc.md",
    ].map(bytes) + hostileNames

    static func randomScenario(seed: UInt64) -> Scenario {
        var rng = RulesPRNG(seed: seed)
        var s = Scenario(name: "random seed \(seed)")
        var dirs: [[UInt8]] = [[]]
        var frontier: [[UInt8]] = [[]]
        // Tree: up to 4 levels, a few entries each.
        while let dir = frontier.popLast() {
            let depth = dir.isEmpty ? 0 : dir.split(separator: UInt8(ascii: "/")).count
            let count = 2 + rng.int(4)
            var used: Set<[UInt8]> = []
            for _ in 0..<count {
                let name = rng.pick(namePool)
                if used.contains(name) { continue }
                used.insert(name)
                let path = dir.isEmpty ? name : dir + [UInt8(ascii: "/")] + name
                if depth < 4 && rng.chance(45) {
                    s.directories.append(path)
                    dirs.append(path)
                    frontier.append(path)
                } else {
                    s.files.append(path)
                }
            }
        }
        let allPaths = s.directories + s.files
        // Rules files in some directories, with lines built from names that exist.
        for dir in dirs where dir.isEmpty || rng.chance(40) {
            let inside = allPaths.filter { SyncPath(bytes: $0).isInside(SyncPath(bytes: dir)) && $0 != dir }
                .map { dir.isEmpty ? $0 : Array($0[(dir.count + 1)...]) }
            var lines: [[UInt8]] = []
            for _ in 0..<(1 + rng.int(6)) {
                let target = inside.isEmpty ? rng.pick(namePool) : rng.pick(inside)
                lines.append(randomPattern(from: target, rng: &rng))
            }
            var content: [UInt8] = []
            for l in lines { content += l + [UInt8(ascii: "\n")] }
            s.rules[dir] = content
        }
        if rng.chance(30) {
            s.globals = (0..<(1 + rng.int(3))).map { _ in
                String(decoding: randomPattern(from: rng.pick(allPaths.isEmpty ? namePool : allPaths), rng: &rng), as: UTF8.self)
            }.filter { !$0.utf8.contains(10) && !$0.utf8.contains(13) }
        }
        s.missing = [bytes("nope"), bytes("a/nope.o")]
        return s
    }

    /// A pattern derived from a relative path: exact, with wildcards swapped in, anchored or
    /// not, negated or not, with escapes, spaces and the odd malformed form.
    static func randomPattern(from path: [UInt8], rng: inout RulesPRNG) -> [UInt8] {
        if rng.chance(4) { return rng.pick(["#comment", "", "   ", "[", "\\", "!", "/", "**", "*", "!*/"].map(bytes)) }
        var components = path.split(separator: UInt8(ascii: "/")).map(Array.init)
        if components.count > 1 && rng.chance(40) {
            let keep = 1 + rng.int(components.count)
            components = rng.chance(50) ? Array(components.prefix(keep)) : Array(components.suffix(keep))
        }
        components = components.map { component -> [UInt8] in
            var c: [UInt8] = []
            for byte in component {
                switch byte {
                case UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["), UInt8(ascii: "\\"),
                     UInt8(ascii: "!") where c.isEmpty, UInt8(ascii: "#") where c.isEmpty:
                    c += [UInt8(ascii: "\\"), byte]
                case UInt8(ascii: "\n"):
                    c.append(UInt8(ascii: "?"))
                default:
                    c.append(byte)
                }
            }
            if c.last == UInt8(ascii: " ") && rng.chance(70) { c.insert(UInt8(ascii: "\\"), at: c.count - 1) }
            switch rng.int(12) {
            case 0: return bytes("*")
            case 1: return c.isEmpty ? c : [UInt8(ascii: "?")] + c.dropFirst()
            case 2: return c.count > 2 ? Array(c.prefix(2)) + bytes("*") : c
            case 3: return bytes("*") + c.suffix(2).filter { $0 != UInt8(ascii: "\\") }
            case 4: return bytes("[a-f]*")
            case 5: return c.isEmpty ? c : bytes("[") + [c[0] == UInt8(ascii: "\\") ? UInt8(ascii: "x") : c[0]] + bytes("x]") + c.dropFirst()
            case 6: return bytes("[!a]*")
            case 7: return bytes("[[:alpha:]]*")
            default: return c
            }
        }
        var body: [UInt8] = []
        if components.count > 1 && rng.chance(30) {
            components.insert(bytes("**"), at: rng.int(components.count + 1))
        }
        for (i, c) in components.enumerated() {
            if i > 0 { body.append(UInt8(ascii: "/")) }
            body += c
        }
        if rng.chance(20) { body = bytes("/") + body }
        if rng.chance(10) { body = bytes("**/") + body }
        if rng.chance(15) { body += bytes("/") }
        if rng.chance(8) { body += bytes("/**") }
        if rng.chance(25) { body = bytes("!") + body }
        if rng.chance(10) { body += bytes("  ") }
        if rng.chance(4) { body += bytes("\\") }
        if rng.chance(4) { body += bytes("[") }
        return body
    }

    func testRandomScenariosFromFixedSeed() throws {
        var compared = 0
        for seed in UInt64(1)...70 {
            let scenario = Self.randomScenario(seed: seed)
            compared += try check(scenario)
        }
        XCTAssertGreaterThan(compared, 2000)
        // The random rules must decide a fair share of paths, negations included.
        XCTAssertGreaterThan(matchedPaths, compared / 5, "matched \(matchedPaths) of \(compared)")
        XCTAssertGreaterThan(negatedMatches, compared / 50, "negated \(negatedMatches) of \(compared)")
        print("random conformance: \(compared) paths, \(matchedPaths) matched, \(negatedMatches) by a negation")
    }

    // MARK: - One pattern per directory, many names: the matcher itself

    static let matrixFiles: [[UInt8]] = ([
        "foo", "foo.c", "foo.o", "bar", "a", "b", "abc", "a.b.c", "Foo", "FOO", "x*y", "xzy", "[ab]", "a]",
        "]", "-", "^", "!", "!x", "#x", "\\", "back\\slash", "a b", " ", "tab\t", "new\nline", "é", "1",
        "a1", "_", "~", "foo bar", "foo.", ".foo", "..foo", "foo~", "x:y", "aaa", "aXb",
        "d/foo", "d/e/foo", "d/e/f/bar", "d/e/f/foo.c", "d/foo.c", "foo.d/foo", "ab/c/d", "ab/c/e",
    ].map(bytes) + [[0xFF], [0x61, 0x80], [0x7F]])
    static let matrixDirectories: [[UInt8]] = ["d", "d/e", "d/e/f", "foo.d", "ab", "ab/c"].map(bytes)

    static let matrixPatterns: [String] = [
        "foo", "*", "?", "??", "???", "*.c", "*.?", "f*", "*o", "*o*", "f?o", "[fb]*", "[!f]*", "[^f]*",
        "[a-c]", "[a-c]*", "[c-a]*", "[]]", "[]a]", "[!]]", "[^]]", "[a-]", "[-]", "[!-]", "[\\-]", "[a\\-c]",
        "[\\]", "[\\\\]", "\\\\", "back\\\\slash", "back?slash", "back[\\\\]slash", "\\*", "x\\*y", "x*y",
        "x[*]y", "\\[ab]", "[[]ab]", "[ab]", "[[:alpha:]]", "[[:alpha:]]*", "[![:alpha:]]", "[[:digit:][:upper:]]",
        "[[:space:]]", "*[[:space:]]*", "[[:blank:]]", "tab[[:blank:]]", "[[:cntrl:]]*", "*[[:cntrl:]]",
        "[[:punct:]]", "[[:punct:]]*", "[[:graph:]]", "[[:print:]]", "[[:lower:]]*", "[[:upper:]]*",
        "[[:xdigit:]]", "[[:alnum:]]*", "[[:foo:]]", "[[:alpha:]", "[[:alpha]]", "[[:alpha:]x]", "[x[:alpha:]]",
        "[[:a]", "[:alpha:]", "[[:]]", "[[::]]", "[a-[:digit:]]", "[[:digit:]-z]", "[!", "[", "a[", "\\",
        "foo\\", "a\\ b", "a b", "new?line", "new*", "é", "?\u{00A9}", "[\\x80-\\xff]", "*~", "foo~",
        "d", "d/", "/d", "d/*", "d/**", "d/**/", "d/**/foo", "d/**/f", "**/foo", "**/f/", "**/f/bar",
        "d/*/foo", "d/*/*/bar", "*/foo", "*/*/foo", "/foo", "/*", "/*/", "**", "**/", "/**", "**/*",
        "***", "****/foo", "d/***/foo", "d***/foo", "d**/foo", "**d", "d**", "*/**", "**/e/**", "d/e**",
        "d/**e", "d/e/**/bar", "d/e/f/**/bar", "d/**/e/**/bar", "**/d/**/bar", "d\\/foo", "d/\\**",
        "foo/", "foo/**", "foo.d/", "foo.d", "foo.*", "foo.*/", ".*", ".foo", "..*", "*.", "*.*",
        "ab/c/", "ab/c/*", "ab/*/d", "ab/c/[de]", "ab/c/[!d]", "a*/c", "a?/c/d", "ab/?/e", "[a]b/c/d",
        "x:y", "x[:]y", "~", "_", "-", "!x", "\\!x", "\\#x", "#x", "!!x", "!foo", "!*", "!d/", "!/foo",
        "*foo", "*foo*", "*.c/", "*c", "*b*c", "a*b*c", "a*a*a", "*a*a*a", "a**a", "*aa", "a?a",
        "aXb", "a[X]b", "a[x]b", "a[[:upper:]]b", "a[!x]b", "a[A-Z]b", "a[Z-A]b",
    ]

    func testPatternMatrix() throws {
        var s = Scenario(name: "pattern matrix")
        for (i, pattern) in Self.matrixPatterns.enumerated() {
            let dir = bytes("p\(i)")
            s.directories.append(dir)
            for d in Self.matrixDirectories { s.directories.append(dir + [UInt8(ascii: "/")] + d) }
            for f in Self.matrixFiles { s.files.append(dir + [UInt8(ascii: "/")] + f) }
            s.rules[dir] = bytes(pattern + "\n")
        }
        let compared = try check(s)
        XCTAssertGreaterThan(compared, 10_000)
    }
}
