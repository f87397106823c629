/// A session's liveness, from its pings: when to ping, the round trip the answers measure, and
/// when the peer has gone (three pings unanswered).
///
/// Pure: the session's owner says when a ping went out and when an answer came, with the time.
public struct Keepalive: Sendable {
    /// Between pings; YAML `keepalive`, 15 s by default.
    public let interval: Duration
    /// Unanswered pings that end the session.
    public let allowedMisses: Int
    /// The last measured round trip.
    public private(set) var roundTrip: Duration?
    private var outstanding: [(value: UInt32, sent: ContinuousClock.Instant)] = []
    private var lastPing: ContinuousClock.Instant?

    public init(interval: Duration = .seconds(15), allowedMisses: Int = 3) {
        self.interval = interval
        self.allowedMisses = allowedMisses
    }

    /// Whether a ping is due at `now`.
    public func pingDue(at now: ContinuousClock.Instant) -> Bool {
        guard let lastPing else { return true }
        return now - lastPing >= interval
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
        return rtt
    }

    /// True once `allowedMisses` pings went a whole interval each without an answer.
    public func peerGone(at now: ContinuousClock.Instant) -> Bool {
        let missed = outstanding.filter { now - $0.sent >= interval }.count
        return missed >= allowedMisses
    }
}
