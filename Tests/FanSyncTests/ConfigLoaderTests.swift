import XCTest
@testable import FanSync

/// Every key of settings and sync{}, valid and invalid.
final class ConfigLoaderTests: XCTestCase {
    var f: ConfigFixture!
    override func setUp() { f = ConfigFixture() }
    override func tearDown() { f = nil }

    /// A sync{} to a local target with `extra` keys added.
    func local(_ extra: String) -> String {
        "sync { default.rsync, source = \"\(f.dir)/src\", target = \"\(f.dir)/dst\", \(extra) }"
    }

    func remote(_ extra: String) -> String {
        "sync { default.rsyncssh, source = \"\(f.dir)/src\", host = \"b@backup\", targetdir = \"/b\", \(extra) }"
    }

    // MARK: - sync{} basics

    func testLocalDefaultsFollowLsyncd() throws {
        let m = try XCTUnwrap(f.mirror(local("")))
        XCTAssertEqual(m.source, bytes(f.dir + "/src"))
        XCTAssertEqual(m.target, .local(path: bytes(f.dir + "/dst")))
        XCTAssertEqual(m.delete, .always)
        XCTAssertTrue(m.initialSync)
        XCTAssertEqual(m.delay, 0)
        XCTAssertFalse(m.rsync.archive, "lsyncd's default.rsync is -lts, not -a")
        XCTAssertTrue(m.rsync.links)
        XCTAssertTrue(m.rsync.times)
        XCTAssertEqual(m.rsync.flagArguments, ["-lt"])
        XCTAssertEqual(m.name, "src")
    }

    func testRelativePathsAreRelativeToTheConfigDirectory() throws {
        let m = try XCTUnwrap(f.mirror("sync { default.rsync, source = 'src/', target = 'trg' }"))
        XCTAssertEqual(m.source, bytes(f.dir + "/src"))
        XCTAssertEqual(m.target, .local(path: bytes(f.dir + "/trg")))
    }

    func testRemoteTargetWithDefaultRsyncIsSSH() throws {
        let m = try XCTUnwrap(f.mirror("sync { default.rsync, source = '\(f.dir)/src', target = 'u@h:2222:/b' }"))
        XCTAssertEqual(m.target, .ssh(SSHTarget(user: "u", host: "h", port: 2222, directory: bytes("/b"))))
        XCTAssertEqual(m.ssh.port, 2222)
    }

    func testRsyncsshHostAndTargetdir() throws {
        let m = try XCTUnwrap(f.mirror(remote("")))
        XCTAssertEqual(m.target, .ssh(SSHTarget(user: "b", host: "backup", port: nil, directory: bytes("/b"))))
        let m2 = try XCTUnwrap(f.mirror("sync { default.rsyncssh, source = 'src', host = '[::1]', targetdir = '~/trg/' }"))
        XCTAssertEqual(m2.target, .ssh(SSHTarget(user: nil, host: "::1", port: nil, directory: bytes("trg"))))
    }

    func testMissingRequiredKeys() {
        var e = f.error("sync { default.rsync, target = '/x' }")
        XCTAssertEqual(e.key, "source")
        XCTAssertTrue(e.message.contains("missing"))
        e = f.error("sync { default.rsync, source = 'src' }")
        XCTAssertEqual(e.key, "target")
        e = f.error("sync { default.rsyncssh, source = 'src', targetdir = '/b' }")
        XCTAssertEqual(e.key, "host")
        e = f.error("sync { default.rssh, source = 'src', host = 'h' }")
        XCTAssertEqual(e.key, "targetdir")
        XCTAssertTrue(e.message.contains("default.rssh"))
        e = f.error("sync { source = 'src', target = '/x' }")
        XCTAssertTrue(e.message.contains("no preset"), e.description)
        e = f.error("settings { logfile = '/tmp/x' }")
        XCTAssertTrue(e.message.contains("no sync{}"), e.description)
    }

    func testPresetMismatches() {
        var e = f.error("sync { default.rsyncssh, source = 'src', target = 'h:/b' }")
        XCTAssertEqual(e.key, "target")
        XCTAssertTrue(e.message.contains("takes host and targetdir"))
        e = f.error("sync { default.rsync, source = 'src', host = 'h', targetdir = '/b' }")
        XCTAssertTrue(e.message.contains("belong to default.rsyncssh"), e.description)
        e = f.error("sync { default.rsync, default.rsyncssh, source = 'src', target = '/x' }")
        XCTAssertTrue(e.message.contains("both"), e.description)
        e = f.error("sync { default.direct, source = 'src', target = '/x' }")
        XCTAssertTrue(e.message.contains("default.direct is not supported"), e.description)
        e = f.error("sync { default.rsyncfoo, source = 'src', target = '/x' }")
        XCTAssertTrue(e.message.contains("default.rsyncfoo does not exist"), e.description)
        XCTAssertEqual(e.line, 1)
    }

