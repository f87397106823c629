import Dispatch
import Glibc
import Synchronization

/// An IPv4 or IPv6 address with a port; IPv4-mapped IPv6 addresses are stored as IPv4.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public enum Family: Sendable { case ipv4, ipv6 }

    /// 4 bytes for IPv4, 16 for IPv6, network order.
    public let addressBytes: [UInt8]
    public let port: UInt16
    public let scopeID: UInt32

    public var family: Family { addressBytes.count == 4 ? .ipv4 : .ipv6 }

    /// An IPv4 or IPv6 literal; an IPv6 one may come bracketed (`[2001:db8::1]`), as in URLs and
    /// `[v6]:port`.
    public init?(ip: String, port: UInt16) {
        if ip.hasPrefix("[") && ip.hasSuffix("]") && ip.count > 2 {
            self.init(ip: String(ip.dropFirst().dropLast()), port: port)
            return
        }
        var v4 = in_addr()
        if inet_pton(AF_INET, ip, &v4) == 1 {
            self.init(bytes: withUnsafeBytes(of: &v4) { Array($0) }, port: port)
            return
        }
        var literal = ip
        var scope: UInt32 = 0
        if let percent = ip.firstIndex(of: "%") {
            literal = String(ip[..<percent])
            scope = if_nametoindex(String(ip[ip.index(after: percent)...]))
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, literal, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        self.init(bytes: bytes, port: port, scopeID: scope)
    }

    public init(bytes: [UInt8], port: UInt16, scopeID: UInt32 = 0) {
        // ::ffff:a.b.c.d is how a dual-stack socket sees an IPv4 peer; keep it as IPv4 so it compares equal.
        if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            self.addressBytes = Array(bytes[12..<16])
            self.scopeID = 0
        } else {
            self.addressBytes = bytes
            self.scopeID = scopeID
        }
        self.port = port
    }

    /// Parses `a.b.c.d:port` or `[v6]:port` (IP literals only; see `resolve` for host names).
    public init(parsing text: String) throws {
        let (host, port) = try SocketAddress.splitHostPort(text)
        guard let address = SocketAddress(ip: host, port: port) else {
            throw SocketError(.invalidAddress, call: "parse address", subject: text, reason: "not an IP literal")
        }
        self = address
    }

    /// Splits `host:port` / `[v6]:port`; IPv6 is never split on its colons.
    public static func splitHostPort(_ text: String) throws -> (host: String, port: UInt16) {
        let bad = { (why: String) in SocketError(.invalidAddress, call: "parse address", subject: text, reason: why) }
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw bad("missing ']'") }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw bad("expected ':port' after ']'") }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw bad("expected HOST:PORT") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { throw bad("IPv6 addresses must be bracketed, as in [::1]:7000") }
        }
        guard !host.isEmpty else { throw bad("missing host") }
        guard let port = UInt16(portText), port > 0 else { throw bad("port must be 1-65535, got '\(portText)'") }
        return (String(host), port)
    }

    /// Resolves `host:port` (IP literal or DNS name) to addresses, IPv4 first.
    public static func resolve(_ text: String) throws -> [SocketAddress] {
        let (host, port) = try splitHostPort(text)
        if let literal = SocketAddress(ip: host, port: port) { return [literal] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw SocketError(.resolutionFailed, call: "resolve", subject: text, reason: String(cString: gai_strerror(rc)))
        }
        defer { freeaddrinfo(first) }
        var addresses: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let sa = info.pointee.ai_addr, let address = SocketAddress(sockaddr: sa) {
                if !addresses.contains(address) { addresses.append(address) }
            }
            cursor = info.pointee.ai_next
        }
        guard !addresses.isEmpty else { throw SocketError(.resolutionFailed, call: "resolve", subject: text, reason: "no addresses") }
        return addresses.sorted { $0.family == .ipv4 && $1.family != .ipv4 }
    }

    /// Resolves like `resolve`, but a DNS lookup runs on a Dispatch thread: a slow resolver must
    /// not hold one of the few threads async code shares.
    /// Cancellation ends the wait at once (a lookup that answers later is dropped), so a resolver
    /// that hangs cannot hold up a shutdown.
    public static func resolveAsync(_ text: String) async throws -> [SocketAddress] {
        let (host, port) = try splitHostPort(text)
        if let literal = SocketAddress(ip: host, port: port) { return [literal] }
        let lookup = PendingLookup()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                guard lookup.wait(continuation) else { return }
                DispatchQueue.global().async { lookup.finish(Result { try resolve(text) }) }
            }
        } onCancel: {
            lookup.finish(.failure(SocketError(.cancelled, call: "resolve", subject: text, reason: "cancelled")))
        }
    }

    public init?(sockaddr pointer: UnsafePointer<sockaddr>) {
        switch Int32(pointer.pointee.sa_family) {
        case AF_INET:
            let sin = UnsafeRawPointer(pointer).load(as: sockaddr_in.self)
            var a = sin.sin_addr
            self.init(bytes: withUnsafeBytes(of: &a) { Array($0) }, port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = UnsafeRawPointer(pointer).load(as: sockaddr_in6.self)
            var a = sin6.sin6_addr
            self.init(bytes: withUnsafeBytes(of: &a) { Array($0) }, port: UInt16(bigEndian: sin6.sin6_port),
                      scopeID: sin6.sin6_scope_id)
        default:
            return nil
        }
    }

    /// The same address with another port.
    public func withPort(_ port: UInt16) -> SocketAddress {
        SocketAddress(bytes: addressBytes, port: port, scopeID: scopeID)
    }

    /// The wildcard address of a family with a port.
    public static func any(_ family: Family, port: UInt16 = 0) -> SocketAddress {
        SocketAddress(bytes: [UInt8](repeating: 0, count: family == .ipv4 ? 4 : 16), port: port)
    }

    public static func loopback(_ family: Family = .ipv4, port: UInt16 = 0) -> SocketAddress {
        family == .ipv4 ? SocketAddress(bytes: [127, 0, 0, 1], port: port)
            : SocketAddress(bytes: [UInt8](repeating: 0, count: 15) + [1], port: port)
    }

    public var isUnspecified: Bool { addressBytes.allSatisfy { $0 == 0 } }
    public var isLoopback: Bool {
        family == .ipv4 ? addressBytes[0] == 127 : addressBytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    /// The IP as text, without port or brackets.
    public var ip: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let af = family == .ipv4 ? AF_INET : AF_INET6
        addressBytes.withUnsafeBytes { raw in
            _ = inet_ntop(af, raw.baseAddress, &buffer, socklen_t(buffer.count))
        }
        let end = buffer.firstIndex(of: 0) ?? buffer.endIndex
        return String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String {
        family == .ipv4 ? "\(ip):\(port)" : "[\(ip)]:\(port)"
    }

    /// Calls `body` with this address as a `sockaddr` and its length.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        switch family {
        case .ipv4:
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: addressBytes) }
            return try withUnsafePointer(to: &sin) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .ipv6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            sin6.sin6_scope_id = scopeID
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: addressBytes) }
            return try withUnsafePointer(to: &sin6) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }
}

