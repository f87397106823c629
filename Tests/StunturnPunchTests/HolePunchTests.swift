#if canImport(Glibc)
import Synchronization
import Glibc
#endif
import StunturnSignaling
import StunturnSockets
import StunturnTestSupport
import Testing
@testable import StunturnPunch
import Stunturn
import StunturnServer

/// Pairs two clients through the server: the initiator waits, the receiver long-polls.
func rendezvous(_ address: String, key: String, udp: Bool) async throws -> (PeerRendezvous, PeerRendezvous) {
    let client = SignalingClient(server: address)
    async let receiver = client.pollForInitiator(key: key, wait: .seconds(10), udp: udp)
    let initiator = udp ? try await client.requestUDPPeer(key: key, timeout: .seconds(10))
        : try await client.requestTCPPeer(key: key, timeout: .seconds(10))
    let r = try #require(try await receiver)
    return (initiator, r)
}

@Suite struct HolePunchTests {
    @Test func tcpPunchSucceedsEveryTimeOnLoopbackAndCarriesData() async throws {
        try await withServer { _, address in
            var times: [Duration] = []
            for round in 0..<20 {
                let (initiator, receiver) = try await rendezvous(address, key: "tcp-\(round)", udp: false)
                #expect(initiator.transport == .tcp && receiver.transport == .tcp)
                let start = ContinuousClock.now
                async let a = TCPHolePuncher.punch(initiator, options: PunchOptions(tries: 50, timeout: .seconds(5)))
                async let b = TCPHolePuncher.punch(receiver, options: PunchOptions(tries: 50, timeout: .seconds(5)))
                let (sa, sb) = try await (a, b)
                times.append(ContinuousClock.now - start)
                #expect(try sa.localAddress() == (try sb.remoteAddress()))
                #expect(try sb.localAddress() == (try sa.remoteAddress()))
                // Punched tunnels probe a quiet peer, so a vanished one does not hold them open.
                #expect(try sa.getOption(SOL_SOCKET_VALUE, SO_KEEPALIVE_VALUE) != 0)
                #expect(try sb.getOption(SOL_SOCKET_VALUE, SO_KEEPALIVE_VALUE) != 0)
                let message = Array("hello \(round)".utf8)
                try await sa.writeAll(message, until: .now + .seconds(2))
                #expect(try await sb.readExactly(message.count, until: .now + .seconds(2)) == message)
                try await sb.writeAll([42], until: .now + .seconds(2))
                #expect(try await sa.readExactly(1, until: .now + .seconds(2)) == [42])
            }
            // How fast a punch is, is the benchmark's to measure (scripts/bench.sh, set-up latency);
            // here only punches that crawl (seconds each, where loopback takes milliseconds) fail.
            #expect(times.reduce(.zero, +) < .seconds(60), "\(times.sorted())")
        }
    }

    @Test func udpPunchConfirmsBothWaysAndCarriesData() async throws {
        try await withServer { _, address in
            for round in 0..<5 {
                let (initiator, receiver) = try await rendezvous(address, key: "udp-\(round)", udp: true)
                #expect(initiator.transport == .udp && receiver.transport == .udp)
                async let a = UDPHolePuncher.punch(initiator, options: PunchOptions(tries: 100, timeout: .seconds(5)))
                async let b = UDPHolePuncher.punch(receiver, options: PunchOptions(tries: 100, timeout: .seconds(5)))
                let (peerOfA, peerOfB) = try await (a, b)
                let sa = try #require(initiator.udpSocket)
                let sb = try #require(receiver.udpSocket)
                #expect(peerOfA.port == (try sb.localAddress()).port)
                #expect(peerOfB.port == (try sa.localAddress()).port)
                try await sa.send(Array("datagram".utf8), to: peerOfA, until: .now + .seconds(1))
                // Late probes or acks may still be in flight; skip them as a real receive loop would.
                var payload: [UInt8] = []
                for _ in 0..<10 {
                    let (datagram, from) = try await sb.receive(until: .now + .seconds(2))
                    if UDPHolePuncher.answerProbe(datagram, from: from, socket: sb) { continue }
                    payload = datagram
                    break
                }
                #expect(payload == Array("datagram".utf8))
            }
        }
    }

