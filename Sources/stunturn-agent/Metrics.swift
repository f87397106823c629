import ArgumentParser
import StunturnConfig
import StunturnMetrics

/// `--metrics HOST:PORT` of run, forward and server.
struct MetricsOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics; HOST is an IP address or localhost (default: YAML metrics for run, else off).",
        valueName: "host:port"))
    var metrics: EndpointArgument?

    func validate() throws { _ = try endpoint() }

    /// The endpoint given, checked to be on this machine; nil when the option was left out.
    func endpoint() throws -> Endpoint? {
        guard let endpoint = try metrics?.endpoint("--metrics") else { return nil }
        guard endpoint.isIPLiteral || endpoint.host.lowercased() == "localhost" else {
            throw ValidationError("--metrics: host must be an IP address or 'localhost' (an address on this machine), got '\(endpoint.host)'")
        }
        return endpoint
    }
}

/// The process's metrics exporter when `endpoint` asks for one: made swift-metrics' backend here,
/// once, as each command runs once per process.
func bootstrapMetrics(for endpoint: Endpoint?) -> MetricsExporter? {
    endpoint.map { _ in MetricsExporter.bootstrap() }
}
