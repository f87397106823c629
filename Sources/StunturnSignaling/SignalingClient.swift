import StunturnSockets

/// The transport a pairing is for.
public enum TransportKind: String, Sendable, CaseIterable {
    case tcp, udp
}

/// Whether a session may travel through the signaling server's relay.
public enum RelayPolicy: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Direct and relayed attempts together; the relay carries the session only when no direct
    /// path is up in time.
    case auto
    /// Direct paths only (the original protocol's behaviour).
    case never
    /// Always through the relay.
    case only

    public var description: String { rawValue }
}

/// What the signaling server told one side about the other: enough to punch a hole.
public struct PeerRendezvous: Sendable, CustomStringConvertible {
    public let transport: TransportKind
    public let role: SignalRole
    /// The peer's public `ip:port` as the server reported it.
    public let peerAddress: SocketAddress
    /// The local address to punch from: the signaling connection's (TCP) or the discovered socket's (UDP).
    public let localAddress: SocketAddress
    /// For UDP, the socket whose public mapping the peer was told; punch and send with it.
    public let udpSocket: Socket?
    /// For TCP, the signaling connection, kept open until the punch has bound its port: closed
    /// earlier, the system could hand that port to another connection in between.
    public let signalingSocket: Socket?
    /// The relay the server granted this pairing (TCP), to be joined with `SignalingClient.joinRelay`.
    public var relayID: String?
    /// Why the server will not relay this pairing, when this side asked it to.
    public var relayRefused: String?
    /// The peer's relay policy, when its hello gave one.
    public var peerRelay: RelayPolicy?
    /// The peer's host candidates (its own addresses, for a peer on the same network), at most 8.
    public var peerCandidates: [SocketAddress] = []

    public var description: String { "\(transport) \(role) \(localAddress) -> \(peerAddress)" }
}

/// Talks to a signaling server: the Swift counterpart of the original GetTCPPeer / GetUDPPeer /
/// GetClientPeer calls, async, with time-outs that hold.
public struct SignalingClient: Sendable {
    /// The server as `host:port`.
    public var server: String
    /// Binds the signaling socket here first (the original API's custom dialer); nil picks any.
    public var localAddress: SocketAddress?
    /// Connecting to the server; a server that is down fails fast.
    public var connectTimeout: Duration = .seconds(5)
    /// STUN discovery of the public UDP address.
    public var discoveryTimeout: Duration = .seconds(5)
    /// Offered in TCP hellos: whether this side may use the server's relay. Nil sends no relay
    /// field, as the original clients do.
    public var relay: RelayPolicy?
    /// The operator's token, presented in every hello when set.
    public var token: String?
    /// Announce this machine's interface addresses with the signaling port in TCP hellos, so a
    /// peer on the same network connects directly even where the router does not hairpin.
    public var announceHostCandidates = false

    public init(server: String, localAddress: SocketAddress? = nil) {
        self.server = server
        self.localAddress = localAddress
    }

    /// As initiator, waits at the server until a receiver with the same key arrives.
    /// - Parameters:
    ///   - targetIP: the receiver's public IP, for servers that match on it; empty matches by key alone.
    ///   - timeout: how long to wait in all; the server's own limit (30 s by default) may end it first.
    ///   - exclusive: send the original protocol's hello (no role field), so the server refuses a
    ///     second initiator on the same key, as the original did.
    public func requestTCPPeer(key: String, targetIP: String = "", timeout: Duration = .seconds(35),
                               exclusive: Bool = false) async throws -> PeerRendezvous {
        let hello = ClientHello(key: key, targetIP: Self.canonicalIP(targetIP), transport: "tcp", role: exclusive ? nil : .initiator,
                                relay: relay?.rawValue, token: token)
        return try await waitForPeer { try await exchange(hello, timeout: timeout, udpSocket: nil) }
    }

    /// As initiator for UDP: discovers the public UDP address, then waits for a receiver.
    public func requestUDPPeer(key: String, targetIP: String = "", timeout: Duration = .seconds(35)) async throws -> PeerRendezvous {
        let (socket, mapped) = try await discoverUDP()
        let hello = ClientHello(key: key, targetIP: Self.canonicalIP(targetIP), transport: "udp", address: mapped.description,
                                role: .initiator, relay: relay?.rawValue, token: token)
        return try await waitForPeer { try await exchange(hello, timeout: timeout, udpSocket: socket) }
    }

