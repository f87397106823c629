import ArgumentParser
import Logging
import StunturnConfig

// Command-line values parsed once, by type. Each keeps what went wrong, so `validate()` can say
// which option and why in the project's own words (argument-parser's own message would only say
// the value is invalid).

/// A number of seconds, such as `10` or `2.5`.
struct Seconds: ExpressibleByArgument, Sendable {
    let value: Double?
    let text: String

    init(_ value: Double) {
        self.value = value
        self.text = Self.format(value)
    }

    init?(argument: String) {
        text = argument
        value = Double(argument).flatMap { $0.isFinite ? $0 : nil }
    }

    var defaultValueDescription: String { text }

    /// The duration, rounded to the millisecond; call after `check`.
    var duration: Duration { .milliseconds(Int64(((value ?? 0) * 1000).rounded())) }
    var isZero: Bool { value == 0 }

    /// Throws unless the value is within `limit` (the config file's, for the same setting);
    /// `option` names it.
    func check(_ option: String, _ limit: DurationLimit) throws {
        guard let value else { throw ValidationError("\(option) must be a number of seconds, got '\(text)'") }
        if let problem = limit.problem(value, text: text) { throw ValidationError("\(option) \(problem)") }
    }

    /// For options with no config setting.
    func check(_ option: String, _ range: ClosedRange<Double>, zero: String? = nil) throws {
        try check(option, DurationLimit(range, zeroMeans: zero))
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : "\(value)"
    }
}

/// `HOST:PORT`, as the config file takes it.
struct EndpointArgument: ExpressibleByArgument, Sendable {
    let parsed: Result<Endpoint, EndpointError>
    let text: String

    init?(argument: String) {
        text = argument
        do {
            parsed = .success(try Endpoint(parsing: argument))
        } catch {
            parsed = .failure(error)
        }
    }

    /// The endpoint; throws naming `option` when the text was not one.
    func endpoint(_ option: String) throws -> Endpoint {
        switch parsed {
        case .success(let endpoint): return endpoint
        case .failure(let error): throw ValidationError("\(option): \(error)")
        }
    }
}

/// A log level by name.
struct LogLevelArgument: ExpressibleByArgument, Sendable {
    let level: Logger.Level?
    let text: String

    init?(argument: String) {
        text = argument
        level = Logger.Level(rawValue: argument.lowercased())
    }

    func checked() throws -> Logger.Level {
        guard let level else {
            throw ValidationError("--log-level: unknown level '\(text)'; use trace, debug, info, notice, warning, error or critical")
        }
        return level
    }
}

extension RelayMode: ExpressibleByArgument {}

/// `on` or `off`.
enum OnOff: String, ExpressibleByArgument, Sendable {
    case on, off
}
