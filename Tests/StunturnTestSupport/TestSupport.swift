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

/// Waits until `condition` holds, checking every 10 ms; throws naming `what` after `timeout`.
public func waitUntil(_ what: String, timeout: Duration = .seconds(10),
                      _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw SocketError(.timedOut, call: "wait", subject: what, reason: "not true within \(formatDuration(timeout))")
}
