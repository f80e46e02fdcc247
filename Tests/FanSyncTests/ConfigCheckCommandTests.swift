import Foundation
import XCTest
@testable import FanSync

final class ConfigCheckCommandTests: XCTestCase {
    /// Runs check-config with stdout and stderr captured.
    func run(_ args: [String]) -> (code: Int32, out: String, err: String) {
        let dir = FileManager.default.temporaryDirectory.path
        let outPath = dir + "/fansync-cc-out-\(UUID().uuidString)", errPath = dir + "/fansync-cc-err-\(UUID().uuidString)"
        let outFd = open(outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600), errFd = open(errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let savedOut = dup(1), savedErr = dup(2)
        fflush(nil)
        dup2(outFd, 1); dup2(errFd, 2)
        let code = CheckConfigCommand.run(arguments: args)
        dup2(savedOut, 1); dup2(savedErr, 2)
        close(savedOut); close(savedErr); close(outFd); close(errFd)
        defer { try? FileManager.default.removeItem(atPath: outPath); try? FileManager.default.removeItem(atPath: errPath) }
        return (code, (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "", (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }

    func testGoodConfigPrintsOneBlockPerSync() {
        let f = ConfigFixture()
        f.write("fansync.conf.lua", """
        settings { statusFile = '/run/fansync.status' }
        sync { default.rsync, source = 'src', target = 'dst', delete = 'running', exclude = { '*.tmp' } }
        sync { default.rsyncssh, source = 'src', host = 'b@backup', targetdir = '/b', maxProcesses = 4,
               ssh = { port = 2222, options = { StrictHostKeyChecking = 'no' } }, rsync = { compress = true } }
        """)
        let r = run([f.configPath])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(r.out.contains("OK, 2 mirrors"), r.out)
        XCTAssertTrue(r.out.contains("sync{} #1 \"src\" (\(f.configPath):2, default.rsync)"), r.out)
        XCTAssertTrue(r.out.contains("sync{} #2 \"src-2\" (\(f.configPath):3, default.rsyncssh)"), r.out)
        XCTAssertTrue(r.out.contains("rsync to the local directory \(f.dir)/dst"), r.out)
        XCTAssertTrue(r.out.contains("rsync over ssh to b@backup, port 2222"), r.out)
        XCTAssertTrue(r.out.contains("running (only live changes delete)"), r.out)
        XCTAssertTrue(r.out.contains("\"*.tmp\""), r.out)
        XCTAssertTrue(r.out.contains("4 rsyncs at once"), r.out)
        XCTAssertTrue(r.out.contains("rsync -ltz"), r.out)
        XCTAssertTrue(r.out.contains("-o StrictHostKeyChecking=no"), r.out)
        XCTAssertTrue(r.err.contains("warning:") && r.err.contains("host key checking"), r.err)
    }

    func testBadConfigPrintsEveryErrorAndExitsOne() {
        let f = ConfigFixture()
        f.write("fansync.conf.lua", """
        sync {
            default.rsync,
            source = 'src',
            target = 'dst',
            delay = 'soon',
            onMove = true,
        }
        """)
        let r = run([f.configPath])
        XCTAssertEqual(r.code, 1)
        XCTAssertEqual(r.out, "")
        XCTAssertTrue(r.err.contains("error: \(f.configPath):5: sync{} #1 (line 1, source \"\(f.dir)/src\"): 'delay': must be a number of seconds >= 0, got the string \"soon\""), r.err)
        XCTAssertTrue(r.err.contains("\(f.configPath):6: sync{} #1"), r.err)
        XCTAssertTrue(r.err.contains("'onMove': not supported"), r.err)
        XCTAssertTrue(r.err.contains("2 errors; the config cannot be used"), r.err)
    }

    func testSyntaxErrorAndMissingFile() {
        let f = ConfigFixture()
        f.write("fansync.conf.lua", "sync { default.rsync,\n source = 'src' target = 'x' }")
        var r = run([f.configPath])
        XCTAssertEqual(r.code, 1)
        XCTAssertTrue(r.err.contains("\(f.configPath):2: '}' expected"), r.err)
        r = run([f.dir + "/missing.lua"])
        XCTAssertEqual(r.code, 1)
        XCTAssertTrue(r.err.contains("cannot read the config: No such file or directory"), r.err)
    }

    func testUsage() {
        XCTAssertEqual(run([]).code, 2)
        XCTAssertEqual(run(["a", "b"]).code, 2)
        XCTAssertEqual(run(["--bogus"]).code, 2)
        let h = run(["--help"])
        XCTAssertEqual(h.code, 0)
        XCTAssertTrue(h.out.contains("usage: fansync check-config FILE"))
    }

    func testAConfigNamedLikeAnOption() {
        let f = ConfigFixture()
        f.write("-odd name.lua", "sync { default.rsync, source = 'src', target = 'dst' }")
        let r = run(["--", f.dir + "/-odd name.lua"])
        XCTAssertEqual(r.code, 0, r.err)
    }
}
