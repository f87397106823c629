import Testing
@testable import StunturnConfig

let keyA = "3f1c2b9e-6a0d-4c55-9e61-0b7f2d4a8c13"
let keyB = "9d2e7c41-0b8a-4f3e-a1d5-6c7e8f901234"

/// Joins lines so that a test's line numbers are the argument positions (first argument = line 1).
func yaml(_ lines: String...) -> String {
    lines.joined(separator: "\n") + "\n"
}

/// Parses text that must be valid, failing the test with every problem otherwise.
func parseValid(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> AgentConfig {
    do {
        return try AgentConfig.parse(yaml: text, source: "config.yaml")
    } catch {
        Issue.record("expected a valid config, got:\n\(error)", sourceLocation: sourceLocation)
        throw error
    }
}

/// Parses text that must be invalid and returns its problems.
func problems(in text: String, sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigProblem] {
    do {
        let config = try AgentConfig.parse(yaml: text, source: "config.yaml")
        Issue.record("expected problems, but the config parsed with \(config.forwards.count) forwards", sourceLocation: sourceLocation)
        return []
    } catch {
        return error.problems
    }
}

/// One invalid config and the problem it must produce.
struct BadConfig: CustomTestStringConvertible, Sendable {
    let label: String
    let yaml: String
    let line: Int?
    let path: String
    let message: String

    init(_ label: String, _ yaml: String, line: Int?, path: String, _ message: String) {
        self.label = label
        self.yaml = yaml
        self.line = line
        self.path = path
        self.message = message
    }

    var testDescription: String { label }
}