    /// An initiator's wait that ends without a peer (the server's time-out, or ours while the
    /// server held the connection) means nobody is exposing with this key: said so, for the side
    /// that is waiting.
    private func waitForPeer(_ exchange: () async throws -> PeerRendezvous) async throws -> PeerRendezvous {
        do {
            return try await exchange()
        } catch let error as SignalingError where error.code == .noPeer {
            throw SignalingError(.noPeer, "no peer with this key is exposing at \(server) (is the other side running, with the same key?)",
                                 underlying: error)
        }
    }

    /// An IP in the form servers print it (2001:DB8:0::1 becomes 2001:db8::1), since servers that
    /// match on it compare text; anything else is sent as given.
    static func canonicalIP(_ text: String) -> String {
        guard !text.isEmpty else { return text }
        return SocketAddress(ip: text, port: 0)?.ip ?? text
    }

    /// As receiver: asks for a waiting initiator, long-polling up to `wait` when the server supports it.
    /// Returns nil when nobody is waiting.
    /// - Parameter udp: also discover a public UDP address, so a UDP initiator can be answered.
    /// `onConnected` runs once the server has taken the connection, before the wait.
    public func pollForInitiator(key: String, wait: Duration? = nil, udp: Bool = false,
                                 onConnected: (@Sendable () -> Void)? = nil) async throws -> PeerRendezvous? {
        var socket: Socket?
        var address = ""
        if udp {
            let (s, mapped) = try await discoverUDP()
            socket = s
            address = mapped.description
        }
        let seconds = wait.map { Int(max(1, $0.components.seconds)) }
        let hello = ClientHello(key: key, transport: "", address: address, role: .receiver, wait: seconds, relay: relay?.rawValue,
                                token: token)
        do {
            // The server answers a long-poll by its deadline; allow for its coarse timer and the network.
            return try await exchange(hello, timeout: (wait ?? .zero) + .seconds(10), udpSocket: socket, onConnected: onConnected)
        } catch let error as SignalingError where error.code == .noInitiator {
            return nil
        }
    }

    /// Joins the relay the server granted `rendezvous`: a new connection to the server that, once
    /// both sides are on it, carries their bytes to each other. Returns the connection, ready for
    /// the tunnel handshake, and the peer's address as the server saw it.
    public func joinRelay(_ rendezvous: PeerRendezvous, key: String, timeout: Duration = .seconds(12)) async throws -> (Socket, SocketAddress) {
        guard let relayID = rendezvous.relayID else {
            throw SignalingError(.server, "the server did not grant a relay for this pairing\(rendezvous.relayRefused.map { ": \($0)" } ?? "")")
        }
        let hello = ClientHello(key: key, transport: ClientHello.relayTransport, role: rendezvous.role, relayID: relayID, token: token)
        let serverAddress = try await resolveServer()
        let deadline = ContinuousClock.now + timeout
        let socket = try Socket(.stream, family: serverAddress.family)
        var keepOpen = false
        defer { if !keepOpen { socket.close() } }
        do {
            try await socket.connect(to: serverAddress, until: min(deadline, .now + connectTimeout), timeout: connectTimeout)
            try await socket.writeAll(hello.encoded(), until: deadline)
            // The peer's first bytes may follow the reply at once: take the reply's bytes only.
            var buffer: [UInt8] = []
            while true {
                let byte = try await socket.readSome(maxLength: 1, until: deadline)
                if byte.isEmpty { throw SignalingError.transport("relay at \(server) closed the connection without a reply") }
                buffer += byte
                if case .complete = JSONObjectScanner.scan(buffer) { break }
                if buffer.count > 4096 { throw SignalingError.malformed("relay at \(server) sent an oversized reply") }
            }
            // The writer's trailing newline belongs to the reply too.
            _ = try await socket.readExactly(1, until: deadline)
            let reply = try ServerReply.decode(buffer)
            guard reply.error.isEmpty else { throw SignalingError.server(reply.error) }
            guard reply.transport == ClientHello.relayTransport, let peer = try? SocketAddress(parsing: reply.peerAddress) else {
                throw SignalingError.malformed("relay at \(server) sent an unexpected reply")
            }
            try? socket.setKeepAlive()
            keepOpen = true
            return (socket, peer)
        } catch let error as SocketError {
            if error.code == .timedOut {
                throw SignalingError(.timedOut, "relay at \(server): the peer did not join within \(formatDuration(timeout))", underlying: error)
            }
            throw SignalingError.transport("relay at \(server): \(error)", underlying: error)
        }
    }

