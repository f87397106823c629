import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import StunturnSockets
import Synchronization

/// A stage between the two sides of a relay, such as the tunnel's encryption.
///
/// `forward` sees bytes read from side A on their way to B; `backward` bytes from B to A. Both run
/// on the relay's queue, one call at a time, and write their output into a buffer of the relay's
/// (at least the matching capacity), returning how many bytes they wrote.
public protocol RelayTransform: AnyObject {
    /// The most bytes `forward` may write for `inputCount` bytes of input.
    func forwardCapacity(forInputCount inputCount: Int) -> Int
    /// The most bytes `backward` may write for `inputCount` bytes of input.
    func backwardCapacity(forInputCount inputCount: Int) -> Int
    func forward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int
    func backward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int

    /// The most bytes `forwardEnd` may write.
    var forwardEndCapacity: Int { get }
    /// Side A ended: writes what B must receive before its end (such as the tunnel's close record)
    /// and returns how many bytes that is. The relay sends them, then half-closes B.
    func forwardEnd(into output: UnsafeMutableRawBufferPointer) throws -> Int

    /// Side B ended; throws when that is not a proper end (a stream cut short), and the relay
    /// then resets side A instead of passing the end on as an orderly one.
    func backwardEnd() throws
}

extension RelayTransform {
    public var forwardEndCapacity: Int { 0 }
    public func forwardEnd(into output: UnsafeMutableRawBufferPointer) throws -> Int { 0 }
    public func backwardEnd() throws {}
}

/// One side of a relay: a socket, or a pair of descriptors such as stdin/stdout.
public struct RelayEndpoint: Sendable {
    public let readFD: Int32
    public let writeFD: Int32
    public let isSocket: Bool
    public let name: String

    /// Takes over a socket's descriptor; the relay closes it.
    public init(socket: Socket, name: String) {
        let fd = socket.detach()
        self.readFD = fd
        self.writeFD = fd
        self.isSocket = true
        self.name = name
    }

    /// This process's stdin and stdout, made non-blocking.
    public static func standardIO(name: String = "stdio") throws -> RelayEndpoint {
        try SystemIO.setNonBlocking(SystemIO.standardInput)
        try SystemIO.setNonBlocking(SystemIO.standardOutput)
        return RelayEndpoint(readFD: SystemIO.standardInput, writeFD: SystemIO.standardOutput, isSocket: false, name: name)
    }

    init(readFD: Int32, writeFD: Int32, isSocket: Bool, name: String) {
        self.readFD = readFD
        self.writeFD = writeFD
        self.isSocket = isSocket
        self.name = name
    }
}

/// How a relayed connection ended and what it carried.
public struct RelayReport: Sendable, CustomStringConvertible {
    /// Bytes read from A (towards B), and bytes written to A (from B), both on A's side of any
    /// transform: for a tunnel with A the local connection, the plaintext each way.
    public var bytesAToB: UInt64
    public var bytesBToA: UInt64
    public var duration: Duration
    /// Why it ended: both sides closed, an error naming the side, idle time-out, or a close by the owner.
    public var reason: String
    /// True when it ended by an orderly close of both sides.
    public var clean: Bool
    /// True when the relay reset both sides rather than end them in order: the connection broke
    /// (a side reset or failed, a stream cut short or failing authentication), or the relay's
    /// owner or the idle time-out ended it, so neither side mistakes the end for a complete stream.
    public var reset: Bool = false
    /// True when the end was the relay's own decision (idle time-out, or a close by the owner),
    /// not a failure of either side.
    public var endedByRelay: Bool = false
    /// True when a session refused to carry the connection at all (its stream limit, or the
    /// session ended before the stream opened); the connection was reset without a byte carried.
    public var refused: Bool = false

    public var description: String {
        "\(reason); \(bytesAToB) bytes out, \(bytesBToA) bytes in, \(formatDuration(duration))"
    }
}

