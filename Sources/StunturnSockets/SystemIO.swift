#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Raw descriptor I/O for the data path, which also carries pipes (stdin/stdout) besides sockets.
public enum SystemIO {
    /// Reads into `buffer`; retries EINTR, reports would-block and end-of-file.
    @inline(__always)
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws -> ReadResult {
        guard let n = try retryingSyscall("read", "fd \(fd)", { Glibc.read(fd, buffer.baseAddress, buffer.count) }) else {
            return .wouldBlock
        }
        return n == 0 ? .endOfFile : .bytes(n)
    }

    /// Writes what the kernel takes now; nil when nothing could be written. Sockets use send with
    /// MSG_NOSIGNAL so a closed peer is an error, not a signal.
    @inline(__always)
    public static func write(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, isSocket: Bool) throws -> Int? {
        if isSocket {
            return try retryingSyscall("send", "fd \(fd)") { Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL)) }
        }
        return try retryingSyscall("write", "fd \(fd)") { Glibc.write(fd, buffer.baseAddress, buffer.count) }
    }

    public static func setNonBlocking(_ fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL)
        _ = try retryingSyscall("fcntl", "fd \(fd)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// Ends the sending direction: shutdown for a socket; for a pipe, closing is the only way.
    public static func shutdownWrite(_ fd: Int32, isSocket: Bool) {
        if isSocket { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) } else { _ = Glibc.close(fd) }
    }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Ignore SIGPIPE process-wide: a relay must survive writing to a peer that just closed.
    public static func ignoreSIGPIPE() { signal(SIGPIPE, SIG_IGN) }

    public static let standardInput: Int32 = STDIN_FILENO
    public static let standardOutput: Int32 = STDOUT_FILENO
}
