import Foundation
import XCTest
@testable import FanSync

/// `fansync check-ignore` against `git check-ignore` on the same tree: output bytes and exit
/// status must be identical (global patterns aside, which git reports as .git/info/exclude).
final class RulesCheckIgnoreCommandTests: XCTestCase {
    var root: [UInt8] = []
    var repo: [UInt8] = []
    var env: [String: String] = [:]

    static let rules: [(String, String)] = [
        ("", "*.o\nbuild/\n!build/keep\nlogs/*\n!logs/keep.log\n \n!neg*\n[unterminated\n"),
        ("a", "/local\n!*.o\n"),
        ("a/b", "deep/\n"),
    ]
    static let files: [[UInt8]] = [
        "foo.o", "main.c", "build/keep", "build/x", "logs/1.log", "logs/keep.log", "a/local", "a/x.o",
        "a/b/deep/f", "a/b/other", "negated", "a b.o", "new\nline.o", "tab\t.o", "$(x).o", "-dash.o",
        "quote\".o", ":colon.o", "back\\slash.o", "cr\r.o",
    ].map(bytes) + [[0x69, 0xFF, 0x2E, 0x6F]]

    override func setUpWithError() throws {
        try XCTSkipUnless(RulesTestSupport.gitAvailable, "git is not installed")
        root = try RulesTestSupport.makeTemporaryDirectory("cmd")
        env = RulesTestSupport.gitEnvironment(home: root)
        let result = try RulesTestSupport.run("/usr/bin/git", ["init", "-q", "repo"], directory: root, environment: env)
        XCTAssertEqual(result.status, 0)
        repo = root + bytes("/repo")
        for (dir, content) in Self.rules {
            try RulesTestSupport.makeDirectories(RulesTestSupport.join(repo, bytes(dir)))
            try RulesTestSupport.writeFile(RulesTestSupport.join(repo, bytes(dir.isEmpty ? ".gitignore" : dir + "/.gitignore")), bytes(content))
        }
        for f in Self.files {
            let parent = SyncPath(bytes: f).parent
            if !parent.isRoot { try RulesTestSupport.makeDirectories(RulesTestSupport.join(repo, parent.bytes)) }
            try RulesTestSupport.writeFile(RulesTestSupport.join(repo, f), [])
        }
    }

    override func tearDown() {
        RulesTestSupport.removeTree(root)
    }

    var repoString: String { String(decoding: repo, as: UTF8.self) }

    func ours(_ arguments: [String], stdin: [UInt8] = [], extra: [String] = ["--rules-file", ".gitignore"]) -> (output: [UInt8], errors: String, status: Int32) {
        CheckIgnoreCommand.run(arguments: ["--source", repoString] + extra + arguments, stdinBytes: { stdin },
                               resolveConfig: { _ in throw RulesTestSupport.Failure(description: "no config here") })
    }

    func git(_ arguments: [String], stdin: [UInt8] = []) throws -> (out: [UInt8], err: String, status: Int32) {
        try RulesTestSupport.run("/usr/bin/git", ["check-ignore", "--no-index"] + arguments, directory: repo, environment: env, stdin: stdin)
    }

    func allPaths() -> [[UInt8]] {
        var paths = Self.files
        for (dir, _) in Self.rules where !dir.isEmpty { paths.append(bytes(dir)) }
        paths += ["build", "logs", "a/b/deep", ".gitignore", "a/.gitignore", "missing.o", "nothere/x"].map(bytes)
        return paths
    }

    func testVerboseNulTerminatedStdinIsByteIdentical() throws {
        var stdin: [UInt8] = []
        for p in allPaths() { stdin += bytes("./") + p + [0] }
        for flags in [["-v", "-n"], ["-v"], []] {
            let g = try git(flags + ["--stdin", "-z"], stdin: stdin)
            let o = ours(flags + ["--stdin", "-z"], stdin: stdin)
            XCTAssertEqual(o.output.display, g.out.display, "flags \(flags)")
            XCTAssertEqual(o.status, g.status, "flags \(flags)")
        }
    }

