import XCTest
@testable import FanSync
import CLinux
import Glibc
import Synchronization

/// What `Mirror.coresFree` reads to decide whether a second job may start beside a first.
final class SystemLoadTests: XCTestCase {
    func testRunnableTasksCountTheCaller() {
        XCTAssertGreaterThanOrEqual(clinux_usable_cpus(), 1)
        // This thread is running while it reads /proc/loadavg.
        XCTAssertGreaterThanOrEqual(clinux_runnable_tasks(), 1)
    }

    func testNoCoreFreeWhileEveryCoreSpins() {
        let cpus = Int(clinux_usable_cpus())
        final class Flag: Sendable { let stop = Atomic<Bool>(false) }
        let flag = Flag()
        let spinners = (0..<cpus).map { _ in
            WorkerThread(name: "spin") { while !flag.stop.load(ordering: .relaxed) {} }
        }
        usleep(50_000)
        // As many spinning threads as cores, and the caller: two more would find no core.
        var busySeen = false
        for _ in 0..<50 where !busySeen {
            busySeen = !Mirror.coresFree(2)
            usleep(2_000)
        }
        flag.stop.store(true, ordering: .relaxed)
        for s in spinners { s.join() }
        XCTAssertTrue(busySeen, "coresFree(2) never saw the spinning threads")
    }
}
