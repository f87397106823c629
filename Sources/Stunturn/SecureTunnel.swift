import StunturnRelay
import StunturnSecure
import StunturnSockets

/// Runs the tunnel handshake on a punched TCP connection, before any byte reaches a local service.
public enum SecureTunnel {
    /// How long a handshake may take once the hole is punched; it is two 48-byte messages.
    public static let handshakeTimeout: Duration = .seconds(5)

    public static func initiate(on socket: Socket, keys: TunnelKeys) async throws -> TunnelSession {
        let deadline = ContinuousClock.now + handshakeTimeout
        let handshake = TunnelHandshake(role: .initiator, keys: keys)
        try await socket.writeAll(try handshake.makeHello(), until: deadline)
        let reply = try await socket.readExactly(TunnelHandshake.replyLength, until: deadline)
        return try handshake.finish(reply: reply)
    }

    public static func respond(on socket: Socket, keys: TunnelKeys) async throws -> TunnelSession {
        let deadline = ContinuousClock.now + handshakeTimeout
        let handshake = TunnelHandshake(role: .responder, keys: keys)
        let hello = try await socket.readExactly(TunnelHandshake.helloLength, until: deadline)
        let (reply, session) = try handshake.respond(toHello: hello)
        try await socket.writeAll(reply, until: deadline)
        return session
    }
}

/// The relay stage for an encrypted tunnel: side A is the local connection, side B the tunnel.
public final class SealingTransform: RelayTransform {
    private let session: TunnelSession

    public init(_ session: TunnelSession) { self.session = session }

    public func forwardCapacity(forInputCount inputCount: Int) -> Int {
        session.sealer.sealedLength(ofPlaintextCount: inputCount)
    }

    public func backwardCapacity(forInputCount inputCount: Int) -> Int {
        session.opener.maxPlaintextCount(forWireCount: inputCount)
    }

    public func forward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try session.sealer.seal(input, into: output)
    }

    public func backward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try session.opener.open(input, into: output)
    }

    public var forwardEndCapacity: Int { RecordSealer.closeRecordLength }

    /// The local side ended: the close record goes out before the tunnel's half-close, so the peer
    /// can tell this end from a connection cut between two records.
    public func forwardEnd(into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try session.sealer.sealClose(into: output)
    }

    /// The tunnel ended: an orderly end only right after the peer's close record.
    public func backwardEnd() throws {
        try session.opener.finish()
    }
}
