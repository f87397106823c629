import Foundation
import StunturnSockets
import StunturnTestSupport
import Testing

/// SIGHUP and `stunturn-agent reload`: forwards that changed start, stop or restart, the others
/// keep their sessions and streams; an invalid file changes nothing.
@Suite(.serialized) struct ReloadTests {
    /// A config with an in-agent server and, per name, an expose and a listen forward on one key.
    static func config(serverPort: UInt16, admin: String, pairs: [(name: String, service: SocketAddress, listenPort: UInt16, key: String)],
                       extra: String = "") -> String {
        var text = "serve: 127.0.0.1:\(serverPort)\nadmin: \(admin)\n\(extra)forwards:\n"
        for pair in pairs {
            text += "  - name: \(pair.name)-expose\n    expose: \(pair.service)\n    key: \(pair.key)\n"
            text += "  - name: \(pair.name)-listen\n    listen: 127.0.0.1:\(pair.listenPort)\n    key: \(pair.key)\n"
        }
        return text
    }

    @Test func aTransferThroughAnUnchangedForwardGoesOnAcrossAReload() async throws {
        let service = try TestService()
        let serverPort = try freePort()
        let (portA, portB, portC) = (try freePort(), try freePort(), try freePort())
        let (keyA, keyB, keyC) = (newKey(), newKey(), newKey())
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-reload-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let admin = directory.appendingPathComponent("agent.sock").path
        let path = directory.appendingPathComponent("agent.yaml").path
        let a = (name: "a", service: service.address, listenPort: portA, key: keyA)
        let b = (name: "b", service: service.address, listenPort: portB, key: keyB)
        let c = (name: "c", service: service.address, listenPort: portC, key: keyC)
        try Self.config(serverPort: serverPort, admin: admin, pairs: [a, b]).write(toFile: path, atomically: true, encoding: .utf8)
        // A setting given on the command line stays the agent's across reloads, not a change.
        let agent = try AgentProcess("agent", ["run", path, "--drain-timeout", "3"])
        #expect(try await agent.waitForLog("tunnel up", count: 2), "\(agent.log)")
        #expect(try await echo(.loopback(port: portB), "b before") == "b before")

        // A transfer through a: 8 MiB, written slowly enough to be under way during the reload.
        let payload = SessionTests.randomBytes(8 << 20)
        let socket = try await Socket.connect(to: .loopback(port: portA), timeout: .seconds(5))
        defer { socket.close() }
        let writer = Task {
            try await socket.writeAll([UInt8(ascii: "S")], until: .now + .seconds(30))
            for offset in stride(from: 0, to: payload.count, by: 256 << 10) {
                try await socket.writeAll(Array(payload[offset..<min(payload.count, offset + (256 << 10))]), until: .now + .seconds(30))
                try await Task.sleep(for: .milliseconds(60))
            }
            socket.shutdownWrite()
        }
        try await Task.sleep(for: .milliseconds(300))

        // b goes, c comes, a stays as it was.
        try Self.config(serverPort: serverPort, admin: admin, pairs: [a, c]).write(toFile: path, atomically: true, encoding: .utf8)
        kill(agent.process.processIdentifier, SIGHUP)
        #expect(try await agent.waitForLog("reloaded: added c-expose, c-listen; removed b-expose, b-listen; 2 unchanged"), "\(agent.log)")
        #expect(!agent.log.contains("takes effect at the next start"), "\(agent.log)")
        try await writer.value
        let answer = String(decoding: try await readToEnd(socket, timeout: .seconds(60)), as: UTF8.self)
        #expect(answer == "\(payload.count) \(sha256(payload))", "the transfer through the unchanged forward broke: \(answer)\n\(agent.log)")
        let aWentDown = agent.log.split(separator: "\n").contains { $0.contains("forward=a-listen") && $0.contains("path direct -> none") }
        #expect(!aWentDown, "a's session went down: \(agent.log)")
        #expect(!agent.log.contains("stopping forward \"a-"), "the unchanged forward a was stopped: \(agent.log)")

        try await waitUntil("c carries connections", timeout: .seconds(30), interval: .milliseconds(200)) {
            (try? await echo(.loopback(port: portC), "c after", timeout: .seconds(3))) == "c after"
        }
        await #expect(throws: SocketError.self) { _ = try await Socket.connect(to: .loopback(port: portB), timeout: .seconds(2)) }

        // An invalid file changes nothing, and says every problem.
        try "forwards:\n  - name: broken\n    listen: 127.0.0.1:99999\n".write(toFile: path, atomically: true, encoding: .utf8)
        let (status, _, errors) = try await runAgent(["reload", "--admin", admin], timeout: .seconds(60))
        #expect(status == 1)
        #expect(errors.contains("reload refused") || errors.contains("problem"), "\(errors)")
        #expect(agent.log.contains("reload refused, nothing changed"), "\(agent.log)")
        #expect(try await echo(.loopback(port: portC), "still c") == "still c")
        #expect(try await echo(.loopback(port: portA), "still a") == "still a")
        #expect(try await agent.stop() == 0)
    }
}
