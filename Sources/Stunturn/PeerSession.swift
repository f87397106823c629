@_exported import StunturnMux
@_exported import StunturnRelay
import Synchronization

/// How a `PeerSession` is set up and kept.
public struct PeerSessionOptions: Sendable {
    /// Streams open at once; past it `openStream` fails and the peer's new streams are refused.
    public var maxStreams = 1024
    /// Between pings; three unanswered ones end the session.
    public var keepalive: Duration = .seconds(15)
    /// How long the initiator waits at the server for its peer.
    public var signalTimeout: Duration = .seconds(30)
    public var punch = PunchOptions()
    /// Whether the session may travel through the server's relay (`auto`: when no direct path is
    /// up within `relayAfter`).
    public var relay: RelayPolicy = .auto
    public var relayAfter: Duration = .seconds(1)
    /// The operator's token, for servers that relay only for clients presenting one.
    public var serverToken: String?

    public init() {}

    func client(_ server: String) -> SignalingClient {
        var client = SignalingClient(server: server)
        client.relay = relay
        client.token = serverToken
        client.announceHostCandidates = true
        return client
    }

    var paths: PathOptions {
        var paths = PathOptions()
        paths.relay = relay
        paths.relayAfter = relayAfter
        paths.punch = punch
        return paths
    }
}

/// One encrypted, multiplexed session with a peer holding the same access key: the agent's
/// sessions, for Swift programs. One side `connect`s (the initiator), the other `accept`s; either
/// opens streams, and each stream is a byte stream in both directions with its own flow control,
/// half-close and reset.
///
///     let session = try await PeerSession.connect(server: "signal.example.net:7000", key: key)
///     let stream = try await session.openStream()
///     try await stream.write(Array("hello".utf8))
///     stream.finish()
///     for try await chunk in stream.chunks { ... }
public final class PeerSession: Sendable {
    /// The peer's address as the punched connection sees it (with the relay's, when relayed).
    public let peer: String
    /// Whether the session is direct or relayed.
    public let path: TunnelPath
    /// Streams the peer opens, in order.
    public let incoming: AsyncStream<PeerStream>
    private let session: RelaySession
    private let incomingContinuation: AsyncStream<PeerStream>.Continuation

    private init(_ tunnel: EstablishedTunnel, side: MuxSession.Side, options: PeerSessionOptions) {
        self.peer = tunnel.peer
        self.path = tunnel.path
        // Unbounded here: the session itself refuses streams past maxStreams.
        (incoming, incomingContinuation) = AsyncStream.makeStream(of: PeerStream.self)
        let continuation = incomingContinuation
        // The peer's new streams are taken one at a time, in the order they were opened.
        let (opened, openedIDs) = AsyncStream.makeStream(of: UInt32.self)
        session = RelayEngine.shared.session(
            tunnel: tunnel.socket, peerName: "peer \(tunnel.peer)", side: side, transform: tunnel.secured.map(SealingTransform.init),
            options: SessionOptions(maxStreams: options.maxStreams, keepalive: options.keepalive),
            onIncoming: { _, id in openedIDs.yield(id) })
        Task { [session] in
            for await id in opened {
                do {
                    let (near, far) = try await Socket.loopbackPair()
                    let stream = PeerStream(near)
                    session.attach(id, far, name: "stream \(id)") { stream.ended($0) }
                    if case .terminated = continuation.yield(stream) { stream.reset() }
                } catch {
                    session.refuse(id, reason: "\(error)")
                }
            }
        }
        Task { [session] in
            _ = await session.ended
            openedIDs.finish()
            continuation.finish()
        }
    }

    /// Finds the peer through `server` as the initiator (the side that waits at the server for
    /// the other), punches a TCP hole (or relays, by `options.relay`) and runs the handshake.
    public static func connect(server: String, key: String, options: PeerSessionOptions = PeerSessionOptions()) async throws -> PeerSession {
        let keys = TunnelKeys(accessKey: key)
        let client = options.client(server)
        let rendezvous = try await client.requestTCPPeer(key: keys.signalingKey, timeout: options.signalTimeout)
        let tunnel = try await TunnelPaths.establish(rendezvous, client: client, keys: keys, options: options.paths)
        return PeerSession(tunnel, side: .initiator, options: options)
    }

