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
public enum TunnelPaths {
    private enum Event: Sendable {
        case direct(Result<Socket, any Error>)
        case relay(Result<(Socket, SocketAddress), any Error>)
        case relayAfter
        case secured(Result<EstablishedTunnel, any Error>)
    }

    public static func establish(_ rendezvous: PeerRendezvous, client: SignalingClient, keys: TunnelKeys,
                                 options: PathOptions) async throws -> EstablishedTunnel {
        let relayGranted = rendezvous.relayID != nil
        let directAllowed = options.relay != .only && rendezvous.peerRelay != .only
        if !relayGranted {
            if options.relay == .only || rendezvous.peerRelay == .only {
                rendezvous.signalingSocket?.close()
                let who = options.relay == .only ? "this forward's policy is relay: only" : "the peer's policy is relay: only"
                throw PathError(direct: nil, relay: nil,
                                message: "no relay for this session (\(who)), and the server refused one: \(rendezvous.relayRefused ?? "it does not relay")")
            }
            return try await direct(rendezvous, keys: keys, options: options)
        }
        if !directAllowed {
            rendezvous.signalingSocket?.close()
            let reason = options.relay == .only ? "policy relay: only" : "the peer's policy is relay: only"
            return try await relayed(rendezvous, client: client, keys: keys, options: options, reason: reason)
        }
        return rendezvous.role == .initiator
            ? try await raceAsInitiator(rendezvous, client: client, keys: keys, options: options)
            : try await raceAsResponder(rendezvous, client: client, keys: keys, options: options)
    }

    private static func handshake(_ socket: Socket, role: SignalRole, keys: TunnelKeys, options: PathOptions) async throws -> TunnelSession? {
        guard options.encrypted else { return nil }
        do {
            return role == .initiator ? try await SecureTunnel.initiate(on: socket, keys: keys)
                : try await SecureTunnel.respond(on: socket, keys: keys)
        } catch {
            socket.close()
            throw error
        }
    }

    private static func direct(_ rendezvous: PeerRendezvous, keys: TunnelKeys, options: PathOptions) async throws -> EstablishedTunnel {
        let socket = try await TCPHolePuncher.punch(rendezvous, tag: options.punchTag, options: options.punch)
        let secured = try await handshake(socket, role: rendezvous.role, keys: keys, options: options)
        var tunnel = EstablishedTunnel(socket: socket, path: .direct, secured: secured, peer: socket.peerDescription, relayReason: nil)
        tunnel.candidate = candidateType(socket, rendezvous)
        return tunnel
    }

    private static func relayed(_ rendezvous: PeerRendezvous, client: SignalingClient, keys: TunnelKeys, options: PathOptions,
                                reason: String) async throws -> EstablishedTunnel {
        let (socket, peer) = try await client.joinRelay(rendezvous, key: keys.signalingKey)
        let secured = try await handshake(socket, role: rendezvous.role, keys: keys, options: options)
        return EstablishedTunnel(socket: socket, path: .relay, secured: secured, peer: relayedPeerName(peer, client), relayReason: reason)
    }

    /// `srflx` when the connection is to the peer's public address, `host` when to one of its own.
    private static func candidateType(_ socket: Socket, _ rendezvous: PeerRendezvous) -> String {
        guard let remote = try? socket.remoteAddress() else { return "srflx" }
        return remote.addressBytes != rendezvous.peerAddress.addressBytes
            && rendezvous.peerCandidates.contains(where: { $0.addressBytes == remote.addressBytes }) ? "host" : "srflx"
    }

    private static func relayedPeerName(_ peer: SocketAddress, _ client: SignalingClient) -> String {
        "\(peer) via relay \(client.server)"
    }