    func testArgumentsAndTextOutputMatchGit() throws {
        let arguments = ["foo.o", "./foo.o", "main.c", "build", "build/", "build/keep", "logs/keep.log", "logs/1.log",
                         "a/local", "a/x.o", "a/../foo.o", "a/b/deep/f", "a/b/deep/", "negated", "missing.o", "a//x.o",
                         "a/b/../x.o", "a/.", "."]
        for flags in [["-v", "-n"], ["-v"], []] {
            let g = try git(flags + ["--"] + arguments)
            let o = ours(flags + ["--"] + arguments)
            XCTAssertEqual(o.output.display, g.out.display, "flags \(flags)")
            XCTAssertEqual(o.status, g.status)
        }
        // One path at a time: each exit status as git's (a negation counts only with -v).
        for path in arguments {
            for flags in [["-v"], [], ["-q"]] {
                let g = try git(flags + [path])
                let o = ours(flags + [path])
                XCTAssertEqual(o.status, g.status, "\(flags) \(path)")
                XCTAssertEqual(o.output.display, g.out.display, "\(flags) \(path)")
            }
        }
    }

    func testAbsolutePathsInsideAndOutsideTheRoot() throws {
        let inside = repoString + "/a/x.o"
        XCTAssertEqual(ours(["-v", inside]).output.display, try git(["-v", inside]).out.display)
        let outside = ours(["/etc/passwd"])
        XCTAssertEqual(outside.status, 128)
        XCTAssertTrue(outside.errors.contains("outside the source root"), outside.errors)
        XCTAssertEqual(ours(["../x"]).status, 128)
    }

    func testStdinLinesQuotedAsGitQuotesThem() throws {
        let stdin = bytes("foo.o\n\"new\\nline.o\"\n\"tab\\t.o\"\r\n\"i\\377.o\"\nmain.c\n")
        let g = try git(["-v", "-n", "--stdin"], stdin: stdin)
        let o = ours(["-v", "-n", "--stdin"], stdin: stdin)
        XCTAssertEqual(o.status, g.status)
        // git quotes names in this mode; we print them raw.
        let expected = bytes(".gitignore:1:*.o\tfoo.o\n.gitignore:1:*.o\tnew\nline.o\n.gitignore:1:*.o\ttab\t.o\n")
            + bytes(".gitignore:1:*.o\ti") + [0xFF] + bytes(".o\n::\tmain.c\n")
        XCTAssertEqual(o.output, expected)
        XCTAssertEqual(g.out, bytes(".gitignore:1:*.o\tfoo.o\n.gitignore:1:*.o\t\"new\\nline.o\"\n.gitignore:1:*.o\t\"tab\\t.o\"\n.gitignore:1:*.o\t\"i\\377.o\"\n::\tmain.c\n"), "git's quoted form, for reference")
        let bad = ours(["--stdin"], stdin: bytes("foo.o\n\"unterminated\n"))
        XCTAssertEqual(bad.status, 128)
        XCTAssertEqual(bad.output, bytes("foo.o\n"), "what was answered before the bad line stands")
    }

    func testGlobalExcludesRankBelowRulesFiles() throws {
        try RulesTestSupport.writeFile(repo + bytes("/.git/info/exclude"), bytes("main.c\na/*.o\nnegated\n"))
        let paths = ["main.c", "a/x.o", "negated", "foo.o"]
        let g = try git(["-v", "-n"] + paths)
        let o = ours(["-v", "-n"] + paths, extra: ["--rules-file", ".gitignore", "--exclude", "main.c", "--exclude", "a/*.o", "--exclude=negated"])
        XCTAssertEqual(o.output.display, g.out.display.replacingOccurrences(of: ".git/info/exclude", with: "<exclude>"))
        XCTAssertEqual(o.status, g.status)
    }

