import StunturnTestSupport
@preconcurrency import Crypto
import Foundation
import StunturnSockets
import Testing

/// The repository root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The agent binary `swift build` made (or STUNTURN_AGENT).
let agentBinary: String = {
    if let path = ProcessInfo.processInfo.environment["STUNTURN_AGENT"] { return path }
    return repositoryRoot.appendingPathComponent(".build/debug/stunturn-agent").path
}()

/// A real `stunturn-agent` process whose stderr is kept in a file for assertions.
final class AgentProcess: @unchecked Sendable {
    let process = Process()
    let logURL: URL
    let name: String
    private let stdinPipe = Pipe()
    private let stdoutPipe = Pipe()

    /// `input`/`output`: files for the process's stdin and stdout instead of pipes; `environment`:
    /// variables set on top of the test's own.
    /// `executable`: another program than the agent (such as `ip netns exec NS agent ...`).
    init(_ name: String, _ arguments: [String], stdin: Bool = false, input: FileHandle? = nil, output: FileHandle? = nil,
         environment: [String: String] = [:], executable: String = agentBinary) throws {
        self.name = name
        logURL = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-\(name)-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardError = try FileHandle(forWritingTo: logURL)
        process.standardOutput = output ?? stdoutPipe
        process.standardInput = input ?? (stdin ? stdinPipe : FileHandle.nullDevice)
        try process.run()
    }

    /// Whatever happens to the test, the process does not outlive it.
    deinit {
        kill(process.processIdentifier, SIGKILL)
        var status: Int32 = 0
        waitpid(process.processIdentifier, &status, WNOHANG)
        try? FileManager.default.removeItem(at: logURL)
    }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }
    var stdinHandle: FileHandle { stdinPipe.fileHandleForWriting }
    var stdoutHandle: FileHandle { stdoutPipe.fileHandleForReading }

    /// Waits until the log contains `text`; records an issue with the log when it never does.
    @discardableResult
    /// Waits until `text` appears in the log (`count` times).
    func waitForLog(_ text: String, count: Int = 1, timeout: Duration = .seconds(20)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        func logged() -> Bool { log.components(separatedBy: text).count - 1 >= count }
        while ContinuousClock.now < deadline {
            if logged() { return true }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        if logged() { return true }
        Issue.record("\(name): '\(text)' not logged \(count) time(s) within \(timeout). Log:\n\(log)")
        return false
    }

    /// Sends SIGTERM (or `signal`) and waits for the exit status.
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM, timeout: Duration = .seconds(10)) async throws -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        return try await waitForExit(timeout: timeout)
    }

    func waitForExit(timeout: Duration = .seconds(10)) async throws -> Int32 {
        if let status = try await reap(process, timeout: timeout) { return status }
        kill(process.processIdentifier, SIGKILL)
        Issue.record("\(name) did not exit within \(timeout). Log:\n\(log)")
        return try await reap(process, timeout: .seconds(5)) ?? -1
    }
}

/// Runs the agent to completion and returns (status, stdout, stderr).
func runAgent(_ arguments: [String], timeout: Duration = .seconds(30), environment: [String: String] = [:]) async throws -> (Int32, String, String) {
    try await runProgram(agentBinary, arguments, timeout: timeout, environment: environment)
}

/// Runs a program to completion (killed after `timeout`) and returns (status, stdout, stderr).
func runProgram(_ path: String, _ arguments: [String], timeout: Duration, environment: [String: String] = [:]) async throws -> (Int32, String, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    async let outData = offPool { out.fileHandleForReading.readDataToEndOfFile() }
    async let errData = offPool { err.fileHandleForReading.readDataToEndOfFile() }
    var status = try await reap(process, timeout: timeout)
    if status == nil {
        kill(process.processIdentifier, SIGKILL)
        Issue.record("\(path) \(arguments.joined(separator: " ")) did not finish within \(timeout)")
        status = try await reap(process, timeout: .seconds(5))
    }
    return (status ?? -1, String(decoding: await outData, as: UTF8.self), String(decoding: await errData, as: UTF8.self))
}

