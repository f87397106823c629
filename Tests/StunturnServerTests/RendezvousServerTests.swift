import StunturnServer
import StunturnTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import StunturnSockets
import Testing
@testable import StunturnSignaling

/// Sends raw bytes as a client would and returns everything the server sends before closing.
func rawExchange(_ server: RendezvousServer, _ bytes: [UInt8], timeout: Duration = .seconds(10)) async throws -> [UInt8] {
    let socket = try await Socket.connect(to: server.boundAddress, timeout: .seconds(2))
    defer { socket.close() }
    let deadline = ContinuousClock.now + timeout
    if !bytes.isEmpty { try await socket.writeAll(bytes, until: deadline) }
    var received: [UInt8] = []
    while true {
        let chunk = try await socket.readSome(until: deadline)
        if chunk.isEmpty { return received }
        received += chunk
    }
}

func goHello(_ key: String, target: String = "", proto: String = "tcp", address: String = "") -> [UInt8] {
    ClientHello(key: key, targetIP: target, transport: proto, address: address).encoded()
}

@Suite struct RendezvousServerTests {
    @Test func originalClientsPairOverTCP() async throws {
        try await withServer { server, _ in
            // The original initiator names the receiver's public IP; on loopback that is 127.0.0.1.
            async let initiatorReply = rawExchange(server, goHello("go-key", target: "127.0.0.1"))
            try await waitUntil { await server.statistics.waitingInitiators == 1 }
            let receiverSocket = try await Socket.connect(to: server.boundAddress, timeout: .seconds(2))
            let receiverLocal = try receiverSocket.localAddress()
            try await receiverSocket.writeAll(goHello("go-key", proto: "", address: "127.0.0.1:9999"), until: .now + .seconds(5))
            let receiverBytes = try await receiverSocket.readSome(until: .now + .seconds(5))
            let initiatorBytes = try await initiatorReply
            let toInitiator = try ServerReply.decode(initiatorBytes)
            let toReceiver = try ServerReply.decode(receiverBytes)
            #expect(toInitiator.transport == "tcp")
            #expect(toInitiator.peerAddress == receiverLocal.description)
            #expect(toReceiver.transport == "tcp")
            #expect(toReceiver.peerAddress.hasPrefix("127.0.0.1:"))
            #expect(initiatorBytes.last == UInt8(ascii: "\n"))
            #expect(await server.statistics.waitingInitiators == 0)
        }
    }

    @Test func udpPairingExchangesReportedAddresses() async throws {
        try await withServer { server, _ in
            async let initiatorReply = rawExchange(server, goHello("u", target: "127.0.0.1", proto: "udp", address: "198.51.100.1:1111"))
            try await waitUntil { await server.statistics.waitingInitiators == 1 }
            let receiver = try ServerReply.decode(try await rawExchange(server, goHello("u", proto: "", address: "203.0.113.2:2222")))
            let initiator = try ServerReply.decode(try await initiatorReply)
            #expect(receiver == ServerReply(transport: "udp", peerAddress: "198.51.100.1:1111"))
            #expect(initiator == ServerReply(transport: "udp", peerAddress: "203.0.113.2:2222"))
        }
    }

    @Test func receiverWithNobodyWaitingIsToldAtOnce() async throws {
        try await withServer { server, _ in
            // Told at once, not held like an initiator (30 s): only a hang would take this long.
            let start = ContinuousClock.now
            let reply = try await rawExchange(server, goHello("nobody", proto: ""), timeout: .seconds(40))
            #expect(reply == Array(#"{"protocol":"","error":"Receiver with that UUID not found"}"#.utf8) + [10])
            #expect(ContinuousClock.now - start < .seconds(20))
        }
    }

    @Test func secondOriginalInitiatorOnAKeyIsRefused() async throws {
        try await withServer { server, _ in
            async let first = rawExchange(server, goHello("dup", target: "127.0.0.1"))
            try await waitUntil { await server.statistics.waitingInitiators == 1 }
            let second = try ServerReply.decode(try await rawExchange(server, goHello("dup", target: "127.0.0.1")))
            #expect(second.error == ServerErrorText.keyInUse)
            _ = try await rawExchange(server, goHello("dup", proto: ""))
            _ = try await first
        }
    }