/// Splices pairs of non-blocking descriptors on Dispatch queues: no thread per connection, no busy
/// loop. Each worker watches its connections' descriptors in one epoll set (a `DescriptorPoller`,
/// which says why not a DispatchSource per descriptor). Each side is drained until it would block
/// (per-event overhead, not copying, is what costs); a side stops being read while the other
/// side's send buffer is full, so memory per connection is bounded by one chunk; end-of-file on
/// one side becomes a shutdown of the other.
public final class RelayEngine: Sendable {
    /// Read size: large reads keep syscalls per byte low on fast paths.
    public static let defaultChunkSize = 256 * 1024

    public static let shared = RelayEngine()

    /// Each worker lives on its own queue.
    private let workers: [QueueBound<RelayWorker>]
    private let nextWorker = Atomic<UInt>(0)

    public init(workers count: Int = 2, chunkSize: Int = RelayEngine.defaultChunkSize) {
        SystemIO.ignoreSIGPIPE()
        workers = (0..<max(1, count)).map { index in
            let queue = DispatchQueue(label: "stunturn.relay.\(index)")
            return QueueBound(RelayWorker(queue: queue, chunkSize: chunkSize), on: queue)
        }
    }

    /// Starts relaying between `a` and `b`; `onFinish` runs once, after both descriptors are closed.
    /// The relay owns `transform` from now on: it is used on the relay's queue only.
    @discardableResult
    /// - Parameter rateLimit: bytes per second each direction may carry at most; nil for no limit.
    public func relay(_ a: RelayEndpoint, _ b: RelayEndpoint, transform: RelayTransform? = nil,
                      idleTimeout: Duration? = nil, rateLimit: Int? = nil,
                      onFinish: @escaping @Sendable (RelayReport) -> Void) -> RelayConnection {
        let worker = nextWorkerBound()
        let splice = QueueBound(RelaySplice(a: a, b: b, transform: transform, idleTimeout: idleTimeout, rateLimit: rateLimit,
                                            onFinish: onFinish),
                                on: worker.queue)
        worker.queue.async { splice.value.start(on: worker.value) }
        return RelayConnection(splice)
    }

    /// The worker the next connection or session runs on, in turn.
    func nextWorkerBound() -> QueueBound<RelayWorker> {
        workers[Int(nextWorker.wrappingAdd(1, ordering: .relaxed).oldValue % UInt(workers.count))]
    }
}

/// A handle on one relayed connection, to end it from outside.
public final class RelayConnection: Sendable {
    private let splice: QueueBound<RelaySplice>

    init(_ splice: QueueBound<RelaySplice>) { self.splice = splice }

    /// Ends the relay now, resetting both sides: the streams stop wherever they are, and the
    /// applications must not take that for an orderly end.
    public func close(reason: String = "closed by the agent") {
        splice.async { $0.close(reason: reason) }
    }

    /// Bytes carried so far in each direction.
    public var byteCounts: (aToB: UInt64, bToA: UInt64) {
        get async {
            await withCheckedContinuation { continuation in
                splice.async { continuation.resume(returning: $0.byteCounts) }
            }
        }
    }
}

/// A serial queue with scratch buffers that every connection on it shares, so an idle
/// connection holds no buffer at all, and one epoll set for all their descriptors.
final class RelayWorker {
    let queue: DispatchQueue
    let inScratch: UnsafeMutableRawBufferPointer
    /// Where transforms write; grown (never shrunk) when a transform asks for more.
    private(set) var outScratch: UnsafeMutableRawBufferPointer
    /// Made on first use, on the queue.
    private var poller: DescriptorPoller?
    /// The connection or session each watched descriptor belongs to; it holds it until it ends.
    var connections: [Int32: any RelayClient] = [:]

    private let outScratchSize: Int

