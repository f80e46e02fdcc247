import Foundation
import XCTest
@testable import FanSync

/// The exclude file handed to rsync, checked with real rsync: every listed path, whatever
/// bytes its name holds, is excluded, and nothing else is.
final class RulesRsyncTests: XCTestCase {
    var root: [UInt8] = []
    var src: [UInt8] { root + bytes("/src") }
    var dst: [UInt8] { root + bytes("/dst") }

    override func setUpWithError() throws {
        try XCTSkipUnless(RulesTestSupport.rsyncAvailable, "rsync is not installed")
        root = try RulesTestSupport.makeTemporaryDirectory("rsync")
        try RulesTestSupport.makeDirectory(src)
        try RulesTestSupport.makeDirectory(dst)
    }

    override func tearDown() {
        RulesTestSupport.removeTree(root)
    }

    /// Names to exclude, each with decoys that a wrongly escaped pattern would also hit.
    static let hostile: [([UInt8], [[UInt8]])] = [
        (bytes("a*b"), [bytes("axb"), bytes("ab")]),
        (bytes("[ab]"), [bytes("a"), bytes("b")]),
        (bytes("q?"), [bytes("qq")]),
        (bytes("back\\slash"), [bytes("backslash")]),
        (bytes("w\\*"), [bytes("w\\x"), bytes("w*"), bytes("w\\")]),
        (bytes("x\\[y]"), [bytes("x\\y"), bytes("x[y]")]),
        (bytes("new\nline"), [bytes("new"), bytes("line")]),
        (bytes("trail "), [bytes("trail")]),
        (bytes(" lead"), [bytes("lead")]),
        (bytes("-dash"), [bytes("dash")]),
        (bytes("+ plus"), [bytes("plus")]),
        (bytes("# hash"), [bytes("hash")]),
        (bytes("; semi"), [bytes("semi")]),
        (bytes("!"), [bytes("bang")]),
        (bytes("$(touch pwned)"), [bytes("pwned")]),
        (bytes("quote\"'"), [bytes("quote")]),
        ([0x69, 0xFF, 0xFE], [[0x69]]),
        (bytes("**"), [bytes("star2x")]),
        (bytes("cr\r"), [bytes("cr")]),
    ]