    @Test func timedOutInitiatorFreesItsKey() async throws {
        var options = RendezvousServer.Options()
        options.initiatorTimeout = .milliseconds(300)
        try await withServer(options) { server, _ in
            let reply = try ServerReply.decode(try await rawExchange(server, goHello("t", target: "127.0.0.1")))
            #expect(reply.error == ServerErrorText.initiatorTimedOut)
            #expect(await server.statistics.waitingInitiators == 0)
            // The key is free again: the next initiator waits (and times out) instead of being told it is in use.
            let again = try ServerReply.decode(try await rawExchange(server, goHello("t", target: "127.0.0.1")))
            #expect(again.error == ServerErrorText.initiatorTimedOut)
        }
    }

    @Test func initiatorThatLeavesIsForgotten() async throws {
        try await withServer { server, _ in
            let socket = try await Socket.connect(to: server.boundAddress, timeout: .seconds(2))
            try await socket.writeAll(goHello("gone", target: "127.0.0.1"), until: .now + .seconds(2))
            try await waitUntil { await server.statistics.waitingInitiators == 1 }
            socket.close()
            try await waitUntil { await server.statistics.waitingInitiators == 0 }
            let reply = try ServerReply.decode(try await rawExchange(server, goHello("gone", proto: "")))
            #expect(reply.error == ServerErrorText.noInitiator)
        }
    }

    @Test func extendedClientsQueueSeveralInitiatorsAndLongPoll() async throws {
        try await withServer { server, address in
            let client = SignalingClient(server: address)
            async let a = client.requestTCPPeer(key: "shared", timeout: .seconds(10))
            async let b = client.requestTCPPeer(key: "shared", timeout: .seconds(10))
            try await waitUntil { await server.statistics.waitingInitiators == 2 }
            let r1 = try await client.pollForInitiator(key: "shared")
            let r2 = try await client.pollForInitiator(key: "shared")
            #expect(r1 != nil && r2 != nil)
            let (pa, pb) = try await (a, b)
            #expect(Set([pa.peerAddress, pb.peerAddress]) == Set([r1!.localAddress, r2!.localAddress]))
            #expect(try await client.pollForInitiator(key: "shared") == nil)

            // A long-polling receiver learns of an initiator as soon as it arrives, well before
            // its 60 s poll would end.
            async let polled = client.pollForInitiator(key: "lp", wait: .seconds(60))
            try await waitUntil("the receiver long-polls") { await server.statistics.waitingReceivers == 1 }
            let start = ContinuousClock.now
            let initiator = try await client.requestTCPPeer(key: "lp", timeout: .seconds(5))
            let receiver = try #require(try await polled)
            #expect(receiver.peerAddress == initiator.localAddress)
            #expect(ContinuousClock.now - start < .seconds(30))
        }
    }

    @Test func longPollEndsAtItsDeadline() async throws {
        try await withServer { _, address in
            let start = ContinuousClock.now
            let result = try await SignalingClient(server: address).pollForInitiator(key: "quiet", wait: .seconds(1))
            #expect(result == nil)
            #expect(ContinuousClock.now - start >= .milliseconds(900))
            // Not held to the server's 60 s cap: only a hang would take this long.
            #expect(ContinuousClock.now - start < .seconds(30))
        }
    }

    @Test func waitingInitiatorsAreCapped() async throws {
        var options = RendezvousServer.Options()
        options.maxWaitingInitiators = 2
        try await withServer(options) { server, address in
            let client = SignalingClient(server: address)
            async let a = client.requestTCPPeer(key: "cap1", timeout: .seconds(10))
            async let b = client.requestTCPPeer(key: "cap2", timeout: .seconds(10))
            try await waitUntil { await server.statistics.waitingInitiators == 2 }
            await #expect(throws: SignalingError.self) { try await client.requestTCPPeer(key: "cap3", timeout: .seconds(5)) }
            _ = try await client.pollForInitiator(key: "cap1")
            _ = try await client.pollForInitiator(key: "cap2")
            _ = try await (a, b)
        }
    }