    /// Waits at `server` for an initiator with the same key, for at most `wait`, then punches and
    /// runs the handshake.
    public static func accept(server: String, key: String, wait: Duration = .seconds(60),
                              options: PeerSessionOptions = PeerSessionOptions()) async throws -> PeerSession {
        let keys = TunnelKeys(accessKey: key)
        let client = options.client(server)
        let deadline = ContinuousClock.now + wait
        while true {
            let left = deadline - .now
            guard left > .zero else {
                throw SignalingError(.noInitiator, "no initiator with this key came to \(server) within \(formatDuration(wait))")
            }
            let polled = ContinuousClock.now
            guard let rendezvous = try await client.pollForInitiator(key: keys.signalingKey, wait: min(left, .seconds(25))) else {
                // A server that answers at once (no long-poll) is asked again after a pause, not in a loop.
                if ContinuousClock.now - polled < .seconds(1) { try await Task.sleep(for: .seconds(1)) }
                continue
            }
            let tunnel = try await TunnelPaths.establish(rendezvous, client: client, keys: keys, options: options.paths)
            return PeerSession(tunnel, side: .responder, options: options)
        }
    }

    /// Opens a stream; no round trip: what is written goes out right behind the opening. Throws
    /// `PeerStreamError` when the session cannot take it (its stream limit, or it has ended).
    public func openStream() async throws -> PeerStream {
        let (near, far) = try await Socket.loopbackPair()
        let stream = PeerStream(near)
        if let refusal = await session.tryOpen(far, name: "stream", onFinish: { stream.ended($0) }) {
            stream.reset()
            throw PeerStreamError(reason: refusal)
        }
        return stream
    }

    /// Ends the session once its streams have ended; the peer is told with a GoAway.
    public func drain() { session.drain() }

    /// Ends the session now; its streams are reset.
    public func close() { session.close(reason: "closed by its owner") }

    /// A session nobody holds any more ends, resetting its streams.
    deinit { session.close(reason: "no longer used") }

    /// Waits for the session to end and says why.
    public var ended: SessionReport { get async { await session.ended } }

    /// Open streams, streams carried so far, the last round trip.
    public var status: SessionStatus { get async { await session.status } }
}

/// One stream of a `PeerSession`: bytes both ways, in order, each direction ended on its own
/// (`finish`), or the whole stream reset.
///
/// A stream that ends abnormally (the peer reset it, the session broke) is never mistaken for an
/// orderly end: reading throws instead of returning the end.
public final class PeerStream: Sendable {
    private let socket: Socket
    private let report = Mutex<RelayReport?>(nil)

    init(_ socket: Socket) { self.socket = socket }

    /// A stream dropped without `close` is reset: it cannot pass for a complete one.
    deinit {
        if socket.isOpen { try? socket.setAbortiveClose() }
    }

    /// Writes all of `bytes`; waits while the peer's window is full.
    public func write(_ bytes: [UInt8]) async throws {
        do {
            try await socket.writeAll(bytes, until: nil)
        } catch let error as SocketError where error.isReset {
            throw PeerStreamError(reason: report.withLock { $0?.reason } ?? "the stream was reset")
        }
    }

    /// Ends this side's direction; the peer reads the end once it has read everything before it.
    public func finish() { socket.shutdownWrite() }

    /// Reads the next bytes; empty once the peer has ended its direction in order.
    public func read(maxLength: Int = 65536) async throws -> [UInt8] {
        do {
            return try await socket.readSome(maxLength: maxLength, until: nil)
        } catch let error as SocketError where error.isReset {
            throw PeerStreamError(reason: report.withLock { $0?.reason } ?? "the stream was reset")
        }
    }

    /// Everything the peer sends, chunk by chunk, until its end; throws when the stream is reset.
    public var chunks: AsyncThrowingStream<[UInt8], any Error> {
        AsyncThrowingStream { [self] in
            let chunk = try await read()
            return chunk.isEmpty ? nil : chunk
        }
    }

    /// Resets the stream: both directions end at once, and the peer learns it was not an orderly end.
    public func reset() {
        try? socket.setAbortiveClose()
        socket.close()
    }

    /// Closes this side once done with it (after `finish` and reading to the end, an orderly close).
    public func close() { socket.close() }

    func ended(_ report: RelayReport) {
        self.report.withLock { $0 = report }
    }
}

/// A stream ended abnormally; `reason` says how (the peer reset it, the session ended).
public struct PeerStreamError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { "stream reset: \(reason)" }
}

extension Socket {
    /// Two connected TCP sockets on the loopback interface: a stream's local end, whose resets
    /// reach the other side as resets (a Unix socket pair cannot carry one).
    public static func loopbackPair() async throws -> (Socket, Socket) {
        let listener = try Socket.listener(on: .loopback(), backlog: 1)
        defer { listener.close() }
        let address = try listener.localAddress()
        async let accepted = listener.accept(until: .now + .seconds(5))
        let near = try await Socket.connect(to: address, timeout: .seconds(5))
        let (far, from) = try await accepted
        // Another local program could have connected first: only our own connection will do.
        guard try from == near.localAddress() else {
            near.close()
            far.close()
            throw SocketError(.failed, call: "connect", reason: "a stranger connected to the stream's loopback listener")
        }
        return (near, far)
    }
}
