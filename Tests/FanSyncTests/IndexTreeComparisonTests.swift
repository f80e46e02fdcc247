import XCTest
@testable import FanSync

/// The merge of a walked tree with the index: every case of the issue, on awkward names.
final class IndexTreeComparisonTests: XCTestCase {
    private func stat(_ kind: FileKind, size: UInt64 = 100, mtime: Int64 = 1_000, ino: UInt64 = 1, dev: UInt64 = 9, perm: UInt32 = 0o644) -> FileStat {
        let type: UInt32 = kind == .regular ? 0o100000 : kind == .directory ? 0o040000 : kind == .symlink ? 0o120000 : 0o010000
        return FileStat(kind: kind, size: size, mtimeNs: mtime, ino: ino, dev: dev, mode: type | perm, nlink: 1)
    }
    private func tree(_ path: String, _ s: FileStat) -> TreeEntry { TreeEntry(path: SyncPath(path), stat: s) }
    private func indexed(_ path: String, _ s: FileStat, hash: Hash128? = Hash128(high: 1, low: 2), acked: Bool = true) -> IndexEntry {
        IndexEntry(path: SyncPath(path), kind: s.kind, size: s.size, mtimeNs: s.mtimeNs, ino: s.ino, dev: s.dev,
                   mode: s.mode, wholeHash: hash, acked: acked)
    }

    func testEveryCase() throws {
        let f = stat(.regular)
        let t: [TreeEntry] = [
            tree("a new file", f),
            tree("changed-size", stat(.regular, size: 101)),
            tree("changed-mtime", stat(.regular, mtime: 2_000)),
            tree("changed-inode", stat(.regular, ino: 2)),
            tree("changed-device", stat(.regular, dev: 10)),
            tree("changed-mode", stat(.regular, perm: 0o600)),
            tree("dir", stat(.directory, size: 4096, mtime: 5)),
            tree("dir/inner", f),
            tree("dir-mtime-only", stat(.directory, mtime: 99)),
            tree("dir-to-file", f),
            tree("file-to-dir", stat(.directory)),
            tree("file-to-link", stat(.symlink, size: 6)),
            tree("link-to-file", f),
            tree("not-acked", f),
            tree("same", f),
        ].sorted { $0.path < $1.path }
        let i: [IndexEntry] = [
            indexed("changed-size", f), indexed("changed-mtime", f), indexed("changed-inode", f),
            indexed("changed-device", f), indexed("changed-mode", f),
            indexed("deleted", f), indexed("deleted-dir", stat(.directory)), indexed("deleted-dir/x", f),
            indexed("dir", stat(.directory, size: 4096, mtime: 5)), indexed("dir/inner", f),
            indexed("dir-mtime-only", stat(.directory, mtime: 1)),
            indexed("dir-to-file", stat(.directory)), indexed("dir-to-file/child", f),
            indexed("file-to-dir", f), indexed("file-to-link", f), indexed("link-to-file", stat(.symlink)),
            indexed("not-acked", f, acked: false), indexed("same", f),
        ].sorted { $0.path < $1.path }
        let d = try TreeComparison.differences(tree: t, index: i)
        var byPath: [String: TreeDifference] = [:]
        for x in d { byPath[x.path.description] = x }
        XCTAssertEqual(d.map(\.path), d.map(\.path).sorted(), "emitted in path order")
        XCTAssertEqual(d.count, Set(t.map(\.path)).union(i.map(\.path)).count, "every path once")

        guard case .new = byPath["a new file"] else { return XCTFail("\(byPath["a new file"]!)") }
        XCTAssertTrue(byPath["a new file"]!.needsHash)
        for (name, reason) in [("changed-size", ChangeReasons.size), ("changed-mtime", .mtime), ("changed-inode", .inode),
                               ("changed-device", .inode)] {
            guard case .changed(_, _, let reasons) = byPath[name]! else { return XCTFail(name) }
            XCTAssertEqual(reasons, reason, name)
            XCTAssertTrue(byPath[name]!.needsHash, name)
        }
        guard case .changed(_, _, let modeReasons) = byPath["changed-mode"]! else { return XCTFail() }
        XCTAssertEqual(modeReasons, .mode)
        XCTAssertFalse(byPath["changed-mode"]!.needsHash, "a chmod does not change content")
        guard case .unchanged = byPath["same"]!, case .unchanged = byPath["dir"]!, case .unchanged = byPath["dir/inner"]! else {
            return XCTFail()
        }
        guard case .unchanged = byPath["dir-mtime-only"]! else { return XCTFail("directory mtimes are not compared") }
        guard case .unacknowledged = byPath["not-acked"]! else { return XCTFail("\(byPath["not-acked"]!)") }
        XCTAssertFalse(byPath["not-acked"]!.needsHash)
        for name in ["deleted", "deleted-dir", "deleted-dir/x", "dir-to-file/child"] {
            guard case .deleted = byPath[name]! else { return XCTFail(name) }
        }
        for (name, needsHash) in [("dir-to-file", true), ("file-to-dir", false), ("file-to-link", true), ("link-to-file", true)] {
            guard case .typeChanged = byPath[name]! else { return XCTFail(name) }
            XCTAssertEqual(byPath[name]!.needsHash, needsHash, name)
        }
    }

