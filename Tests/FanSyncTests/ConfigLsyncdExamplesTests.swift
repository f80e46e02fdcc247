import XCTest
@testable import FanSync

/// sync{} blocks as lsyncd's manual and its shipped examples write them.
final class ConfigLsyncdExamplesTests: XCTestCase {
    var f: ConfigFixture!
    override func setUp() { f = ConfigFixture() }
    override func tearDown() { f = nil }

    /// /usr/share/doc/lsyncd/examples/lrsync.lua
    func testExampleLrsync() throws {
        let loaded = try f.load("""
        ----
        -- User configuration file for lsyncd.
        --
        -- Simple example for default rsync.
        --
        settings {
        \tstatusFile = "/tmp/lsyncd.stat",
        \tstatusInterval = 1,
        }

        sync{
        \tdefault.rsync,
        \tsource="src",
        \ttarget="trg",
        }
        """)
        XCTAssertEqual(loaded.settings.statusFile, "/tmp/lsyncd.stat")
        XCTAssertEqual(loaded.settings.statusInterval, 1)
        XCTAssertEqual(loaded.mirrors[0].target, .local(path: bytes(f.dir + "/trg")))
    }

    /// /usr/share/doc/lsyncd/examples/lrsyncssh.lua
    func testExampleLrsyncssh() throws {
        let m = try XCTUnwrap(f.mirror("""
        sync{default.rsyncssh, source="src", host="localhost", targetdir="dst/"}
        """))
        XCTAssertEqual(m.target, .ssh(SSHTarget(user: nil, host: "localhost", port: nil, directory: bytes("dst"))))
    }

    /// Manual, "Config Layer 4: Default Config": default.rsync with rsync options.
    func testManualRsyncWithOptions() throws {
        let m = try XCTUnwrap(f.mirror("""
        sync {
            default.rsync,
            source    = "/home/user/src/",
            target    = "foohost.com:~/trg/",
            delay     = 15,
            rsync     = {
                binary   = "/usr/local/bin/rsync",
                archive  = true,
                compress = true
            }
        }
        """))
        XCTAssertEqual(m.source, bytes("/home/user/src"))
        XCTAssertEqual(m.target, .ssh(SSHTarget(user: nil, host: "foohost.com", port: nil, directory: bytes("trg"))))
        XCTAssertEqual(m.delay, 15)
        XCTAssertEqual(m.rsync.binary, "/usr/local/bin/rsync")
        XCTAssertEqual(m.rsync.flagArguments, ["-az"])
    }

    /// Manual: default.rsyncssh, and with ssh = { port = ... }.
    func testManualRsyncssh() throws {
        let loaded = try f.load("""
        sync {
            default.rsyncssh,
            source    = "/home/user/src/",
            host      = "foohost.com",
            targetdir = "~/trg/",
        }
        sync {
            default.rsyncssh,
            source = "/home/user/src2/",
            host = "foohost.com",
            targetdir = "~/trg2/",
            ssh = {
                port = 1234
            }
        }
        """)
        XCTAssertEqual(loaded.mirrors[0].target.description, "foohost.com:trg")
        XCTAssertEqual(loaded.mirrors[1].target, .ssh(SSHTarget(user: nil, host: "foohost.com", port: 1234, directory: bytes("trg2"))))
        XCTAssertEqual(loaded.mirrors[1].target.description, "ssh://foohost.com:1234/~/trg2")
        XCTAssertEqual(loaded.mirrors.map(\.name), ["src", "src2"])
    }