    init(queue: DispatchQueue, chunkSize: Int) {
        self.queue = queue
        inScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 64)
        outScratchSize = chunkSize + chunkSize / 16 + 70_000
        outScratch = PageBuffer.allocate(outScratchSize)
    }

    /// Sessions running on this worker. When the last one ends, the buffers only sessions need
    /// (about 3 MiB: their reads, the records they open, the larger sealing buffer) go back, so a
    /// session that moved to another worker (a new path, a reconnect) leaves none behind.
    private var sessions = 0

    func sessionStarted() { sessions += 1 }

    func sessionEnded() {
        sessions -= 1
        guard sessions == 0 else { return }
        // Later on the queue, not now: the session that ended may be inside a call that still
        // holds one of these buffers (a read it was parsing when the peer's error ended it).
        QueueBound(self, on: queue).async { worker in
            guard worker.sessions == 0 else { return }
            worker.releaseSessionBuffers()
        }
    }

    private func releaseSessionBuffers() {
        PageBuffer.deallocate(sessionScratch)
        sessionScratch = PageBuffer.none
        PageBuffer.deallocate(openScratch)
        openScratch = PageBuffer.none
        if outScratch.count > outScratchSize {
            PageBuffer.deallocate(outScratch)
            outScratch = PageBuffer.allocate(outScratchSize)
        }
    }

    // An engine of its own (a server's) goes when its owner does: about 1.2 MB a worker with it
    // (and 1 MiB more, and a larger `outScratch`, once a session ran on it).
    deinit {
        inScratch.deallocate()
        PageBuffer.deallocate(outScratch)
        PageBuffer.deallocate(openScratch)
        PageBuffer.deallocate(sessionScratch)
    }

    /// Where sessions read, a local connection's bytes into several frames at once or the
    /// tunnel's records: made when the worker's first session reads, `count` bytes (1 MiB),
    /// whatever the engine's chunk size for the connections it relays one to one; given back
    /// when its last session ends.
    private(set) var sessionScratch = PageBuffer.none

    func sessionScratch(_ count: Int) -> UnsafeMutableRawBufferPointer {
        PageBuffer.grow(&sessionScratch, to: count)
    }

    /// The worker's epoll set; on the queue.
    func descriptorPoller() throws -> DescriptorPoller {
        if let poller { return poller }
        let made = try DescriptorPoller(queue: queue) { [unowned self] fd, events in
            self.connections[fd]?.ready(fd, events)
        }
        poller = made
        return made
    }

    /// Where sessions open the tunnel's records: frames are parsed in place there while the
    /// replies they cause are sealed into `outScratch`.
    private(set) var openScratch = PageBuffer.none

    func openScratch(atLeast count: Int) -> UnsafeMutableRawBufferPointer {
        PageBuffer.grow(&openScratch, to: count)
    }

    /// Grown past its first size by a session sealing four frames at once; back to that size
    /// when the worker's last session ends.
    func outScratch(atLeast count: Int) -> UnsafeMutableRawBufferPointer {
        PageBuffer.grow(&outScratch, to: count)
    }
}

/// Buffers of a megabyte or so for sessions, taken straight from the kernel (`mmap`) and handed
/// straight back (`munmap`): freed through malloc they would stay in its heaps, resident, after
/// the session that used them ended (a 10-minute soak saw the relayed listen agent grow 11 %
/// across two session restarts that way).
enum PageBuffer {
    static var none: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: nil, count: 0) }

    static func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer {
        guard count > 0 else { return none }
        let pages = mmap(nil, count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let pages, pages != UnsafeMutableRawPointer(bitPattern: -1) else {
            fatalError("mmap of \(count) bytes failed: \(String(cString: strerror(errno)))")
        }
        return UnsafeMutableRawBufferPointer(start: pages, count: count)
    }

    /// `buffer` at least `count` bytes long (replaced by a larger one if it is not), returned.
    static func grow(_ buffer: inout UnsafeMutableRawBufferPointer, to count: Int) -> UnsafeMutableRawBufferPointer {
        if buffer.count < count {
            deallocate(buffer)
            buffer = allocate(count)
        }
        return buffer
    }

    static func deallocate(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        munmap(base, buffer.count)
    }
}

