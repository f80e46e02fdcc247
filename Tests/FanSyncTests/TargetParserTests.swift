import XCTest
@testable import FanSync

final class TargetParserTests: XCTestCase {
    func ssh(_ user: String?, _ host: String, _ port: Int?, _ dir: String) -> Target {
        .ssh(SSHTarget(user: user, host: host, port: port, directory: Array(dir.utf8)))
    }

    func parse(_ s: String) throws -> Target { try TargetParser.parse(s, currentDirectory: "/home/me") }

    func failure(_ s: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let t = try parse(s)
            XCTFail("\(s) parsed as \(t)", file: file, line: line)
        } catch let e as TargetParseError {
            XCTAssertTrue(e.description.contains("invalid target"), file: file, line: line)
            return e.message
        } catch { XCTFail("\(error)", file: file, line: line) }
        return ""
    }

    func testLocalPaths() throws {
        XCTAssertEqual(try parse("/backup/ws/"), .local(path: Array("/backup/ws".utf8)))
        XCTAssertEqual(try parse("/backup//./ws"), .local(path: Array("/backup/ws".utf8)))
        XCTAssertEqual(try parse("backup"), .local(path: Array("/home/me/backup".utf8)))
        XCTAssertEqual(try parse("./a:b"), .local(path: Array("/home/me/a:b".utf8)))
        XCTAssertEqual(try parse("dir/x:y"), .local(path: Array("/home/me/dir/x:y".utf8)))
        XCTAssertEqual(try parse("/"), .local(path: Array("/".utf8)))
        XCTAssertEqual(try parse("../up"), .local(path: Array("/home/me/../up".utf8)))
        XCTAssertEqual(try parse("./C:/x"), .local(path: Array("/home/me/C:/x".utf8)))
        XCTAssertEqual(try parse("file:///srv/b"), .local(path: Array("/srv/b".utf8)))
        // Names a shell would mangle are just bytes here.
        XCTAssertEqual(try parse("/b/my dir/$(rm -rf x)/'q'\"/*"), .local(path: Array("/b/my dir/$(rm -rf x)/'q'\"/*".utf8)))
        XCTAssertEqual(try parse("-leading"), .local(path: Array("/home/me/-leading".utf8)))
        let invalid: [UInt8] = [0x2f, 0x62, 0xff, 0x0a, 0x2f]
        XCTAssertEqual(try TargetParser.parse(bytes: invalid), .local(path: [0x2f, 0x62, 0xff, 0x0a]))
    }

    func testRelativeLocalUsesTheProcessDirectoryByDefault() throws {
        let cwd = TargetParser.currentWorkingDirectory()
        XCTAssertEqual(try TargetParser.parse("rel"), .local(path: TargetParser.normalizeLocal(cwd + Array("/rel".utf8))))
    }

    func testScpStyle() throws {
        XCTAssertEqual(try parse("cpu-backup:/workspace"), ssh(nil, "cpu-backup", nil, "/workspace"))
        XCTAssertEqual(try parse("root@cpu-backup:/workspace/"), ssh("root", "cpu-backup", nil, "/workspace"))
        XCTAssertEqual(try parse("host:data/x"), ssh(nil, "host", nil, "data/x"))
        XCTAssertEqual(try parse("host:"), ssh(nil, "host", nil, "."))
        XCTAssertEqual(try parse("host:~/trg/"), ssh(nil, "host", nil, "trg"))
        XCTAssertEqual(try parse("host:~"), ssh(nil, "host", nil, "."))
        XCTAssertEqual(try parse("b@host:2222:/srv/b"), ssh("b", "host", 2222, "/srv/b"))
        XCTAssertEqual(try parse("host:2222:rel"), ssh(nil, "host", 2222, "rel"))
        XCTAssertEqual(try parse("host:./2024:data"), ssh(nil, "host", nil, "2024:data"))
        XCTAssertEqual(try parse("host:2024"), ssh(nil, "host", nil, "2024"), "digits without a second colon are a directory")
        XCTAssertEqual(try parse("10.0.0.5:/b"), ssh(nil, "10.0.0.5", nil, "/b"))
        XCTAssertEqual(try parse("host:/dir with space/$(x)"), ssh(nil, "host", nil, "/dir with space/$(x)"))
    }

    func testIPv6() throws {
        XCTAssertEqual(try parse("[::1]:/b"), ssh(nil, "::1", nil, "/b"))
        XCTAssertEqual(try parse("u@[fe80::1%eth0]:2222:dir"), ssh("u", "fe80::1%eth0", 2222, "dir"))
        XCTAssertEqual(try parse("ssh://[::1]:22/b"), ssh(nil, "::1", 22, "/b"))
        XCTAssertEqual(try parse("ssh://u@[2001:db8::2]/b"), ssh("u", "2001:db8::2", nil, "/b"))
        let t = SSHTarget(user: "u", host: "::1", port: nil, directory: Array("/b".utf8))
        XCTAssertEqual(t.rsyncHost, "u@[::1]")
        XCTAssertEqual(t.destination, "u@::1")
        XCTAssertEqual(t.description, "u@[::1]:/b")
        XCTAssertTrue(failure("[::1/b").contains("never closed"))
        XCTAssertTrue(failure("[::1]/b").contains("followed by ':dir'"))
        XCTAssertTrue(failure("ssh://::1/b").contains("brackets"))
    }

    func testSSHURLs() throws {
        XCTAssertEqual(try parse("ssh://host/srv/b"), ssh(nil, "host", nil, "/srv/b"))
        XCTAssertEqual(try parse("ssh://host//srv/b"), ssh(nil, "host", nil, "/srv/b"))
        XCTAssertEqual(try parse("ssh://u@host:2200/~/rel/"), ssh("u", "host", 2200, "rel"))
        XCTAssertEqual(try parse("ssh://host/~"), ssh(nil, "host", nil, "."))
        XCTAssertEqual(try parse("SSH://host/"), ssh(nil, "host", nil, "/"))
        XCTAssertTrue(failure("ssh://host").contains("needs a directory"))
        XCTAssertTrue(failure("ssh://host:99999/x").contains("1 to 65535"))
        XCTAssertTrue(failure("ssh://host:/x").contains("port"))
        XCTAssertTrue(failure("ssh:///x").contains("empty"))
    }

    func testDescriptionRoundTrips() throws {
        for s in ["host:/a/b", "u@host:rel", "host:.", "ssh://u@host:2222/abs", "ssh://host:2222/~/rel", "ssh://host:2222/~",
                  "u@[::1]:/x", "ssh://[::1]:2222/x"] {
            let t = try parse(s)
            XCTAssertEqual(t.description, s)
            XCTAssertEqual(try parse(t.description), t, s)
        }
    }

    func testErrors() {
        XCTAssertTrue(failure("").contains("empty"))
        XCTAssertTrue(failure("host::module").contains("rsync daemon"))
        XCTAssertTrue(failure("rsync://host/module").contains("rsync daemon"))
        XCTAssertTrue(failure("ftp://host/x").contains("unsupported scheme"))
        XCTAssertTrue(failure(":dir").contains("./:dir"))
        XCTAssertTrue(failure("@host:/x").contains("user name"))
        XCTAssertTrue(failure("-oProxyCommand=x:/d").contains("cannot start with '-'"))
        XCTAssertTrue(failure("-u@host:/d").contains("cannot start with '-'"))
        XCTAssertTrue(failure("my host:/d").contains("contains \" \""))
        XCTAssertTrue(failure("C:\\Users\\x").contains("Windows"))
        XCTAssertTrue(failure("host:0:/x").contains("1 to 65535"))
        XCTAssertTrue(failure("~/backup").contains("'~' is not expanded"))
        XCTAssertTrue(failure("host:~bob/x").contains("~user"))
        XCTAssertTrue(failure("a\u{0}b").contains("NUL"))
    }

    func testParseHost() throws {
        XCTAssertTrue(try TargetParser.parseHost("root@cpu-backup") == ("root", "cpu-backup"))
        XCTAssertTrue(try TargetParser.parseHost("[::1]") == (nil, "::1"))
        XCTAssertTrue(try TargetParser.parseHost("::1") == (nil, "::1"))
        XCTAssertThrowsError(try TargetParser.parseHost("host:/dir"))
        XCTAssertThrowsError(try TargetParser.parseHost(""))
        XCTAssertThrowsError(try TargetParser.parseHost("-oX"))
    }
}