    /// Discovers this machine's public UDP address with the server's STUN responder, on a new socket.
    public func discoverUDP() async throws -> (Socket, SocketAddress) {
        let serverAddress = try await resolveServer()
        let bind = localAddress.map { $0.withPort(0) } ?? .any(serverAddress.family)
        let socket = try Socket.udp(on: bind, reuse: true)
        let mapped = try await STUNClient.discover(server: serverAddress, using: socket, timeout: discoveryTimeout)
        return (socket, mapped)
    }

    func resolveServer() async throws -> SocketAddress {
        do {
            return try await SocketAddress.resolveAsync(server)[0]
        } catch let error as SocketError {
            throw SignalingError.transport("signaling server \(server): \(error)", underlying: error)
        }
    }

    private func exchange(_ hello: ClientHello, timeout: Duration, udpSocket: Socket?,
                          onConnected: (@Sendable () -> Void)? = nil) async throws -> PeerRendezvous {
        let serverAddress = try await resolveServer()
        let deadline = ContinuousClock.now + timeout
        let socket = try Socket(.stream, family: serverAddress.family)
        var keepOpen = false
        defer { if !keepOpen { socket.close() } }
        // Reuse lets the hole punch bind this same port while the socket is still closing.
        try socket.setReuse()
        // Bind explicitly (port 0 when no address is given): a port taken by bind() is never
        // handed to other connections' automatic binding, which would later make the punch's
        // own bind of this port fail with "address already in use".
        try socket.bind(to: localAddress ?? .any(serverAddress.family))
        var hello = hello
        if announceHostCandidates, udpSocket == nil, hello.transport == "tcp" || hello.effectiveRole == .receiver {
            let port = try socket.localAddress().port
            let own = SocketAddress.interfaceAddresses(serverAddress.family).prefix(8)
            if !own.isEmpty { hello.candidates = own.map { $0.withPort(port).description }.joined(separator: ",") }
        }
        var waiting = false
        do {
            try await socket.connect(to: serverAddress, until: min(deadline, .now + connectTimeout), timeout: connectTimeout)
            // A long wait at the server (a receiver's long-poll, an initiator waiting for its
            // peer) must neither outlive a NAT's idle time-out nor die unnoticed when a router
            // forgets its mapping: probes after 5 s of quiet keep the mapping, and a reset or three
            // unanswered probes end the wait within seconds instead of at its time-out.
            try? socket.setKeepAlive(idle: 5, interval: 2, count: 3)
            try await socket.writeAll(hello.encoded(), until: deadline)
            waiting = true
            onConnected?()
            let local = try socket.localAddress()
            let reply = try await readReply(socket, until: deadline)
            guard reply.error.isEmpty else { throw SignalingError.server(reply.error) }
            let peer: SocketAddress
            do {
                peer = try SocketAddress(parsing: reply.peerAddress)
            } catch {
                throw SignalingError.malformed("signaling server \(server) sent an unusable peer address '\(reply.peerAddress)': \(error)",
                                               underlying: error)
            }
            let transport = TransportKind(rawValue: reply.transport) ?? (udpSocket != nil ? .udp : .tcp)
            let localForPunch = transport == .udp ? (try udpSocket?.localAddress() ?? local) : local
            if transport == .udp && udpSocket == nil {
                throw SignalingError.malformed("signaling server \(server) paired a UDP initiator with a TCP-only receiver")
            }
            keepOpen = transport == .tcp
            var rendezvous = PeerRendezvous(transport: transport, role: hello.effectiveRole, peerAddress: peer,
                                            localAddress: localForPunch, udpSocket: transport == .udp ? udpSocket : nil,
                                            signalingSocket: keepOpen ? socket : nil)
            rendezvous.relayID = reply.relayID
            rendezvous.relayRefused = reply.relayRefused
            rendezvous.peerRelay = reply.peerRelay.flatMap(RelayPolicy.init(rawValue:))
            if transport == .tcp, let text = reply.peerCandidates {
                // Leniently: a candidate that does not parse, or one that is this very socket, is skipped.
                rendezvous.peerCandidates = text.split(separator: ",").prefix(8)
                    .compactMap { try? SocketAddress(parsing: String($0)) }
                    .filter { $0 != local && $0 != peer && $0.port != 0 && !$0.isLoopback && !$0.isUnspecified && !$0.isMulticast }
            }
            return rendezvous
        } catch let error as SocketError {
            if error.code == .timedOut && error.errno != 0 {
                // The kernel's time-out (keepalive probes unanswered): the path to the server died.
                throw SignalingError.transport("signaling server \(server): the connection was lost while waiting (\(error))", underlying: error)
            }
            if error.code == .timedOut {
                // Our own deadline: the server took the hello and held the initiator, with no peer for it.
                if waiting && hello.effectiveRole == .initiator { throw SignalingError(.noPeer, "\(error)", underlying: error) }
                throw SignalingError(.timedOut, "signaling server \(server): no answer within \(formatDuration(timeout)) (\(error))",
                                     underlying: error)
            }
            throw SignalingError.transport("signaling server \(server): \(error)", underlying: error)
        }
    }

