import Foundation
import StunturnSockets
import StunturnTestSupport
import Testing

/// `stunturn-agent status` against real agents: their admin sockets, the JSON and the table.
@Suite(.serialized) struct StatusCommandTests {
    /// A directory for admin sockets (a short path, as a socket's must be), removed after the test.
    final class SocketDirectory: Sendable {
        let path: String
        init() throws {
            path = "/tmp/stunturn-test-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    /// `status --admin PATH --json`, its first forward as a dictionary.
    static func forwardStatus(_ admin: String) async throws -> [String: Any] {
        let (status, out, err) = try await runAgent(["status", "--admin", admin, "--json"], timeout: .seconds(20))
        try #require(status == 0, "status exited \(status): \(err)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], "not a JSON object: \(out)")
        let forwards = try #require(json["forwards"] as? [[String: Any]], "no forwards in \(out)")
        try #require(forwards.count == 1, "\(out)")
        return forwards[0]
    }

    @Test func statusShowsTheDirectPathThePeerStreamsAndBytes() async throws {
        let sockets = try SocketDirectory()
        let exposeAdmin = "\(sockets.path)/expose.sock"
        let listenAdmin = "\(sockets.path)/listen.sock"
        let rig = try TunnelRig()
        try await rig.startServer()
        try await rig.startExpose(options: ["--admin", exposeAdmin])
        try await rig.startListen(options: ["--admin", listenAdmin])
        #expect(try await rig.listen!.waitForLog("tunnel up"), "\(rig.logs)")

        // One connection, held open after 50,000 bytes went each way.
        let client = try await connectWithRetry(rig.listenAddress)
        defer { client.close() }
        let payload = [UInt8](repeating: 0x5a, count: 50_000)
        try await client.writeAll([UInt8(ascii: "E")] + payload, until: .now + .seconds(20))
        #expect(try await client.readExactly(payload.count, until: .now + .seconds(20)) == payload)

        let listen = try await Self.forwardStatus(listenAdmin)
        #expect(listen["name"] as? String == "listen")
        #expect(listen["mode"] as? String == "listen")
        #expect(listen["state"] as? String == "up")
        #expect(listen["path"] as? String == "direct")
        #expect(["host", "srflx"].contains(listen["candidate"] as? String ?? ""), "\(listen)")
        let peer = try #require(listen["peer"] as? String)
        #expect(peer.hasPrefix("127.0.0.1:"), "\(listen)")
        #expect(listen["streams"] as? Int == 1)
        #expect(listen["connections"] as? Int == 1)
        #expect(listen["failed"] as? Int == 0)
        // The marker byte and the payload went out; the echo came in.
        #expect(listen["bytes_out"] as? Int == 50_001, "\(listen)")
        #expect(listen["bytes_in"] as? Int == 50_000, "\(listen)")
        #expect(listen["sessions_established"] as? Int == 1)
        // One punch, the one that carries the session.
        #expect(listen["punches_tried"] as? Int == 1)
        #expect(listen["punches_failed"] as? Int == 0)
        #expect(listen["sessions_up"] as? Int == 1)
        #expect(listen["uptime_seconds"] is Int, "\(listen)")
        #expect(listen["last_error"] is NSNull)

        // The exposing side sees the same stream from the other end.
        let expose = try await Self.forwardStatus(exposeAdmin)
        #expect(expose["mode"] as? String == "expose")
        #expect(expose["state"] as? String == "up")
        #expect(expose["path"] as? String == "direct")
        #expect(expose["streams"] as? Int == 1)
        #expect(expose["bytes_in"] as? Int == 50_001, "\(expose)")
        #expect(expose["bytes_out"] as? Int == 50_000, "\(expose)")

        // The table says the same for people.
        let (status, table, err) = try await runAgent(["status", "--admin", listenAdmin], timeout: .seconds(20))
        #expect(status == 0, "\(err)")
        let lines = table.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("agent \(rig.listen!.process.processIdentifier) (\(listenAdmin)), 1 forward:") == true, "\(table)")
        #expect(lines.dropFirst().first?.hasPrefix("FORWARD") == true, "\(table)")
        let row = try #require(lines.first { $0.hasPrefix("listen ") }, "\(table)")
        let cells = row.split(separator: "  ", omittingEmptySubsequences: true).map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(Array(cells.prefix(5)) == ["listen", "listen", "up", "direct (\(listen["candidate"] as? String ?? ""))", peer], "\(table)")
        #expect(row.contains("49KiB  49KiB"), "\(table)")

        // Once the connection ends its bytes stay counted, no longer as an open stream.
        client.close()
        var after: [String: Any] = [:]
        try await waitUntil("the stream has ended: \(after)", timeout: .seconds(20), interval: .milliseconds(100)) {
            after = try await Self.forwardStatus(listenAdmin)
            return after["streams"] as? Int == 0
        }
        #expect(after["bytes_out"] as? Int == 50_001, "\(after)")
        #expect(after["bytes_in"] as? Int == 50_000, "\(after)")
        #expect(after["connections"] as? Int == 1)

        try await rig.stopAll()
        #expect(!FileManager.default.fileExists(atPath: listenAdmin), "the listen agent left its socket")
        #expect(!FileManager.default.fileExists(atPath: exposeAdmin), "the expose agent left its socket")
    }

