/// The multiplexer's state for one session, as a pure state machine: the session's owner feeds it
/// the peer's frames and the local side's writes, and sends the frames it hands out, in order.
///
/// No I/O, no clock of its own (times are passed in), so every rule is unit-tested: stream ids by
/// side, opening without a round trip (data rides on the SYN), half-close per direction, resets,
/// per-stream windows, round-robin sending, a cap on streams and on what the session buffers.
public struct MuxSession: Sendable {
    public enum Side: Sendable {
        /// Opens odd stream ids (the listen side, the tunnel's initiator).
        case initiator
        /// Opens even stream ids.
        case responder
    }

    /// What the peer's frames mean for the session's owner.
    public enum Event: Equatable, Sendable {
        /// The peer opened a stream; its first bytes may already be in `.data` events that follow.
        case opened(UInt32)
        /// Bytes for the local connection of a stream.
        case data(UInt32, [UInt8])
        /// The peer will send no more on the stream (half-close): end the local connection's input.
        case finished(UInt32)
        /// The stream ended abnormally: reset its local connection. The reason is the peer's.
        case reset(UInt32, ResetReason)
        /// The peer refused a stream this side opened (its service unreachable, too many streams).
        case refused(UInt32, ResetReason)
        /// A ping answer, with the value sent.
        case pong(UInt32)
        /// The peer ends the session.
        case goAway(MuxFrame.GoAwayReason)
    }

    struct Stream: Sendable {
        var receive: ReceiveWindow
        var send: SendWindow
        /// Bytes the local side wrote that wait for window or their turn.
        var outgoing: [UInt8] = []
        /// SYN (this side opened it) or ACK (the peer did) still to go out on the next frame.
        var pendingFlags: MuxFrame.Flags
        var localFinished = false
        var finSent = false
        var remoteFinished = false
        /// The peer has accepted the stream (always true for streams the peer opened).
        var acknowledged: Bool
    }

    public let side: Side
    public let maxStreams: Int
    /// Bytes the session holds for sending across all streams; writes past it are refused.
    public let maxBuffered: Int
    public let maxFramePayload: Int
    /// What all streams' receive windows may add up to through growth (each starts at 256 KiB).
    public let receiveBudget: Int
    private var streams: [UInt32: Stream] = [:]
    private var nextID: UInt32
    private var ready = RoundRobin<UInt32>()
    private var control: [MuxFrame] = []
    private var buffered = 0
    private var nextPing: UInt32 = 1

    public init(side: Side, maxStreams: Int = 1024, maxBuffered: Int = 32 << 20, maxFramePayload: Int = 64 * 1024,
                receiveBudget: Int = 32 << 20) {
        self.side = side
        self.receiveBudget = receiveBudget
        self.maxStreams = maxStreams
        self.maxBuffered = maxBuffered
        self.maxFramePayload = maxFramePayload
        nextID = side == .initiator ? 1 : 2
    }

    public var openStreams: Int { streams.count }

    // MARK: the local side

    /// Opens a stream; nil when `maxStreams` are open (the caller refuses the local connection).
    public mutating func openStream() -> UInt32? {
        guard streams.count < maxStreams else { return nil }
        let id = nextID
        nextID &+= 2
        streams[id] = Stream(receive: ReceiveWindow(), send: SendWindow(), pendingFlags: .syn, acknowledged: false)
        grantedWindows += ReceiveWindow.initial
        // The SYN goes out at once, with the first data if any is written before it is sent.
        ready.markReady(id)
        return id
    }

    /// Queues bytes from a stream's local connection; false when the session's buffer cap is
    /// reached (the caller stops reading that connection until frames have gone out).
    public mutating func write(_ id: UInt32, _ bytes: [UInt8]) -> Bool {
        guard var stream = streams[id], !stream.localFinished else { return false }
        guard buffered + bytes.count <= maxBuffered else { return false }
        stream.outgoing += bytes
        buffered += bytes.count
        streams[id] = stream
        ready.markReady(id)
        return true
    }

    /// The local connection ended its input: FIN after what is queued.
    public mutating func finish(_ id: UInt32) {
        guard var stream = streams[id], !stream.localFinished else { return }
        stream.localFinished = true
        streams[id] = stream
        ready.markReady(id)
    }

