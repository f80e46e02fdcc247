import XCTest
@testable import FanSync

/// `fansync verify`'s reading of rsync's itemized changes, and its arguments.
final class VerifyItemizeTests: XCTestCase {
    func item(_ text: String) throws -> VerifyDifference? {
        try ItemizeParser.parseItem(ArraySlice(Array(text.utf8)))
    }

    func d(_ kind: VerifyDifference.Kind, _ path: String, dir: Bool = false, _ details: [String] = []) -> VerifyDifference {
        VerifyDifference(kind: kind, path: SyncPath(path), isDirectory: dir, details: details)
    }

    func testNewItemsAreMissing() throws {
        XCTAssertEqual(try item(">f+++++++++ a/file"), d(.missing, "a/file"))
        XCTAssertEqual(try item("<f+++++++++ a/file"), d(.missing, "a/file"))       // a push over ssh
        XCTAssertEqual(try item("cd+++++++++ dir/"), d(.missing, "dir", dir: true))
        XCTAssertEqual(try item("cL+++++++++ link"), d(.missing, "link"))
        XCTAssertEqual(try item("cD+++++++++ dev"), d(.missing, "dev"))
        XCTAssertEqual(try item("cS+++++++++ fifo"), d(.missing, "fifo"))
        XCTAssertEqual(try item("hf+++++++++ hardlink"), d(.missing, "hardlink"))
    }

    func testDeletingIsExtra() throws {
        XCTAssertEqual(try item("*deleting   old.txt"), d(.extra, "old.txt"))
        XCTAssertEqual(try item("*deleting   old/dir/"), d(.extra, "old/dir", dir: true))
        // A name that starts with spaces keeps them: the flags are 11 characters wide.
        XCTAssertEqual(try item("*deleting     two spaces"), d(.extra, "  two spaces"))
    }

    func testContentDifferences() throws {
        XCTAssertEqual(try item(">fc........ f"), d(.different, "f"))
        XCTAssertEqual(try item("<fcs....... f"), d(.different, "f"))
        XCTAssertEqual(try item(">f.st...... f"), d(.different, "f", ["mtime"]))
        XCTAssertEqual(try item(">fc.tpog... f"), d(.different, "f", ["mtime", "perms", "owner", "group"]))
        XCTAssertEqual(try item(">f????????? f"), d(.different, "f", ["unknown"]))
    }

    func testMetadataNamesWhatDiffers() throws {
        XCTAssertEqual(try item(".f..t...... f"), d(.metadata, "f", ["mtime"]))
        XCTAssertEqual(try item(".f...p..... f"), d(.metadata, "f", ["perms"]))
        XCTAssertEqual(try item(".f....o.... f"), d(.metadata, "f", ["owner"]))
        XCTAssertEqual(try item(".f.....g... f"), d(.metadata, "f", ["group"]))
        XCTAssertEqual(try item(".f......u.. f"), d(.metadata, "f", ["atime"]))
        XCTAssertEqual(try item(".f......n.. f"), d(.metadata, "f", ["crtime"]))
        XCTAssertEqual(try item(".f......b.. f"), d(.metadata, "f", ["atime", "crtime"]))
        XCTAssertEqual(try item(".f.......a. f"), d(.metadata, "f", ["acl"]))
        XCTAssertEqual(try item(".f........x f"), d(.metadata, "f", ["xattrs"]))
        XCTAssertEqual(try item(".f..tpog.ax f"), d(.metadata, "f", ["mtime", "perms", "owner", "group", "acl", "xattrs"]))
        XCTAssertEqual(try item("cLc.t...... link"), d(.metadata, "link", ["symlink target", "mtime"]))
        XCTAssertEqual(try item("cLc........ link"), d(.metadata, "link", ["symlink target"]))
        XCTAssertEqual(try item(".L..t...... link"), d(.metadata, "link", ["mtime"]))
        XCTAssertEqual(try item("cDc........ dev"), d(.metadata, "dev", ["device"]))
        XCTAssertEqual(try item("cSc........ fifo"), d(.metadata, "fifo", ["special file"]))
        XCTAssertEqual(try item("hf..t...... hl"), d(.metadata, "hl", ["hard link", "mtime"]))
        XCTAssertEqual(try item(".d...p..... dir/"), d(.metadata, "dir", dir: true, ["perms"]))
        XCTAssertEqual(try item(".d...p..... ./"), VerifyDifference(kind: .metadata, path: .root, isDirectory: true, details: ["perms"]))
    }

    func testNotDifferences() throws {
        XCTAssertNil(try item(".d..t...... dir/"))      // a directory's time changes on a live mirror
        XCTAssertNil(try item(".d..t...... ./"))
        XCTAssertEqual(try item(".d..tp..... dir/"), d(.metadata, "dir", dir: true, ["perms"]))
        XCTAssertNil(try item(".f..T...... f"))         // times not preserved
        XCTAssertNil(try item(".f          f"))         // unchanged (-ii)
        XCTAssertNil(try item(".d          ./"))
        XCTAssertNil(try item("hf          hl"))
        XCTAssertNil(try item("cd          dir/"))
    }

