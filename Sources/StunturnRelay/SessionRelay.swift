import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import StunturnMux
import StunturnSockets
import Synchronization

/// How a session behaves: its limits and its liveness checks.
public struct SessionOptions: Sendable {
    /// Streams open at once; past it a new local connection is refused (YAML `max_streams`).
    public var maxStreams: Int
    /// Between pings; three unanswered ones end the session (YAML `keepalive`).
    public var keepalive: Duration
    public var allowedMisses: Int
    /// A stream with no traffic either way for this long is reset (YAML `idle_timeout`).
    public var streamIdleTimeout: Duration?
    /// What the session may hold on the way to its local connections: streams' windows grow
    /// (from 256 KiB, up to 16 MiB each) only while all windows together stay within half of it.
    /// What a peer may send, and so what the session buffers, is bounded by the windows it was
    /// given: `maxStreams` x 256 KiB plus that growth; more is a protocol error. The tunnel is
    /// read whatever the streams' readers do: a stream receiving alone whose local connection is
    /// full holds it back only until that connection takes bytes again, 10 ms at most, so pings
    /// and window updates are never stuck behind a stopped reader.
    public var maxBuffered: Int

    public init(maxStreams: Int = 1024, keepalive: Duration = .seconds(15), allowedMisses: Int = 3,
                streamIdleTimeout: Duration? = nil, maxBuffered: Int = 32 << 20) {
        self.maxStreams = maxStreams
        self.keepalive = keepalive
        self.allowedMisses = allowedMisses
        self.streamIdleTimeout = streamIdleTimeout
        self.maxBuffered = maxBuffered
    }
}

/// How a session ended.
public struct SessionReport: Sendable, CustomStringConvertible {
    public var reason: String
    /// Ended in order: a GoAway from either side once no stream was left.
    public var clean: Bool
    /// Ended by its owner (`close`) rather than by the peer or the path.
    public var endedByOwner: Bool
    public var streamsCarried: Int
    public var duration: Duration

    public var description: String {
        "\(reason); \(streamsCarried) stream(s) carried in \(formatDuration(duration))"
    }
}

/// What a session is doing now.
public struct SessionStatus: Sendable {
    public var openStreams: Int
    public var streamsCarried: Int
    /// From the last answered ping.
    public var roundTrip: Duration?
    /// Wire bytes on the tunnel, each way.
    public var bytesSent: UInt64
    public var bytesReceived: UInt64
    /// Payload the streams open now have carried so far: read from their local connections and
    /// sent, and received and written to them.
    public var openStreamBytesSent: UInt64
    public var openStreamBytesReceived: UInt64

    public init(openStreams: Int = 0, streamsCarried: Int = 0, roundTrip: Duration? = nil, bytesSent: UInt64 = 0,
                bytesReceived: UInt64 = 0, openStreamBytesSent: UInt64 = 0, openStreamBytesReceived: UInt64 = 0) {
        self.openStreams = openStreams
        self.streamsCarried = streamsCarried
        self.roundTrip = roundTrip
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
        self.openStreamBytesSent = openStreamBytesSent
        self.openStreamBytesReceived = openStreamBytesReceived
    }
}

extension RelayEngine {
    /// Runs a multiplexed session on `tunnel` (an established, non-blocking socket to the peer,
    /// after the handshake): frames of `StunturnMux` inside the records `transform` seals and opens
    /// (`forward` seals, `backward` opens, `forwardEnd` writes the close record, `backwardEnd`
    /// judges the end), or plain frames when `transform` is nil.
    ///
    /// `onIncoming` runs on the relay's queue when the peer opens a stream: the owner answers with
    /// `attach` (its local connection) or `refuse`, from anywhere, later; without it, streams the
    /// peer opens are refused (the agent's listen side). `onRoundTrip` reports each ping's
    /// round trip. The session ends when the tunnel breaks, the peer stops answering pings, either
    /// side sends GoAway, or the owner closes or drains it; its streams are then reset.
    public func session(tunnel: Socket, peerName: String, side: MuxSession.Side, transform: RelayTransform?,
                        options: SessionOptions = SessionOptions(),
                        onIncoming: (@Sendable (RelaySession, UInt32) -> Void)? = nil,
                        connectIncoming: IncomingConnector? = nil,
                        onRoundTrip: (@Sendable (Duration) -> Void)? = nil) -> RelaySession {
        let worker = nextWorkerBound()
        let fd = tunnel.detach()
        let engine = SessionRelay(tunnelFD: fd, peerName: peerName, side: side, transform: transform, options: options,
                                  connector: connectIncoming, onRoundTrip: onRoundTrip)
        let handle = RelaySession(QueueBound(engine, on: worker.queue))
        worker.queue.async {
            let engine = handle.engine.value
            engine.handle = handle
            engine.onIncoming = onIncoming.map { callback in { [unowned handle] id in callback(handle, id) } }
            engine.start(on: worker.value)
        }
        return handle
    }
}

/// Where a session connects the streams the peer opens, itself, on its queue: a non-blocking
/// connect per stream, with no hop through a task (the exposing side's service).
public struct IncomingConnector: Sendable {
    public var address: SocketAddress
    /// A connect that has not completed by then fails the stream.
    public var timeout: Duration
    /// The local side's name in reports, such as "service 127.0.0.1:22".
    public var name: String
    /// Runs on the relay's queue once each stream has ended (`refused` when it never connected).
    public var onFinish: @Sendable (UInt32, RelayReport) -> Void
    /// Runs on the relay's queue when the peer opens a stream, before it is connected.
    public var onOpen: (@Sendable (UInt32) -> Void)?

    public init(address: SocketAddress, timeout: Duration, name: String, onFinish: @escaping @Sendable (UInt32, RelayReport) -> Void) {
        self.address = address
        self.timeout = timeout
        self.name = name
        self.onFinish = onFinish
    }
}

/// A handle on one session: open streams on it, answer the peer's, end it.
public final class RelaySession: Sendable {
    let engine: QueueBound<SessionRelay>
    private let end = AwaitedValue<SessionReport>()

    init(_ engine: QueueBound<SessionRelay>) { self.engine = engine }

    /// Carries `local` (a connected socket) as a new stream; `onFinish` runs once it has ended,
    /// with `refused` set when the session could not take it (stream limit, session over).
    public func open(_ local: Socket, name: String, onFinish: @escaping @Sendable (RelayReport) -> Void) {
        let fd = local.detach()
        engine.async { $0.openStream(fd: fd, name: name, onFinish: onFinish) }
    }