    func testSourceAndTargetTypes() {
        var e = f.error("sync { default.rsync, source = 5, target = '/x' }")
        XCTAssertEqual(e.key, "source")
        XCTAssertTrue(e.message.contains("the number 5"), e.description)
        e = f.error("sync { default.rsync, source = 'src', target = {} }")
        XCTAssertEqual(e.key, "target")
        XCTAssertTrue(e.message.contains("a table"))
        e = f.error("sync { default.rsync, source = '~/src', target = '/x' }")
        XCTAssertTrue(e.message.contains("'~' is not expanded"))
        e = f.error("sync { default.rsync, source = 'src', target = 'host::module' }")
        XCTAssertTrue(e.message.contains("rsync daemon"))
        e = f.error("sync { default.rsyncssh, source = 'src', host = 'h:/x', targetdir = '/b' }")
        XCTAssertEqual(e.key, "host")
    }

    func testTargetMustNotOverlapTheSource() {
        var e = f.error("sync { default.rsync, source = 'src', target = 'src/backup' }")
        XCTAssertTrue(e.message.contains("inside the source"), e.description)
        e = f.error("sync { default.rsync, source = 'src', target = '.' }")
        XCTAssertTrue(e.message.contains("contains the source"), e.description)
        e = f.error("sync { default.rsync, source = 'src', target = 'src' }")
        XCTAssertTrue(e.message.contains("is the source itself"), e.description)
        XCTAssertNotNil(f.mirror("sync { default.rsync, source = 'src', target = 'src2' }"), "a sibling with a common prefix is fine")
    }

    func testDelay() throws {
        XCTAssertEqual(f.mirror(local("delay = 15"))?.delay, 15)
        XCTAssertEqual(f.mirror(local("delay = 0.5"))?.delay, 0.5)
        XCTAssertEqual(f.mirror(local("delay = 0"))?.delay, 0)
        for bad in ["delay = -1", "delay = '5'", "delay = true", "delay = 0/0", "delay = math.huge"] {
            let e = f.error(local(bad))
            XCTAssertEqual(e.key, "delay", bad)
            XCTAssertTrue(e.message.contains("seconds >= 0"), e.description)
        }
    }

    func testMaxDelaysAndMaxProcesses() {
        let m = f.mirror(local("maxDelays = 100, maxProcesses = 4"))
        XCTAssertEqual(m?.maxDelays, 100)
        XCTAssertEqual(m?.maxProcesses, 4)
        XCTAssertEqual(f.mirror(remote("maxProcesses = 8"))?.maxProcesses, 8, "unlike lsyncd, rsyncssh may run several")
        XCTAssertEqual(f.error(local("maxProcesses = 0")).key, "maxProcesses")
        XCTAssertEqual(f.error(local("maxProcesses = 1.5")).key, "maxProcesses")
        XCTAssertEqual(f.error(local("maxDelays = -1")).key, "maxDelays")
        XCTAssertEqual(f.error(local("maxDelays = 'x'")).key, "maxDelays")
    }

    func testSettingsMaxProcessesAndMaxDelaysAreDefaults() throws {
        let loaded = try f.load("""
        settings { maxProcesses = 6, maxDelays = 50 }
        \(local(""))
        sync { default.rsync, source = 'src', target = '/elsewhere', maxProcesses = 2 }
        """)
        XCTAssertEqual(loaded.mirrors.map(\.maxProcesses), [6, 2])
        XCTAssertEqual(loaded.mirrors.map(\.maxDelays), [50, 50])
    }

    func testInit() {
        XCTAssertEqual(f.mirror(local("init = false"))?.initialSync, false)
        XCTAssertEqual(f.mirror(local("init = true"))?.initialSync, true)
        let e = f.error(local("init = function() end"))
        XCTAssertEqual(e.key, "init")
        XCTAssertTrue(e.message.contains("init = false"), e.description)
        XCTAssertEqual(f.error(local("init = 'no'")).key, "init")
    }

