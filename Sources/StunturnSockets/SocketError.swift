import Glibc

/// A failed socket call, naming the call, its subject (usually an address) and the cause.
public struct SocketError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, for code that decides what to do next; the description is for people.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case system, timedOut, cancelled, closed, endOfStream, invalidAddress, resolutionFailed, failed
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A system call failed; `errno` says why.
        public static let system = Code(.system)
        /// A deadline passed before the socket was ready.
        public static let timedOut = Code(.timedOut)
        /// The waiting task was cancelled.
        public static let cancelled = Code(.cancelled)
        /// The socket was closed (by this process) while still in use.
        public static let closed = Code(.closed)
        /// The peer ended the stream before the bytes that were expected.
        public static let endOfStream = Code(.endOfStream)
        /// Text that should have been an IP address or endpoint is not one.
        public static let invalidAddress = Code(.invalidAddress)
        /// A host name could not be resolved.
        public static let resolutionFailed = Code(.resolutionFailed)
        /// Anything else; the reason says what.
        public static let failed = Code(.failed)

        public var description: String {
            switch base {
            case .system: "system call failed"
            case .timedOut: "timed out"
            case .cancelled: "cancelled"
            case .closed: "socket closed"
            case .endOfStream: "stream ended early"
            case .invalidAddress: "invalid address"
            case .resolutionFailed: "name resolution failed"
            case .failed: "failed"
            }
        }
    }

    /// The system call or operation that failed, such as `connect`.
    public let call: String
    /// What the call acted on, usually `ip:port`; empty when there is none.
    public let subject: String
    /// What went wrong.
    public let code: Code
    /// The errno value for `.system` errors, 0 otherwise.
    public let errno: Int32
    private let reason: String

    /// The peer reset the connection (ECONNRESET, EPIPE): it did not end it in order.
    public var isReset: Bool { errno == ECONNRESET || errno == EPIPE }

    public init(call: String, subject: String = "", errno code: Int32) {
        self.call = call
        self.subject = subject
        self.code = code == ETIMEDOUT ? .timedOut : .system
        self.errno = code
        self.reason = SocketError.describe(errno: code)
    }

    public init(_ code: Code, call: String, subject: String = "", reason: String) {
        self.call = call
        self.subject = subject
        self.code = code
        self.errno = 0
        self.reason = reason
    }

    public var description: String {
        subject.isEmpty ? "\(call): \(reason)" : "\(call) \(subject): \(reason)"
    }

    public var isTimeout: Bool { code == .timedOut }
    public var isConnectionRefused: Bool { errno == ECONNREFUSED }
    /// No file at the path (ENOENT), as when connecting to a Unix socket that is not there.
    public var isNotFound: Bool { errno == ENOENT }
    public var isPermissionDenied: Bool { errno == EACCES || errno == EPERM }
    /// An ICMP report about an earlier datagram (port or host unreachable) that a UDP socket
    /// returns from its next call: the socket itself is fine, and the next datagram may get through.
    public var isDatagramDeliveryReport: Bool {
        code == .system && [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN].contains(errno)
    }

    /// strerror text with a lower-case first letter, as in `connection refused`.
    public static func describe(errno code: Int32) -> String {
        guard let text = strerror(code) else { return "errno \(code)" }
        let message = String(cString: text)
        guard let first = message.first else { return "errno \(code)" }
        return first.lowercased() + message.dropFirst()
    }

    public static func timedOut(_ call: String, _ subject: String, after duration: Duration) -> SocketError {
        SocketError(.timedOut, call: call, subject: subject, reason: "timed out after \(formatDuration(duration))")
    }
}

/// Formats a duration for messages: `250ms`, `10s`, `1.5s`.
public func formatDuration(_ duration: Duration) -> String {
    let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    if ms < 1000 { return "\(Int(ms.rounded()))ms" }
    let s = ms / 1000
    if s == s.rounded() { return "\(Int(s))s" }
    let tenths = Int((s * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)s"
}

/// Outcome of a non-blocking read.
public enum ReadResult: Equatable, Sendable {
    case bytes(Int)
    case endOfFile
    case wouldBlock
}

/// Runs one system call: retries on EINTR, maps EAGAIN to nil, anything else to a `SocketError`.
@inline(__always)
func retryingSyscall<T: BinaryInteger>(_ call: @autoclosure () -> String, _ subject: @autoclosure () -> String,
                                      _ body: () -> T) throws -> T? {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = errno
        switch code {
        case EINTR: continue
        case EAGAIN, EWOULDBLOCK: return nil
        case EBADF, EFAULT:
            preconditionFailure("\(call()) \(subject()): \(SocketError.describe(errno: code)) (programming error)")
        default: throw SocketError(call: call(), subject: subject(), errno: code)
        }
    }
}

// Constants re-exported so modules above the socket layer need not import Glibc.
public let SOL_SOCKET_VALUE = SOL_SOCKET
public let SO_REUSEADDR_VALUE = SO_REUSEADDR
public let SO_SNDBUF_VALUE = SO_SNDBUF
public let SO_RCVBUF_VALUE = SO_RCVBUF
public let SO_KEEPALIVE_VALUE = SO_KEEPALIVE
public let EMFILE_VALUE = EMFILE
public let ENFILE_VALUE = ENFILE