    func files(under base: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        func walk(_ rel: [UInt8]) {
            let abs = rel.isEmpty ? base : base + [UInt8(ascii: "/")] + rel
            let fd = RulesTestSupport.withCPath(abs) { open($0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard fd >= 0 else { return }
            let entries = (try? RulesEngine.readEntries(fd: fd, path: .root)) ?? []
            close(fd)
            for e in entries {
                let child = rel.isEmpty ? e.name : rel + [UInt8(ascii: "/")] + e.name
                out.append(child + (e.isDirectory ? [UInt8(ascii: "/")] : []))
                if e.isDirectory { walk(child) }
            }
        }
        walk([])
        return out.sorted { SyncPath(bytes: $0) < SyncPath(bytes: $1) }
    }

    func rsync(_ exclude: [UInt8], from: [UInt8], to: [UInt8]) throws {
        let file = root + bytes("/exclude")
        try RulesTestSupport.writeFile(file, exclude)
        let r = try RulesTestSupport.run("/usr/bin/rsync", [
            "-a", "--delete", "--from0", "--exclude-from=" + String(decoding: file, as: UTF8.self),
            String(decoding: from, as: UTF8.self) + "/", String(decoding: to, as: UTF8.self) + "/",
        ])
        XCTAssertEqual(r.status, 0, r.err)
    }

    func testHostileNamesAreExcludedExactly() throws {
        var excluded: [ExcludedEntry] = []
        for (i, (name, decoys)) in Self.hostile.enumerated() {
            // Each name as a file at the top and as a directory (with content) one level down.
            try RulesTestSupport.writeFile(src + [UInt8(ascii: "/")] + name, bytes("x"))
            excluded.append(ExcludedEntry(path: SyncPath(bytes: name), isDirectory: false))
            let dir = src + bytes("/d\(i)/")
            try RulesTestSupport.makeDirectories(dir + name)
            try RulesTestSupport.writeFile(dir + name + bytes("/inner"), bytes("x"))
            excluded.append(ExcludedEntry(path: SyncPath(bytes: bytes("d\(i)/") + name), isDirectory: true))
            for decoy in decoys {
                try RulesTestSupport.writeFile(src + [UInt8(ascii: "/")] + decoy, bytes("x"))
                try RulesTestSupport.makeDirectories(dir + decoy)
                try RulesTestSupport.writeFile(dir + decoy + bytes("/inner"), bytes("x"))
            }
        }
        // What must arrive: everything not listed and not inside a listed directory.
        let want = files(under: src).filter { path in
            let p = SyncPath(bytes: path.last == UInt8(ascii: "/") ? Array(path.dropLast()) : path)
            return !excluded.contains { p.isInside($0.path) }
        }
        XCTAssertGreaterThan(want.count, 60)
        // A file kept on the backup because it is excluded, even with --delete.
        try RulesTestSupport.writeFile(dst + bytes("/a*b"), bytes("old"))
        try rsync(RulesEngine.rsyncExcludeFile(excluded, base: .root), from: src, to: dst)
        let got = files(under: dst)
        let wantWithKept = (want + [bytes("a*b")]).sorted { SyncPath(bytes: $0) < SyncPath(bytes: $1) }
        XCTAssertEqual(got.map(\.display), wantWithKept.map(\.display))
        XCTAssertEqual(RulesTestSupport.readFile(dst + bytes("/a*b")), bytes("old"), "an excluded file on the backup is left alone")
        XCTAssertNil(RulesTestSupport.readFile(root + bytes("/pwned")))
        XCTAssertNil(RulesTestSupport.readFile(bytes("/tmp/pwned")))
    }

    func testUntypedRulesAndABaseDirectory() throws {
        let base = bytes("sub dir")
        for name in ["keep", "x*", "x1", "[z]", "z", "deep"].map(bytes) {
            try RulesTestSupport.makeDirectories(src + [UInt8(ascii: "/")] + base)
            try RulesTestSupport.writeFile(src + [UInt8(ascii: "/")] + base + [UInt8(ascii: "/")] + name, bytes("x"))
        }
        try RulesTestSupport.makeDirectories(src + bytes("/sub dir/d*r/in"))
        try RulesTestSupport.makeDirectories(src + bytes("/sub dir/dxr/in"))
        try RulesTestSupport.makeDirectories(dst + [UInt8(ascii: "/")] + base)
        let paths = [SyncPath(bytes: bytes("sub dir/x*")), SyncPath(bytes: bytes("sub dir/[z]")), SyncPath(bytes: bytes("sub dir/d*r")),
                     SyncPath("elsewhere/x")]
        let rules = RulesEngine.rsyncExcludeFile(paths, base: SyncPath(bytes: base))
        XCTAssertEqual(rules, bytes("/x\\*\0/\\[z]\0/d\\*r\0"))
        try rsync(rules, from: src + [UInt8(ascii: "/")] + base, to: dst + [UInt8(ascii: "/")] + base)
        XCTAssertEqual(files(under: dst).map(\.display),
                       ["sub dir/", "sub dir/deep", "sub dir/dxr/", "sub dir/dxr/in/", "sub dir/keep", "sub dir/x1", "sub dir/z"])
        XCTAssertEqual(RulesEngine.rsyncExcludeFile([SyncPath(bytes: base)], base: SyncPath(bytes: base)), bytes("*\0"))
    }

    func testWalkPlusRsyncMirrorsWhatTheRulesAllow() throws {
        try RulesTestSupport.writeFile(src + bytes("/.fansyncignore"), bytes("*.tmp\nwandb/\n!keep.tmp\n"))
        try RulesTestSupport.makeDirectories(src + bytes("/proj/wandb/run"))
        try RulesTestSupport.makeDirectories(src + bytes("/proj/__pycache__"))
        try RulesTestSupport.writeFile(src + bytes("/proj/.fansyncignore"), bytes("__pycache__/\n"))
        for f in ["proj/a.py", "proj/b.tmp", "proj/keep.tmp", "proj/wandb/run/log", "proj/__pycache__/a.pyc", "top.tmp", "we*ird.tmp"] {
            try RulesTestSupport.writeFile(src + [UInt8(ascii: "/")] + bytes(f), bytes("x"))
        }
        let engine = RulesEngine(sourceRoot: src, rulesFileNames: [bytes(".fansyncignore")], globalPatterns: [])
        let entries = try engine.excludedTopmostEntries(under: .root)
        try rsync(RulesEngine.rsyncExcludeFile(entries, base: .root), from: src, to: dst)
        XCTAssertEqual(files(under: dst).map(\.display), [".fansyncignore", "proj/", "proj/.fansyncignore", "proj/a.py", "proj/keep.tmp"])
    }
}
