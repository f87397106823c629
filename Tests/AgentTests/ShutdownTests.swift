import Foundation
import StunturnSockets
import StunturnTestSupport
import Testing

/// SIGTERM and SIGINT as a user (or systemd) sends them to real agents.
@Suite(.serialized) struct ShutdownTests {
    /// Random bytes, so a transfer cut short or reordered cannot match the checksum by chance: a
    /// random 64 KiB block, each copy stamped with its index. Made 8 bytes at a time, since a byte
    /// at a time in a debug build keeps a thread of the test runner's small pool busy for seconds.
    static func payload(mebibytes: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var block: [UInt8] = []
        block.reserveCapacity(64 << 10)
        for _ in 0..<((64 << 10) / 8) { withUnsafeBytes(of: generator.next() as UInt64) { block.append(contentsOf: $0) } }
        var payload: [UInt8] = []
        payload.reserveCapacity(mebibytes << 20)
        for copy in 0..<(mebibytes * 16) {
            payload.append(contentsOf: block)
            withUnsafeBytes(of: UInt32(copy).bigEndian) { stamp in
                for i in 0..<4 { payload[copy * (64 << 10) + i] = stamp[i] }
            }
        }
        return payload
    }

    @Test func aTransferInFlightCompletesIntactAcrossOneSIGTERM() async throws {
        // A drain far longer than the test: an agent that waited it out would fail the bound below.
        let rig = try TunnelRig(extra: ["--drain-timeout", "60"])
        try await rig.startAll()
        let payload = Self.payload(mebibytes: 8)
        let socket = try await connectWithRetry(rig.listenAddress)
        defer { socket.close() }
        try await socket.writeAll([UInt8(ascii: "S")], until: .now + .seconds(10))
        // Paced so that most of it is still to come when the signal lands: 64 KiB every 20 ms.
        let chunk = 64 << 10
        var sent = 0
        var signalled = ContinuousClock.now
        while sent < payload.count {
            let end = min(sent + chunk, payload.count)
            try await socket.writeAll(Array(payload[sent..<end]), until: .now + .seconds(30))
            sent = end
            if sent == 1 << 20 {
                signalled = ContinuousClock.now
                // Both ends of the tunnel are told to stop while bytes are in flight.
                kill(rig.listen!.process.processIdentifier, SIGTERM)
                kill(rig.expose!.process.processIdentifier, SIGTERM)
                try await rig.listen!.waitForLog("stopped taking new connections")
                try await rig.expose!.waitForLog("stopped taking new connections")
                // No new connections while draining: the listener is closed.
                await #expect(throws: SocketError.self) {
                    let late = try await Socket.connect(to: rig.listenAddress, timeout: .seconds(2))
                    late.close()
                }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        socket.shutdownWrite()
        let answer: String
        do {
            answer = String(decoding: try await readToEnd(socket), as: UTF8.self)
        } catch {
            Issue.record("\(error)\n\(rig.logs)")
            return
        }
        #expect(answer == "\(payload.count) \(sha256(payload))", "\(rig.logs)")
        // Once the last connection has ended in order, both agents exit 0 without waiting out the
        // 60 s drain.
        #expect(try await rig.listen!.waitForExit(timeout: .seconds(30)) == 0)
        #expect(try await rig.expose!.waitForExit(timeout: .seconds(30)) == 0)
        #expect(ContinuousClock.now - signalled < .seconds(30), "the agents waited out the drain")
        #expect(rig.listen!.log.contains("closed: both sides closed"), "\(rig.logs)")
        try await rig.server!.stop()
    }

    @Test func aSecondSIGTERMResetsWhatIsLeftAtOnce() async throws {
        // With a 60 s drain, an exit within seconds can only come from the second signal.
        let rig = try TunnelRig(extra: ["--drain-timeout", "60"])
        try await rig.startAll()
        let socket = try await connectWithRetry(rig.listenAddress)
        defer { socket.close() }
        try await socket.writeAll(Array("Ehello".utf8), until: .now + .seconds(10))
        #expect(try await socket.readExactly(5, until: .now + .seconds(10)) == Array("hello".utf8))

        let agent = rig.listen!
        kill(agent.process.processIdentifier, SIGTERM)
        try await agent.waitForLog("shutting down")
        // The open connection holds the drain: the agent is still there and the tunnel still carries.
        try await socket.writeAll(Array("again".utf8), until: .now + .seconds(10))
        #expect(try await socket.readExactly(5, until: .now + .seconds(10)) == Array("again".utf8))
        #expect(agent.process.isRunning)

        let second = ContinuousClock.now
        let status = try await agent.stop(SIGTERM, timeout: .seconds(20))
        let took = ContinuousClock.now - second
        #expect(status == 0)
        // Within a second on an idle machine (0.1 s here); the bound leaves room for a busy runner
        // and is still far from the 60 s drain.
        #expect(took < .seconds(5), "the second SIGTERM took \(took)")
        // Reset, not ended in order: the client must not take it for a complete stream.
        let failure = await readUntilFailure(socket)
        #expect(failure?.errno == ECONNRESET, "read ended with \(String(describing: failure))\n\(rig.logs)")
        try await rig.stopAll()
    }

    @Test func theDrainEndsAfterDrainTimeoutAndResetsWhatIsLeft() async throws {
        let rig = try TunnelRig(extra: ["--drain-timeout", "1"])
        try await rig.startAll()
        let socket = try await connectWithRetry(rig.listenAddress)
        defer { socket.close() }
        try await socket.writeAll(Array("Eping".utf8), until: .now + .seconds(10))
        #expect(try await socket.readExactly(4, until: .now + .seconds(10)) == Array("ping".utf8))

        let started = ContinuousClock.now
        let status = try await rig.listen!.stop(SIGINT, timeout: .seconds(6))
        let took = ContinuousClock.now - started
        #expect(status == 0)
        #expect(took >= .milliseconds(900), "the agent did not wait for the drain: \(took)")
        #expect(took < .seconds(5), "the drain took \(took) for a 1 s drain time-out")
        let failure = await readUntilFailure(socket)
        #expect(failure?.errno == ECONNRESET, "read ended with \(String(describing: failure))\n\(rig.logs)")
        #expect(rig.listen!.log.contains("may finish within 1s"), "\(rig.logs)")
        try await rig.stopAll()
    }

    @Test func drainTimeoutComesFromTheConfigFile() async throws {
        let rig = try TunnelRig()
        try await rig.startServer()
        try await rig.startExpose()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-drain-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let yaml = """
            server: \(rig.serverArgument)
            drain_timeout: 1.5
            forwards:
              - name: web
                listen: 127.0.0.1:\(rig.listenPort)
                key: \(rig.key)
            """
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        let (checked, summary, _) = try await runAgent(["check", path])
        #expect(checked == 0)
        #expect(summary.contains("drain timeout: 1.5s"), "\(summary)")

        let agent = try AgentProcess("run", ["run", path])
        try await agent.waitForLog("listening on")
        let socket = try await connectWithRetry(rig.listenAddress)
        defer { socket.close() }
        try await socket.writeAll(Array("Eok".utf8), until: .now + .seconds(10))
        #expect(try await socket.readExactly(2, until: .now + .seconds(10)) == Array("ok".utf8))
        let started = ContinuousClock.now
        #expect(try await agent.stop(SIGTERM, timeout: .seconds(8)) == 0)
        let took = ContinuousClock.now - started
        #expect(took >= .milliseconds(1400) && took < .seconds(6), "drain took \(took) for drain_timeout 1.5")
        #expect(agent.log.contains("may finish within 1.5s"), "\(agent.log)")
        try await rig.stopAll()
    }
}
