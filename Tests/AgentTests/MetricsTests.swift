import Foundation
import StunturnSockets
import StunturnTestSupport
import Testing

/// promtool from Debian's prometheus package (.ci/run installs it), if this machine has it.
let promtoolPath: String? = {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").map { "\($0)/promtool" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}()

/// `--metrics` on real processes: a server and two agents carry a connection, then each endpoint
/// is scraped over HTTP.
@Suite(.serialized) struct MetricsTests {
    struct Scrape {
        var status: Int
        var contentType: String
        var body: String
        var text: PrometheusText { PrometheusText(body) }
    }

    /// `GET /metrics` on 127.0.0.1:`port`, as a scraper sends it.
    static func scrape(_ port: UInt16, path: String = "/metrics") async throws -> Scrape {
        let socket = try await connectWithRetry(.loopback(port: port), timeout: .seconds(10))
        defer { socket.close() }
        let request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUser-Agent: stunturn-tests\r\nAccept: text/plain\r\n\r\n"
        try await socket.writeAll(Array(request.utf8), until: .now + .seconds(10))
        let (bytes, failure) = await readUntilEnd(socket, timeout: .seconds(10))
        #expect(failure == nil, "the endpoint ends its answer by closing: \(String(describing: failure))")
        let text = String(decoding: bytes, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        let head = parts[0].components(separatedBy: "\r\n")
        let status = head.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        let contentType = head.first { $0.lowercased().hasPrefix("content-type:") }.map { String($0.dropFirst(13)).trimmingCharacters(in: .whitespaces) }
        return Scrape(status: status, contentType: contentType ?? "", body: parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    /// `promtool check metrics` on `body`: its exit status and what it said.
    static func promtool(_ promtool: String, _ body: String) async throws -> (Int32, String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-metrics-\(UUID().uuidString).txt")
        try Data(body.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, out, err) = try await runProgram("/bin/sh", ["-c", "exec \"$0\" check metrics < \"$1\"", promtool, file.path],
                                                      timeout: .seconds(30))
        return (status, out + err)
    }

    @Test func aServerAndTwoAgentsServeTheirSeriesAfterCarryingAConnection() async throws {
        let serverMetrics = try freePort(), exposeMetrics = try freePort(), listenMetrics = try freePort()
        let rig = try TunnelRig()
        rig.server = try AgentProcess("server", ["server", "--listen", rig.serverArgument, "--metrics", "127.0.0.1:\(serverMetrics)"])
        try await rig.server!.waitForLog("metrics at http://127.0.0.1:\(serverMetrics)/metrics")
        try await rig.startExpose(options: ["--metrics", "127.0.0.1:\(exposeMetrics)"])
        try await rig.startListen(options: ["--metrics", "localhost:\(listenMetrics)"])
        #expect(try await rig.listen!.waitForLog("tunnel up"), "\(rig.logs)")

        // One connection: 50,001 bytes out (the echo marker and the payload), 50,000 back.
        let client = try await connectWithRetry(rig.listenAddress)
        let payload = [UInt8](repeating: 0x5a, count: 50_000)
        try await client.writeAll([UInt8(ascii: "E")] + payload, until: .now + .seconds(20))
        #expect(try await client.readExactly(payload.count, until: .now + .seconds(20)) == payload)

        // While it is open, it is an open stream.
        let during = try await Self.scrape(listenMetrics).text
        #expect(during.value("stunturn_open_streams", ["forward": "listen"]) == 1, "\(during.samples)")
        client.close()

        // Bytes count once a connection has ended; both ends see it end.
        var listen = PrometheusText("")
        var expose = PrometheusText("")
        try await waitUntil("both agents counted the bytes: \(listen.samples) \(expose.samples)", timeout: .seconds(20), interval: .milliseconds(100)) {
            listen = try await Self.scrape(listenMetrics).text
            expose = try await Self.scrape(exposeMetrics).text
            return listen.value("stunturn_bytes_total", ["forward": "listen", "direction": "in", "path": "direct"]) == 50_000
                && expose.value("stunturn_bytes_total", ["forward": "expose", "direction": "out", "path": "direct"]) == 50_000
        }
        #expect(listen.value("stunturn_bytes_total", ["forward": "listen", "direction": "out", "path": "direct"]) == 50_001)
        #expect(expose.value("stunturn_bytes_total", ["forward": "expose", "direction": "in", "path": "direct"]) == 50_001)
        #expect(listen.value("stunturn_bytes_total", ["forward": "listen", "direction": "out", "path": "relay"]) == 0)
        for (text, forward) in [(listen, "listen"), (expose, "expose")] {
            #expect(text.problems.isEmpty, "\(text.problems)")
            let punched = text.value("stunturn_punch_attempts_total", ["forward": forward, "transport": "tcp", "result": "success"])
            #expect((punched ?? 0) >= 1, "\(forward): \(text.samples)")
            #expect((text.value("stunturn_punch_duration_seconds_count", ["forward": forward, "transport": "tcp", "result": "success"]) ?? 0) >= 1)
            #expect(text.value("stunturn_sessions", ["forward": forward, "path": "direct"]) == 1, "\(forward): \(text.samples)")
            #expect(text.value("stunturn_sessions", ["forward": forward, "path": "relay"]) == 0)
            #expect(text.value("stunturn_sessions_established_total", ["forward": forward, "path": "direct"]) == 1)
            #expect(text.value("stunturn_session_setup_duration_seconds_count", ["forward": forward, "path": "direct"]) == 1)
            #expect((text.value("stunturn_session_setup_duration_seconds_sum", ["forward": forward, "path": "direct"]) ?? 0) > 0)
            #expect(text.value("stunturn_path_changes_total", ["forward": forward]) == 1, "none -> direct")
            #expect(text.value("stunturn_streams_total", ["forward": forward]) == 1)
            #expect(text.value("stunturn_open_streams", ["forward": forward]) == 0)
            #expect(text.value("stunturn_stream_failures_total", ["forward": forward]) == 0)
            #expect(text.types["stunturn_punch_duration_seconds"] == "histogram")
        }

        let server = try await Self.scrape(serverMetrics)
        #expect(server.status == 200)
        #expect(server.contentType.hasPrefix("text/plain; version=0.0.4"), "\(server.contentType)")
        let serverText = server.text
        #expect(serverText.problems.isEmpty, "\(serverText.problems)")
        #expect((serverText.value("stunturn_server_pairings_total") ?? 0) >= 1, "\(serverText.samples)")
        #expect(serverText.value("stunturn_server_waiting_initiators") == 0)
        for name in ["stunturn_server_waiting_receivers", "stunturn_server_relay_sessions", "stunturn_server_relay_sessions_total",
                     "stunturn_server_relayed_bytes_total"] {
            #expect(serverText.value(name) != nil, "\(name) missing: \(serverText.samples)")
        }
        #expect(!serverText.samples.contains { $0.name.hasPrefix("stunturn_punch") }, "the server has no forwards")

        let notFound = try await Self.scrape(listenMetrics, path: "/")
        #expect(notFound.status == 404)

        if let promtool = promtoolPath {
            for port in [serverMetrics, exposeMetrics, listenMetrics] {
                let (status, said) = try await Self.promtool(promtool, try await Self.scrape(port).body)
                #expect(status == 0, "promtool check metrics on port \(port): \(said)")
            }
        }
        try await rig.stopAll()
    }

    @Test func aMetricsPortInUseFailsTheStartNamingMetrics() async throws {
        let taken = try Socket.listener(on: .loopback())
        defer { taken.close() }
        let port = try taken.localAddress().port
        let server = try freePort()

        let (forward, _, forwardErr) = try await runAgent(["forward", "--listen", "127.0.0.1:\(try freePort())", "--key", newKey(),
                                                           "--server", "127.0.0.1:\(server)", "--admin", "none",
                                                           "--metrics", "127.0.0.1:\(port)"])
        #expect(forward == 1)
        #expect(forwardErr.contains("stunturn-agent: metrics 127.0.0.1:\(port): cannot serve metrics: bind 127.0.0.1:\(port)"), "\(forwardErr)")

        let (serve, _, serveErr) = try await runAgent(["server", "--listen", "127.0.0.1:\(server)", "--metrics", "127.0.0.1:\(port)"])
        #expect(serve == 1)
        #expect(serveErr.contains("stunturn-agent server: --metrics 127.0.0.1:\(port): cannot serve metrics: bind"), "\(serveErr)")

        let (stdio, _, stdioErr) = try await runAgent(["forward", "--stdio", "--key", newKey(), "--server", "127.0.0.1:\(server)",
                                                       "--metrics", "127.0.0.1:\(port)"])
        #expect(stdio == 64)
        #expect(stdioErr.contains("--metrics does not apply to --stdio"), "\(stdioErr)")
    }

    /// The in-agent server's series come with the agent's own, from a config file's `metrics`; a
    /// forward a reload adds has its own, and a new `metrics` waits for the next start.
    @Test func runServesTheConfigsMetricsWithTheInAgentServer() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-metrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: directory) }
        let metrics = try freePort(), serve = try freePort()
        let config = directory.appendingPathComponent("agent.yaml")
        let web = """
            forwards:
              - name: web
                listen: 127.0.0.1:\(try freePort())
                key: \(newKey())
            """
        try "serve: 127.0.0.1:\(serve)\nadmin: none\nmetrics: 127.0.0.1:\(metrics)\n\(web)\n".write(to: config, atomically: true, encoding: .utf8)
        let agent = try AgentProcess("run", ["run", config.path])
        try await agent.waitForLog("metrics at http://127.0.0.1:\(metrics)/metrics")
        var text = PrometheusText("")
        // The listen forward waits at its own server as an initiator.
        try await waitUntil("the initiator waits: \(text.samples)", timeout: .seconds(20), interval: .milliseconds(100)) {
            text = try await Self.scrape(metrics).text
            return text.value("stunturn_server_waiting_initiators") == 1
        }
        #expect(text.value("stunturn_sessions", ["forward": "web", "path": "direct"]) == 0)
        #expect(text.value("stunturn_server_pairings_total") == 0)

        let api = "  - name: api\n    listen: 127.0.0.1:\(try freePort())\n    key: \(newKey())\n"
        try "serve: 127.0.0.1:\(serve)\nadmin: none\nmetrics: 127.0.0.1:\(try freePort())\n\(web)\n\(api)"
            .write(to: config, atomically: true, encoding: .utf8)
        kill(agent.process.processIdentifier, SIGHUP)
        #expect(try await agent.waitForLog("reloaded: added api; 1 unchanged, their sessions and streams kept; metrics changed, which takes effect at the next start"))
        try await waitUntil("both initiators wait: \(text.samples)", timeout: .seconds(20), interval: .milliseconds(100)) {
            text = try await Self.scrape(metrics).text
            return text.value("stunturn_server_waiting_initiators") == 2
        }
        #expect(text.value("stunturn_sessions", ["forward": "api", "path": "relay"]) == 0, "\(text.samples)")
        #expect(try await agent.stop() == 0, "\(agent.log)")
    }
}
