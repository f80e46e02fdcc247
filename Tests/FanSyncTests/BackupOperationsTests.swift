import XCTest
@testable import FanSync

#if canImport(Glibc)
import Glibc
#endif

/// The operations made on the backup before a batch's rsync: the local form (syscalls and
/// `cp`) and the ssh form (an `sh` script, run here by a real `sh` on a real directory, so
/// the quoting of hostile names is proven, not just inspected).
final class BackupOperationsTests: XCTestCase {
    private var dir: [UInt8] = []
    private var text: String { String(decoding: dir, as: UTF8.self) }

    override func setUpWithError() throws { dir = try RulesTestSupport.makeTemporaryDirectory("ops") }
    override func tearDown() { RulesTestSupport.removeTree(dir) }

    static let names: [[UInt8]] = [
        Array("with space".utf8), Array("new\nline".utf8), Array("single'quote".utf8), Array("$(touch pwned)".utf8),
        Array("`touch pwned2`".utf8), Array("star*".utf8), Array("-leading-dash".utf8), Array("semi;colon && echo hi".utf8),
        [0x69, 0x6e, 0x76, 0xff, 0xfe], Array("back\\slash".utf8),
    ]

    private func write(_ rel: [UInt8], _ content: String) {
        let fd = withCPath(dir + [0x2F] + rel) { open($0, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
        XCTAssertGreaterThanOrEqual(fd, 0)
        _ = Array(content.utf8).withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
    private func read(_ rel: [UInt8]) -> String? {
        let fd = withCPath(dir + [0x2F] + rel) { open($0, O_RDONLY) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = Glibc.read(fd, &buf, buf.count)
        return String(decoding: buf.prefix(max(0, n)), as: UTF8.self)
    }
    private func mtime(_ rel: [UInt8]) -> Int64? { FileStat.of(dir + [0x2F] + rel)?.mtimeNs }

    private func operations() -> BackupOperations {
        var ops = BackupOperations()
        for (i, n) in Self.names.enumerated() {
            write(n, "content \(i)\n")
            let moved = SyncPath(bytes: Array("moved/".utf8) + n)
            if i % 2 == 0 {
                ops.renames.append(.init(from: SyncPath(bytes: n), to: moved))
            } else {
                ops.copies.append(.init(from: SyncPath(bytes: n), to: moved))
            }
            ops.times.append(.init(path: moved, mtimeNs: 1_600_000_000_123_456_789 + Int64(i)))
        }
        // A rename whose source the backup lacks: not an error, nothing done.
        ops.renames.append(.init(from: SyncPath("absent"), to: SyncPath("never")))
        return ops
    }

    private func check(_ result: BackupOperations.Result) {
        XCTAssertEqual(result.renamed, (Self.names.count + 1) / 2)
        XCTAssertEqual(result.copied, Self.names.count / 2)
        for (i, n) in Self.names.enumerated() {
            XCTAssertEqual(read(Array("moved/".utf8) + n), "content \(i)\n", SyncPath.displayString(n))
            XCTAssertEqual(read(n) != nil, i % 2 == 1, "a copy keeps its source, a rename does not")
            XCTAssertEqual(mtime(Array("moved/".utf8) + n), 1_600_000_000_123_456_789 + Int64(i))
        }
        XCTAssertNil(read(Array("never".utf8)))
        // Nothing a name holds was run, and no temporary copy is left.
        XCTAssertNil(read(Array("pwned".utf8)))
        XCTAssertNil(read(Array("pwned2".utf8)))
        let leftovers = (try? Subprocess.run(["find", text, "-name", ".fansync-copy.*"]).outputText) ?? "?"
        XCTAssertEqual(leftovers, "")
    }

    func testLocalTarget() throws {
        let t = try Transport(config: MirrorConfig(name: "t", source: Array("/nonexistent".utf8), target: .local(path: dir)))
        let ops = operations()
        let (result, failure) = t.apply(ops)
        XCTAssertNil(failure)
        check(result)
    }

    /// Locally, no operation goes through a symlink on the backup: a symlink standing where
    /// the source has a directory is replaced, and what it points to is left alone.
    func testLocalTargetNeverFollowsASymlink() throws {
        let backup = dir + Array("/backup".utf8), outside = dir + Array("/outside".utf8)
        try RulesTestSupport.makeDirectory(backup)
        try RulesTestSupport.makeDirectory(outside)
        try RulesTestSupport.symlink(target: outside, at: backup + Array("/linked".utf8))
        try RulesTestSupport.symlink(target: outside, at: backup + Array("/linked2".utf8))
        try RulesTestSupport.writeFile(backup + Array("/model.pt".utf8), Array("weights".utf8))
        try RulesTestSupport.writeFile(outside + Array("/victim".utf8), Array("keep".utf8))
        let t = try Transport(config: MirrorConfig(name: "t", source: Array("/nonexistent".utf8), target: .local(path: backup)))
        var ops = BackupOperations()
        ops.copies = [.init(from: SyncPath("model.pt"), to: SyncPath("linked/copy.pt"))]
        // A rename whose source sits under a symlink: not found, nothing done.
        ops.renames = [.init(from: SyncPath("linked2/victim"), to: SyncPath("stolen"))]
        let (result, failure) = t.apply(ops)
        XCTAssertNil(failure)
        XCTAssertEqual(result.copied, 1)
        XCTAssertEqual(result.renamed, 0)
        XCTAssertEqual(RulesTestSupport.readFile(backup + Array("/linked/copy.pt".utf8)), Array("weights".utf8))
        XCTAssertNil(RulesTestSupport.readFile(outside + Array("/copy.pt".utf8)), "written through the backup's symlink")
        XCTAssertEqual(RulesTestSupport.readFile(outside + Array("/victim".utf8)), Array("keep".utf8))
        XCTAssertNil(RulesTestSupport.readFile(backup + Array("/stolen".utf8)))
    }

    /// The script the ssh form sends, run by sh in the backup directory.
    func testRemoteScriptRunByShell() throws {
        let c = MirrorConfig(name: "t", source: Array("/nonexistent".utf8), target: .local(path: dir))
        let t = try Transport(config: c)
        let ops = operations()
        let script = t.remoteScript(ops, directory: dir)
        let r = try Subprocess.run([Array("sh".utf8), Array("-s".utf8)], input: script)
        XCTAssertEqual(r.status, 0, r.errorText)
        let last = r.outputText.split(separator: "\n").last.map(String.init)
        XCTAssertEqual(last, "fansync-ops \((Self.names.count + 1) / 2) \(Self.names.count / 2)")
        check(BackupOperations.Result(renamed: (Self.names.count + 1) / 2, copied: Self.names.count / 2))
    }

    func testStateDirectoryNamesAreOneSafeComponent() {
        let root: [UInt8] = Array("/var/lib/fansync".utf8)
        XCTAssertEqual(MirrorIndex.stateDirectory(name: "workspace", root: root), Array("/var/lib/fansync/workspace".utf8))
        XCTAssertEqual(MirrorIndex.stateDirectory(name: "a/../b c", root: root), Array("/var/lib/fansync/a_.._b_c".utf8))
        XCTAssertEqual(MirrorIndex.stateDirectory(name: "..", root: root), Array("/var/lib/fansync/mirror".utf8))
        XCTAssertEqual(MirrorIndex.stateDirectory(name: "名前", root: nil), Array("/var/lib/fansync/______".utf8))
    }
}
