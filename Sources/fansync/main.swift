import FanSync
import Glibc

let usage = """
Usage: fansync COMMAND [options]

Keeps a live backup of a directory: watches it (fanotify, or inotify where fanotify is not
allowed) and sends every change with rsync, to a local directory or over ssh.

Commands:
  run SOURCE TARGET [options]     mirror SOURCE to TARGET now and keep it mirrored
  run --config FILE               run the mirrors of a Lua config (lsyncd's vocabulary)
  status [--json]                 what the running daemon is doing, how far behind
  verify SOURCE TARGET [options]  compare source and backup by content; --fix repairs
  verify --config FILE            verify every mirror of a config (--name NAME: one)
  check-config FILE               load a config and print what each sync{} will do
  check-ignore [-v] PATH...       which rule excludes a path, and where
  confirm-deletes                 let the daemon send the deletes it holds (mass delete)
  help COMMAND                    a command's options

Run `fansync COMMAND --help` for a command's options.
"""

var args = Array(CommandLine.arguments.dropFirst())
guard let command = args.first else {
    printError(usage)
    exit(2)
}
args.removeFirst()
switch command {
case "run":
    exit(RunCommand.main(args))
case "status":
    exit(StatusCommand.main(args))
case "verify":
    exit(VerifyCommand.main(args))
case "confirm-deletes":
    exit(ConfirmDeletesCommand.main(args))
case "check-config":
    exit(CheckConfigCommand.run(arguments: args))
case "check-ignore":
    let result = CheckIgnoreCommand.run(arguments: args, stdinBytes: readStandardInput) { path in
        // The mirror whose source holds the current directory, else the config's first.
        let loaded = try ConfigLoader.load(path: path)
        let cwd = Array(currentDirectory().utf8)
        guard let first = loaded.mirrors.first else { throw ArgumentReader.UsageError("\(path) defines no sync{}") }
        let mirror = loaded.mirrors.first { SyncPath(bytes: cwd).isInside(SyncPath(bytes: $0.source)) } ?? first
        return (mirror.source, mirror.rulesFileNames, mirror.globalPatterns)
    }
    writeOut(result.output)
    if !result.errors.isEmpty { printError(result.errors) }
    exit(result.status)
case "-h", "--help", "help":
    if let sub = args.first {
        switch sub {
        case "run": print(RunCommand.help)
        case "status": print(StatusCommand.help)
        case "verify": print(VerifyCommand.help)
        case "confirm-deletes": print(ConfirmDeletesCommand.help)
        default: print(usage)
        }
    } else {
        print(usage)
    }
    exit(0)
case "--version", "version":
    print("fansync \(fansyncVersion)")
    exit(0)
default:
    printError("fansync: unknown command '\(command)'\n\n\(usage)")
    exit(2)
}

func readStandardInput() -> [UInt8] {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}