    func testDelete() {
        XCTAssertEqual(f.mirror(local("delete = true"))?.delete, .always)
        XCTAssertEqual(f.mirror(local("delete = false"))?.delete, .never)
        XCTAssertEqual(f.mirror(local("delete = 'startup'"))?.delete, .startup)
        XCTAssertEqual(f.mirror(local("delete = 'running'"))?.delete, .running)
        let e = f.error(local("delete = 'sometimes'"))
        XCTAssertEqual(e.key, "delete")
        XCTAssertTrue(e.message.contains("\"startup\" or \"running\""))
    }

    func testExcludeStringListAndFile() throws {
        XCTAssertEqual(f.mirror(local("exclude = '*.tmp'"))?.excludes, ["*.tmp"])
        XCTAssertEqual(f.mirror(local("exclude = { '.bak', '.tmp', 'dir with space/', '-lead', '$(x)' }"))?.excludes,
                       [".bak", ".tmp", "dir with space/", "-lead", "$(x)"])
        f.write("excludes.txt", "# comment\n\n*.o\r\n  # indented comment\nbuild/\n/anchored\n")
        XCTAssertEqual(f.mirror(local("exclude = 'a', excludeFrom = 'excludes.txt'"))?.excludes, ["a", "*.o", "build/", "/anchored"])
        var e = f.error(local("excludeFrom = 'missing.txt'"))
        XCTAssertEqual(e.key, "excludeFrom")
        XCTAssertTrue(e.message.contains("missing.txt"))
        XCTAssertTrue(e.message.contains("No such file"), e.description)
        e = f.error(local("exclude = { 'a', 3 }"))
        XCTAssertTrue(e.message.contains("entry #2"), e.description)
        XCTAssertEqual(f.error(local("exclude = true")).key, "exclude")
        XCTAssertEqual(f.error(local("exclude = { x = 'a' }")).key, "exclude")
        XCTAssertEqual(f.error(local("exclude = ''")).key, "exclude")
        XCTAssertEqual(f.error(local("excludeFrom = 'src'")).key, "excludeFrom", "a directory")
    }

    func testFilterAndFilterFrom() {
        XCTAssertEqual(f.mirror(local("filter = { '+ keep.log', '- *.log' }"))?.filters, ["+ keep.log", "- *.log"])
        // As the rules engine (and check-ignore --config) take them: gitignore order.
        XCTAssertEqual(f.mirror(local("exclude = { '.git' }, filter = { '+ keep.log', '- *.log' }"))?.globalPatterns,
                       [".git", "*.log", "!keep.log"])
        f.write("filters", "+ a\n- *\n")
        XCTAssertEqual(f.mirror(local("filterFrom = 'filters'"))?.filters, ["+ a", "- *"])
        let e = f.error(local("filter = { 'keep.log' }"))
        XCTAssertEqual(e.key, "filter")
        XCTAssertTrue(e.message.contains("\"+ pattern\""))
        f.write("badfilters", "merge x\n")
        XCTAssertEqual(f.error(local("filterFrom = 'badfilters'")).key, "filterFrom")
    }

    // MARK: - rsync = { ... }

    func testEveryRsyncField() throws {
        let m = try XCTUnwrap(f.mirror(local("""
        rsync = { archive = true, compress = true, verbose = true, bwlimit = 500, perms = true, owner = true,
                  group = true, times = true, links = true, hard_links = true, acls = true, xattrs = true,
                  checksum = true, sparse = true, whole_file = true, inplace = true, binary = '/usr/local/bin/rsync',
                  rsh = 'ssh -p 2222', _extra = { '--numeric-ids' } }
        """)))
        let r = m.rsync
        XCTAssertTrue(r.archive && r.compress && r.verbose && r.perms && r.owner && r.group && r.times && r.links)
        XCTAssertTrue(r.hardLinks && r.acls && r.xattrs && r.checksum && r.sparse && r.wholeFile && r.inplace)
        XCTAssertEqual(r.bwlimit, 500)
        XCTAssertEqual(r.binary, "/usr/local/bin/rsync")
        XCTAssertEqual(r.rsh, "ssh -p 2222")
        XCTAssertEqual(r.extra, ["--numeric-ids"])
        XCTAssertEqual(r.flagArguments, ["-aHAXcSWzv", "--inplace", "--bwlimit=500", "--numeric-ids"])
    }

    func testIndividualFlagsWithoutArchive() throws {
        let m = try XCTUnwrap(f.mirror(local("rsync = { perms = true, owner = true, links = false }")))
        XCTAssertEqual(m.rsync.flagArguments, ["-tpo"])
    }