    /// Opens a stream for `local` and waits for the session's answer: nil once the stream is open,
    /// or why it was refused (then `onFinish` has run with `refused` set).
    public func tryOpen(_ local: Socket, name: String, onFinish: @escaping @Sendable (RelayReport) -> Void) async -> String? {
        let fd = local.detach()
        return await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            let answered = Mutex(false)
            let answer: @Sendable (String?) -> Void = { refusal in
                let first = answered.withLock { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: refusal) }
            }
            engine.async { engine in
                engine.openStream(fd: fd, name: name, onFinish: { report in
                    if report.refused { answer(report.reason) }
                    onFinish(report)
                }) { _ in answer(nil) }
            }
        }
    }

    /// Carries `local` as a stream until it ends; cancellation resets the stream.
    public func carry(_ local: Socket, name: String) async -> RelayReport {
        let fd = local.detach()
        let state = Mutex<(opened: UInt32?, cancelled: Bool)>((nil, false))
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                engine.async { engine in
                    engine.openStream(fd: fd, name: name, onFinish: { continuation.resume(returning: $0) }) { id in
                        let cancelled = state.withLock { state -> Bool in
                            state.opened = id
                            return state.cancelled
                        }
                        // Cancelled before the stream opened: it ends as soon as it begins.
                        if cancelled { engine.queueReset(id) }
                    }
                }
            }
        } onCancel: {
            let opened = state.withLock { state -> UInt32? in
                state.cancelled = true
                return state.opened
            }
            if let opened { engine.async { $0.resetStream(opened, reason: "closed by the agent") } }
        }
    }

    /// Carries `local` as the stream the peer opened (see `onIncoming`).
    public func attach(_ id: UInt32, _ local: Socket, name: String, onFinish: @escaping @Sendable (RelayReport) -> Void) {
        let fd = local.detach()
        engine.async { $0.attach(id, fd: fd, name: name, onFinish: onFinish) }
    }

    /// Refuses the stream the peer opened: it is reset.
    public func refuse(_ id: UInt32, reason: String) {
        engine.async { $0.refuse(id, reason: reason) }
    }

    /// Takes no new streams from now on (the peer's are refused, `open` reports refusal); once the
    /// last stream has ended the session ends in order with a GoAway.
    public func drain() {
        engine.async { $0.drain() }
    }

    /// Ends the session now: every stream is reset.
    public func close(reason: String) {
        engine.async { $0.close(reason: reason) }
    }

    /// Waits for the session to end.
    public var ended: SessionReport {
        get async {
            // Not cancellable, and the report is never closed: the wait ends only with it.
            await end.wait(cancellable: false)!
        }
    }

    /// Waits for the session to end; nil when the waiting task is cancelled first (the session
    /// goes on).
    public func endedUnlessCancelled() async -> SessionReport? {
        await end.wait()
    }

    /// True once the session has ended.
    public var isEnded: Bool { end.value != nil }

    public var status: SessionStatus {
        get async {
            await withCheckedContinuation { continuation in
                engine.async { continuation.resume(returning: $0.status) }
            }
        }
    }

    func finished(_ report: SessionReport) {
        end.set(report)
    }
}

/// One local connection carried as a stream.
final class LocalStream {
    let id: UInt32
    /// -1 until the owner attaches the local connection of a stream the peer opened.
    var fd: Int32 = -1
    var name: String
    var onFinish: (@Sendable (RelayReport) -> Void)?
    var armed = DescriptorPoller.Events()
    /// The local connection is still being made (a stream the peer opened, connected by the session).
    var connecting = false
    /// Watched for errors alone once already: not again.
    var hungUp = false
    /// When its local connection last kept the tunnel waiting for all of `maxTunnelDeferral` (its
    /// reader stopped): for `slowReaderMemory` after that, the tunnel is read past it while it is
    /// full, its bytes held in `toLocal`.
    var deferralRanOut: ContinuousClock.Instant?
    /// Its turn ended with bytes possibly left: the next one is queued on the worker, behind the
    /// reports and work already there, rather than asked of the poller.
    var turnQueued = false
    /// The local connection ended its input; the FIN is queued.
    var sawEOF = false
    var remoteFinished = false
    var shutDownWrite = false
    /// The peer's bytes not yet taken by the local connection.
    var toLocal: [[UInt8]] = []
    var toLocalOffset = 0
    var toLocalCount = 0
    var bytesOut: UInt64 = 0
    var bytesIn: UInt64 = 0
    let started = ContinuousClock.now
    var lastActivity = ContinuousClock.now

    init(id: UInt32, name: String, onFinish: (@Sendable (RelayReport) -> Void)?) {
        self.id = id
        self.name = name
        self.onFinish = onFinish
    }

    var attached: Bool { fd >= 0 }
}

/// A session's engine, on its worker's queue from `start` on: the tunnel's descriptor and every
/// stream's local connection in the worker's epoll set, the multiplexer's state, and the sealing.
final class SessionRelay: RelayClient {
    /// One Data frame's payload at most: 256 KiB with its header (the peer accepts up to 256 KiB
    /// of payload).
    static let framePayload = 256 * 1024 - MuxFrame.headerLength
    /// Data frames one read of a local connection fills, sealed and sent together: a quarter of
    /// the system calls of a read and a send per frame, which on loopback cost the sending agent
    /// about a fifth of its CPU time per GB (BENCHMARKS.md, Sessions). The tunnel is read in
    /// pieces of the same size.
    static let framesPerRead = 4
    static let readSize = framesPerRead * (MuxFrame.headerLength + framePayload)
    /// What one stream may send per readiness report before the others get their turn: large
    /// enough that a bulk stream is not paying an event per frame, small enough (a few
    /// milliseconds of sealing) that an interactive one waits little behind it.
    static let bytesPerTurn = 4 << 20
    /// How often a turn (or a run of tunnel reads) asks whether other work waits: what an
    /// interactive stream's bytes may wait behind a bulk stream's, at most, beyond one read (up to
    /// four frames, about a millisecond of sealing).
    static let waitCheckInterval: Duration = .microseconds(300)
    /// Reads of the tunnel per readiness report (of `readSize` each).
    static let maxTunnelReads = 8
    /// Payload pieces written with one call at most (well within IOV_MAX, 1024).
    static let maxGathered = 256
    /// How long a drained session waits for the peer to close after its GoAway.
    static let lingerTime: Duration = .seconds(2)
    /// The largest Data frame accepted from the peer.
    static let maxReceivedPayload = 256 * 1024
    /// How long a stream whose local connection is full may keep the tunnel unread. A reader that
    /// keeps up takes bytes again within a fraction of that, and the tunnel is read on then, as
    /// the per-connection relay did: more arrives per read and per wake-up, and nothing is copied
    /// to wait. A reader that stopped costs the other streams, pings and window updates this
    /// much once (see `slowReaderMemory`); then its stream's bytes are held, within its window,
    /// while the tunnel is read.
    static let maxTunnelDeferral: Duration = .milliseconds(10)
    /// How long the tunnel is read past a stream whose reader let a deferral run out: a stopped
    /// reader costs the others at most `maxTunnelDeferral` in this time, and a reader that was
    /// only late once (descheduled on a busy machine) is waited for again after it.
    static let slowReaderMemory: Duration = .seconds(1)
    /// How long the peer's bytes must have gone to one stream alone before its full local
    /// connection may hold the tunnel back: while several streams receive (an interactive one
    /// beside a bulk one), each stream's bytes are read past the others' backlog at once.
    static let soloTime: Duration = .milliseconds(250)

