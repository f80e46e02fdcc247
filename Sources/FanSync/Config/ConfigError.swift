/// A config that cannot be used, and where: file, line, the `sync{}` (its number and source)
/// or `settings`, and the key.
///
/// `description` reads like a compiler error:
/// `/etc/lsyncd.conf.lua:14: sync{} #1 (line 9, source "/workspace"): 'delya': unknown key (did you mean 'delay'?)`
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The config file (or the module it required) the problem is in.
    public var file: String
    /// The line of the key when it can be found, else of the `sync{}`/`settings` call, else of
    /// Lua's error.
    public var line: Int?
    /// 1-based number of the `sync{}` call, in the order the config made them.
    public var syncIndex: Int?
    /// Line of that `sync{}` call.
    public var syncLine: Int?
    /// The `source` of that `sync{}`, when it has one.
    public var syncSource: String?
    /// "settings" for a problem in `settings`.
    public var section: String?
    /// The key, dotted for nested ones (`rsync._extra`, `ssh.port`).
    public var key: String?
    public var message: String
    /// Further problems found in the same config (the daemon refuses it for the first one;
    /// `check-config` lists them all).
    public var moreErrors: [ConfigError] = []

    public init(file: String, line: Int? = nil, syncIndex: Int? = nil, syncLine: Int? = nil,
                syncSource: String? = nil, section: String? = nil, key: String? = nil, message: String) {
        self.file = file
        self.line = line
        self.syncIndex = syncIndex
        self.syncLine = syncLine
        self.syncSource = syncSource
        self.section = section
        self.key = key
        self.message = message
    }

    /// Every problem, this one first.
    public var allErrors: [ConfigError] {
        var first = self
        first.moreErrors = []
        return [first] + moreErrors
    }

    /// This problem alone, on one line.
    public var headline: String {
        var s = file
        if let line { s += ":\(line)" }
        s += ": "
        if let syncIndex {
            s += "sync{} #\(syncIndex)"
            var parts: [String] = []
            if let syncLine, syncLine != line { parts.append("line \(syncLine)") }
            if let syncSource { parts.append("source \"\(syncSource)\"") }
            if !parts.isEmpty { s += " (" + parts.joined(separator: ", ") + ")" }
            s += ": "
        } else if let section {
            s += "\(section): "
        }
        if let key { s += "'\(key)': " }
        return s + message
    }

    public var description: String {
        if moreErrors.isEmpty { return headline }
        return ([headline] + moreErrors.map(\.headline)).joined(separator: "\n")
    }
}
