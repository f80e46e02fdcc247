import Glibc

/// One line of `/proc/self/mountinfo` (see proc(5)), with its path fields unescaped.
public struct MountEntry: Sendable, Equatable {
    public var mountID: Int
    public var parentID: Int
    public var major: UInt32
    public var minor: UInt32
    /// The directory of the filesystem that is mounted here (a bind mount's subdirectory).
    public var root: [UInt8]
    /// Where it is mounted, absolute, as bytes.
    public var mountPoint: [UInt8]
    public var fsType: String
    public var source: [UInt8]

    public init(mountID: Int, parentID: Int, major: UInt32, minor: UInt32, root: [UInt8],
                mountPoint: [UInt8], fsType: String, source: [UInt8]) {
        self.mountID = mountID
        self.parentID = parentID
        self.major = major
        self.minor = minor
        self.root = root
        self.mountPoint = mountPoint
        self.fsType = fsType
        self.source = source
    }

    /// The mount point for messages.
    public var displayMountPoint: String { Mounts.display(mountPoint) }
}

/// Reading and interpreting the mount table.
public enum Mounts {
    /// Parses the text of `/proc/self/mountinfo`. Lines that do not have the documented
    /// shape are skipped.
    public static func parseMountInfo(_ data: [UInt8]) -> [MountEntry] {
        var out: [MountEntry] = []
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
            guard fields.count >= 10 else { continue }
            guard let dash = fields.firstIndex(where: { $0.count == 1 && $0.first == UInt8(ascii: "-") }),
                  dash >= 6, dash + 2 < fields.count else { continue }
            guard let id = Int(ascii(fields[0])), let parent = Int(ascii(fields[1])) else { continue }
            let devParts = fields[2].split(separator: UInt8(ascii: ":"))
            guard devParts.count == 2, let major = UInt32(ascii(devParts[0])),
                  let minor = UInt32(ascii(devParts[1])) else { continue }
            out.append(MountEntry(
                mountID: id, parentID: parent, major: major, minor: minor,
                root: unescape(fields[3]), mountPoint: unescape(fields[4]),
                fsType: String(decoding: unescape(fields[dash + 1]), as: UTF8.self),
                source: unescape(fields[dash + 2])))
        }
        return out
    }

    /// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline,
    /// `\134` backslash); anything else is kept byte for byte.
    public static func unescape<C: Collection>(_ field: C) -> [UInt8] where C.Element == UInt8 {
        let bytes = Array(field)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), let value = octal(bytes, i + 1) {
                out.append(value)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }

    private static func octal(_ b: [UInt8], _ at: Int) -> UInt8? {
        guard at + 3 <= b.count else { return nil }
        var v = 0
        for k in at..<(at + 3) {
            let c = b[k]
            guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "7") else { return nil }
            v = v * 8 + Int(c - UInt8(ascii: "0"))
        }
        return v <= 255 ? UInt8(v) : nil
    }

    private static func ascii(_ s: ArraySlice<UInt8>) -> String {
        String(decoding: s, as: UTF8.self)
    }

    /// Reads `/proc/self/mountinfo`.
    public static func readMountInfo() throws(FanotifyError) -> [MountEntry] {
        let data = try readWholeFile("/proc/self/mountinfo")
        return parseMountInfo(data)
    }

    static func readWholeFile(_ path: String) throws(FanotifyError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw FanotifyError("cannot open \(path)", errno: errno) }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FanotifyError("cannot read \(path)", errno: errno)
            }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
        }
        return data
    }

    /// True when `path` is `ancestor` or lies below it (both absolute, no trailing slash,
    /// except the root `/`).
    public static func isInsideOrEqual(_ path: [UInt8], _ ancestor: [UInt8]) -> Bool {
        if ancestor == [UInt8(ascii: "/")] { return path.first == UInt8(ascii: "/") }
        guard path.count >= ancestor.count, path.starts(with: ancestor) else { return false }
        return path.count == ancestor.count || path[ancestor.count] == UInt8(ascii: "/")
    }

    /// True when `path` lies strictly below `ancestor`.
    public static func isStrictlyInside(_ path: [UInt8], _ ancestor: [UInt8]) -> Bool {
        path != ancestor && isInsideOrEqual(path, ancestor)
    }

    /// The mounts whose mount point is `root` or below it, in mount-table order.
    public static func mounts(under root: [UInt8], in table: [MountEntry]) -> [MountEntry] {
        table.filter { isInsideOrEqual($0.mountPoint, root) }
    }

    static func display(_ bytes: [UInt8]) -> String {
        SyncPath.displayString(bytes)
    }
}

/// Why the fanotify watcher could not start (or a mount could not be read); carries the
/// errno text so the log names the cause.
public struct FanotifyError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public let errnoCode: Int32?

    public init(_ message: String, errno code: Int32? = nil) {
        self.message = message
        self.errnoCode = code
    }

    public var description: String {
        guard let code = errnoCode else { return message }
        return "\(message): \(String(cString: strerror(code))) (errno \(code))"
    }
}