/// What a worker's epoll set reports to: a relayed connection or a session.
protocol RelayClient: AnyObject {
    func ready(_ fd: Int32, _ events: DescriptorPoller.Events)
}

/// A rate limit: `rate` bytes per second, with a burst of a tenth of a second (at least 64 KiB).
struct TokenBucket {
    let rate: Int
    let burst: Int
    private(set) var tokens: Int
    private var refilled = ContinuousClock.now

    init(rate: Int) {
        self.rate = rate
        burst = max(65_536, rate / 10)
        tokens = burst
    }

    /// Nil when a read may go ahead now; otherwise how long until a useful amount has refilled.
    mutating func waitBeforeNextRead() -> Duration? {
        let now = ContinuousClock.now
        let elapsed = now - refilled
        let earned = Double(elapsed.components.seconds) * Double(rate) + Double(elapsed.components.attoseconds) * 1e-18 * Double(rate)
        if earned >= 1 {
            tokens = min(burst, tokens + Int(min(earned, Double(burst))))
            refilled = now
        }
        if tokens > 0 { return nil }
        // Wait for a quarter of the burst, so a limited relay reads in sizeable pieces.
        let needed = Double(burst / 4 - tokens)
        return .nanoseconds(Int64(max(1_000_000, needed / Double(rate) * 1e9)))
    }

    mutating func take(_ count: Int) { tokens -= count }
}

/// One relayed connection, on its worker's queue from `start` on.
final class RelaySplice: RelayClient {
    /// One direction of the relay.
    final class Direction {
        let srcFD: Int32
        let dstFD: Int32
        let dstIsSocket: Bool
        let srcName: String
        let dstName: String
        /// The stage bytes pass through on the way, run `forward` (A to B) or backward.
        let transform: RelayTransform?
        let isForward: Bool
        /// Whether the source is read when it is readable, and the destination written when it
        /// is writable.
        var reading = false
        /// A look at the source is queued on the worker.
        var readScheduled = false
        var writeArmed = false
        var pending: [UInt8] = []
        var pendingOffset = 0
        var sawEOF = false
        var shutDown = false
        var bytes: UInt64 = 0
        /// Bytes written to the destination, after any transform.
        var delivered: UInt64 = 0
        /// Plaintext socket-to-socket directions move bytes through a pipe with splice(2), never
        /// copying them into this process.
        var pipe: (read: Int32, write: Int32, capacity: Int)?
        var inPipe = 0
        /// The direction's rate limit, when it has one.
        var bucket: TokenBucket?
        /// Reading paused until the bucket has refilled.
        var throttled = false

        init(src: RelayEndpoint, dst: RelayEndpoint, transform: RelayTransform?, isForward: Bool) {
            srcFD = src.readFD
            dstFD = dst.writeFD
            dstIsSocket = dst.isSocket
            srcName = src.name
            dstName = dst.name
            self.transform = transform
            self.isForward = isForward
        }

        var hasPending: Bool { pendingOffset < pending.count || inPipe > 0 }
    }

    /// Pipe buffer for spliced directions: about the kernel socket buffers, so one splice moves a lot.
    static let pipeSize = 1 << 20

    /// Bounded drain per event, so one busy connection cannot starve the others on its queue.
    private static let maxReadsPerEvent = 32

    /// Set by `start`, on the worker's queue.
    private var worker: RelayWorker!
    private let a: RelayEndpoint
    private let b: RelayEndpoint
    private let aToB: Direction
    private let bToA: Direction
    /// Both sides' descriptors, each once.
    private let descriptors: [Int32]
    private let idleTimeout: Duration?
    private var onFinish: (@Sendable (RelayReport) -> Void)?
    /// What each descriptor is watched for now; a report disarms it until it is watched again.
    private var armed: [Int32: DescriptorPoller.Events] = [:]
    /// Descriptors epoll cannot watch (regular files): always ready.
    private var alwaysReady = Set<Int32>()
    /// Always-ready descriptors with a report queued on the worker.
    private var reportQueued = Set<Int32>()
    /// True while a poller report is handled: interest changes are applied once, at its end.
    private var handlingReport = false
    private var idleTimer: DispatchSourceTimer?
    private var lastActivity = ContinuousClock.now
    private let started = ContinuousClock.now
    private var finished = false
    private var endReason = ""
    private var endedCleanly = false
    private var abortive = false
    private var endedByRelay = false

