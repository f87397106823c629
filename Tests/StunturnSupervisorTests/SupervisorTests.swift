import StunturnConfig
import StunturnSecure
import StunturnSockets
@testable import StunturnSupervisor
import Testing

@Suite struct BackoffTests {
    @Test func delaysDoubleWithinJitterUpToTheCap() {
        var backoff = Backoff(base: .milliseconds(100), cap: .seconds(1))
        let ceilings: [Duration] = [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1)]
        for ceiling in ceilings {
            let delay = backoff.next()
            #expect(delay >= ceiling / 2 && delay <= ceiling, "\(delay) not in [\(ceiling / 2), \(ceiling)]")
        }
        #expect(backoff.failures == ceilings.count)
    }

    @Test func resetStartsOverAtTheBase() {
        var backoff = Backoff(base: .milliseconds(100), cap: .seconds(5))
        for _ in 0..<10 { _ = backoff.next() }
        backoff.reset()
        #expect(backoff.failures == 0)
        #expect(backoff.next() <= .milliseconds(100))
    }

    @Test func manyFailuresNeitherOverflowNorPassTheCap() {
        var backoff = Backoff()
        for _ in 0..<10_000 { #expect(backoff.next() <= backoff.cap) }
    }
}

@Suite struct UDPQueueCapTests {
    @Test func theQueueBeforeTheTunnelStopsAtItsDatagramCount() {
        var outbox = UDPListenSession.Outbox()
        for _ in 0..<TunnelDatagram.maxQueuedBeforeTunnel {
            let taken = outbox.queue([1])
            #expect(taken)
        }
        let extra = outbox.queue([1])
        #expect(!extra, "one datagram more than the cap was queued")
        #expect(outbox.queued.count == TunnelDatagram.maxQueuedBeforeTunnel)
    }

    @Test func theQueueBeforeTheTunnelStopsAtItsByteCount() {
        var outbox = UDPListenSession.Outbox()
        let big = [UInt8](repeating: 7, count: 10_000)
        var taken = 0
        while outbox.queue(big) { taken += 1 }
        #expect(taken == TunnelDatagram.maxQueuedBytesBeforeTunnel / big.count)
        #expect(outbox.queuedBytes <= TunnelDatagram.maxQueuedBytesBeforeTunnel)
        // A small one still fits in what is left.
        let small = outbox.queue([1, 2, 3])
        #expect(small)
    }

    @Test func connectingHandsOverTheQueueInOrderAndEmptiesIt() throws {
        var outbox = UDPListenSession.Outbox()
        for i in 0..<5 {
            let taken = outbox.queue([UInt8(i)])
            #expect(taken)
        }
        let socket = try Socket.udp(on: .loopback())
        defer { socket.close() }
        let handed = outbox.connect(.udp(tunnel: socket, peer: .loopback(port: 9), codec: DatagramCodec(session: nil)))
        #expect(handed == (0..<5).map { [UInt8($0)] })
        #expect(outbox.queued.isEmpty && outbox.queuedBytes == 0)
        #expect(outbox.link != nil)
    }

    @Test func sessionsPerForwardAreCapped() throws {
        let table = UDPSessionTable()
        let socket = try Socket.udp(on: .loopback())
        defer { socket.close() }
        let config = ForwardConfigFixture.listen
        let context = ForwardContext(config: config, logger: .init(label: "test"), relay: .shared, statistics: ForwardStatistics(),
                                     connections: nil)
        for port in 1...3 {
            let client = SocketAddress.loopback(port: UInt16(port))
            #expect(table.session(for: client, limit: 3) { UDPListenSession(context: context, listen: socket, client: client) } != nil)
        }
        let fourth = SocketAddress.loopback(port: 4)
        #expect(table.session(for: fourth, limit: 3) { UDPListenSession(context: context, listen: socket, client: fourth) } == nil)
        // The same client gets its existing session, not a new one.
        let again = table.session(for: .loopback(port: 1), limit: 3) { Issue.record("made a second session"); return UDPListenSession(context: context, listen: socket, client: fourth) }
        #expect(again?.1 == false)
        table.remove(.loopback(port: 2))
        #expect(table.count == 2)
    }
}

enum ForwardConfigFixture {
    static let listen = ForwardConfig(name: "udp-listen", mode: .listen(Endpoint(host: "127.0.0.1", port: 5353)),
                                      key: "test-key-5b1f0c7e9a2d4c6b8e0f1a3c", transport: .udp,
                                      server: Endpoint(host: "127.0.0.1", port: 7000))
}
