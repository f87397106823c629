import Glibc
import StunturnServer
import StunturnTestSupport
import StunturnSockets
import Testing
@testable import StunturnSignaling

/// The server's relay, spoken to as a client speaks: pairing hellos that ask for a relay, then
/// relay connections that the server joins.
@Suite(.timeLimit(.minutes(2))) struct RelayTests {
    /// Pairs an initiator and a receiver on `key`, both with `relay`; returns both replies.
    func pair(_ server: RendezvousServer, key: String, relay: String? = "auto", initiatorToken: String? = nil,
              receiverToken: String? = nil) async throws -> (initiator: ServerReply, receiver: ServerReply) {
        let waitingBefore = await server.statistics.paired
        async let initiatorBytes = rawExchange(server, ClientHello(key: key, transport: "tcp", role: .initiator, relay: relay,
                                                                   token: initiatorToken).encoded())
        try await waitUntil { await server.statistics.waitingInitiators >= 1 }
        let receiver = try ServerReply.decode(try await rawExchange(
            server, ClientHello(key: key, transport: "", role: .receiver, relay: relay, token: receiverToken).encoded()))
        let initiator = try ServerReply.decode(try await initiatorBytes)
        #expect(await server.statistics.paired == waitingBefore + 1)
        return (initiator, receiver)
    }

    /// Opens a relay connection and sends its hello; the reply is read by the caller.
    func join(_ server: RendezvousServer, key: String, id: String?, role: SignalRole) async throws -> Socket {
        let socket = try await Socket.connect(to: server.boundAddress, timeout: .seconds(2))
        let hello = ClientHello(key: key, transport: ClientHello.relayTransport, role: role, relayID: id)
        try await socket.writeAll(hello.encoded(), until: .now + .seconds(5))
        return socket
    }

    /// The reply line, read a byte at a time so nothing after it is taken.
    func replyLine(_ socket: Socket) async throws -> ServerReply {
        var line: [UInt8] = []
        while line.last != 10 {
            let byte = try await socket.readSome(maxLength: 1, until: .now + .seconds(15))
            if byte.isEmpty { break }
            line += byte
            #expect(line.count < 4096)
        }
        return try ServerReply.decode(line)
    }

    @Test func aGrantedRelayCarriesBytesBothWaysUnchanged() async throws {
        try await withServer { server, _ in
            let (toInitiator, toReceiver) = try await pair(server, key: "relay-key")
            let id = try #require(toInitiator.relayID)
            #expect(toReceiver.relayID == id)
            #expect(id.count == 32)
            #expect(toInitiator.peerRelay == "auto")
            let a = try await join(server, key: "relay-key", id: id, role: .initiator)
            defer { a.close() }
            try await waitUntil { await server.statistics.pendingRelays == 1 }
            let b = try await join(server, key: "relay-key", id: id, role: .receiver)
            defer { b.close() }
            let replyA = try await replyLine(a), replyB = try await replyLine(b)
            #expect(replyA.transport == "relay" && replyB.transport == "relay")
            #expect(replyA.peerAddress == (try b.localAddress()).description)
            let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            async let sent: Void = a.writeAll(payload, until: .now + .seconds(10))
            let received = try await b.readExactly(payload.count, until: .now + .seconds(10))
            try await sent
            #expect(received == payload)
            try await b.writeAll(Array("back".utf8), until: .now + .seconds(5))
            #expect(try await a.readExactly(4, until: .now + .seconds(5)) == Array("back".utf8))
            #expect(await server.statistics.activeRelays == 1)
            a.shutdownWrite()
            #expect(try await b.readSome(until: .now + .seconds(5)).isEmpty)
            b.shutdownWrite()
            try await waitUntil { await server.statistics.activeRelays == 0 }
            let stats = await server.statistics
            #expect(stats.relayedSessions == 1)
            #expect(stats.relayedBytes == UInt64(payload.count + 4))
        }
    }

    @Test func relayHellosThatMatchNoGrantAreRefused() async throws {
        try await withServer { server, _ in
            let (toInitiator, _) = try await pair(server, key: "owner-key")
            let id = try #require(toInitiator.relayID)
            // Unknown id, the right id with another key, no id at all.
            for (key, relayID) in [("owner-key", String(repeating: "0", count: 32)), ("other-key", id), ("owner-key", nil)] {
                let socket = try await join(server, key: key, id: relayID, role: .initiator)
                defer { socket.close() }
                #expect(try await replyLine(socket).error == ServerErrorText.relayUnknown)
            }
            // The same side twice: the second is refused, the first still waits.
            let first = try await join(server, key: "owner-key", id: id, role: .receiver)
            defer { first.close() }
            try await waitUntil { await server.statistics.pendingRelays == 1 }
            let second = try await join(server, key: "owner-key", id: id, role: .receiver)
            defer { second.close() }
            #expect(try await replyLine(second).error == ServerErrorText.relaySideTaken)
            #expect(await server.statistics.relayRefused == 4)
        }
    }

    @Test func aSideWhosePeerNeverJoinsIsToldWhy() async throws {
        var options = RendezvousServer.Options()
        options.relayWait = .seconds(2)
        try await withServer(options) { server, _ in
            let (toInitiator, _) = try await pair(server, key: "lonely")
            let socket = try await join(server, key: "lonely", id: toInitiator.relayID, role: .initiator)
            defer { socket.close() }
            #expect(try await replyLine(socket).error == ServerErrorText.relayPeerMissing)
            try await waitUntil { await server.statistics.pendingRelays == 0 }
        }
    }

    @Test func clientsThatDoNotAskAreNotGrantedARelay() async throws {
        try await withServer { server, _ in
            // The original clients' hellos: no relay field, nothing new in the reply.
            let (legacy, _) = try await pair(server, key: "legacy", relay: nil)
            #expect(legacy.relayID == nil && legacy.relayRefused == nil && legacy.peerRelay == nil)
            let (never, _) = try await pair(server, key: "never", relay: "never")
            #expect(never.relayID == nil)
        }
    }

    @Test func withTokensOnlyClientsPresentingOneAreRelayed() async throws {
        var options = RendezvousServer.Options()
        options.authTokens = AuthTokens(tokens: ["operator-token-0123456789"])
        try await withServer(options) { server, _ in
            let (none, _) = try await pair(server, key: "k1")
            #expect(none.relayID == nil)
            #expect(none.relayRefused?.contains("valid token") == true)
            let (oneSide, _) = try await pair(server, key: "k2", initiatorToken: "operator-token-0123456789")
            #expect(oneSide.relayID == nil)
            #expect(oneSide.relayRefused?.contains("the receiver has none") == true)
            let (wrong, _) = try await pair(server, key: "k3", initiatorToken: "operator-token-0123456789", receiverToken: "operator-token-012345678X")
            #expect(wrong.relayID == nil)
            let (both, _) = try await pair(server, key: "k4", initiatorToken: "operator-token-0123456789",
                                           receiverToken: "operator-token-0123456789")
            #expect(both.relayID != nil)
        }
    }

    @Test func requireAuthRefusesPairingWithoutAToken() async throws {
        var options = RendezvousServer.Options()
        options.authTokens = AuthTokens(tokens: ["operator-token-0123456789"])
        options.requireAuth = true
        try await withServer(options) { server, _ in
            let refused = try ServerReply.decode(try await rawExchange(server, goHello("k", target: "127.0.0.1")))
            #expect(refused.error == ServerErrorText.authRequired)
            let (paired, _) = try await pair(server, key: "k", initiatorToken: "operator-token-0123456789",
                                             receiverToken: "operator-token-0123456789")
            #expect(paired.error.isEmpty && paired.relayID != nil)
        }
    }

    @Test func relayLimitsHold() async throws {
        var options = RendezvousServer.Options()
        options.relayMaxSessions = 3
        options.relayMaxPerKey = 2
        try await withServer(options) { server, _ in
            #expect(try await pair(server, key: "a").initiator.relayID != nil)
            #expect(try await pair(server, key: "a").initiator.relayID != nil)
            let third = try await pair(server, key: "a").initiator
            #expect(third.relayID == nil)
            #expect(third.relayRefused?.contains("already has 2 relayed sessions") == true)
            #expect(try await pair(server, key: "b").initiator.relayID != nil)
            let full = try await pair(server, key: "c").initiator
            #expect(full.relayRefused?.contains("relay is full") == true)
            #expect(await server.statistics.pendingRelays == 3)
        }
    }

    @Test func oneAddressCannotTakeTheWholeRelay() async throws {
        var options = RendezvousServer.Options()
        options.relayMaxPerAddress = 2
        // Long enough that the first two grants are still held when the third pairing comes,
        // however slow the machine; short enough to wait for their expiry below.
        options.relayWait = .seconds(5)
        try await withServer(options) { server, _ in
            // Both sides of each pairing are at 127.0.0.1: one host pairing with itself under
            // many keys.
            #expect(try await pair(server, key: "k1").initiator.relayID != nil)
            #expect(try await pair(server, key: "k2").initiator.relayID != nil)
            let third = try await pair(server, key: "k3").initiator
            #expect(third.relayID == nil)
            #expect(third.relayRefused == "the initiator's address 127.0.0.1 already has 2 relayed sessions, the server's limit",
                    "\(String(describing: third.relayRefused))")
            // Grants nobody joined expire, and give the address its slots back.
            try await waitUntil { await server.statistics.pendingRelays == 0 }
            #expect(try await pair(server, key: "k4").initiator.relayID != nil)
        }
    }

    @Test func grantsNobodyJoinsExpire() async throws {
        var options = RendezvousServer.Options()
        options.relayWait = .milliseconds(200)
        options.relayMaxSessions = 1
        try await withServer(options) { server, _ in
            #expect(try await pair(server, key: "x").initiator.relayID != nil)
            try await waitUntil { await server.statistics.pendingRelays == 0 }
            // The slot is free again.
            #expect(try await pair(server, key: "x").initiator.relayID != nil)
        }
    }

    @Test func theRateLimitHolds() async throws {
        var options = RendezvousServer.Options()
        options.relayRate = 1_000_000
        try await withServer(options) { server, _ in
            let id = try #require(try await pair(server, key: "slow").initiator.relayID)
            let a = try await join(server, key: "slow", id: id, role: .initiator)
            let b = try await join(server, key: "slow", id: id, role: .receiver)
            defer { a.close(); b.close() }
            _ = try await replyLine(a)
            _ = try await replyLine(b)
            let payload = [UInt8](repeating: 7, count: 1_500_000)
            let start = ContinuousClock.now
            async let sent: Void = a.writeAll(payload, until: .now + .seconds(20))
            _ = try await b.readExactly(payload.count, until: .now + .seconds(20))
            try await sent
            // 1.5 MB at 1 MB/s after a 100 kB burst takes at least 1.4 s; without the limit,
            // loopback carries it in milliseconds.
            #expect(ContinuousClock.now - start > .milliseconds(1200))
        }
    }

    @Test func stoppingTheServerEndsItsRelays() async throws {
        let server = RendezvousServer(listen: .loopback(.ipv4))
        try server.start()
        let id = try #require(try await pair(server, key: "stop").initiator.relayID)
        let a = try await join(server, key: "stop", id: id, role: .initiator)
        let b = try await join(server, key: "stop", id: id, role: .receiver)
        defer { a.close(); b.close() }
        _ = try await replyLine(a)
        _ = try await replyLine(b)
        server.stop()
        // The relay resets both sides: a read ends (in error or at end of file) promptly.
        let ended: Bool
        do {
            ended = try await a.readSome(until: .now + .seconds(5)).isEmpty
        } catch let error as SocketError {
            ended = error.code != .timedOut
        }
        #expect(ended)
    }

    @Test func tokenFilesAreParsedWithReasons() throws {
        let tokens = try AuthTokens(parsing: "# operators\nfirst-token-0123456789\n\n  second-token-0123456789  \n", source: "t")
        #expect(tokens.count == 2)
        #expect(tokens.accepts("second-token-0123456789"))
        #expect(!tokens.accepts("second-token-012345678"))
        #expect(!tokens.accepts(nil))
        #expect(throws: AuthTokenError.self) { try AuthTokens(parsing: "# nothing\n", source: "t") }
        do {
            _ = try AuthTokens(parsing: "short\n", source: "tokens.txt")
            Issue.record("a short token was accepted")
        } catch {
            #expect(error.description.contains("tokens.txt line 1"))
        }
    }

    @Test func tokenFilesAreReadWithReasons() throws {
        let folder = "/tmp/stunturn-tokens-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try #require(mkdir(folder, 0o700) == 0)
        defer { _ = unlink("\(folder)/tokens"); _ = rmdir(folder) }
        func failure(_ path: String) -> String? {
            do { _ = try AuthTokens.load(path: path); return nil } catch { return error.description }
        }
        #expect(failure("\(folder)/missing") == "cannot read the token file \(folder)/missing: no such file or directory")
        #expect(failure(folder)?.hasPrefix("cannot read the token file \(folder): is a directory") == true)
        let file = "\(folder)/tokens"
        func write(_ bytes: [UInt8]) throws {
            let descriptor = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            try #require(bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) } == bytes.count)
        }
        try write(Array("# operators\nfile-token-0123456789\n".utf8))
        #expect(try AuthTokens.load(path: file).accepts("file-token-0123456789"))
        try write([0x66, 0xff, 0x0a])
        #expect(failure(file) == "\(file): not UTF-8 text")
        try write([UInt8](repeating: 0x61, count: (1 << 20) + 1))
        #expect(failure(file) == "\(file): larger than 1 MiB, not a token file")
    }
}