    func testOtherLsyncdRsyncKeysBecomeFlags() throws {
        let m = try XCTUnwrap(f.mirror(local("""
        rsync = { one_file_system = true, update = false, temp_dir = '/tmp/rs', timeout = 30, rsync_path = 'sudo rsync',
                  chmod = 'D755,F644', protect_args = true }
        """)))
        XCTAssertEqual(m.rsync.extra, ["--chmod=D755,F644", "--one-file-system", "--rsync-path=sudo rsync", "--temp-dir=/tmp/rs", "--timeout=30"])
    }

    func testRsyncErrors() {
        var e = f.error(local("rsync = { compres = true }"))
        XCTAssertEqual(e.key, "rsync.compres")
        XCTAssertTrue(e.message.contains("did you mean 'compress'"), e.description)
        e = f.error(local("rsync = { archive = 'yes' }"))
        XCTAssertEqual(e.key, "rsync.archive")
        XCTAssertTrue(e.message.contains("true or false"))
        e = f.error(local("rsync = true"))
        XCTAssertEqual(e.key, "rsync")
        e = f.error(local("rsync = { '--delete' }"))
        XCTAssertTrue(e.message.contains("_extra"), e.description)
        e = f.error(local("rsync = { dry_run = true }"))
        XCTAssertEqual(e.key, "rsync.dry_run")
        XCTAssertTrue(e.message.contains("not supported"))
        e = f.error(local("rsync = { password_file = '/x' }"))
        XCTAssertTrue(e.message.contains("rsync daemon"))
        e = f.error(local("rsync = { bwlimit = 'fast' }"))
        XCTAssertEqual(e.key, "rsync.bwlimit")
        e = f.error(local("rsync = { timeout = 'x' }"))
        XCTAssertEqual(e.key, "rsync.timeout")
        e = f.error(local("rsync = { _extra = '--delete' }"))
        XCTAssertEqual(e.key, "rsync._extra")
        XCTAssertTrue(e.message.contains("list of strings"))
    }

    func testBwlimitUnits() {
        XCTAssertEqual(f.mirror(local("rsync = { bwlimit = '10m' }"))?.rsync.bwlimit, 10240)
        XCTAssertEqual(f.mirror(local("rsync = { _extra = { '--bwlimit=2M' } }"))?.rsync.bwlimit, 2048)
        XCTAssertEqual(f.mirror(local("rsync = { _extra = { '--bwlimit', '300' } }"))?.rsync.bwlimit, 300)
        XCTAssertEqual(f.mirror(local("rsync = { _extra = { '--bwlimit=1000KB' } }"))?.rsync.bwlimit, 977)
        XCTAssertEqual(f.mirror(local("rsync = { bwlimit = 0 }"))?.rsync.bwlimit, nil)
        let e = f.error(local("rsync = { bwlimit = 5, _extra = { '--bwlimit=6' } }"))
        XCTAssertTrue(e.message.contains("contradicts"), e.description)
    }

    func testExtraDeleteExcludeAndRsh() throws {
        let m = try XCTUnwrap(f.mirror(local("""
        delete = false == false,
        rsync = { _extra = { '--delete-after', '--exclude', 'a b', '--exclude=*.pyc', '-e', 'ssh -p 2',
                             '--delete-excluded', '--partial-dir', '.partial', '-H' } }
        """)))
        XCTAssertEqual(m.delete, .always)
        XCTAssertEqual(m.excludes, ["a b", "*.pyc"])
        XCTAssertEqual(m.rsync.rsh, "ssh -p 2")
        XCTAssertTrue(m.deleteExcluded)
        XCTAssertEqual(m.rsync.extra, ["--partial-dir", ".partial", "-H"])
        XCTAssertEqual(f.mirror(local("delete = 'startup', rsync = { _extra = { '--omit-dir-times' } }"))?.delete, .startup)
        f.write("ex", "one\ntwo\n")
        XCTAssertEqual(f.mirror(local("rsync = { _extra = { '--exclude-from=ex' } }"))?.excludes, ["one", "two"])
    }

