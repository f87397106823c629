import Metrics
import ServiceLifecycle
import StunturnMetrics
import StunturnServer
import StunturnSockets
import Synchronization

extension EndpointService {
    public init(metrics server: MetricsServer) {
        self.init("metrics endpoint \(server.address)") { await server.run() }
    }
}

/// The signaling server's series, set from its statistics at each scrape: the server keeps its
/// counts on its own queue, and nothing is done for them between scrapes.
public final class ServerMetrics: Sendable {
    private let server: RendezvousServer
    private let pairings: Counter
    private let relaySessionsTotal: Counter
    private let relayedBytes: Counter
    private let relayRefusals: Counter
    private let stunResponses: Counter
    private let waitingInitiators: Gauge
    private let waitingReceivers: Gauge
    private let connections: Gauge
    private let relaySessions: Gauge
    /// The counts the counters have been advanced to.
    private struct Counted {
        var paired = 0
        var relayedSessions = 0
        var relayedBytes: UInt64 = 0
        var relayRefused = 0
        var stunResponses = 0
    }
    private let counted = Mutex(Counted())

    public init(server: RendezvousServer, factory: any MetricsFactory = MetricsSystem.factory) {
        self.server = server
        pairings = Counter(label: MetricSeries.serverPairings.name, factory: factory)
        relaySessionsTotal = Counter(label: MetricSeries.serverRelaySessionsTotal.name, factory: factory)
        relayedBytes = Counter(label: MetricSeries.serverRelayedBytes.name, factory: factory)
        relayRefusals = Counter(label: MetricSeries.serverRelayRefusals.name, factory: factory)
        stunResponses = Counter(label: MetricSeries.serverSTUNResponses.name, factory: factory)
        waitingInitiators = Gauge(label: MetricSeries.serverWaitingInitiators.name, factory: factory)
        waitingReceivers = Gauge(label: MetricSeries.serverWaitingReceivers.name, factory: factory)
        connections = Gauge(label: MetricSeries.serverConnections.name, factory: factory)
        relaySessions = Gauge(label: MetricSeries.serverRelaySessions.name, factory: factory)
    }

    /// Reads the server's statistics and sets the series from them.
    public func refresh() async {
        let now = await server.statistics
        waitingInitiators.record(now.waitingInitiators)
        waitingReceivers.record(now.waitingReceivers)
        connections.record(now.openConnections)
        relaySessions.record(now.activeRelays)
        // Two scrapes at once may read in either order: a counter only ever moves up to a newer count.
        counted.withLock { last in
            Self.advance(pairings, &last.paired, to: now.paired)
            Self.advance(relaySessionsTotal, &last.relayedSessions, to: now.relayedSessions)
            Self.advance(relayedBytes, &last.relayedBytes, to: now.relayedBytes)
            Self.advance(relayRefusals, &last.relayRefused, to: now.relayRefused)
            Self.advance(stunResponses, &last.stunResponses, to: now.stunResponses)
        }
    }

    private static func advance<Count: BinaryInteger>(_ counter: Counter, _ last: inout Count, to now: Count) {
        guard now > last else { return }
        counter.increment(by: now - last)
        last = now
    }
}

extension Agent {
    /// Binds the metrics endpoint the config asks for; with an in-agent signaling server, its
    /// series are served too. A port that cannot be bound fails the start.
    func openMetricsServer(signaling: RendezvousServer?) throws -> MetricsServer? {
        guard let endpoint = config.metrics, let exporter else { return nil }
        let server: MetricsServer
        do {
            // The config allows an IP literal or "localhost" here, so nothing is looked up.
            let address = try SocketAddress(parsing: endpoint.localhostAsLoopback.description)
            server = try MetricsServer(listen: address, exporter: exporter, logger: logger)
        } catch {
            throw AgentStartError("metrics \(endpoint)\(configLine("metrics")): cannot serve metrics: \(error)")
        }
        if let signaling {
            let serverMetrics = ServerMetrics(server: signaling, factory: exporter.factory)
            exporter.refreshOnScrape { await serverMetrics.refresh() }
        }
        return server
    }
}
