import XCTest
@testable import FanSync

final class IndexRenamePairingTests: XCTestCase {
    private let h1 = Hash128(high: 1, low: 1), h2 = Hash128(high: 2, low: 2), h3 = Hash128(high: 3, low: 3)
    private func del(_ p: String, _ h: Hash128?, size: UInt64 = 10, kind: FileKind = .regular, acked: Bool = true) -> RenamePairing.Deleted {
        .init(path: SyncPath(p), kind: kind, size: size, hash: h, acked: acked)
    }
    private func new(_ p: String, _ h: Hash128?, size: UInt64 = 10, kind: FileKind = .regular) -> RenamePairing.Created {
        .init(path: SyncPath(p), kind: kind, size: size, hash: h)
    }
    private func move(_ a: String, _ b: String, _ h: Hash128) -> RenamePairing.Move { .init(from: SyncPath(a), to: SyncPath(b), hash: h) }
    private let nothingHeld: (Hash128, FileKind) -> [SyncPath] = { _, _ in [] }

    func testMoveBecomesRenameAndDifferentContentDoesNot() {
        let plan = RenamePairing.plan(deleted: [del("old/a.bin", h1), del("gone", h2)],
                                      created: [new("new/a.bin", h1), new("fresh", h3)], heldAt: nothingHeld)
        XCTAssertEqual(plan.renames, [move("old/a.bin", "new/a.bin", h1)])
        XCTAssertEqual(plan.deletes, [SyncPath("gone")])
        XCTAssertEqual(plan.sends, [SyncPath("fresh")])
        XCTAssertEqual(plan.copies, [])
    }

    func testOneDeletePairsWithAtMostOneCreateAndTheRestAreCopies() {
        // cp a b; mv a c  => delete a, create b and c (same content).
        let plan = RenamePairing.plan(deleted: [del("a", h1)], created: [new("c", h1), new("b", h1)], heldAt: nothingHeld)
        XCTAssertEqual(plan.renames, [move("a", "b", h1)])
        XCTAssertEqual(plan.copies, [move("b", "c", h1)], "copied from the rename's destination, after it")
        XCTAssertEqual(plan.sends, [])
        XCTAssertEqual(plan.deletes, [])
    }

    func testCopyFromContentHeldElsewhere() {
        // cp best.pt last.pt: the backup holds best.pt.
        let held: (Hash128, FileKind) -> [SyncPath] = { h, k in
            h == self.h1 && k == .regular ? [SyncPath("runs/z.pt"), SyncPath("runs/best.pt"), SyncPath("deleted-too")] : []
        }
        let plan = RenamePairing.plan(deleted: [del("deleted-too", h2)], created: [new("runs/last.pt", h1)], heldAt: held)
        XCTAssertEqual(plan.copies, [move("runs/best.pt", "runs/last.pt", h1)], "first held path in path order")
        XCTAssertEqual(plan.renames, [])
        XCTAssertEqual(plan.deletes, [SyncPath("deleted-too")])
        // A held path that is itself being deleted is not a copy source.
        let onlyDeleted: (Hash128, FileKind) -> [SyncPath] = { _, _ in [SyncPath("x")] }
        let p2 = RenamePairing.plan(deleted: [del("x", nil)], created: [new("y", h1)], heldAt: onlyDeleted)
        XCTAssertEqual(p2.copies, [])
        XCTAssertEqual(p2.sends, [SyncPath("y")])
    }

    func testPairingPrefersSameNameThenSameDirectoryAndIsOrderIndependent() {
        // Two identical files moved together, plus one renamed in place.
        let deleted = [del("src/one", h1), del("src/two", h1), del("keep/x-old", h1)]
        let created = [new("dst/two", h1), new("dst/one", h1), new("keep/x-new", h1)]
        let expected = [move("src/one", "dst/one", h1), move("src/two", "dst/two", h1), move("keep/x-old", "keep/x-new", h1)]
            .sorted { $0.to < $1.to }
        let a = RenamePairing.plan(deleted: deleted, created: created, heldAt: nothingHeld)
        XCTAssertEqual(a.renames, expected)
        let b = RenamePairing.plan(deleted: deleted.reversed(), created: created.reversed(), heldAt: nothingHeld)
        XCTAssertEqual(a, b)
        // More deletes than creates: the extra delete stays a delete.
        let c = RenamePairing.plan(deleted: deleted, created: [new("dst/one", h1)], heldAt: nothingHeld)
        XCTAssertEqual(c.renames, [move("src/one", "dst/one", h1)])
        XCTAssertEqual(c.deletes, [SyncPath("keep/x-old"), SyncPath("src/two")])
    }

    func testWhatIsNeverPaired() {
        let plan = RenamePairing.plan(
            deleted: [
                del("empty-old", Hash128.empty, size: 0),        // empty: all empty files look alike
                del("unacked", h1, acked: false),                // the backup may not hold it
                del("link", h2, kind: .symlink),                 // a symlink whose target bytes match a file
                del("dir", nil, kind: .directory),
            ],
            created: [new("empty-new", Hash128.empty, size: 0), new("from-unacked", h1), new("file", h2), new("newdir", nil, kind: .directory)],
            heldAt: nothingHeld)
        XCTAssertEqual(plan.renames, [])
        XCTAssertEqual(plan.copies, [])
        XCTAssertEqual(plan.sends, [SyncPath("empty-new"), SyncPath("file"), SyncPath("from-unacked"), SyncPath("newdir")])
        XCTAssertEqual(plan.deletes, [SyncPath("dir"), SyncPath("empty-old"), SyncPath("link"), SyncPath("unacked")])
        // Symlinks pair with symlinks.
        let links = RenamePairing.plan(deleted: [del("l1", h2, kind: .symlink)], created: [new("l2", h2, kind: .symlink)], heldAt: nothingHeld)
        XCTAssertEqual(links.renames, [move("l1", "l2", h2)])
    }

    func testSaveThroughTemporaryFileWithSameContentIsUnchanged() {
        let plan = RenamePairing.plan(deleted: [del("doc.txt", h1)], created: [new("doc.txt", h1)], heldAt: nothingHeld)
        XCTAssertEqual(plan.unchanged, [SyncPath("doc.txt")])
        XCTAssertEqual(plan.renames, [])
        XCTAssertEqual(plan.deletes, [])
        XCTAssertEqual(plan.sends, [])
    }

    func testAwkwardNamesPairByteForByte() {
        let from = SyncPath(bytes: Array("a dir/new\nline $(x) *".utf8) + [0xff])
        let to = SyncPath(bytes: Array("-moved/new\nline $(x) *".utf8) + [0xff])
        let plan = RenamePairing.plan(deleted: [.init(path: from, kind: .regular, size: 5, hash: h3, acked: true)],
                                      created: [.init(path: to, kind: .regular, size: 5, hash: h3)], heldAt: nothingHeld)
        XCTAssertEqual(plan.renames, [.init(from: from, to: to, hash: h3)])
    }
}
