// The library surface: find a peer, punch a hole, get a socket.
@_exported import StunturnPunch
@_exported import StunturnSecure
@_exported import StunturnSignaling
@_exported import StunturnSockets

// Signaling and punching know nothing of each other; a rendezvous from the one is what the other
// punches to.

extension PeerRendezvous {
    /// The side of the punch this rendezvous is for.
    public var punchRole: PunchRole { role == .initiator ? .initiator : .receiver }
}

extension TCPHolePuncher {
    /// Punches from a rendezvous' local address to its peer.
    public static func punch(_ rendezvous: PeerRendezvous, tag: [UInt8] = defaultPunchTag,
                             options: PunchOptions = PunchOptions()) async throws -> Socket {
        // Hold the signaling connection's port until the punch sockets share it.
        defer { rendezvous.signalingSocket?.close() }
        return try await punch(local: rendezvous.localAddress, peer: rendezvous.peerAddress, alsoTry: rendezvous.peerCandidates,
                               role: rendezvous.punchRole, tag: tag, options: options)
    }
}

extension UDPHolePuncher {
    /// Punches with a rendezvous' UDP socket; returns the address the peer's datagrams come from.
    public static func punch(_ rendezvous: PeerRendezvous, tag: [UInt8] = defaultPunchTag,
                             options: PunchOptions = PunchOptions()) async throws -> SocketAddress {
        guard let socket = rendezvous.udpSocket else {
            throw PunchError(.noSocket, peer: rendezvous.peerAddress, transport: "udp", message: "the rendezvous has no UDP socket")
        }
        return try await punch(socket: socket, peer: rendezvous.peerAddress, tag: tag, options: options)
    }
}
