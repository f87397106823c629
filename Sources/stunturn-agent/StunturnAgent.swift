import ArgumentParser
import Foundation
import Logging
import StunturnAdmin
import StunturnConfig
import StunturnMetrics
import ServiceLifecycle
import StunturnSecure
import StunturnServer
import StunturnSignaling
import StunturnSockets
import StunturnSupervisor

let stunturnVersion = "0.1.0"

@main
struct StunturnAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stunturn-agent",
        abstract: "Connects two machines behind NATs directly and forwards ports over an encrypted, punched tunnel.",
        discussion: """
        Quick start on one machine:
          stunturn-agent demo
        Two machines: on a host both can reach, run
          stunturn-agent server --listen 0.0.0.0:7000
        make a key (stunturn-agent keygen > key), copy it to both, and run
          stunturn-agent forward --expose 127.0.0.1:22 --key-file key --server H:7000
        on one side (H: the host's name) and
          stunturn-agent forward --listen 127.0.0.1:2222 --key-file key --server H:7000
        on the other; then 'ssh -p 2222 localhost' reaches the first side's sshd.
        """,
        version: stunturnVersion,
        subcommands: [Run.self, Check.self, Forward.self, Status.self, Reload.self, Server.self, Demo.self, Stun.self, Keygen.self]
    )

    static func main() async {
        // A parent may start us with SIGINT/SIGTERM blocked (threads of Dispatch-based programs
        // block them); graceful shutdown needs them delivered.
        TerminationSignal.unblock()
        SystemIO.raiseOpenFileLimit()
        await main(nil)
    }
}

/// The config file of `run` and `check`: `--config FILE`, or the file name alone.
struct ConfigFileOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The YAML config file (see config.yaml.example).", valueName: "file"),
            completion: .file(extensions: ["yaml", "yml", "example"]))
    var config: String?

    @Argument(help: ArgumentHelp("The same as --config FILE.", valueName: "file"), completion: .file(extensions: ["yaml", "yml", "example"]))
    var file: String?

    func validate() throws {
        switch (config, file) {
        case (nil, nil): throw ValidationError("give the config file: --config FILE")
        case let (option?, argument?) where option != argument:
            throw ValidationError("two config files given ('\(option)' and '\(argument)'); give one")
        default: break
        }
    }

    /// The path given, by either spelling.
    var path: String { config ?? file ?? "" }
}

/// Options every long-running command shares.
struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error or critical.",
            completion: .list(["trace", "debug", "info", "notice", "warning", "error", "critical"]))
    var logLevel: LogLevelArgument?

    @Option(name: .long, help: ArgumentHelp("Log lines as text, or as one JSON object per line (time, level, message, forward and the rest as fields).", valueName: "text|json"))
    var logFormat: LogFormat?

    func validate() throws { _ = try logLevel?.checked() }

    /// Sends logs to stderr at the level given, or at `fallback`, in the format given (else `format`).
    func bootstrap(default fallback: Logger.Level = .info, format: LogFormat = .text) {
        let level = logLevel?.level ?? fallback
        let chosen = logFormat ?? format
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = chosen == .json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// The drain period of run and forward.
struct DrainOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Seconds open connections may go on after SIGTERM/SIGINT before they are reset (0: reset at once; default 10, or drain_timeout in the config). A second signal resets them at once.",
        valueName: "seconds"))
    var drainTimeout: Seconds?

    func validate() throws {
        try drainTimeout?.check("--drain-timeout", .drainTimeout)
    }

    var duration: Duration? { drainTimeout?.duration }
}

func loadConfig(_ path: String) throws -> AgentConfig {
    do {
        return try AgentConfig.load(path: path)
    } catch {
        // Typed throws: always a ConfigError, one problem per line.
        throw FailureExit.message(error.description, code: 2)
    }
}

/// Exits with a message on stderr and a chosen status, without argument-parser's usage text.
struct FailureExit: Error {
    let message: String
    let code: Int32
    static func message(_ message: String, code: Int32) -> FailureExit { FailureExit(message: message, code: code) }
}

