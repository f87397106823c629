import Logging
import ServiceLifecycle
import Synchronization

/// The agent's sessions and connections in flight, as one service that the group shuts down last.
///
/// Forwards hand their work to the pool and go on: each session with a peer (held until it ends;
/// its streams are the local connections), a listen side's connection waiting for its session,
/// a UDP flow. On graceful shutdown the pool takes no more work and waits for what it has (a
/// session drains: no new streams, and it ends once its last stream has); the group's drain
/// time-out then cancels the rest, which resets those connections at both ends.
final class ConnectionPool: Service, Sendable, CustomStringConvertible {
    var description: String { "connections" }

    typealias Work = @Sendable () async -> Void

    private let stream: AsyncStream<Work>
    private let continuation: AsyncStream<Work>.Continuation
    private let open = Atomic<Int>(0)
    private let logger: Logger

    init(logger: Logger) {
        (stream, continuation) = AsyncStream.makeStream(of: Work.self)
        self.logger = logger
    }

    /// Connections taken and not yet finished.
    var openCount: Int { open.load(ordering: .relaxed) }

    /// Runs `work` in the pool; false once the pool is shutting down (the caller closes its connection).
    func submit(_ work: @escaping Work) -> Bool {
        open.add(1, ordering: .relaxed)
        if case .enqueued = continuation.yield(work) { return true }
        open.subtract(1, ordering: .relaxed)
        return false
    }

    func run() async throws {
        let logger = self.logger
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withDiscardingTaskGroup { group in
                    for await work in stream {
                        group.addTask {
                            await work()
                            self.open.subtract(1, ordering: .relaxed)
                        }
                    }
                }
            } onGracefulShutdown: {
                self.continuation.finish()
            }
        } onCancel: {
            let open = self.openCount
            if open > 0 { logger.info("resetting what is still open (\(open) session(s) or waiting connection(s))") }
        }
    }
}
