@testable import StunturnSockets
import Testing

/// A DNS lookup's waiter: cancellation ends the wait at once, and whichever outcome comes first
/// is the only one delivered.
@Suite struct PendingLookupTests {
    static let answer = [SocketAddress.loopback(port: 7000)]

    @Test func theAnswerResumesTheWaiter() async throws {
        let lookup = PendingLookup()
        let result = try await withCheckedThrowingContinuation { continuation in
            #expect(lookup.wait(continuation))
            lookup.finish(.success(Self.answer))
        }
        #expect(result == Self.answer)
    }

    @Test func aCancellationBeforeTheWaitEndsItAtOnceAndTheLateAnswerIsDropped() async {
        let lookup = PendingLookup()
        lookup.finish(.failure(SocketError(.cancelled, call: "resolve", subject: "slow.test:7000", reason: "cancelled")))
        do {
            _ = try await withCheckedThrowingContinuation { continuation in
                #expect(!lookup.wait(continuation), "the waiter should have been resumed at once")
                // The resolver answers late: a second resume would trap in the checked continuation.
                lookup.finish(.success(Self.answer))
            }
            Issue.record("a cancelled lookup returned an answer")
        } catch let error as SocketError {
            #expect(error.code == .cancelled)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func aCancelledTaskGetsNoAnswerFromTheResolver() async throws {
        // The task is cancelled before the lookup starts: the answer (localhost resolves at once
        // from /etc/hosts) must not be waited for, and must not come back.
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await SocketAddress.resolveAsync("localhost:7000")
        }
        do {
            let addresses = try await task.value
            Issue.record("a cancelled task resolved to \(addresses)")
        } catch let error as SocketError {
            #expect(error.code == .cancelled, "\(error)")
        }
    }
}