extension AsyncParsableCommand {
    /// Runs `body`, turning a FailureExit into its message and status.
    func guarded(_ body: () async throws -> Void) async throws {
        FreeMemory.limitHeaps()
        do {
            try await body()
        } catch let exit as FailureExit {
            FileHandle.standardError.write(Data((exit.message + "\n").utf8))
            throw ExitCode(exit.code)
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every forward in a config file until SIGINT or SIGTERM.")

    @OptionGroup var file: ConfigFileOption

    @OptionGroup var drain: DrainOption

    @OptionGroup var admin: AdminOption

    @OptionGroup var metrics: MetricsOption

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        try await guarded {
            var config = try loadConfig(file.path)
            let (drainTimeout, adminSetting, metricsEndpoint) = (drain.duration, admin.setting, try metrics.endpoint())
            // What the command line sets wins over the file, now and at each reload.
            let overrides: @Sendable (inout AgentConfig) -> Void = { config in
                if let drainTimeout { config.drainTimeout = drainTimeout }
                if let adminSetting { config.admin = adminSetting }
                if let metricsEndpoint { config.metrics = metricsEndpoint }
            }
            overrides(&config)
            logging.bootstrap(default: Logger.Level(rawValue: config.logLevel) ?? .info, format: LogFormat(rawValue: config.logFormat) ?? .text)
            let logger = Logger(label: "stunturn.agent")
            logger.info("stunturn-agent \(stunturnVersion) starting \(config.forwards.count) forward(s) from \(file.path)")
            for warning in config.warnings { logger.warning("\(warning)") }
            let agent = Agent(config: config, logger: logger, configPath: file.path, metrics: bootstrapMetrics(for: config.metrics),
                              overrides: overrides)
            do {
                try await agent.run(handlingSignals: true)
            } catch let error where !(error is CancellationError) {
                throw FailureExit.message("stunturn-agent: \(error)", code: 1)
            }
            for (name, stats) in agent.statistics.sorted(by: { $0.key < $1.key }) {
                logger.info("forward \(name): \(stats.snapshot)")
            }
            logger.info("stopped")
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a config file and print a summary; exits non-zero listing every problem.")

    @OptionGroup var file: ConfigFileOption

    func run() async throws {
        try await guarded {
            let config = try loadConfig(file.path)
            print(config.summary())
            for warning in config.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
            print("\(file.path): OK")
        }
    }
}

struct Forward: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one forward from the command line, without a config file.",
        discussion: """
            With --stdio, one connection is carried over stdin/stdout, for ssh's ProxyCommand:
              ssh -o ProxyCommand="stunturn-agent forward --stdio \\
                --key-file KEYFILE --server HOST:PORT" you@host
            Each forward keeps one encrypted session with its peer; every local connection is a \
            stream on it (--stdio: one stream on a session of its own). While it runs, \
            'stunturn-agent status' shows its path, peer, streams and bytes (--admin says where it answers).
            It exits 0 when the connection ended in order, and 1 when no tunnel could be set up or \
            the tunnel broke (reset, failed authentication, or ended without the peer's close \
            record, so what was received may be incomplete); a warning on stderr says why.
            """)

    @Option(name: .long, help: ArgumentHelp("Make this local service reachable to the peer.", valueName: "host:port"))
    var expose: EndpointArgument?

    @Option(name: .long, help: ArgumentHelp("Open this local port; each connection reaches the peer's exposed service.", valueName: "host:port"))
    var listen: EndpointArgument?

    @Flag(name: .long, help: "Carry one connection over stdin/stdout (for ssh -o ProxyCommand).")
    var stdio = false

    @Option(name: .long, help: ArgumentHelp("A file holding the shared access key (the peer uses the same; make one with 'stunturn-agent keygen > FILE'). Or set STUNTURN_KEY.", valueName: "path"), completion: .file())
    var keyFile: String?

    @Option(name: .long, help: "The shared access key itself. It shows in 'ps' and shell history: prefer --key-file or STUNTURN_KEY.")
    var key: String?

    @Option(name: .long, help: ArgumentHelp("The signaling server.", valueName: "host:port"))
    var server: EndpointArgument

    @Flag(name: .long, help: "Forward UDP instead of TCP.")
    var udp = false

    @Option(name: .long, help: "The peer's public IP, for signaling servers that match receivers by IP.")
    var peerIP: String?

    @Option(name: .long, help: "Hole-punch attempts.")
    var tries: Int = 300

    @Option(name: .long, help: ArgumentHelp("Seconds hole punching may take.", valueName: "seconds"))
    var punchTimeout = Seconds(10)

    @Option(name: .long, help: ArgumentHelp("Seconds a listen side waits at the server for the exposing peer (the server may end the wait sooner: its --initiator-timeout, 30 s by default).", valueName: "seconds"))
    var signalTimeout = Seconds(30)

    @Option(name: .long, help: ArgumentHelp("Seconds an exposing side may take to connect to its local service.", valueName: "seconds"))
    var connectTimeout = Seconds(5)

    @Option(name: .long, help: ArgumentHelp("Reset relayed connections idle this many seconds, at both ends (0: never).", valueName: "seconds"))
    var idleTimeout = Seconds(0)

    @Option(name: .long, help: ArgumentHelp("Seconds between the session's pings; three unanswered ones end the session, which is then set up again.", valueName: "seconds"))
    var keepalive = Seconds(15)

    @Option(name: .long, help: ArgumentHelp("Connections one session carries at once; past it new ones are refused.", valueName: "count"))
    var maxStreams: Int = ForwardConfig.defaultMaxStreams

    @Flag(name: .long, help: "Turn tunnel encryption OFF (for measuring its overhead only).")
    var plaintextInsecure = false

    @Option(name: .long, help: ArgumentHelp("Relay the session through the signaling server: auto (when no direct path is up within --relay-after), never, or only.", valueName: "auto|never|only"))
    var relay: RelayMode = .auto

    @Option(name: .long, help: ArgumentHelp("With --relay auto, seconds a direct attempt has before the relay carries the session.", valueName: "seconds"))
    var relayAfter = Seconds(1)

    @Option(name: .long, help: ArgumentHelp("A file holding the token the server's operator gave you (first line that is not a # comment).", valueName: "path"), completion: .file())
    var serverTokenFile: String?

    @OptionGroup var drain: DrainOption

    @OptionGroup var admin: AdminOption

    @OptionGroup var metrics: MetricsOption

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        let modes = [expose != nil, listen != nil, stdio].filter { $0 }.count
        guard modes == 1 else { throw ValidationError("give exactly one of --expose HOST:PORT, --listen HOST:PORT or --stdio") }
        _ = try accessKey()
        _ = try server.endpoint("--server")
        _ = try expose?.endpoint("--expose")
        _ = try listen?.endpoint("--listen")
        if let peerIP, SocketAddress(ip: peerIP, port: 0) == nil {
            throw ValidationError("--peer-ip: expected an IP address such as 203.0.113.7 or 2001:db8::1, got '\(peerIP)'")
        }
        guard (1...100_000).contains(tries) else { throw ValidationError("--tries must be 1-100000, got \(tries)") }
        try punchTimeout.check("--punch-timeout", .punchTimeout)
        try signalTimeout.check("--signal-timeout", .signalTimeout)
        try connectTimeout.check("--connect-timeout", .connectTimeout)
        try idleTimeout.check("--idle-timeout", .idleTimeout)
        try keepalive.check("--keepalive", .keepalive)
        try relayAfter.check("--relay-after", .relayAfter)
        if let serverTokenFile {
            do { _ = try ServerTokenFile.read(serverTokenFile) } catch { throw ValidationError("--server-token-file: \(error)") }
        }
        guard ForwardConfig.maxStreamsRange.contains(maxStreams) else {
            throw ValidationError("--max-streams must be \(ForwardConfig.maxStreamsRange.lowerBound)-\(ForwardConfig.maxStreamsRange.upperBound), got \(maxStreams)")
        }
        if stdio && udp { throw ValidationError("--stdio carries one TCP connection; it cannot be combined with --udp") }
        if stdio && drain.drainTimeout != nil {
            throw ValidationError("--drain-timeout does not apply to --stdio: its one connection ends when stdin does")
        }
        if stdio && admin.admin != nil {
            throw ValidationError("--admin does not apply to --stdio: it carries one connection and opens no admin socket")
        }
        if stdio && metrics.metrics != nil {
            throw ValidationError("--metrics does not apply to --stdio: it carries one connection and serves no metrics")
        }
    }

