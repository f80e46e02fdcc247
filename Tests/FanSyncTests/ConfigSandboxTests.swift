import Foundation
import XCTest
@testable import FanSync

/// The config runs in a sandbox: it can compute, not touch the system.
final class ConfigSandboxTests: XCTestCase {
    var f: ConfigFixture!
    override func setUp() { f = ConfigFixture() }
    override func tearDown() { f = nil }

    var ok: String { "sync { default.rsync, source = 'src', target = '/t' }\n" }

    func refused(_ code: String, _ words: String, file: StaticString = #filePath, line: UInt = #line) {
        let e = f.error(code + "\n" + ok, file: file, line: line)
        XCTAssertTrue(e.description.contains(words), "\(code): \(e.description)", file: file, line: line)
        XCTAssertEqual(e.file, f.configPath, file: file, line: line)
    }

    func testNoIONoExecuteNoFiles() {
        refused("io.open('/etc/passwd')", "global 'io'")
        refused("os.execute('touch /tmp/pwned')", "field 'execute'")
        refused("os.remove('/tmp/x')", "field 'remove'")
        refused("os.rename('/tmp/x', '/tmp/y')", "field 'rename'")
        refused("os.exit(1)", "field 'exit'")
        refused("dofile('/etc/x.lua')", "global 'dofile'")
        refused("loadfile('/etc/x.lua')()", "global 'loadfile'")
        refused("debug.getinfo(1)", "global 'debug'")
        refused("package.loadlib('x', 'y')", "global 'package'")
        refused("collectgarbage()", "global 'collectgarbage'")
        refused("string.dump(print)", "field 'dump'")
        refused("_G.io.open('/x')", "field 'io'")
    }

    func testBytecodeIsRefused() {
        refused("assert(load(('').dump(function() return 1 end)))", "binary chunk")
        refused("assert(load('return 1', 'x', 'b'))", "only text chunks")
        refused("assert(load('return 1', 'x', 'bt'))", "only text chunks")
    }

    func testTextLoadRunsInTheSandbox() throws {
        let loaded = try f.load("local s = load('return io')()\nassert(s == nil, 'io leaked')\n"
                                + "load('sync { default.rsync, source = \"src\", target = \"/t\" }')()")
        XCTAssertEqual(loaded.mirrors.count, 1)
    }

    func testRequireOnlyFromTheConfigDirectory() throws {
        f.write("mirrors/common.lua", "return { delay = 4, exclude = { '*.log' } }")
        let loaded = try f.load("local common = require 'mirrors.common'\nsync { default.rsync, common, source = 'src', target = '/t' }")
        XCTAssertEqual(loaded.mirrors.first?.delay, 4)
        XCTAssertEqual(loaded.mirrors.first?.excludes, ["*.log"])

        // A file outside the directory: by a path, by dots, by a symbolic link.
        let outside = FileManager.default.temporaryDirectory.path + "/fansync-outside-\(UUID().uuidString).lua"
        try "sync { default.rsync, source = '/', target = '/x' }".write(toFile: outside, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try FileManager.default.createSymbolicLink(atPath: f.dir + "/sneaky.lua", withDestinationPath: outside)
        refused("require 'sneaky'", "outside the config's directory")
        refused("require '../x'", "a module name is")
        refused("require '/etc/passwd'", "a module name is")
        refused("require 'a..b'", "a module name is")
        refused("require 'socket'", "no file")
        refused("require(5)", "module name")
    }

    func testRequiredModulesAreSandboxedAndReportTheirOwnLines() throws {
        f.write("bad.lua", "local x = 1\nio.open('/etc/passwd')\n")
        let e = f.error("require 'bad'\n" + ok)
        XCTAssertEqual(e.file, f.dir + "/bad.lua")
        XCTAssertEqual(e.line, 2)
        XCTAssertTrue(e.message.contains("global 'io'"), e.description)

        f.write("mirror.lua", "sync {\n  default.rsync,\n  source = 'src',\n  target = '/t',\n  dleay = 1,\n}\n")
        let e2 = f.error("require 'mirror'")
        XCTAssertEqual(e2.file, f.dir + "/mirror.lua")
        XCTAssertEqual(e2.syncLine, 1)
        XCTAssertEqual(e2.line, 5)
        XCTAssertEqual(e2.key, "dleay")

        f.write("loop_a.lua", "require 'loop_b'")
        f.write("loop_b.lua", "require 'loop_a'")
        let e3 = f.error("require 'loop_a'\n" + ok)
        XCTAssertEqual(e3.file, f.dir + "/loop_b.lua")
        XCTAssertTrue(e3.message.contains("require each other in a loop"), e3.description)
    }

    func testWhatAConfigMayUse() throws {
        let loaded = try f.load("""
        local host = os.getenv('HOME') and 'backup' or 'other'
        assert(type(os.time()) == 'number' and type(os.clock()) == 'number' and os.date('%Y') ~= nil)
        local parts = {}
        for w in string.gmatch('a,b,c', '[^,]+') do table.insert(parts, w:upper()) end
        assert(table.concat(parts) == 'ABC' and math.max(1, 2) == 2 and utf8.char(233) == 'é')
        assert(select('#', unpack({1, 2, 3})) == 3 and tonumber('7') == 7 and tostring(1) == '1')
        local ok, err = pcall(error, 'caught')
        assert(not ok and err == 'caught')
        print('config says hello', 42, nil)
        for k, v in pairs({ x = 1 }) do assert(k == 'x') end
        sync { default.rsyncssh, source = 'src', host = host, targetdir = '/b/' .. string.format('%02d', 7) }
        """)
        XCTAssertEqual(loaded.mirrors.first?.target.description, "backup:/b/07")
    }

    func testEndlessLoopsStop() {
        for code in ["while true do end", "while true do pcall(function() while true do end end) end",
                     "local function f() return f() end f()"] {
            do {
                _ = try ConfigLoader.load(sourceBytes: Array((code + "\n" + ok).utf8), chunkName: f.configPath,
                                          directory: f.dir, instructionLimit: 2_000_000)
                XCTFail("\(code) loaded")
            } catch let e as ConfigError {
                XCTAssertTrue(e.message.contains("too long"), "\(code): \(e.description)")
            } catch { XCTFail("\(error)") }
        }
    }

    func testMemoryIsBounded() {
        refused("local s = ('x'):rep(1024 * 1024 * 1024)", "memory")
    }

    func testStackOverflowIsAnError() {
        refused("local function f() return 1 + f() end f()", "stack overflow")
    }
}
