/// A session's liveness, from its pings: when to ping, the round trip the answers measure, and
/// when the peer has gone.
///
/// A ping goes out every `interval`. One that is not answered within a probe time (four round
/// trips, at least a second) is followed by more at that spacing, so a path that died (a NAT that
/// forgot its mapping, a peer that vanished) is found about `interval` plus a few seconds after
/// its last sign of life, not after three whole intervals. The peer is gone once `allowedMisses`
/// pings are unanswered, the last for a probe time, and nothing at all has come from it for an
/// interval: a pong stuck behind a full queue of data does not end a session that is carrying it.
///
/// Pure: the session's owner says when a ping went out, when an answer came and when anything was
/// heard, with the time.
public struct Keepalive: Sendable {
    /// Between pings; YAML `keepalive`, 15 s by default.
    public let interval: Duration
    /// Unanswered pings that end the session.
    public let allowedMisses: Int
    /// The last measured round trip.
    public private(set) var roundTrip: Duration?
    /// The lowest round trip answered within the last `lowestRoundTripMemory`: the path's own,
    /// without the time a ping waited behind queued data. Windows grow by it (see
    /// `ReceiveWindow`): by the last one, a bulk stream's own queue would lengthen the round trip
    /// and so grow its window, which lengthens the queue. Forgotten after a while, so a path
    /// whose round trip rose for good (a handover, another route) grows windows by the new one.
    public var lowestRoundTrip: Duration? { recent.lazy.map(\.rtt).min() }
    /// How long an answer's round trip counts towards `lowestRoundTrip`.
    public static let lowestRoundTripMemory: Duration = .seconds(600)
    private var recent: [(at: ContinuousClock.Instant, rtt: Duration)] = []
    private var outstanding: [(value: UInt32, sent: ContinuousClock.Instant)] = []
    private var lastPing: ContinuousClock.Instant?
    private var lastHeard: ContinuousClock.Instant?

    public init(interval: Duration = .seconds(15), allowedMisses: Int = 3) {
        self.interval = interval
        self.allowedMisses = allowedMisses
    }

    /// How long an unanswered ping waits before the next probe: four round trips, at least a
    /// second, at most the interval.
    public var probeTime: Duration {
        min(interval, max(.seconds(1), (roundTrip ?? .zero) * 4))
    }

    /// Whether pings are unanswered past the probe time: the owner then checks more often.
    public func probing(at now: ContinuousClock.Instant) -> Bool {
        guard let oldest = outstanding.first else { return false }
        return now - oldest.sent >= probeTime
    }

    /// Whether a ping is due at `now`.
    public func pingDue(at now: ContinuousClock.Instant) -> Bool {
        guard let lastPing else { return true }
        return now - lastPing >= (outstanding.isEmpty ? interval : probeTime)
    }

    /// Something came from the peer at `now` (any bytes): it was alive then.
    public mutating func heard(at now: ContinuousClock.Instant) {
        lastHeard = now
    }

    /// A ping with `value` went out at `now`.
    public mutating func sent(_ value: UInt32, at now: ContinuousClock.Instant) {
        outstanding.append((value, now))
        lastPing = now
    }

    /// An answer came; returns the round trip it measured, nil for a value that was not asked.
    @discardableResult
    public mutating func answered(_ value: UInt32, at now: ContinuousClock.Instant) -> Duration? {
        guard let index = outstanding.firstIndex(where: { $0.value == value }) else { return nil }
        let rtt = now - outstanding[index].sent
        // An answer also vouches for every older ping: the path is alive.
        outstanding.removeFirst(index + 1)
        roundTrip = rtt
        recent.removeAll { now - $0.at > Self.lowestRoundTripMemory }
        if recent.count >= 64 { recent.removeFirst() }
        recent.append((now, rtt))
        return rtt
    }

    /// True once `allowedMisses` pings are unanswered, the last for a probe time, and nothing was
    /// heard from the peer for an interval.
    public func peerGone(at now: ContinuousClock.Instant) -> Bool {
        guard outstanding.count >= allowedMisses, let last = outstanding.last, now - last.sent >= probeTime else { return false }
        let silence = lastHeard.map { now - $0 } ?? (now - outstanding[0].sent)
        return silence >= interval
    }
}