/// Waits for a child to exit and returns its exit status (128+N for a signal), reaping it with
/// waitpid itself: Foundation's own reaping is not reliable inside the test runner.
func reap(_ process: Process, timeout: Duration) async throws -> Int32? {
    let pid = process.processIdentifier
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid {
            let signal = status & 0x7f
            return signal == 0 ? (status >> 8) & 0xff : 128 + signal
        }
        if result < 0 {
            // Foundation reaped it first.
            if !process.isRunning { return process.terminationStatus }
        }
        try await Task.sleep(for: .milliseconds(20))
    }
    return nil
}

/// Runs a blocking call on a Dispatch thread: blocking a thread of Swift's small cooperative pool
/// (two threads on two cores) would stall every other test running at the same time.
func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: body()) }
    }
}

/// A free TCP port on 127.0.0.1 whose UDP twin is free too (the server binds both).
///
/// Chosen below the kernel's ephemeral range (32768 and up by default): a port the kernel handed
/// out could meanwhile become the source port of some other test's outgoing connection, such as
/// an expose agent's 25 s long-poll, and a listen forward would then find it taken.
func freePort() throws -> UInt16 {
    for _ in 0..<200 {
        let port = PortTurns.next()
        guard let tcp = try? Socket.listener(on: .loopback(port: port)) else { continue }
        if let udp = try? Socket.udp(on: .loopback(port: port)) {
            udp.close()
            tcp.close()
            return port
        }
        tcp.close()
    }
    throw SocketError(.failed, call: "bind", reason: "no free port below the ephemeral range")
}

/// Hands out each port of 20000-31999 once per test process, from a random start: a port picked
/// at random could be picked again by a test running beside, between its check and the agent's
/// bind (tests in one process run in parallel).
private enum PortTurns {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var cursor = Int.random(in: 0..<12_000)

    static func next() -> UInt16 {
        lock.lock()
        defer { lock.unlock() }
        cursor = (cursor + 1) % 12_000
        return UInt16(20_000 + cursor)
    }
}

func newKey() -> String { UUID().uuidString.lowercased() }



/// Reads until the stream ends, keeping what arrived: the bytes, and the error that ended it
/// (nil for an orderly end; a time-out means it did not end).
func readUntilEnd(_ socket: Socket, timeout: Duration) async -> (bytes: [UInt8], failure: SocketError?) {
    var bytes: [UInt8] = []
    let deadline = ContinuousClock.now + timeout
    do {
        while true {
            let chunk = try await socket.readSome(until: deadline)
            if chunk.isEmpty { return (bytes, nil) }
            bytes += chunk
        }
    } catch let error as SocketError {
        return (bytes, error)
    } catch {
        return (bytes, SocketError(.failed, call: "read", reason: "\(error)"))
    }
}

/// A test service on loopback: first byte 'E' echoes, 'S' counts until EOF and answers "<count> <sha256>".
final class TestService: @unchecked Sendable {
    let address: SocketAddress
    private let listener: Socket
    private var task: Task<Void, Never>?
    private let lock = NSLock()
    private var accepted = 0
    private var received = 0

