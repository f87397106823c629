import StunturnPunch
import StunturnSecure
import StunturnSignaling
import StunturnSockets

/// How a session reaches its peer.
public enum TunnelPath: String, Sendable, CustomStringConvertible {
    /// A punched connection between the peers.
    case direct
    /// Through the signaling server's relay, which carries the same encrypted records.
    case relay

    public var description: String { rawValue }
}

/// A connection to the peer, handshake done, and the path it took. Handed from the task that set it
/// up to the one that runs it, never used by two at once (the tunnel keys are not thread-safe).
public struct EstablishedTunnel: @unchecked Sendable {
    public let socket: Socket
    public let path: TunnelPath
    /// The tunnel's keys; nil on a plaintext forward.
    public let secured: TunnelSession?
    /// The peer as this side names it in logs: its address, and the relay's when relayed.
    public let peer: String
    /// Why the session is relayed, when it is (the direct attempt's failure, or the policy).
    public let relayReason: String?
    /// ICE's name for the candidate that carries it: `host` (the peer's own address on a shared
    /// network), `srflx` (its public address, punched) or `relay`.
    public var candidate: String = "relay"
    /// A relayed tunnel that both sides' policies would let go direct: worth trying direct again.
    public var mayGoDirect = false
}

/// How `TunnelPaths.establish` chooses among the paths.
public struct PathOptions: Sendable {
    public var relay: RelayPolicy = .auto
    /// With `auto`, how long a direct attempt has before the relay carries the session.
    public var relayAfter: Duration = .seconds(1)
    public var punch = PunchOptions()
    /// False on a plaintext forward: no handshake.
    public var encrypted = true
    public var punchTag: [UInt8] = defaultPunchTag

    public init() {}
}

/// The tunnel handshake failed on a connection that reached the peer (or something posing as it):
/// a wrong key, a plaintext peer, no answer.
public struct HandshakeError: Error, CustomStringConvertible, Sendable {
    /// The peer as the connection names it.
    public let peer: String
    public let underlying: any Error
    public var description: String { "tunnel handshake with \(peer) failed: \(underlying)" }
}

/// Why no path to the peer came up: each attempt's failure.
public struct PathError: Error, CustomStringConvertible, Sendable {
    public let direct: (any Error)?
    public let relay: (any Error)?
    public let message: String

    public var description: String { message }
}

/// Sets a session's connection up on the paths a pairing allows: a punched direct connection and,
/// when the server granted one, its relay. The initiator decides which carries the session (it
/// runs the handshake on one path only); the responder answers the handshake on whichever path
/// it arrives.
///
/// A relay is anything that yields a connected byte stream to the peer (`race`'s `relay`
/// closure): today the signaling server's splice; a standard TURN
/// server's TCP allocation (RFC 6062: Connect, ConnectionBind, then plain bytes) would be another
/// such closure, raced the same way, with the same handshake and records on top.
public enum TunnelPaths {
    public static func establish(_ rendezvous: PeerRendezvous, client: SignalingClient, keys: TunnelKeys,
                                 options: PathOptions) async throws -> EstablishedTunnel {
        switch try plan(rendezvous, options: options) {
        case .directOnly:
            return try await direct(rendezvous, keys: keys, options: options)
        case .relayOnly(let reason):
            rendezvous.signalingSocket?.close()
            return try await relayed(rendezvous, client: client, keys: keys, options: options, reason: reason)
        case .race:
            break
        }
        if rendezvous.role == .initiator {
            let winner = try await race(relayAfter: options.relayAfter, direct: {
                try await TCPHolePuncher.punch(rendezvous, tag: options.punchTag, options: options.punch)
            }, relay: {
                try await client.joinRelay(rendezvous, key: keys.signalingKey)
            }, discard: { $0.close() }, discardRelay: { $0.0.close() })
            switch winner {
            case .direct(let socket):
                let secured = try await handshake(socket, role: .initiator, keys: keys, options: options)
                var tunnel = EstablishedTunnel(socket: socket, path: .direct, secured: secured, peer: socket.peerDescription, relayReason: nil)
                tunnel.candidate = candidateType(socket, rendezvous)
                return tunnel
            case .relay((let socket, let peer), let directError):
                let reason = relayReason(directError: directError, relayAfter: options.relayAfter)
                var tunnel = try await secureRelay(socket, peer: peer, client: client, keys: keys, options: options, reason: reason)
                tunnel.mayGoDirect = true
                return tunnel
            }
        }
        let winner = try await race(relayAfter: options.relayAfter, direct: {
            try await direct(rendezvous, keys: keys, options: options)
        }, relay: {
            try await relayed(rendezvous, client: client, keys: keys, options: options, reason: "the peer chose the relay")
        }, discard: { $0.socket.close() }, discardRelay: { $0.socket.close() })
        switch winner {
        case .direct(let tunnel):
            return tunnel
        case .relay(let tunnel, let directError):
            return EstablishedTunnel(socket: tunnel.socket, path: .relay, secured: tunnel.secured, peer: tunnel.peer,
                                     relayReason: directError.map { "punch failed: \($0)" } ?? tunnel.relayReason,
                                     candidate: "relay", mayGoDirect: true)
        }
    }

