/// One stream's receive window: how much the peer may send before this side has taken it.
///
/// Pure bookkeeping, driven by the session: `received` when a Data frame arrives (refused past the
/// credit given), `consumed` when the local connection has taken bytes, which says when to send a
/// WindowUpdate and how large. Updates go out once half the window is consumed, not when it hits
/// zero, so a sender never stalls waiting for one (rust-yamux #100). The window starts at 256 KiB
/// and doubles, up to 16 MiB, whenever a half-window was consumed within two round trips of the
/// previous update: then the window, not the reader, limits the stream (256 KiB at 50 ms caps a
/// stream near 40 Mbit/s). The round trip is the path's lowest (`Keepalive.lowestRoundTrip`):
/// whatever a window lets the sender put beyond what the path needs waits in the tunnel, in
/// front of every other stream's bytes, so a window sized by a round trip its own queue
/// lengthened would only grow that queue (16 MiB of a bulk stream on loopback held an
/// interactive stream's echo ~10 ms; now a loopback window stops at 2 MiB).
public struct ReceiveWindow: Sendable {
    public static let initial = 256 * 1024
    public static let maximum = 16 * 1024 * 1024

    /// The window the peer is allowed, in bytes.
    public private(set) var size: Int
    /// What the peer may still send without an update.
    public private(set) var credit: Int
    /// Bytes taken by the local side since the last update.
    public private(set) var consumedSinceUpdate = 0
    private var lastUpdate: ContinuousClock.Instant?
    private let maximum: Int

    public init(initial: Int = ReceiveWindow.initial, maximum: Int = ReceiveWindow.maximum) {
        precondition(initial > 0 && initial <= maximum, "window sizes")
        size = initial
        credit = initial
        self.maximum = maximum
    }

    /// Round trips shorter than this count as this long when deciding growth: a ping on an idle
    /// loopback or LAN path answers in tens of microseconds, while the data path's round trip
    /// (waking the sender, the kernel's socket buffers) is longer, and windows would never grow.
    /// At 250 us a loopback stream's window settles at 2 MiB (1 MiB a update, well ahead of the
    /// sender) and carries as much as at 16 MiB (BENCHMARKS.md, Sessions).
    public static let minimumRoundTrip: Duration = .microseconds(250)

    /// A Data frame of `count` bytes arrived; more than the credit is a protocol error.
    public mutating func received(_ count: Int) throws(MuxError) {
        guard count <= credit else {
            throw MuxError(.windowExceeded, "the peer sent \(count) bytes with \(credit) bytes of window left")
        }
        credit -= count
    }

    /// The local side took `count` bytes. Returns the WindowUpdate delta to send now, or nil while
    /// less than half the window has been taken. `rtt` is the path's lowest measured round trip.
    /// `maxGrowth` caps how much the window may grow now (the session's budget left).
    public mutating func consumed(_ count: Int, now: ContinuousClock.Instant, rtt: Duration?, maxGrowth: Int = .max) -> UInt32? {
        consumedSinceUpdate += count
        guard consumedSinceUpdate >= size / 2 else { return nil }
        var growth = 0
        if let rtt, let lastUpdate, size < maximum, now - lastUpdate < max(rtt, Self.minimumRoundTrip) * 2 {
            growth = min(size, maximum - size, maxGrowth)
            size += growth
        }
        let delta = consumedSinceUpdate + growth
        credit += delta
        consumedSinceUpdate = 0
        lastUpdate = now
        return UInt32(delta)
    }
}

/// One stream's send window: what the peer has said it will take.
public struct SendWindow: Sendable {
    public private(set) var credit: Int

    public init(initial: Int = ReceiveWindow.initial) {
        credit = initial
    }

    /// Takes up to `wanted` bytes of credit for one Data frame; 0 when the stream must wait.
    public mutating func take(upTo wanted: Int) -> Int {
        let granted = min(wanted, credit)
        credit -= granted
        return granted
    }

    /// A WindowUpdate arrived; a window past 2^32 - 1 bytes is a protocol error.
    public mutating func grant(_ delta: UInt32) throws(MuxError) {
        guard credit + Int(delta) <= Int(UInt32.max) else {
            throw MuxError(.windowOverflow, "window update of \(delta) bytes would pass 2^32 - 1")
        }
        credit += Int(delta)
    }
}

/// Streams with data to send, served in turn: each gets one frame's worth before the next, so a
/// bulk stream cannot hold back an interactive one.
public struct RoundRobin<ID: Hashable & Sendable>: Sendable {
    private var order: [ID] = []
    private var queued = Set<ID>()
    private var head = 0

    public init() {}

    public var isEmpty: Bool { queued.isEmpty }
    public var count: Int { queued.count }

    /// Queues `id` at the back unless it is already waiting.
    public mutating func markReady(_ id: ID) {
        guard queued.insert(id).inserted else { return }
        order.append(id)
    }

    /// The next stream to serve, taken off the queue; queue it again if it has more to send.
    public mutating func next() -> ID? {
        while head < order.count {
            let id = order[head]
            head += 1
            if queued.remove(id) != nil {
                compactIfNeeded()
                return id
            }
        }
        compactIfNeeded()
        return nil
    }

    /// Takes `id` off the queue (its stream ended).
    public mutating func remove(_ id: ID) {
        queued.remove(id)
    }

    private mutating func compactIfNeeded() {
        if head > 64 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }
}
