import XCTest
@testable import FanSync

final class SyncPathTests: XCTestCase {
    func testNormalizingAndParent() {
        let p = SyncPath("/a//b/./c/")
        XCTAssertEqual(p.description, "a/b/c")
        XCTAssertEqual(p.parent, SyncPath("a/b"))
        XCTAssertEqual(p.name, Array("c".utf8))
        XCTAssertTrue(p.isInside(SyncPath("a")))
        XCTAssertFalse(SyncPath("ab/c").isInside(SyncPath("a")))
        XCTAssertEqual(p.rebased(from: SyncPath("a/b"), to: SyncPath("x")), SyncPath("x/c"))
        XCTAssertEqual(SyncPath.root.appending(Array("n".utf8)), SyncPath("n"))
    }

    func testOrderKeepsDirectoriesTogether() {
        let sorted = [SyncPath("a0"), SyncPath("a/b"), SyncPath("a")].sorted()
        XCTAssertEqual(sorted, [SyncPath("a"), SyncPath("a/b"), SyncPath("a0")])
    }

    func testInvalidUTF8IsEscapedForDisplayOnly() {
        let p = SyncPath(bytes: [0x66, 0xff, 0x0a])
        XCTAssertEqual(p.description, "f\\xff\\x0a")
        XCTAssertEqual(p.bytes, [0x66, 0xff, 0x0a])
    }
}