    private let tunnelFD: Int32
    private let peerName: String
    private let transform: RelayTransform?
    private let options: SessionOptions
    private let onRoundTrip: (@Sendable (Duration) -> Void)?
    private let connector: IncomingConnector?
    var onIncoming: ((UInt32) -> Void)?
    /// Set on the queue before `start`; the session's end is reported through it.
    var handle: RelaySession?

    private var worker: RelayWorker!
    private var mux: MuxSession
    /// The receive side's place in the frame stream: a header split across reads, or the Data
    /// payload still to come.
    private var headerBuffer: [UInt8] = []
    private var dataStream: UInt32 = 0
    private var dataRemaining = 0
    private var dataFin = false
    /// Consecutive payload pieces of one stream, gathered for one write.
    private var run: (stream: UInt32, pieces: [UnsafeRawBufferPointer]) = (0, [])
    private var keepalive: Keepalive
    private var streams: [UInt32: LocalStream] = [:]
    private var byFD: [Int32: UInt32] = [:]
    /// Streams whose reading stopped until their window opens again, or until the tunnel takes
    /// what it holds.
    private var waitingForWindow = Set<UInt32>()
    private var waitingForTunnel = Set<UInt32>()
    /// Streams whose next turn is queued on the worker. While there are any, the worker is busy
    /// sending and looks at the tunnel before each turn instead of being woken for what arrives
    /// (the peer's window updates, every few MiB of a bulk stream).
    private var queuedTurns = 0
    /// When `othersWaiting` last asked the poller.
    private var lastWaitCheck = ContinuousClock.now
    /// Sealed bytes the tunnel has not taken yet; local connections are not read meanwhile.
    private var tunnelOut: [UInt8] = []
    private var tunnelOutOffset = 0
    private var tunnelArmed = DescriptorPoller.Events()
    private var tunnelReading = true
    private var toLocalBuffered = 0
    /// The tunnel is not read while this stream's local connection is full, since `deferredSince`.
    private var deferredFor: UInt32?
    private var deferredSince = ContinuousClock.now
    private var deferralTimer: DispatchSourceTimer?
    private var deferralCheckPending = false
    /// The stream the peer's bytes went to last, and since when they have gone to it alone.
    private var lastDelivered: UInt32 = 0
    private var deliveringAloneSince = ContinuousClock.now
    /// Plaintext frames waiting to be sealed together.
    private var plain: [UInt8] = []
    private var timer: DispatchSourceTimer?
    /// The timer's usual period, and whether it runs faster while pings go unanswered.
    private var tickPeriod: Duration = .seconds(1)
    private var fastTicks = false
    /// `bytesReceived` as of the last tick, to tell the keepalive the peer was heard.
    private var bytesHeard: UInt64 = 0
    private var draining = false
    private var closeWhenFlushed = false
    /// This side's direction of the tunnel is over: nothing more may be sealed or sent.
    private var closeRecordSent = false
    /// Since when this side, having sent its GoAway, waits for the peer's end.
    private var lingerSince: ContinuousClock.Instant?
    /// Why the peer ended the session in order (its GoAway); streams still delivering finish.
    private var peerEnded: String?
    private var finished = false
    /// Counted among the worker's sessions (from `start` to `end`).
    private var countedOnWorker = false
    private var streamsCarried = 0
    private var bytesSent: UInt64 = 0
    private var bytesReceived: UInt64 = 0
    private let started = ContinuousClock.now

    init(tunnelFD: Int32, peerName: String, side: MuxSession.Side, transform: RelayTransform?, options: SessionOptions,
         connector: IncomingConnector?, onRoundTrip: (@Sendable (Duration) -> Void)?) {
        self.connector = connector
        self.tunnelFD = tunnelFD
        self.peerName = peerName
        self.transform = transform
        self.options = options
        self.onRoundTrip = onRoundTrip
        // Windows grow within half the buffer cap, so streams whose readers stopped cannot fill it
        // alone: the tunnel pauses only when very many stopped streams each hold a whole window.
        mux = MuxSession(side: side, maxStreams: options.maxStreams, maxFramePayload: SessionRelay.framePayload,
                         receiveBudget: options.maxBuffered / 2)
        keepalive = Keepalive(interval: options.keepalive, allowedMisses: options.allowedMisses)
    }

    var status: SessionStatus {
        SessionStatus(openStreams: streams.count, streamsCarried: streamsCarried, roundTrip: keepalive.roundTrip,
                      bytesSent: bytesSent, bytesReceived: bytesReceived,
                      openStreamBytesSent: streams.values.reduce(0) { $0 + $1.bytesOut },
                      openStreamBytesReceived: streams.values.reduce(0) { $0 + $1.bytesIn })
    }

    // MARK: start and end

    func start(on worker: RelayWorker) {
        self.worker = worker
        worker.sessionStarted()
        countedOnWorker = true
        do {
            try SystemIO.setNonBlocking(tunnelFD)
            _ = try worker.descriptorPoller()
        } catch {
            end("\(peerName): \(error)", clean: false)
            return
        }
        worker.connections[tunnelFD] = self
        updateTunnelInterest()
        guard !finished else { return }
        let period = max(Duration.milliseconds(50), min(options.keepalive / 2, (options.streamIdleTimeout ?? options.keepalive) / 4,
                                                        (connector?.timeout ?? options.keepalive) / 4))
        tickPeriod = period
        let timer = DispatchSource.makeTimerSource(queue: worker.queue)
        timer.schedule(deadline: .now(), repeating: period.dispatchInterval, leeway: .milliseconds(20))
        timer.setEventHandler { [unowned self] in self.tick() }
        self.timer = timer
        timer.resume()
    }

    private func tick() {
        guard !finished else { return }
        let now = ContinuousClock.now
        if let lingerSince {
            // The peer did not close after our GoAway: it has had its chance.
            if now - lingerSince >= SessionRelay.lingerTime { end("drained: no stream left", clean: true, byOwner: true) }
            return
        }
        if bytesReceived != bytesHeard {
            bytesHeard = bytesReceived
            keepalive.heard(at: now)
        }
        if peerEnded == nil && keepalive.peerGone(at: now) {
            end("the peer answered none of \(options.allowedMisses) pings and sent nothing for \(formatDuration(options.keepalive)) (keepalive)",
                clean: false)
            return
        }
        if peerEnded == nil && keepalive.pingDue(at: now) {
            keepalive.sent(mux.ping(), at: now)
        }
        // While pings go unanswered, look every half probe time; back to the usual pace after.
        let probing = keepalive.probing(at: now)
        if probing != fastTicks {
            fastTicks = probing
            let period = probing ? min(tickPeriod, keepalive.probeTime / 2) : tickPeriod
            timer?.schedule(deadline: .now() + period.dispatchInterval, repeating: period.dispatchInterval, leeway: .milliseconds(20))
        }
        if let connector {
            for stream in Array(streams.values) where stream.connecting && now - stream.started >= connector.timeout {
                refuseConnect(stream, "connect \(connector.address): no answer within \(formatDuration(connector.timeout))", refused: false)
            }
        }
        if let idle = options.streamIdleTimeout {
            for stream in Array(streams.values) where now - stream.lastActivity >= idle {
                mux.reset(stream.id, reason: .idle)
                finishStream(stream, reason: "idle for \(formatDuration(idle))", reset: true, byRelay: true)
            }
        }
        flush()
    }

