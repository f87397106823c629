import Logging
import Metrics
import ServiceLifecycle
import StunturnConfig
import StunturnMetrics
import Stunturn
import StunturnRelay
import StunturnServer
import StunturnSignaling
import StunturnSockets
import Synchronization
import UnixSignals

/// Runs a whole configuration as services in a `ServiceGroup`: the relayed connections, an
/// optional in-agent signaling server, every forward, each recovering on its own, the admin
/// socket `stunturn-agent status` asks, and the optional metrics endpoint.
///
/// Shutdown is graceful first: the forwards stop accepting and polling at once, the connections
/// already open go on for up to `drainTimeout`, then what is left is reset. A second SIGTERM or
/// SIGINT resets everything at once.
public final class Agent: Sendable {
    /// The configuration as it runs now (a reload replaces its forwards).
    public var config: AgentConfig { current.withLock { $0.config } }
    /// Each forward's counters and link, by name, as they run now.
    public var statistics: [String: ForwardStatistics] { current.withLock { $0.statistics } }
    let current: Mutex<(config: AgentConfig, statistics: [String: ForwardStatistics])>
    /// The file the configuration came from, read again on reload; nil for `forward`.
    public let configPath: String?
    /// What the command line sets over the config file (`--admin`, `--drain-timeout`, ...),
    /// applied to the file again on reload, so a reload compares like with like.
    let overrides: @Sendable (inout AgentConfig) -> Void
    /// Where reload requests go, once the forwards run.
    let reloads: (stream: AsyncStream<ReloadRequest>, continuation: AsyncStream<ReloadRequest>.Continuation)
    let logger: Logger
    let relay: RelayEngine
    let openedAdminPath = Mutex<String?>(nil)

    /// The admin socket the agent answers on, once it runs with one.
    public var adminPath: String? { openedAdminPath.withLock { $0 } }

    /// systemd's notification socket, when the agent runs under `Type=notify`.
    let notifier: SystemdNotifier?
    /// What the metrics endpoint serves, when the config asks for one.
    let exporter: MetricsExporter?
    /// What makes the forwards' series, those a reload adds included.
    let metricsFactory: any MetricsFactory

    /// `metrics` takes the forwards' series and is what the endpoint serves: the process's
    /// exporter (`MetricsExporter.bootstrap()`); without one, an agent whose config asks for the
    /// endpoint makes its own.
    public init(config: AgentConfig, logger: Logger, relay: RelayEngine = .shared, notifier: SystemdNotifier? = SystemdNotifier(),
                configPath: String? = nil, metrics: MetricsExporter? = nil,
                overrides: @escaping @Sendable (inout AgentConfig) -> Void = { _ in }) {
        self.notifier = notifier
        self.configPath = configPath
        self.overrides = overrides
        reloads = AsyncStream.makeStream(of: ReloadRequest.self, bufferingPolicy: .bufferingOldest(8))
        self.logger = logger
        self.relay = relay
        exporter = metrics ?? (config.metrics == nil ? nil : MetricsExporter())
        let factory = exporter?.factory ?? MetricsSystem.factory
        metricsFactory = factory
        var stats: [String: ForwardStatistics] = [:]
        for forward in config.forwards { stats[forward.name] = ForwardStatistics(forward: forward.name, metrics: factory) }
        current = Mutex((config, stats))
    }

