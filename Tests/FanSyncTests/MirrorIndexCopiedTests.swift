import XCTest
@testable import FanSync

#if canImport(Glibc)
import Glibc
#endif

/// What the local copier records waits to be written with others (`commitCopied`), and
/// every use of the index sees it as if written: a batch's plan, a lookup, the close.
final class MirrorIndexCopiedTests: XCTestCase {
    private var dir: [UInt8] = []
    private var source: [UInt8] { dir + Array("/src".utf8) }
    private var state: [UInt8] { dir + Array("/state".utf8) }

    override func setUpWithError() throws {
        dir = try RulesTestSupport.makeTemporaryDirectory("mirror-index")
        try RulesTestSupport.makeDirectories(source + Array("/d".utf8))
    }
    override func tearDown() { RulesTestSupport.removeTree(dir) }

    private func openIndex() throws -> MirrorIndex {
        let config = MirrorConfig(name: "t", source: source, target: .local(path: dir + Array("/dst".utf8)))
        return try MirrorIndex(config: config, stateRoot: state, allowMassDelete: false, log: .quiet)
    }

    /// A record for `rel` (a file with `content`, or a directory when nil), as the copier makes it.
    private func record(_ items: [(String, [UInt8]?)]) throws -> LocalCopier.Record {
        let r = LocalCopier.Record()
        for (rel, content) in items {
            let p = source + [0x2F] + Array(rel.utf8)
            if let content { try RulesTestSupport.writeFile(p, content) }
            let st = try XCTUnwrap(FileStat.of(p), rel)
            r.add(SyncPath(rel), HashedEntry(stat: st, content: content.map { ContentHash.of($0) }))
        }
        return r
    }

    /// A burst's batch: the directory and 70 new files in it.
    private func newFiles(_ range: Range<Int>) throws -> [SyncPath] {
        try range.map { i in
            try RulesTestSupport.writeFile(source + Array("/d/new \(i)".utf8), Array("new \(i)".utf8))
            return SyncPath("d/new \(i)")
        }
    }

    func testWaitingRecordsAreSeenByEveryUse() throws {
        let content = Array("copied\n".utf8)
        do {
            let index = try openIndex()
            XCTAssertFalse(index.commitCopied(try record([("d", nil), ("d/copied", content)])), "everything hashed")
            XCTAssertEqual(index.copiedWaiting, 2)

            // A batch of new paths (its directory recorded as one): new files, not hashed first;
            // the records keep waiting.
            let fresh = try newFiles(0..<70)
            XCTAssertTrue(index.plan([SyncPath("d")] + fresh, deletes: true, localCopy: true).copierRecords)
            XCTAssertEqual(index.copiedWaiting, 2)
            // A batch with the copied file in it: the index knows it, so it is planned (hashed,
            // compared with what was recorded).
            let again = index.plan([SyncPath("d/copied")] + fresh, deletes: true, localCopy: true)
            XCTAssertFalse(again.copierRecords)
            XCTAssertEqual(again.skipped, 1, "the copied file, unchanged, is not sent again")
            XCTAssertEqual(index.copiedWaiting, 0, "written for the plan's look-ups")

            let e = try XCTUnwrap(index.withIndex { try $0.lookup(SyncPath("d/copied")) } ?? nil)
            XCTAssertEqual(e.wholeHash, ContentHash.of(content).whole)
            XCTAssertTrue(e.acked)
            XCTAssertEqual(index.withIndex { try $0.lookup(SyncPath("d")) }??.kind, .directory)
            // Written now: found by its own look-up (its directory holds entries), while a
            // batch of new paths in that directory still needs none each.
            XCTAssertFalse(index.plan(fresh + [SyncPath("d/copied")], deletes: true, localCopy: true).copierRecords)
            XCTAssertTrue(index.plan(fresh, deletes: true, localCopy: true).copierRecords)

            // Recorded, then the daemon stops: written on close.
            _ = index.commitCopied(try record([("d/last", Array("last".utf8))]))
            XCTAssertEqual(index.copiedWaiting, 1)
            index.close()
        }
        let reopened = try Index(file: SyncPath.displayString(MirrorIndex.indexFile(in: state + Array("/t".utf8))))
        XCTAssertNotNil(try reopened.lookup(SyncPath("d/last")))
        XCTAssertEqual(try reopened.lookup(SyncPath("d/copied"))?.wholeHash, ContentHash.of(content).whole)
    }

    /// Written at once when many wait (memory stays bounded in a long burst), and when the
    /// mirror asks (it is idle).
    func testWrittenWhenManyWaitOrWhenAsked() throws {
        let index = try openIndex()
        defer { index.close() }
        let st = try XCTUnwrap(FileStat.of(source + Array("/d".utf8)))
        let r = LocalCopier.Record()
        for i in 0..<(MirrorIndex.copiedLimit - 1) { r.add(SyncPath("d/f\(i)"), HashedEntry(stat: st)) }
        _ = index.commitCopied(r)
        XCTAssertEqual(index.copiedWaiting, MirrorIndex.copiedLimit - 1)
        _ = index.commitCopied(try record([("d/one more", Array("x".utf8))]))
        XCTAssertEqual(index.copiedWaiting, 0)
        XCTAssertEqual(index.withIndex { try $0.count() }, MirrorIndex.copiedLimit)

        _ = index.commitCopied(try record([("d/idle", Array("y".utf8))]))
        XCTAssertEqual(index.copiedWaiting, 1)
        index.writeCopied()
        XCTAssertEqual(index.copiedWaiting, 0)
    }
}
