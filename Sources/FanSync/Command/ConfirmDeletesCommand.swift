import Glibc

/// `fansync confirm-deletes`: releases the deletes a mirror holds because they would
/// remove more than `maxDeleteShare` of the backup. Writes `confirm-deletes` into the
/// mirror's state directory; the daemon takes it within a second and sends the deletes.
public enum ConfirmDeletesCommand {
    public static let help = """
    Usage: fansync confirm-deletes [--config FILE] [--state-dir DIR] [--name NAME]
           fansync confirm-deletes MIRROR_STATE_DIRECTORY

    Lets a running fansync propagate the deletes it holds (a start or a batch that would
    delete more than maxDeleteShare of the backup; `fansync status` shows them). Without
    --name, every mirror of the config (or every mirror under --state-dir, default
    /var/lib/fansync) is confirmed.
    """

    public static func main(_ arguments: [String]) -> Int32 {
        if arguments.contains("-h") || arguments.contains("--help") {
            print(help)
            return 0
        }
        var reader = ArgumentReader(arguments)
        var configFile: String?, root: [UInt8]?, name: String?
        do {
            while let opt = reader.nextOption() {
                switch opt.name {
                case "--config": configFile = try reader.value(for: opt)
                case "--state-dir": root = absolute(try reader.value(for: opt), cwd: currentDirectory())
                case "--name": name = try reader.value(for: opt)
                default: throw ArgumentReader.UsageError("unknown option \(opt.name) (see fansync confirm-deletes --help)")
                }
            }
            var directories: [[UInt8]] = []
            if let first = reader.positional.first {
                guard reader.positional.count == 1, configFile == nil, name == nil else {
                    throw ArgumentReader.UsageError("give one state directory, or --config/--state-dir/--name")
                }
                directories = [absolute(first, cwd: currentDirectory())]
            } else if let configFile {
                let loaded = try ConfigLoader.load(path: configFile)
                let mirrors = loaded.mirrors.filter { name == nil || $0.name == name }
                if mirrors.isEmpty { throw ArgumentReader.UsageError("\(configFile) has no sync{} named \(name ?? "")") }
                directories = mirrors.map { MirrorIndex.stateDirectory(of: $0, root: root ?? loaded.settings.stateDir) }
            } else if let name {
                directories = [MirrorIndex.stateDirectory(name: name, root: root)]
            } else {
                let base = root ?? MirrorIndex.defaultStateRoot
                directories = subdirectories(base).filter { isFile(MirrorIndex.indexFile(in: $0)) }
                if directories.isEmpty { throw ArgumentReader.UsageError("no mirror state directory in \(SyncPath.displayString(base))") }
            }
            var status: Int32 = 0
            for dir in directories {
                let text = SyncPath.displayString(dir)
                guard isFile(MirrorIndex.indexFile(in: dir)) else {
                    printError("fansync confirm-deletes: \(text) is not a mirror's state directory (no index.sqlite)")
                    status = 1
                    continue
                }
                do {
                    try writeFileAtomically(text + "/confirm-deletes", "\(Int(wallNow()))\n")
                    print("confirmed: \(text) (the running fansync sends the held deletes within a second)")
                } catch {
                    printError("fansync confirm-deletes: \(error)")
                    status = 1
                }
            }
            return status
        } catch {
            printError("fansync confirm-deletes: \(error)")
            return 2
        }
    }

    static func isFile(_ path: [UInt8]) -> Bool {
        var st = stat()
        return withCPath(path, { stat($0, &st) }) == 0
    }

    static func subdirectories(_ dir: [UInt8]) -> [[UInt8]] {
        guard let d = withCPath(dir, { opendir($0) }) else { return [] }
        defer { closedir(d) }
        return directoryNames(d).map { dir + [UInt8(ascii: "/")] + $0 }.sorted { $0.lexicographicallyPrecedes($1) }
    }
}