    @Test func tcpPunchHonoursItsTimeoutWhenThePeerIsSilent() async throws {
        // A listener that never answers the tag stands in for a peer that vanished after signaling.
        let silent = try Socket.listener(on: .loopback())
        let peer = try silent.localAddress()
        let start = ContinuousClock.now
        await #expect(throws: PunchError.self) {
            _ = try await TCPHolePuncher.punch(local: .loopback(), peer: peer, role: .receiver,
                                               options: PunchOptions(tries: 1000, timeout: .milliseconds(800)))
        }
        let elapsed = ContinuousClock.now - start
        // Not before the time-out; the upper bound only catches a punch that ignores it.
        #expect(elapsed >= .milliseconds(700) && elapsed < .seconds(20), "\(elapsed)")
    }

    @Test func tcpPunchToNobodyFailsWithinTimeout() async throws {
        let start = ContinuousClock.now
        do {
            // The time-out leaves room for a test runner busy with other suites to run the dialer
            // at all: the message can only name the refusal once an attempt has been made.
            _ = try await TCPHolePuncher.punch(local: .loopback(), peer: .loopback(port: 1), role: .initiator,
                                               options: PunchOptions(tries: 1000, timeout: .seconds(5)))
            Issue.record("punch to a closed port succeeded")
        } catch let error as PunchError {
            #expect(error.description.contains("127.0.0.1:1"))
            #expect(error.description.contains("refused"), "\(error)")
        }
        #expect(ContinuousClock.now - start < .seconds(12))
    }

    @Test func udpPunchHonoursItsTimeoutWhenThePeerIsSilent() async throws {
        let socket = try Socket.udp(on: .loopback())
        let silent = try Socket.udp(on: .loopback())
        let start = ContinuousClock.now
        do {
            _ = try await UDPHolePuncher.punch(socket: socket, peer: try silent.localAddress(),
                                               options: PunchOptions(tries: 1000, timeout: .milliseconds(700)))
            Issue.record("punch to a silent peer succeeded")
        } catch let error as PunchError {
            #expect(error.description.contains("heard nothing"))
        }
        let elapsed = ContinuousClock.now - start
        // Not before the time-out; well before 1000 probes would end (50 s): the time-out ended it.
        #expect(elapsed >= .milliseconds(650) && elapsed < .seconds(20), "\(elapsed)")
    }

    @Test func strangerOnThePunchedPortIsRejectedAndThePeerStillGetsThrough() async throws {
        try await withServer { _, address in
            let (initiator, receiver) = try await rendezvous(address, key: "hijack", udp: false)
            let rejected = RejectionLog()
            let options = {
                var o = PunchOptions(tries: 100, timeout: .seconds(5))
                o.onRejected = { from, reason in rejected.add("\(from) \(reason)") }
                return o
            }()
            async let b = TCPHolePuncher.punch(receiver, tag: Array("0123456789abcdef".utf8), options: options)
            // The stranger reaches the receiver's punch port first and sends the wrong tag.
            let stranger = try await connectWithRetry(receiver.localAddress, timeout: .seconds(10))
            try await stranger.writeAll(Array("XXXXXXXXXXXXXXXX".utf8), until: .now + .seconds(1))
            // The receiver has turned the stranger away before the peer comes.
            try await waitUntil("the receiver rejects the stranger's tag") {
                rejected.entries.contains { $0.contains("wrong punch tag") }
            }
            async let a = TCPHolePuncher.punch(initiator, tag: Array("0123456789abcdef".utf8), options: options)
            let (sa, sb) = try await (a, b)
            #expect(try sb.remoteAddress() == (try sa.localAddress()))
            #expect(rejected.entries.contains { $0.contains("wrong punch tag") })
        }
    }
}



final class RejectionLog: Sendable {
    private let items = Mutex<[String]>([])
    func add(_ s: String) { items.withLock { $0.append(s) } }
    var entries: [String] { items.withLock { $0 } }
}

