import Foundation
import Logging
import StunturnSockets
import StunturnTestSupport
import Testing
@testable import StunturnAdmin

/// A private directory for one test's sockets, short enough for a socket path, removed after.
final class ScratchDirectory: Sendable {
    let path: String

    init() throws {
        path = "/tmp/stunturn-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { "\(path)/\(name)" }
}

/// An admin server answering `status` with a fixed status, run in a task until `stop`.
final class RunningAdminServer: Sendable {
    let server: AdminServer
    private let task: Task<Void, Never>

    init(path: String, limits: AdminServer.Limits = AdminServer.Limits(),
         handler: AdminServer.Handler? = nil) throws {
        let server = try AdminServer(path: path, limits: limits, logger: Logger(label: "test.admin"),
                                     handler: handler ?? { _ in try StatusSamples.agent.encoded() + [UInt8(ascii: "\n")] })
        self.server = server
        task = Task { await server.run() }
    }

    /// Cancels the server and waits for it to close.
    func stop() async {
        task.cancel()
        await task.value
    }
}

@Suite(.timeLimit(.minutes(1))) struct AdminServerTests {
    @Test func aClientGetsTheStatus() async throws {
        let scratch = try ScratchDirectory()
        let running = try RunningAdminServer(path: scratch.file("a.sock"))
        let status = try await AdminClient.status(at: scratch.file("a.sock"))
        #expect(status == StatusSamples.agent)
        await running.stop()
    }

    @Test func theSocketIsPrivateAndRemovedWhenTheServerStops() async throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("a.sock")
        let running = try RunningAdminServer(path: path)
        let file = try #require(SystemIO.fileStatus(path))
        #expect(file.kind == .socket)
        #expect(file.permissions == 0o600)
        #expect(SystemIO.fileStatus(path + UnixSocket.stagingSuffix) == nil)
        await running.stop()
        #expect(SystemIO.fileStatus(path) == nil)
    }

    @Test func anUnknownRequestIsAnsweredWithAnError() async throws {
        let scratch = try ScratchDirectory()
        let running = try RunningAdminServer(path: scratch.file("a.sock"))
        let answer = try await exchange(scratch.file("a.sock"), Array("reboot\n".utf8))
        #expect(AdminProtocol.errorMessage(in: answer) == "unknown request 'reboot'; send one line naming a request: status, reload")
        await running.stop()
    }

