import CLinux
import Glibc
import Synchronization

/// The daemon's log: one line per event that matters, to stderr (journald adds the time)
/// and, with timestamps, to an optional log file.
public final class Logger: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case debug = 0, info = 1, warning = 2, error = 3
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var label: String { ["debug", "info", "warning", "error"][rawValue] }
    }

    private struct State { var fileFD: Int32 = -1; var syslog = false }

    /// Also sends every line to syslog, as lsyncd does with `logident` and `logfacility`.
    /// Returns false for a facility name syslog does not know.
    public func enableSyslog(ident: String, facility: String) -> Bool {
        let names: [String: Int32] = ["auth": 4 << 3, "authpriv": 10 << 3, "cron": 9 << 3, "daemon": 3 << 3, "ftp": 11 << 3,
                                      "kern": 0, "lpr": 6 << 3, "mail": 2 << 3, "news": 7 << 3, "syslog": 5 << 3,
                                      "user": 1 << 3, "uucp": 8 << 3, "local0": 16 << 3, "local1": 17 << 3, "local2": 18 << 3,
                                      "local3": 19 << 3, "local4": 20 << 3, "local5": 21 << 3, "local6": 22 << 3, "local7": 23 << 3]
        guard let code = names[facility.lowercased()] else { return false }
        clinux_openlog(ident, code)
        state.withLock { $0.syslog = true }
        return true
    }
    private let state = Mutex(State())
    public let minimum: Level
    public let toStderr: Bool

    public init(minimum: Level = .info, logFile: String? = nil, toStderr: Bool = true) throws {
        self.minimum = minimum
        self.toStderr = toStderr
        if let logFile {
            let fd = open(logFile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
            if fd < 0 { throw LogError(message: "cannot open log file \(logFile): \(String(cString: strerror(errno)))") }
            state.withLock { $0.fileFD = fd }
        }
    }

    public struct LogError: Error, CustomStringConvertible { public let message: String; public var description: String { message } }

    public static let quiet: Logger = try! Logger(minimum: .error, toStderr: false)

    public func log(_ level: Level, _ message: @autoclosure () -> String) {
        guard level >= minimum else { return }
        let text = message()
        let line = level == .info ? "fansync: \(text)\n" : "fansync: \(level.label): \(text)\n"
        state.withLock { s in
            if toStderr { _ = line.withCString { write(2, $0, strlen($0)) } }
            if s.syslog {
                // LOG_DEBUG 7, LOG_INFO 6, LOG_WARNING 4, LOG_ERR 3
                clinux_syslog([7, 6, 4, 3][level.rawValue], text)
            }
            if s.fileFD >= 0 {
                let stamped = "\(Self.timestamp()) \(level.label) \(text)\n"
                _ = stamped.withCString { write(s.fileFD, $0, strlen($0)) }
            }
        }
    }

    public func debug(_ m: @autoclosure () -> String) { log(.debug, m()) }
    public func info(_ m: @autoclosure () -> String) { log(.info, m()) }
    public func warning(_ m: @autoclosure () -> String) { log(.warning, m()) }
    public func error(_ m: @autoclosure () -> String) { log(.error, m()) }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { String(v).leftPadded(to: 2) }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(String(ts.tv_nsec / 1_000_000).leftPadded(to: 3))Z"
    }

    deinit {
        state.withLock { if $0.fileFD >= 0 { close($0.fileFD) } }
    }
}

/// Writes a line to stderr (commands' error messages; the daemon uses `Logger`).
public func printError(_ text: String) {
    let line = text.hasSuffix("\n") ? text : text + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

/// Writes bytes to stdout unchanged (names printed as they are).
public func writeOut(_ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        let w = bytes.withUnsafeBytes { write(1, $0.baseAddress! + off, $0.count - off) }
        if w <= 0 { if errno == EINTR { continue }; return }
        off += w
    }
}

extension String {
    var trimmingLeadingSpaces: Substring { drop { $0 == " " || $0 == "\t" } }
}
