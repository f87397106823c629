import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The whole agent configuration, validated, with each forward's signaling server resolved.
public struct AgentConfig: Sendable {
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    public static let defaultLogLevel = "info"

    /// The top-level signaling server, if one was given.
    public var server: Endpoint?
    /// Where the in-agent signaling server listens, if it should run.
    public var serve: Endpoint?
    /// Where the agent serves its Prometheus metrics over HTTP (`GET /metrics`); off when nil.
    public var metrics: Endpoint?
    /// One of `AgentConfig.logLevels`, lowercased.
    public var logLevel: String
    /// `text` or `json` (`log_format`).
    public var logFormat = "text"
    public static let logFormats = ["text", "json"]
    /// On SIGTERM/SIGINT, how long open connections may go on before the rest are reset (0: at once).
    public var drainTimeout: Duration
    public var forwards: [ForwardConfig]
    /// Where settings are in the config file, for messages after the start: `serve`, `metrics`,
    /// and each forward's `expose`/`listen` line as `forward NAME`.
    public var lines: [String: Int] = [:]
    /// Not wrong, but worth fixing (a key file others can read): `check` prints them, `run` logs them.
    public var warnings: [String] = []
    /// Where the agent answers `stunturn-agent status` (YAML `admin`): its own default path when a
    /// config file leaves `admin` out; none for a config made in code unless it asks.
    public var admin: AdminSocketSetting

    /// Long enough for a page load or a short command to finish, short enough for a service
    /// manager's stop time-out (systemd's default is 90 s).
    public static let defaultDrainTimeout: Duration = .seconds(10)

    public init(server: Endpoint? = nil, serve: Endpoint? = nil, logLevel: String = AgentConfig.defaultLogLevel,
                drainTimeout: Duration = AgentConfig.defaultDrainTimeout, forwards: [ForwardConfig], lines: [String: Int] = [:],
                admin: AdminSocketSetting = .disabled, logFormat: String = "text", metrics: Endpoint? = nil) {
        self.lines = lines
        self.metrics = metrics
        self.logFormat = logFormat
        self.server = server
        self.serve = serve
        self.logLevel = logLevel
        self.drainTimeout = drainTimeout
        self.forwards = forwards
        self.admin = admin
    }

    /// Reads and validates the file at `path`; the path as given names the file in messages.
    public static func load(path: String) throws(ConfigError) -> AgentConfig {
        func failure(_ message: String) -> ConfigError {
            ConfigError(problems: [ConfigProblem(source: path, line: nil, path: "", message: message)])
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            // A folder on the way that this user may not enter hides the file: say so, rather
            // than that it does not exist.
            var status = stat()
            if stat(path, &status) != 0 && errno == EACCES {
                throw failure("cannot read config file \(path): permission denied (this user may not enter a folder on its path)")
            }
            throw failure("config file not found: \(path)")
        }
        if isDirectory.boolValue {
            throw failure("cannot read config file \(path): it is a directory")
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw failure("cannot read config file \(path): \(readFailureReason(error, path: path))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw failure("cannot read config file \(path): it is not UTF-8 text")
        }
        return try parse(yaml: text, source: path)
    }

    /// Validates YAML text; `source` names it in messages (usually the file name).
    public static func parse(yaml: String, source: String) throws(ConfigError) -> AgentConfig {
        var parser = ConfigParser(source: source)
        let config = parser.parse(yaml: yaml)
        guard var config, parser.problems.isEmpty else {
            throw ConfigError(problems: parser.sortedProblems)
        }
        config.warnings = parser.warnings
        return config
    }

    /// A readable multi-line description of what the agent will do, for `stunturn-agent check`.
    public func summary() -> String {
        var lines: [String] = []
        if let server { lines.append("signaling server: \(server)") }
        if let serve { lines.append("in-agent signaling server: listening on \(serve)") }
        lines.append("log level: \(logLevel), format \(logFormat)")
        lines.append("drain timeout: \(DurationText.format(drainTimeout)) (on SIGTERM/SIGINT, then open connections are reset)")
        lines.append("admin socket: \(admin)")
        lines.append("metrics: \(metrics.map { "http://\($0)/metrics" } ?? "off")")
        lines.append(forwards.count == 1 ? "1 forward:" : "\(forwards.count) forwards:")
        for forward in forwards {
            let what: String
            switch forward.mode {
            case .expose(let endpoint): what = "exposes \(endpoint) to the peer"
            case .listen(let endpoint): what = "listens on \(endpoint), connecting to the peer's service"
            }
            lines.append("  \(forward.name): \(forward.transport.rawValue) \(what)")
            var details = ["server \(forward.server)", "key \(Self.masked(forward.key))"]
            if let peerIP = forward.peerIP { details.append("peer_ip \(peerIP)") }
            lines.append("    " + details.joined(separator: ", "))
            let timeouts = [
                "tries \(forward.tries)",
                "punch_timeout \(DurationText.format(forward.punchTimeout))",
                "signal_timeout \(DurationText.format(forward.signalTimeout))",
                "connect_timeout \(DurationText.format(forward.connectTimeout))",
                "idle_timeout \(forward.idleTimeout.map(DurationText.format) ?? "never")",
            ]
            lines.append("    " + timeouts.joined(separator: ", "))
            if forward.transport == .tcp {
                lines.append("    one session with the peer: keepalive \(DurationText.format(forward.keepalive)), max_streams \(forward.maxStreams)")
                let relay = forward.relay == .auto ? "auto (after \(DurationText.format(forward.relayAfter)) without a direct path)" : forward.relay.rawValue
                lines.append("    relay \(relay)\(forward.serverToken == nil ? "" : ", server token set")")
            }
            if forward.plaintextInsecure {
                lines.append("    WARNING: plaintext_insecure is on; this tunnel is NOT encrypted")
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Enough of the key to tell keys apart without printing the secret.
    private static func masked(_ key: String) -> String {
        "\(key.prefix(4))…\(key.suffix(4)) (\(key.count) characters)"
    }

    private static func readFailureReason(_ error: Error, path: String) -> String {
        if !FileManager.default.isReadableFile(atPath: path) { return "permission denied" }
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError {
            return underlying.localizedDescription
        }
        return nsError.localizedDescription
    }
}

/// Where an agent opens its admin socket, the Unix socket `stunturn-agent status` asks.
public enum AdminSocketSetting: Sendable, Equatable, CustomStringConvertible {
    /// A path of the agent's own in a directory private to the user, found by `status` without
    /// being told (a config file without `admin`).
    case automatic
    /// No admin socket (`admin: none`); `status` cannot see the agent.
    case disabled
    case path(String)

    /// A Unix socket's path holds 107 bytes, and the agent first binds the path with ".new"
    /// appended before renaming it into place.
    public static let maximumPathLength = 103

    /// Why `path` cannot be an admin socket's path, or nil when it can.
    public static func problem(with path: String) -> String? {
        if path.isEmpty { return "is empty; give the socket's path, or none" }
        if path.hasSuffix("/") { return "'\(path)' names a directory; name the socket file in it, such as \(path)agent.sock" }
        if path.contains("\0") { return "must not contain a NUL character" }
        let length = path.utf8.count
        if length > maximumPathLength {
            return "is \(length) bytes long; a socket path may be at most \(maximumPathLength) bytes (choose a shorter one, e.g. under /run or /tmp)"
        }
        return nil
    }

    public var description: String {
        switch self {
        case .automatic: "this agent's own, in the default directory (see 'stunturn-agent status --help')"
        case .disabled: "none"
        case .path(let path): path
        }
    }
}
