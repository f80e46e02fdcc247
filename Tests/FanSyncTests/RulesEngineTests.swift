import Foundation
import XCTest
@testable import FanSync

#if canImport(Glibc)
import Glibc
#endif

/// The engine on real trees: caching and invalidation, priorities, symlinks, warnings,
/// threads, the tree walk.
final class RulesEngineTests: XCTestCase {
    var root: [UInt8] = []

    override func setUpWithError() throws {
        root = try RulesTestSupport.makeTemporaryDirectory("engine")
    }

    override func tearDown() {
        RulesTestSupport.removeTree(root)
    }

    func mkdir(_ path: String) throws { try RulesTestSupport.makeDirectories(RulesTestSupport.join(root, bytes(path))) }
    func write(_ path: String, _ content: String) throws { try write(bytes(path), bytes(content)) }
    func write(_ path: [UInt8], _ content: [UInt8]) throws {
        let parent = SyncPath(bytes: path).parent
        if !parent.isRoot { try RulesTestSupport.makeDirectories(RulesTestSupport.join(root, parent.bytes)) }
        try RulesTestSupport.writeFile(RulesTestSupport.join(root, path), content)
    }

    func engine(_ names: [String] = [".fansyncignore"], globals: [String] = []) -> RulesEngine {
        RulesEngine(sourceRoot: root, rulesFileNames: names.map(bytes), globalPatterns: globals)
    }

