import CoreMetrics
import Prometheus
import Synchronization

/// The process's metrics in Prometheus' text format: a registry that swift-metrics reports into
/// (through `factory`), and values read only when scraped (a server's counts), brought up to
/// date just before.
public final class MetricsExporter: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let refreshers = Mutex<[@Sendable () async -> Void]>([])

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    /// swift-metrics' factory over the registry.
    public var factory: any MetricsFactory { StunturnMetricsFactory(registry: registry) }

    /// A new exporter made swift-metrics' backend. `MetricsSystem` takes one backend per process:
    /// call this once, before anything records a metric.
    public static func bootstrap() -> MetricsExporter {
        let exporter = MetricsExporter()
        MetricsSystem.bootstrap(exporter.factory)
        return exporter
    }

    /// Runs `refresh` before each scrape, to set the series it owns from a source of its own.
    public func refreshOnScrape(_ refresh: @escaping @Sendable () async -> Void) {
        refreshers.withLock { $0.append(refresh) }
    }

    /// Every series in the text format (version 0.0.4), as `GET /metrics` answers.
    public func exposition() async -> [UInt8] {
        for refresh in refreshers.withLock({ $0 }) { await refresh() }
        return registry.emitToBuffer()
    }
}

/// Registers swift-metrics' metrics in a Prometheus registry as `PrometheusMetricsFactory` does,
/// but gives stunturn's own series (`MetricSeries`) their help text and buckets, so that the
/// exposition has a `# HELP` line for each. Other labels are registered without help.
struct StunturnMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    private let plain: PrometheusMetricsFactory

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        var plain = PrometheusMetricsFactory(registry: registry)
        plain.defaultDurationHistogramBuckets = MetricSeries.durationBuckets
        self.plain = plain
    }

    private func descriptor(_ label: String) -> MetricNameDescriptor? {
        guard let series = MetricSeries.byName[label] else { return nil }
        // The name is whole already: namespace and unit are part of it.
        return MetricNameDescriptor(metricName: series.name, unitName: "", helpText: series.help)
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        guard let descriptor = descriptor(label) else { return plain.makeCounter(label: label, dimensions: dimensions) }
        return registry.makeCounter(descriptor: descriptor, labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        guard let descriptor = descriptor(label) else { return plain.makeFloatingPointCounter(label: label, dimensions: dimensions) }
        return registry.makeCounter(descriptor: descriptor, labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard let descriptor = descriptor(label) else {
            return plain.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
        }
        guard aggregate else { return registry.makeGauge(descriptor: descriptor, labels: dimensions) }
        return registry.makeValueHistogram(descriptor: descriptor, labels: dimensions, buckets: plain.defaultValueHistogramBuckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        guard let descriptor = descriptor(label) else { return plain.makeMeter(label: label, dimensions: dimensions) }
        return registry.makeGauge(descriptor: descriptor, labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        guard let descriptor = descriptor(label) else { return plain.makeTimer(label: label, dimensions: dimensions) }
        return registry.makeDurationHistogram(descriptor: descriptor, labels: dimensions, buckets: MetricSeries.durationBuckets)
    }

    func destroyCounter(_ handler: any CounterHandler) { plain.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { plain.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { plain.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { plain.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { plain.destroyTimer(handler) }
}