    /// The local connection broke: RST at once, with why, and the stream is gone.
    public mutating func reset(_ id: UInt32, reason: ResetReason = .unspecified) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        grantedWindows -= stream.receive.size
        buffered -= stream.outgoing.count
        ready.remove(id)
        control.append(MuxFrame.windowUpdate(id, delta: reason.rawValue, flags: .rst))
    }

    /// The local connection took `count` bytes of a stream's data; may queue a window update.
    /// Windows grow only while the sum of all streams' windows stays within `receiveBudget`, so
    /// what the peer may have in flight to this side, and so what it buffers, is bounded.
    public mutating func consumed(_ id: UInt32, _ count: Int, now: ContinuousClock.Instant, rtt: Duration?) {
        guard var stream = streams[id] else { return }
        let before = stream.receive.size
        if let delta = stream.receive.consumed(count, now: now, rtt: rtt, maxGrowth: max(0, receiveBudget - grantedWindows)) {
            control.append(.windowUpdate(id, delta: delta))
        }
        grantedWindows += stream.receive.size - before
        streams[id] = stream
    }

    /// The sum of every open stream's receive window.
    public private(set) var grantedWindows = 0

    private mutating func drop(_ id: UInt32) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        grantedWindows -= stream.receive.size
    }

    /// Whether `id` is open on this side (not yet ended both ways, not reset).
    public func contains(_ id: UInt32) -> Bool { streams[id] != nil }

    /// Bytes of a stream's data queued by `write` and not yet sent.
    public func queuedCount(_ id: UInt32) -> Int { streams[id]?.outgoing.count ?? 0 }

    /// How many bytes the owner may send on `id` right now in a Data frame of its own making
    /// (reading its local connection straight into the frame, with no copy through the queue):
    /// the stream's send window, up to one frame, and 0 while bytes queued by `write` or a FIN
    /// must go first.
    public func directAllowance(_ id: UInt32) -> Int {
        min(directCredit(id), maxFramePayload)
    }

    /// The same for several Data frames built at once (one read filling consecutive frames):
    /// the stream's whole send window, each frame still at most `maxFramePayload`.
    public func directCredit(_ id: UInt32) -> Int {
        guard let stream = streams[id], stream.outgoing.isEmpty, !stream.localFinished else { return 0 }
        return stream.send.credit
    }

    /// Accounts for a Data frame of `count` bytes the owner built itself on `id` (at most
    /// `directAllowance`), and returns the flags that frame must carry (the SYN or ACK still due).
    public mutating func sentDirect(_ id: UInt32, _ count: Int) -> MuxFrame.Flags {
        precondition(count <= maxFramePayload, "a direct frame larger than a frame may be")
        guard var stream = streams[id] else { return [] }
        let granted = stream.send.take(upTo: count)
        precondition(granted == count, "a direct frame past the stream's window")
        let flags = stream.pendingFlags
        stream.pendingFlags = []
        streams[id] = stream
        return flags
    }

    /// Ends the session on this side: every stream is dropped (the owner resets their local
    /// connections) and a GoAway with `reason` is the next frame.
    public mutating func goAway(_ reason: MuxFrame.GoAwayReason) {
        streams = [:]
        grantedWindows = 0
        ready = RoundRobin()
        buffered = 0
        control = [.goAway(reason)]
    }

    /// Queues a ping and returns its value, to match the answer and measure the round trip.
    public mutating func ping() -> UInt32 {
        let value = nextPing
        nextPing &+= 1
        control.append(.ping(value))
        return value
    }

    /// The next frame to send, control frames first, then streams in turn; nil when nothing can
    /// go out now (nothing queued, or every stream with data is out of window).
    public mutating func nextFrame() -> MuxFrame? {
        if !control.isEmpty { return control.removeFirst() }
        var skipped: [UInt32] = []
        defer { for id in skipped { ready.markReady(id) } }
        while let id = ready.next() {
            guard var stream = streams[id] else { continue }
            let granted = stream.send.take(upTo: min(stream.outgoing.count, maxFramePayload))
            let finNow = stream.localFinished && !stream.finSent && granted == stream.outgoing.count
            if granted == 0 && stream.pendingFlags.isEmpty && !finNow {
                // Out of window with data waiting: it goes out after the peer's update.
                if !stream.outgoing.isEmpty { skipped.append(id) }
                continue
            }
            let payload = Array(stream.outgoing.prefix(granted))
            stream.outgoing.removeFirst(granted)
            buffered -= granted
            var flags = stream.pendingFlags
            stream.pendingFlags = []
            if finNow {
                flags.insert(.fin)
                stream.finSent = true
            }
            if !stream.outgoing.isEmpty || (stream.localFinished && !stream.finSent) { ready.markReady(id) }
            let done = stream.finSent && stream.remoteFinished
            if done { drop(id) } else { streams[id] = stream }
            return .data(id, payload, flags: flags)
        }
        return nil
    }

    // MARK: the peer's frames

    /// Applies one frame from the peer. A protocol error ends the session: the caller sends
    /// GoAway(protocolError) and resets every stream.
    public mutating func receive(_ frame: MuxFrame) throws(MuxError) -> [Event] {
        try receive(frame, payloadCount: frame.payload.count, deliver: true)
    }

    /// Applies a Data frame's header before its payload (`frame.length` bytes) has arrived, for an
    /// owner that hands the payload to the stream itself as it comes in (no `.data` event). The
    /// window is charged for the whole payload now; a FIN on the frame is not applied: the owner
    /// passes it on with `receiveFin` once the payload has been delivered.
    public mutating func receiveDataHeader(_ frame: MuxFrame) throws(MuxError) -> [Event] {
        precondition(frame.kind == .data && frame.payload.isEmpty, "a data frame's header alone")
        var header = frame
        header.flags.remove(.fin)
        return try receive(header, payloadCount: Int(frame.length), deliver: false)
    }

    /// The FIN of a Data frame whose payload the owner delivered (see `receiveDataHeader`).
    public mutating func receiveFin(_ id: UInt32) throws(MuxError) -> [Event] {
        try receive(.data(id, [], flags: .fin))
    }

    private mutating func receive(_ frame: MuxFrame, payloadCount: Int, deliver: Bool) throws(MuxError) -> [Event] {
        switch frame.kind {
        case .ping:
            if frame.flags.contains(.ack) { return [.pong(frame.length)] }
            control.append(.ping(frame.length, answer: true))
            return []
        case .goAway:
            return [.goAway(MuxFrame.GoAwayReason(rawValue: frame.length) ?? .internalError)]
        case .data, .windowUpdate:
            break
        }
        let id = frame.streamID
        guard id != 0 else { throw MuxError(.badStreamID, "mux \(frame.kind) frame on stream 0") }
        var events: [Event] = []
        if frame.flags.contains(.syn) {
            guard (id % 2 == 1) == (side == .responder) else {
                throw MuxError(.badStreamID, "the peer opened stream \(id), which is this side's to open")
            }
            guard streams[id] == nil else { throw MuxError(.duplicateStream, "the peer opened stream \(id) twice") }
            guard streams.count < maxStreams else {
                // Not a protocol error: refuse this stream, keep the session.
                control.append(.windowUpdate(id, delta: ResetReason.streamLimit.rawValue, flags: .rst))
                return []
            }
            streams[id] = Stream(receive: ReceiveWindow(), send: SendWindow(), pendingFlags: .ack, acknowledged: true)
            grantedWindows += ReceiveWindow.initial
            ready.markReady(id)
            events.append(.opened(id))
        }
        guard var stream = streams[id] else {
            // Frames for a stream already reset or ended may still be in flight: drop them.
            return events
        }
        if frame.flags.contains(.rst) {
            drop(id)
            buffered -= stream.outgoing.count
            ready.remove(id)
            // An RST's length field carries why (0 from peers that do not say).
            let reason = ResetReason(rawValue: frame.length) ?? .unspecified
            events.append(stream.acknowledged ? .reset(id, reason) : .refused(id, reason))
            return events
        }
        if frame.flags.contains(.ack) { stream.acknowledged = true }
        if frame.kind == .windowUpdate {
            try stream.send.grant(frame.length)
            if !stream.outgoing.isEmpty { ready.markReady(id) }
        } else if payloadCount > 0 {
            guard !stream.remoteFinished else {
                throw MuxError(.dataAfterFin, "the peer sent data on stream \(id) after ending it")
            }
            try stream.receive.received(payloadCount)
            if deliver { events.append(.data(id, frame.payload)) }
        }
        if frame.flags.contains(.fin) && !stream.remoteFinished {
            stream.remoteFinished = true
            events.append(.finished(id))
        }
        if stream.finSent && stream.remoteFinished { drop(id) } else { streams[id] = stream }
        return events
    }
}

/// Why a stream was reset, carried in the RST frame's length field so both sides can log the cause
/// (yamux leaves the field 0 on an RST, which reads as `unspecified`).
public enum ResetReason: UInt32, Sendable, CustomStringConvertible {
    case unspecified = 0
    /// The exposed service refused the connection (nothing listens on its port).
    case serviceRefused = 1
    /// The exposed service could not be reached (no answer, no route, its name did not resolve).
    case serviceUnreachable = 2
    /// The application on that side reset its connection, or it failed there.
    case localReset = 3
    /// That side already carries as many streams as it allows (`max_streams`).
    case streamLimit = 4
    /// The stream was idle for the forward's idle time-out.
    case idle = 5
    /// That side's agent is shutting down or ending the session.
    case closing = 6

    public var description: String {
        switch self {
        case .unspecified: "no reason given"
        case .serviceRefused: "the exposed service refused the connection"
        case .serviceUnreachable: "the exposed service could not be reached"
        case .localReset: "the connection on that side was reset"
        case .streamLimit: "that side carries its most streams (max_streams)"
        case .idle: "idle for the forward's idle time-out"
        case .closing: "that side is closing the session"
        }
    }
}