    init(a: RelayEndpoint, b: RelayEndpoint, transform: RelayTransform?, idleTimeout: Duration?, rateLimit: Int? = nil,
         onFinish: @escaping @Sendable (RelayReport) -> Void) {
        self.a = a
        self.b = b
        self.idleTimeout = idleTimeout
        self.onFinish = onFinish
        var fds: [Int32] = []
        for fd in [a.readFD, a.writeFD, b.readFD, b.writeFD] where !fds.contains(fd) { fds.append(fd) }
        descriptors = fds
        aToB = Direction(src: a, dst: b, transform: transform, isForward: true)
        bToA = Direction(src: b, dst: a, transform: transform, isForward: false)
        if let rateLimit, rateLimit > 0 {
            for d in [aToB, bToA] { d.bucket = TokenBucket(rate: rateLimit) }
        }
        #if os(Linux)
        if transform == nil && a.isSocket && b.isSocket && SystemIO.hasSplice {
            // Without a pipe (out of descriptors) the direction copies through user space instead.
            for d in [aToB, bToA] { d.pipe = try? SystemIO.makePipe(size: RelaySplice.pipeSize) }
        }
        #endif
    }

    // MARK: on the worker's queue

    /// Ends the relay, resetting both sides (see `RelayConnection.close`).
    func close(reason: String) {
        finish(reason, clean: false, abort: true, byRelay: true)
    }

    var byteCounts: (aToB: UInt64, bToA: UInt64) { (aToB.bytes, bToA.bytes) }

    /// Runs the connection on `worker`, whose table holds it strongly until it finishes.
    func start(on worker: RelayWorker) {
        self.worker = worker
        do {
            _ = try worker.descriptorPoller()
        } catch {
            finish("\(error)", clean: false, abort: true)
            return
        }
        for fd in descriptors { worker.connections[fd] = self }
        aToB.reading = true
        bToA.reading = true
        for fd in descriptors { updateInterest(fd) }
        guard !finished else { return }
        if let idleTimeout {
            let timer = DispatchSource.makeTimerSource(queue: worker.queue)
            let period = max(Duration.milliseconds(100), idleTimeout / 4)
            timer.schedule(deadline: .now() + period.dispatchInterval, repeating: period.dispatchInterval, leeway: .milliseconds(50))
            timer.setEventHandler { [self] in
                if ContinuousClock.now - self.lastActivity >= idleTimeout {
                    self.finish("idle for \(formatDuration(idleTimeout))", clean: false, abort: true, byRelay: true)
                }
            }
            // Cancelled only by finish; the descriptors are closed once the timer has let go.
            timer.setCancelHandler { [self] in self.closeDescriptors() }
            idleTimer = timer
            timer.resume()
        }
    }

    /// The poller found `fd` ready: read and write what is wanted, then watch it again.
    func ready(_ fd: Int32, _ events: DescriptorPoller.Events) {
        guard !finished else { return }
        armed[fd] = []
        handlingReport = true
        if events.contains(.readable) {
            if aToB.srcFD == fd { readable(aToB) }
            if bToA.srcFD == fd { readable(bToA) }
        }
        if events.contains(.writable) {
            if aToB.dstFD == fd && aToB.writeArmed { writable(aToB) }
            if bToA.dstFD == fd && bToA.writeArmed { writable(bToA) }
        }
        handlingReport = false
        guard !finished else { return }
        for fd in descriptors { updateInterest(fd) }
    }