    func testExtraRefusals() {
        for (arg, words) in [("--include=*.c", "filter ="), ("--files-from=x", "list of changed files"),
                             ("-n", "dry-run"), ("--remove-source-files", "delete files from the source"),
                             ("--filter=- x", "filter ="), ("--exclude .git", "--exclude=.git"),
                             ("/some/path", "not an option")] {
            let e = f.error(local("rsync = { _extra = { '\(arg)' } }"))
            XCTAssertEqual(e.key, "rsync._extra", arg)
            XCTAssertTrue(e.message.contains(words), "\(arg): \(e.description)")
        }
        let e = f.error(local("delete = 'running', rsync = { _extra = { '--delete' } }"))
        XCTAssertTrue(e.message.contains("contradicts delete = \"running\""), e.description)
        XCTAssertTrue(f.error(local("delete = false, rsync = { _extra = { '--delete' } }")).message.contains("delete = false"))
    }

    // MARK: - ssh = { ... }

    func testSSHOptions() throws {
        f.write("key", "x")
        let m = try XCTUnwrap(f.mirror(remote("""
        ssh = { port = 2222, identityFile = 'key', binary = '/usr/bin/ssh',
                options = { User = 'backup', ConnectTimeout = 10, Compression = false, 'ServerAliveInterval=5' },
                _extra = { '-4' } }
        """)))
        XCTAssertEqual(m.ssh.port, 2222)
        XCTAssertEqual(m.target, .ssh(SSHTarget(user: "b", host: "backup", port: 2222, directory: bytes("/b"))))
        XCTAssertEqual(m.ssh.identityFile, f.dir + "/key")
        XCTAssertEqual(m.ssh.binary, "/usr/bin/ssh")
        XCTAssertEqual(m.ssh.options, ["Compression=no", "ConnectTimeout=10", "User=backup", "ServerAliveInterval=5"])
        XCTAssertEqual(m.ssh.extra, ["-4"])
    }

    func testSSHErrorsAndWarnings() throws {
        XCTAssertEqual(f.error(remote("ssh = { port = 70000 }")).key, "ssh.port")
        XCTAssertEqual(f.error(remote("ssh = { port = '22' }")).key, "ssh.port")
        XCTAssertEqual(f.error(remote("ssh = { identityFile = 3 }")).key, "ssh.identityFile")
        var e = f.error(remote("ssh = { prot = 22 }"))
        XCTAssertEqual(e.key, "ssh.prot")
        XCTAssertTrue(e.message.contains("did you mean 'port'"), e.description)
        e = f.error(remote("ssh = { options = { ['Bad Key'] = 'x' } }"))
        XCTAssertTrue(e.message.contains("not an ssh option name"), e.description)
        e = f.error(local("ssh = { port = 22 }"))
        XCTAssertTrue(e.message.contains("local directory"), e.description)
        e = f.error("sync { default.rsync, source = 'src', target = 'h:2200:/b', ssh = { port = 2300 } }")
        XCTAssertTrue(e.message.contains("contradicts"), e.description)
        let loaded = try f.load(remote("ssh = { options = { StrictHostKeyChecking = 'no' } }"))
        XCTAssertTrue(loaded.warnings.contains { $0.contains("host key checking") }, "\(loaded.warnings)")
        let rsh = try f.load(remote("rsync = { rsh = '/usr/bin/ssh -l root -o StrictHostKeyChecking=no' }"))
        XCTAssertEqual(rsh.mirrors[0].rsync.rsh, "/usr/bin/ssh -l root -o StrictHostKeyChecking=no")
        XCTAssertTrue(rsh.warnings.contains { $0.contains("rsync.rsh turns off ssh host key checking") }, "\(rsh.warnings)")
        XCTAssertTrue(try f.load(remote("ssh = { options = { StrictHostKeyChecking = 'yes' } }")).warnings.allSatisfy { !$0.contains("host key") })
    }

    // MARK: - fansync's own keys

    func testOwnKeys() throws {
        let m = try XCTUnwrap(f.mirror(local("""
        name = 'work', backend = 'inotify', openFileInterval = 5, rulesFile = '.backupignore', useGitignore = true,
        deleteExcluded = true, stateDir = 'state', largeFileThreshold = '1G', localCopy = 'rsync'
        """)))
        XCTAssertEqual(m.localCopy, .rsync)
        XCTAssertEqual(f.mirror(local(""))?.localCopy, .auto)
        XCTAssertEqual(m.name, "work")
        XCTAssertEqual(m.backend, .inotify)
        XCTAssertEqual(m.openFileInterval, 5)
        XCTAssertEqual(m.rulesFile, ".backupignore")
        XCTAssertTrue(m.useGitignore)
        XCTAssertTrue(m.deleteExcluded)
        XCTAssertEqual(m.stateDir, bytes(f.dir + "/state"))
        XCTAssertEqual(m.largeFileThreshold, 1 << 30)
        XCTAssertEqual(f.mirror(local("largeFileThreshold = 1000, rulesFile = false"))?.largeFileThreshold, 1000)
        XCTAssertEqual(f.mirror(local("rulesFile = false"))?.rulesFile, "")
    }

