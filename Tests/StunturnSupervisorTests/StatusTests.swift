import Foundation
import Logging
import StunturnAdmin
import StunturnConfig
import StunturnRelay
import StunturnSockets
import StunturnTestSupport
@testable import StunturnSupervisor
import Testing

@Suite struct ForwardStatusTests {
    static let forward = ForwardConfig(name: "ssh", mode: .listen(Endpoint(host: "127.0.0.1", port: 2222)),
                                       key: "test-key-5b1f0c7e9a2d4c6b8e0f1a3c", server: Endpoint(host: "127.0.0.1", port: 7000))

    @Test func anUpLinkShowsItsPathUptimeRoundTripStreamsAndBytes() {
        let now = ContinuousClock.now
        var link = ForwardStatistics.Link()
        link.state = .up
        link.path = "direct"
        link.candidate = "host"
        link.peer = "192.168.1.20:40000"
        link.upSince = now - .seconds(90.7)
        link.sessionsEstablished = 3
        link.setupsFailed = 2
        link.pathChanges = 5
        link.lastError = "punch failed: timed out"
        link.lastErrorAt = now - .seconds(12.2)
        var counters = ForwardStatistics.Snapshot()
        counters.sessions = 9
        counters.failed = 1
        counters.bytesIn = 1000
        counters.bytesOut = 2000
        // An exposing forward's two peers; the one up last is the link's peer.
        let sessions = [
            SessionStatus(openStreams: 2, roundTrip: .milliseconds(40), openStreamBytesSent: 10, openStreamBytesReceived: 20),
            SessionStatus(openStreams: 1, roundTrip: .microseconds(1234), openStreamBytesSent: 300, openStreamBytesReceived: 400),
        ]
        let status = ForwardStatus(Self.forward, link: link, counters: counters, sessions: sessions, now: now)
        #expect(status.name == "ssh")
        #expect(status.mode == "listen")
        #expect(status.transport == "tcp")
        #expect(status.local == "127.0.0.1:2222")
        #expect(status.state == "up")
        #expect(status.path == "direct")
        #expect(status.candidate == "host")
        #expect(status.peer == "192.168.1.20:40000")
        #expect(status.sessionsUp == 2)
        #expect(status.uptimeSeconds == 90)
        #expect(status.rttMs == 1.23)
        #expect(status.streams == 3)
        #expect(status.bytesIn == 1000 + 20 + 400)
        #expect(status.bytesOut == 2000 + 10 + 300)
        #expect(status.connections == 9)
        #expect(status.failed == 1)
        #expect(status.sessionsEstablished == 3)
        #expect(status.setupsFailed == 2)
        #expect(status.pathChanges == 5)
        #expect(status.lastError == "punch failed: timed out")
        #expect(status.lastErrorAgeSeconds == 12)
    }

    @Test func aDownLinkHasNoUptimeRoundTripOrError() {
        var link = ForwardStatistics.Link()
        link.state = .backingOff
        let status = ForwardStatus(Self.forward, link: link, counters: .init(), sessions: [], now: .now)
        #expect(status.state == "backing off")
        #expect(status.path == "none")
        #expect(status.candidate == "")
        #expect(status.sessionsUp == 0)
        #expect(status.uptimeSeconds == nil)
        #expect(status.rttMs == nil)
        #expect(status.lastError == nil)
        #expect(status.lastErrorAgeSeconds == nil)
    }
}

@Suite(.timeLimit(.minutes(1))) struct AgentAdminSocketTests {
    /// A short path for a socket, in a directory removed after the test.
    static func scratchDirectory() throws -> String {
        let path = "/tmp/stunturn-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    /// An exposing forward whose signaling server does not answer: it keeps waiting for its peer.
    static func config(admin: AdminSocketSetting) throws -> AgentConfig {
        let closed = try Socket.listener(on: .loopback())
        let port = try closed.localAddress().port
        closed.close()
        let forwards = [
            ForwardConfig(name: "web", mode: .expose(Endpoint(host: "127.0.0.1", port: 8080)), key: "test-key-5b1f0c7e9a2d4c6b8e0f1a3c",
                          server: Endpoint(host: "127.0.0.1", port: port)),
            ForwardConfig(name: "api", mode: .expose(Endpoint(host: "127.0.0.1", port: 8081)), key: "test-key-7c2e1d9f3b5a4e6c8d0f2b4a",
                          server: Endpoint(host: "127.0.0.1", port: port)),
        ]
        return AgentConfig(drainTimeout: .zero, forwards: forwards, admin: admin)
    }

    @Test func theAgentAnswersStatusWhileItRunsAndRemovesItsSocketAfter() async throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/agent.sock"
        let agent = Agent(config: try Self.config(admin: .path(path)), logger: Logger(label: "test"))
        let running = Task { try await agent.run() }
        var status: AgentStatus?
        try await waitUntil("the agent answers on \(path)") {
            status = try? await AdminClient.status(at: path)
            return status != nil
        }
        #expect(status?.pid == SystemIO.processID)
        #expect(status?.admin == path)
        #expect(agent.adminPath == path)
        // In the config's order, each with its link.
        #expect(status?.forwards.map(\.name) == ["web", "api"])
        #expect(status?.forwards.allSatisfy { $0.mode == "expose" && $0.path == "none" && $0.uptimeSeconds == nil } == true)
        running.cancel()
        _ = try? await running.value
        #expect(SystemIO.fileStatus(path) == nil, "the socket outlived the agent")
    }

    @Test func aGivenPathThatIsInUseFailsTheStart() async throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/agent.sock"
        let other = try UnixSocket.listener(at: path)
        defer { other.close() }
        let agent = Agent(config: try Self.config(admin: .path(path)), logger: Logger(label: "test"))
        await #expect {
            try await agent.run()
        } throws: { error in
            (error as? AdminError)?.code == .inUse
        }
        #expect(SystemIO.fileStatus(path)?.kind == .socket, "the other socket was removed")
    }

    @Test func noAdminSocketWhenDisabled() async throws {
        let agent = Agent(config: try Self.config(admin: .disabled), logger: Logger(label: "test"))
        let running = Task { try await agent.run() }
        // The forwards start; the agent still answers status in process, without a socket.
        let status = await agent.status()
        #expect(status.forwards.count == 2)
        #expect(status.admin == "")
        #expect(agent.adminPath == nil)
        running.cancel()
        _ = try? await running.value
    }
}
