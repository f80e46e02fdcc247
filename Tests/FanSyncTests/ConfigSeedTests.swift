import XCTest
@testable import FanSync

final class ConfigSeedTests: XCTestCase {
    /// The config from seed/realtime-sync-lsyncd.pt.md ("Configuração Otimizada"), verbatim but
    /// for the host and the paths.
    static let seed = """
    settings {
        logfile = "/var/log/lsyncd/lsyncd.log",
        statusFile = "/var/log/lsyncd/lsyncd.status",
        
        -- ⚡ INSTANTÂNEO
        maxDelays = 1,      -- Máx 1 segundo de espera
        maxProcesses = 10,  -- 10 rsyncs paralelos
    }

    sync {
        default.rssh,
        source = "SOURCE",
        host = "root@cpu-backup",
        targetdir = "/workspace",
        
        -- Sync imediato após mudança
        delay = 1,  -- 1 segundo após detectar mudança
        
        rsync = {
            archive = true,
            compress = true,
            _extra = {
                "--delete",              -- Remove arquivos deletados
                "--exclude=.git",        -- Ignora cache
                "--exclude=__pycache__",
                "--bwlimit=10000",       -- Limite: 10MB/s
            }
        },
    }
    """

    func testSeedConfigLoadsAndMeansTheSame() throws {
        let f = ConfigFixture()
        let text = ConfigSeedTests.seed.replacingOccurrences(of: "SOURCE", with: f.dir + "/src")
        let loaded = try f.load(text)
        XCTAssertEqual(loaded.settings.logFile, "/var/log/lsyncd/lsyncd.log")
        XCTAssertEqual(loaded.settings.statusFile, "/var/log/lsyncd/lsyncd.status")
        XCTAssertEqual(loaded.settings.maxDelays, 1)
        XCTAssertEqual(loaded.settings.maxProcesses, 10)
        XCTAssertEqual(loaded.mirrors.count, 1)
        let m = try XCTUnwrap(loaded.mirrors.first)
        XCTAssertEqual(m.source, bytes(f.dir + "/src"))
        XCTAssertEqual(m.target, .ssh(SSHTarget(user: "root", host: "cpu-backup", port: nil, directory: bytes("/workspace"))))
        XCTAssertEqual(m.target.description, "root@cpu-backup:/workspace")
        XCTAssertEqual(m.name, "src")
        XCTAssertTrue(m.rsync.archive)
        XCTAssertTrue(m.rsync.compress)
        XCTAssertEqual(m.rsync.bwlimit, 10000)
        XCTAssertEqual(m.delete, .always)
        XCTAssertEqual(m.excludes, [".git", "__pycache__"])
        XCTAssertEqual(m.rsync.extra, [], "--delete, --exclude and --bwlimit are taken into the fields")
        XCTAssertEqual(m.rsync.flagArguments, ["-az", "--bwlimit=10000"])
        XCTAssertEqual(m.delay, 1)
        XCTAssertEqual(m.maxDelays, 1)
        XCTAssertEqual(m.maxProcesses, 10)
        XCTAssertTrue(m.initialSync)
        XCTAssertEqual(loaded.origins.first?.line, 10)
        XCTAssertEqual(loaded.origins.first?.preset, "rssh")
    }

    func testSeedConfigFromAFileThroughCheckConfig() throws {
        let f = ConfigFixture()
        f.write("fansync.conf.lua", ConfigSeedTests.seed.replacingOccurrences(of: "SOURCE", with: f.dir + "/src"))
        let loaded = try ConfigLoader.load(path: f.configPath)
        let report = CheckConfigCommand.report(loaded, file: f.configPath)
        XCTAssertTrue(report.contains("root@cpu-backup:/workspace"), report)
        XCTAssertTrue(report.contains("rsync -az --bwlimit=10000"), report)
        XCTAssertTrue(report.contains("\".git\", \"__pycache__\""), report)
        XCTAssertTrue(report.contains("10 rsyncs at once"), report)
        XCTAssertTrue(report.contains("default.rssh = default.rsyncssh"), report)
        XCTAssertEqual(CheckConfigCommand.run(arguments: [f.configPath]), 0)
    }
}
