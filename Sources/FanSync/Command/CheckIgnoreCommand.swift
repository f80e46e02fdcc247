#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `fansync check-ignore`: which paths the rules exclude, and which rule decides, in the
/// format of `git check-ignore` (names are printed as they are, never quoted).
///
/// Pure apart from the file system it inspects: arguments and standard input come in,
/// the bytes for standard output, the text for standard error and the exit status go out
/// (0: some path is excluded, 1: none, 128: an error).
public enum CheckIgnoreCommand {
    public typealias ResolvedConfig = (source: [UInt8], rulesFileNames: [[UInt8]], patterns: [String])

    public static let usage = """
    usage: fansync check-ignore [options] PATH...
       or: fansync check-ignore [options] --stdin

    Prints the paths that the rules exclude (like git check-ignore). PATHs are relative
    to the source root; absolute paths must lie inside it.

        -v, --verbose         print the deciding rule for each path:
                              <rules file>:<line>:<pattern><TAB><path>
                              (global patterns are reported as <exclude>)
        -n, --non-matching    with -v, also print paths that no rule matches
        -q, --quiet           print nothing, only set the exit status (one PATH)
        --stdin               read the paths from standard input, one per line
        -z                    with --stdin, paths and output are NUL-terminated
        --source DIR          the source root (default: the current directory)
        --config FILE         take the source root, rules file names and global
                              excludes from this config file
        --rules-file NAME     per-directory rules file name (repeatable; default
                              .fansyncignore; the first has the highest priority)
        --exclude PATTERN     a global pattern, as the config's exclude (repeatable)

    Exit status: 0 if some path is excluded, 1 if none is, 128 on error.

    """

    public static func run(
        arguments: [String],
        stdinBytes: () -> [UInt8],
        resolveConfig: (String) throws -> ResolvedConfig
    ) -> (output: [UInt8], errors: String, status: Int32) {
        var output: [UInt8] = []
        let errors = ""
        func fail(_ message: String) -> (output: [UInt8], errors: String, status: Int32) {
            (output, errors + "fansync check-ignore: \(message)\n", 128)
        }

        // Options (they may come anywhere before "--", as with git).
        var verbose = false, nonMatching = false, quiet = false, useStdin = false, nulTerminated = false
        var sourceOption: String?
        var configOption: String?
        var rulesFiles: [String] = []
        var excludes: [String] = []
        var paths: [String] = []
        var index = 0
        var endOfOptions = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if endOfOptions || !argument.hasPrefix("-") || argument == "-" {
                paths.append(argument)
                continue
            }
            if argument == "--" {
                endOfOptions = true
                continue
            }
            if argument.hasPrefix("--") {
                let body = argument.dropFirst(2)
                let name: Substring
                var inlineValue: String?
                if let equals = body.firstIndex(of: "=") {
                    name = body[..<equals]
                    inlineValue = String(body[body.index(after: equals)...])
                } else {
                    name = body
                }
                func value() -> String? {
                    if let inlineValue { return inlineValue }
                    guard index < arguments.count else { return nil }
                    index += 1
                    return arguments[index - 1]
                }
                switch name {
                case "verbose", "non-matching", "quiet", "stdin", "no-index", "help":
                    if inlineValue != nil { return fail("option --\(name) takes no value\n\n" + usage) }
                    switch name {
                    case "verbose": verbose = true
                    case "non-matching": nonMatching = true
                    case "quiet": quiet = true
                    case "stdin": useStdin = true
                    case "help": return (Array(usage.utf8), "", 0)
                    default: break  // --no-index: git's spelling; there is no index here
                    }
                case "source", "config", "rules-file", "exclude":
                    guard let v = value() else { return fail("option --\(name) needs a value\n\n" + usage) }
                    switch name {
                    case "source":
                        if sourceOption != nil { return fail("--source given twice") }
                        sourceOption = v
                    case "config":
                        if configOption != nil { return fail("--config given twice") }
                        configOption = v
                    case "rules-file":
                        if v.isEmpty || v.contains("/") || v == "." || v == ".." {
                            return fail("--rules-file '\(v)': a rules file name must be a plain file name")
                        }
                        rulesFiles.append(v)
                    default:
                        excludes.append(v)
                    }
                default:
                    return fail("unknown option '\(argument)'\n\n" + usage)
                }
                continue
            }
            for flag in argument.dropFirst() {
                switch flag {
                case "v": verbose = true
                case "n": nonMatching = true
                case "q": quiet = true
                case "z": nulTerminated = true
                case "h": return (Array(usage.utf8), "", 0)
                default: return fail("unknown option '-\(flag)' in '\(argument)'\n\n" + usage)
                }
            }
        }

