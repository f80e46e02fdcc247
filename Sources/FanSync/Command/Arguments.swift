/// A small command-line reader: `--flag`, `--option value`, `--option=value`, `-v`,
/// positional arguments, `--` to end options. Errors name the argument.
public struct ArgumentReader {
    public struct UsageError: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    var args: [String]
    var index = 0
    public private(set) var positional: [String] = []

    public init(_ args: [String]) { self.args = args }

    /// The next option name (with its inline `=value` split off), or nil at the end.
    /// Positional arguments are collected on the way.
    public mutating func nextOption() -> (name: String, inline: String?)? {
        while index < args.count {
            let a = args[index]
            index += 1
            if a == "--" {
                positional += args[index...]
                index = args.count
                return nil
            }
            if a.hasPrefix("--") {
                if let eq = a.firstIndex(of: "=") {
                    return (String(a[..<eq]), String(a[a.index(after: eq)...]))
                }
                return (a, nil)
            }
            if a.hasPrefix("-") && a.count > 1 { return (a, nil) }
            positional.append(a)
        }
        return nil
    }

    public mutating func value(for option: (name: String, inline: String?)) throws -> String {
        if let v = option.inline { return v }
        guard index < args.count else { throw UsageError("\(option.name) needs a value") }
        index += 1
        return args[index - 1]
    }

    public mutating func number(for option: (name: String, inline: String?), min: Double = 0) throws -> Double {
        let text = try value(for: option)
        guard let v = Double(text), v.isFinite, v >= min else {
            throw UsageError("\(option.name): '\(text)' is not a number >= \(min.formatted0)")
        }
        return v
    }

    public mutating func integer(for option: (name: String, inline: String?), min: Int = 0) throws -> Int {
        let text = try value(for: option)
        guard let v = Int(text), v >= min else { throw UsageError("\(option.name): '\(text)' is not a whole number >= \(min)") }
        return v
    }

    public func flag(_ option: (name: String, inline: String?)) throws {
        if option.inline != nil { throw UsageError("\(option.name) takes no value") }
    }
}

extension Double {
    var formatted0: String { self == rounded() ? String(Int(self)) : String(self) }
}