    func testOwnKeysInvalid() {
        for (kv, key) in [("backend = 'kqueue'", "backend"), ("openFileInterval = 0", "openFileInterval"),
                          ("rulesFile = 'a/b'", "rulesFile"), ("useGitignore = 1", "useGitignore"),
                          ("deleteExcluded = 'yes'", "deleteExcluded"), ("stateDir = false", "stateDir"),
                          ("largeFileThreshold = '10 parsecs'", "largeFileThreshold"), ("largeFileThreshold = 0", "largeFileThreshold"),
                          ("localCopy = 'cp'", "localCopy"), ("localCopy = true", "localCopy"),
                          ("name = ''", "name"), ("name = 'a/b'", "name"), ("name = '..'", "name"), ("name = 7", "name")] {
            XCTAssertEqual(f.error(local(kv)).key, key, kv)
        }
    }

    func testSettingsDefaultsForOwnKeys() throws {
        let loaded = try f.load("""
        settings { backend = 'fanotify', useGitignore = true, stateDir = '/var/lib/fansync' }
        \(local("useGitignore = false"))
        """)
        XCTAssertEqual(loaded.mirrors[0].backend, .fanotify)
        XCTAssertFalse(loaded.mirrors[0].useGitignore)
        XCTAssertEqual(loaded.settings.stateDir, bytes("/var/lib/fansync"))
    }

    func testNamesAreDerivedAndUnique() throws {
        let loaded = try f.load("""
        sync { default.rsync, source = 'a/work', target = '/t1' }
        sync { default.rsync, source = 'b/work', target = '/t2' }
        sync { default.rsync, source = 'c/work', target = '/t3', name = 'work-2' }
        sync { default.rsync, source = '/', target = 'h:/t4/x' }
        """)
        XCTAssertEqual(loaded.mirrors.map(\.name), ["work", "work-3", "work-2", "root"].map { $0 })
        let e = f.error("""
        sync { default.rsync, source = 'a', target = '/t1', name = 'x' }
        sync { default.rsync, source = 'b', target = '/t2', name = 'x' }
        """)
        XCTAssertEqual(e.key, "name")
        XCTAssertEqual(e.syncIndex, 2)
        XCTAssertTrue(e.message.contains("sync{} #1"))
    }

    func testTwoMirrorsToTheSameTargetAreRefused() {
        let e = f.error("""
        sync { default.rsync, source = 'a', target = 'h:/b' }
        sync { default.rsyncssh, source = 'c', host = 'h', targetdir = '/b' }
        """)
        XCTAssertEqual(e.syncIndex, 2)
        XCTAssertTrue(e.message.contains("same target"), e.description)
    }

    // MARK: - Refused lsyncd features

    func testRefusedKeys() {
        for key in ["onCreate", "onModify", "onDelete", "onMove", "onStartup", "onAttrib", "action", "prepare", "collect"] {
            let e = f.error(local("\(key) = function(event) spawn(event, '/bin/true') end"))
            XCTAssertEqual(e.key, key)
            XCTAssertTrue(e.message.contains("not supported") && e.message.contains("default.rsync"), e.description)
        }
        var e = f.error(local("tunnel = tunnel { command = { 'ssh' } }"))
        XCTAssertTrue(e.message.contains("global 'tunnel'") || e.message.contains("tunnel"), e.description)
        e = f.error(local("tunnel = {}"))
        XCTAssertEqual(e.key, "tunnel")
        XCTAssertTrue(e.message.contains("ControlMaster"))
        e = f.error(local("crontab = { '0 * * * *' }"))
        XCTAssertEqual(e.key, "crontab")
        XCTAssertTrue(e.message.contains("fansync verify"))
        e = f.error(local("rsyncExitCodes = {}"))
        XCTAssertEqual(e.key, "rsyncExitCodes")
    }

    // MARK: - Unknown keys, lines, misplaced keys

