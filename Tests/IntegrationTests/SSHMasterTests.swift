@testable import FanSync
import Foundation
import Glibc
import XCTest

/// The ssh master connection every transfer to a target goes through.
final class SSHMasterTests: XCTestCase {
    /// Started from a thread that then ends, as a worker does when the mirror stops or runs
    /// fewer workers after a reload, the master stays up for the transfers of the others.
    /// (A child dies with the thread that started it: the master did, and the transfers
    /// still running through it failed with rsync's exit 255.)
    func testMasterOutlivesTheThreadThatStartedIt() throws {
        let server = try SSHServer()
        defer { server.stop() }
        let src = Harness.tempDirectory("master-src"), dst = server.makeBackupDirectory("master-dst")
        defer { Harness.removeTree(src); Harness.removeTree(dst) }
        writeFile(src, "a file", "content\n")
        var config = MirrorConfig(name: "m", source: Array(src.utf8), target: try TargetParser.parse(server.target(dst)))
        config.ssh.options = server.sshOptions
        let transport = try Transport(config: config)
        defer { transport.close() }

        let starter = WorkerThread(name: "short-lived") { transport.ensureMaster() }
        starter.join()
        usleep(300_000)   // the parent-death signal, had there been one, has arrived
        let check = try Subprocess.run(transport.sshArguments + ["-O", "check", "--", "\(server.user)@127.0.0.1"])
        XCTAssertEqual(check.status, 0, "the master is gone: \(check.errorText)")

        guard case .done = transport.syncTree(.root, deletes: true, excludePatterns: []) else { return XCTFail("transfer failed") }
        XCTAssertEqual(readBytes(Array((dst + "/a file").utf8)), Array("content\n".utf8))
    }
}
