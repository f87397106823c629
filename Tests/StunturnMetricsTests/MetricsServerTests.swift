import Logging
import Prometheus
import StunturnMetrics
import StunturnSockets
import StunturnTestSupport
import Testing

@Suite struct MetricsHTTPTests {
    @Test(arguments: [
        ("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", MetricsHTTP.Head.request(method: "GET", target: "/metrics")),
        ("\r\nGET /metrics?x=1 HTTP/1.0\n\n", .request(method: "GET", target: "/metrics?x=1")),
        ("HEAD / HTTP/1.1\r\n\r\n", .request(method: "HEAD", target: "/")),
        ("GET /metrics HTTP/1.1\r\nHost: a\r\n", .incomplete),
        ("", .incomplete),
        ("GET /metrics HTTP/2.0\r\n\r\n", .invalid("'HTTP/2.0' is not HTTP/1.0 or HTTP/1.1")),
        ("GET  /metrics HTTP/1.1\r\n\r\n", .invalid("expected a request line such as 'GET /metrics HTTP/1.1'")),
        ("get /metrics HTTP/1.1\r\n\r\n", .invalid("'get' is not a method")),
        ("GET /m\u{7}etrics HTTP/1.1\r\n\r\n", .invalid("the request line is not printable ASCII")),
        ("SSH-2.0-OpenSSH_9.2\r\n\r\n", .invalid("expected a request line such as 'GET /metrics HTTP/1.1'")),
    ])
    func requestHeads(_ text: String, _ expected: MetricsHTTP.Head) {
        #expect(MetricsHTTP.head(Array(text.utf8), maximumLength: 1024) == expected)
    }

    @Test func aHeadPastTheLimitIsTooLarge() {
        let long = "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 100) + "\r\n\r\n"
        #expect(MetricsHTTP.head(Array(long.utf8), maximumLength: 64) == .tooLarge)
        #expect(MetricsHTTP.head(Array(long.utf8.prefix(80)), maximumLength: 64) == .tooLarge, "no end in sight past the limit")
        #expect(MetricsHTTP.head(Array(long.utf8.prefix(60)), maximumLength: 64) == .incomplete)
    }

    @Test(arguments: [
        ("GET", "/metrics", MetricsHTTP.Route.metrics(bodyIncluded: true)),
        ("GET", "/metrics?name[]=x", .metrics(bodyIncluded: true)),
        ("HEAD", "/metrics", .metrics(bodyIncluded: false)),
        ("POST", "/metrics", .methodNotAllowed),
        ("GET", "/", .notFound),
        ("GET", "/metrics/", .notFound),
        ("GET", "/metricsx", .notFound),
    ])
    func routes(_ method: String, _ target: String, _ expected: MetricsHTTP.Route) {
        #expect(MetricsHTTP.route(method: method, target: target) == expected)
    }