    func testUnknownKeyNamesKeyLineAndSync() {
        let e = f.error("""
        settings { logfile = '/tmp/l' }

        sync {
            default.rsync,
            source = 'src',
            target = '/t',
        }
        sync {
            default.rsync,
            source = 'other',
            target = '/t2',
            delya = 3,
        }
        """)
        XCTAssertEqual(e.key, "delya")
        XCTAssertEqual(e.line, 12)
        XCTAssertEqual(e.syncIndex, 2)
        XCTAssertEqual(e.syncLine, 8)
        XCTAssertEqual(e.file, f.configPath)
        XCTAssertEqual(e.syncSource, f.dir + "/other")
        XCTAssertEqual(e.description,
                       "\(f.configPath):12: sync{} #2 (line 8, source \"\(f.dir)/other\"): 'delya': unknown key (did you mean 'delay'?)")
    }

    func testMisplacedKeys() {
        var e = f.error(local("compress = true"))
        XCTAssertTrue(e.message.contains("inside rsync = {"), e.description)
        e = f.error(local("logfile = '/x'"))
        XCTAssertTrue(e.message.contains("settings {"), e.description)
        e = f.error(local("excludefrom = 'x'"))
        XCTAssertTrue(e.message.contains("did you mean 'excludeFrom'? keys are case-sensitive"), e.description)
        e = f.error("settings { source = '/x' }\n" + local(""))
        XCTAssertEqual(e.section, "settings")
        XCTAssertTrue(e.message.contains("belongs in sync"), e.description)
        e = f.error(local("'positional'"))
        XCTAssertTrue(e.message.contains("entry #2 has no key"), e.description)
    }

    func testAllErrorsAreReportedAndNothingIsHalfApplied() {
        let e = f.error("""
        sync { default.rsync, source = 'a', target = '/t', delay = -1 }
        sync { default.rsync, source = 'b', target = '/t2', bogus = 1 }
        """)
        XCTAssertEqual(e.allErrors.map(\.key), ["delay", "bogus"])
        XCTAssertEqual(e.allErrors.map(\.line), [1, 2])
        XCTAssertTrue(e.description.contains("\n"))
    }

    // MARK: - settings

    func testEverySettingsKey() throws {
        let loaded = try f.load("""
        settings {
            logfile = '/var/log/fansync.log', statusFile = 'status.json', statusInterval = 10, pidfile = '/run/f.pid',
            nodaemon = true, insist = true, inotifyMode = 'CloseWrite or Modify', maxProcesses = 3, maxDelays = 7,
            logident = 'fansync', logfacility = 'local3', verbose = true,
        }
        \(local(""))
        """)
        let s = loaded.settings
        XCTAssertEqual(s.logFile, "/var/log/fansync.log")
        XCTAssertEqual(s.statusFile, f.dir + "/status.json")
        XCTAssertEqual(s.statusInterval, 10)
        XCTAssertEqual(s.pidFile, "/run/f.pid")
        XCTAssertTrue(s.nodaemon && s.insist && s.verbose)
        XCTAssertEqual(s.inotifyMode, .closeWriteOrModify)
        XCTAssertEqual(s.maxProcesses, 3)
        XCTAssertEqual(s.maxDelays, 7)
        XCTAssertEqual(s.logIdent, "fansync")
        XCTAssertEqual(s.logFacility, "local3")
    }

    func testSettingsErrors() {
        for (kv, key) in [("logfile = 3", "logfile"), ("statusInterval = 0", "statusInterval"), ("nodaemon = 'yes'", "nodaemon"),
                          ("insist = 1", "insist"), ("inotifyMode = 'Create'", "inotifyMode"), ("maxProcesses = 0", "maxProcesses"),
                          ("maxDelays = 'a'", "maxDelays"), ("logfacility = 'local9'", "logfacility"), ("logident = ''", "logident"),
                          ("pidfile = {}", "pidfile"), ("statusFile = true", "statusFile"), ("backend = 'x'", "backend")] {
            let e = f.error("settings {\n  \(kv)\n}\n" + local(""))
            XCTAssertEqual(e.key, key, kv)
            XCTAssertEqual(e.section, "settings", kv)
            XCTAssertEqual(e.line, 2, kv)
        }
        let e = f.error("settings { statusfile = '/x' }\n" + local(""))
        XCTAssertTrue(e.message.contains("did you mean 'statusFile'"), e.description)
        XCTAssertTrue(f.error("settings 'x'\n" + local("")).message.contains("settings takes a table"))
    }