    @Test func receiversPerKeyAreCapped() async throws {
        var options = RendezvousServer.Options()
        options.maxWaitingPerKey = 2
        try await withServer(options) { server, address in
            let client = SignalingClient(server: address)
            async let a = client.pollForInitiator(key: "crowd", wait: .seconds(10))
            async let b = client.pollForInitiator(key: "crowd", wait: .seconds(10))
            try await waitUntil { await server.statistics.waitingReceivers == 2 }
            let third = try ServerReply.decode(try await rawExchange(server, ClientHello(key: "crowd", role: .receiver, wait: 10).encoded()))
            #expect(third.error == ServerErrorText.tooManyReceivers)
            // The two that wait are served as usual.
            _ = try await client.requestTCPPeer(key: "crowd", timeout: .seconds(5))
            _ = try await client.requestTCPPeer(key: "crowd", timeout: .seconds(5))
            let (ra, rb) = try await (a, b)
            #expect(ra != nil && rb != nil)
        }
    }

    @Test func keysPairOnlyWhenByteForByteEqual() async throws {
        var options = RendezvousServer.Options()
        // Long enough that a test runner busy with other suites still sees the initiator wait.
        options.initiatorTimeout = .seconds(8)
        try await withServer(options) { server, _ in
            // "café" precomposed and decomposed: equal as Swift strings, different bytes on the wire.
            async let initiator = rawExchange(server, goHello("caf\u{E9}-key", target: "127.0.0.1"))
            try await waitUntil { await server.statistics.waitingInitiators == 1 }
            let receiver = try ServerReply.decode(try await rawExchange(server, goHello("cafe\u{301}-key", proto: "")))
            #expect(receiver.error == ServerErrorText.noInitiator)
            #expect(try ServerReply.decode(try await initiator).error == ServerErrorText.initiatorTimedOut)
        }
    }

    @Test func theTargetIPMatchesInAnySpelling() async throws {
        try await withServer { server, _ in
            // An IPv4-mapped spelling of 127.0.0.1 names the same receiver.
            async let initiator = rawExchange(server, goHello("spelling", target: "::ffff:127.0.0.1"))
            try await waitUntil { await server.statistics.waitingInitiators == 1 }
            let receiver = try ServerReply.decode(try await rawExchange(server, goHello("spelling", proto: "")))
            #expect(receiver.error.isEmpty && receiver.peerAddress.hasPrefix("127.0.0.1:"))
            #expect(try ServerReply.decode(try await initiator).error.isEmpty)
        }
    }

    @Test func aUDPInitiatorWaitsForAReceiverThatReportedItsAddress() async throws {
        try await withServer { server, _ in
            // A receiver long-polling without a UDP address cannot be reached over UDP...
            // Long enough that a test runner busy with other suites still sees the receiver wait.
            async let silent = rawExchange(server, ClientHello(key: "udp-pair", role: .receiver, wait: 8).encoded())
            try await waitUntil { await server.statistics.waitingReceivers == 1 }
            async let initiator = rawExchange(server, ClientHello(key: "udp-pair", transport: "udp", address: "127.0.0.1:4000",
                                                                  role: .initiator).encoded())
            try await waitUntil { await server.statistics.waitingInitiators == 1 }
            // ...so the initiator waits for one that did.
            let receiver = try ServerReply.decode(try await rawExchange(server, ClientHello(key: "udp-pair", address: "127.0.0.1:5000",
                                                                                             role: .receiver).encoded()))
            #expect(receiver.peerAddress == "127.0.0.1:4000")
            #expect(try ServerReply.decode(try await initiator).peerAddress == "127.0.0.1:5000")
            #expect(try ServerReply.decode(try await silent).error == ServerErrorText.noInitiator)
        }
    }