    /// Watches `fd` for what the directions want of it now. A descriptor nobody wants is left
    /// as it is: if a report comes, it is ignored and the descriptor stays unwatched.
    private func updateInterest(_ fd: Int32) {
        guard !finished, !handlingReport else { return }
        var wanted = DescriptorPoller.Events()
        if (aToB.srcFD == fd && aToB.reading) || (bToA.srcFD == fd && bToA.reading) { wanted.insert(.readable) }
        if (aToB.dstFD == fd && aToB.writeArmed) || (bToA.dstFD == fd && bToA.writeArmed) { wanted.insert(.writable) }
        guard !wanted.isEmpty, armed[fd] != wanted else { return }
        do {
            let watched = try alwaysReady.contains(fd) ? false : worker.descriptorPoller().watch(fd, for: wanted)
            if !watched {
                alwaysReady.insert(fd)
                // One report in flight per descriptor, however often the interest changes.
                if reportQueued.insert(fd).inserted {
                    QueueBound(self, on: worker.queue).async { splice in
                        splice.reportQueued.remove(fd)
                        if let wanted = splice.armed[fd], !wanted.isEmpty { splice.ready(fd, wanted) }
                    }
                }
            }
            armed[fd] = wanted
        } catch {
            finish("\(fd == a.readFD || fd == a.writeFD ? a.name : b.name): \(error)", clean: false, abort: true)
        }
    }

    private func readable(_ d: Direction) {
        guard !finished, d.reading, !d.throttled, !d.sawEOF, !d.hasPending else { return }
        #if os(Linux)
        if let pipe = d.pipe {
            readableSpliced(d, pipe)
            return
        }
        #endif
        let scratch = worker.inScratch
        drainSource(d, read: { try SystemIO.read(d.srcFD, into: UnsafeMutableRawBufferPointer(rebasing: scratch[0..<allowance(d, scratch.count)])) }) { n in
            let input = UnsafeRawBufferPointer(rebasing: scratch[0..<n])
            guard let transform = d.transform else { return send(input, on: d) }
            let output = worker.outScratch(atLeast: d.isForward ? transform.forwardCapacity(forInputCount: n)
                                                                : transform.backwardCapacity(forInputCount: n))
            let produced: Int
            do {
                produced = try d.isForward ? transform.forward(input, into: output) : transform.backward(input, into: output)
            } catch {
                finish("\(d.srcName): \(error)", clean: false, abort: true)
                return false
            }
            return send(UnsafeRawBufferPointer(rebasing: output[0..<produced]), on: d)
        }
    }

    /// Reads from the direction's source until it would block, handing each chunk to `deliver`
    /// (false: stop, the destination is full or the relay ended). End-of-file half-closes.
    private func drainSource(_ d: Direction, read: () throws -> ReadResult, deliver: (Int) -> Bool) {
        for _ in 0..<RelaySplice.maxReadsPerEvent {
            if let wait = d.bucket?.waitBeforeNextRead() {
                throttle(d, for: wait)
                return
            }
            let result: ReadResult
            do {
                result = try read()
            } catch {
                finish("\(d.srcName): \(error)", clean: false, abort: true)
                return
            }
            switch result {
            case .wouldBlock:
                return
            case .endOfFile:
                d.sawEOF = true
                suspendRead(d)
                if let transform = d.transform {
                    guard endTransform(transform, on: d) else { return }
                }
                endDirectionIfDrained(d)
                return
            case .bytes(let n):
                lastActivity = .now
                d.bytes += UInt64(n)
                d.bucket?.take(n)
                if !deliver(n) { return }
            }
        }
        // Cap reached with data possibly left: continue after the other work queued here, rather
        // than rely on the source firing again for data that was already there.
        scheduleRead(d)
    }

    /// Tells the transform that the direction's source ended: forward, its last bytes go out before
    /// the half-close (held like any others when the destination is full); backward, it judges
    /// whether the end is a proper one. False when the relay must not half-close now.
    private func endTransform(_ transform: RelayTransform, on d: Direction) -> Bool {
        do {
            guard d.isForward else {
                try transform.backwardEnd()
                return true
            }
            let output = worker.outScratch(atLeast: transform.forwardEndCapacity)
            let produced = try transform.forwardEnd(into: output)
            return send(UnsafeRawBufferPointer(rebasing: output[0..<produced]), on: d)
        } catch {
            finish("\(d.srcName): \(error)", clean: false, abort: true)
            return false
        }
    }