    /// The services in start order; the group shuts them down one by one in reverse: first the
    /// forwards (they stop taking work at once), then the pool (the drain), then the in-agent
    /// server, so connections still being set up through it during the drain can finish, and the
    /// metrics endpoint and the admin socket last, so scrapes and `status` answer throughout.
    func services() throws -> (connections: ConnectionPool, all: [ServiceGroupConfiguration.ServiceConfiguration]) {
        let pool = ConnectionPool(logger: logger)
        var all: [ServiceGroupConfiguration.ServiceConfiguration] = []
        var signaling: RendezvousServer?
        if let serve = config.serve {
            // The config allows an IP literal or "localhost" here, so nothing is looked up.
            let address = try SocketAddress(parsing: serve.localhostAsLoopback.description)
            let server = RendezvousServer(listen: address, logger: Logger(label: "stunturn.server"))
            // Bound now, so that a taken port fails the start and forwards find the server up.
            do {
                try server.start()
            } catch {
                throw AgentStartError("serve \(serve)\(configLine("serve")): cannot run the signaling server: \(error)")
            }
            all.append(.init(service: SignalingServerService(server: server)))
            signaling = server
        }
        all.append(.init(service: pool))
        // Every listen port is bound before anything starts: one that cannot be (taken, or an
        // address this machine does not have) fails the start with the reason, rather than an
        // agent that looks up while a forward retries.
        var bound: [String: Socket] = [:]
        var closeBound = true
        defer { if closeBound { for socket in bound.values { socket.close() } } }
        for forward in config.forwards {
            guard case .listen(let endpoint) = forward.mode else { continue }
            do {
                let address = try SocketAddress(parsing: endpoint.localhostAsLoopback.description)
                bound[forward.name] = forward.transport == .udp ? try Socket.udp(on: address) : try Socket.listener(on: address)
            } catch {
                throw AgentStartError("forward \"\(forward.name)\"\(configLine("forward \(forward.name)")): cannot listen on \(forward.transport) \(endpoint): \(error)")
            }
        }
        let statistics = self.statistics
        let initial = config.forwards.map { forward in
            (ForwardContext(config: forward, logger: logger, relay: relay, statistics: statistics[forward.name]!, connections: pool),
             bound[forward.name])
        }
        all.append(.init(service: ForwardsService(agent: self, pool: pool, initial: initial)))
        if let metrics = try openMetricsServer(signaling: signaling) { all.insert(.init(service: EndpointService(metrics: metrics)), at: 0) }
        // Opened last: nothing after it can fail the start and leave its file behind.
        if let admin = try openAdminServer() { all.insert(.init(service: EndpointService(admin: admin)), at: 0) }
        if let notifier {
            all.append(.init(service: SystemdNotifyService(notifier: notifier, logger: logger) { [self] in statusLine() }))
        }
        closeBound = false
        return (pool, all)
    }

    /// Runs until the task is cancelled, or, with `handlingSignals`, until SIGTERM/SIGINT and the
    /// drain that follows.
    public func run(handlingSignals: Bool = false) async throws {
        let (_, services) = try self.services()
        var configuration = ServiceGroupConfiguration(services: services, logger: logger)
        configuration.maximumGracefulShutdownDuration = config.drainTimeout
        let group = ServiceGroup(configuration: configuration)
        guard handlingSignals else {
            try await group.run()
            return
        }
        let drain = config.drainTimeout
        let hangUp: (@Sendable () async -> Void)? = configPath == nil ? nil : { @Sendable [self] in
            logger.notice("received SIGHUP; reading \(configPath ?? "") again")
            _ = await reload()
        }
        try await SignalledShutdown.run(group, logger: logger, hangUp: hangUp) { signal in
            "received \(signal); shutting down: no new connections, \(self.openConnections) open connection(s) may finish within \(formatDuration(drain)) (a second signal resets them now)"
        } second: { signal in
            "received \(signal) again; shutting down now, resetting \(self.openConnections) open connection(s)"
        }
    }

    /// Local connections carried now, over every forward.
    var openConnections: Int { statistics.values.reduce(0) { $0 + max(0, $1.snapshot.active) } }

    /// Carries one connection over stdin/stdout (for ssh's ProxyCommand) as the one stream of its
    /// own session; returns when it ends, with its report, or nil when no session could be set up
    /// (the log says why).
    public static func runStdio(_ forward: ForwardConfig, logger: Logger, relay: RelayEngine = .shared) async throws -> RelayReport? {
        let context = ForwardContext(config: forward, logger: logger, relay: relay, statistics: ForwardStatistics(forward: forward.name),
                                     connections: nil)
        let endpoint = try RelayEndpoint.standardIO()
        let session: RelaySession, peer: String, path: TunnelPath
        do {
            let opened = try await context.openSession()
            (session, peer, path) = (opened.session, opened.peer, opened.path)
        } catch {
            logger.warning("stdio not carried: \(context.describeFailure(error))")
            return nil
        }
        // stdin and stdout reach the session through a loopback TCP pair: the relay copes with
        // whatever they are (pipes, terminals, regular files), the session sees one socket like
        // any stream, and a reset on either side of the pair reaches the other as a reset. stdout
        // cannot be reset, so a stream that ends abnormally also closes the stdio relay itself.
        let near: Socket, far: Socket
        do {
            (near, far) = try await Socket.loopbackPair()
        } catch {
            session.close(reason: "stdio could not be set up: \(error)")
            throw error
        }
        let local = RelayHolder()
        let stream = Task {
            let report = await session.carry(far, name: "stdio")
            if report.reset { local.cancel(reason: "the stream was reset: \(report.reason)") }
            return report
        }
        let localReport = await withCheckedContinuation { (continuation: CheckedContinuation<RelayReport, Never>) in
            local.set(relay.relay(endpoint, RelayEndpoint(socket: near, name: "stdio pair"), idleTimeout: forward.idleTimeout) {
                continuation.resume(returning: $0)
            })
        }
        // stdin or stdout failed (or sat idle): the pair was reset, and so is the stream.
        if localReport.reset { stream.cancel() }
        var report = await stream.value
        session.drain()
        context.logEnd(of: await session.ended, peer: peer)
        // The stream's end says how the peer's side went; the local relay's whether stdout took it all.
        report.reset = report.reset || localReport.reset
        context.record(report, description: "stdio", peer: peer, path: path.rawValue)
        return report
    }
}