    @Test func aHandlerErrorIsAnsweredAsAnError() async throws {
        struct Broken: Error, CustomStringConvertible { var description: String { "broken" } }
        let scratch = try ScratchDirectory()
        let running = try RunningAdminServer(path: scratch.file("a.sock")) { _ in throw Broken() }
        await #expect {
            try await AdminClient.status(at: scratch.file("a.sock"))
        } throws: { error in
            (error as? AdminError)?.code == .agentError && "\(error)".hasSuffix("answered: status failed: broken")
        }
        await running.stop()
    }

    @Test func aSilentClientIsAnsweredAndDroppedAfterTheRequestTimeout() async throws {
        let scratch = try ScratchDirectory()
        var limits = AdminServer.Limits()
        limits.requestTimeout = .milliseconds(200)
        let running = try RunningAdminServer(path: scratch.file("a.sock"), limits: limits)
        let client = try await UnixSocket.connect(to: scratch.file("a.sock"), until: .now + .seconds(5))
        defer { client.close() }
        let started = ContinuousClock.now
        let answer = try await readAll(client, within: .seconds(20))
        // Answered by its time-out, not held open (the bound is loose: suites run side by side).
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(AdminProtocol.errorMessage(in: answer) == "no request within 200ms; send one line naming a request: status, reload")
        await running.stop()
    }

    @Test func aFloodingClientIsReadOnlyUpToTheLimit() async throws {
        let scratch = try ScratchDirectory()
        let running = try RunningAdminServer(path: scratch.file("a.sock"))
        let client = try await UnixSocket.connect(to: scratch.file("a.sock"), until: .now + .seconds(5))
        defer { client.close() }
        // Far more than the socket buffers hold: the writer stops when the agent stops reading,
        // and fails once it has closed.
        let flood = Task { try? await client.writeAll([UInt8](repeating: UInt8(ascii: "s"), count: 8 << 20), until: .now + .seconds(10)) }
        let answer = try await readAll(client, within: .seconds(10))
        #expect(AdminProtocol.errorMessage(in: answer) == "request longer than 256 bytes; send one line naming a request: status, reload")
        client.close()
        await flood.value
        await running.stop()
    }

    @Test func clientsThatHoldEverySlotOnlyDelayTheNextOne() async throws {
        let scratch = try ScratchDirectory()
        var limits = AdminServer.Limits()
        limits.clients = 2
        limits.requestTimeout = .milliseconds(300)
        let running = try RunningAdminServer(path: scratch.file("a.sock"), limits: limits)
        var silent: [UnixSocket] = []
        for _ in 0..<6 { silent.append(try await UnixSocket.connect(to: scratch.file("a.sock"), until: .now + .seconds(5))) }
        defer { for socket in silent { socket.close() } }
        // Six silent clients, two at a time, 300 ms each: served within about a second, and well
        // within the client's own time-out even on a machine busy with other suites.
        let started = ContinuousClock.now
        let status = try await AdminClient.status(at: scratch.file("a.sock"), timeout: .seconds(20))
        #expect(status == StatusSamples.agent)
        #expect(ContinuousClock.now - started < .seconds(15))
        await running.stop()
    }

    @Test func aStaleSocketIsReplaced() async throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("a.sock")
        // A listener that closed without removing its file, as a killed agent leaves it.
        try UnixSocket.listener(at: path).close()
        #expect(SystemIO.fileStatus(path)?.kind == .socket)
        await #expect {
            try await AdminClient.status(at: path)
        } throws: { error in
            (error as? AdminError)?.code == .stale && "\(error)".contains(path)
        }
        let running = try RunningAdminServer(path: path)
        #expect(try await AdminClient.status(at: path) == StatusSamples.agent)
        await running.stop()
    }

    @Test func aLiveSocketOfAnotherServerIsLeftAlone() async throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("a.sock")
        let first = try RunningAdminServer(path: path)
        #expect {
            _ = try RunningAdminServer(path: path)
        } throws: { error in
            (error as? AdminError)?.code == .inUse && "\(error)".contains("admin socket \(path) is in use by another running agent")
        }
        #expect(try await AdminClient.status(at: path) == StatusSamples.agent)
        await first.stop()
    }

    @Test func aFileThatIsNotASocketIsLeftAlone() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("notes.txt")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: path))
        #expect {
            _ = try RunningAdminServer(path: path)
        } throws: { error in
            (error as? AdminError)?.code == .unusable && "\(error)".contains("\(path) exists and is not a socket")
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "keep me")
    }

    @Test func aServerDoesNotRemoveTheSocketThatReplacedItsOwn() async throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("a.sock")
        let first = try RunningAdminServer(path: path)
        SystemIO.removeFile(path)
        let successor = try UnixSocket.listener(at: path)
        defer { successor.close() }
        await first.stop()
        #expect(SystemIO.fileStatus(path)?.kind == .socket)
    }

    @Test func aMissingSocketIsNamedInTheError() async throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("nobody.sock")
        await #expect {
            try await AdminClient.status(at: path)
        } throws: { error in
            (error as? AdminError)?.code == .notFound && "\(error)" == "no admin socket at \(path): no agent is running with it"
        }
    }

    /// Sends `bytes` and returns the whole answer.
    private func exchange(_ path: String, _ bytes: [UInt8]) async throws -> [UInt8] {
        let client = try await UnixSocket.connect(to: path, until: .now + .seconds(5))
        defer { client.close() }
        try await client.writeAll(bytes, until: .now + .seconds(5))
        return try await readAll(client, within: .seconds(15))
    }

    /// Reads until the server closes. A server that closes with bytes of ours unread ends the
    /// connection with a reset, after its answer.
    private func readAll(_ socket: UnixSocket, within timeout: Duration) async throws -> [UInt8] {
        let deadline = ContinuousClock.now + timeout
        var bytes: [UInt8] = []
        while true {
            let chunk: [UInt8]
            do {
                chunk = try await socket.readSome(maxLength: 1 << 16, until: deadline)
            } catch let error as SocketError where error.isReset && !bytes.isEmpty {
                return bytes
            }
            if chunk.isEmpty { return bytes }
            bytes += chunk
        }
    }
}

