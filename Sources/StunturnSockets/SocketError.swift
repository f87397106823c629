#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed socket call, naming the call, its subject (usually an address) and the cause.
public struct SocketError: Error, CustomStringConvertible, Sendable {
    /// The system call or operation that failed, such as `connect`.
    public let call: String
    /// What the call acted on, usually `ip:port`; empty when there is none.
    public let subject: String
    /// The errno value, or 0 for errors that did not come from the kernel (time-outs, parse errors).
    public let code: Int32
    private let reason: String

    public init(call: String, subject: String = "", errno code: Int32) {
        self.call = call
        self.subject = subject
        self.code = code
        self.reason = SocketError.describe(errno: code)
    }

    public init(call: String, subject: String = "", reason: String) {
        self.call = call
        self.subject = subject
        self.code = 0
        self.reason = reason
    }

    public var description: String {
        subject.isEmpty ? "\(call): \(reason)" : "\(call) \(subject): \(reason)"
    }

    public var isTimeout: Bool { code == ETIMEDOUT || reason.hasPrefix("timed out") }
    public var isConnectionRefused: Bool { code == ECONNREFUSED }

    /// strerror text with a lower-case first letter, as in `connection refused`.
    static func describe(errno code: Int32) -> String {
        guard let text = strerror(code) else { return "errno \(code)" }
        let message = String(cString: text)
        guard let first = message.first else { return "errno \(code)" }
        return first.lowercased() + message.dropFirst()
    }

    static func timedOut(_ call: String, _ subject: String, after duration: Duration) -> SocketError {
        SocketError(call: call, subject: subject, reason: "timed out after \(formatDuration(duration))")
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
