import CStunturnSystem
import Glibc
import Synchronization

/// A non-blocking Unix-domain stream socket that owns its descriptor: the agent's admin socket
/// and the clients that ask it. It has a path on this machine instead of an address, and the
/// file's permissions decide who may connect.
public final class UnixSocket: Sendable, CustomStringConvertible {
    /// The longest path a Unix socket address holds (sun_path less its terminating NUL).
    public static let maximumPathLength = 107
    /// What `listener(at:)` appends to the path for the name it binds before renaming.
    public static let stagingSuffix = ".new"

    private let descriptor: Atomic<Int32>
    /// The path it listens at, or the path it connected to.
    public let path: String

    /// The descriptor, or -1 once closed.
    public var fd: Int32 { descriptor.load(ordering: .acquiring) }
    public var isOpen: Bool { fd >= 0 }
    public var description: String { "unix socket \(path)" }

    private init(fd: Int32, path: String) {
        self.descriptor = Atomic(fd)
        self.path = path
    }

    deinit { close() }

    /// Closes the descriptor now; later calls do nothing.
    public func close() {
        let fd = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { Glibc.close(fd) }
    }

    private static func open(_ path: String) throws -> UnixSocket {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(AF_UNIX, type, 0)
        guard fd >= 0 else { throw SocketError(call: "socket", subject: path, errno: errno) }
        // Never die of SIGPIPE when a client goes away before it has its answer.
        SystemIO.ignoreSIGPIPE()
        return UnixSocket(fd: fd, path: path)
    }

    /// Runs `body` with `path` as a socket address; returns its result and errno right after it.
    private static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) throws -> (Int32, Int32) {
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, bytes.count <= maximumPathLength, !bytes.contains(0) else {
            throw SocketError(.invalidAddress, call: "unix socket", subject: path,
                              reason: "a socket path is 1-\(maximumPathLength) bytes, got \(bytes.count)")
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                let result = body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
                return (result, errno)
            }
        }
    }

    /// Sends one datagram to the Unix datagram socket at `path` (a leading `@` names the abstract
    /// namespace, as `$NOTIFY_SOCKET` does), from a socket of its own; fails rather than blocks.
    public static func sendDatagram(_ bytes: [UInt8], to path: String) throws {
        var name = Array(path.utf8)
        let abstract = name.first == UInt8(ascii: "@")
        if abstract { name[0] = 0 }
        guard name.count >= 2 || !abstract, !name.isEmpty, name.count <= maximumPathLength + 1,
              abstract || !name.contains(0) else {
            throw SocketError(.invalidAddress, call: "sendto", subject: path, reason: "not a Unix socket path")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(call: "socket", subject: path, errno: errno) }
        defer { Glibc.close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
        // The abstract name's length is part of it: no trailing zeros.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count + (abstract ? 0 : 1))
        let (sent, code) = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                let result = bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), address, length) }
                return (result, errno)
            }
        }
        guard sent == bytes.count else { throw SocketError(call: "sendto", subject: path, errno: code) }
    }

    /// Listens at `path`, the file taking `mode`. The socket is bound at `path` + ".new",
    /// given its mode and made to listen, and only then renamed to `path`: whatever was there (a
    /// stale socket) is replaced in one step, and a client never finds a socket at `path` that
    /// refuses it, or that anyone else may use, while the listener is starting.
    public static func listener(at path: String, mode: UInt32 = 0o600, backlog: Int32 = 16) throws -> UnixSocket {
        let staging = path + stagingSuffix
        let socket = try open(path)
        // Left behind by a process killed while it started.
        if SystemIO.fileStatus(staging)?.kind == .socket { SystemIO.removeFile(staging) }
        let (bound, bindError) = try withAddress(staging) { Glibc.bind(socket.fd, $0, $1) }
        guard bound == 0 else { throw SocketError(call: "bind", subject: staging, errno: bindError) }
        do {
            guard chmod(staging, mode_t(mode)) == 0 else { throw SocketError(call: "chmod", subject: staging, errno: errno) }
            guard Glibc.listen(socket.fd, backlog) == 0 else { throw SocketError(call: "listen", subject: staging, errno: errno) }
            guard rename(staging, path) == 0 else { throw SocketError(call: "rename", subject: "\(staging) to \(path)", errno: errno) }
        } catch {
            SystemIO.removeFile(staging)
            throw error
        }
        return socket
    }

    /// Whether a listener answers at `path`, asked once without waiting.
    public enum Probe: Sendable {
        /// Something listens there (a full backlog counts: it is busy, not gone).
        case listening
        /// Nothing is at the path.
        case missing
        /// A socket file whose listener has gone (ECONNREFUSED): a stale one.
        case refused
        /// Anything else (permission denied, not a socket); the error says what.
        case failed(SocketError)
    }

    /// Connects to `path` once and closes at once: who, if anyone, listens there.
    public static func probe(_ path: String) -> Probe {
        do {
            let socket = try open(path)
            defer { socket.close() }
            let (result, code) = try withAddress(path) { Glibc.connect(socket.fd, $0, $1) }
            if result == 0 { return .listening }
            switch code {
            case EAGAIN: return .listening
            case ENOENT: return .missing
            case ECONNREFUSED: return .refused
            default: return .failed(SocketError(call: "connect", subject: path, errno: code))
            }
        } catch let error as SocketError {
            return .failed(error)
        } catch {
            return .failed(SocketError(.failed, call: "connect", subject: path, reason: "\(error)"))
        }
    }

    /// How long a client waits before it tries a listener with a full backlog again.
    private static let busyRetry: Duration = .milliseconds(20)

    /// Connects to the socket at `path`. A listener whose backlog is full is tried again until
    /// `deadline`; anything else (no file, no listener) fails at once.
    public static func connect(to path: String, until deadline: ContinuousClock.Instant) async throws -> UnixSocket {
        while true {
            let socket = try open(path)
            let (result, code) = try withAddress(path) { Glibc.connect(socket.fd, $0, $1) }
            if result == 0 { return socket }
            socket.close()
            switch code {
            case EINTR:
                continue
            case EAGAIN:
                guard ContinuousClock.now + busyRetry < deadline else {
                    throw SocketError(.timedOut, call: "connect", subject: path, reason: "the listener stayed busy")
                }
                try await Task.sleep(for: busyRetry)
            default:
                throw SocketError(call: "connect", subject: path, errno: code)
            }
        }
    }

    /// Accepts one connection, or nil when none is pending.
    public func accept() throws -> UnixSocket? {
        let fd = try ensureOpen("accept")
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let accepted = try withUnsafeMutablePointer(to: &storage) { pointer in
            try retryingSyscall("accept", path) { stunturn_accept_nonblocking(fd, pointer, &length) }
        }
        return accepted.map { UnixSocket(fd: $0, path: path) }
    }

    /// Accepts one connection, waiting until `deadline` (nil: until the task is cancelled).
    public func accept(until deadline: ContinuousClock.Instant?) async throws -> UnixSocket {
        while true {
            if let accepted = try accept() { return accepted }
            try await wait(.read, until: deadline, call: "accept")
        }
    }

    /// Reads whatever arrives next (at most `maxLength` bytes); an empty array means end-of-file.
    public func readSome(maxLength: Int, until deadline: ContinuousClock.Instant?) async throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: maxLength)
        while true {
            let fd = try ensureOpen("read")
            let result = try buffer.withUnsafeMutableBytes { buffer in
                try retryingSyscall("read", path) { Glibc.read(fd, buffer.baseAddress, buffer.count) }
            }
            switch result {
            case 0?: return []
            case let n?: return Array(buffer[0..<n])
            case nil: try await wait(.read, until: deadline, call: "read")
            }
        }
    }

    /// Writes all of `bytes`, waiting for buffer space until `deadline`.
    public func writeAll(_ bytes: [UInt8], until deadline: ContinuousClock.Instant?) async throws {
        var sent = 0
        while sent < bytes.count {
            let fd = try ensureOpen("send")
            let n = try bytes.withUnsafeBytes { bytes in
                try retryingSyscall("send", path) {
                    Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
                }
            }
            if let n { sent += n } else { try await wait(.write, until: deadline, call: "send") }
        }
    }

    /// Shuts down the sending direction: the peer reads end-of-file.
    public func shutdownWrite() {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    private func ensureOpen(_ call: String) throws -> Int32 {
        let fd = self.fd
        guard fd >= 0 else { throw SocketError(.closed, call: call, subject: path, reason: "socket already closed") }
        return fd
    }

    private func wait(_ interest: Readiness.Interest, until deadline: ContinuousClock.Instant?, call: String) async throws {
        if let deadline, deadline <= .now {
            throw SocketError(.timedOut, call: call, subject: path, reason: "timed out")
        }
        switch await Readiness.wait(fd: try ensureOpen(call), for: interest, deadline: deadline) {
        case .ready: return
        case .timedOut: throw SocketError(.timedOut, call: call, subject: path, reason: "timed out")
        case .cancelled: throw SocketError.cancelled(call, path)
        case .failed(let error): throw error
        }
    }
}