        // The same checks as git check-ignore.
        if quiet && verbose { return fail("cannot have both --quiet and --verbose") }
        if useStdin && !paths.isEmpty { return fail("cannot specify pathnames with --stdin") }
        if nulTerminated && !useStdin { return fail("-z only makes sense with --stdin") }
        if !useStdin && paths.isEmpty { return fail("no path specified\n\n" + usage) }
        if quiet && paths.count > 1 { return fail("--quiet is only valid with a single pathname") }
        if nonMatching && !verbose { return fail("--non-matching is only valid with --verbose") }

        // Where the rules come from.
        let source: [UInt8]
        let rulesFileNames: [[UInt8]]
        let globalPatterns: [String]
        if let configOption {
            if sourceOption != nil || !rulesFiles.isEmpty || !excludes.isEmpty {
                return fail("--config cannot be combined with --source, --rules-file or --exclude")
            }
            do {
                let resolved = try resolveConfig(configOption)
                source = resolved.source
                rulesFileNames = resolved.rulesFileNames
                globalPatterns = resolved.patterns
            } catch {
                return fail("config \(configOption): \(error)")
            }
        } else {
            source = Array((sourceOption ?? ".").utf8)
            rulesFileNames = rulesFiles.isEmpty ? [Array(".fansyncignore".utf8)] : rulesFiles.map { Array($0.utf8) }
            globalPatterns = excludes
        }
        if source.isEmpty { return fail("the source directory is an empty path") }
        guard let root = absoluteSourceRoot(source) else {
            return fail("cannot determine the current directory: \(RulesEngine.errorText(errno))")
        }
        var info = stat()
        let statResult = (root + [0]).withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { stat($0.baseAddress!, &info) }
        }
        if statResult != 0 {
            return fail("source directory \(SyncPath.displayString(source)): \(RulesEngine.errorText(errno))")
        }
        if (info.st_mode & S_IFMT) != S_IFDIR {
            return fail("source directory \(SyncPath.displayString(source)): not a directory")
        }
        let engine = RulesEngine(sourceRoot: root, rulesFileNames: rulesFileNames, globalPatterns: globalPatterns)
        let realRoot = realPath(root)

        // The paths, as given (from standard input: one record at a time, as git reads them).
        var inputs: [[UInt8]] = paths.map { Array($0.utf8) }
        if useStdin {
            let data = stdinBytes()
            let separator: UInt8 = nulTerminated ? 0 : UInt8(ascii: "\n")
            inputs = data.split(separator: separator, omittingEmptySubsequences: false).map(Array.init)
            if data.last == separator || data.isEmpty { inputs.removeLast() }
        }

        var decided = 0
        let terminator: UInt8 = nulTerminated ? 0 : UInt8(ascii: "\n")
        for input in inputs {
            var original = input
            if useStdin && !nulTerminated {
                if original.last == UInt8(ascii: "\r") { original.removeLast() }
                if original.first == UInt8(ascii: "\"") {
                    guard let unquoted = unquoteCStyle(original) else {
                        // git stops here too; what was answered so far stands.
                        return finish(output: output, errors: errors + "fansync check-ignore: line is badly quoted: \(SyncPath.displayString(original))\n", status: 128, engine: engine)
                    }
                    original = unquoted
                }
            }
            if original.isEmpty {
                return finish(output: output, errors: errors + "fansync check-ignore: an empty string is not a valid path (use . for the source root)\n", status: 128, engine: engine)
            }
            guard let relative = relativePath(original, root: root, realRoot: realRoot) else {
                return finish(output: output, errors: errors + "fansync check-ignore: \(SyncPath.displayString(original)): is outside the source root \(SyncPath.displayString(root))\n", status: 128, engine: engine)
            }
            let isDirectory = !relative.isEmpty && isDirectoryNoFollow(root + [UInt8(ascii: "/")] + relative)
            var match = engine.explainRaw(relative, isDirectory: isDirectory)
            if !verbose && match?.negated == true { match = nil }
            if !quiet && (match != nil || nonMatching) {
                if !verbose {
                    output.append(contentsOf: original)
                    output.append(terminator)
                } else if nulTerminated {
                    if let match {
                        output.append(contentsOf: match.source)
                        output.append(0)
                        output.append(contentsOf: String(match.line).utf8)
                        output.append(0)
                        output.append(contentsOf: match.pattern)
                        output.append(0)
                    } else {
                        output.append(contentsOf: [0, 0, 0])
                    }
                    output.append(contentsOf: original)
                    output.append(0)
                } else {
                    if let match {
                        output.append(contentsOf: match.source)
                        output.append(UInt8(ascii: ":"))
                        output.append(contentsOf: String(match.line).utf8)
                        output.append(UInt8(ascii: ":"))
                        output.append(contentsOf: match.pattern)
                    } else {
                        output.append(contentsOf: Array("::".utf8))
                    }
                    output.append(UInt8(ascii: "\t"))
                    output.append(contentsOf: original)
                    output.append(UInt8(ascii: "\n"))
                }
            }
            if match != nil { decided += 1 }
        }
        return finish(output: output, errors: errors, status: decided > 0 ? 0 : 1, engine: engine)
    }

    private static func finish(output: [UInt8], errors: String, status: Int32, engine: RulesEngine) -> (output: [UInt8], errors: String, status: Int32) {
        var errors = errors
        for warning in engine.warnings {
            errors += "fansync check-ignore: warning: \(warning)\n"
        }
        return (output, errors, status)
    }

    // MARK: - Paths

    /// The source root as an absolute path, lexically normalised (no trailing slash).
    static func absoluteSourceRoot(_ source: [UInt8]) -> [UInt8]? {
        var path = source
        if path.first != UInt8(ascii: "/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            guard getcwd(&buffer, buffer.count) != nil else { return nil }
            let cwd = buffer.withUnsafeBufferPointer { b in
                Array(UnsafeRawBufferPointer(start: b.baseAddress, count: strlen(b.baseAddress!)))
            }
            path = cwd + [UInt8(ascii: "/")] + path
        }
        guard let normalized = normalize(path) else { return [UInt8(ascii: "/")] }
        return [UInt8(ascii: "/")] + (normalized.last == UInt8(ascii: "/") ? Array(normalized.dropLast()) : normalized)
    }

    static func realPath(_ path: [UInt8]) -> [UInt8]? {
        (path + [0]).withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { p -> [UInt8]? in
                guard let resolved = realpath(p.baseAddress!, nil) else { return nil }
                defer { free(resolved) }
                return Array(UnsafeRawBufferPointer(start: resolved, count: strlen(resolved)))
            }
        }
    }

    /// git's `normalize_path_copy` for a relative path (leading slashes ignored): `.`
    /// components and repeated slashes go, `..` removes a component; a trailing slash (or a
    /// trailing `.`/`..`) leaves a trailing slash. nil when `..` climbs above the start.
    static func normalize(_ raw: [UInt8]) -> [UInt8]? {
        var out: [ArraySlice<UInt8>] = []
        var trailingSlash = false
        for component in raw.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if component.elementsEqual([UInt8(ascii: ".")]) {
                trailingSlash = true
            } else if component.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                if out.isEmpty { return nil }
                out.removeLast()
                trailingSlash = true
            } else {
                out.append(component)
                trailingSlash = false
            }
        }
        if raw.last == UInt8(ascii: "/") { trailingSlash = true }
        var result: [UInt8] = []
        for (i, component) in out.enumerated() {
            if i > 0 { result.append(UInt8(ascii: "/")) }
            result.append(contentsOf: component)
        }
        if trailingSlash && !out.isEmpty { result.append(UInt8(ascii: "/")) }
        return result
    }

    /// A path argument made relative to the source root, as git's pathspec code does.
    static func relativePath(_ argument: [UInt8], root: [UInt8], realRoot: [UInt8]?) -> [UInt8]? {
        guard argument.first == UInt8(ascii: "/") else { return normalize(argument) }
        guard let absolute = normalize(argument) else { return nil }
        for candidate in [root, realRoot].compactMap({ $0 }) {
            let base = candidate.count > 1 ? Array(candidate.dropFirst()) : []  // without the leading "/"
            if base.isEmpty { return absolute }
            if absolute == base || absolute == base + [UInt8(ascii: "/")] { return [] }
            if absolute.count > base.count + 1, absolute.starts(with: base), absolute[base.count] == UInt8(ascii: "/") {
                return Array(absolute[(base.count + 1)...])
            }
        }
        return nil
    }

    static func isDirectoryNoFollow(_ path: [UInt8]) -> Bool {
        var info = stat()
        let result = (path + [0]).withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { lstat($0.baseAddress!, &info) }
        }
        return result == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// git's `unquote_c_style`: `"..."` with `\a \b \f \n \r \t \v \\ \"` and octal `\ooo`.
    /// nil when badly quoted.
    static func unquoteCStyle(_ quoted: [UInt8]) -> [UInt8]? {
        guard quoted.first == UInt8(ascii: "\"") else { return nil }
        var out: [UInt8] = []
        var i = 1
        while i < quoted.count {
            let c = quoted[i]
            if c == UInt8(ascii: "\"") {
                // The closing quote must end the line.
                return i == quoted.count - 1 ? out : nil
            }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                i += 1
                continue
            }
            i += 1
            guard i < quoted.count else { return nil }
            let e = quoted[i]
            switch e {
            case UInt8(ascii: "a"): out.append(7)
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "v"): out.append(11)
            case UInt8(ascii: "\\"), UInt8(ascii: "\""): out.append(e)
            case UInt8(ascii: "0")...UInt8(ascii: "3"):
                guard i + 2 < quoted.count else { return nil }
                let d1 = quoted[i + 1], d2 = quoted[i + 2]
                guard (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(d1),
                      (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(d2) else { return nil }
                out.append((e - 48) << 6 | (d1 - 48) << 3 | (d2 - 48))
                i += 2
            default:
                return nil
            }
            i += 1
        }
        return nil
    }
}
