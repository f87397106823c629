import Foundation
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

    @Test func theServerLogsPairings() async throws {
        let rig = try TunnelRig()
        try await rig.startAll()
        #expect(try await echo(rig.listenAddress, "paired") == "paired")
        #expect(rig.server!.log.contains("paired"), "\(rig.logs)")
        #expect(!rig.server!.log.contains(rig.key), "the server logged the key")
        try await rig.stopAll()
    }
}