    /// The key from --key-file, --key or STUNTURN_KEY (exactly one), checked, with where it came from.
    func accessKey() throws -> (key: String, source: String) {
        let environment = ProcessInfo.processInfo.environment["STUNTURN_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        let given: [(String, String)] = [
            keyFile.map { ($0, "--key-file") }, key.map { ($0, "--key") }, environment.map { ($0, "STUNTURN_KEY") },
        ].compactMap { $0 }
        guard let (value, source) = given.first else {
            throw ValidationError("no access key: give --key-file PATH (a file holding it), set STUNTURN_KEY, or give --key KEY; make one with 'stunturn-agent keygen'")
        }
        if keyFile != nil && key != nil { throw ValidationError("give only one of --key-file or --key") }
        var secret = value
        if source == "--key-file" {
            do { secret = try SecretFile.read(value, what: "key") } catch { throw ValidationError("--key-file: \(error)") }
        }
        if let problem = AccessKeyPolicy.problem(with: secret) { throw ValidationError("\(source): \(problem)") }
        return (secret, source)
    }

    func run() async throws {
        try await guarded {
            logging.bootstrap(default: stdio ? .warning : .info)
            let logger = Logger(label: "stunturn.agent")
            let (key, keySource) = try accessKey()
            if keySource == "--key" {
                logger.notice("the key given with --key shows in 'ps' and in shell history; prefer --key-file PATH or STUNTURN_KEY")
            } else if keySource == "--key-file", let keyFile, let exposure = SecretFile.exposure(of: keyFile) {
                logger.warning("--key-file: \(exposure)")
            }
            let mode: ForwardMode
            if let expose { mode = .expose(try expose.endpoint("--expose")) }
            else if let listen { mode = .listen(try listen.endpoint("--listen")) }
            else { mode = .listen(Endpoint(host: "127.0.0.1", port: 1)) }
            let forward = ForwardConfig(
                name: stdio ? "stdio" : (expose != nil ? "expose" : "listen"), mode: mode, key: key,
                transport: udp ? .udp : .tcp, server: try server.endpoint("--server"), peerIP: peerIP, tries: tries,
                punchTimeout: punchTimeout.duration, signalTimeout: signalTimeout.duration, connectTimeout: connectTimeout.duration,
                idleTimeout: idleTimeout.isZero ? nil : idleTimeout.duration, keepalive: keepalive.duration, maxStreams: maxStreams,
                plaintextInsecure: plaintextInsecure, relay: relay, relayAfter: relayAfter.duration,
                serverToken: try serverTokenFile.map { try ServerTokenFile.read($0) })
            if stdio {
                TerminationSignal.ignoreHangUp()
                // stdin and stdout cannot be reset as a socket can, so a broken tunnel (the stream
                // may be incomplete) shows in the exit status; the warning logged says why.
                guard let report = try await Agent.runStdio(forward, logger: logger), !report.reset else { throw ExitCode(1) }
                return
            }
            let config = AgentConfig(drainTimeout: drain.duration ?? AgentConfig.defaultDrainTimeout, forwards: [forward],
                                     admin: admin.setting ?? .automatic, metrics: try metrics.endpoint())
            let agent = Agent(config: config, logger: logger, metrics: bootstrapMetrics(for: config.metrics))
            do {
                try await agent.run(handlingSignals: true)
            } catch let error where !(error is CancellationError) {
                throw FailureExit.message("stunturn-agent: \(error)", code: 1)
            }
            logger.info("stopped: \(agent.statistics[forward.name]!.snapshot)")
        }
    }
}