    @Test func theMetricsAnswerIsTheTextFormatWithItsLength() async {
        let body = Array("stunturn_x_total 1\n".utf8)
        let answer = await MetricsHTTP.answer(.request(method: "GET", target: "/metrics")) { body }
        #expect(String(decoding: answer, as: UTF8.self) == """
            HTTP/1.1 200 OK\r
            Content-Type: text/plain; version=0.0.4; charset=utf-8\r
            Content-Length: 19\r
            Connection: close\r
            \r
            stunturn_x_total 1

            """)
        let head = await MetricsHTTP.answer(.request(method: "HEAD", target: "/metrics")) { body }
        #expect(String(decoding: head, as: UTF8.self).hasSuffix("Content-Length: 19\r\nConnection: close\r\n\r\n"))
    }
}

/// The endpoint on loopback, with real clients, well-behaved and not.
@Suite struct MetricsServerTests {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    /// Sends `request` and reads the whole answer, until the server closes.
    static func fetch(_ address: SocketAddress, _ request: String, timeout: Duration = .seconds(10)) async throws -> Response {
        let socket = try await Socket.connect(to: address, timeout: .seconds(5))
        defer { socket.close() }
        try await socket.writeAll(Array(request.utf8), until: .now + timeout)
        return try await read(socket, timeout: timeout)
    }

    static func read(_ socket: Socket, timeout: Duration) async throws -> Response {
        var bytes: [UInt8] = []
        let deadline = ContinuousClock.now + timeout
        while true {
            let chunk = try await socket.readSome(until: deadline)
            if chunk.isEmpty { break }
            bytes += chunk
        }
        let text = String(decoding: bytes, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        let lines = parts[0].components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let pair = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            headers[pair[0].lowercased()] = pair[1]
        }
        return Response(status: status, headers: headers, body: parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    static func server(_ limits: MetricsServer.Limits = MetricsServer.Limits()) throws -> (MetricsServer, MetricsExporter) {
        let exporter = MetricsExporter()
        exporter.registry.makeCounter(descriptor: .init(metricName: "stunturn_test_total", unitName: "", helpText: "A test.")).increment()
        let server = try MetricsServer(listen: .loopback(), exporter: exporter, limits: limits, logger: Logger(label: "test"))
        return (server, exporter)
    }

    @Test func getMetricsAnswersTheRegistryAndOtherRequestsAreRefused() async throws {
        let (server, _) = try Self.server()
        let running = Task { await server.run() }
        defer { running.cancel() }

        let metrics = try await Self.fetch(server.address, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(metrics.headers["connection"] == "close")
        #expect(metrics.body == "# HELP stunturn_test_total A test.\n# TYPE stunturn_test_total counter\nstunturn_test_total 1\n")
        #expect(metrics.headers["content-length"] == "\(metrics.body.utf8.count)")

        let head = try await Self.fetch(server.address, "HEAD /metrics HTTP/1.1\r\n\r\n")
        #expect(head.status == 200 && head.body.isEmpty && head.headers["content-length"] == "\(metrics.body.utf8.count)")
        let notFound = try await Self.fetch(server.address, "GET / HTTP/1.1\r\n\r\n")
        #expect(notFound.status == 404)
        #expect(notFound.body == "not found: this server answers GET /metrics only\n")
        let post = try await Self.fetch(server.address, "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
        #expect(post.status == 405 && post.headers["allow"] == "GET, HEAD")
        let garbage = try await Self.fetch(server.address, "\u{16}\u{3}\u{1}\r\n\r\n")
        #expect(garbage.status == 400)
    }

    /// Clients that send nothing, or too much, are answered and closed within the limits, and a
    /// scrape gets through meanwhile.
    @Test func clientsThatMisbehaveCannotHangTheEndpoint() async throws {
        var limits = MetricsServer.Limits()
        limits.requestTimeout = .milliseconds(300)
        limits.headLength = 1024
        limits.clients = 2
        limits.lingerTime = .milliseconds(100)
        let (server, _) = try Self.server(limits)
        let running = Task { await server.run() }
        defer { running.cancel() }

        // Four silent clients, twice the slots: each is told so and closed after the request time-out.
        var silent: [Socket] = []
        for _ in 0..<4 { silent.append(try await Socket.connect(to: server.address, timeout: .seconds(5))) }
        defer { for socket in silent { socket.close() } }
        let started = ContinuousClock.now
        // Without the time-out the scrape would wait for the silent clients forever (until fetch
        // gives up); with it, about two time-outs (0.6 s), more on a loaded machine.
        let scrape = try await Self.fetch(server.address, "GET /metrics HTTP/1.1\r\n\r\n", timeout: .seconds(30))
        #expect(scrape.status == 200)
        #expect(ContinuousClock.now - started < .seconds(15), "the scrape waited for the silent clients' time-outs only")
        for socket in silent {
            let answer = try await Self.read(socket, timeout: .seconds(5))
            #expect(answer.status == 408, "\(answer)")
        }

        // A head that never ends: answered once the limit is passed, not read to its end.
        let flood = try await Socket.connect(to: server.address, timeout: .seconds(5))
        defer { flood.close() }
        let line = Array("X-Filler: \(String(repeating: "a", count: 1000))\r\n".utf8)
        try await flood.writeAll(Array("GET /metrics HTTP/1.1\r\n".utf8) + line + line, until: .now + .seconds(5))
        let tooLarge = try await Self.read(flood, timeout: .seconds(5))
        #expect(tooLarge.status == 431)
    }

    @Test func aPortInUseFailsAtOnce() throws {
        let taken = try Socket.listener(on: .loopback())
        defer { taken.close() }
        #expect(throws: SocketError.self) {
            _ = try MetricsServer(listen: try taken.localAddress(), exporter: MetricsExporter(), logger: Logger(label: "test"))
        }
    }
}