/// One forward as a service: it takes connections (or polls for peers) until graceful shutdown,
/// and hands each one to the connection pool, so it can stop at once while they drain.
struct ForwardService: Service, CustomStringConvertible {
    let context: ForwardContext
    /// A listen forward's socket, bound at the start.
    let listener: Socket?

    /// How the service group names it in its logs (never with the key).
    var description: String { "forward \"\(context.config.name)\"" }

    func run() async throws {
        let context = self.context
        await cancelWhenGracefulShutdown {
            switch context.config.mode {
            case .expose(let target): await ExposeForward(context: context, target: target).run()
            case .listen(let address): await ListenForward(context: context, address: address, bound: listener).run()
            }
        }
        if Task.isShuttingDownGracefully {
            context.logger.info("stopped taking new connections")
        }
    }
}

/// Why the agent could not start: a port it must listen on, named with its config line.
public struct AgentStartError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension Agent {
    /// " (config line N)" for a setting `lines` knows, else nothing.
    func configLine(_ setting: String) -> String {
        config.lines[setting].map { " (config line \($0))" } ?? ""
    }
}

/// The in-agent (or stand-alone) signaling server as a service. It stops on graceful shutdown; the
/// agent lists it first, so it is the last of its services to stop.
public struct SignalingServerService: Service, CustomStringConvertible {
    public let server: RendezvousServer

    public var description: String { "signaling server \(server.boundAddress)" }

    public init(server: RendezvousServer) { self.server = server }

    public func run() async throws {
        try await cancelWhenGracefulShutdown { try await server.run() }
    }
}

/// SIGTERM and SIGINT for a service group: the first shuts it down gracefully, a second cancels it.
///
/// One signal sequence does both, set up before the group runs, so no signal can fall between two
/// listeners: ServiceGroup's own signal handling acts on the first signal only.
public enum SignalledShutdown {
    /// Runs `group` until its services end; `first` and `second` word the log line for each signal.
    /// With `hangUp`, SIGHUP runs it (a reload) instead of ending the process.
    public static func run(_ group: ServiceGroup, logger: Logger, hangUp: (@Sendable () async -> Void)? = nil,
                           first: @escaping @Sendable (UnixSignal) -> String,
                           second: @escaping @Sendable (UnixSignal) -> String) async throws {
        let signals = hangUp == nil ? await UnixSignalsSequence(trapping: .sigterm, .sigint)
            : await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask {
                var count = 0
                for await signal in signals {
                    if signal == .sighup {
                        // In a task of its own: a reload must never hold up SIGTERM.
                        if count == 0, let hangUp { Task { await hangUp() } }
                        continue
                    }
                    count += 1
                    if count == 1 {
                        logger.notice("\(first(signal))")
                        await group.triggerGracefulShutdown()
                    } else {
                        logger.notice("\(second(signal))")
                        return
                    }
                }
            }
            // Either the group ended (the signal task is then cancelled) or a second signal came
            // (the group is then cancelled: its services reset what they hold).
            try await tasks.next()
            tasks.cancelAll()
        }
    }
}

/// The agent as one service, for programs that run it in a service group of their own: their
/// group's graceful shutdown reaches the agent's, and the drain follows as with a signal.
extension Agent: Service {
    public func run() async throws {
        try await run(handlingSignals: false)
    }
}