    func testSettingsAsCallAssignmentAndFields() throws {
        var loaded = try f.load("settings = { logfile = '/l1', statusInterval = 3 }\n" + local(""))
        XCTAssertEqual(loaded.settings.logFile, "/l1")
        XCTAssertEqual(loaded.settings.statusInterval, 3)
        loaded = try f.load("settings { logfile = '/l2' }\nsettings.pidfile = '/p'\n" + local(""))
        XCTAssertEqual(loaded.settings.logFile, "/l2")
        XCTAssertEqual(loaded.settings.pidFile, "/p")
        loaded = try f.load("settings { logfile = '/a', statusFile = '/s' }\nsettings { logfile = '/b' }\n" + local(""))
        XCTAssertEqual(loaded.settings.logFile, "/b", "later calls win, as in lsyncd")
        XCTAssertEqual(loaded.settings.statusFile, "/s")
        let e = f.error("settings = {\n  logfile = '/l',\n  bogus = 1,\n}\n" + local(""))
        XCTAssertEqual(e.key, "bogus")
        XCTAssertEqual(e.line, 3)
    }

    // MARK: - Lua features a config may use

    func testLayersVariablesLoopsAndFunctions() throws {
        let loaded = try f.load("""
        local common = { delay = 3, rsync = { compress = true, archive = true }, exclude = { '*.tmp' } }
        local function mirror(dir, host)
            sync { default.rsyncssh, common, source = dir, host = host, targetdir = '/b/' .. dir,
                   rsync = { archive = false } }
        end
        for _, d in ipairs { 'one', 'two' } do mirror(d, os.getenv('FANSYNC_TEST_UNSET_VAR') or 'backup') end
        """)
        XCTAssertEqual(loaded.mirrors.count, 2)
        let m = loaded.mirrors[1]
        XCTAssertEqual(m.delay, 3)
        XCTAssertTrue(m.rsync.compress)
        XCTAssertFalse(m.rsync.archive, "the sync{}'s own key wins over the layer's")
        XCTAssertEqual(m.excludes, ["*.tmp"])
        XCTAssertEqual(m.target.description, "backup:/b/two")
        XCTAssertEqual(loaded.origins.map(\.line), [3, 3])
    }

    func testTableReusedAfterSyncIsCopiedAtCallTime() throws {
        let loaded = try f.load("""
        local t = { default.rsync, source = 'a', target = '/t1' }
        sync(t)
        t.source = 'b'; t.target = '/t2'
        sync(t)
        """)
        XCTAssertEqual(loaded.mirrors.map { SyncPath.displayString($0.source) }, [f.dir + "/a", f.dir + "/b"])
    }

    func testLuaErrorsCarryFileAndLine() {
        var e = f.error("sync {\n  default.rsync,\n  source = 'a'\n  target = '/t'\n}")
        XCTAssertEqual(e.file, f.configPath)
        XCTAssertEqual(e.line, 4)
        XCTAssertTrue(e.message.contains("'}' expected"), e.description)
        e = f.error("local x = nil\nlocal y = x.field\n")
        XCTAssertEqual(e.line, 2)
        XCTAssertTrue(e.description.hasPrefix(f.configPath + ":2: "), e.description)
        e = f.error("error('custom failure')")
        XCTAssertEqual(e.line, 1)
        XCTAssertTrue(e.message.contains("custom failure"))
        e = f.error("sync 'x'")
        XCTAssertTrue(e.message.contains("sync takes a table"), e.description)
        e = f.error("sync { default.rsync, source = 'a', target = '/t', bad = {} }")
        XCTAssertEqual(e.key, "bad")
    }

    func testDefaultIsReadOnly() {
        let e = f.error("default.rsync.delay = 5")
        XCTAssertTrue(e.message.contains("read-only"), e.description)
    }

    func testInvalidUTF8SourceIsKeptAsBytes() throws {
        let m = try XCTUnwrap(f.mirror("sync { default.rsync, source = 'src/\\xff\\n-x', target = '/t' }"))
        XCTAssertEqual(m.source, bytes(f.dir + "/src/") + [0xff, 0x0a] + bytes("-x"))
    }

    func testConfigFileErrors() {
        XCTAssertThrowsError(try ConfigLoader.load(path: f.dir + "/nope.lua")) { error in
            let e = error as! ConfigError
            XCTAssertTrue(e.description.contains("cannot read the config"), e.description)
        }
        XCTAssertThrowsError(try ConfigLoader.load(path: f.dir)) { error in
            XCTAssertTrue((error as! ConfigError).description.contains("directory"))
        }
    }
}