/// One DNS lookup's waiter, resumed once: by the answer or by cancellation, whichever comes first.
final class PendingLookup: Sendable {
    private enum State {
        case idle
        case waiting(CheckedContinuation<[SocketAddress], any Error>)
        case finished(Result<[SocketAddress], any Error>)
        case resumed
    }
    private let state = Mutex(State.idle)

    /// Takes the continuation; false when the outcome was already there (it is resumed now).
    func wait(_ continuation: CheckedContinuation<[SocketAddress], any Error>) -> Bool {
        let early = state.withLock { state -> Result<[SocketAddress], any Error>? in
            if case .finished(let result) = state {
                state = .resumed
                return result
            }
            state = .waiting(continuation)
            return nil
        }
        guard let early else { return true }
        continuation.resume(with: early)
        return false
    }

    func finish(_ result: Result<[SocketAddress], any Error>) {
        let waiting = state.withLock { state -> CheckedContinuation<[SocketAddress], any Error>? in
            switch state {
            case .idle:
                state = .finished(result)
                return nil
            case .waiting(let continuation):
                state = .resumed
                return continuation
            case .finished, .resumed:
                return nil
            }
        }
        waiting?.resume(with: result)
    }
}

extension SocketAddress {
    /// This machine's addresses of `family` on interfaces that are up, loopback and link-local
    /// left out: where a peer on the same network can reach it (ICE's host candidates).
    public static func interfaceAddresses(_ family: Family) -> [SocketAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var found: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            let flags = Int32(bitPattern: entry.pointee.ifa_flags)
            guard flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0, let raw = entry.pointee.ifa_addr,
                  let address = SocketAddress(sockaddr: raw), address.family == family, !address.isLoopback,
                  !address.isLinkLocal, !found.contains(address) else { continue }
            found.append(SocketAddress(bytes: address.addressBytes, port: 0))
        }
        return found
    }

    /// 224.0.0.0/4 or ff00::/8.
    public var isMulticast: Bool {
        family == .ipv4 ? addressBytes[0] & 0xf0 == 0xe0 : addressBytes[0] == 0xff
    }

    /// fe80::/10, or 169.254.0.0/16: reachable on one link only, and not without a scope.
    public var isLinkLocal: Bool {
        family == .ipv4 ? addressBytes[0] == 169 && addressBytes[1] == 254 : addressBytes[0] == 0xfe && addressBytes[1] & 0xc0 == 0x80
    }
}

