import Crypto
import Foundation
import StunturnSockets
import StunturnTestSupport
import Testing

/// One session per listen forward, every local connection a stream on it: real agents, real
/// sockets, a real signaling server.
@Suite(.serialized) struct SessionTests {
    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count + 8)
        while bytes.count < count { withUnsafeBytes(of: generator.next() as UInt64) { bytes.append(contentsOf: $0) } }
        return Array(bytes.prefix(count))
    }

    /// Sends `payload` in 'S' mode and returns the service's "<count> <sha256>" answer.
    static func checksum(through address: SocketAddress, _ payload: [UInt8], timeout: Duration = .seconds(60)) async throws -> String {
        let socket = try await Socket.connect(to: address, timeout: .seconds(5))
        defer { socket.close() }
        try await socket.writeAll([UInt8(ascii: "S")] + payload, until: .now + timeout)
        socket.shutdownWrite()
        return String(decoding: try await readToEnd(socket, timeout: timeout), as: UTF8.self)
    }

    /// `block` `times` over (whole-array appends: fast even in a debug build).
    static func repeated(_ block: [UInt8], times: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(block.count * times)
        for _ in 0..<times { bytes.append(contentsOf: block) }
        return bytes
    }

    static func count(_ text: String, in log: String) -> Int { log.components(separatedBy: text).count - 1 }

    @Test func twoHundredConcurrentConnectionsShareOneSession() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()
        // The session comes up before any connection: the forward keeps it up from the start.
        #expect(try await rig.listen!.waitForLog("tunnel up"), "\(rig.logs)")
        let failures = Locked(0)
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    // Sizes from 1 byte to about 200 KiB, so streams end at every point of a window.
                    let payload = Self.randomBytes(1 + (i * 7919) % (200 << 10))
                    do {
                        let answer = try await Self.checksum(through: rig.listenAddress, payload)
                        if answer != "\(payload.count) \(sha256(payload))" {
                            failures.withLock { $0 += 1 }
                            Issue.record("connection \(i): answer \(answer)")
                        }
                    } catch {
                        failures.withLock { $0 += 1 }
                        Issue.record("connection \(i): \(error)")
                    }
                }
            }
        }
        #expect(failures.value == 0, "\(rig.logs)")
        #expect(rig.service.connections == 200)
        // One handshake for all of them, on each side.
        #expect(Self.count("tunnel up", in: rig.listen!.log) == 1, "\(rig.logs)")
        #expect(Self.count("tunnel up", in: rig.expose!.log) == 1, "\(rig.logs)")
        try await rig.listen!.waitForLog("closed: both sides closed", count: 200)
        try await rig.stopAll()
    }

    @Test func aStoppedReaderStallsOnlyItsOwnStream() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()
        // The stalled stream: it sends far more than every buffer on the way holds (its window
        // of up to 16 MiB, the kernel's socket buffers), echoed back, and never reads the echo.
        let stalled = try await connectWithRetry(rig.listenAddress)
        defer { stalled.close() }
        let flood = Self.repeated(Self.randomBytes(1 << 20), times: 128)
        let writer = Task {
            try? await stalled.writeAll([UInt8(ascii: "E")] + flood, until: .now + .seconds(60))
        }
        defer { writer.cancel() }
        // Wait until the flood has filled the stalled stream's windows and buffers: the service
        // has taken part of it and then takes no more (it waits to write its echo).
        try await waitUntil("the service has taken part of the flood") { rig.service.bytesReceived > 1 << 20 }
        var last = -1
        try await waitUntil("the stalled stream stops moving\n\(rig.logs)", timeout: .seconds(30), interval: .milliseconds(500)) {
            let now = rig.service.bytesReceived
            defer { last = now }
            return now == last
        }
        #expect(last < flood.count, "the whole flood went through: nothing stalled")
        let stalledAt = rig.service.bytesReceived
        // Another stream on the same session still moves several MiB, each way, at once.
        let payload = Self.randomBytes(4 << 20)
        let started = ContinuousClock.now
        let answer = try await Self.checksum(through: rig.listenAddress, payload, timeout: .seconds(30))
        #expect(answer == "\(payload.count) \(sha256(payload))", "\(rig.logs)")
        let reply = try await echo(rig.listenAddress, "still interactive", timeout: .seconds(10))
        #expect(reply == "still interactive")
        #expect(ContinuousClock.now - started < .seconds(30))
        // Still stalled: only its own stream waited.
        #expect(rig.service.bytesReceived - stalledAt == payload.count + 2 + "still interactive".utf8.count)
        // The stalled stream is intact too, once its reader reads again.
        var echoed: [UInt8] = []
        while echoed.count < 1 << 20 {
            let chunk = try await stalled.readSome(until: .now + .seconds(20))
            if chunk.isEmpty { break }
            echoed += chunk
        }
        #expect(echoed.count >= 1 << 20 && Array(echoed.prefix(1 << 20)) == Array(flood.prefix(1 << 20)), "\(rig.logs)")
        writer.cancel()
        stalled.close()
        try await rig.stopAll()
    }

    @Test func halfCloseWorksBothWays() async throws {
        // A service that speaks first and ends its side at once, then reads what the client sends.
        let service = try Socket.listener(on: .loopback())
        let received = Locked<(bytes: [UInt8], ended: Bool)>(([], false))
        let serving = Task {
            guard let (connection, _) = try? await service.accept(until: .now + .seconds(60)) else { return }
            defer { connection.close() }
            try? await connection.writeAll(Array("bye".utf8), until: .now + .seconds(10))
            connection.shutdownWrite()
            while let chunk = try? await connection.readSome(until: .now + .seconds(30)), !chunk.isEmpty {
                received.withLock { $0.bytes += chunk }
            }
            received.withLock { $0.ended = true }
        }
        defer { serving.cancel(); service.close() }
        let rig = try TunnelRig()
        try await rig.startServer()
        rig.expose = try AgentProcess("expose", ["forward", "--expose", try service.localAddress().description, "--key", rig.key,
                                                 "--server", rig.serverArgument])
        try await rig.expose!.waitForLog("exposing")
        try await rig.startListen()

        let client = try await connectWithRetry(rig.listenAddress)
        defer { client.close() }
        // The service's side ends in order: its bytes, then end-of-file, while the client's side
        // stays open.
        let first = await readUntilEnd(client, timeout: .seconds(20))
        #expect(first.bytes == Array("bye".utf8) && first.failure == nil, "\(String(describing: first.failure))\n\(rig.logs)")
        // The client's direction still carries a whole transfer, then its own end.
        let payload = Self.randomBytes(3 << 20)
        try await client.writeAll(payload, until: .now + .seconds(30))
        client.shutdownWrite()
        try await waitUntil("the service has read to the end\n\(rig.logs)") { received.value.ended }
        #expect(received.value.bytes.count == payload.count)
        #expect(sha256(received.value.bytes) == sha256(payload))
        #expect(try await rig.listen!.waitForLog("closed: both sides closed"), "\(rig.logs)")
        try await rig.stopAll()
    }

    @Test func aFrozenPeerEndsTheSessionAndItComesBack() async throws {
        let rig = try TunnelRig(extra: ["--keepalive", "1"])
        try await rig.startAll()
        let held = try await connectWithRetry(rig.listenAddress)
        defer { held.close() }
        try await held.writeAll(Array("Eping".utf8), until: .now + .seconds(20))
        #expect(try await held.readExactly(4, until: .now + .seconds(20)) == Array("ping".utf8))

        let expose = rig.expose!.process.processIdentifier
        kill(expose, SIGSTOP)
        // Three pings a second apart go unanswered: the session ends, its streams are reset.
        let frozeAt = ContinuousClock.now
        let before = Self.count("answered none of 3 pings", in: rig.listen!.log)
        #expect(before == 0, "the session was lost before the peer froze\n\(rig.logs)")
        let failure = await readUntilFailure(held, timeout: .seconds(20))
        #expect(failure?.errno == ECONNRESET, "read ended with \(String(describing: failure))\n\(rig.logs)")
        #expect(ContinuousClock.now - frozeAt < .seconds(15))
        #expect(try await rig.listen!.waitForLog("answered none of 3 pings"), "\(rig.logs)")
        kill(expose, SIGCONT)

        // The listen side sets the session up again, and new connections work.
        try await waitUntil("a new connection is carried again\n\(rig.logs)", timeout: .seconds(60), interval: .milliseconds(250)) {
            (try? await echo(rig.listenAddress, "after", timeout: .seconds(5))) == "after"
        }
        #expect(Self.count("tunnel up", in: rig.listen!.log) >= 2, "\(rig.logs)")
        try await rig.stopAll()
    }

    @Test func pastMaxStreamsANewConnectionIsRefusedWithAReason() async throws {
        let rig = try TunnelRig(extra: ["--max-streams", "2"])
        try await rig.startAll()
        var held: [Socket] = []
        for i in 0..<2 {
            let socket = try await connectWithRetry(rig.listenAddress)
            try await socket.writeAll(Array("Eheld\(i)".utf8), until: .now + .seconds(20))
            #expect(try await socket.readExactly(5, until: .now + .seconds(20)) == Array("held\(i)".utf8))
            held.append(socket)
        }
        // The third is reset by the listen side, which may be before the client's connect returns.
        if let third = try? await Socket.connect(to: rig.listenAddress, timeout: .seconds(5)) {
            defer { third.close() }
            try? await third.writeAll(Array("Ethird".utf8), until: .now + .seconds(5))
            let ended = await readUntilEnd(third, timeout: .seconds(20))
            #expect(ended.bytes.isEmpty && ended.failure?.isTimeout != true, "\(String(describing: ended.failure))\n\(rig.logs)")
        }
        #expect(try await rig.listen!.waitForLog("max_streams"), "\(rig.logs)")
        // The held streams are untouched, and once one ends a new connection fits again.
        try await held[0].writeAll(Array("again".utf8), until: .now + .seconds(20))
        #expect(try await held[0].readExactly(5, until: .now + .seconds(20)) == Array("again".utf8))
        held[1].close()
        try await waitUntil("a connection fits again\n\(rig.logs)", timeout: .seconds(20), interval: .milliseconds(100)) {
            (try? await echo(rig.listenAddress, "fits", timeout: .seconds(5))) == "fits"
        }
        for socket in held { socket.close() }
        try await rig.stopAll()
    }
}

extension SessionTests {
    @Test func theSessionExampleEchoesEightStreams() async throws {
        let example = URL(fileURLWithPath: agentBinary).deletingLastPathComponent().appendingPathComponent("session-echo").path
        try #require(FileManager.default.isExecutableFile(atPath: example), "build the examples first: \(example)")
        let rig = try TunnelRig()
        try await rig.startServer()
        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: example)
        serve.arguments = ["serve", rig.serverArgument, rig.key]
        serve.standardOutput = FileHandle.nullDevice
        serve.standardError = FileHandle.nullDevice
        try serve.run()
        defer { kill(serve.processIdentifier, SIGKILL) }
        let (status, out, err) = try await runProgram(example, ["client", rig.serverArgument, rig.key], timeout: .seconds(60))
        #expect(status == 0, "\(out)\n\(err)")
        let answers = out.split(separator: "\n").filter { $0.contains("says hello") }
        #expect(answers.count == 8 && !out.contains("MISMATCH"), "\(out)")
        #expect(try await reap(serve, timeout: .seconds(10)) == 0, "the serving side did not end in order")
        try await rig.server!.stop()
    }
}