    /// Manual, "Config Layer 4": exclude lists, excludeFrom and delete.
    func testManualExcludesAndDelete() throws {
        f.write("lsyncd.exclude", "*.bak\n/tmp/\n")
        let loaded = try f.load("""
        sync {
            default.rsync,
            source = "/home/user/src/",
            target = "/home/user/dst/",
            exclude = { '.bak' , '.tmp' },
            delete = 'running',
        }
        sync {
            default.rsync,
            source = "/home/user/src2/",
            target = "/home/user/dst2/",
            excludeFrom = "\(f.dir)/lsyncd.exclude",
            delete = false,
        }
        """)
        XCTAssertEqual(loaded.mirrors[0].excludes, [".bak", ".tmp"])
        XCTAssertEqual(loaded.mirrors[0].delete, .running)
        XCTAssertEqual(loaded.mirrors[1].excludes, ["*.bak", "/tmp/"])
        XCTAssertEqual(loaded.mirrors[1].delete, .never)
    }

    /// Manual: settings with nodaemon, and rsync _extra.
    func testManualSettingsAndExtra() throws {
        let loaded = try f.load("""
        settings {
            logfile    = "/tmp/lsyncd.log",
            statusFile = "/tmp/lsyncd.status",
            nodaemon   = true,
        }
        sync {
            default.rsync,
            source = "/home/user/src/",
            target = "remote:/backups/src",
            rsync = {
                archive = true,
                _extra = { "--omit-dir-times", "--bwlimit=50000" },
            },
        }
        """)
        XCTAssertTrue(loaded.settings.nodaemon)
        XCTAssertEqual(loaded.mirrors[0].rsync.extra, ["--omit-dir-times"])
        XCTAssertEqual(loaded.mirrors[0].rsync.bwlimit, 50000)
    }

    /// lsyncd 2.0's settings assignment and a typical user config with several targets.
    func testOldStyleSettingsAndManyTargets() throws {
        let loaded = try f.load("""
        settings = {
            logfile = "/var/log/lsyncd/lsyncd.log",
            statusFile = "/var/log/lsyncd/lsyncd-status.log",
            statusInterval = 20,
            insist = true,
            inotifyMode = "CloseWrite",
        }
        servers = { "web1.example.com", "web2.example.com" }
        for _, server in ipairs(servers) do
            sync {
                default.rsyncssh,
                source = "/var/www/html",
                host = "deploy@" .. server,
                targetdir = "/var/www/html",
                excludeFrom = "\(f.dir)/excludes",
                delay = 5,
                rsync = { archive = true, compress = false, _extra = { "--omit-dir-times" } },
                ssh = { identityFile = "/home/deploy/.ssh/id_ed25519", options = { StrictHostKeyChecking = "yes" } },
            }
        end
        """.replacingOccurrences(of: "excludeFrom = \"\(f.dir)/excludes\",", with: "exclude = { '*.swp', 'cache/' },"))
        XCTAssertTrue(loaded.settings.insist)
        XCTAssertEqual(loaded.settings.statusInterval, 20)
        XCTAssertEqual(loaded.mirrors.count, 2)
        XCTAssertEqual(loaded.mirrors.map(\.name), ["html", "html-2"])
        XCTAssertEqual(loaded.mirrors[1].target.description, "deploy@web2.example.com:/var/www/html")
        XCTAssertEqual(loaded.mirrors[1].ssh.options, ["StrictHostKeyChecking=yes"])
        XCTAssertEqual(loaded.mirrors[1].ssh.identityFile, "/home/deploy/.ssh/id_ed25519")
    }

    /// A config with a custom action, as the lsyncd manual's layer 1-3 examples write them.
    func testManualCustomActionIsRefusedWithAReason() {
        let e = f.error("""
        local bash = {
            delay = 5,
            maxProcesses = 3,
            onCreate = "cp -r ^sourcePathname ^targetPathname",
            onModify = "cp -r ^sourcePathname ^targetPathname",
        }
        sync { bash, source = "src", target = "/tmp/dst" }
        """)
        XCTAssertTrue(e.allErrors.contains { $0.key == "onCreate" && $0.message.contains("runs no Lua code per event") }, e.description)
        XCTAssertFalse(e.allErrors.contains { $0.message.contains("no preset") }, "the hooks are the real problem")
        XCTAssertEqual(e.allErrors.first?.line, 4, "the line of onCreate inside the layer table")
    }
}
