import Synchronization

/// Counters for one forward, shared by its sessions.
public final class ForwardStatistics: Sendable {
    public struct Snapshot: Sendable, CustomStringConvertible {
        public var sessions = 0
        public var active = 0
        public var failed = 0
        public var bytesOut: UInt64 = 0
        public var bytesIn: UInt64 = 0
        public var description: String {
            "\(sessions) connections (\(active) open, \(failed) failed), \(bytesOut) bytes out, \(bytesIn) bytes in"
        }
    }

    private let value = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { value.withLock { $0 } }

    func started() { value.withLock { $0.sessions += 1; $0.active += 1 } }
    func failedBeforeRelay() { value.withLock { $0.failed += 1; $0.active -= 1 } }
    /// A session could not be set up (no connection was waiting on it).
    func failedSetup() { value.withLock { $0.failed += 1 } }
    func finished(out: UInt64, in received: UInt64) {
        value.withLock {
            $0.active -= 1
            $0.bytesOut += out
            $0.bytesIn += received
        }
    }
}
