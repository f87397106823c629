/// Every problem found in a config file; loading fails only after all of them are collected.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public let problems: [ConfigProblem]

    public init(problems: [ConfigProblem]) {
        self.problems = problems
    }

    /// One problem per line.
    public var description: String {
        problems.map(\.description).joined(separator: "\n")
    }
}

/// One problem in a config file, located by file, line and field path such as `forwards[1].expose`.
public struct ConfigProblem: Sendable, Equatable, CustomStringConvertible {
    /// The file's display name, as the user gave it.
    public let source: String
    public let line: Int?
    /// Dotted path to the field, with 0-based list indexes; empty for file-level problems.
    public let path: String
    public let message: String

    public init(source: String, line: Int?, path: String, message: String) {
        self.source = source
        self.line = line
        self.path = path
        self.message = message
    }

    /// `config.yaml line 7: forwards[1].expose: port must be 1-65535, got 0`
    public var description: String {
        var text = source
        if let line { text += " line \(line)" }
        text += ": "
        if !path.isEmpty { text += "\(path): " }
        return text + message
    }
}