    /// Writes `data` to the direction's destination; what the kernel does not take is kept and the
    /// source side paused. Returns false when the caller must stop reading.
    private func send(_ data: UnsafeRawBufferPointer, on d: Direction) -> Bool {
        var offset = 0
        while offset < data.count {
            let written: Int?
            do {
                written = try SystemIO.write(d.dstFD, UnsafeRawBufferPointer(rebasing: data[offset...]), isSocket: d.dstIsSocket)
            } catch {
                finish("\(d.dstName): \(error)", clean: false, abort: true)
                return false
            }
            guard let written else {
                d.pending = Array(data[offset...])
                d.pendingOffset = 0
                suspendRead(d)
                armWrite(d)
                return false
            }
            offset += written
            d.delivered += UInt64(written)
        }
        return true
    }

    #if os(Linux)
    private func readableSpliced(_ d: Direction, _ pipe: (read: Int32, write: Int32, capacity: Int)) {
        drainSource(d, read: { try SystemIO.splice(from: d.srcFD, to: pipe.write, count: allowance(d, pipe.capacity - d.inPipe)) }) { n in
            d.inPipe += n
            return drainPipe(d, pipe)
        }
    }

    /// Empties the direction's pipe into its destination; false (with the source paused and the
    /// destination watched) when the destination is full.
    private func drainPipe(_ d: Direction, _ pipe: (read: Int32, write: Int32, capacity: Int)) -> Bool {
        while d.inPipe > 0 {
            let result: ReadResult
            do {
                result = try SystemIO.splice(from: pipe.read, to: d.dstFD, count: d.inPipe)
            } catch {
                finish("\(d.dstName): \(error)", clean: false, abort: true)
                return false
            }
            switch result {
            case .bytes(let n):
                d.inPipe -= n
                d.delivered += UInt64(n)
                lastActivity = .now
            case .wouldBlock:
                suspendRead(d)
                armWrite(d)
                return false
            case .endOfFile:
                finish("\(d.dstName): pipe closed unexpectedly", clean: false, abort: true)
                return false
            }
        }
        return true
    }
    #endif

    private func writable(_ d: Direction) {
        guard !finished, d.writeArmed else { return }
        #if os(Linux)
        if let pipe = d.pipe {
            guard drainPipe(d, pipe) else { return }
            disarmWrite(d)
            if d.sawEOF { endDirectionIfDrained(d) } else { resumeRead(d) }
            return
        }
        #endif
        while d.hasPending {
            let written: Int?
            do {
                written = try d.pending.withUnsafeBytes {
                    try SystemIO.write(d.dstFD, UnsafeRawBufferPointer(rebasing: $0[d.pendingOffset...]), isSocket: d.dstIsSocket)
                }
            } catch {
                finish("\(d.dstName): \(error)", clean: false, abort: true)
                return
            }
            guard let written else { return }
            d.pendingOffset += written
            d.delivered += UInt64(written)
            // A slow reader taking what was held is activity too, not idleness.
            lastActivity = .now
        }
        d.pending = []
        d.pendingOffset = 0
        disarmWrite(d)
        if d.sawEOF {
            endDirectionIfDrained(d)
        } else {
            resumeRead(d)
        }
    }

    private func endDirectionIfDrained(_ d: Direction) {
        guard d.sawEOF, !d.hasPending, !d.shutDown else { return }
        d.shutDown = true
        if !d.dstIsSocket, let poller = try? worker.descriptorPoller() {
            // A pipe ends by pointing its descriptor at /dev/null: another file from now on.
            poller.forget(d.dstFD)
            armed[d.dstFD] = nil
        }
        SystemIO.shutdownWrite(d.dstFD, isSocket: d.dstIsSocket)
        if aToB.shutDown && bToA.shutDown { finish("both sides closed", clean: true) }
    }

