import StunturnTestSupport
import Foundation
import StunturnSockets
import Testing

@Suite(.serialized) struct EndToEndTests {
    @Test func largeTransferAndManyConcurrentConnectionsThroughRealAgents() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()

        // 32 MiB, checked by count and checksum at the service.
        var generator = SystemRandomNumberGenerator()
        let block = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var payload: [UInt8] = []
        payload.reserveCapacity(32 << 20)
        for round in 0..<32 { payload.append(contentsOf: block); payload[round << 20] = UInt8(round) }
        let socket = try await connectWithRetry(rig.listenAddress)
        try await socket.writeAll([UInt8(ascii: "S")] + payload, until: .now + .seconds(120))
        socket.shutdownWrite()
        let answer = String(decoding: try await readToEnd(socket), as: UTF8.self)
        #expect(answer == "\(payload.count) \(sha256(payload))")
        socket.close()

        // 40 connections at once, each a stream on the one session.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<40 {
                group.addTask {
                    let reply = try await echo(rig.listenAddress, "connection \(i)", timeout: .seconds(60))
                    #expect(reply == "connection \(i)")
                }
            }
            try await group.waitForAll()
        }
        #expect(rig.listen!.log.contains("tunnel up"))
        #expect(rig.expose!.log.contains("tunnel up"))

        // SIGTERM: graceful, exit 0.
        #expect(try await rig.listen!.stop() == 0)
        #expect(try await rig.expose!.stop() == 0)
        #expect(try await rig.server!.stop() == 0)
        #expect(rig.listen!.log.contains("shutting down"))
    }

    @Test func severalListenAgentsShareOneKey() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()
        let secondPort = try freePort()
        let second = try AgentProcess("listen-2", ["forward", "--listen", "127.0.0.1:\(secondPort)", "--key", rig.key,
                                                   "--server", rig.serverArgument])
        try await second.waitForLog("listening on")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<10 {
                group.addTask {
                    let address: SocketAddress = i % 2 == 0 ? rig.listenAddress : .loopback(port: secondPort)
                    let reply = try await echo(address, "agent \(i % 2) connection \(i)", timeout: .seconds(30))
                    #expect(reply == "agent \(i % 2) connection \(i)")
                }
            }
            try await group.waitForAll()
        }
        #expect(second.log.contains("tunnel up"))
        #expect(try await second.stop() == 0)
    }

    @Test func halfClosePropagatesThroughTheTunnel() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()
        let socket = try await connectWithRetry(rig.listenAddress)
        // The sink answers only after it sees end-of-file, so the answer proves the FIN crossed
        // the tunnel while the other direction stayed open.
        do {
            try await socket.writeAll(Array("Shello".utf8), until: .now + .seconds(20))
            socket.shutdownWrite()
            let answer = String(decoding: try await readToEnd(socket, timeout: .seconds(20)), as: UTF8.self)
            #expect(answer == "5 \(sha256(Array("hello".utf8)))", "\(rig.logs)")
        } catch {
            Issue.record("\(error)\n\(rig.logs)")
        }
    }

    @Test func aTunnelCutBetweenRecordsResetsTheLocalConnection() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()
        do {
            // An orderly end first: the answer, then end-of-file, and the agent logs a clean close.
            let orderly = try await connectWithRetry(rig.listenAddress)
            try await orderly.writeAll(Array("Shello".utf8), until: .now + .seconds(20))
            orderly.shutdownWrite()
            let answer = String(decoding: try await readToEnd(orderly, timeout: .seconds(20)), as: UTF8.self)
            #expect(answer == "5 \(sha256(Array("hello".utf8)))", "\(rig.logs)")
            orderly.close()
            #expect(try await rig.listen!.waitForLog("closed: both sides closed"), "\(rig.logs)")

            // Now the peer agent dies with the tunnel between two records: its kernel ends the
            // TCP stream in order (a FIN, as an attacker could inject), but no close record came.
            let cut = try await connectWithRetry(rig.listenAddress)
            try await cut.writeAll(Array("Eping".utf8), until: .now + .seconds(20))
            #expect(try await cut.readExactly(4, until: .now + .seconds(20)) == Array("ping".utf8), "\(rig.logs)")
            _ = try await rig.expose!.stop(SIGKILL)
            let failure = await readUntilFailure(cut)
            // The application learns the stream may be incomplete, and the log says why.
            #expect(failure?.errno == ECONNRESET, "read ended with \(String(describing: failure))\n\(rig.logs)")
            #expect(try await rig.listen!.waitForLog("without the peer's close record"), "\(rig.logs)")
            cut.close()
        } catch {
            Issue.record("\(error)\n\(rig.logs)")
        }
        try await rig.stopAll()
    }

    @Test func anIdleConnectionIsResetAtBothEndsAndLoggedAsRoutine() async throws {
        let rig = try TunnelRig(extra: ["--idle-timeout", "2"])
        try await rig.startAll()
        do {
            let client = try await connectWithRetry(rig.listenAddress)
            try await client.writeAll(Array("Eping".utf8), until: .now + .seconds(20))
            #expect(try await client.readExactly(4, until: .now + .seconds(20)) == Array("ping".utf8), "\(rig.logs)")
            // Then nothing: the agents cut the connection, and the client learns it was cut.
            let failure = await readUntilFailure(client, timeout: .seconds(20))
            #expect(failure?.errno == ECONNRESET, "read ended with \(String(describing: failure))\n\(rig.logs)")
            client.close()
            // Whichever agent's timer fired first logs the time-out; it is the agent's own doing,
            // not a failure: info, not a warning. (Its peer sees the tunnel reset.)
            var lines: [Substring] = []
            try await waitUntil("an agent logs the idle time-out\n\(rig.logs)") {
                lines = (rig.listen!.log + rig.expose!.log).split(separator: "\n").filter { $0.contains("closed: idle for") }
                return !lines.isEmpty
            }
            #expect(lines.allSatisfy { $0.contains(" info ") }, "\(rig.logs)")
        } catch {
            Issue.record("\(error)\n\(rig.logs)")
        }
        try await rig.stopAll()
    }

    @Test func aSessionCarriesNewConnectionsWhileTheSignalingServerIsDown() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()
        let held = try await connectWithRetry(rig.listenAddress)
        try await held.writeAll(Array("Eone".utf8), until: .now + .seconds(20))
        #expect(try await held.readExactly(3, until: .now + .seconds(20)) == Array("one".utf8))

        try await rig.server!.stop(SIGKILL)
        // The established session does not need the server: the held stream goes on, and new
        // connections open new streams on it at once.
        try await held.writeAll(Array("two".utf8), until: .now + .seconds(20))
        #expect(try await held.readExactly(3, until: .now + .seconds(20)) == Array("two".utf8))
        for round in 0..<5 {
            do {
                #expect(try await echo(rig.listenAddress, "new \(round)", timeout: .seconds(5)) == "new \(round)", "\(rig.logs)")
            } catch {
                Issue.record("a new connection without the server: \(error)\n\(rig.logs)")
            }
        }
        try await rig.expose!.waitForLog("retrying in")

        try await rig.startServer()
        try await waitUntil("a new connection is carried again\n\(rig.logs)", timeout: .seconds(60), interval: .milliseconds(250)) {
            (try? await echo(rig.listenAddress, "three", timeout: .seconds(5))) == "three"
        }
        try await rig.expose!.waitForLog("signaling server reachable again")
        try await held.writeAll(Array("four".utf8), until: .now + .seconds(20))
        #expect(try await held.readExactly(4, until: .now + .seconds(20)) == Array("four".utf8))
    }

    @Test func peerAgentKilledAndRestarted() async throws {
        let rig = try TunnelRig()
        try await rig.startServer()
        try await rig.startExpose()
        try await rig.startListen(signalTimeout: 2)
        #expect(try await echo(rig.listenAddress, "before") == "before")

        try await rig.expose!.stop(SIGKILL)
        // Without its peer a new connection is reset, neither left hanging nor ended as if the
        // service had closed it.
        let orphan = try await Socket.connect(to: rig.listenAddress, timeout: .seconds(5))
        let orphaned = await readUntilEnd(orphan, timeout: .seconds(30))
        #expect(orphaned.bytes.isEmpty && orphaned.failure?.errno == ECONNRESET, "\(String(describing: orphaned.failure))")
        try await rig.listen!.waitForLog("not carried")

        try await rig.startExpose()
        try await waitUntil("a new connection is carried again\n\(rig.logs)", timeout: .seconds(60), interval: .milliseconds(250)) {
            (try? await echo(rig.listenAddress, "after", timeout: .seconds(5))) == "after"
        }
    }

    @Test func wrongKeyIsRefusedAndNothingReachesTheService() async throws {
        let rig = try TunnelRig()
        try await rig.startServer()
        try await rig.startExpose()
        // The listen side holds another access key than the exposing side.
        let wrongKey = newKey()
        try #require(wrongKey != rig.key)
        try await rig.startListen(key: wrongKey, signalTimeout: 3)
        let socket = try await connectWithRetry(rig.listenAddress)
        defer { socket.close() }
        try await socket.writeAll(Array("Esecret".utf8), until: .now + .seconds(10))
        // The client gets nothing back, and its connection is reset rather than hang or end in order.
        let ended = await readUntilEnd(socket, timeout: .seconds(30))
        #expect(ended.bytes.isEmpty, "received \(ended.bytes.count) bytes\n\(rig.logs)")
        #expect(ended.failure?.errno == ECONNRESET,
                "read ended with \(String(describing: ended.failure))\n\(rig.logs)")
        #expect(try await rig.listen!.waitForLog("not carried"), "\(rig.logs)")
        #expect(!rig.expose!.log.contains("tunnel up"), "\(rig.logs)")
        #expect(rig.service.connections == 0)
        #expect(rig.service.bytesReceived == 0)
        // A listen side with the right key still gets through to the same exposing agent.
        try await rig.listen!.stop()
        try await rig.startListen()
        do {
            #expect(try await echo(rig.listenAddress, "real peer") == "real peer")
        } catch {
            Issue.record("real peer not carried: \(error)\n\(rig.logs)")
        }
        #expect(rig.service.connections == 1)
    }

    @Test func aPlaintextPeerIsRefusedByAnEncryptedOne() async throws {
        let rig = try TunnelRig()
        try await rig.startServer()
        try await rig.startExpose()
        // Same key, so the two pair and punch; but the listen side skips the tunnel handshake.
        let impostor = try AgentProcess("impostor", ["forward", "--listen", "127.0.0.1:\(rig.listenPort)", "--key", rig.key,
                                                     "--server", rig.serverArgument, "--plaintext-insecure", "--signal-timeout", "5", "--drain-timeout", "0"])
        defer { kill(impostor.process.processIdentifier, SIGKILL) }
        try await impostor.waitForLog("listening on")
        let socket = try await connectWithRetry(rig.listenAddress)
        defer { socket.close() }
        try await socket.writeAll(Array("Esecret".utf8), until: .now + .seconds(10))
        let ended = await readUntilEnd(socket, timeout: .seconds(30))
        #expect(ended.bytes.isEmpty, "received \(ended.bytes.count) bytes\n\(rig.logs)")
        #expect(ended.failure?.isTimeout != true, "the connection was left open\n\(rig.logs)")
        try await rig.expose!.waitForLog("tunnel handshake with")
        #expect(rig.service.connections == 0)
        #expect(rig.service.bytesReceived == 0)
        // And the real peer still gets through afterwards.
        try await impostor.stop()
        try await rig.startListen()
        do {
            #expect(try await echo(rig.listenAddress, "real peer") == "real peer")
        } catch {
            Issue.record("real peer not carried: \(error)\nlisten:\n\(rig.listen!.log)\nexpose:\n\(rig.expose!.log)")
        }
    }

    @Test func aPortThatCannotBeBoundFailsTheStartNamingIt() async throws {
        let service = try TestService()
        let serverPort = try freePort()
        let goodPort = try freePort()
        let busy = try Socket.listener(on: .loopback())
        defer { busy.close() }
        let busyPort = try busy.localAddress().port
        let key = newKey()
        let yaml = """
        serve: 127.0.0.1:\(serverPort)
        forwards:
          - name: exposed
            expose: \(service.address)
            key: \(key)
          - name: blocked
            listen: 127.0.0.1:\(busyPort)
            key: \(key)
          - name: good
            listen: 127.0.0.1:\(goodPort)
            key: \(key)
        """
        try await withConfig(yaml) { path in
            // A service manager sees the failure: the agent exits non-zero, naming the forward,
            // its line and the cause, instead of retrying while it looks up.
            let (status, _, errors) = try await runAgent(["run", "--config", path], timeout: .seconds(20))
            #expect(status == 1)
            #expect(errors.contains("forward \"blocked\" (config line 7): cannot listen on tcp 127.0.0.1:\(busyPort)"), "\(errors)")
            #expect(errors.contains("address already in use"), "\(errors)")
            // Nothing was left listening: the good forward's port is free again.
            let again = try Socket.listener(on: .loopback(port: goodPort))
            again.close()
        }
        // The in-agent server's port too.
        let taken = """
        serve: 127.0.0.1:\(busyPort)
        forwards:
          - name: exposed
            expose: \(service.address)
            key: \(key)
        """
        try await withConfig(taken) { path in
            let (status, _, errors) = try await runAgent(["run", "--config", path], timeout: .seconds(20))
            #expect(status == 1)
            #expect(errors.contains("serve 127.0.0.1:\(busyPort) (config line 1): cannot run the signaling server"), "\(errors)")
        }
    }

    @Test func aUDPFlowWhosePeerWentSilentEndsAndTheNextDatagramStartsAnother() async throws {
        let echo = try UDPEcho()
        let echoAddress = echo.address
        let rig = try TunnelRig(extra: ["--udp", "--keepalive", "1"])
        try await rig.startServer()
        rig.expose = try AgentProcess("expose", ["forward", "--udp", "--expose", echoAddress.description, "--key", rig.key,
                                                 "--server", rig.serverArgument, "--keepalive", "1", "--log-level", "debug"])
        try await rig.expose!.waitForLog("exposing")
        rig.listen = try AgentProcess("listen", ["forward", "--udp", "--listen", "127.0.0.1:\(rig.listenPort)", "--key", rig.key,
                                                 "--server", rig.serverArgument, "--keepalive", "1", "--log-level", "debug"])
        try await rig.listen!.waitForLog("listening on udp")
        let client = try Socket.udp(on: .loopback())
        defer { client.close() }
        func roundTrip(_ text: String, wait: Duration) async -> Bool {
            try? await client.send(Array(text.utf8), to: .loopback(port: rig.listenPort), until: .now + .seconds(1))
            guard let (reply, _) = try? await client.receive(maxLength: 2048, until: .now + wait) else { return false }
            return reply == Array(text.utf8)
        }
        #expect(await roundTrip("first", wait: .seconds(15)), "\(rig.logs)")
        // Idle past several keepalives: the flow stays up (keepalives both ways), and answers.
        try await Task.sleep(for: .seconds(4))
        #expect(await roundTrip("after idle", wait: .seconds(3)), "\(rig.logs)")
        #expect(!rig.listen!.log.contains("nothing heard from the peer"))
        // The peer freezes: three keepalives unheard end the flow, with why.
        kill(rig.expose!.process.processIdentifier, SIGSTOP)
        #expect(try await rig.listen!.waitForLog("nothing heard from the peer", timeout: .seconds(15)), "\(rig.logs)")
        kill(rig.expose!.process.processIdentifier, SIGCONT)
        // The client's next datagram sets a new flow up.
        try await waitUntil("a new flow carries datagrams\n\(rig.logs)", timeout: .seconds(40), interval: .milliseconds(100)) {
            await roundTrip("again", wait: .seconds(3))
        }
        try await rig.stopAll()
    }

    /// On the punched UDP path (auto, on loopback) and through the server's relay (only).
    @Test(arguments: ["auto", "only"]) func udpForwardCarriesDatagrams(relay: String) async throws {
        let echo = try UDPEcho()
        let echoAddress = echo.address
        let serverPort = try freePort()
        let listenPort = try freePort()
        let key = newKey()
        let server = try AgentProcess("server", ["server", "--listen", "127.0.0.1:\(serverPort)"])
        try await server.waitForLog("signaling server listening")
        let expose = try AgentProcess("expose", ["forward", "--udp", "--expose", echoAddress.description, "--key", key,
                                                 "--server", "127.0.0.1:\(serverPort)", "--log-level", "debug", "--relay", relay, "--relay-after", "10"])
        let listen = try AgentProcess("listen", ["forward", "--udp", "--listen", "127.0.0.1:\(listenPort)", "--key", key,
                                                 "--server", "127.0.0.1:\(serverPort)", "--log-level", "debug", "--relay", relay,
                                                 "--relay-after", "10"])

        try await listen.waitForLog("listening on udp")
        try await expose.waitForLog("exposing")
        let client = try Socket.udp(on: .loopback())
        var replies: [String] = []
        for i in 0..<10 {
            let message = "datagram \(i)"
            try await client.send(Array(message.utf8), to: .loopback(port: listenPort), until: .now + .seconds(1))
            if let (reply, _) = try? await client.receive(maxLength: 2048, until: .now + .seconds(i == 0 ? 15 : 3)) {
                replies.append(String(decoding: reply, as: UTF8.self))
            }
        }
        #expect(replies.count >= 9)
        #expect(replies.allSatisfy { $0.hasPrefix("datagram ") })
        #expect(replies.last == "datagram 9")
        #expect(listen.log.contains("udp tunnel up"))
        #expect(listen.log.contains(relay == "only" ? "path=relay" : "path=direct"), "\(listen.log)")
        #expect(expose.log.contains(relay == "only" ? "path=relay" : "path=direct"), "\(expose.log)")

        // The largest datagram a tunnel datagram can hold still goes through; a larger one is
        // dropped with a reason rather than silently.
        let largest = [UInt8](repeating: 0x42, count: 65_507 - 25)
        try await client.send(largest, to: .loopback(port: listenPort), until: .now + .seconds(1))
        let (echoed, _) = try await client.receive(maxLength: 65536, until: .now + .seconds(5))
        #expect(echoed.count == largest.count)
        try await client.send([UInt8](repeating: 0x43, count: 65_507 - 24), to: .loopback(port: listenPort), until: .now + .seconds(1))
        try await listen.waitForLog("dropped: a tunnel datagram carries at most 65482")
    }

    /// A server, an exposing agent and `forward --stdio` with a pipe on stdin that has sent an
    /// echo request for "ping"; returns what came back on stdout (stdin stays open).
    private func stdioPing() async throws -> (TunnelRig, AgentProcess, String) {
        let rig = try TunnelRig()
        try await rig.startServer()
        try await rig.startExpose()
        let stdio = try AgentProcess("stdio", ["forward", "--stdio", "--key", rig.key, "--server", rig.serverArgument], stdin: true)
        stdio.stdinHandle.write(Data("Eping".utf8))
        let reply = await offPool { () -> Data in
            var data = Data()
            while data.count < 4 {
                let chunk = stdio.stdoutHandle.availableData
                if chunk.isEmpty { break }
                data += chunk
            }
            return data
        }
        return (rig, stdio, String(decoding: reply, as: UTF8.self))
    }

    @Test func stdioCarriesOneConnection() async throws {
        let (rig, stdio, reply) = try await stdioPing()
        #expect(reply == "ping", "\(stdio.log)\n\(rig.logs)")
        try stdio.stdinHandle.close()
        let status = try await stdio.waitForExit(timeout: .seconds(20))
        #expect(status == 0, "\(stdio.log)\n\(rig.logs)")
    }

    @Test func stdioCarriesRegularFilesBothWays() async throws {
        // Regular files cannot be watched by epoll (EPERM): they are always ready, and the relay
        // must still read the whole input, write the whole answer and end in order.
        let rig = try TunnelRig()
        try await rig.startServer()
        try await rig.startExpose()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-stdio-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var generator = SystemRandomNumberGenerator()
        let payload = (0..<(2 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let inputURL = directory.appendingPathComponent("in"), outputURL = directory.appendingPathComponent("out")
        try Data([UInt8(ascii: "E")] + payload).write(to: inputURL)
        _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        let stdio = try AgentProcess("stdio", ["forward", "--stdio", "--key", rig.key, "--server", rig.serverArgument],
                                     input: try FileHandle(forReadingFrom: inputURL), output: try FileHandle(forWritingTo: outputURL))
        let status = try await stdio.waitForExit(timeout: .seconds(60))
        #expect(status == 0, "\(stdio.log)\n\(rig.logs)")
        let echoed = try Data(contentsOf: outputURL)
        #expect(echoed.count == payload.count, "\(stdio.log)")
        #expect(sha256(Array(echoed)) == sha256(payload))
    }

    @Test func stdioExitsWithAnErrorWhenTheTunnelIsCutBetweenRecords() async throws {
        let (rig, stdio, reply) = try await stdioPing()
        #expect(reply == "ping", "\(stdio.log)\n\(rig.logs)")
        // The peer dies between records: its kernel ends the stream with a plain FIN, no close
        // record. stdout cannot be reset, so the exit status says the stream may be incomplete.
        _ = try await rig.expose!.stop(SIGKILL)
        let status = try await stdio.waitForExit(timeout: .seconds(20))
        #expect(status == 1, "\(stdio.log)\n\(rig.logs)")
        #expect(stdio.log.contains("without the peer's close record"), "\(stdio.log)")
        try? stdio.stdinHandle.close()
    }

    @Test func theAccessKeyNeverReachesTheSignalingServer() async throws {
        // A recording proxy stands between the agents and the real server.
        let rig = try TunnelRig()
        try await rig.startServer()
        let recorder = try RecordingProxy(to: .loopback(port: rig.serverPort))
        let expose = try AgentProcess("expose", ["forward", "--expose", rig.service.address.description, "--key", rig.key,
                                                 "--server", recorder.address.description])
        let listen = try AgentProcess("listen", ["forward", "--listen", "127.0.0.1:\(rig.listenPort)", "--key", rig.key,
                                                 "--server", recorder.address.description])

        try await expose.waitForLog("exposing")
        try await listen.waitForLog("listening on")
        // The proxy hides the agents' real ports, so the punch itself cannot work here: what
        // matters is what both roles send while signaling.
        let trigger = try await connectWithRetry(rig.listenAddress)
        defer { trigger.close() }
        var seen = ""
        try await waitUntil("both roles have signaled through the proxy; recorded: \(seen)") {
            seen = String(decoding: recorder.recorded, as: UTF8.self)
            return seen.contains("\"role\":\"initiator\"") && seen.contains("\"role\":\"receiver\"")
        }
        #expect(!seen.contains(rig.key))
        #expect(!seen.lowercased().contains(rig.key.replacingOccurrences(of: "-", with: "")))
        #expect(!seen.contains(Data(rig.key.utf8).base64EncodedString()))
    }
}

/// A TCP proxy that records every byte either way between clients and the upstream server, as a
/// capture on the wire would.
final class RecordingProxy: @unchecked Sendable {
    let address: SocketAddress
    private let listener: Socket
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    private var task: Task<Void, Never>?

    init(to upstream: SocketAddress) throws {
        listener = try Socket.listener(on: .loopback())
        address = try listener.localAddress()
        let listener = self.listener
        task = Task.detached { [weak self] in
            await withDiscardingTaskGroup { group in
                while let (client, _) = try? await listener.accept(until: nil) {
                    group.addTask { await self?.proxy(client, to: upstream) }
                }
            }
        }
    }

    deinit { task?.cancel(); listener.close() }

    var recorded: [UInt8] { lock.withLock { bytes } }

    private func proxy(_ client: Socket, to upstream: SocketAddress) async {
        defer { client.close() }
        guard let server = try? await Socket.connect(to: upstream, timeout: .seconds(5)) else { return }
        defer { server.close() }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while let chunk = try? await client.readSome(until: .now + .seconds(60)), !chunk.isEmpty {
                    self.lock.withLock { self.bytes += chunk }
                    guard (try? await server.writeAll(chunk, until: .now + .seconds(10))) != nil else { break }
                }
                server.shutdownWrite()
            }
            group.addTask {
                while let chunk = try? await server.readSome(until: .now + .seconds(60)), !chunk.isEmpty {
                    self.lock.withLock { self.bytes += chunk }
                    guard (try? await client.writeAll(chunk, until: .now + .seconds(10))) != nil else { break }
                }
                client.shutdownWrite()
            }
        }
    }
}

/// A UDP echo service on loopback, for the UDP forwards' tests.
final class UDPEcho: Sendable {
    let address: SocketAddress
    private let socket: Socket
    private let task: Task<Void, Never>

    init() throws {
        let socket = try Socket.udp(on: .loopback())
        self.socket = socket
        address = try socket.localAddress()
        task = Task.detached {
            while let (datagram, from) = try? await socket.receive(maxLength: 65536, until: nil) {
                try? await socket.send(datagram, to: from, until: .now + .seconds(1))
            }
        }
    }

    deinit {
        task.cancel()
        socket.close()
    }
}
