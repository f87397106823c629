import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The bridge from SIGINT/SIGTERM (Dispatch signal sources) to async/await.
public enum TerminationSignal {
    /// Waits for SIGINT or SIGTERM and returns its name, or nil when the task is cancelled; the
    /// default action (dying) is disabled so the caller can shut down gracefully.
    public static func wait() async -> String? {
        let waiter = SignalWaiter()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
                waiter.start(continuation)
            }
        } onCancel: {
            waiter.finish(nil)
        }
    }

    /// Ignores SIGHUP from now on. ssh hangs up its ProxyCommand as it exits, right after closing
    /// the command's stdin and stdout; dying then would cut the tunnel before it is ended in
    /// order, and the peer would take the session for a broken one. The end of stdin ends the
    /// session instead.
    public static func ignoreHangUp() {
        signal(SIGHUP, SIG_IGN)
    }

    /// Unblocks SIGINT and SIGTERM on the calling thread (call it from the main thread first thing).
    public static func unblock() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

}

/// One wait for a termination signal; every step runs on its own serial queue, so it resumes once.
private final class SignalWaiter: @unchecked Sendable {
    private let queue = DispatchQueue(label: "stunturn.signals")
    private var sources: [DispatchSourceSignal] = []
    private var continuation: CheckedContinuation<String?, Never>?
    private var outcome: String??

    func start(_ continuation: CheckedContinuation<String?, Never>) {
        queue.async { [self] in
            if let outcome {
                continuation.resume(returning: outcome)
                return
            }
            self.continuation = continuation
            for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler { [self] in finishOnQueue(name) }
                source.resume()
                sources.append(source)
            }
        }
    }

    func finish(_ value: String?) {
        queue.async { [self] in finishOnQueue(value) }
    }

    private func finishOnQueue(_ value: String?) {
        guard outcome == nil else { return }
        outcome = .some(value)
        // The signals stay ignored: a second Ctrl-C during shutdown must not kill the process.
        for source in sources { source.cancel() }
        sources = []
        continuation?.resume(returning: value)
        continuation = nil
    }
}