    func testMalformedLinesAreErrors() {
        XCTAssertThrowsError(try item("garbage"))
        XCTAssertThrowsError(try item(">X+++++++++ a"))
        XCTAssertThrowsError(try item("?f+++++++++ a"))
        XCTAssertThrowsError(try item(">f+++++++++"))
        XCTAssertThrowsError(try item(">f+++++++++_a"))
    }

    func testEscapedNamesDecodeExactly() throws {
        func name(_ escaped: String) -> [UInt8] { ItemizeParser.decodeName(ArraySlice(Array(escaped.utf8))) }
        XCTAssertEqual(name("new\\#012line"), Array("new\nline".utf8))
        XCTAssertEqual(name("cr\\#015"), Array("cr\r".utf8))
        XCTAssertEqual(name("inv\\#377\\#376-utf8"), [0x69, 0x6e, 0x76, 0xff, 0xfe] + Array("-utf8".utf8))
        XCTAssertEqual(name("del\\#177"), Array("del".utf8) + [0x7f])
        XCTAssertEqual(name("tab\tx"), Array("tab\tx".utf8))                   // rsync leaves a tab as it is
        XCTAssertEqual(name("ünïcødé 名前"), Array("ünïcødé 名前".utf8))         // raw UTF-8 (a UTF-8 locale)
        XCTAssertEqual(name("\\#303\\#274"), Array("ü".utf8))                   // escaped UTF-8 (the C locale)
        // A literal backslash: alone it is itself; before "#ddd" rsync escapes it as \#134.
        XCTAssertEqual(name("back\\slash"), Array("back\\slash".utf8))
        XCTAssertEqual(name("back\\#134#012slash"), Array("back\\#012slash".utf8))
        XCTAssertEqual(name("\\#134#134"), Array("\\#134".utf8))
        XCTAssertEqual(name("ex\\#012line\\#134#134"), Array("ex\nline\\#134".utf8))
        // What rsync never writes as an escape stays as it is.
        XCTAssertEqual(name("a\\#01"), Array("a\\#01".utf8))
        XCTAssertEqual(name("a\\#12x"), Array("a\\#12x".utf8))
        XCTAssertEqual(name("a\\#89x"), Array("a\\#89x".utf8))
        XCTAssertEqual(name("a\\#"), Array("a\\#".utf8))
        XCTAssertEqual(name("trailing\\"), Array("trailing\\".utf8))
        for hostile in ["with space", "single'quote", "double\"quote", "$(touch pwned)", "`x`", "star*", "-leading-dash",
                        "--delete", "semi;colon && echo hi", "trailing space ", " leading space"] {
            XCTAssertEqual(name(hostile), Array(hostile.utf8), hostile)
        }
    }