    func drain() {
        guard !finished else { return }
        draining = true
        endIfDrained()
    }

    func close(reason: String) {
        guard !finished else { return }
        end(reason, clean: false, byOwner: true)
    }

    private func endIfDrained() {
        guard draining, streams.isEmpty, !finished, !closeRecordSent else { return }
        // The last streams' FINs go out first; the GoAway waits until the tunnel has taken them.
        flush()
        guard tunnelOutOffset >= tunnelOut.count else { return }
        mux.goAway(.normal)
        flush()
        sendCloseRecord()
        if tunnelOutOffset < tunnelOut.count {
            // The GoAway goes out before the descriptor closes; the writable report goes on.
            closeWhenFlushed = true
        } else {
            linger()
        }
    }

    /// After our GoAway and close record: this side's direction ends (a FIN, not a reset), and
    /// the session waits, briefly, for the peer's end, so that nothing the peer still sends meets a
    /// closed socket (whose reset could destroy the GoAway before the peer reads it).
    private func linger() {
        guard lingerSince == nil, !finished else { return }
        lingerSince = .now
        SystemIO.shutdownWrite(tunnelFD, isSocket: true)
        tunnelReading = true
        updateTunnelInterest()
    }

    private func sendCloseRecord() {
        closeRecordSent = true
        guard let transform else { return }
        do {
            let output = worker.outScratch(atLeast: transform.forwardEndCapacity)
            let produced = try transform.forwardEnd(into: output)
            sendSealed(UnsafeRawBufferPointer(rebasing: output[0..<produced]))
        } catch {
            // Already closed: nothing more to say.
        }
    }

    /// Ends the session: every stream still open is reset, the tunnel closed (reset unless the
    /// end was an orderly one), and the owner told why.
    private func end(_ reason: String, clean: Bool, byOwner: Bool = false, abortive: Bool? = nil) {
        guard !finished else { return }
        finished = true
        for stream in Array(streams.values) {
            finishStream(stream, reason: "session ended: \(reason)", reset: true, byRelay: byOwner)
        }
        timer?.cancel()
        timer = nil
        deferralTimer?.cancel()
        deferralTimer = nil
        deferredFor = nil
        if let poller = try? worker?.descriptorPoller() { poller.forget(tunnelFD) }
        if worker?.connections[tunnelFD] === self { worker.connections[tunnelFD] = nil }
        if countedOnWorker {
            countedOnWorker = false
            worker.sessionEnded()
        }
        if abortive ?? !clean {
            try? SystemIO.resetOnClose(tunnelFD)
        } else {
            SystemIO.shutdownWrite(tunnelFD, isSocket: true)
        }
        SystemIO.close(tunnelFD)
        let report = SessionReport(reason: reason, clean: clean, endedByOwner: byOwner, streamsCarried: streamsCarried,
                                   duration: ContinuousClock.now - started)
        onIncoming = nil
        let handle = self.handle
        self.handle = nil
        handle?.finished(report)
    }

    // MARK: streams from the owner

    func openStream(fd: Int32, name: String, onFinish: @escaping @Sendable (RelayReport) -> Void,
                    opened: ((UInt32) -> Void)? = nil) {
        let refusal: String?
        if finished {
            refusal = "the session has ended"
        } else if draining {
            refusal = "the session is draining"
        } else if let peerEnded {
            refusal = peerEnded
        } else if streams.count >= options.maxStreams {
            refusal = "the session carries \(streams.count) streams, its limit (max_streams)"
        } else {
            refusal = nil
        }
        guard let id = refusal == nil ? mux.openStream() : nil else {
            refuseLocal(fd: fd, name: name, reason: refusal ?? "the session carries its limit of streams (max_streams)", onFinish: onFinish)
            return
        }
        let stream = LocalStream(id: id, name: name, onFinish: onFinish)
        streams[id] = stream
        streamsCarried += 1
        opened?(id)
        attachDescriptor(fd, to: stream)
        // The SYN goes out now; the first data follows at once, without waiting for the ACK.
        flush()
    }

    func attach(_ id: UInt32, fd: Int32, name: String, onFinish: @escaping @Sendable (RelayReport) -> Void) {
        guard !finished, let stream = streams[id], !stream.attached else {
            // The peer reset the stream, or the session ended, while the connection was made.
            refuseLocal(fd: fd, name: name, reason: finished ? "the session has ended" : "the peer reset the stream", onFinish: onFinish)
            return
        }
        stream.name = name
        stream.onFinish = onFinish
        attachDescriptor(fd, to: stream)
        writeLocal(stream)
        flush()
    }

    /// Resets a stream later on the queue, once the call that opened it has returned.
    func queueReset(_ id: UInt32) {
        QueueBound(self, on: worker.queue).async { $0.resetStream(id, reason: "closed by the agent") }
    }

    /// Resets a stream from this side (its owner gave up on it).
    func resetStream(_ id: UInt32, reason: String) {
        guard !finished, let stream = streams[id] else { return }
        mux.reset(id, reason: .closing)
        finishStream(stream, reason: reason, reset: true, byRelay: true)
        flush()
    }

    func refuse(_ id: UInt32, reason: String) {
        guard !finished, let stream = streams[id] else { return }
        mux.reset(id)
        finishStream(stream, reason: reason, reset: true, byRelay: false)
        flush()
    }

    private func refuseLocal(fd: Int32, name: String, reason: String, onFinish: @Sendable (RelayReport) -> Void) {
        try? SystemIO.resetOnClose(fd)
        SystemIO.close(fd)
        var report = RelayReport(bytesAToB: 0, bytesBToA: 0, duration: .zero, reason: "refused: \(reason)", clean: false,
                                 reset: true, endedByRelay: true)
        report.refused = true
        onFinish(report)
    }

    private func attachDescriptor(_ fd: Int32, to stream: LocalStream) {
        do {
            try SystemIO.setNonBlocking(fd)
        } catch {
            SystemIO.close(fd)
            mux.reset(stream.id)
            finishStream(stream, reason: "\(stream.name): \(error)", reset: true, byRelay: false)
            return
        }
        stream.fd = fd
        byFD[fd] = stream.id
        worker.connections[fd] = self
        updateInterest(stream)
    }

    /// Starts the non-blocking connect of a stream the peer opened; its bytes wait in the stream
    /// until it completes.
    private func connect(_ stream: LocalStream, with connector: IncomingConnector) {
        connector.onOpen?(stream.id)
        stream.name = connector.name
        stream.onFinish = { [id = stream.id] report in connector.onFinish(id, report) }
        do {
            let socket = try Socket(.stream, family: connector.address.family)
            let done = try socket.connect(to: connector.address)
            stream.connecting = !done
            attachDescriptor(socket.detach(), to: stream)
        } catch {
            refuseConnect(stream, "\(error)", refused: (error as? SocketError)?.isConnectionRefused == true)
        }
    }