struct Server: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the signaling server: TCP pairing by access key plus a STUN responder on the same UDP port.")

    @Option(name: .long, help: "Address to listen on, HOST:PORT (IPv4, bracketed IPv6 or a name such as localhost, e.g. 0.0.0.0:7000 or [::]:7000).")
    var listen: EndpointArgument

    @Option(name: .long, help: ArgumentHelp("Seconds an initiator waits for a receiver.", valueName: "seconds"))
    var initiatorTimeout = Seconds(30)

    @Option(name: .long, help: "Most initiators waiting at once; more are refused.")
    var maxWaiting: Int = 100_000

    @Option(name: .long, help: ArgumentHelp("Relay sessions whose peers cannot connect directly (both sides see only ciphertext pass).", valueName: "on|off"))
    var relay: OnOff = .on

    @Option(name: .long, help: ArgumentHelp("Most relayed sessions at once.", valueName: "count"))
    var relayMaxSessions: Int = 1000

    @Option(name: .long, help: ArgumentHelp("Most relayed sessions at once on one key.", valueName: "count"))
    var relayMaxPerKey: Int = 8

    @Option(name: .long, help: ArgumentHelp("Most relayed sessions at once with a side at one IP address.", valueName: "count"))
    var relayMaxPerAddress: Int = 32

    @Option(name: .long, help: ArgumentHelp("Bytes per second each direction of a relayed session may carry (0: no limit; default 12500000, 100 Mbit/s).", valueName: "bytes/s"))
    var relayRate: Int = 12_500_000

    @Option(name: .long, help: ArgumentHelp("Relay only for clients presenting one of these tokens (one per line, # comments).", valueName: "path"), completion: .file())
    var authTokenFile: String?

    @Flag(name: .long, help: "With --auth-token-file, refuse to pair clients without a valid token too.")
    var requireAuth = false

    @Option(name: .long, help: ArgumentHelp("Answer 'stunturn-agent status --admin PATH' on this Unix socket: waiting clients, pairings per second, relayed sessions and bytes.", valueName: "path"), completion: .file())
    var admin: String?

    @OptionGroup var metrics: MetricsOption

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        _ = try listen.endpoint("--listen")
        try initiatorTimeout.check("--initiator-timeout", 0.001...3600)
        guard maxWaiting > 0 else { throw ValidationError("--max-waiting must be positive, got \(maxWaiting)") }
        guard relayMaxSessions > 0 else { throw ValidationError("--relay-max-sessions must be positive, got \(relayMaxSessions)") }
        guard relayMaxPerKey > 0 else { throw ValidationError("--relay-max-per-key must be positive, got \(relayMaxPerKey)") }
        guard relayMaxPerAddress > 0 else { throw ValidationError("--relay-max-per-address must be positive, got \(relayMaxPerAddress)") }
        guard relayRate >= 0 else { throw ValidationError("--relay-rate must be 0 (no limit) or positive, got \(relayRate)") }
        if requireAuth && authTokenFile == nil { throw ValidationError("--require-auth needs --auth-token-file FILE") }
        if let authTokenFile {
            do { _ = try AuthTokens.load(path: authTokenFile) } catch { throw ValidationError("--auth-token-file: \(error)") }
        }
    }

    func run() async throws {
        try await guarded {
            logging.bootstrap()
            let logger = Logger(label: "stunturn.server")
            var options = RendezvousServer.Options()
            options.initiatorTimeout = initiatorTimeout.duration
            options.maxWaitingInitiators = maxWaiting
            options.relay = relay == .on
            options.relayMaxSessions = relayMaxSessions
            options.relayMaxPerKey = relayMaxPerKey
            options.relayMaxPerAddress = relayMaxPerAddress
            options.relayRate = relayRate == 0 ? nil : relayRate
            options.authTokens = try authTokenFile.map { try AuthTokens.load(path: $0) }
            options.requireAuth = requireAuth
            if let tokens = options.authTokens {
                logger.info("relaying only for clients with one of \(tokens.count) tokens\(requireAuth ? "; pairing too" : "")")
            }
            let endpoint = try listen.endpoint("--listen")
            let address: SocketAddress
            do {
                address = try await SocketAddress.resolveAsync(endpoint.localhostAsLoopback.description)[0]
            } catch {
                throw FailureExit.message("stunturn-agent server: --listen \(endpoint): \(error)", code: 1)
            }
            let server = RendezvousServer(listen: address, options: options, logger: logger)
            // Bound first, so that a taken port fails the start before the server is up.
            let metricsServer = try openMetricsServer(for: server, logger: logger)
            do {
                try server.start()
            } catch {
                throw FailureExit.message("stunturn-agent server: \(error)", code: 1)
            }
            var services: [any Service] = [SignalingServerService(server: server)]
            // Listed first, so it stops last.
            if let metricsServer { services.insert(EndpointService(metrics: metricsServer), at: 0) }
            if let admin {
                let relaying = options.relay
                let listening = server.boundAddress.description
                do {
                    let adminServer = try AdminServer(path: admin, logger: logger) { request in
                        switch request {
                        case .status:
                            let stats = await server.statistics
                            return try ServerStatus(stats, listen: listening, admin: admin, relaying: relaying).encoded() + [UInt8(ascii: "\n")]
                        case .reload:
                            throw AdminError(.failed, path: admin, "a signaling server has no config file to read again")
                        }
                    }
                    services.insert(EndpointService(admin: adminServer), at: 0)
                    logger.info("admin socket \(admin) answers 'stunturn-agent status --admin \(admin)'")
                } catch {
                    server.stop()
                    throw FailureExit.message("stunturn-agent server: --admin \(admin): \(error)", code: 1)
                }
            }
            let group = ServiceGroup(services: services, logger: logger)
            try await SignalledShutdown.run(group, logger: logger) { "received \($0); shutting down" } second: {
                "received \($0) again; stopping now"
            }
            let stats = await server.statistics
            logger.info("stopped after \(stats.paired) pairings, \(stats.relayedSessions) relayed sessions, \(stats.stunResponses) STUN responses")
        }
    }

    /// The metrics endpoint of --metrics, bound, serving the server's series; nil without the option.
    private func openMetricsServer(for server: RendezvousServer, logger: Logger) throws -> MetricsServer? {
        guard let endpoint = try metrics.endpoint(), let exporter = bootstrapMetrics(for: endpoint) else { return nil }
        let serverMetrics = ServerMetrics(server: server, factory: exporter.factory)
        exporter.refreshOnScrape { await serverMetrics.refresh() }
        do {
            // An IP literal or localhost, checked in validate(): nothing is looked up.
            let address = try SocketAddress(parsing: endpoint.localhostAsLoopback.description)
            return try MetricsServer(listen: address, exporter: exporter, logger: logger)
        } catch {
            throw FailureExit.message("stunturn-agent server: --metrics \(endpoint): cannot serve metrics: \(error)", code: 1)
        }
    }
}