// MARK: files

extension SystemIO {
    /// What is at a path, without following a symbolic link: its kind, owner, permission bits and
    /// identity (a socket that was replaced has a new one).
    public struct FileStatus: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case socket, directory, symbolicLink, other }
        public let kind: Kind
        public let owner: UInt32
        /// The permission bits, such as 0o700.
        public let permissions: UInt32
        public let device: UInt64
        public let inode: UInt64
    }

    /// The status of `path`; nil when nothing is there (or it cannot be looked at).
    public static func fileStatus(_ path: String) -> FileStatus? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        let kind: FileStatus.Kind
        switch info.st_mode & S_IFMT {
        case S_IFSOCK: kind = .socket
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symbolicLink
        default: kind = .other
        }
        return FileStatus(kind: kind, owner: info.st_uid, permissions: UInt32(info.st_mode & 0o7777),
                          device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Creates a directory with `mode`; one already there is no error (check it with `fileStatus`).
    public static func makeDirectory(_ path: String, mode: UInt32) throws {
        guard mkdir(path, mode_t(mode)) == 0 || errno == EEXIST else { throw SocketError(call: "mkdir", subject: path, errno: errno) }
    }

    /// Sets a file's permission bits.
    public static func setPermissions(_ path: String, _ mode: UInt32) throws {
        guard chmod(path, mode_t(mode)) == 0 else { throw SocketError(call: "chmod", subject: path, errno: errno) }
    }

    /// Removes a file (not a directory); a file already gone is no error.
    public static func removeFile(_ path: String) {
        _ = unlink(path)
    }

    /// The real user id of this process.
    public static var userID: UInt32 { getuid() }

    /// The id of this process.
    public static var processID: Int32 { getpid() }
}
