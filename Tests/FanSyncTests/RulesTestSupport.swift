import Foundation
import XCTest
@testable import FanSync

#if canImport(Glibc)
import Glibc
#endif

/// Helpers for the rules tests: byte-named files, a small deterministic PRNG, and git/rsync
/// spawned directly (no shell ever sees a name).
enum RulesTestSupport {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// A fresh temporary directory (absolute path bytes, no trailing slash).
    static func makeTemporaryDirectory(_ label: String) throws -> [UInt8] {
        var template = Array("/tmp/fansync-rules-\(label)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw Failure(description: "mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        return Array(String(cString: made).utf8)
    }

    /// Removes a tree we created, in process (names may be any bytes).
    static func removeTree(_ path: [UInt8]) {
        let fd = withCPath(path) { open($0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        if fd < 0 {
            _ = withCPath(path) { unlink($0) }
            return
        }
        let entries = (try? RulesEngine.readEntries(fd: fd, path: .root)) ?? []
        close(fd)
        for entry in entries {
            let child = path + [UInt8(ascii: "/")] + entry.name
            if entry.isDirectory {
                removeTree(child)
            } else {
                _ = withCPath(child) { unlink($0) }
            }
        }
        _ = withCPath(path) { rmdir($0) }
    }

    static func join(_ base: [UInt8], _ relative: [UInt8]) -> [UInt8] {
        relative.isEmpty ? base : base + [UInt8(ascii: "/")] + relative
    }

    static func withCPath<R>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (path + [0]).withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) }
        }
    }

    static func makeDirectory(_ path: [UInt8]) throws {
        let r = withCPath(path) { mkdir($0, 0o755) }
        if r != 0 && errno != EEXIST {
            throw Failure(description: "mkdir \(SyncPath.displayString(path)): \(String(cString: strerror(errno)))")
        }
    }

    static func makeDirectories(_ path: [UInt8]) throws {
        var current: [UInt8] = []
        for component in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            current += [UInt8(ascii: "/")] + component
            try makeDirectory(current)
        }
    }

    static func writeFile(_ path: [UInt8], _ content: [UInt8]) throws {
        let fd = withCPath(path) { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        guard fd >= 0 else {
            throw Failure(description: "create \(SyncPath.displayString(path)): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var offset = 0
        while offset < content.count {
            let n = content[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw Failure(description: "write failed") }
            offset += n
        }
    }

    static func readFile(_ path: [UInt8]) -> [UInt8]? {
        let fd = withCPath(path) { open($0, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return out
    }

    static func symlink(target: [UInt8], at path: [UInt8]) throws {
        let r = withCPath(target) { t in withCPath(path) { Glibc.symlink(t, $0) } }
        if r != 0 { throw Failure(description: "symlink: \(String(cString: strerror(errno)))") }
    }

    static func remove(_ path: [UInt8]) {
        _ = withCPath(path) { unlink($0) }
    }

    /// Runs a program (no shell) with bytes on stdin; returns stdout, stderr, status.
    static func run(_ executable: String, _ arguments: [String], directory: [UInt8]? = nil,
                    environment: [String: String]? = nil, stdin: [UInt8] = []) throws -> (out: [UInt8], err: String, status: Int32) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory {
            process.currentDirectoryURL = URL(fileURLWithPath: String(decoding: directory, as: UTF8.self))
        }
        if let environment { process.environment = environment }
        let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
        process.standardInput = inPipe
        process.standardOutput = outPipe
        process.standardError = errPipe
        try process.run()
        // Write stdin on another thread so a full stdout pipe cannot deadlock us.
        let writer = Thread {
            inPipe.fileHandleForWriting.write(Data(stdin))
            try? inPipe.fileHandleForWriting.close()
        }
        writer.start()
        let errBox = DataBox()
        let errReader = Thread {
            errBox.data = errPipe.fileHandleForReading.readDataToEndOfFile()
        }
        errReader.start()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errBox.done { usleep(1000) }
        return (Array(out), String(decoding: errBox.data, as: UTF8.self), process.terminationStatus)
    }

    final class DataBox: @unchecked Sendable {
        private let lock = NSLock()
        private var _data = Data()
        private var _done = false
        var data: Data {
            get { lock.withLock { _data } }
            set { lock.withLock { _data = newValue; _done = true } }
        }
        var done: Bool { lock.withLock { _done } }
    }

    /// An environment in which git reads no user or system configuration.
    static func gitEnvironment(home: [UInt8]) -> [String: String] {
        [
            "HOME": String(decoding: home, as: UTF8.self),
            "XDG_CONFIG_HOME": String(decoding: home, as: UTF8.self) + "/.config",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "LC_ALL": "C",
            "PATH": "/usr/bin:/bin",
        ]
    }

    static var gitAvailable: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/git") }
    static var rsyncAvailable: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/rsync") }
}

/// The library's SplitMix64: small, fast and the same on every machine.
typealias RulesPRNG = SplitMix64

extension SplitMix64 {
    mutating func int(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func chance(_ percent: Int) -> Bool { int(100) < percent }

    mutating func pick<T>(_ items: [T]) -> T { items[int(items.count)] }
}

extension Array where Element == UInt8 {
    var display: String { SyncPath.displayString(self) }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