    /// The connect finished; `code` is the socket's pending error (read once: reading clears it).
    private func connected(_ stream: LocalStream, code: Int32) {
        guard code == 0 else {
            let error = SocketError(call: "connect", subject: "\(connector?.address.description ?? "")", errno: code)
            refuseConnect(stream, "\(error)", refused: error.isConnectionRefused)
            return
        }
        stream.connecting = false
        stream.lastActivity = .now
        writeLocal(stream)
    }

    /// The exposed service could not be reached: the stream is reset, the peer told, and the
    /// report says why (`refused`: nothing was carried).
    private func refuseConnect(_ stream: LocalStream, _ reason: String, refused: Bool) {
        mux.reset(stream.id, reason: refused ? .serviceRefused : .serviceUnreachable)
        finishStream(stream, reason: "cannot reach the exposed service: \(reason)", reset: true, byRelay: false, refused: true)
    }

    // MARK: readiness

    func ready(_ fd: Int32, _ events: DescriptorPoller.Events) {
        guard !finished else { return }
        if fd == tunnelFD {
            tunnelArmed = []
            if events.contains(.writable) { tunnelWritable() }
            if events.contains(.readable) { tunnelReadable() }
            if !finished { updateTunnelInterest() }
        } else if let id = byFD[fd], let stream = streams[id] {
            stream.armed = []
            if stream.connecting {
                // Only a writable report on a socket that has a peer is a finished connect (a
                // report may be a stale one, for an earlier socket under the same number).
                if events.contains(.writable) {
                    let code = SystemIO.pendingError(fd)
                    if code != 0 || SystemIO.isConnected(fd) { connected(stream, code: code) }
                }
                if streams[id] != nil { updateInterest(stream) }
                flush()
                return
            }
            if stream.sawEOF && stream.toLocalCount == 0 && !stream.shutDownWrite {
                // Only errors are watched now (see updateInterest): a reset of the local side.
                let code = SystemIO.pendingError(fd)
                if code != 0 {
                    mux.reset(stream.id, reason: .localReset)
                    finishStream(stream, reason: "\(stream.name): \(SocketError(call: "recv", errno: code))", reset: true, byRelay: false)
                } else {
                    stream.hungUp = true
                }
                flush()
                return
            }
            if events.contains(.writable) && stream.toLocalCount > 0 { writeLocal(stream) }
            if events.contains(.readable) && streams[id] != nil { readLocal(stream) }
            if streams[id] != nil { updateInterest(stream) }
            if deferredFor == id && stream.toLocalCount == 0 { resumeTunnel() }
        }
        flush()
    }

    private func updateTunnelInterest() {
        guard !finished else { return }
        var wanted = DescriptorPoller.Events()
        if tunnelReading && deferredFor == nil && queuedTurns == 0 { wanted.insert(.readable) }
        if tunnelOutOffset < tunnelOut.count { wanted.insert(.writable) }
        guard wanted != tunnelArmed, !wanted.isEmpty else { return }
        do {
            _ = try worker.descriptorPoller().watch(tunnelFD, for: wanted)
            tunnelArmed = wanted
        } catch {
            end("\(peerName): \(error)", clean: false)
        }
    }

    private func updateInterest(_ stream: LocalStream) {
        guard stream.attached, !finished else { return }
        var wanted = DescriptorPoller.Events()
        if stream.connecting {
            wanted = .writable
        } else {
            if !stream.sawEOF && !stream.turnQueued && !waitingForWindow.contains(stream.id) && !waitingForTunnel.contains(stream.id) {
                wanted.insert(.readable)
            }
            if stream.toLocalCount > 0 { wanted.insert(.writable) }
        }
        // A connection that ended its input and has nothing to take is still watched for errors,
        // so its reset is noticed while the peer's side stays open (once: a hang-up without an
        // error would be reported again and again).
        let watchErrors = wanted.isEmpty && stream.sawEOF && !stream.shutDownWrite && !stream.hungUp && stream.armed.isEmpty
        guard wanted != stream.armed, !wanted.isEmpty || watchErrors else { return }
        if watchErrors { stream.hungUp = true }
        do {
            _ = try worker.descriptorPoller().watch(stream.fd, for: wanted)
            stream.armed = wanted
        } catch {
            mux.reset(stream.id)
            finishStream(stream, reason: "\(stream.name): \(error)", reset: true, byRelay: false)
        }
    }

    // MARK: local connections to the tunnel

    /// Reads the local connection straight into Data frames (room for each header, then the bytes
    /// read after it in the same buffer, up to four frames a read), sealing and sending what each
    /// read filled at once, until the connection
    /// would block, its window is spent, the tunnel is full, or this turn's budget is used (then
    /// the other streams get theirs before it reads again).
    private func readLocal(_ stream: LocalStream) {
        guard stream.attached, !stream.connecting, !stream.sawEOF else { return }
        let scratch = worker.sessionScratch(SessionRelay.readSize)
        var budget = SessionRelay.bytesPerTurn
        turn: while budget > 0 && !finished {
            guard tunnelOutOffset >= tunnelOut.count else {
                waitingForTunnel.insert(stream.id)
                return
            }
            let slot = MuxFrame.headerLength + SessionRelay.framePayload
            let allowance = min(mux.directCredit(stream.id), SessionRelay.framesPerRead * SessionRelay.framePayload)
            guard allowance > 0 else {
                waitingForWindow.insert(stream.id)
                return
            }
            // One read fills up to four frames' payloads, each after the room for its header:
            // [header][payload][header][payload]..., a frame's payload full before the next begins.
            let frames = (allowance + SessionRelay.framePayload - 1) / SessionRelay.framePayload
            let result: ReadResult
            do {
                result = try withUnsafeTemporaryAllocation(of: iovec.self, capacity: frames) { vectors in
                    for k in 0..<frames {
                        let length = min(SessionRelay.framePayload, allowance - k * SessionRelay.framePayload)
                        vectors[k] = iovec(iov_base: scratch.baseAddress! + k * slot + MuxFrame.headerLength, iov_len: length)
                    }
                    return try SystemIO.read(stream.fd, scattering: vectors)
                }
            } catch {
                mux.reset(stream.id, reason: .localReset)
                finishStream(stream, reason: "\(stream.name): \(error)", reset: true, byRelay: false)
                return
            }
            switch result {
            case .wouldBlock:
                return
            case .endOfFile:
                stream.sawEOF = true
                mux.finish(stream.id)
                completeIfDone(stream)
                return
            case .bytes(let n):
                var end = 0
                for k in 0..<((n + SessionRelay.framePayload - 1) / SessionRelay.framePayload) {
                    let length = min(SessionRelay.framePayload, n - k * SessionRelay.framePayload)
                    let flags = mux.sentDirect(stream.id, length)
                    MuxFrame.writeHeader(kind: .data, flags: flags, streamID: stream.id, length: UInt32(length),
                                         into: UnsafeMutableRawBufferPointer(rebasing: scratch[(k * slot)...]))
                    end = k * slot + MuxFrame.headerLength + length
                }
                stream.bytesOut += UInt64(n)
                stream.lastActivity = .now
                sealAndSend(UnsafeRawBufferPointer(rebasing: scratch[0..<end]))
                budget -= n
                // A short read drained the socket: wait for its next report rather than read again.
                if n < allowance { return }
                // Another stream's bytes or the peer's frames wait: they go first, this turn
                // goes on after them, so they wait one read's sealing, not a whole turn's.
                if budget > 0 && othersWaiting(includingTunnel: true) { break turn }
            }
        }
        if !finished { queueTurn(stream) }
    }

