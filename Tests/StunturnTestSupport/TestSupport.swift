import StunturnServer
import StunturnSockets
import Synchronization
import Testing

/// A value shared between a test and the tasks or queues it starts.
public final class Locked<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>

    public init(_ value: Value) { storage = Mutex(value) }

    public var value: Value { storage.withLock { $0 } }

    @discardableResult
    public func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { storage.withLock { body(&$0) } }
}

/// Reads until the stream ends or fails; returns the failure (nil for an orderly end).
public func readUntilFailure(_ socket: Socket, timeout: Duration = .seconds(5)) async -> SocketError? {
    do {
        while try await !socket.readSome(until: .now + timeout).isEmpty {}
    } catch let error as SocketError {
        return error
    } catch {
        Issue.record("unexpected \(error)")
    }
    return nil
}

/// A condition a test waited for did not hold in time.
public struct ConditionTimedOut: Error, CustomStringConvertible {
    public let description: String
}

/// Polls `condition` every `interval` until it holds, so a test waits for what it needs rather
/// than for a fixed time; after `timeout` it throws, naming what was awaited (`what`, worded
/// when it throws, so it can tell the state then) and where.
public func waitUntil(_ what: @autoclosure () -> String = "the condition holds", timeout: Duration = .seconds(20),
                      interval: Duration = .milliseconds(10), sourceLocation: SourceLocation = #_sourceLocation,
                      _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else {
            throw ConditionTimedOut(description: "\(sourceLocation.fileName):\(sourceLocation.line): still waiting after \(timeout) until \(what())")
        }
        try await Task.sleep(for: interval)
    }
}

/// Connects as soon as a forward that is still coming up listens at `address`.
public func connectWithRetry(_ address: SocketAddress, timeout: Duration = .seconds(20),
                      sourceLocation: SourceLocation = #_sourceLocation) async throws -> Socket {
    var connected: Socket?
    var lastError: Error?
    try await waitUntil("\(address) accepts a connection (last error: \(lastError.map { "\($0)" } ?? "none"))",
                        timeout: timeout, interval: .milliseconds(25), sourceLocation: sourceLocation) {
        do { connected = try await Socket.connect(to: address, timeout: .seconds(2)) } catch { lastError = error }
        return connected != nil
    }
    return connected!
}

/// A real signaling server on 127.0.0.1:0 for the duration of `body`, with its `host:port`.
public func withServer<T>(_ options: RendezvousServer.Options = RendezvousServer.Options(),
                          _ body: (RendezvousServer, String) async throws -> T) async throws -> T {
    let server = RendezvousServer(listen: .loopback(.ipv4), options: options)
    try server.start()
    defer { server.stop() }
    return try await body(server, server.boundAddress.description)
}
