import Glibc

/// `fansync verify [--config FILE [--name NAME] | SOURCE TARGET [options]] [--sample N] [--fix] [--json]`.
///
/// Exit status: 0 source and backup are identical, 1 differences were found (after `--fix`:
/// some remain), 2 the comparison could not be made (bad arguments, a target unreachable,
/// files rsync could not read).
public enum VerifyCommand {
    public static let help = """
    Usage: fansync verify SOURCE TARGET [options]
           fansync verify --config FILE [--name NAME] [options]

    Compares SOURCE and its backup TARGET by content and prints every difference, one per
    line, then a summary:
      missing PATH              on the source, not on the backup (or of another type there)
      extra PATH                on the backup only
      different PATH            a file whose content differs
      metadata PATH (WHAT)      same content; WHAT differs: perms, owner, group, mtime,
                                symlink target, ...
    Paths are relative to SOURCE; a directory ends with '/'; a byte that is not printable
    UTF-8 is shown as \\xNN. A directory's modification time is not compared (on a live
    mirror it changes with every entry added or removed); a file's is.

    The comparison is a dry run of the mirror's own rsync (its options and excludes) with
    --checksum: each side hashes its own files, so over ssh the backup is hashed on the
    backup host and no file content travels back. Paths the rules exclude are compared on
    neither side. With delete = false (--no-delete) files only on the backup are not
    reported. On a live mirror, a change not yet sent shows as a difference.

    Options:
      --config FILE             verify every sync{} of a Lua config
      --name NAME               with --config: only the sync{} of that name; with SOURCE
                                TARGET: the name shown in the summary
      --sample N                compare only N regular files of the source, chosen at random
                                (each printed: 'ok PATH' or its difference); files only on
                                the backup are not looked for
      --fix                     send what differs with the mirror's own transfer (missing and
                                different files sent, metadata set, extra files deleted),
                                then compare again and print the result
      --json                    print the result as JSON
      -v, --verbose             print the rsync command lines to stderr
      -h, --help                this help
    The options of `fansync run` that shape a mirror (--exclude, --exclude-from,
    --rules-file, --use-gitignore, --delete, --no-delete, --rsync-option, --rsync-binary,
    --ssh-option, --ssh-identity, --ssh-binary, ...) are taken too, so that a mirror is
    verified with the command line that runs it.

    Exit status: 0 identical, 1 differences found (with --fix: some remain after the
    repair), 2 the comparison could not be made (bad arguments, source or target missing or
    unreachable, files that could not be read); the reason is printed on stderr.
    """

    public struct Options: Sendable {
        public var sample: Int? = nil
        public var fix = false
        public var json = false
        public var name: String? = nil
        public var verbose = false
        public var mirrors: [MirrorConfig] = []
    }

    /// Parses verify's arguments: its own options, and `run`'s for the mirror.
    public static func parse(_ arguments: [String], cwd: String = currentDirectory()) throws -> Options {
        var options = Options()
        var fromConfig = false
        let parsed = try RunCommand.parse(arguments, cwd: cwd, command: "verify") { opt, reader in
            switch opt.name {
            case "--sample": options.sample = try reader.integer(for: opt, min: 1)
            case "--fix": try reader.flag(opt); options.fix = true
            case "--json": try reader.flag(opt); options.json = true
            case "--name": options.name = try reader.value(for: opt)
            case "--config": fromConfig = true; return false
            default: return false
            }
            return true
        }
        options.verbose = parsed.settings.verbose
        options.mirrors = parsed.mirrors
        if let name = options.name {
            if fromConfig {
                options.mirrors = parsed.mirrors.filter { $0.name == name }
                if options.mirrors.isEmpty {
                    throw ArgumentReader.UsageError("no sync{} named '\(name)' in the config (there are: \(parsed.mirrors.map { "'\($0.name)'" }.joined(separator: ", ")))")
                }
            } else {
                for i in options.mirrors.indices { options.mirrors[i].name = name }
            }
        }
        if options.mirrors.isEmpty { throw ArgumentReader.UsageError("the config defines no sync{}") }
        return options
    }

    public static func main(_ arguments: [String]) -> Int32 {
        if arguments.contains("-h") || arguments.contains("--help") {
            print(help)
            return 0
        }
        let options: Options
        do {
            options = try parse(arguments)
        } catch {
            printError("fansync verify: \(error)")
            return 2
        }
        let log: Logger
        do {
            log = try Logger(minimum: options.verbose ? .debug : .warning)
        } catch {
            printError("fansync verify: \(error)")
            return 2
        }
        var status: Int32 = 0
        var results: [JSON] = []
        for mirror in options.mirrors {
            if !options.json && options.mirrors.count > 1 {
                writeText("\(mirror.name): \(SyncPath.displayString(mirror.source)) -> \(mirror.target)\n")
            }
            let (code, json) = verify(mirror, options: options, log: log)
            status = max(status, code)
            results.append(json)
        }
        if options.json {
            let document = JSON.object([("status", .number(Double(status))), ("mirrors", .array(results))])
            writeText(document.serialized() + "\n")
        }
        return status
    }