    /// Both paths at once; the direct one carries the session if it is up within `relayAfter`,
    /// else the first that is.
    private static func raceAsInitiator(_ rendezvous: PeerRendezvous, client: SignalingClient, keys: TunnelKeys,
                                        options: PathOptions) async throws -> EstablishedTunnel {
        let chosen: (Socket, TunnelPath, String?, SocketAddress?) = try await withThrowingTaskGroup(of: Event.self) { group in
            group.addTask { .direct(await Result { try await TCPHolePuncher.punch(rendezvous, tag: options.punchTag, options: options.punch) }) }
            group.addTask { .relay(await Result { try await client.joinRelay(rendezvous, key: keys.signalingKey) }) }
            group.addTask {
                try? await Task.sleep(for: options.relayAfter)
                return .relayAfter
            }
            var relaySocket: (Socket, SocketAddress)?
            var directError: (any Error)?
            var relayError: (any Error)?
            var waitedEnough = false
            var winner: (Socket, TunnelPath, String?, SocketAddress?)?
            while winner == nil, let event = try await group.next() {
                switch event {
                case .direct(.success(let socket)):
                    winner = (socket, .direct, nil, nil)
                case .direct(.failure(let error)):
                    directError = error
                    if let (socket, peer) = relaySocket { winner = (socket, .relay, "punch failed: \(error)", peer) }
                case .relay(.success(let pair)):
                    relaySocket = pair
                    if waitedEnough || directError != nil {
                        winner = (pair.0, .relay, directError.map { "punch failed: \($0)" } ?? "no direct path within \(formatDuration(options.relayAfter))", pair.1)
                    }
                case .relay(.failure(let error)):
                    relayError = error
                case .relayAfter:
                    waitedEnough = true
                    if let (socket, peer) = relaySocket {
                        winner = (socket, .relay, "no direct path within \(formatDuration(options.relayAfter))", peer)
                    }
                case .secured:
                    break
                }
                if winner == nil, directError != nil, relayError != nil { break }
            }
            group.cancelAll()
            // Whatever else comes up once the choice is made is closed.
            while let event = try? await group.next() {
                if case .direct(.success(let socket)) = event { socket.close() }
                if case .relay(.success(let pair)) = event { pair.0.close() }
            }
            if let winner {
                if winner.1 == .direct { relaySocket?.0.close() }
                return winner
            }
            throw bothFailed(direct: directError, relay: relayError)
        }
        let (socket, path, reason, relayPeer) = chosen
        let secured = try await handshake(socket, role: .initiator, keys: keys, options: options)
        let peer = relayPeer.map { relayedPeerName($0, client) } ?? socket.peerDescription
        var tunnel = EstablishedTunnel(socket: socket, path: path, secured: secured, peer: peer, relayReason: reason)
        if path == .direct { tunnel.candidate = candidateType(socket, rendezvous) }
        return tunnel
    }

    /// Both paths at once, each answering the handshake; the initiator starts it on one only, so
    /// the first to complete it carries the session.
    private static func raceAsResponder(_ rendezvous: PeerRendezvous, client: SignalingClient, keys: TunnelKeys,
                                        options: PathOptions) async throws -> EstablishedTunnel {
        try await withThrowingTaskGroup(of: Event.self) { group in
            group.addTask {
                .secured(await Result {
                    do {
                        return try await direct(rendezvous, keys: keys, options: options)
                    } catch {
                        throw Attempt(path: .direct, error: error)
                    }
                })
            }
            group.addTask {
                .secured(await Result {
                    do {
                        return try await relayed(rendezvous, client: client, keys: keys, options: options, reason: "the peer chose the relay")
                    } catch {
                        throw Attempt(path: .relay, error: error)
                    }
                })
            }
            var directError: (any Error)?
            var relayError: (any Error)?
            var winner: EstablishedTunnel?
            while winner == nil, let event = try await group.next() {
                guard case .secured(let result) = event else { continue }
                switch result {
                case .success(let tunnel):
                    winner = tunnel
                    if tunnel.path == .relay, let directError {
                        winner = EstablishedTunnel(socket: tunnel.socket, path: .relay, secured: tunnel.secured, peer: tunnel.peer,
                                                   relayReason: "punch failed: \(directError)", candidate: "relay")
                    }
                case .failure(let error as Attempt):
                    if error.path == .direct { directError = error.error } else { relayError = error.error }
                case .failure(let error):
                    relayError = error
                }
                if winner == nil, directError != nil, relayError != nil { break }
            }
            group.cancelAll()
            while let event = try? await group.next() {
                if case .secured(.success(let tunnel)) = event { tunnel.socket.close() }
            }
            if let winner { return winner }
            throw bothFailed(direct: directError, relay: relayError)
        }
    }

    /// One path's failure, named by its path.
    private struct Attempt: Error {
        let path: TunnelPath
        let error: any Error
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
