import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The bridge from SIGINT/SIGTERM (Dispatch signal sources) to async/await.
public enum TerminationSignal {
    /// Waits for SIGINT or SIGTERM and returns its name; the default action (dying) is disabled
    /// so the caller can shut down gracefully.
    public static func wait() async -> String {
        await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            let queue = DispatchQueue(label: "stunturn.signals")
            var sources: [DispatchSourceSignal] = []
            var resumed = false
            for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler {
                    guard !resumed else { return }
                    resumed = true
                    continuation.resume(returning: name)
                }
                source.resume()
                sources.append(source)
            }
            // The sources must outlive this call: they are process-wide and live until exit.
            TerminationSignal.retained = sources
        }
    }

    /// Unblocks SIGINT and SIGTERM on the calling thread (call it from the main thread first thing).
    public static func unblock() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    nonisolated(unsafe) static var retained: [DispatchSourceSignal] = []
}
