import Glibc

/// What one mirror reports in the status file.
public struct MirrorStatus: Sendable, Equatable {
    public struct Counters: Sendable, Equatable {
        public var filesSent = 0
        public var bytesSent: Int64 = 0
        public var batches = 0
        public var renames = 0
        /// Files whose content the backup already held (saved again unchanged): not sent.
        public var skipped = 0
        /// Files made on the backup from a copy it held (`cp best.pt last.pt`).
        public var copied = 0
        public var deletes = 0
        public var retries = 0
        public var lastSyncTime: Double? = nil
    }

    public var name: String
    public var backend: String
    public var source: String
    public var target: String
    public var watched: [String]
    public var queued: Int
    public var inFlight: Int
    public var oldestUnsyncedSeconds: Double
    public var initialSyncDone: Bool
    public var counters: Counters
    public var lastError: String?
    public var lastErrorTime: Double?
    public var targetReachable: Bool?
    public var stopped: String?
    /// Deletes waiting for `fansync confirm-deletes`, and what to do about them.
    public var deletesHeld = 0
    public var deleteHold: String? = nil

    var json: JSON {
        .object([
            ("name", .string(name)),
            ("backend", .string(backend)),
            ("source", .string(source)),
            ("target", .string(target)),
            ("watched_filesystems", .array(watched.map { .string($0) })),
            ("queued", .number(Double(queued))),
            ("in_flight", .number(Double(inFlight))),
            ("oldest_unsynced_seconds", .number((oldestUnsyncedSeconds * 1000).rounded() / 1000)),
            ("initial_sync_done", .bool(initialSyncDone)),
            ("files_sent", .number(Double(counters.filesSent))),
            ("bytes_sent", .number(Double(counters.bytesSent))),
            ("batches", .number(Double(counters.batches))),
            ("deletes", .number(Double(counters.deletes))),
            ("renames", .number(Double(counters.renames))),
            ("skipped", .number(Double(counters.skipped))),
            ("copied", .number(Double(counters.copied))),
            ("deletes_held", .number(Double(deletesHeld))),
            ("delete_hold", deleteHold.map { .string($0) } ?? .null),
            ("retries", .number(Double(counters.retries))),
            ("last_sync_time", counters.lastSyncTime.map { .number($0.rounded()) } ?? .null),
            ("last_error", lastError.map { .string($0) } ?? .null),
            ("last_error_time", lastErrorTime.map { .number($0.rounded()) } ?? .null),
            ("target_reachable", targetReachable.map { .bool($0) } ?? .null),
            ("stopped", stopped.map { .string($0) } ?? .null),
        ])
    }
}

