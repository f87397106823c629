import Foundation
import Stunturn
import StunturnSockets
import StunturnTestSupport
import Testing

extension Array where Element == UInt8 {
    func contains(bytes needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        for start in 0...(count - needle.count) where self[start] == needle[0] {
            if self[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}

/// Sessions through the server's relay: real agents, a real server, real sockets.
@Suite(.serialized) struct RelayPathTests {
    @Test func aRelayedSessionShowsTheServerOnlyCiphertext() async throws {
        let rig = try TunnelRig(extra: ["--relay", "only"])
        try await rig.startServer()
        let proxy = try RecordingProxy(to: .loopback(port: rig.serverPort))
        let viaProxy = "127.0.0.1:\(proxy.address.port)"
        rig.expose = try AgentProcess("expose", ["forward", "--expose", rig.service.address.description, "--key", rig.key,
                                                 "--server", viaProxy, "--relay", "only", "--log-level", "debug"])
        rig.listen = try AgentProcess("listen", ["forward", "--listen", "127.0.0.1:\(rig.listenPort)", "--key", rig.key,
                                                 "--server", viaProxy, "--relay", "only", "--log-level", "debug"])
        #expect(try await rig.listen!.waitForLog("path=relay"), "\(rig.logs)")
        let secret = "a plaintext the relay must never see: " + UUID().uuidString
        #expect(try await echo(rig.listenAddress, secret) == secret)
        let answer = try await SessionTests.checksum(through: rig.listenAddress, Array(secret.utf8))
        #expect(answer == "\(secret.utf8.count) \(sha256(Array(secret.utf8)))")
        #expect(try await rig.expose!.waitForLog("path=relay"))
        #expect(try await rig.server!.waitForLog("relaying a session"))

        let capture = proxy.recorded
        // The pairing and the relay went through the proxy, and so did the session's records.
        #expect(capture.count > 2 * secret.utf8.count)
        let relayed = capture.contains(bytes: Array(#""protocol":"relay""#.utf8))
        let plaintextSeen = capture.contains(bytes: Array(secret.utf8))
        let keySeen = capture.contains(bytes: Array(rig.key.utf8)) || capture.contains(bytes: Array(rig.key.replacingOccurrences(of: "-", with: "").utf8))
        #expect(relayed, "the relay connections did not cross the proxy")
        #expect(!plaintextSeen, "the plaintext crossed the server")
        #expect(!keySeen, "the access key crossed the server")
        try await rig.stopAll()
    }

    @Test func aWrongKeyOverTheRelayReachesNothing() async throws {
        let rig = try TunnelRig(extra: ["--relay", "only"])
        try await rig.startServer()
        try await rig.startExpose()
        // A stranger who learnt the key's one-way hash (it crosses the server) pairs and joins the
        // relay, but cannot complete the handshake without the key itself.
        var client = SignalingClient(server: rig.serverArgument)
        client.relay = .only
        let realHash = TunnelKeys(accessKey: rig.key).signalingKey
        let rendezvous = try await client.requestTCPPeer(key: realHash, timeout: .seconds(20))
        rendezvous.signalingSocket?.close()
        let (socket, _) = try await client.joinRelay(rendezvous, key: realHash)
        defer { socket.close() }
        await #expect(throws: (any Error).self) {
            _ = try await SecureTunnel.initiate(on: socket, keys: TunnelKeys(accessKey: "a-different-key-of-the-same-length!!"))
        }
        #expect(try await rig.expose!.waitForLog("handshake"), "\(rig.logs)")
        #expect(rig.service.connections == 0)
        #expect(!rig.expose!.log.contains("tunnel up"))
        try await rig.stopAll()
    }

    @Test func killingTheServerEndsRelayedSessionsWhichComeBackWithIt() async throws {
        let rig = try TunnelRig(extra: ["--relay", "only"])
        try await rig.startAll()
        #expect(try await echo(rig.listenAddress, "before") == "before", "\(rig.logs)")
        try await rig.server!.stop(SIGKILL)
        #expect(try await rig.listen!.waitForLog("path relay -> none"), "\(rig.logs)")
        try await rig.startServer()
        #expect(try await rig.listen!.waitForLog("path relay -> relay (policy relay: only; after: the relay session ended", timeout: .seconds(60)), "\(rig.logs)")
        try await waitUntil("a connection is carried again\n\(rig.logs)", timeout: .seconds(30), interval: .milliseconds(250)) {
            (try? await echo(rig.listenAddress, "after", timeout: .seconds(5))) == "after"
        }
        try await rig.stopAll()
    }

    @Test func autoGoesDirectWhereItCan() async throws {
        // Loopback punches in milliseconds; the margin is for a machine busy with other suites.
        let rig = try TunnelRig(extra: ["--relay-after", "10"])
        try await rig.startAll()
        #expect(try await echo(rig.listenAddress, "direct") == "direct", "\(rig.logs)")
        #expect(try await rig.listen!.waitForLog("path none -> direct"), "\(rig.logs)")
        #expect(!rig.listen!.log.contains("path=relay"))
        // The relay is joined only when the direct path is late: a pairing that goes direct takes
        // no relay slot on the server.
        #expect(!rig.server!.log.contains("relaying a session"), "\(rig.logs)")
        try await rig.stopAll()
    }

    @Test func relayOnlyAgainstAServerThatDoesNotRelaySaysSo() async throws {
        let rig = try TunnelRig(extra: ["--relay", "only"])
        rig.server = try AgentProcess("server", ["server", "--listen", rig.serverArgument, "--relay", "off"])
        try await rig.server!.waitForLog("signaling server listening")
        try await rig.startExpose()
        try await rig.startListen()
        #expect(try await rig.listen!.waitForLog("the server refused one: this server does not relay"), "\(rig.logs)")
        try await rig.stopAll()
    }

    @Test func tokensLetClientsRelay() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-tokens-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let token = "operator-token-" + UUID().uuidString
        let serverTokens = directory.appendingPathComponent("tokens").path
        let clientToken = directory.appendingPathComponent("client-token").path
        try "# relay users\n\(token)\n".write(toFile: serverTokens, atomically: true, encoding: .utf8)
        try "\(token)\n".write(toFile: clientToken, atomically: true, encoding: .utf8)

        let rig = try TunnelRig(extra: ["--relay", "only", "--server-token-file", clientToken])
        rig.server = try AgentProcess("server", ["server", "--listen", rig.serverArgument, "--auth-token-file", serverTokens])
        try await rig.server!.waitForLog("signaling server listening")
        try await rig.startExpose()
        try await rig.startListen()
        #expect(try await echo(rig.listenAddress, "with a token") == "with a token", "\(rig.logs)")
        #expect(!rig.server!.log.contains(token), "the server logged a token")
        try await rig.stopAll()

        // Without the token the same pairing is refused a relay, and the listen side says why.
        let refused = try TunnelRig(extra: ["--relay", "only"])
        refused.server = try AgentProcess("server", ["server", "--listen", refused.serverArgument, "--auth-token-file", serverTokens])
        try await refused.server!.waitForLog("signaling server listening")
        try await refused.startExpose()
        try await refused.startListen()
        #expect(try await refused.listen!.waitForLog("relays only for clients with a valid token"), "\(refused.logs)")
        try await refused.stopAll()
    }
}

/// The signaling server's own view on its admin socket.
@Suite struct ServerStatusTests {
    @Test func theServerShowsWaitingClientsPairingsAndRelays() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-srv-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let admin = directory.appendingPathComponent("server.sock").path
        let rig = try TunnelRig(extra: ["--relay", "only"])
        rig.server = try AgentProcess("server", ["server", "--listen", rig.serverArgument, "--admin", admin])
        try await rig.server!.waitForLog("signaling server listening")
        try await rig.startExpose()
        try await rig.startListen()
        #expect(try await echo(rig.listenAddress, "counted") == "counted", "\(rig.logs)")
        // The exposing agent long-polls again right after its pairing: looked for until it shows.
        var server: [String: Any] = [:]
        var out = ""
        try await waitUntil("the server's status shows the relay and the waiting receiver: \(out)", timeout: .seconds(30), interval: .milliseconds(200)) {
            let (status, text, _) = try await runAgent(["status", "--admin", admin, "--json"])
            out = text
            guard status == 0, let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                  let view = object["server"] as? [String: Any] else { return false }
            server = view
            return view["waiting_receivers"] as? Int == 1 && view["relayed_sessions_active"] as? Int == 1
        }
        #expect((server["pairings"] as? Int ?? 0) >= 1)
        #expect(server["relaying"] as? Bool == true)
        #expect(server["pairings_per_second"] != nil)
        let (_, table, _) = try await runAgent(["status", "--admin", admin])
        #expect(table.contains("1 session(s) relayed now"), "\(table)")
        let (reload, _, reloadErrors) = try await runAgent(["reload", "--admin", admin])
        #expect(reload != 0)
        #expect(reloadErrors.contains("no config file to read again"), "\(reloadErrors)")
        try await rig.stopAll()
    }
}
