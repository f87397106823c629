import Stunturn
import StunturnServer
import StunturnTestSupport
import Testing

/// The library's sessions, between two `PeerSession`s in this process through a real server.
@Suite(.timeLimit(.minutes(1))) struct PeerSessionTests {
    static func pair(_ address: String, key: String, options: PeerSessionOptions = PeerSessionOptions()) async throws -> (PeerSession, PeerSession) {
        async let accepted = PeerSession.accept(server: address, key: key, wait: .seconds(20), options: options)
        let connected = try await PeerSession.connect(server: address, key: key, options: options)
        return (connected, try await accepted)
    }

    @Test func pastItsLimitOpenStreamThrowsAndIncomingStreamsComeInOrder() async throws {
        try await withServer { _, address in
            var options = PeerSessionOptions()
            options.maxStreams = 20
            let (client, server) = try await Self.pair(address, key: "library-limit-\(UInt64.random(in: 0...UInt64.max))", options: options)
            var opened: [PeerStream] = []
            for i in 0..<20 {
                let stream = try await client.openStream()
                try await stream.write([UInt8(i)])
                opened.append(stream)
            }
            await #expect(throws: PeerStreamError.self) { _ = try await client.openStream() }
            // The peer sees them in the order they were opened, each with its first byte.
            var iterator = server.incoming.makeAsyncIterator()
            for i in 0..<20 {
                let stream = try #require(await iterator.next())
                #expect(try await stream.read(maxLength: 1) == [UInt8(i)])
                stream.close()
            }
            for stream in opened { stream.close() }
            client.close()
        }
    }

    @Test(arguments: [RelayPolicy.auto, .only]) func sessionsTakeTheDirectPathOrTheRelay(relay: RelayPolicy) async throws {
        try await withServer { _, address in
            var options = PeerSessionOptions()
            options.relay = relay
            // Loopback punches in milliseconds; the margin is for a machine busy with other suites.
            options.relayAfter = .seconds(10)
            let (client, server) = try await Self.pair(address, key: "library-path-\(UInt64.random(in: 0...UInt64.max))", options: options)
            #expect(client.path == (relay == .only ? .relay : .direct))
            #expect(server.path == client.path)
            let stream = try await client.openStream()
            try await stream.write(Array("over the \(client.path)".utf8))
            stream.finish()
            var iterator = server.incoming.makeAsyncIterator()
            let accepted = try #require(await iterator.next())
            var received: [UInt8] = []
            for try await chunk in accepted.chunks { received += chunk }
            #expect(String(decoding: received, as: UTF8.self) == "over the \(client.path)")
            accepted.close()
            client.close()
            server.close()
        }
    }

    @Test func streamsOpenFromBothSidesAndEndInOrder() async throws {
        try await withServer { _, address in
            let (client, server) = try await Self.pair(address, key: "library-session-\(UInt64.random(in: 0...UInt64.max))")
            // Client to server: written, half-closed, answered, ended.
            let outbound = try await client.openStream()
            try await outbound.write(Array("ping".utf8))
            outbound.finish()
            var iterator = server.incoming.makeAsyncIterator()
            let accepted = try #require(await iterator.next())
            var received: [UInt8] = []
            for try await chunk in accepted.chunks { received += chunk }
            #expect(received == Array("ping".utf8))
            try await accepted.write(Array("pong".utf8))
            accepted.finish()
            var answer: [UInt8] = []
            for try await chunk in outbound.chunks { answer += chunk }
            #expect(answer == Array("pong".utf8))
            // Server to client, on the same session, with more than one window of data.
            let inbound = try await server.openStream()
            let big = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            async let sent: Void = { try await inbound.write(big); inbound.finish() }()
            var clientSide = client.incoming.makeAsyncIterator()
            let other = try #require(await clientSide.next())
            var got: [UInt8] = []
            for try await chunk in other.chunks { got += chunk }
            try await sent
            #expect(got == big)
            #expect(await client.status.streamsCarried == 2)
            for stream in [outbound, accepted, inbound, other] { stream.close() }
            client.close()
            server.close()
        }
    }

    @Test func aResetStreamIsNeverMistakenForAnEnd() async throws {
        try await withServer { _, address in
            let (client, server) = try await Self.pair(address, key: "library-reset-\(UInt64.random(in: 0...UInt64.max))")
            let stream = try await client.openStream()
            try await stream.write(Array("partial".utf8))
            var iterator = server.incoming.makeAsyncIterator()
            let accepted = try #require(await iterator.next())
            #expect(try await accepted.read() == Array("partial".utf8))
            stream.reset()
            await #expect(throws: PeerStreamError.self) {
                while try await !accepted.read().isEmpty {}
            }
            // The session goes on: another stream works.
            let next = try await client.openStream()
            try await next.write(Array("after".utf8))
            next.finish()
            let second = try #require(await iterator.next())
            var bytes: [UInt8] = []
            for try await chunk in second.chunks { bytes += chunk }
            #expect(bytes == Array("after".utf8))
            // Closing the session resets what is still open on the other side.
            let open = try await client.openStream()
            try await open.write(Array("x".utf8))
            let third = try #require(await iterator.next())
            #expect(try await third.read() == Array("x".utf8))
            client.close()
            await #expect(throws: PeerStreamError.self) {
                while try await !third.read().isEmpty {}
            }
            let report = await server.ended
            #expect(!report.clean)
        }
    }
}