    private func readReply(_ socket: Socket, until deadline: ContinuousClock.Instant) async throws -> ServerReply {
        var buffer: [UInt8] = []
        while true {
            let chunk = try await socket.readSome(maxLength: 4096, until: deadline)
            if chunk.isEmpty {
                if buffer.isEmpty { throw SignalingError.transport("signaling server \(server) closed the connection without a reply") }
                break
            }
            buffer += chunk
            switch JSONObjectScanner.scan(buffer) {
            case .complete(let end):
                buffer = Array(buffer[0..<end])
            case .invalid:
                throw notSignaling(buffer)
            case .incomplete:
                if buffer.count > 65536 { throw SignalingError.malformed("signaling server \(server) sent an oversized reply") }
                continue
            }
            break
        }
        do {
            return try ServerReply.decode(buffer)
        } catch {
            throw notSignaling(buffer)
        }
    }

    /// What a server that is not a stunturn signaling server (a web server, sshd) said, as an error.
    private func notSignaling(_ reply: [UInt8]) -> SignalingError {
        let firstLine = reply.prefix(while: { $0 != 10 && $0 != 13 }).prefix(60)
        let shown = String(decoding: firstLine.map { (0x20...0x7E).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
        return SignalingError.malformed("\(server) does not speak the stunturn signaling protocol (it answered '\(shown)'); check --server / 'server:'")
    }
}

/// Finds the public address a STUN server sees for a UDP socket.
public enum STUNClient {
    /// Sends Binding requests (retransmitted with back-off) until a response arrives or `timeout`.
    /// Accepts an RFC 5389 Binding success and the original server's plain-text `ip:port`.
    public static func discover(server: SocketAddress, using socket: Socket, timeout: Duration) async throws -> SocketAddress {
        let deadline = ContinuousClock.now + timeout
        let request = STUNMessage.bindingRequest()
        let bytes = request.encode(fingerprint: true)
        var interval = Duration.milliseconds(200)
        while ContinuousClock.now < deadline {
            try await socket.send(bytes, to: server, until: deadline)
            let retry = min(deadline, .now + interval)
            interval = min(interval * 2, .seconds(1))
            while ContinuousClock.now < retry {
                let datagram: [UInt8]
                let from: SocketAddress
                do {
                    (datagram, from) = try await socket.receive(maxLength: 2048, until: retry)
                } catch let error as SocketError where error.code == .timedOut {
                    break
                }
                guard from == server || from.port == server.port else { continue }
                if let mapped = parseResponse(datagram, transactionID: request.transactionID) { return mapped }
            }
        }
        throw SocketError(.timedOut, call: "stun", subject: server.description, reason: "no response within \(formatDuration(timeout))")
    }

    /// Discovers against `host:port` from a fresh socket.
    public static func discover(server: String, timeout: Duration = .seconds(5)) async throws -> SocketAddress {
        let address = try await SocketAddress.resolveAsync(server)[0]
        let socket = try Socket.udp(on: .any(address.family))
        defer { socket.close() }
        return try await discover(server: address, using: socket, timeout: timeout)
    }

    /// The mapped address in a STUN success response with our transaction ID, or in a text reply.
    public static func parseResponse(_ datagram: [UInt8], transactionID: [UInt8]) -> SocketAddress? {
        if STUNMessage.looksLikeSTUN(datagram) {
            guard let message = try? STUNMessage.decode(datagram), message.transactionID == transactionID,
                  message.messageType == .bindingSuccess else { return nil }
            return message.xorMappedAddress ?? message.mappedAddress
        }
        return try? SocketAddress(parsing: String(decoding: datagram, as: UTF8.self))
    }
}