    func testEveryByteRoundTrips() throws {
        // Every byte a name may hold, alone and before "#ddd": rsync's escaping, undone.
        var names: [[UInt8]] = []
        for b in UInt8(1)...UInt8(255) where b != UInt8(ascii: "/") {
            if b != UInt8(ascii: ".") { names.append([b]) }   // "." is no name
            names.append([UInt8(ascii: "x"), b] + Array("#012".utf8))
            names.append([b, UInt8(ascii: "\\"), UInt8(ascii: "#"), UInt8(ascii: "1"), UInt8(ascii: "2"), UInt8(ascii: "3")])
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let alphabet: [UInt8] = [0x5c, 0x23, 0x30, 0x31, 0x37, 0x38, 0x0a, 0xff, 0x41, 0x09, 0x20]
            names.append((0..<Int.random(in: 1...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
        }
        for n in names {
            let encoded = ItemizeParser.encodeName(n)
            XCTAssertFalse(encoded.contains(UInt8(ascii: "\n")))
            XCTAssertEqual(ItemizeParser.decodeName(ArraySlice(encoded)), n, SyncPath.displayString(n))
            let line = Array("fansync-verify >f+++++++++ ".utf8) + encoded + [10]
            XCTAssertEqual(try ItemizeParser.parse(line), [VerifyDifference(kind: .missing, path: SyncPath(bytes: n))])
        }
    }

    func testWholeOutput() throws {
        let output = """
        sending incremental file list
        fansync-verify *deleting   extradir/e
        fansync-verify *deleting   extradir/
        fansync-verify >fc........ bytechg
        fansync-verify .d..t...... dir/
        fansync-verify cd+++++++++ new\\#012dir/
        fansync-verify >f+++++++++ new\\#012dir/inv\\#377

        Number of files: 1,234 (reg: 1,000, dir: 234)
        total: fansync-verify is not at the start of this line
        """
        let diffs = try ItemizeParser.parse(Array(output.utf8))
        XCTAssertEqual(diffs, [d(.extra, "extradir/e"), d(.extra, "extradir", dir: true), d(.different, "bytechg"),
                               VerifyDifference(kind: .missing, path: SyncPath(bytes: Array("new\ndir".utf8)), isDirectory: true),
                               VerifyDifference(kind: .missing, path: SyncPath(bytes: Array("new\ndir/inv".utf8) + [0xff]))])
        XCTAssertEqual(Verifier.numberOfFiles(Array(output.utf8)), 1234)
        XCTAssertNil(Verifier.numberOfFiles(Array("nothing\n".utf8)))
    }

    func testLines() {
        XCTAssertEqual(d(.missing, "a/b").line, "missing a/b")
        XCTAssertEqual(d(.extra, "old", dir: true).line, "extra old/")
        XCTAssertEqual(d(.different, "f", ["perms"]).line, "different f")
        XCTAssertEqual(d(.metadata, "f", ["perms", "owner"]).line, "metadata f (perms, owner)")
        XCTAssertEqual(VerifyDifference(kind: .metadata, path: .root, isDirectory: true, details: ["perms"]).line, "metadata ./ (perms)")
        // One line per difference, whatever the name holds.
        XCTAssertEqual(VerifyDifference(kind: .missing, path: SyncPath(bytes: Array("new\nline".utf8) + [0xff])).line, "missing new\\x0aline\\xff")
    }

    // MARK: Arguments

    func testParse() throws {
        let o = try VerifyCommand.parse(["/w", "u@h:/b", "--sample", "5", "--fix", "--json", "--exclude", ".git",
                                         "--ssh-option", "Port=2222", "--name", "ws"], cwd: "/")
        XCTAssertEqual(o.sample, 5)
        XCTAssertTrue(o.fix)
        XCTAssertTrue(o.json)
        XCTAssertEqual(o.mirrors.count, 1)
        XCTAssertEqual(o.mirrors[0].name, "ws")
        XCTAssertEqual(o.mirrors[0].excludes, [".git"])
        XCTAssertEqual(o.mirrors[0].ssh.options, ["Port=2222"])
        XCTAssertEqual(o.mirrors[0].source, Array("/w".utf8))
        let plain = try VerifyCommand.parse(["rel", "/b", "--no-delete"], cwd: "/home")
        XCTAssertNil(plain.sample)
        XCTAssertFalse(plain.fix)
        XCTAssertEqual(plain.mirrors[0].name, "rel")
        XCTAssertEqual(plain.mirrors[0].delete, .never)
    }

    func testBadArguments() {
        func message(_ args: [String]) -> String {
            do { _ = try VerifyCommand.parse(args, cwd: "/"); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(message([]).contains("give a SOURCE directory and a TARGET (see fansync verify --help)"), message([]))
        XCTAssertTrue(message(["/a", "/b", "--sample", "0"]).contains("--sample"), message(["/a", "/b", "--sample", "0"]))
        XCTAssertTrue(message(["/a", "/b", "--sample", "x"]).contains("--sample"))
        XCTAssertTrue(message(["/a", "/b", "--sample"]).contains("--sample needs a value"))
        XCTAssertTrue(message(["/a", "/b", "--fix=yes"]).contains("--fix takes no value"))
        XCTAssertTrue(message(["/a", "/b", "--frobnicate"]).contains("unknown option --frobnicate (see fansync verify --help)"))
        XCTAssertTrue(message(["/a", "/b", "/c"]).contains("too many arguments"))
        XCTAssertTrue(message(["/a", "/a/b"]).contains("must not be inside"))
        XCTAssertTrue(message(["--config", "/nonexistent/fansync.conf.lua"]).contains("/nonexistent/fansync.conf.lua"))
        // verify's own options are not run's.
        XCTAssertThrowsError(try RunCommand.parse(["/a", "/b", "--fix"], cwd: "/"))
    }

    func testArgumentsAddTheComparisonBeforeTheEnds() throws {
        var config = MirrorConfig(name: "m", source: Array("/src".utf8), target: .local(path: Array("/dst".utf8)))
        config.rsync.extra = ["-q", "--bwlimit=10", "--quiet"]
        config.deleteExcluded = true
        let verifier = try Verifier(config: config, log: .quiet)
        defer { verifier.close() }
        let argv = verifier.verifyArguments(verifier.transport.treeArguments(.root, deletes: true, excludeFile: "/tmp/x"))
            .map { String(decoding: $0, as: UTF8.self) }
        XCTAssertEqual(Array(argv.suffix(6)), ["--dry-run", "--checksum", "--info=stats2", "--out-format=fansync-verify %i %n", "/src/", "/dst/"])
        XCTAssertFalse(argv.contains("-q"))
        XCTAssertFalse(argv.contains("--quiet"))
        XCTAssertFalse(argv.contains("--delete-excluded"))
        XCTAssertTrue(argv.contains("--bwlimit=10"))
        XCTAssertTrue(argv.contains("--delete"))
        XCTAssertTrue(argv.contains("--exclude-from=/tmp/x"))
    }
}