    /// Looks at the direction's source again after the work already queued, once however often
    /// asked before it runs.
    private func scheduleRead(_ d: Direction) {
        guard !d.readScheduled else { return }
        d.readScheduled = true
        let forward = d.isForward
        QueueBound(self, on: worker.queue).async { splice in
            let d = forward ? splice.aToB : splice.bToA
            d.readScheduled = false
            splice.readable(d)
        }
    }

    private func suspendRead(_ d: Direction) {
        guard d.reading else { return }
        d.reading = false
        updateInterest(d.srcFD)
    }

    /// How much the next read of `d` may take: `room`, or less when the direction is rate limited.
    private func allowance(_ d: Direction, _ room: Int) -> Int {
        guard let bucket = d.bucket else { return room }
        return max(1, min(room, bucket.tokens))
    }

    /// Pauses reading `d` until its bucket has refilled.
    private func throttle(_ d: Direction, for wait: Duration) {
        d.throttled = true
        suspendRead(d)
        let forward = d.isForward
        QueueBound(self, on: worker.queue).asyncAfter(wait.dispatchInterval) { splice in
            let d = forward ? splice.aToB : splice.bToA
            d.throttled = false
            guard !splice.finished, !d.sawEOF, !d.writeArmed else { return }
            splice.resumeRead(d)
        }
    }

    private func resumeRead(_ d: Direction) {
        guard !d.reading, !d.throttled else { return }
        d.reading = true
        updateInterest(d.srcFD)
        // Data that arrived while paused: look now rather than wait for the report.
        scheduleRead(d)
    }

    private func armWrite(_ d: Direction) {
        guard !d.writeArmed else { return }
        d.writeArmed = true
        updateInterest(d.dstFD)
    }

    private func disarmWrite(_ d: Direction) {
        guard d.writeArmed else { return }
        d.writeArmed = false
        updateInterest(d.dstFD)
    }

    /// Ends the relay. `abort`: the connection broke (a side reset or failed, a stream cut short
    /// or failing authentication) or the relay ends it on its own (`byRelay`: idle time-out, a
    /// close by the owner), so the bytes carried may not be whole: both sides are reset rather than
    /// closed in order, and the other side's application learns it too.
    private func finish(_ reason: String, clean: Bool, abort: Bool = false, byRelay: Bool = false) {
        guard !finished else { return }
        finished = true
        endReason = reason
        endedCleanly = clean
        abortive = abort
        endedByRelay = byRelay
        for d in [aToB, bToA] {
            d.reading = false
            d.writeArmed = false
            d.pending = []
        }
        // Out of the epoll set before they are closed; reports already taken find no connection.
        let poller = try? worker.descriptorPoller()
        for fd in descriptors where worker.connections[fd] === self {
            poller?.forget(fd)
            worker.connections[fd] = nil
        }
        armed = [:]
        if let idleTimer { idleTimer.cancel() } else { closeDescriptors() }
    }

    /// Runs once the idle timer (if any) has let go of the connection.
    private func closeDescriptors() {
        for d in [aToB, bToA] {
            if let pipe = d.pipe {
                SystemIO.close(pipe.read)
                SystemIO.close(pipe.write)
                d.pipe = nil
            }
        }
        for fd in descriptors where fd > 2 {
            // Fails only on descriptors that are not sockets (stdio), which have no reset to send.
            if abortive { try? SystemIO.resetOnClose(fd) }
            SystemIO.close(fd)
        }
        let report = RelayReport(bytesAToB: aToB.bytes, bytesBToA: bToA.delivered, duration: ContinuousClock.now - started,
                                 reason: endReason, clean: endedCleanly, reset: abortive, endedByRelay: endedByRelay)
        let callback = onFinish
        onFinish = nil
        idleTimer = nil
        callback?(report)
    }
}