    func testDefaultRulesFileNameAndWarnings() throws {
        try RulesTestSupport.writeFile(repo + bytes("/.fansyncignore"), bytes("main.c\nbad[\n"))
        let o = ours(["-v", "main.c", "foo.o"], extra: [])
        XCTAssertEqual(o.output, bytes(".fansyncignore:1:main.c\tmain.c\n"))
        XCTAssertEqual(o.status, 0)
        XCTAssertTrue(o.errors.contains(".fansyncignore:2: unterminated character class"), o.errors)
    }

    func testConfigIsResolvedThroughTheClosure() throws {
        let result = CheckIgnoreCommand.run(arguments: ["-v", "--config", "/etc/fansync.conf.lua", "main.c", "x.tmp"], stdinBytes: { [] },
                                            resolveConfig: { path in
            XCTAssertEqual(path, "/etc/fansync.conf.lua")
            return (source: self.repo, rulesFileNames: [bytes(".gitignore")], patterns: ["*.tmp"])
        })
        XCTAssertEqual(result.output, bytes("<exclude>:1:*.tmp\tx.tmp\n"))
        XCTAssertEqual(result.status, 0)
        let failing = CheckIgnoreCommand.run(arguments: ["--config", "bad.lua", "x"], stdinBytes: { [] },
                                             resolveConfig: { _ in throw RulesTestSupport.Failure(description: "line 3: unknown key 'foo'") })
        XCTAssertEqual(failing.status, 128)
        XCTAssertTrue(failing.errors.contains("bad.lua: line 3: unknown key 'foo'"), failing.errors)
    }

    func testUsageErrorsExitWith128() {
        let cases: [[String]] = [
            [],                                  // no path
            ["--stdin", "foo"],                  // paths with --stdin
            ["-z", "foo"],                       // -z without --stdin
            ["-n", "foo"],                       // -n without -v
            ["-q", "-v", "foo"],
            ["-q", "foo", "bar"],
            ["--bogus", "foo"],
            ["-x", "foo"],
            ["--source"],
            ["--config", "c", "--exclude", "x", "foo"],
            ["--rules-file", "a/b", "foo"],
        ]
        for arguments in cases {
            let r = CheckIgnoreCommand.run(arguments: arguments, stdinBytes: { [] }, resolveConfig: { _ in (self.repo, [], []) })
            XCTAssertEqual(r.status, 128, "\(arguments)")
            XCTAssertFalse(r.errors.isEmpty, "\(arguments)")
            XCTAssertEqual(r.output, [], "\(arguments)")
        }
        let missingSource = CheckIgnoreCommand.run(arguments: ["--source", "/nonexistent/dir", "x"], stdinBytes: { [] },
                                                   resolveConfig: { _ in (self.repo, [], []) })
        XCTAssertEqual(missingSource.status, 128)
        XCTAssertTrue(missingSource.errors.contains("/nonexistent/dir"), missingSource.errors)
        let empty = ours(["--stdin"], stdin: bytes("foo.o\n\nmain.c\n"))
        XCTAssertEqual(empty.status, 128, "an empty line is an error, as in git")
        let help = CheckIgnoreCommand.run(arguments: ["--help"], stdinBytes: { [] }, resolveConfig: { _ in (self.repo, [], []) })
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.output.display.contains("usage: fansync check-ignore"))
    }

    func testNormalisation() {
        XCTAssertEqual(CheckIgnoreCommand.normalize(bytes("a/./b//c/")), bytes("a/b/c/"))
        XCTAssertEqual(CheckIgnoreCommand.normalize(bytes("a/b/..")), bytes("a/"))
        XCTAssertEqual(CheckIgnoreCommand.normalize(bytes("./")), bytes(""))
        XCTAssertNil(CheckIgnoreCommand.normalize(bytes("a/../..")))
        XCTAssertEqual(CheckIgnoreCommand.unquoteCStyle(bytes("\"a\\tb\\\"\\\\\\303\\251\"")), bytes("a\tb\"\\é"))
        XCTAssertNil(CheckIgnoreCommand.unquoteCStyle(bytes("\"abc")))
        XCTAssertNil(CheckIgnoreCommand.unquoteCStyle(bytes("\"a\\qb\"")))
    }
}
