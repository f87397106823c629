import StunturnSockets

/// Tries and time-outs for one hole punch.
public struct PunchOptions: Sendable {
    /// Connect attempts (TCP) or probes (UDP) at most; the original's default.
    public var tries = 300
    /// The whole punch; it never takes longer.
    public var timeout: Duration = .seconds(10)
    /// Pause after a refused or failed connect attempt: short, because an answering NAT or a peer
    /// whose listener is not up yet refuses at once, and the next SYN may be the one that opens the hole.
    public var retryInterval: Duration = .milliseconds(25)
    /// One connect attempt; a dropping NAT leaves a SYN unanswered, so don't wait out the kernel's retries.
    public var attemptTimeout: Duration = .seconds(2)
    /// Gap between UDP probes.
    public var probeInterval: Duration = .milliseconds(50)
    /// TTL of the opening UDP probes and of the TCP receiver's opening SYNs: enough to pass our own
    /// NAT (creating its mapping) but not to reach the peer's, whose router would otherwise see an
    /// unsolicited packet first. For UDP, an answering router keeps a record of that packet that
    /// stops its NAT from reusing the port; for TCP, it answers with a reset that closes our NAT's
    /// entry for the pair just before the peer's SYN comes. nil: no opening.
    public var openingTTL: Int32? = 2
    /// Pause after the opening probes, so both NATs have their mappings before full probes cross;
    /// for TCP, how long the last opening SYN's socket waits for the peer's SYN before full SYNs.
    public var openingPause: Duration = .milliseconds(150)
    /// Called for each connection that reached the punched port but was not the peer.
    public var onRejected: (@Sendable (SocketAddress, String) -> Void)?
    /// Called once each punch has ended, either way: for the caller's metrics.
    public var onFinished: (@Sendable (PunchOutcome) -> Void)?

    public init(tries: Int = 300, timeout: Duration = .seconds(10)) {
        self.tries = tries
        self.timeout = timeout
    }
}

/// How one punch ended, and how long it took.
public struct PunchOutcome: Sendable, Equatable {
    public enum Result: String, Sendable {
        case success
        /// No path came up within the punch time-out.
        case timeout
        /// Stopped before it ended: the relay won the race, or the forward stopped.
        case cancelled
        /// Anything else, such as a socket that could not be bound.
        case error
    }

    /// `tcp` or `udp`.
    public let transport: String
    public let result: Result
    public let duration: Duration

    public init(transport: String, result: Result, duration: Duration) {
        self.transport = transport
        self.result = result
        self.duration = duration
    }

    /// The result a punch that threw `error` had.
    public static func result(of error: any Error) -> Result {
        switch error {
        case let error as PunchError where error.code == .timedOut: .timeout
        case let error as PunchError where error.code == .cancelled: .cancelled
        case let error as SocketError where error.code == .cancelled: .cancelled
        case is CancellationError: .cancelled
        default: Task.isCancelled ? .cancelled : .error
        }
    }
}

extension PunchOptions {
    /// Runs one punch over `transport` and tells `onFinished` how it ended.
    func reporting<T>(_ transport: String, _ punch: () async throws -> T) async throws -> T {
        guard let onFinished else { return try await punch() }
        let start = ContinuousClock.now
        do {
            let value = try await punch()
            onFinished(PunchOutcome(transport: transport, result: .success, duration: ContinuousClock.now - start))
            return value
        } catch {
            onFinished(PunchOutcome(transport: transport, result: PunchOutcome.result(of: error), duration: ContinuousClock.now - start))
            throw error
        }
    }
}

/// Which side of a punch this is: the initiator keeps the first connection and marks it with the
/// tag; the receiver keeps the connection the tag arrives on.
public enum PunchRole: String, Sendable {
    case initiator, receiver
}

/// A failed punch: which peer, how long it was tried, and the last cause seen.
public struct PunchError: Error, CustomStringConvertible, Sendable {
    /// Why the punch failed, for code that decides what to do next.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable { case timedOut, cancelled, noSocket }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No path came up within the punch time-out.
        public static let timedOut = Code(.timedOut)
        /// The punching task was cancelled.
        public static let cancelled = Code(.cancelled)
        /// A UDP punch was asked for without a UDP socket.
        public static let noSocket = Code(.noSocket)

        public var description: String {
            switch base {
            case .timedOut: "timed out"
            case .cancelled: "cancelled"
            case .noSocket: "no UDP socket"
            }
        }
    }

    public let code: Code
    public let peer: SocketAddress
    public let transport: String
    public let message: String
    /// The last error seen on the way, such as a refused connect.
    public let underlying: (any Error)?

    public init(_ code: Code, peer: SocketAddress, transport: String, message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.peer = peer
        self.transport = transport
        self.message = message
        self.underlying = underlying
    }

    public var description: String { "\(transport) hole punch to \(peer): \(message)" }
}

/// The tag that marks the chosen connection when the caller has no key-derived one.
public let defaultPunchTag: [UInt8] = Array("stunturn-punch-1".utf8)
