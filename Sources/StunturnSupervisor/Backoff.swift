/// Capped exponential back-off with full jitter, so many agents retrying at once do not
/// hammer a recovering server in lockstep.
public struct Backoff: Sendable {
    /// First delay: short, since most failures (a restarted server, a lost race) clear quickly.
    public var base: Duration = .milliseconds(200)
    /// Ceiling: a server that comes back is found again within this long.
    public var cap: Duration = .seconds(5)
    public private(set) var failures = 0

    public init(base: Duration = .milliseconds(200), cap: Duration = .seconds(5)) {
        self.base = base
        self.cap = cap
    }

    /// The next delay: a random point in [ceiling/2, ceiling] where the ceiling doubles per failure.
    public mutating func next() -> Duration {
        failures += 1
        let exponent = min(failures - 1, 20)
        let ceiling = min(cap, base * (1 << exponent))
        let nanos = Double(ceiling.components.seconds) * 1e9 + Double(ceiling.components.attoseconds) / 1e9
        return .nanoseconds(Int64(nanos * Double.random(in: 0.5...1.0)))
    }

    public mutating func reset() { failures = 0 }
}