    /// Whether the worker has a readiness report waiting, or (`includingTunnel`) the tunnel, read
    /// but not watched while turns are queued, has bytes. Asked between frames of a turn, at most
    /// every `waitCheckInterval`: a system call (`poll`) every few frames of 256 KiB, where an
    /// interactive stream would otherwise wait out the whole turn.
    private func othersWaiting(includingTunnel: Bool) -> Bool {
        let now = ContinuousClock.now
        guard now - lastWaitCheck >= SessionRelay.waitCheckInterval else { return false }
        lastWaitCheck = now
        guard let poller = try? worker.descriptorPoller() else { return false }
        let tunnelUnwatched = includingTunnel && tunnelReading && deferredFor == nil && !tunnelArmed.contains(.readable)
        return poller.hasWork(orReadable: tunnelUnwatched ? tunnelFD : -1)
    }

    /// Queues the stream's next turn after what the worker already has to do (the other streams'
    /// reports among it), as the per-connection relay did: no round trip through the poller for a
    /// connection that is still readable.
    private func queueTurn(_ stream: LocalStream) {
        guard !stream.turnQueued else { return }
        stream.turnQueued = true
        queuedTurns += 1
        let id = stream.id
        QueueBound(self, on: worker.queue).async { $0.nextTurn(id) }
    }

    private func nextTurn(_ id: UInt32) {
        guard !finished, let stream = streams[id], stream.turnQueued else { return }
        stream.turnQueued = false
        queuedTurns -= 1
        // Unwatched while turns are queued: what the peer sent meanwhile is read now.
        if !tunnelArmed.contains(.readable) { tunnelReadable() }
        if streams[id] != nil && !finished {
            readLocal(stream)
            if streams[id] != nil { updateInterest(stream) }
        }
        updateTunnelInterest()
        flush()
    }

    /// Sends the frames the multiplexer has queued (SYNs, FINs, resets, window updates, pings),
    /// sealed together, while the tunnel takes them.
    private func flush() {
        guard !finished, !closeRecordSent else { return }
        while tunnelOutOffset >= tunnelOut.count, let frame = mux.nextFrame() {
            frame.encode(appendingTo: &plain)
            if plain.count >= 64 * 1024 {
                flushPlain()
            }
        }
        flushPlain()
    }

    private func flushPlain() {
        guard !plain.isEmpty else { return }
        plain.withUnsafeBytes { sealAndSend($0) }
        plain.removeAll(keepingCapacity: plain.capacity <= 256 * 1024)
    }

    private func sealAndSend(_ plaintext: UnsafeRawBufferPointer) {
        guard !plaintext.isEmpty, !finished, !closeRecordSent else { return }
        guard let transform else {
            sendSealed(plaintext)
            return
        }
        let output = worker.outScratch(atLeast: transform.forwardCapacity(forInputCount: plaintext.count))
        do {
            let produced = try transform.forward(plaintext, into: output)
            sendSealed(UnsafeRawBufferPointer(rebasing: output[0..<produced]))
        } catch {
            end("sealing failed: \(error)", clean: false)
        }
    }

    /// Writes wire bytes to the tunnel in order; what it does not take now waits in `tunnelOut`.
    private func sendSealed(_ bytes: UnsafeRawBufferPointer) {
        guard !finished, !bytes.isEmpty else { return }
        if tunnelOutOffset < tunnelOut.count {
            tunnelOut.append(contentsOf: bytes)
            return
        }
        guard let offset = writeToTunnel(bytes) else { return }
        if offset < bytes.count {
            tunnelOut.removeAll(keepingCapacity: true)
            tunnelOut.append(contentsOf: bytes[offset...])
            tunnelOutOffset = 0
            updateTunnelInterest()
        }
    }

    /// Writes as much of `bytes` as the tunnel takes now and returns how much that was; nil when
    /// the write failed (the session has then ended).
    private func writeToTunnel(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var offset = 0
        while offset < bytes.count {
            let written: Int?
            do {
                written = try SystemIO.write(tunnelFD, UnsafeRawBufferPointer(rebasing: bytes[offset...]), isSocket: true)
            } catch {
                end("\(peerName): \(error)", clean: false)
                return nil
            }
            guard let written else { break }
            offset += written
            bytesSent += UInt64(written)
        }
        return offset
    }

    private func tunnelWritable() {
        let start = tunnelOutOffset
        guard let written = tunnelOut.withUnsafeBytes({ writeToTunnel(UnsafeRawBufferPointer(rebasing: $0[start...])) }) else { return }
        tunnelOutOffset += written
        guard tunnelOutOffset >= tunnelOut.count else { return }
        tunnelOut.removeAll(keepingCapacity: tunnelOut.capacity <= 2 << 20)
        tunnelOutOffset = 0
        if closeWhenFlushed {
            linger()
            return
        }
        endIfDrained()
        if finished { return }
        // Streams that stopped because the tunnel was full read again now, in turn.
        let waiting = waitingForTunnel
        waitingForTunnel.removeAll(keepingCapacity: true)
        for id in waiting {
            guard let stream = streams[id], !finished else { continue }
            if tunnelOutOffset >= tunnelOut.count { readLocal(stream) }
            if streams[id] != nil { updateInterest(stream) }
        }
    }

    // MARK: the tunnel to local connections