@Suite struct AdminSocketDirectoryTests {
    @Test func theRuntimeDirectoryIsPreferredWhenItExists() throws {
        let scratch = try ScratchDirectory()
        #expect(AdminSocketDirectory.path(environment: ["XDG_RUNTIME_DIR": scratch.path], userID: 1000) == scratch.path + "/stunturn")
        #expect(AdminSocketDirectory.path(environment: ["XDG_RUNTIME_DIR": scratch.path + "/"], userID: 1000) == scratch.path + "/stunturn")
        #expect(AdminSocketDirectory.path(environment: ["XDG_RUNTIME_DIR": scratch.file("gone")], userID: 1000) == "/tmp/stunturn-1000")
        #expect(AdminSocketDirectory.path(environment: ["XDG_RUNTIME_DIR": "relative"], userID: 1000) == "/tmp/stunturn-1000")
        #expect(AdminSocketDirectory.path(environment: [:], userID: 1000) == "/tmp/stunturn-1000")
        #expect(AdminSocketDirectory.socketPath(forAgent: 77, in: "/tmp/stunturn-1000") == "/tmp/stunturn-1000/agent-77.sock")
    }

    @Test func theDirectoryIsMadePrivate() throws {
        let scratch = try ScratchDirectory()
        let directory = scratch.file("stunturn")
        try AdminSocketDirectory.prepare(directory)
        #expect(SystemIO.fileStatus(directory)?.permissions == 0o700)
        try SystemIO.setPermissions(directory, 0o755)
        try AdminSocketDirectory.prepare(directory)
        #expect(SystemIO.fileStatus(directory)?.permissions == 0o700)
    }

    @Test func aFileInTheDirectorysPlaceIsRefused() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("stunturn")
        try Data().write(to: URL(fileURLWithPath: path))
        #expect {
            try AdminSocketDirectory.prepare(path)
        } throws: { error in
            (error as? AdminError)?.code == .unusable && "\(error)".contains("\(path) is not a directory")
        }
    }

    @Test func agentSocketsAreListedByProcessIDAndOnlyStaleOnesRemoved() async throws {
        let scratch = try ScratchDirectory()
        let live = try RunningAdminServer(path: scratch.file("agent-100.sock"))
        try UnixSocket.listener(at: scratch.file("agent-20.sock")).close()
        try Data().write(to: URL(fileURLWithPath: scratch.file("agent-x.sock")))
        try Data().write(to: URL(fileURLWithPath: scratch.file("agent-30.sock")))
        try Data().write(to: URL(fileURLWithPath: scratch.file("notes.txt")))
        #expect(AdminSocketDirectory.agentSockets(in: scratch.path)
                == [scratch.file("agent-20.sock"), scratch.file("agent-30.sock"), scratch.file("agent-100.sock")])
        AdminSocketDirectory.removeStaleSockets(in: scratch.path)
        // The stale socket goes; a file that is not a socket stays, whatever its name.
        #expect(AdminSocketDirectory.agentSockets(in: scratch.path) == [scratch.file("agent-30.sock"), scratch.file("agent-100.sock")])
        #expect(FileManager.default.fileExists(atPath: scratch.file("notes.txt")))
        #expect(try await AdminClient.status(at: scratch.file("agent-100.sock")) == StatusSamples.agent)
        await live.stop()
    }
}
