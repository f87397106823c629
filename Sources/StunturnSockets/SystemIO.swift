import CStunturnSystem
import Dispatch
import Synchronization
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

    /// Reads into several buffers, in order, with one call (readv); retries EINTR, reports
    /// would-block and end-of-file.
    @inline(__always)
    public static func read(_ fd: Int32, scattering vectors: UnsafeMutableBufferPointer<iovec>) throws -> ReadResult {
        guard let n = try retryingSyscall("readv", "fd \(fd)", { Glibc.readv(fd, vectors.baseAddress, Int32(vectors.count)) }) else {
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

    /// Writes several buffers, in order, with one call on a socket (sendmsg, MSG_NOSIGNAL); nil
    /// when nothing could be written.
    public static func send(_ fd: Int32, gathering buffers: [UnsafeRawBufferPointer]) throws -> Int? {
        var vectors = buffers.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        return try vectors.withUnsafeMutableBufferPointer { vectors in
            var message = msghdr()
            message.msg_iov = vectors.baseAddress
            message.msg_iovlen = vectors.count
            return try retryingSyscall("sendmsg", "fd \(fd)") { sendmsg(fd, &message, Int32(MSG_NOSIGNAL)) }
        }
    }

    public static func setNonBlocking(_ fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL)
        _ = try retryingSyscall("fcntl", "fd \(fd)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    /// Ends the sending direction: shutdown for a socket. A pipe can only end by closing, but the
    /// descriptor must stay valid while Dispatch may still watch it: /dev/null takes its place,
    /// which closes the pipe (the reader sees end-of-file) without freeing the number.
    public static func shutdownWrite(_ fd: Int32, isSocket: Bool) {
        if isSocket {
            _ = Glibc.shutdown(fd, Int32(SHUT_WR))
            return
        }
        let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        if null >= 0 {
            _ = dup2(null, fd)
            _ = Glibc.close(null)
        } else {
            _ = Glibc.close(fd)
        }
    }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Whether a socket is connected to a peer (getpeername succeeds): a non-blocking connect
    /// that reports writable with no pending error has completed only if this holds.
    public static func isConnected(_ fd: Int32) -> Bool {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
        }
    }

    /// A socket's pending error (SO_ERROR): how its non-blocking connect ended, 0 when it connected.
    public static func pendingError(_ fd: Int32) -> Int32 {
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length) == 0 else { return errno }
        return code
    }

    /// Makes the coming close of a socket send a reset instead of an orderly end (SO_LINGER 0),
    /// so its peer learns the connection broke and no TIME_WAIT is left; fails on other descriptors.
    public static func resetOnClose(_ fd: Int32) throws {
        var l = linger(l_onoff: 1, l_linger: 0)
        _ = try retryingSyscall("setsockopt SO_LINGER", "fd \(fd)") {
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        }
    }

    /// Ignore SIGPIPE process-wide: a relay must survive writing to a peer that just closed.
    public static func ignoreSIGPIPE() { signal(SIGPIPE, SIG_IGN) }

    /// Raises the soft limit on open descriptors to the hard limit: every relayed connection
    /// holds two sockets (and two pipes when spliced), and the usual soft limit of 1024 is low.
    @discardableResult
    public static func raiseOpenFileLimit() -> Int {
        var limit = rlimit()
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return -1 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(resource, &limit)
        }
        return Int(limit.rlim_cur)
    }

    /// True where splice(2) exists (Linux): plaintext relays can move bytes without copying them.
    public static var hasSplice: Bool { stunturn_has_splice() != 0 }

    #if os(Linux)
    /// A non-blocking pipe to splice through, grown to about `size` bytes; returns its capacity.
    public static func makePipe(size: Int) throws -> (read: Int32, write: Int32, capacity: Int) {
        var fds: [Int32] = [0, 0]
        guard stunturn_pipe(&fds) == 0 else { throw SocketError(call: "pipe2", errno: errno) }
        let granted = stunturn_set_pipe_size(fds[1], Int32(size))
        // Without the larger size (a lowered system limit) the default 64 KiB pipe still works.
        let capacity = granted > 0 ? Int(granted) : 65536
        return (fds[0], fds[1], capacity)
    }

    /// Moves up to `count` bytes from `source` to `destination` (one of them a pipe) in the kernel.
    @inline(__always)
    public static func splice(from source: Int32, to destination: Int32, count: Int, more: Bool = false) throws -> ReadResult {
        guard let n = try retryingSyscall("splice", "fd \(source) -> fd \(destination)", {
            stunturn_splice(source, destination, count, more ? 1 : 0)
        }) else { return .wouldBlock }
        return n == 0 ? .endOfFile : .bytes(n)
    }
    #endif

    public static let standardInput: Int32 = STDIN_FILENO
    public static let standardOutput: Int32 = STDOUT_FILENO
}

/// Gives the kernel back what malloc keeps free after a burst. glibc keeps freed blocks in its
/// heaps (a session's buffers, up to its window budget, are large blocks that come from there once
/// the allocator's mmap threshold has grown past them), so a long-running agent's resident size
/// would otherwise stay at its busiest moment's. Called when a session ends. Trimming walks every
/// heap under its lock, so it runs on a queue of its own, at most once every `interval`; a call
/// within the interval schedules one trim for its end, so what later sessions freed goes back too.
public enum FreeMemory {
    private struct State {
        var last: ContinuousClock.Instant?
        var scheduled = false
    }
    private static let state = Mutex(State())
    private static let queue = DispatchQueue(label: "stunturn.free-memory", qos: .utility)

    /// Caps malloc's heaps at `count` (unless `MALLOC_ARENA_MAX` is set). glibc gives threads that
    /// allocate at once heaps of their own, up to 8 per core, and each keeps what a burst left in
    /// it; the relay's workers and Dispatch's threads need no more than a few. Called once at start.
    public static func limitHeaps(to count: Int32 = 2) {
        _ = stunturn_limit_malloc_arenas(count)
    }

    /// Trims now, or schedules the trim for the end of the interval; returns whether it trims now.
    @discardableResult
    public static func release(atMostEvery interval: Duration = .seconds(5)) -> Bool {
        let now = ContinuousClock.now
        let wait: Duration? = state.withLock { state in
            if let last = state.last, now - last < interval {
                if state.scheduled { return .zero }
                state.scheduled = true
                return interval - (now - last)
            }
            state.last = now
            return nil
        }
        guard let wait else {
            queue.async { _ = stunturn_release_free_memory() }
            return true
        }
        if wait > .zero {
            let (seconds, attoseconds) = wait.components
            let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
            queue.asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) {
                state.withLock {
                    $0.last = .now
                    $0.scheduled = false
                }
                _ = stunturn_release_free_memory()
            }
        }
        return false
    }
}