    /// Which paths a pairing allows.
    public enum Plan: Sendable, Equatable {
        /// The punched path only: no relay was granted (or wanted).
        case directOnly
        /// The relay only, for the reason given.
        case relayOnly(String)
        /// Both at once.
        case race
    }

    /// The paths to try for `rendezvous` under `options`; throws when the policy needs a relay the
    /// server refused.
    public static func plan(_ rendezvous: PeerRendezvous, options: PathOptions) throws -> Plan {
        let relayGranted = rendezvous.relayID != nil
        if !relayGranted {
            guard options.relay != .only && rendezvous.peerRelay != .only else {
                rendezvous.signalingSocket?.close()
                let who = options.relay == .only ? "this forward's policy is relay: only" : "the peer's policy is relay: only"
                let why = rendezvous.peerRelay == .never || options.relay == .never ? "the other side's policy is relay: never"
                    : "the server refused one: \(rendezvous.relayRefused ?? "it does not relay")"
                throw PathError(direct: nil, relay: nil, message: "no relay for this session (\(who)), and \(why)")
            }
            return .directOnly
        }
        if options.relay == .only { return .relayOnly("policy relay: only") }
        if rendezvous.peerRelay == .only { return .relayOnly("the peer's policy is relay: only") }
        return .race
    }

    static func handshake(_ socket: Socket, role: SignalRole, keys: TunnelKeys, options: PathOptions) async throws -> TunnelSession? {
        guard options.encrypted else { return nil }
        do {
            return role == .initiator ? try await SecureTunnel.initiate(on: socket, keys: keys)
                : try await SecureTunnel.respond(on: socket, keys: keys)
        } catch {
            let peer = socket.peerDescription
            socket.close()
            throw HandshakeError(peer: peer, underlying: error)
        }
    }

    private static func direct(_ rendezvous: PeerRendezvous, keys: TunnelKeys, options: PathOptions) async throws -> EstablishedTunnel {
        let socket = try await TCPHolePuncher.punch(rendezvous, tag: options.punchTag, options: options.punch)
        let secured = try await handshake(socket, role: rendezvous.role, keys: keys, options: options)
        var tunnel = EstablishedTunnel(socket: socket, path: .direct, secured: secured, peer: socket.peerDescription, relayReason: nil)
        tunnel.candidate = candidateType(socket, rendezvous)
        return tunnel
    }

    /// Joins the pairing's relay and runs the handshake on it.
    public static func relayed(_ rendezvous: PeerRendezvous, client: SignalingClient, keys: TunnelKeys, options: PathOptions,
                               reason: String) async throws -> EstablishedTunnel {
        let (socket, peer) = try await client.joinRelay(rendezvous, key: keys.signalingKey)
        let secured = try await handshake(socket, role: rendezvous.role, keys: keys, options: options)
        return EstablishedTunnel(socket: socket, path: .relay, secured: secured, peer: relayedPeerName(peer, client), relayReason: reason)
    }

    /// Runs the initiator's handshake on a relay connection the initiator's `race` chose.
    public static func secureRelay(_ socket: Socket, peer: SocketAddress, client: SignalingClient, keys: TunnelKeys,
                                   options: PathOptions, reason: String) async throws -> EstablishedTunnel {
        let secured = try await handshake(socket, role: .initiator, keys: keys, options: options)
        return EstablishedTunnel(socket: socket, path: .relay, secured: secured, peer: relayedPeerName(peer, client), relayReason: reason)
    }

