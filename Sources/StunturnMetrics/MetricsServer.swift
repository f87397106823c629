import Logging
import StunturnSockets

/// The metrics endpoint: plain HTTP/1.1 on a TCP port, `GET /metrics` answered with the
/// exporter's text, one request per connection.
///
/// A client has `requestTimeout` to send its request head, of which at most `headLength` bytes
/// are read, and `responseTimeout` to take the answer; at most `clients` are served at once, the
/// rest wait in the listen backlog. A client that misbehaves can neither hang the agent nor make
/// it hold much.
public final class MetricsServer: Sendable {
    public struct Limits: Sendable {
        /// A scraper's request head is a few hundred bytes.
        public var headLength = 8192
        /// Prometheus' own scrape time-out is 10 s; a request head takes one round trip.
        public var requestTimeout: Duration = .seconds(5)
        public var responseTimeout: Duration = .seconds(10)
        /// Scrapers are one or two Prometheus servers; a few more for people with curl.
        public var clients = 8
        /// After the answer, how long and how much of what the client still sends is read and
        /// dropped before closing: closing with unread bytes would reset the connection, and the
        /// reset can overtake the answer.
        public var lingerTime: Duration = .seconds(1)
        public var lingerBytes = 65536

        public init() {}
    }

    /// The address bound.
    public let address: SocketAddress
    private let listener: Socket
    private let exporter: MetricsExporter
    private let limits: Limits
    private let logger: Logger

    /// Binds `address` now, so a port that is taken fails the caller's start.
    public init(listen address: SocketAddress, exporter: MetricsExporter, limits: Limits = Limits(), logger: Logger) throws {
        listener = try Socket.listener(on: address, backlog: 64)
        self.address = (try? listener.localAddress()) ?? address
        self.exporter = exporter
        self.limits = limits
        self.logger = logger
    }

    /// Answers clients until the task is cancelled, then closes the listener.
    public func run() async {
        logger.info("metrics at http://\(address)\(MetricsHTTP.path)")
        await serveClients(limit: limits.clients, accept: { try await listener.accept(until: nil).0 },
                           isOpen: { listener.isOpen }, failed: { logger.warning("metrics endpoint \(address): accept failed: \($0)") },
                           serve: { await self.serve($0) })
        close()
    }

    /// Stops listening.
    public func close() { listener.close() }

    private func serve(_ client: Socket) async {
        defer { client.close() }
        let answer: [UInt8]
        switch await readHead(client) {
        case .head(let head):
            answer = await MetricsHTTP.answer(head) { await exporter.exposition() }
        case .timedOut:
            answer = MetricsHTTP.refusal(408, "Request Timeout", "no request within \(formatDuration(limits.requestTimeout))")
        case .gone:
            return
        }
        do {
            try await client.writeAll(answer, until: .now + limits.responseTimeout)
        } catch {
            return
        }
        client.shutdownWrite()
        await linger(client)
    }

    private enum Reading {
        case head(MetricsHTTP.Head)
        case timedOut
        /// The client closed or reset before its head was whole, or the agent is stopping.
        case gone
    }

    private func readHead(_ client: Socket) async -> Reading {
        let deadline = ContinuousClock.now + limits.requestTimeout
        var received: [UInt8] = []
        while true {
            let chunk: [UInt8]
            do {
                // One byte past the limit tells a head that is too long from one that fits.
                chunk = try await client.readSome(maxLength: min(4096, limits.headLength + 1 - received.count), until: deadline)
            } catch let error as SocketError where error.isTimeout {
                return .timedOut
            } catch {
                return .gone
            }
            if chunk.isEmpty { return received.isEmpty ? .gone : .head(.incomplete) }
            received += chunk
            let head = MetricsHTTP.head(received, maximumLength: limits.headLength)
            if head != .incomplete { return .head(head) }
            if received.count > limits.headLength { return .head(.tooLarge) }
        }
    }

    /// Reads and drops what the client still sends, until it closes, within the limits.
    private func linger(_ client: Socket) async {
        let deadline = ContinuousClock.now + limits.lingerTime
        var dropped = 0
        while dropped < limits.lingerBytes {
            guard let chunk = try? await client.readSome(maxLength: 4096, until: deadline), !chunk.isEmpty else { return }
            dropped += chunk.count
        }
    }
}
