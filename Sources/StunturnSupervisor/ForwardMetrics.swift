import Metrics
import Stunturn
import StunturnMetrics

/// One forward's Prometheus series (see `MetricSeries`), labelled with its name. `ForwardStatistics`
/// feeds it as it counts, and the forward's punches report to it (`ForwardContext.punchOptions`).
final class ForwardMetrics: Sendable {
    let forward: String
    private let factory: any MetricsFactory
    private let openStreams: Meter
    private let streams: Counter
    private let streamFailures: Counter
    private let setupFailures: Counter
    private let pathChanges: Counter

    /// The paths a session or a datagram tunnel takes.
    static let paths = [TunnelPath.direct.rawValue, TunnelPath.relay.rawValue]

    init(forward: String, factory: any MetricsFactory) {
        self.forward = forward
        self.factory = factory
        let labels = [("forward", forward)]
        openStreams = Meter(label: MetricSeries.openStreams.name, dimensions: labels, factory: factory)
        streams = Counter(label: MetricSeries.streams.name, dimensions: labels, factory: factory)
        streamFailures = Counter(label: MetricSeries.streamFailures.name, dimensions: labels, factory: factory)
        setupFailures = Counter(label: MetricSeries.sessionSetupFailures.name, dimensions: labels, factory: factory)
        pathChanges = Counter(label: MetricSeries.pathChanges.name, dimensions: labels, factory: factory)
        // The series of each path exist from the start, at zero, so that a rate or an alert on
        // them has a value before the first session.
        for path in Self.paths {
            _ = sessions(path)
            _ = established(path)
            for direction in ["out", "in"] { _ = bytes(direction, path) }
        }
    }

    private func sessions(_ path: String) -> Meter {
        Meter(label: MetricSeries.sessions.name, dimensions: [("forward", forward), ("path", path)], factory: factory)
    }

    private func established(_ path: String) -> Counter {
        Counter(label: MetricSeries.sessionsEstablished.name, dimensions: [("forward", forward), ("path", path)], factory: factory)
    }

    private func bytes(_ direction: String, _ path: String) -> Counter {
        Counter(label: MetricSeries.bytes.name, dimensions: [("forward", forward), ("direction", direction), ("path", path)],
                factory: factory)
    }

    func punched(_ outcome: PunchOutcome) {
        let labels = [("forward", forward), ("transport", outcome.transport), ("result", outcome.result.rawValue)]
        Counter(label: MetricSeries.punchAttempts.name, dimensions: labels, factory: factory).increment()
        Timer(label: MetricSeries.punchDuration.name, dimensions: labels, factory: factory).record(duration: outcome.duration)
    }

    func sessionUp(path: String, setup: Duration?) {
        sessions(path).increment()
        established(path).increment()
        if let setup {
            Timer(label: MetricSeries.sessionSetupDuration.name, dimensions: [("forward", forward), ("path", path)], factory: factory)
                .record(duration: setup)
        }
    }

    func sessionDown(path: String) { sessions(path).decrement() }

    func pathChanged() { pathChanges.increment() }

    func setupFailed() { setupFailures.increment() }

    func streamStarted() {
        streams.increment()
        openStreams.increment()
    }

    func streamFailed() {
        openStreams.decrement()
        streamFailures.increment()
    }

    func streamFinished(out: UInt64, in received: UInt64, path: String) {
        openStreams.decrement()
        if out > 0 { bytes("out", path).increment(by: out) }
        if received > 0 { bytes("in", path).increment(by: received) }
    }
}
