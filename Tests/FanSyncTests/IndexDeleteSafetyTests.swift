import XCTest
@testable import FanSync

final class IndexDeleteSafetyTests: XCTestCase {
    private func facts(exists: Bool = true, entries: Int = 10, dev: UInt64? = 0x803, recorded: UInt64? = 0x803,
                       index: Int = 100, deletes: Int = 5) -> DeleteSafety.Facts {
        .init(rootExists: exists, rootEntryCount: entries, rootDevice: dev, recordedDevice: recorded, indexCount: index, deleteCount: deletes)
    }

    func testNormalDeletesAreAllowed() {
        XCTAssertEqual(DeleteSafety.decide(facts()), .allow)
        XCTAssertEqual(DeleteSafety.decide(facts(deletes: 50)), .allow, "exactly the maximum share")
        XCTAssertEqual(DeleteSafety.decide(facts(recorded: nil)), .allow, "no device recorded yet")
        XCTAssertEqual(DeleteSafety.decide(facts(exists: false, deletes: 0)), .allow, "nothing to delete, nothing to decide")
    }

    func testMissingRootRefuses() {
        XCTAssertEqual(DeleteSafety.decide(facts(exists: false, entries: 0, dev: nil)), .refuse(.rootMissing))
        // Even an operator's confirmation does not override it.
        XCTAssertEqual(DeleteSafety.decide(facts(exists: false), policy: .init(massDeleteConfirmed: true)), .refuse(.rootMissing))
    }

    func testEmptyRootWhileIndexHoldsFilesRefuses() {
        let d = DeleteSafety.decide(facts(entries: 0, deletes: 100), policy: .init(massDeleteConfirmed: true))
        XCTAssertEqual(d, .refuse(.rootEmpty(indexCount: 100)))
        XCTAssertTrue(d.description.contains("empty"), d.description)
    }

    func testOtherDeviceRefuses() {
        let d = DeleteSafety.decide(facts(dev: 0x2a, recorded: 0x803))
        XCTAssertEqual(d, .refuse(.otherDevice(recorded: 0x803, now: 0x2a)))
        XCTAssertTrue(d.description.contains("8:3"), d.description)
        XCTAssertTrue(d.description.contains("0:42"), d.description)
        XCTAssertEqual(DeleteSafety.decide(facts(dev: nil)), .refuse(.deviceUnknown))
    }

    func testMassDeleteIsHeldUntilConfirmed() {
        let d = DeleteSafety.decide(facts(deletes: 51))
        XCTAssertEqual(d, .hold(deleteCount: 51, indexCount: 100, maxShare: 0.5))
        XCTAssertTrue(d.description.contains("confirm-deletes"), d.description)
        XCTAssertTrue(d.description.contains("51%"), d.description)
        XCTAssertEqual(DeleteSafety.decide(facts(deletes: 51), policy: .init(massDeleteConfirmed: true)), .allow)
        XCTAssertEqual(DeleteSafety.decide(facts(deletes: 51), policy: .init(maxDeleteShare: 0.6)), .allow)
        XCTAssertEqual(DeleteSafety.decide(facts(deletes: 1), policy: .init(maxDeleteShare: 0)), .hold(deleteCount: 1, indexCount: 100, maxShare: 0))
    }
}
