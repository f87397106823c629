import Logging
import StunturnConfig
import StunturnRelay
import StunturnSignaling
import StunturnSockets

/// Runs a whole configuration: an optional in-agent signaling server and every forward, each
/// recovering on its own, until the task is cancelled (SIGINT/SIGTERM in the agent).
public final class Agent: Sendable {
    public let config: AgentConfig
    private let logger: Logger
    private let relay: RelayEngine
    public let statistics: [String: ForwardStatistics]

    public init(config: AgentConfig, logger: Logger, relay: RelayEngine = .shared) {
        self.config = config
        self.logger = logger
        self.relay = relay
        var stats: [String: ForwardStatistics] = [:]
        for forward in config.forwards { stats[forward.name] = ForwardStatistics() }
        self.statistics = stats
    }

    /// Starts the in-agent server (if configured) before any forward, so forwards that use it find it up.
    public func run() async throws {
        var server: RendezvousServer?
        if let serve = config.serve {
            let address = try SocketAddress.resolve(serve.description)[0]
            let s = RendezvousServer(listen: address, logger: Logger(label: "stunturn.server"))
            try s.start()
            server = s
        }
        defer { server?.stop() }
        await withDiscardingTaskGroup { group in
            for forward in config.forwards {
                let context = ForwardContext(config: forward, logger: logger, relay: relay, statistics: statistics[forward.name]!)
                group.addTask { await Agent.run(context) }
            }
        }
        logger.info("all forwards stopped")
    }

    static func run(_ context: ForwardContext) async {
        switch context.config.mode {
        case .expose(let target): await ExposeForward(context: context, target: target).run()
        case .listen(let address): await ListenForward(context: context, address: address).run()
        }
    }

    /// Carries one connection over stdin/stdout (for ssh's ProxyCommand); returns when it ends,
    /// with the relay's report, or nil when no tunnel could be set up (the log says why).
    public static func runStdio(_ forward: ForwardConfig, logger: Logger, relay: RelayEngine = .shared) async throws -> RelayReport? {
        let context = ForwardContext(config: forward, logger: logger, relay: relay, statistics: ForwardStatistics())
        let endpoint = try RelayEndpoint.standardIO()
        return await carryToPeer(context: context, local: endpoint, description: "stdio") {}
    }
}
