import CStunturnSystem
import Glibc
import Synchronization

/// A non-blocking TCP or UDP socket that owns its file descriptor.
///
/// Any task may close it while another waits on it: the descriptor is an atomic, so a later call
/// sees -1 (and fails with "socket already closed") and a read of it is never torn. A call already
/// under way when the socket is closed may still use the old number.
public final class Socket: Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case stream, datagram }

    private let descriptor: Atomic<Int32>
    /// The descriptor, or -1 once closed or detached.
    public var fd: Int32 { descriptor.load(ordering: .acquiring) }
    public let kind: Kind
    public let family: SocketAddress.Family

    /// Opens a non-blocking, close-on-exec socket.
    public init(_ kind: Kind, family: SocketAddress.Family) throws {
        let domain = family == .ipv4 ? AF_INET : AF_INET6
        let type = Int32(kind == .stream ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(domain, type, 0)
        guard fd >= 0 else { throw SocketError(call: "socket", errno: errno) }
        self.descriptor = Atomic(fd)
        self.kind = kind
        self.family = family
        if kind == .stream { _ = try? setOption(Int32(IPPROTO_TCP), TCP_NODELAY, 1) }
        // Never die of SIGPIPE when writing to a closed peer (MSG_NOSIGNAL covers send, this covers write).
        Socket.ignoreSIGPIPE
    }

    /// Takes ownership of an already open descriptor (one returned by accept).
    public init(adopting fd: Int32, kind: Kind, family: SocketAddress.Family) {
        self.descriptor = Atomic(fd)
        self.kind = kind
        self.family = family
    }

    deinit { close() }

    private static let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN); return () }()

    public var description: String {
        let local = (try? localAddress()).map { "\($0)" } ?? "?"
        let remote = (try? remoteAddress()).map { " -> \($0)" } ?? ""
        return "fd \(fd) \(local)\(remote)"
    }

    public var isOpen: Bool { fd >= 0 }

    /// Closes the descriptor now; later calls do nothing.
    public func close() {
        let fd = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { Glibc.close(fd) }
    }

    /// Gives up ownership of the descriptor and returns it (-1 when already closed).
    public func detach() -> Int32 {
        descriptor.exchange(-1, ordering: .acquiringAndReleasing)
    }

    // MARK: options

    @discardableResult
    public func setOption(_ level: Int32, _ name: Int32, _ value: Int32) throws -> Self {
        var v = value
        _ = try retryingSyscall("setsockopt", "fd \(fd)") {
            setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
        }
        return self
    }

    public func getOption(_ level: Int32, _ name: Int32) throws -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        _ = try retryingSyscall("getsockopt", "fd \(fd)") { getsockopt(fd, level, name, &v, &len) }
        return v
    }

    /// SO_REUSEADDR and SO_REUSEPORT, so a listener, dialers and the signaling socket can share one port.
    @discardableResult
    public func setReuse() throws -> Self {
        try setOption(SOL_SOCKET, SO_REUSEADDR, 1)
        try setOption(SOL_SOCKET, SO_REUSEPORT, 1)
        return self
    }

    /// Sets the TTL (IPv4) or hop limit (IPv6) of outgoing packets.
    public func setHopLimit(_ hops: Int32) throws {
        if family == .ipv4 {
            try setOption(Int32(IPPROTO_IP), IP_TTL, hops)
        } else {
            try setOption(Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS, hops)
        }
    }

    /// The TTL or hop limit outgoing packets carry now.
    public func hopLimit() throws -> Int32 {
        family == .ipv4 ? try getOption(Int32(IPPROTO_IP), IP_TTL) : try getOption(Int32(IPPROTO_IPV6), IPV6_UNICAST_HOPS)
    }

    /// Restricts an IPv6 socket to IPv6 (false makes it dual-stack).
    public func setIPv6Only(_ on: Bool) throws {
        try setOption(Int32(IPPROTO_IPV6), IPV6_V6ONLY, on ? 1 : 0)
    }

    /// Probes a quiet TCP connection so that a peer that vanished (powered off, its NAT mapping
    /// gone) ends it instead of leaving it open for ever: the first probe after `idle` seconds
    /// without traffic, then every `interval`, giving up after `count` unanswered. The probes also
    /// keep a NAT's mapping alive. (No TCP_USER_TIMEOUT: it would also end a connection whose
    /// reader merely paused, its window closed, for that long.)
    public func setKeepAlive(idle: Int32 = 30, interval: Int32 = 10, count: Int32 = 3) throws {
        try setOption(SOL_SOCKET, SO_KEEPALIVE, 1)
        #if os(Linux)
        try setOption(Int32(IPPROTO_TCP), TCP_KEEPIDLE, idle)
        try setOption(Int32(IPPROTO_TCP), TCP_KEEPINTVL, interval)
        try setOption(Int32(IPPROTO_TCP), TCP_KEEPCNT, count)
        #endif
    }

    /// Close with RST instead of FIN, leaving no TIME_WAIT behind.
    public func setAbortiveClose() throws {
        try SystemIO.resetOnClose(fd)
    }

    public func setNonBlocking() throws {
        let flags = fcntl(fd, F_GETFL)
        _ = try retryingSyscall("fcntl", "fd \(fd)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    // MARK: addresses

    public func localAddress() throws -> SocketAddress {
        try address(call: "getsockname") { getsockname(fd, $0, $1) }
    }

    public func remoteAddress() throws -> SocketAddress {
        try address(call: "getpeername") { getpeername(fd, $0, $1) }
    }

    private func address(call: String, _ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) throws -> SocketAddress {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, &len) }
        }
        guard rc == 0 else { throw SocketError(call: call, subject: "fd \(fd)", errno: errno) }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress(sockaddr: $0)! }
        }
    }

    // MARK: connection set-up

    public func bind(to address: SocketAddress) throws {
        _ = try retryingSyscall("bind", "\(address)") {
            address.withSockAddr { Glibc.bind(fd, $0, $1) }
        }
    }

    public func listen(backlog: Int32 = 1024) throws {
        _ = try retryingSyscall("listen", (try? localAddress().description) ?? "fd \(fd)") { Glibc.listen(fd, backlog) }
    }

    /// Starts a connect; true when it completed at once, false when it is in progress (wait for writable).
    public func connect(to address: SocketAddress) throws -> Bool {
        while true {
            let rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
            if rc == 0 { return true }
            switch errno {
            case EINTR: continue
            case EINPROGRESS, EALREADY: return false
            case let code: throw SocketError(call: "connect", subject: "\(address)", errno: code)
            }
        }
    }

    /// Drops the errors queued on the socket (its error queue). Linux queues an ICMP error that
    /// meets a connect's SYN while the socket is busy, and the connect goes on; until the queue is
    /// read, poll reports the connected socket in error and a readiness wait keeps waking.
    public func discardQueuedErrors() {
        let fd = self.fd
        guard fd >= 0 else { return }
        var byte: UInt8 = 0
        var control = [UInt8](repeating: 0, count: 128)
        // Each read takes one error; a handful at most were queued.
        for _ in 0..<8 {
            let n = withUnsafeMutablePointer(to: &byte) { byte in
                control.withUnsafeMutableBytes { control in
                    var vector = iovec(iov_base: byte, iov_len: 1)
                    return withUnsafeMutablePointer(to: &vector) { vector in
                        var message = msghdr()
                        message.msg_iov = vector
                        message.msg_iovlen = 1
                        message.msg_control = control.baseAddress
                        message.msg_controllen = control.count
                        return recvmsg(fd, &message, Int32(MSG_ERRQUEUE) | Int32(MSG_DONTWAIT))
                    }
                }
            }
            if n < 0 && errno != EINTR { break }
        }
    }

    /// The pending error of an asynchronous connect (SO_ERROR), thrown as a `SocketError` naming `address`.
    public func finishConnect(to address: SocketAddress) throws {
        let code = try getOption(SOL_SOCKET, SO_ERROR)
        if code != 0 { throw SocketError(call: "connect", subject: "\(address)", errno: code) }
    }

    /// Accepts one connection, or nil when none is pending.
    public func accept() throws -> (Socket, SocketAddress)? {
        let fd = try ensureOpen("accept")
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let newFD = try withUnsafeMutablePointer(to: &storage) { ptr in
            try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try retryingSyscall("accept", (try? localAddress().description) ?? "fd \(fd)") {
                    stunturn_accept_nonblocking(fd, sa, &len)
                }
            }
        }
        guard let newFD else { return nil }
        let peer = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress(sockaddr: $0) }
        } ?? SocketAddress.any(family)
        let socket = Socket(adopting: newFD, kind: .stream, family: family)
        // Best effort: a connection without it still works, only small writes may wait.
        _ = try? socket.setOption(Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        return (socket, peer)
    }

    /// A socket closed by one task while another still waits on it (a listener stopped during
    /// `accept(until:)`, say) fails that call with an error, not with a call on descriptor -1.
    @inline(__always)
    @discardableResult
    private func ensureOpen(_ call: String) throws -> Int32 {
        let fd = self.fd
        guard fd >= 0 else { throw SocketError(.closed, call: call, reason: "socket already closed") }
        return fd
    }

    /// Shuts down the sending direction: the peer reads end-of-file.
    public func shutdownWrite() {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    // MARK: data

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> ReadResult {
        let fd = try ensureOpen("read")
        guard let n = try retryingSyscall("read", "fd \(fd)", { Glibc.read(fd, buffer.baseAddress, buffer.count) }) else {
            return .wouldBlock
        }
        return n == 0 ? .endOfFile : .bytes(n)
    }

    /// Writes what the kernel takes now; nil when nothing could be written. `more` holds the bytes
    /// back for more to come (MSG_MORE): a close right after sends them with the FIN in one segment.
    public func write(_ buffer: UnsafeRawBufferPointer, more: Bool = false) throws -> Int? {
        let fd = try ensureOpen("send")
        let flags = Int32(MSG_NOSIGNAL) | (more ? Int32(MSG_MORE) : 0)
        return try retryingSyscall("send", "fd \(fd)") { Glibc.send(fd, buffer.baseAddress, buffer.count, flags) }
    }

    /// Sends one datagram; false when the socket buffer is full.
    public func send(_ buffer: UnsafeRawBufferPointer, to address: SocketAddress) throws -> Bool {
        let n = try retryingSyscall("sendto", "\(address)") {
            address.withSockAddr { sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), $0, $1) }
        }
        return n != nil
    }

    /// Receives one datagram, or nil when none is queued.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> (Int, SocketAddress)? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = try withUnsafeMutablePointer(to: &storage) { ptr in
            try ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                try retryingSyscall("recvfrom", "fd \(fd)") { recvfrom(fd, buffer.baseAddress, buffer.count, 0, sa, &len) }
            }
        }
        guard let n else { return nil }
        let from = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress(sockaddr: $0) }
        } ?? SocketAddress.any(family)
        return (n, from)
    }
}

extension Socket {
    /// A listening TCP socket on `address` (port 0 picks one), with address reuse.
    public static func listener(on address: SocketAddress, reusePort: Bool = false, backlog: Int32 = 1024) throws -> Socket {
        let socket = try Socket(.stream, family: address.family)
        try socket.setOption(SOL_SOCKET, SO_REUSEADDR, 1)
        if reusePort { try socket.setOption(SOL_SOCKET, SO_REUSEPORT, 1) }
        try socket.bind(to: address)
        try socket.listen(backlog: backlog)
        return socket
    }

    /// A bound UDP socket.
    public static func udp(on address: SocketAddress, reuse: Bool = false) throws -> Socket {
        let socket = try Socket(.datagram, family: address.family)
        if reuse { try socket.setReuse() }
        try socket.bind(to: address)
        return socket
    }
}