    private func tunnelReadable() {
        for _ in 0..<SessionRelay.maxTunnelReads {
            guard tunnelReading, deferredFor == nil, !finished else { return }
            let scratch = worker.sessionScratch(SessionRelay.readSize)
            let result: ReadResult
            do {
                result = try SystemIO.read(tunnelFD, into: scratch)
            } catch {
                end("\(peerName): \(error)", clean: false)
                return
            }
            switch result {
            case .wouldBlock:
                return
            case .endOfFile:
                if lingerSince != nil {
                    end("drained: no stream left", clean: true, byOwner: true)
                    return
                }
                do {
                    try transform?.backwardEnd()
                } catch {
                    end("\(peerName): \(error)", clean: false)
                    return
                }
                guard let ended = peerEnded else {
                    end("\(peerName) closed the tunnel", clean: false)
                    return
                }
                // After its GoAway: the streams it had finished still deliver what they hold.
                tunnelReading = false
                if streams.isEmpty { end(ended, clean: true) }
                return
            case .bytes(let n):
                bytesReceived += UInt64(n)
                // Past our GoAway nothing the peer sends matters any more: read only to its end.
                if lingerSince != nil { continue }
                let input = UnsafeRawBufferPointer(rebasing: scratch[0..<n])
                guard let transform else {
                    receivePlaintext(input)
                    continue
                }
                let output = worker.openScratch(atLeast: transform.backwardCapacity(forInputCount: n))
                let produced: Int
                do {
                    produced = try transform.backward(input, into: output)
                } catch {
                    end("\(peerName): \(error)", clean: false)
                    return
                }
                receivePlaintext(UnsafeRawBufferPointer(rebasing: output[0..<produced]))
            }
            // A local connection's report waits (an interactive stream's bytes to send): it goes
            // first; the tunnel, still readable, is reported again after it.
            if othersWaiting(includingTunnel: false) { return }
        }
    }

