import Foundation
import Stunturn
import StunturnSockets
import StunturnTestSupport
import Testing

/// Errors a new user meets first, worded for the side that sees them: what is known, where, and
/// what to check.
@Suite struct ErrorMessageTests {
    @Test(arguments: [nil, 1]) func aListenSideWithNobodyExposingSaysSo(serverTimeout: Int?) async throws {
        let rig = try TunnelRig()
        var arguments = ["server", "--listen", rig.serverArgument]
        if let serverTimeout { arguments += ["--initiator-timeout", "\(serverTimeout)"] }
        rig.server = try AgentProcess("server", arguments)
        try await rig.server!.waitForLog("signaling server listening")
        // Nobody exposes with this key: the server's own time-out (1 s) or the agent's (2 s) ends
        // the wait, and either way the listen side says what it means.
        try await rig.startListen(signalTimeout: 2)
        let expected = "no peer with this key is exposing at \(rig.serverArgument) (is the other side running, with the same key?)"
        #expect(try await rig.listen!.waitForLog(expected), "\(rig.logs)")
        #expect(!rig.listen!.log.contains("Timed out waiting for an initiator"))
        if serverTimeout != nil {
            #expect(try await rig.server!.waitForLog("no receiver with its key came"), "\(rig.logs)")
        }
        try await rig.stopAll()
    }

    @Test(arguments: [("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "SSH-2.0-OpenSSH_9.2p1 Debian-2"),
                      ("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 400 Bad Request")])
    func aServerThatIsNotASignalingServerIsNamed(greeting: String, shown: String) async throws {
        let impostor = try Socket.listener(on: .loopback())
        let address = try impostor.localAddress()
        let task = Task.detached {
            for _ in 0..<50 {
                guard let (client, _) = try? await impostor.accept(until: .now + .seconds(30)) else { return }
                try? await client.writeAll(Array(greeting.utf8), until: .now + .seconds(5))
                client.shutdownWrite()
                _ = try? await client.readSome(until: .now + .seconds(5))
                client.close()
            }
        }
        defer { task.cancel(); impostor.close() }
        let listen = try AgentProcess("listen", ["forward", "--listen", "127.0.0.1:\(try freePort())", "--key", newKey(),
                                                 "--server", "127.0.0.1:\(address.port)"])
        let expected = "127.0.0.1:\(address.port) does not speak the stunturn signaling protocol (it answered '\(shown)')"
        #expect(try await listen.waitForLog(expected), "\(listen.log)")
        #expect(!listen.log.contains(".;"), "doubled punctuation: \(listen.log)")
        _ = try await listen.stop()
    }

    @Test func anExposedServiceThatIsDownIsNamedOnBothSides() async throws {
        // A port nothing listens on: the service is down.
        let closed = try Socket.listener(on: .loopback())
        let downAddress = try closed.localAddress()
        closed.close()
        let rig = try TunnelRig()
        try await rig.startServer()
        rig.expose = try AgentProcess("expose", ["forward", "--expose", downAddress.description, "--key", rig.key,
                                                 "--server", rig.serverArgument])
        try await rig.expose!.waitForLog("exposing")
        try await rig.startListen()
        #expect(try await rig.listen!.waitForLog("tunnel up"), "\(rig.logs)")
        // The stream opens as the connection is accepted, so the reset may come back before the
        // connect has even returned here: either way, no byte and no orderly end.
        do {
            let socket = try await Socket.connect(to: rig.listenAddress, timeout: .seconds(5))
            defer { socket.close() }
            try? await socket.writeAll(Array("hello?".utf8), until: .now + .seconds(5))
            let ended = await readUntilEnd(socket, timeout: .seconds(20))
            #expect(ended.bytes.isEmpty)
            #expect(ended.failure != nil, "the connection ended in order, as if the service had answered")
        } catch let error as SocketError {
            #expect(error.code != .timedOut)
        }
        #expect(try await rig.listen!.waitForLog("by the peer: the exposed service refused the connection"), "\(rig.logs)")
        #expect(try await rig.expose!.waitForLog("cannot reach the exposed service: connect \(downAddress): connection refused"), "\(rig.logs)")

        // The same for ssh's ProxyCommand: stdio's warning says why, and it exits 1.
        let stdio = try AgentProcess("stdio", ["forward", "--stdio", "--key", rig.key, "--server", rig.serverArgument], stdin: true)
        stdio.stdinHandle.write(Data("SSH-2.0-test\r\n".utf8))
        #expect(try await stdio.waitForExit(timeout: .seconds(30)) == 1)
        #expect(stdio.log.contains("the exposed service refused the connection"), "\(stdio.log)")
        #expect(!stdio.log.contains("broken pipe"), "\(stdio.log)")
        try await rig.stopAll()
    }

    @Test func jsonLogsAreOneObjectPerLine() async throws {
        let rig = try TunnelRig(extra: ["--log-format", "json"])
        try await rig.startServer()
        try await rig.startExpose()
        try await rig.startListen()
        #expect(try await echo(rig.listenAddress, "json") == "json")
        #expect(try await rig.listen!.waitForLog("path none -> direct"))
        try await rig.stopAll()
        let lines = rig.listen!.log.split(separator: "\n")
        #expect(lines.count > 3)
        var sawPath = false
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String]
            let fields = try #require(object, "not a JSON object of strings: \(line)")
            #expect(fields["time"]?.hasSuffix("Z") == true)
            #expect(fields["level"] != nil && fields["message"] != nil)
            if fields["message"]?.hasPrefix("path none -> direct") == true {
                sawPath = true
                #expect(fields["forward"] == "listen")
                #expect(fields["peer"] != nil)
            }
        }
        #expect(sawPath)
    }

    @Test func theServerLogsPairings() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()
        #expect(try await echo(rig.listenAddress, "paired") == "paired")
        #expect(rig.server!.log.contains("paired"), "\(rig.logs)")
        // Not the key, which never reaches it, nor its one-way hash, the pairing key on the wire.
        let pairingKey = TunnelKeys(accessKey: rig.key).signalingKey
        #expect(!rig.server!.log.contains(pairingKey), "the server logged the pairing key")
        #expect(!rig.server!.log.contains(rig.key), "the server logged the key")
        try await rig.stopAll()
    }
}
