import StunturnSockets

/// Counters for one forward, shared by its sessions.
public final class ForwardStatistics: @unchecked Sendable {
    public struct Snapshot: Sendable, CustomStringConvertible {
        public var sessions = 0
        public var active = 0
        public var failed = 0
        public var bytesOut: UInt64 = 0
        public var bytesIn: UInt64 = 0
        public var description: String {
            "\(sessions) sessions (\(active) active, \(failed) failed), \(bytesOut) bytes out, \(bytesIn) bytes in"
        }
    }

    private let lock = Lock()
    private var value = Snapshot()

    public init() {}

    public var snapshot: Snapshot { lock.withLock { value } }

    func started() { lock.withLock { value.sessions += 1; value.active += 1 } }
    func failedBeforeRelay() { lock.withLock { value.failed += 1; value.active -= 1 } }
    func finished(out: UInt64, in received: UInt64) {
        lock.withLock {
            value.active -= 1
            value.bytesOut += out
            value.bytesIn += received
        }
    }
}
