import Stunturn
import StunturnMetrics
import StunturnRelay
import StunturnServer
import StunturnTestSupport
@testable import StunturnSupervisor
import Testing

@Suite struct ExpositionTests {
    @Test(arguments: MetricSeries.all)
    func seriesNamesFollowPrometheusConventions(_ series: MetricSeries) {
        #expect(series.name.hasPrefix("stunturn_"))
        #expect(series.name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_") }, "not snake case")
        #expect(series.name.hasSuffix("_total") == (series.kind == .counter), "_total is for counters, and every counter has it")
        if series.kind == .histogram { #expect(series.name.hasSuffix("_seconds")) }
        #expect(!series.help.isEmpty)
        #expect(MetricSeries.all.filter { $0.name == series.name }.count == 1, "named twice")
        let isServer = series.name.hasPrefix("stunturn_server_")
        #expect(series.labels.contains("forward") == !isServer, "a forward's series is labelled with it; the server's are not")
    }

    /// A forward and a server feed their series; the text says each with its type, help and labels.
    @Test func theExpositionNamesEverySeriesWithItsTypeHelpAndLabels() async throws {
        let exporter = MetricsExporter()
        let metrics = ForwardMetrics(forward: "ssh", factory: exporter.factory)
        metrics.punched(PunchOutcome(transport: "tcp", result: .success, duration: .milliseconds(30)))
        metrics.punched(PunchOutcome(transport: "tcp", result: .timeout, duration: .seconds(10)))
        metrics.sessionUp(path: "direct", setup: .milliseconds(120))
        metrics.pathChanged()
        metrics.setupFailed()
        metrics.streamStarted()
        metrics.streamStarted()
        metrics.streamFinished(out: 100, in: 50, path: "direct")
        metrics.streamFailed()

        try await withServer { server, _ in
            let serverMetrics = ServerMetrics(server: server, factory: exporter.factory)
            exporter.refreshOnScrape { await serverMetrics.refresh() }
            let text = String(decoding: await exporter.exposition(), as: UTF8.self)
            let exposition = PrometheusText(text)
            #expect(exposition.problems.isEmpty, "\(exposition.problems)\n\(text)")

            for series in MetricSeries.all {
                #expect(exposition.types[series.name] == series.kind.rawValue, "\(series): TYPE\n\(text)")
                #expect(exposition.help[series.name] == series.help, "\(series): HELP\n\(text)")
            }
            for sample in exposition.samples {
                let family = exposition.family(of: sample)
                let series = try #require(MetricSeries.all.first { $0.name == family }, "\(sample) is not in the catalogue")
                let expected = Set(series.labels + (sample.name.hasSuffix("_bucket") ? ["le"] : []))
                #expect(Set(sample.labels.keys) == expected, "\(sample)")
                if series.labels.contains("forward") { #expect(sample.labels["forward"] == "ssh", "\(sample)") }
            }

            let success = ["forward": "ssh", "transport": "tcp", "result": "success"]
            #expect(exposition.value("stunturn_punch_attempts_total", success) == 1)
            #expect(exposition.value("stunturn_punch_attempts_total", success.merging(["result": "timeout"]) { $1 }) == 1)
            #expect(exposition.value("stunturn_punch_duration_seconds_count", success) == 1)
            #expect(exposition.value("stunturn_punch_duration_seconds_sum", success) == 0.03)
            #expect(exposition.value("stunturn_punch_duration_seconds_bucket", success.merging(["le": "0.025"]) { $1 }) == 0)
            #expect(exposition.value("stunturn_punch_duration_seconds_bucket", success.merging(["le": "0.05"]) { $1 }) == 1)
            #expect(exposition.value("stunturn_punch_duration_seconds_bucket", success.merging(["le": "+Inf"]) { $1 }) == 1)
            #expect(exposition.value("stunturn_session_setup_duration_seconds_count", ["forward": "ssh", "path": "direct"]) == 1)
            #expect(exposition.value("stunturn_sessions", ["forward": "ssh", "path": "direct"]) == 1)
            #expect(exposition.value("stunturn_sessions", ["forward": "ssh", "path": "relay"]) == 0, "each path's series exists from the start")
            #expect(exposition.value("stunturn_sessions_established_total", ["forward": "ssh", "path": "direct"]) == 1)
            #expect(exposition.value("stunturn_path_changes_total", ["forward": "ssh"]) == 1)
            #expect(exposition.value("stunturn_session_setup_failures_total", ["forward": "ssh"]) == 1)
            #expect(exposition.value("stunturn_open_streams", ["forward": "ssh"]) == 0)
            #expect(exposition.value("stunturn_streams_total", ["forward": "ssh"]) == 2)
            #expect(exposition.value("stunturn_stream_failures_total", ["forward": "ssh"]) == 1)
            #expect(exposition.value("stunturn_bytes_total", ["forward": "ssh", "direction": "out", "path": "direct"]) == 100)
            #expect(exposition.value("stunturn_bytes_total", ["forward": "ssh", "direction": "in", "path": "direct"]) == 50)
            #expect(exposition.value("stunturn_bytes_total", ["forward": "ssh", "direction": "in", "path": "relay"]) == 0)
            #expect(exposition.value("stunturn_server_pairings_total") == 0)
            #expect(exposition.value("stunturn_server_waiting_initiators") == 0)
            #expect(exposition.value("stunturn_server_relay_sessions") == 0)
        }
    }

    /// Sessions count on the path they came up on, down again when they end; the path changes
    /// as `status` counts them.
    @Test func sessionsAreCountedByPathUntilTheyEnd() async throws {
        let exporter = MetricsExporter()
        let statistics = ForwardStatistics(forward: "web", metrics: exporter.factory)
        let relay = RelayEngine.shared
        let (a, b) = try await Socket.loopbackPair()
        let relayed = relay.session(tunnel: a, peerName: "peer", side: .initiator, transform: nil, options: SessionOptions())
        let direct = relay.session(tunnel: b, peerName: "peer", side: .responder, transform: nil, options: SessionOptions())
        statistics.sessionUp(relayed, path: "relay", candidate: "relay", peer: "peer", setup: .seconds(1))
        statistics.sessionUp(direct, path: "direct", candidate: "host", peer: "peer", setup: .milliseconds(40))
        #expect(statistics.path(of: relayed) == "relay")
        var exposition = PrometheusText(String(decoding: await exporter.exposition(), as: UTF8.self))
        #expect(exposition.value("stunturn_sessions", ["forward": "web", "path": "relay"]) == 1)
        #expect(exposition.value("stunturn_sessions", ["forward": "web", "path": "direct"]) == 1)
        // none -> relay -> direct
        #expect(exposition.value("stunturn_path_changes_total", ["forward": "web"]) == 2)

        statistics.sessionDown(relayed, reason: nil)
        statistics.sessionDown(direct, reason: "peer went away")
        #expect(statistics.path(of: relayed) == nil)
        exposition = PrometheusText(String(decoding: await exporter.exposition(), as: UTF8.self))
        #expect(exposition.value("stunturn_sessions", ["forward": "web", "path": "relay"]) == 0)
        #expect(exposition.value("stunturn_sessions", ["forward": "web", "path": "direct"]) == 0)
        // direct -> none
        #expect(exposition.value("stunturn_path_changes_total", ["forward": "web"]) == 3)
        #expect(exposition.value("stunturn_path_changes_total", ["forward": "web"]).map(Int.init) == statistics.link.pathChanges)
        relayed.close(reason: "test over")
        direct.close(reason: "test over")
    }

    @Test(arguments: [
        (PunchError(.timedOut, peer: .loopback(port: 1), transport: "tcp", message: "") as any Error, PunchOutcome.Result.timeout),
        (PunchError(.cancelled, peer: .loopback(port: 1), transport: "udp", message: ""), .cancelled),
        (CancellationError(), .cancelled),
        (SocketError(.cancelled, call: "read", reason: "cancelled"), .cancelled),
        (SocketError(call: "bind", errno: 98), .error),
    ])
    func aPunchErrorHasAResult(_ error: any Error, _ result: PunchOutcome.Result) {
        #expect(PunchOutcome.result(of: error) == result)
    }
}
