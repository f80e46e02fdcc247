import Foundation
import XCTest
@testable import FanSync

/// A temporary directory holding a config and whatever it refers to.
final class ConfigFixture {
    let dir: String

    init() {
        let base = FileManager.default.temporaryDirectory.path + "/fansync-config-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        dir = base
        try! FileManager.default.createDirectory(atPath: dir + "/src", withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ name: String, _ text: String) {
        let path = dir + "/" + name
        try! FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try! text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    var configPath: String { dir + "/fansync.conf.lua" }

    func load(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> LoadedConfig {
        try ConfigLoader.load(source: text, chunkName: configPath, directory: dir)
    }

    /// The error a config must fail with.
    func error(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> ConfigError {
        do {
            let loaded = try load(text)
            XCTFail("config loaded but should have failed: \(loaded.mirrors)", file: file, line: line)
        } catch let e as ConfigError {
            return e
        } catch {
            XCTFail("unexpected error type: \(error)", file: file, line: line)
        }
        return ConfigError(file: "", message: "")
    }

    /// Loads a config that must succeed with exactly one mirror.
    func mirror(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> MirrorConfig? {
        do {
            let loaded = try load(text)
            XCTAssertEqual(loaded.mirrors.count, 1, file: file, line: line)
            return loaded.mirrors.first
        } catch {
            XCTFail("config failed: \(error)", file: file, line: line)
            return nil
        }
    }
}