    func testContentCheckAfterHashing() {
        let old = Hash128.of(Array("old".utf8)), new = Hash128.of(Array("new".utf8))
        let s = stat(.regular, size: 3)
        let i = indexed("f", s, hash: old)
        func hashed(_ h: Hash128, size: UInt64 = 3, mtime: Int64 = 5_000) -> HashedEntry {
            HashedEntry(stat: stat(.regular, size: size, mtime: mtime), content: ContentHash(whole: h, chunks: [h], chunkSize: 4 << 20, size: size))
        }
        // Same content, new mtime (touch, save unchanged): nothing to send.
        XCTAssertEqual(TreeComparison.contentCheck(was: i, now: hashed(old)), .sameContent)
        // Same size, different content.
        XCTAssertEqual(TreeComparison.contentCheck(was: i, now: hashed(new)), .differentContent)
        // The index's version was never acknowledged: the backup may not hold it.
        XCTAssertEqual(TreeComparison.contentCheck(was: indexed("f", s, hash: old, acked: false), now: hashed(old)), .differentContent)
        // No hash recorded.
        XCTAssertEqual(TreeComparison.contentCheck(was: indexed("f", s, hash: nil), now: hashed(old)), .differentContent)
        // A symlink whose target bytes equal a file's content is not the same thing.
        let link = HashedEntry(stat: stat(.symlink, size: 3), linkTarget: Array("old".utf8), content: ContentHash.of(Array("old".utf8)))
        XCTAssertEqual(TreeComparison.contentCheck(was: i, now: link), .differentContent)
    }

    func testAwkwardNamesAndEmptySides() throws {
        let names: [[UInt8]] = [
            Array("with space".utf8), Array("new\nline".utf8), Array("quote'\"".utf8), Array("$(x)".utf8), Array("*".utf8),
            Array("-x".utf8), [0xff, 0xfe], Array("a".utf8), Array("a/b".utf8), Array("a0".utf8), Array("a-b".utf8),
        ]
        let paths = names.map { SyncPath(bytes: $0) }.sorted()
        let f = stat(.regular)
        let t = paths.map { TreeEntry(path: $0, stat: f) }
        let i = paths.map { IndexEntry(path: $0, kind: .regular, size: f.size, mtimeNs: f.mtimeNs, ino: f.ino, dev: f.dev, mode: f.mode, acked: true) }
        XCTAssertTrue(try TreeComparison.differences(tree: t, index: i).allSatisfy { if case .unchanged = $0 { return true } else { return false } })
        XCTAssertEqual(try TreeComparison.differences(tree: t, index: []).count, t.count)
        XCTAssertTrue(try TreeComparison.differences(tree: [], index: i).allSatisfy { if case .deleted = $0 { return true } else { return false } })
        XCTAssertEqual(try TreeComparison.differences(tree: [TreeEntry](), index: [IndexEntry]()), [])
    }

    func testOutOfOrderInputStopsTheComparison() {
        let f = stat(.regular)
        // Byte order is not SyncPath order: "a-b" sorts after "a/b" here.
        let t = [tree("a-b", f), tree("a/b", f)]
        XCTAssertThrowsError(try TreeComparison.differences(tree: t, index: [])) { error in
            XCTAssertEqual((error as? TreeComparison.OrderError)?.side, .tree)
        }
        let dup = [indexed("x", f), indexed("x", f)]
        XCTAssertThrowsError(try TreeComparison.differences(tree: [], index: dup)) { error in
            XCTAssertEqual((error as? TreeComparison.OrderError)?.side, .index)
            XCTAssertTrue("\(error)".contains("nothing deleted"))
        }
    }

    func testStreamsFromTheSQLiteIndex() throws {
        let dir = try RulesTestSupport.makeTemporaryDirectory("cmp")
        defer { RulesTestSupport.removeTree(dir) }
        let index = try Index(file: String(decoding: dir, as: UTF8.self) + "/i.sqlite")
        let f = stat(.regular)
        // Names around '/' in byte order: the index must stream them in SyncPath order.
        let names = ["a", "a/b", "a!", "a-b", "a.b", "a0", "b/c/d", "b", "b\u{1}"]
        try index.upsert(names.map { indexed($0, f) })
        let t = names.filter { $0 != "a0" }.map { tree($0, f) }.sorted { $0.path < $1.path }
        let d = try TreeComparison.differences(tree: t, index: index.entries(pageSize: 2))
        XCTAssertEqual(d.filter { if case .deleted = $0 { return true } else { return false } }.map(\.path), [SyncPath("a0")])
        XCTAssertEqual(d.count, names.count)
    }
}