    func testAncestorExclusionCannotBeUndoneByANegation() throws {
        try write(".fansyncignore", "build/\n!build/keep\n")
        try write("build/keep", "")
        try write("build/sub/.fansyncignore", "!*\n")
        let e = engine()
        XCTAssertTrue(e.isExcluded(SyncPath("build"), isDirectory: true))
        XCTAssertTrue(e.isExcluded(SyncPath("build/keep"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("build/sub/x"), isDirectory: false))
        let m = e.explain(SyncPath("build/keep"), isDirectory: false)
        XCTAssertEqual(m, RuleMatch(source: bytes(".fansyncignore"), line: 1, pattern: bytes("build/"), negated: false))
        XCTAssertFalse(e.isExcluded(SyncPath("build"), isDirectory: false), "build/ applies to directories only")
        XCTAssertNil(e.explain(.root, isDirectory: true))
        XCTAssertFalse(e.isExcluded(.root, isDirectory: true))
    }

    func testDeeperFilesAndLaterLinesWin() throws {
        try write(".fansyncignore", "*.log\n")
        try write("a/.fansyncignore", "!keep.log\n")
        try write("a/b/.fansyncignore", "keep.log\n!*.log\n*.log\n")
        let e = engine()
        XCTAssertTrue(e.isExcluded(SyncPath("x.log"), isDirectory: false))
        XCTAssertFalse(e.isExcluded(SyncPath("a/keep.log"), isDirectory: false))
        XCTAssertEqual(e.explain(SyncPath("a/keep.log"), isDirectory: false)?.negated, true)
        XCTAssertTrue(e.isExcluded(SyncPath("a/other.log"), isDirectory: false))
        let deep = e.explain(SyncPath("a/b/keep.log"), isDirectory: false)
        XCTAssertEqual(deep?.source, bytes("a/b/.fansyncignore"))
        XCTAssertEqual(deep?.line, 3)
    }

    func testGlobalPatternsRankBelowEveryRulesFile() throws {
        try write(".fansyncignore", "!keep.o\n")
        try write("deep/er/.fansyncignore", "!*.tmp\n")
        let e = engine(globals: ["*.o", "*.tmp", "cache/"])
        XCTAssertTrue(e.isExcluded(SyncPath("x.o"), isDirectory: false))
        XCTAssertFalse(e.isExcluded(SyncPath("sub/keep.o"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("deep/x.tmp"), isDirectory: false))
        XCTAssertFalse(e.isExcluded(SyncPath("deep/er/x.tmp"), isDirectory: false))
        let g = e.explain(SyncPath("a/cache"), isDirectory: true)
        XCTAssertEqual(g?.source, bytes("<exclude>"))
        XCTAssertEqual(g?.line, 3)
        XCTAssertEqual(g?.isGlobal, true)
        XCTAssertEqual(g?.description, "<exclude>:3:cache/")
    }

    func testSeveralRulesFileNamesFirstHasPriority() throws {
        try write(".gitignore", "foo\nbar\n")
        try write(".fansyncignore", "!foo\n")
        try write("d/.gitignore", "foo\n")
        let e = engine([".fansyncignore", ".gitignore"])
        XCTAssertFalse(e.isExcluded(SyncPath("foo"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("bar"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("d/foo"), isDirectory: false), "a deeper .gitignore beats a shallower .fansyncignore")
        XCTAssertTrue(e.isRulesFile(SyncPath(".gitignore")))
        XCTAssertTrue(e.isRulesFile(SyncPath(".fansyncignore")))
        XCTAssertFalse(e.isRulesFile(SyncPath(".ignore")))
        // A path's last component, whole.
        for (path, yes) in [("d/.gitignore", true), ("a b/c/.fansyncignore", true),
                            ("d/x.gitignore", false), ("d/.gitignore2", false), (".gitignore/f", false), ("gitignore", false)] {
            XCTAssertEqual(e.isRulesFile(SyncPath(path)), yes, path)
        }
        XCTAssertFalse(engine().isExcluded(SyncPath("bar"), isDirectory: false), ".gitignore is read only when asked for")
    }

    func testRulesChangedReloadsCreatedEditedAndDeletedFiles() throws {
        try mkdir("a/b")
        let e = engine()
        XCTAssertFalse(e.isExcluded(SyncPath("a/b/x.tmp"), isDirectory: false))
        try write("a/.fansyncignore", "*.tmp\n")
        XCTAssertFalse(e.isExcluded(SyncPath("a/b/x.tmp"), isDirectory: false), "decisions are cached until told")
        e.rulesChanged(in: SyncPath("a"))
        XCTAssertTrue(e.isExcluded(SyncPath("a/b/x.tmp"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("a/b/c/d"), isDirectory: true) == false)
        try write("a/.fansyncignore", "b/\n")
        e.rulesChanged(in: SyncPath("a"))
        XCTAssertFalse(e.isExcluded(SyncPath("a/b2/x.tmp"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("a/b/x.tmp"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("a/b"), isDirectory: true))
        RulesTestSupport.remove(RulesTestSupport.join(root, bytes("a/.fansyncignore")))
        e.rulesChanged(in: SyncPath("a"))
        XCTAssertFalse(e.isExcluded(SyncPath("a/b"), isDirectory: true))
        // Changes at the root reach everything below.
        try write(".fansyncignore", "x.tmp\n")
        e.rulesChanged(in: .root)
        XCTAssertTrue(e.isExcluded(SyncPath("a/b/x.tmp"), isDirectory: false))
        // Invalidating a directory nobody asked about is harmless.
        e.rulesChanged(in: SyncPath("never/seen"))
        XCTAssertTrue(e.isExcluded(SyncPath("a/b/x.tmp"), isDirectory: false))
    }

    func testOnlyTheAncestorsOfAPathAreRead() throws {
        for i in 0..<50 {
            try write("dir\(i)/.fansyncignore", "[broken\n")
        }
        try write("dir7/sub/.fansyncignore", "*.o\n")
        let e = engine()
        XCTAssertTrue(e.isExcluded(SyncPath("dir7/sub/x/y/z.o"), isDirectory: false))
        // The root, dir7, dir7/sub, x, y: nothing else was looked at.
        XCTAssertEqual(e.cachedDirectoryCount, 5)
        XCTAssertEqual(e.warnings.map(\.file), [bytes("dir7/.fansyncignore")])
        XCTAssertEqual(e.warnings.first?.line, 1)
    }

    func testExcludedDirectoriesRulesFilesAreNeverRead() throws {
        try write(".fansyncignore", "junk/\n")
        try write("junk/.fansyncignore", "[unterminated\n!*\n")
        let e = engine()
        XCTAssertTrue(e.isExcluded(SyncPath("junk/a/b/c"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("junk/.fansyncignore"), isDirectory: false))
        XCTAssertEqual(e.warnings, [])
        XCTAssertEqual(e.cachedDirectoryCount, 2)
    }

    func testSymlinkedRulesFileIsIgnoredWithAWarning() throws {
        try write("real-rules", "*\n")
        try mkdir("d")
        try RulesTestSupport.symlink(target: bytes("../real-rules"), at: RulesTestSupport.join(root, bytes("d/.fansyncignore")))
        let collected = WarningCollector()
        let e = engine()
        e.warningHandler = { collected.add($0) }
        XCTAssertFalse(e.isExcluded(SyncPath("d/x"), isDirectory: false))
        XCTAssertEqual(e.warnings.count, 1)
        XCTAssertEqual(e.warnings.first?.file, bytes("d/.fansyncignore"))
        XCTAssertTrue(e.warnings.first?.message.contains("symbolic link") == true)
        XCTAssertEqual(collected.items, e.warnings)
    }

    func testSymlinkedDirectoryIsNotFollowed() throws {
        try write("target/.fansyncignore", "*\n")
        try RulesTestSupport.symlink(target: bytes("target"), at: RulesTestSupport.join(root, bytes("link")))
        let e = engine()
        XCTAssertTrue(e.isExcluded(SyncPath("target/x"), isDirectory: false))
        XCTAssertFalse(e.isExcluded(SyncPath("link/x"), isDirectory: false), "rules are never read through a symlink")
        XCTAssertEqual(e.warnings, [])
    }

    func testFifoAndDirectoryAsRulesFileDoNotBlockOrCrash() throws {
        try mkdir("f")
        let fifoPath = RulesTestSupport.join(root, bytes("f/.fansyncignore"))
        XCTAssertEqual(RulesTestSupport.withCPath(fifoPath) { mkfifo($0, 0o644) }, 0)
        try mkdir("g/.fansyncignore")
        let e = engine()
        XCTAssertFalse(e.isExcluded(SyncPath("f/x"), isDirectory: false))
        XCTAssertFalse(e.isExcluded(SyncPath("g/x"), isDirectory: false))
        XCTAssertEqual(e.warnings.count, 2)
        XCTAssertTrue(e.warnings.allSatisfy { $0.message.contains("not a regular file") }, "\(e.warnings)")
    }

    func testHostileNamesAndInvalidUTF8InRulesAndPaths() throws {
        let weird: [UInt8] = [0x77, 0xFF, 0x0A, 0x2A]  // "w\xff\n*"
        try write(bytes(".fansyncignore"), bytes("w?\n*[\n$(rm -rf x)\n-dash\n") + [0x69, 0xFE, 0x0A])
        let e = engine()
        XCTAssertFalse(e.isExcluded(SyncPath(bytes: weird), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath(bytes: [0x77, 0xFF]), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath("$(rm -rf x)"), isDirectory: true))
        XCTAssertTrue(e.isExcluded(SyncPath("-dash"), isDirectory: false))
        XCTAssertTrue(e.isExcluded(SyncPath(bytes: [0x69, 0xFE]), isDirectory: false))
        XCTAssertEqual(e.explain(SyncPath(bytes: [0x69, 0xFE]), isDirectory: false)?.pattern, [0x69, 0xFE])
        XCTAssertEqual(e.warnings.map(\.line), [2])
    }

    func testSmallCacheStillAnswersCorrectly() throws {
        try write(".fansyncignore", "*.o\n")
        for i in 0..<30 { try write("d\(i)/.fansyncignore", i % 2 == 0 ? "!*.o\n" : "x\n") }
        let e = RulesEngine(sourceRoot: root, rulesFileNames: [bytes(".fansyncignore")], globalPatterns: [], maximumCachedDirectories: 4)
        for round in 0..<3 {
            for i in 0..<30 {
                XCTAssertEqual(e.isExcluded(SyncPath("d\(i)/sub/f.o"), isDirectory: false), i % 2 == 1, "round \(round) d\(i)")
                XCTAssertEqual(e.isExcluded(SyncPath("d\(i)/x"), isDirectory: true), i % 2 == 1)
            }
            XCTAssertLessThanOrEqual(e.cachedDirectoryCount, 4 + 3)
        }
    }

    func testConcurrentQueriesAndInvalidations() throws {
        try write(".fansyncignore", "*.tmp\n")
        for i in 0..<8 { try write("p\(i)/.fansyncignore", "!keep.tmp\nbuild/\n") }
        let e = engine()
        let failures = WarningCollector()
        DispatchQueue.concurrentPerform(iterations: 9) { worker in
            for round in 0..<300 {
                if worker == 8 {
                    e.rulesChanged(in: round % 2 == 0 ? .root : SyncPath("p\(round % 8)"))
                    continue
                }
                let dir = "p\((worker + round) % 8)"
                let checks: [(String, Bool, Bool)] = [
                    ("\(dir)/a.tmp", false, true), ("\(dir)/keep.tmp", false, false),
                    ("\(dir)/build", true, true), ("\(dir)/build/keep.tmp", false, true), ("\(dir)/src/x.c", false, false),
                ]
                for (path, isDirectory, expected) in checks where e.isExcluded(SyncPath(path), isDirectory: isDirectory) != expected {
                    failures.add(RulesWarning(file: bytes(path), line: round, message: "wrong answer"))
                }
            }
        }
        XCTAssertEqual(failures.items, [])
    }

    // MARK: - Tree walk

    func testExcludedTopmostWalksTheRealTree() throws {
        try write(".fansyncignore", "*.tmp\nbuild/\n/logs/*\n!/logs/keep\n")
        try write("a/b/x.tmp", "")
        try write("a/b/y.c", "")
        try write("a/build/deep/deeper/f", "")
        try write("build/.fansyncignore", "!*\n")
        try write("logs/1", "")
        try write("logs/keep", "")
        try write("src/.fansyncignore", "gen/\n")
        try write("src/gen/out.c", "")
        try write("src/main.c", "")
        try write(bytes("src/we*rd\nname.tmp"), [])
        try RulesTestSupport.symlink(target: bytes("../a"), at: RulesTestSupport.join(root, bytes("src/link")))
        try RulesTestSupport.symlink(target: bytes("nowhere"), at: RulesTestSupport.join(root, bytes("dangling.tmp")))
        let e = engine()
        let entries = try e.excludedTopmostEntries(under: .root)
        XCTAssertEqual(entries.map(\.description), [
            "a/b/x.tmp", "a/build/", "build/", "dangling.tmp", "logs/1", "src/gen/", "src/we*rd\\x0aname.tmp",
        ])
        XCTAssertEqual(try e.excludedTopmost(under: SyncPath("src")), [SyncPath("src/gen"), SyncPath(bytes: bytes("src/we*rd\nname.tmp"))])
        XCTAssertEqual(try e.excludedTopmost(under: SyncPath("a/build")), [SyncPath("a/build")], "an excluded start is its own answer")
        XCTAssertEqual(try e.excludedTopmost(under: SyncPath("a/build/deep")), [SyncPath("a/build/deep")])
        XCTAssertThrowsError(try e.excludedTopmost(under: SyncPath("missing")))
        XCTAssertThrowsError(try e.excludedTopmost(under: SyncPath("src/link")), "the start is never reached through a symlink")
    }

    func testWalkPicksUpRulesFilesItFinds() throws {
        try write("p/q/.fansyncignore", "*.bin\n")
        try write("p/q/r/s.bin", "")
        try write("p/t.bin", "")
        let e = engine()
        XCTAssertEqual(try e.excludedTopmost(under: .root), [SyncPath("p/q/r/s.bin")])
        XCTAssertTrue(e.isExcluded(SyncPath("p/q/other.bin"), isDirectory: false))
    }
}

final class WarningCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var _items: [RulesWarning] = []
    func add(_ w: RulesWarning) { lock.withLock { _items.append(w) } }
    var items: [RulesWarning] { lock.withLock { _items } }
}
