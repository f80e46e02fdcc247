import CLinux
import Glibc
import Synchronization

/// A child process started with `vfork` + `execve` (`clinux_spawn`), arguments passed as
/// bytes (never through a shell), in its own process group so that stopping it stops what
/// it started, and sent SIGTERM if the thread that started it dies (a daemon killed with
/// SIGKILL leaves no rsync running on its own).
public struct Subprocess {
    public struct Result: Sendable {
        public var status: Int32          // exit code, or 128+signal
        public var output: [UInt8]        // stdout
        public var errorOutput: [UInt8]   // stderr
        public var errorText: String { String(decoding: errorOutput, as: UTF8.self) }
        public var outputText: String { String(decoding: output, as: UTF8.self) }
    }

    public enum Failure: Error, CustomStringConvertible {
        case spawn(String, Int32)
        public var description: String {
            switch self {
            case .spawn(let program, let code): return "cannot start \(program): \(String(cString: strerror(code)))"
            }
        }
    }

    /// Runs `argv` (argv[0] is looked up in PATH), writes `input` to its stdin, and collects
    /// stdout and stderr. `onStart` receives the child's pid (to signal it from elsewhere).
    public static func run(_ argv: [[UInt8]], input: [UInt8] = [], environment: [String: String]? = nil,
                           onStart: ((pid_t) -> Void)? = nil) throws -> Result {
        precondition(!argv.isEmpty)
        var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard clinux_pipe_cloexec(&inPipe) == 0, clinux_pipe_cloexec(&outPipe) == 0, clinux_pipe_cloexec(&errPipe) == 0 else {
            throw Failure.spawn(String(decoding: argv[0], as: UTF8.self), errno)
        }
        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { bytes in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
            p[bytes.count] = 0
            return p
        } + [nil]
        defer { for p in cArgs { p?.deallocate() } }
        var envStrings: [UnsafeMutablePointer<CChar>?] = []
        if let environment {
            envStrings = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        }
        defer { for p in envStrings { free(p) } }

        var rc: Int32 = 0
        let pid: pid_t = cArgs.withUnsafeBufferPointer { argvBuf in
            if environment != nil {
                return envStrings.withUnsafeBufferPointer { envBuf in
                    clinux_spawn(argvBuf[0]!, argvBuf.baseAddress!, envBuf.baseAddress!, inPipe[0], outPipe[1], errPipe[1], &rc)
                }
            }
            return clinux_spawn(argvBuf[0]!, argvBuf.baseAddress!, environ, inPipe[0], outPipe[1], errPipe[1], &rc)
        }
        close(inPipe[0]); close(outPipe[1]); close(errPipe[1])
        if pid < 0 {
            close(inPipe[1]); close(outPipe[0]); close(errPipe[0])
            throw Failure.spawn(String(decoding: argv[0], as: UTF8.self), rc)
        }
        onStart?(pid)

        // One poll loop feeds stdin and drains stdout and stderr, so no pipe can fill up
        // and block the other side.
        var inFd = inPipe[1], outFd = outPipe[0], errFd = errPipe[0]
        if input.isEmpty { close(inFd); inFd = -1 } else { _ = fcntl(inFd, F_SETFL, O_NONBLOCK) }
        var written = 0
        var output: [UInt8] = [], errors: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while outFd >= 0 || errFd >= 0 || inFd >= 0 {
            var fds: [pollfd] = []
            if inFd >= 0 { fds.append(pollfd(fd: inFd, events: Int16(POLLOUT), revents: 0)) }
            if outFd >= 0 { fds.append(pollfd(fd: outFd, events: Int16(POLLIN), revents: 0)) }
            if errFd >= 0 { fds.append(pollfd(fd: errFd, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 { if errno == EINTR { continue }; break }
            for f in fds where f.revents != 0 {
                if f.fd == inFd {
                    let w = input.withUnsafeBytes { raw in
                        write(inFd, raw.baseAddress! + written, min(raw.count - written, 1 << 20))
                    }
                    if w > 0 { written += w }
                    if w < 0 && errno != EAGAIN && errno != EINTR { written = input.count }
                    if written >= input.count { close(inFd); inFd = -1 }
                } else {
                    let r = buffer.withUnsafeMutableBytes { read(f.fd, $0.baseAddress, $0.count) }
                    if r > 0 {
                        if f.fd == outFd { output.append(contentsOf: buffer[0..<r]) } else { errors.append(contentsOf: buffer[0..<r]) }
                    } else if r == 0 || (errno != EINTR && errno != EAGAIN) {
                        close(f.fd)
                        if f.fd == outFd { outFd = -1 } else { errFd = -1 }
                    }
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Result(status: code, output: output, errorOutput: errors)
    }

    /// Starts `argv` in the background with stdin and stdout on /dev/null and stderr
    /// appended to `errorPath`; the caller reaps it with `waitpid`.
    public static func spawnBackground(_ argv: [String], errorPath: String) throws -> pid_t {
        let null0 = open("/dev/null", O_RDONLY | O_CLOEXEC), null1 = open("/dev/null", O_WRONLY | O_CLOEXEC)
        let err = open(errorPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        defer { for fd in [null0, null1, err] where fd >= 0 { close(fd) } }
        guard null0 >= 0, null1 >= 0, err >= 0 else { throw Failure.spawn(argv[0], errno) }
        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var rc: Int32 = 0
        let pid = cArgs.withUnsafeBufferPointer { clinux_spawn($0[0]!, $0.baseAddress!, environ, null0, null1, err, &rc) }
        if pid < 0 { throw Failure.spawn(argv[0], rc) }
        return pid
    }

    public static func run(_ argv: [String], input: [UInt8] = []) throws -> Result {
        try run(argv.map { Array($0.utf8) }, input: input)
    }
}

/// Absolute path bytes of `path` joined with a relative `SyncPath`.
func joinPath(_ base: [UInt8], _ rel: SyncPath) -> [UInt8] {
    if rel.isRoot { return base }
    if base.last == UInt8(ascii: "/") { return base + rel.bytes }
    return base + [UInt8(ascii: "/")] + rel.bytes
}

/// Calls `body` with a NUL-terminated C string of `bytes`, made on the stack where it is
/// small (a copy with a NUL appended was an allocation per system call).
func withCPath<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
    try withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { buf in
        bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(buf).copyMemory(from: $0) }
        buf[bytes.count] = 0
        return try body(UnsafePointer(buf.baseAddress!))
    }
}

/// The names in an open directory stream, without "." and "..".
func directoryNames(_ stream: OpaquePointer) -> [[UInt8]] {
    var names: [[UInt8]] = []
    while let e = readdir(stream) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
        if name != [UInt8(ascii: ".")] && name != [UInt8(ascii: "."), UInt8(ascii: ".")] { names.append(name) }
    }
    return names
}

/// The current monotonic time in seconds.
public func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The wall-clock time in seconds since the epoch.
public func wallNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