struct Stun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a STUN server (ours or any RFC 5389 server) which public UDP address it sees; prints it last.")

    @Argument(help: "The STUN server, HOST:PORT.")
    var server: String

    @Option(name: .long, help: ArgumentHelp("Seconds to wait for an answer.", valueName: "seconds"))
    var timeout = Seconds(5)

    func validate() throws {
        try timeout.check("--timeout", 0.001...300)
    }

    func run() async throws {
        try await guarded {
            do {
                let mapped = try await STUNClient.discover(server: server, timeout: timeout.duration)
                print(mapped)
            } catch {
                throw FailureExit.message("stunturn-agent stun: \(error)", code: 1)
            }
        }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a new random access key (122 random bits).")

    func run() {
        print(AccessKeyGenerator.generate())
    }
}

extension ServerStatus {
    init(_ stats: RendezvousServer.Statistics, listen: String, admin: String, relaying: Bool) {
        self.init(pid: SystemIO.processID, admin: admin, listen: listen, uptimeSeconds: Int(stats.uptime.components.seconds),
                  waitingInitiators: stats.waitingInitiators, waitingReceivers: stats.waitingReceivers,
                  openConnections: stats.openConnections, pairings: stats.paired, pairingsPerSecond: stats.pairingsPerSecond,
                  relaying: relaying, relayedSessionsActive: stats.activeRelays, relaysPending: stats.pendingRelays,
                  relayedSessions: stats.relayedSessions, relayedBytes: stats.relayedBytes, relayRefusals: stats.relayRefused,
                  rejected: stats.rejected, stunResponses: stats.stunResponses)
    }
}