    init() throws {
        listener = try Socket.listener(on: .loopback())
        address = try listener.localAddress()
        let listener = self.listener
        task = Task.detached { [weak self] in
            await withDiscardingTaskGroup { group in
                // A failed accept (a connection reset before it was taken, descriptors briefly
                // exhausted by other suites) must not end the service: only closing it does.
                var failuresInARow = 0
                while listener.isOpen, !Task.isCancelled, failuresInARow < 500 {
                    do {
                        let (connection, _) = try await listener.accept(until: nil)
                        failuresInARow = 0
                        self?.lock.withLock { self?.accepted += 1 }
                        group.addTask { await self?.serve(connection) }
                    } catch {
                        failuresInARow += 1
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                }
            }
        }
    }

    deinit { task?.cancel(); listener.close() }

    /// Connections that reached the service at all.
    var connections: Int { lock.withLock { accepted } }
    /// Bytes that reached the service, in any mode.
    var bytesReceived: Int { lock.withLock { received } }

    private func serve(_ socket: Socket) async {
        defer { socket.close() }
        guard let mode = try? await socket.readExactly(1, until: .now + .seconds(60)) else { return }
        lock.withLock { received += 1 }
        var count = 0
        var hasher = SHA256()
        while let chunk = try? await socket.readSome(maxLength: 1 << 18, until: .now + .seconds(60)), !chunk.isEmpty {
            lock.withLock { received += chunk.count }
            if mode == [UInt8(ascii: "E")] {
                guard (try? await socket.writeAll(chunk, until: .now + .seconds(60))) != nil else { return }
            } else {
                count += chunk.count
                hasher.update(data: chunk)
            }
        }
        if mode == [UInt8(ascii: "S")] {
            try? await socket.writeAll(Array("\(count) \(hexDigest(hasher.finalize()))".utf8), until: .now + .seconds(30))
        }
    }
}

func hexDigest(_ digest: SHA256.Digest) -> String {
    digest.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}

func sha256(_ bytes: [UInt8]) -> String { hexDigest(SHA256.hash(data: bytes)) }

/// Echo one message through `address` on a fresh connection.
func echo(_ address: SocketAddress, _ text: String, timeout: Duration = .seconds(20)) async throws -> String {
    let socket = try await Socket.connect(to: address, timeout: .seconds(5))
    defer { socket.close() }
    let bytes = Array(text.utf8)
    try await socket.writeAll([UInt8(ascii: "E")] + bytes, until: .now + timeout)
    return String(decoding: try await socket.readExactly(bytes.count, until: .now + timeout), as: UTF8.self)
}

/// Reads until end-of-file.
/// Reads until the stream ends; the error that ended it, or nil for an orderly end.

func readToEnd(_ socket: Socket, timeout: Duration = .seconds(60)) async throws -> [UInt8] {
    var out: [UInt8] = []
    let deadline = ContinuousClock.now + timeout
    while true {
        let chunk = try await socket.readSome(maxLength: 1 << 20, until: deadline)
        if chunk.isEmpty { return out }
        out += chunk
    }
}

/// A signaling server plus an expose agent and a listen agent sharing one key, on loopback.
final class TunnelRig: @unchecked Sendable {
    let serverPort: UInt16
    let listenPort: UInt16
    let key: String
    let service: TestService
    var server: AgentProcess?
    var expose: AgentProcess?
    var listen: AgentProcess?
    let extra: [String]

    var listenAddress: SocketAddress { .loopback(port: listenPort) }
    var serverArgument: String { "127.0.0.1:\(serverPort)" }

    init(extra: [String] = [], service: TestService? = nil) throws {
        serverPort = try freePort()
        listenPort = try freePort()
        key = newKey()
        self.service = try service ?? TestService()
        self.extra = extra
    }

    func startServer() async throws {
        server = try AgentProcess("server", ["server", "--listen", serverArgument])
        try await server!.waitForLog("signaling server listening")
    }

    func startExpose(key: String? = nil, options: [String] = []) async throws {
        expose = try AgentProcess("expose", ["forward", "--expose", service.address.description, "--key", key ?? self.key,
                                             "--server", serverArgument, "--log-level", "debug"] + extra + options)
        try await expose!.waitForLog("exposing")
    }

    func startListen(key: String? = nil, signalTimeout: Int = 10, options: [String] = []) async throws {
        listen = try AgentProcess("listen", ["forward", "--listen", "127.0.0.1:\(listenPort)", "--key", key ?? self.key,
                                             "--server", serverArgument, "--signal-timeout", "\(signalTimeout)",
                                             "--log-level", "debug"] + extra + options)
        try await listen!.waitForLog("listening on")
    }

    func startAll() async throws {
        try await startServer()
        try await startExpose()
        try await startListen()
    }

    /// The last lines each process logged, for failure messages.
    var logs: String {
        [server, expose, listen].compactMap { $0 }.map { process in
            let lines = process.log.split(separator: "\n", omittingEmptySubsequences: false).suffix(40)
            return "--- \(process.name):\n" + lines.joined(separator: "\n")
        }.joined(separator: "\n")
    }

    func stopAll() async throws {
        for process in [listen, expose, server].compactMap({ $0 }) { try await process.stop() }
    }
}