    /// `srflx` when the connection is to the peer's public address, `host` when to one of its own.
    private static func candidateType(_ socket: Socket, _ rendezvous: PeerRendezvous) -> String {
        guard let remote = try? socket.remoteAddress() else { return "srflx" }
        return remote.addressBytes != rendezvous.peerAddress.addressBytes
            && rendezvous.peerCandidates.contains(where: { $0.addressBytes == remote.addressBytes }) ? "host" : "srflx"
    }

    static func relayedPeerName(_ peer: SocketAddress, _ client: SignalingClient) -> String {
        "\(peer) via relay \(client.server)"
    }

    /// What a race chose; with the relay, the direct attempt's failure if it had one.
    public enum RaceChoice<Direct: Sendable, Relayed: Sendable>: Sendable {
        case direct(Direct)
        case relay(Relayed, directError: (any Error)?)
    }

    private enum RaceEvent<Direct: Sendable, Relayed: Sendable>: Sendable {
        case direct(Result<Direct, any Error>)
        case relay(Result<Relayed, any Error>)
        case relayAfter
    }

    /// The race between the paths, the same on both sides: the direct attempt first; the relay
    /// joins once `relayAfter` has passed without a direct path, or at once when the direct attempt
    /// fails, so a pairing that goes direct never takes a relay slot. The first to come up wins;
    /// what loses is handed to `discard` or `discardRelay`.
    ///
    /// The initiator races the connections (the punch against the relay's join) and runs the
    /// handshake on the winner only; the responder races whole handshakes, so whichever path the
    /// initiator chose completes first on its side too.
    public static func race<Direct: Sendable, Relayed: Sendable>(
        relayAfter: Duration,
        direct: @escaping @Sendable () async throws -> Direct,
        relay: @escaping @Sendable () async throws -> Relayed,
        discard: @escaping @Sendable (Direct) -> Void,
        discardRelay: @escaping @Sendable (Relayed) -> Void
    ) async throws -> RaceChoice<Direct, Relayed> {
        try await withThrowingTaskGroup(of: RaceEvent<Direct, Relayed>.self) { group in
            group.addTask { .direct(await Result { try await direct() }) }
            group.addTask {
                try? await Task.sleep(for: relayAfter)
                return .relayAfter
            }
            var relayStarted = false
            func startRelay() {
                guard !relayStarted else { return }
                relayStarted = true
                group.addTask { .relay(await Result { try await relay() }) }
            }
            var directError: (any Error)?
            var relayError: (any Error)?
            var winner: RaceChoice<Direct, Relayed>?
            while winner == nil, let event = try await group.next() {
                switch event {
                case .direct(.success(let value)): winner = .direct(value)
                case .direct(.failure(let error)):
                    directError = error
                    startRelay()
                case .relay(.success(let value)): winner = .relay(value, directError: directError)
                case .relay(.failure(let error)): relayError = error
                case .relayAfter: startRelay()
                }
                if winner == nil, directError != nil, relayError != nil { break }
            }
            group.cancelAll()
            // Whatever else comes up once the choice is made is let go.
            while let event = try? await group.next() {
                if case .direct(.success(let value)) = event { discard(value) }
                if case .relay(.success(let value)) = event { discardRelay(value) }
            }
            if let winner { return winner }
            throw bothFailed(direct: directError, relay: relayError)
        }
    }

    /// Why a race ended on the relay, for the path's log line.
    public static func relayReason(directError: (any Error)?, relayAfter: Duration) -> String {
        directError.map { "punch failed: \($0)" } ?? "no direct path within \(formatDuration(relayAfter))"
    }

    private static func bothFailed(direct: (any Error)?, relay: (any Error)?) -> PathError {
        let directText = direct.map { "direct: \($0)" } ?? "direct: not tried"
        let relayText = relay.map { "relay: \($0)" } ?? "relay: not tried"
        return PathError(direct: direct, relay: relay, message: "no path to the peer (\(directText); \(relayText))")
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
