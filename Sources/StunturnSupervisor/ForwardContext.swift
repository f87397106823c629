import Logging
import Stunturn
import StunturnConfig
import StunturnPunch
import StunturnRelay
import StunturnSecure
import StunturnSignaling
import StunturnSockets
import Synchronization

/// Whether a forward has been stopped (a reload removed or changed it): a session that comes up
/// after that must not serve on.
final class ForwardLifetime: Sendable {
    private let stopped = Atomic<Bool>(false)
    func stop() { stopped.store(true, ordering: .sequentiallyConsistent) }
    var isStopped: Bool { stopped.load(ordering: .sequentiallyConsistent) }
}

/// Everything one forward's sessions share.
struct ForwardContext: Sendable {
    let config: ForwardConfig
    let keys: TunnelKeys
    let logger: Logger
    let relay: RelayEngine
    let statistics: ForwardStatistics
    /// Where the forward's connections run; nil for `forward --stdio`, which carries one itself.
    let connections: ConnectionPool?
    let lifetime = ForwardLifetime()

    init(config: ForwardConfig, logger: Logger, relay: RelayEngine, statistics: ForwardStatistics, connections: ConnectionPool?) {
        self.config = config
        self.keys = TunnelKeys(accessKey: config.key)
        var logger = logger
        logger[metadataKey: "forward"] = "\(config.name)"
        self.logger = logger
        self.relay = relay
        self.statistics = statistics
        self.connections = connections
    }

    /// Hands one connection's work to the pool; false when the agent is shutting down.
    func submit(_ work: @escaping @Sendable () async -> Void) -> Bool {
        guard let connections else { return false }
        return connections.submit(work)
    }

    var signaling: SignalingClient {
        var client = SignalingClient(server: config.server.description)
        client.token = config.serverToken
        client.announceHostCandidates = config.transport == .tcp
        client.relay = RelayPolicy(rawValue: config.relay.rawValue)
        return client
    }

    /// How this forward's sessions choose between the direct path and the relay.
    func pathOptions(relay: RelayMode? = nil) -> PathOptions {
        var options = PathOptions()
        options.relay = RelayPolicy(rawValue: (relay ?? config.relay).rawValue) ?? .auto
        options.relayAfter = config.relayAfter
        options.punch = punchOptions
        options.encrypted = encrypted
        options.punchTag = keys.punchTag
        return options
    }
    var encrypted: Bool { !config.plaintextInsecure }

    var punchOptions: PunchOptions {
        var options = PunchOptions(tries: config.tries, timeout: config.punchTimeout)
        let logger = self.logger
        options.onRejected = { from, reason in
            logger.warning("rejected a connection on the punched port", metadata: ["remote": "\(from)", "reason": "\(reason)"])
        }
        let statistics = self.statistics
        options.onFinished = { outcome in
            statistics.metrics.punched(outcome)
            // A punch cancelled because the relay won the race neither succeeded nor failed.
            if outcome.result != .cancelled { statistics.punched(failed: outcome.result != .success) }
        }
        return options
    }

    /// The local endpoint (expose target or listen address) as a socket address.
    func localAddress(_ endpoint: Endpoint) async throws -> SocketAddress {
        try await SocketAddress.resolveAsync(endpoint.localhostAsLoopback.description)[0]
    }

    /// The forward's local socket: the one the agent bound at the start, else one bound here,
    /// retrying with back-off while the address is unavailable (another program holds the port,
    /// the interface is not up yet); nil once cancelled.
    func localSocket(bound: Socket?, _ make: () async throws -> Socket) async -> Socket? {
        if let bound { return bound }
        var backoff = Backoff()
        while !Task.isCancelled {
            do {
                return try await make()
            } catch {
                let delay = backoff.next()
                logger.error("cannot listen: \(error) (forward \"\(config.name)\"); retrying in \(formatDuration(delay))")
                // Cancellation ends the wait early; the loop then ends.
                try? await Task.sleep(for: delay)
            }
        }
        return nil
    }

    /// One line saying why a session failed, by the stage that failed.
    func describeFailure(_ error: Error) -> String {
        switch error {
        case let error as PunchError: return "punch failed: \(error)"
        case let error as TunnelSecurityError: return "tunnel handshake failed: \(error)"
        case let error as SignalingError: return "signaling failed: \(error)"
        case let error as PathError: return error.message
        default: return "\(error)"
        }
    }
}

/// Lets a cancellation that races the relay's start still close it.
final class RelayHolder: Sendable {
    private struct State {
        var connection: RelayConnection?
        var cancelled: String?
    }
    private let state = Mutex(State())

    func set(_ connection: RelayConnection) {
        let closeNow = state.withLock { state -> String? in
            state.connection = connection
            return state.cancelled
        }
        if let closeNow { connection.close(reason: closeNow) }
    }

    func cancel(reason: String = "agent shutting down") {
        let connection = state.withLock { state -> RelayConnection? in
            state.cancelled = reason
            return state.connection
        }
        connection?.close(reason: reason)
    }
}

extension Duration {
    var milliseconds: Int {
        Int(components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000)
    }
}
