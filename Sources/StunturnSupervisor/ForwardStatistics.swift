import CoreMetrics
import StunturnRelay
import Synchronization

/// Counters for one forward, shared by its sessions, for `status` and, as Prometheus series, for
/// the metrics endpoint.
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

    /// Where the forward's link to its peer stands, for the status view.
    public struct Link: Sendable {
        public enum State: String, Sendable {
            case starting
            case waitingForPeer = "waiting for peer"
            case up
            case backingOff = "backing off"
        }
        public var state: State = .starting
        /// `direct`, `relay` or `none`.
        public var path = "none"
        /// The candidate type of the path: `host` or `srflx` (direct), `relay`; empty when down.
        public var candidate = ""
        public var peer = ""
        public var upSince: ContinuousClock.Instant?
        public var sessionsEstablished = 0
        public var setupsFailed = 0
        public var punchesTried = 0
        public var punchesFailed = 0
        public var pathChanges = 0
        public var lastError: String?
        public var lastErrorAt: ContinuousClock.Instant?
        /// The sessions up now: a forward's session, or an expose forward's sessions with each of its peers.
        public var sessions: [RelaySession] = []
    }

    private let value = Mutex(Snapshot())
    private let linkState = Mutex(Link())
    let metrics: ForwardMetrics
    /// The path each session up came up on, for the streams it carries and its end.
    private let sessionPaths = Mutex<[ObjectIdentifier: String]>([:])

    /// `forward` labels the series, which `factory` makes (the process's metrics backend unless given).
    public init(forward: String = "", metrics factory: any MetricsFactory = MetricsSystem.factory) {
        metrics = ForwardMetrics(forward: forward, factory: factory)
    }

    public var snapshot: Snapshot { value.withLock { $0 } }

    public var link: Link { linkState.withLock { $0 } }

    func updateLink(_ change: (inout Link) -> Void) { linkState.withLock { change(&$0) } }

    /// A session came up on `path`, `setup` after its setup began.
    func sessionUp(_ session: RelaySession, path: String, candidate: String, peer: String, setup: Duration? = nil) {
        sessionPaths.withLock { $0[ObjectIdentifier(session)] = path }
        metrics.sessionUp(path: path, setup: setup)
        linkState.withLock {
            if $0.path != path {
                $0.pathChanges += 1
                metrics.pathChanged()
            }
            $0.state = .up
            $0.path = path
            $0.candidate = candidate
            $0.peer = peer
            $0.upSince = $0.upSince ?? .now
            $0.sessionsEstablished += 1
            $0.sessions.append(session)
        }
    }

    /// A session ended; the link is down when it was the last.
    func sessionDown(_ session: RelaySession, reason: String?) {
        if let path = sessionPaths.withLock({ $0.removeValue(forKey: ObjectIdentifier(session)) }) {
            metrics.sessionDown(path: path)
        }
        linkState.withLock {
            $0.sessions.removeAll { $0 === session }
            if let reason {
                $0.lastError = reason
                $0.lastErrorAt = .now
            }
            if $0.sessions.isEmpty {
                $0.state = .waitingForPeer
                if $0.path != "none" {
                    $0.pathChanges += 1
                    metrics.pathChanged()
                }
                $0.path = "none"
                $0.candidate = ""
                $0.upSince = nil
            }
        }
    }

    /// A hole punch ended.
    func punched(failed: Bool) {
        linkState.withLock {
            $0.punchesTried += 1
            if failed { $0.punchesFailed += 1 }
        }
    }

    /// Between attempts to set a session up, when none is up.
    func backingOff() { linkState.withLock { if $0.sessions.isEmpty { $0.state = .backingOff } } }

    /// A session could not be set up.
    func setupFailed(_ reason: String) {
        metrics.setupFailed()
        linkState.withLock {
            $0.setupsFailed += 1
            $0.lastError = reason
            $0.lastErrorAt = .now
        }
    }

    /// The path `session` came up on, while it is up.
    func path(of session: RelaySession) -> String? {
        sessionPaths.withLock { $0[ObjectIdentifier(session)] }
    }

    func started() {
        value.withLock { $0.sessions += 1; $0.active += 1 }
        metrics.streamStarted()
    }
    func failedBeforeRelay() {
        value.withLock { $0.failed += 1; $0.active -= 1 }
        metrics.streamFailed()
    }
    /// A session could not be set up (no connection was waiting on it).
    func failedSetup() { value.withLock { $0.failed += 1 } }
    /// A connection ended after carrying `out` bytes to the peer and `received` from it on `path`.
    func finished(out: UInt64, in received: UInt64, path: String) {
        metrics.streamFinished(out: out, in: received, path: path)
        value.withLock {
            $0.active -= 1
            $0.bytesOut += out
            $0.bytesIn += received
        }
    }
}