    @Test func badClientsGetAnErrorOrACloseAndTheServerKeepsServing() async throws {
        var options = RendezvousServer.Options()
        // Long enough that a test runner busy with other suites still sends each hello in time.
        options.helloTimeout = .seconds(4)
        try await withServer(options) { server, address in
            let garbage = try await rawExchange(server, Array("GET / HTTP/1.1\r\n\r\n".utf8))
            #expect(String(decoding: garbage, as: UTF8.self).contains("Malformed hello"))
            let badJSON = try await rawExchange(server, Array(#"{"uuid": 12}"#.utf8))
            #expect(String(decoding: badJSON, as: UTF8.self).contains("Malformed hello"))
            let noKey = try await rawExchange(server, Array(#"{"target_ip":"1.2.3.4"}"#.utf8))
            #expect(String(decoding: noKey, as: UTF8.self).contains(ServerErrorText.missingKey))
            // The server answers and closes while the client is still sending: a reply or a reset, never a hang.
            do {
                let huge = try await rawExchange(server, Array(("{\"uuid\":\"" + String(repeating: "A", count: 100_000)).utf8))
                #expect(String(decoding: huge, as: UTF8.self).contains(ServerErrorText.helloTooLarge))
            } catch let error as SocketError {
                #expect(error.errno == ECONNRESET || error.errno == EPIPE, "\(error)")
            }
            let almostHuge = try await rawExchange(server, Array(("{\"uuid\":\"" + String(repeating: "A", count: 5000)).utf8))
            #expect(String(decoding: almostHuge, as: UTF8.self).contains(ServerErrorText.helloTooLarge))
            let start = ContinuousClock.now
            let silent = try await rawExchange(server, [], timeout: .seconds(40))
            #expect(String(decoding: silent, as: UTF8.self).contains(ServerErrorText.helloTimedOut))
            #expect(ContinuousClock.now - start >= .seconds(3))
            #expect(ContinuousClock.now - start < .seconds(30))

            // Random datagrams at the STUN port do not stop it.
            let udp = try Socket.udp(on: .loopback())
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<200 {
                let junk = (0..<Int.random(in: 0...600, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                _ = try junk.withUnsafeBytes { try udp.send($0, to: server.boundAddress) }
            }
            let mapped = try await STUNClient.discover(server: server.boundAddress, using: udp, timeout: .seconds(5))
            #expect(mapped == (try udp.localAddress()))

            // Many half-open clients at once: all are closed, the server still pairs.
            var idle: [Socket] = []
            for _ in 0..<200 { idle.append(try await Socket.connect(to: server.boundAddress, timeout: .seconds(2))) }
            let client = SignalingClient(server: address)
            async let initiator = client.requestTCPPeer(key: "still-works", timeout: .seconds(5))
            try await waitUntil { await server.statistics.waitingInitiators == 1 }
            #expect(try await client.pollForInitiator(key: "still-works") != nil)
            _ = try await initiator
            try await waitUntil(timeout: .seconds(10)) { await server.statistics.openConnections == 0 }
            idle.removeAll()
        }
    }

    @Test(.enabled(if: hasIPv6Loopback(), "no IPv6 loopback on this machine"))
    func ipv6ServerWorks() async throws {
        let server = RendezvousServer(listen: .loopback(.ipv6))
        // With [::1] there, a server that cannot start on it is a failure.
        try server.start()
        defer { server.stop() }
        let address = server.boundAddress.description
        #expect(address.hasPrefix("[::1]:"))
        let client = SignalingClient(server: address)
        async let initiator = client.requestTCPPeer(key: "v6", timeout: .seconds(30))
        try await waitUntil { await server.statistics.waitingInitiators == 1 }
        let receiver = try #require(try await client.pollForInitiator(key: "v6"))
        let i = try await initiator
        #expect(receiver.peerAddress == i.localAddress)
        #expect(i.peerAddress.description.hasPrefix("[::1]:"))
        let mapped = try await STUNClient.discover(server: address)
        #expect(mapped.description.hasPrefix("[::1]:"))
    }
}


/// Whether a plain TCP socket can bind [::1]:0: machines without IPv6 (or with it disabled on
/// loopback) have nothing for the IPv6 server test to run on.
func hasIPv6Loopback() -> Bool {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    address.sin6_port = 0
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
        }
    }
}