    /// Parses frames in place from the opened plaintext: headers (gathered across reads when split),
    /// and Data payloads written straight to their local connections, copied only when those
    /// cannot take them now.
    private func receivePlaintext(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < bytes.count && !finished {
            if dataRemaining > 0 {
                let n = min(dataRemaining, bytes.count - offset)
                if run.stream != dataStream || run.pieces.count >= SessionRelay.maxGathered { deliverRun() }
                run.stream = dataStream
                run.pieces.append(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)]))
                offset += n
                dataRemaining -= n
                if dataRemaining == 0 && dataFin {
                    deliverRun()
                    endDataFrame()
                }
                continue
            }
            let header: MuxFrame
            do {
                if headerBuffer.isEmpty && bytes.count - offset >= MuxFrame.headerLength {
                    header = try MuxFrameDecoder.parseHeader(bytes[offset..<(offset + MuxFrame.headerLength)],
                                                             maxPayload: SessionRelay.maxReceivedPayload)
                    offset += MuxFrame.headerLength
                } else {
                    let take = min(MuxFrame.headerLength - headerBuffer.count, bytes.count - offset)
                    headerBuffer.append(contentsOf: bytes[offset..<(offset + take)])
                    offset += take
                    guard headerBuffer.count == MuxFrame.headerLength else { break }
                    header = try MuxFrameDecoder.parseHeader(headerBuffer, maxPayload: SessionRelay.maxReceivedPayload)
                    headerBuffer.removeAll(keepingCapacity: true)
                }
            } catch {
                protocolError(error)
                return
            }
            // Payload for the same stream, frame after frame, goes out in one write; anything
            // else (another stream, flags, a control frame) first delivers what is gathered.
            if header.kind != .data || header.streamID != run.stream || !header.flags.isEmpty { deliverRun() }
            guard header.kind == .data else {
                receive(header)
                continue
            }
            do {
                handle(try mux.receiveDataHeader(header))
            } catch {
                protocolError(error)
                return
            }
            dataStream = header.streamID
            dataRemaining = Int(header.length)
            dataFin = header.flags.contains(.fin)
            if dataRemaining == 0 { endDataFrame() }
        }
        // The pieces point into `bytes`: delivered (or copied) before it is reused.
        deliverRun()
        if !finished { resumeStreamsWithWindow() }
    }

    /// Delivers the gathered payload pieces of one stream.
    private func deliverRun() {
        guard !run.pieces.isEmpty else { return }
        let pieces = run.pieces
        run.pieces.removeAll(keepingCapacity: true)
        guard !finished else { return }
        deliver(pieces, to: run.stream)
    }

    private func endDataFrame() {
        guard dataFin, !finished else { return }
        dataFin = false
        do {
            handle(try mux.receiveFin(dataStream))
        } catch {
            protocolError(error)
        }
    }

    /// Hands Data payload to its stream's local connection: written at once when the connection
    /// takes it (one gathering write), the rest kept in the stream until it is writable.
    private func deliver(_ pieces: [UnsafeRawBufferPointer], to id: UInt32) {
        guard let stream = streams[id] else { return }  // reset meanwhile: dropped
        stream.lastActivity = .now
        if id != lastDelivered {
            lastDelivered = id
            deliveringAloneSince = stream.lastActivity
        }
        let total = pieces.reduce(0) { $0 + $1.count }
        var written = 0
        let direct = stream.attached && !stream.connecting && stream.toLocalCount == 0
        if direct {
            do {
                written = try (pieces.count == 1 ? SystemIO.write(stream.fd, pieces[0], isSocket: true)
                                                 : SystemIO.send(stream.fd, gathering: pieces)) ?? 0
            } catch {
                mux.reset(stream.id, reason: .localReset)
                finishStream(stream, reason: "\(stream.name): \(error)", reset: true, byRelay: false)
                return
            }
            if written > 0 { took(written, from: stream) }
        }
        guard written < total else { return }
        var skip = written
        for piece in pieces {
            if skip >= piece.count {
                skip -= piece.count
                continue
            }
            stream.toLocal.append(Array(piece[skip...]))
            skip = 0
        }
        stream.toLocalCount += total - written
        toLocalBuffered += total - written
        updateInterest(stream)
        if direct { deferTunnel(for: stream) }
    }

    /// The stream's local connection is full: when the peer's bytes have gone to this stream alone
    /// for a while, the tunnel waits until it takes what it holds (as the per-connection relay
    /// stopped reading its tunnel), `maxTunnelDeferral` at most. The rest of the current read is
    /// still parsed and delivered.
    private func deferTunnel(for stream: LocalStream) {
        guard deferredFor == nil, !finished else { return }
        let now = ContinuousClock.now
        guard now - deliveringAloneSince >= SessionRelay.soloTime else { return }
        if let ranOut = stream.deferralRanOut, now - ranOut < SessionRelay.slowReaderMemory { return }
        deferredFor = stream.id
        deferredSince = now
        checkDeferral(after: SessionRelay.maxTunnelDeferral)
    }

    /// Reads the tunnel again, at once, and watches it (not from inside `tunnelReadable`).
    private func resumeTunnel() {
        guard deferredFor != nil else { return }
        deferredFor = nil
        guard !finished else { return }
        tunnelReadable()
        updateTunnelInterest()
    }

    /// One timer for every deferral: armed when one begins unless it already is, so a stream whose
    /// reader keeps up costs at most one timer event per `maxTunnelDeferral`.
    private func checkDeferral(after delay: Duration) {
        guard !deferralCheckPending, !finished else { return }
        deferralCheckPending = true
        let timer: DispatchSourceTimer
        if let deferralTimer {
            timer = deferralTimer
        } else {
            timer = DispatchSource.makeTimerSource(queue: worker.queue)
            timer.setEventHandler { [unowned self] in self.deferralDue() }
            deferralTimer = timer
            timer.schedule(deadline: .now() + delay.dispatchInterval, leeway: .milliseconds(1))
            timer.resume()
            return
        }
        timer.schedule(deadline: .now() + delay.dispatchInterval, leeway: .milliseconds(1))
    }

    private func deferralDue() {
        deferralCheckPending = false
        guard !finished, let stream = deferredFor else { return }
        let waited = ContinuousClock.now - deferredSince
        guard waited >= SessionRelay.maxTunnelDeferral else {
            checkDeferral(after: SessionRelay.maxTunnelDeferral - waited)
            return
        }
        streams[stream]?.deferralRanOut = .now
        resumeTunnel()
        flush()
    }

    private func protocolError(_ error: MuxError) {
        mux.goAway(.protocolError)
        flush()
        // Closed with a FIN, not a reset, so the peer can read the GoAway that says why.
        end("protocol error from \(peerName): \(error)", clean: false, abortive: false)
    }

    /// A frame without payload (WindowUpdate, Ping, GoAway).
    private func receive(_ frame: MuxFrame) {
        do {
            handle(try mux.receive(frame))
        } catch {
            protocolError(error)
        }
    }

    private func handle(_ events: [MuxSession.Event]) {
        for event in events {
            switch event {
            case .opened(let id):
                if draining || peerEnded != nil || (onIncoming == nil && connector == nil) {
                    mux.reset(id, reason: .closing)
                    continue
                }
                let stream = LocalStream(id: id, name: "stream \(id)", onFinish: nil)
                streams[id] = stream
                streamsCarried += 1
                if let connector {
                    connect(stream, with: connector)
                } else {
                    onIncoming?(id)
                }
            case .data(let id, let bytes):
                bytes.withUnsafeBytes { deliver([$0], to: id) }
            case .finished(let id):
                guard let stream = streams[id] else { continue }
                stream.remoteFinished = true
                shutDownIfDelivered(stream)
            case .reset(let id, let why):
                guard let stream = streams[id] else { continue }
                finishStream(stream, reason: "reset by the peer: \(why)", reset: true, byRelay: false)
            case .refused(let id, let why):
                guard let stream = streams[id] else { continue }
                finishStream(stream, reason: "refused by the peer: \(why)", reset: true, byRelay: false)
            case .pong(let value):
                if let rtt = keepalive.answered(value, at: .now) { onRoundTrip?(rtt) }
            case .goAway(let reason):
                let why = reason == .normal ? "\(peerName) ended the session" : "\(peerName) ended the session (\(reason))"
                guard reason == .normal else {
                    end(why, clean: false)
                    return
                }
                // Streams finished both ways may still hold bytes for their local connections:
                // those are delivered and closed in order; only streams still open are reset.
                peerEnded = why
                for stream in Array(streams.values) where mux.contains(stream.id) || !stream.attached {
                    finishStream(stream, reason: "session ended: \(why)", reset: true, byRelay: false)
                }
                if streams.isEmpty { end(why, clean: true) }
                return
            }
            if finished { return }
        }
    }

    /// Streams that stopped for want of window read again as soon as the peer's update is in:
    /// at once, without waiting for another readiness report.
    private func resumeStreamsWithWindow() {
        guard !waitingForWindow.isEmpty else { return }
        let waiting = waitingForWindow
        waitingForWindow.removeAll(keepingCapacity: true)
        for id in waiting {
            guard let stream = streams[id], !finished else { continue }
            guard mux.directAllowance(id) > 0 else {
                waitingForWindow.insert(id)
                continue
            }
            readLocal(stream)
            if streams[id] != nil { updateInterest(stream) }
        }
    }

    /// The local connection took `count` of the peer's bytes: that opens the stream's window.
    private func took(_ count: Int, from stream: LocalStream) {
        stream.bytesIn += UInt64(count)
        stream.lastActivity = .now
        mux.consumed(stream.id, count, now: .now, rtt: keepalive.lowestRoundTrip)
    }

    /// Writes what the peer sent and the local connection could not take at once.
    private func writeLocal(_ stream: LocalStream) {
        guard stream.attached, !stream.connecting else { return }
        var taken = 0
        defer {
            if taken > 0 {
                toLocalBuffered -= taken
                took(taken, from: stream)
            }
        }
        while let chunk = stream.toLocal.first {
            let written: Int?
            do {
                written = try chunk.withUnsafeBytes {
                    try SystemIO.write(stream.fd, UnsafeRawBufferPointer(rebasing: $0[stream.toLocalOffset...]), isSocket: true)
                }
            } catch {
                mux.reset(stream.id, reason: .localReset)
                finishStream(stream, reason: "\(stream.name): \(error)", reset: true, byRelay: false)
                return
            }
            guard let written else {
                updateInterest(stream)
                return
            }
            taken += written
            stream.toLocalCount -= written
            stream.toLocalOffset += written
            if stream.toLocalOffset == chunk.count {
                stream.toLocal.removeFirst()
                stream.toLocalOffset = 0
            }
        }
        shutDownIfDelivered(stream)
    }

    private func shutDownIfDelivered(_ stream: LocalStream) {
        guard stream.remoteFinished, stream.attached, !stream.connecting, stream.toLocalCount == 0, !stream.shutDownWrite else { return }
        stream.shutDownWrite = true
        SystemIO.shutdownWrite(stream.fd, isSocket: true)
        completeIfDone(stream)
    }

    private func completeIfDone(_ stream: LocalStream) {
        guard stream.sawEOF, stream.shutDownWrite else { return }
        finishStream(stream, reason: "both sides closed", reset: false, byRelay: false)
    }

    /// Ends a stream's local side: closed in order when both directions ended, reset otherwise.
    private func finishStream(_ stream: LocalStream, reason: String, reset: Bool, byRelay: Bool, refused: Bool = false) {
        guard streams.removeValue(forKey: stream.id) != nil else { return }
        toLocalBuffered -= stream.toLocalCount
        waitingForWindow.remove(stream.id)
        waitingForTunnel.remove(stream.id)
        if stream.turnQueued {
            stream.turnQueued = false
            queuedTurns -= 1
            updateTunnelInterest()
        }
        if deferredFor == stream.id {
            // Read again on the next report (this may run inside the tunnel's own handling).
            deferredFor = nil
            updateTunnelInterest()
        }
        var report = RelayReport(bytesAToB: stream.bytesOut, bytesBToA: stream.bytesIn, duration: ContinuousClock.now - stream.started,
                                 reason: reason, clean: !reset, reset: reset, endedByRelay: byRelay)
        report.refused = refused
        // The owner learns how the stream ended before its local side sees the close.
        let callback = stream.onFinish
        stream.onFinish = nil
        callback?(report)
        if stream.attached {
            byFD[stream.fd] = nil
            if let poller = try? worker.descriptorPoller() { poller.forget(stream.fd) }
            if worker.connections[stream.fd] === self { worker.connections[stream.fd] = nil }
            if reset { try? SystemIO.resetOnClose(stream.fd) }
            SystemIO.close(stream.fd)
            stream.fd = -1
        }
        if let peerEnded, streams.isEmpty {
            end(peerEnded, clean: true)
            return
        }
        endIfDrained()
    }
}