    /// Verifies one mirror (and repairs it with --fix); returns the exit status and the
    /// mirror's JSON.
    static func verify(_ mirror: MirrorConfig, options: Options, log: Logger) -> (Int32, JSON) {
        var fields: [(String, JSON)] = [
            ("name", .string(mirror.name)),
            ("source", .string(SyncPath.displayString(mirror.source))),
            ("target", .string(mirror.target.description)),
        ]
        func failed(_ reason: String) -> (Int32, JSON) {
            // One line, whatever ssh wrote (it ends its lines with \r\n).
            let why = reason.unicodeScalars.split { $0 == "\n" || $0 == "\r" }
                .map { String(String.UnicodeScalarView($0)) }.filter { !$0.isEmpty }.joined(separator: " / ")
            printError("fansync verify: \(mirror.name): \(why)")
            fields.append(("error", .string(why)))
            return (2, .object(fields))
        }
        let verifier: Verifier
        do {
            verifier = try Verifier(config: mirror, log: log)
        } catch {
            return failed("\(error)")
        }
        defer { verifier.close() }
        do {
            var sample: [SyncPath]? = nil
            var population = 0
            if let n = options.sample {
                let drawn = try verifier.sample(n)
                sample = drawn.paths
                population = drawn.population
            }
            var report = try verifier.compare(sample: sample)
            report.population = population
            fields += reportFields(report)
            if !options.json {
                for d in report.differences { writeText(d.line + "\n") }
                if let sample {
                    let differing = Set(report.differences.map(\.path))
                    for p in sample where !differing.contains(p) { writeText("ok \(p.description)\n") }
                }
                writeText(summary(report, mirror: mirror, prefix: "") + "\n")
            }
            if let why = report.incomplete { return failed(why) }
            guard options.fix, !report.differences.isEmpty else {
                return (report.differences.isEmpty ? 0 : 1, .object(fields))
            }
            let sent = try verifier.fix(report.differences)
            if !options.json {
                writeText("\(mirror.name): --fix: \(sent.paths) path(s) sent: \(sent.files) file(s) transferred, \(sent.deleted) deleted\n")
            }
            var after = try verifier.compare(sample: sample)
            after.population = population
            fields.append(("fix", .object([("paths", .number(Double(sent.paths))), ("files", .number(Double(sent.files))),
                                           ("deleted", .number(Double(sent.deleted))), ("bytes", .number(Double(sent.bytes))),
                                           ("after", .object(reportFields(after)))])))
            if !options.json {
                for d in after.differences { writeText(d.line + "\n") }
                writeText(summary(after, mirror: mirror, prefix: "after --fix: ") + "\n")
            }
            if let why = after.incomplete { return failed(why) }
            return (after.differences.isEmpty ? 0 : 1, .object(fields))
        } catch {
            return failed("\(error)")
        }
    }

    /// `NAME: identical: ...` or `NAME: 3 differences (...) ...`.
    public static func summary(_ report: Verifier.Report, mirror: MirrorConfig, prefix: String) -> String {
        let source = SyncPath.displayString(mirror.source)
        let n = report.differences.count
        var text = "\(mirror.name): \(prefix)"
        if n == 0 {
            text += "identical"
        } else {
            let counts = VerifyDifference.Kind.allCases.map { kind in "\(report.differences.filter { $0.kind == kind }.count) \(kind.rawValue)" }
            text += "\(n) difference\(n == 1 ? "" : "s") (\(counts.joined(separator: ", ")))"
        }
        if let sampled = report.sampled {
            text += ": a sample of \(sampled.count) of the \(report.population) regular files of \(source) compared with \(mirror.target) by content"
            text += "; files only on the backup not looked for"
        } else {
            text += ": \(source) and \(mirror.target), \(report.compared) entries compared by content"
            if !report.extrasChecked { text += "; files only on the backup not looked for (the mirror does not delete)" }
        }
        return text
    }

    static func reportFields(_ report: Verifier.Report) -> [(String, JSON)] {
        var fields: [(String, JSON)] = [
            ("identical", .bool(report.differences.isEmpty && report.incomplete == nil)),
            ("compared", .number(Double(report.compared))),
            ("extras_checked", .bool(report.extrasChecked)),
        ]
        if let sampled = report.sampled {
            fields.append(("sample", .object([("size", .number(Double(sampled.count))),
                                              ("population", .number(Double(report.population))),
                                              ("paths", .array(sampled.map { .string($0.description) }))])))
        } else {
            fields.append(("sample", .null))
        }
        fields.append(("counts", .object(VerifyDifference.Kind.allCases.map { kind in
            (kind.rawValue, .number(Double(report.differences.filter { $0.kind == kind }.count)))
        })))
        fields.append(("differences", .array(report.differences.map { d in
            var o: [(String, JSON)] = [("kind", .string(d.kind.rawValue)), ("path", .string(d.path.isRoot ? "." : d.path.description)),
                                       ("directory", .bool(d.isDirectory)), ("details", .array(d.details.map { .string($0) }))]
            // A name that is not printable UTF-8 is shown escaped; its bytes, exactly:
            if String(validating: d.path.bytes, as: UTF8.self) != d.path.description {
                o.append(("path_hex", .string(d.path.bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined())))
            }
            return .object(o)
        })))
        fields.append(("incomplete", report.incomplete.map { .string($0) } ?? .null))
        return fields
    }

    static func writeText(_ text: String) { writeOut(Array(text.utf8)) }
}