    @Test func statusWithoutAdminFindsThisUsersAgents() async throws {
        let runtime = try SocketDirectory()
        let environment = ["XDG_RUNTIME_DIR": runtime.path]
        // Nothing running yet, and a socket an agent killed earlier left behind.
        try FileManager.default.createDirectory(atPath: "\(runtime.path)/stunturn", withIntermediateDirectories: false)
        try UnixSocket.listener(at: "\(runtime.path)/stunturn/agent-1.sock").close()
        let (none, noneOut, noneErr) = try await runAgent(["status"], environment: environment)
        #expect(none == 1)
        #expect(noneOut.isEmpty)
        #expect(noneErr.contains("no agent of this user is running on this host (none answered in \(runtime.path)/stunturn)"), "\(noneErr)")

        // An agent started without --admin opens its own socket there; its server does not answer.
        let closed = try freePort()
        let agent = try AgentProcess("listen", ["forward", "--listen", "127.0.0.1:\(try freePort())", "--key", newKey(),
                                                "--server", "127.0.0.1:\(closed)"], environment: environment)
        let pid = agent.process.processIdentifier
        let socket = "\(runtime.path)/stunturn/agent-\(pid).sock"
        try await agent.waitForLog("admin socket \(socket)")
        // The agent cleared the stale socket as it started.
        #expect(!FileManager.default.fileExists(atPath: "\(runtime.path)/stunturn/agent-1.sock"))

        let (status, table, err) = try await runAgent(["status"], environment: environment)
        #expect(status == 0, "\(err)")
        #expect(table.hasPrefix("agent \(pid) (\(socket)), 1 forward:"), "\(table)")
        #expect(table.contains("\nlisten "), "\(table)")

        let (jsonStatus, json, jsonErr) = try await runAgent(["status", "--json"], environment: environment)
        #expect(jsonStatus == 0, "\(jsonErr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], "\(json)")
        let agents = try #require(object["agents"] as? [[String: Any]], "\(json)")
        #expect(agents.count == 1)
        #expect(agents.first?["pid"] as? Int == Int(pid))
        #expect(agents.first?["admin"] as? String == socket)
        let forward = try #require((agents.first?["forwards"] as? [[String: Any]])?.first, "\(json)")
        #expect(forward["path"] as? String == "none")
        #expect(["starting", "waiting for peer", "backing off"].contains(forward["state"] as? String ?? ""), "\(forward)")

        #expect(try await agent.stop() == 0, "\(agent.log)")
        #expect(!FileManager.default.fileExists(atPath: socket))
        let (after, _, afterErr) = try await runAgent(["status"], environment: environment)
        #expect(after == 1)
        #expect(afterErr.contains("no agent of this user is running"), "\(afterErr)")
    }

    @Test func adminSocketErrorsNameThePath() async throws {
        let sockets = try SocketDirectory()
        let missing = "\(sockets.path)/missing.sock"
        let (status, out, err) = try await runAgent(["status", "--admin", missing])
        #expect(status == 1 && out.isEmpty)
        #expect(err == "stunturn-agent status: no admin socket at \(missing): no agent is running with it\n")

        let stale = "\(sockets.path)/stale.sock"
        try UnixSocket.listener(at: stale).close()
        let (staleStatus, _, staleErr) = try await runAgent(["status", "--admin", stale, "--json"])
        #expect(staleStatus == 1)
        #expect(staleErr.contains("admin socket \(stale) refused the connection: its agent is no longer running"), "\(staleErr)")

        // A second agent cannot take a live agent's socket; a stale one it replaces.
        let live = "\(sockets.path)/live.sock"
        let first = try AgentProcess("first", ["forward", "--listen", "127.0.0.1:\(try freePort())", "--key", newKey(),
                                               "--server", "127.0.0.1:\(try freePort())", "--admin", live])
        try await first.waitForLog("admin socket \(live)")
        let (taken, _, takenErr) = try await runAgent(["forward", "--listen", "127.0.0.1:\(try freePort())", "--key", newKey(),
                                                        "--server", "127.0.0.1:7000", "--admin", live])
        #expect(taken == 1)
        #expect(takenErr.contains("admin socket \(live) is in use by another running agent"), "\(takenErr)")
        let second = try AgentProcess("second", ["forward", "--listen", "127.0.0.1:\(try freePort())", "--key", newKey(),
                                                 "--server", "127.0.0.1:\(try freePort())", "--admin", stale])
        try await second.waitForLog("admin socket \(stale)")
        #expect(try await runAgent(["status", "--admin", stale]).0 == 0)
        try await first.stop()
        try await second.stop()

        let (stdio, _, stdioErr) = try await runAgent(["forward", "--stdio", "--key", newKey(), "--server", "127.0.0.1:7000",
                                                       "--admin", live])
        #expect(stdio == 64)
        #expect(stdioErr.contains("--admin does not apply to --stdio"), "\(stdioErr)")
        let (long, _, longErr) = try await runAgent(["forward", "--listen", "127.0.0.1:2222", "--key", newKey(), "--server", "127.0.0.1:7000",
                                                     "--admin", "/tmp/" + String(repeating: "d", count: 120)])
        #expect(long == 64)
        #expect(longErr.contains("--admin is 125 bytes long; a socket path may be at most 103 bytes"), "\(longErr)")
    }
}