/// A small JSON value: enough to write the status file and read it back.
public indirect enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (a: JSON, b: JSON) -> Bool { a.serialized() == b.serialized() }

    public func serialized(indent: Int? = 2, level: Int = 0) -> String {
        let pad = indent.map { String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let end = indent.map { String(repeating: " ", count: $0 * level) } ?? ""
        let nl = indent == nil ? "" : "\n"
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d):
            if d == d.rounded() && abs(d) < 1e15 { return String(Int64(d)) }
            return String(d)
        case .string(let s): return Self.quote(s)
        case .array(let items):
            if items.isEmpty { return "[]" }
            return "[" + nl + items.map { pad + $0.serialized(indent: indent, level: level + 1) }.joined(separator: "," + nl) + nl + end + "]"
        case .object(let fields):
            if fields.isEmpty { return "{}" }
            let sep = indent == nil ? ":" : ": "
            return "{" + nl + fields.map { pad + Self.quote($0.0) + sep + $0.1.serialized(indent: indent, level: level + 1) }.joined(separator: "," + nl) + nl + end + "}"
        }
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += "\\u" + String(u.value, radix: 16).leftPadded(to: 4) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    public subscript(key: String) -> JSON? {
        if case .object(let fields) = self { return fields.first { $0.0 == key }?.1 }
        return nil
    }

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var number: Double? { if case .number(let d) = self { return d }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [JSON]? { if case .array(let a) = self { return a }; return nil }

    /// Parses JSON text (the status file); nil when it is not valid JSON.
    public static func parse(_ text: String) -> JSON? {
        var p = Parser(bytes: Array(text.utf8))
        guard let v = p.value() else { return nil }
        p.skip()
        return p.i == p.bytes.count ? v : nil
    }

    struct Parser {
        let bytes: [UInt8]
        var i = 0
        mutating func skip() { while i < bytes.count, [9, 10, 13, 32].contains(bytes[i]) { i += 1 } }
        mutating func value() -> JSON? {
            skip()
            guard i < bytes.count else { return nil }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var fields: [(String, JSON)] = []
                skip()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                while true {
                    skip()
                    guard case .string(let k)? = value() else { return nil }
                    skip()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return nil }
                    i += 1
                    guard let v = value() else { return nil }
                    fields.append((k, v))
                    skip()
                    guard i < bytes.count else { return nil }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(fields) }
                    return nil
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSON] = []
                skip()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    guard let v = value() else { return nil }
                    items.append(v)
                    skip()
                    guard i < bytes.count else { return nil }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    return nil
                }
            case UInt8(ascii: "\""):
                i += 1
                var scalars = String.UnicodeScalarView()
                var raw: [UInt8] = []
                while i < bytes.count, bytes[i] != UInt8(ascii: "\"") {
                    if bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count {
                        scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars); raw = []
                        let c = bytes[i + 1]
                        i += 2
                        switch c {
                        case UInt8(ascii: "n"): scalars.append("\n")
                        case UInt8(ascii: "t"): scalars.append("\t")
                        case UInt8(ascii: "r"): scalars.append("\r")
                        case UInt8(ascii: "b"): scalars.append("\u{8}")
                        case UInt8(ascii: "f"): scalars.append("\u{c}")
                        case UInt8(ascii: "u"):
                            guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16) else { return nil }
                            i += 4
                            scalars.append(Unicode.Scalar(v) ?? "\u{fffd}")
                        default: scalars.append(Unicode.Scalar(c))
                        }
                    } else {
                        raw.append(bytes[i]); i += 1
                    }
                }
                guard i < bytes.count else { return nil }
                i += 1
                scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars)
                return .string(String(scalars))
            case UInt8(ascii: "t"):
                guard bytes[i...].starts(with: Array("true".utf8)) else { return nil }
                i += 4; return .bool(true)
            case UInt8(ascii: "f"):
                guard bytes[i...].starts(with: Array("false".utf8)) else { return nil }
                i += 5; return .bool(false)
            case UInt8(ascii: "n"):
                guard bytes[i...].starts(with: Array("null".utf8)) else { return nil }
                i += 4; return .null
            default:
                let start = i
                while i < bytes.count, "+-0123456789.eE".utf8.contains(bytes[i]) { i += 1 }
                guard let d = Double(String(decoding: bytes[start..<i], as: UTF8.self)) else { return nil }
                return .number(d)
            }
        }
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same directory, renamed over.
public func writeFileAtomically(_ path: String, _ text: String) throws {
    let tmp = path + ".tmp.\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw StatusFileError("cannot write \(tmp): \(String(cString: strerror(errno)))") }
    let bytes = Array(text.utf8)
    var off = 0
    while off < bytes.count {
        let w = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
        if w <= 0 { let e = errno; close(fd); unlink(tmp); throw StatusFileError("cannot write \(tmp): \(String(cString: strerror(e)))") }
        off += w
    }
    close(fd)
    guard rename(tmp, path) == 0 else {
        let e = errno; unlink(tmp)
        throw StatusFileError("cannot replace \(path): \(String(cString: strerror(e)))")
    }
}

public struct StatusFileError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}
