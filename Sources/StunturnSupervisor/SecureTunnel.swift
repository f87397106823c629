import StunturnRelay
import StunturnSecure
import StunturnSockets

/// Runs the tunnel handshake on a punched TCP connection, before any byte reaches a local service.
enum SecureTunnel {
    /// How long a handshake may take once the hole is punched; it is two 48-byte messages.
    static let handshakeTimeout: Duration = .seconds(5)

    static func initiate(on socket: Socket, keys: TunnelKeys) async throws -> TunnelSession {
        let deadline = ContinuousClock.now + handshakeTimeout
        let handshake = TunnelHandshake(role: .initiator, keys: keys)
        try await socket.writeAll(try handshake.makeHello(), until: deadline)
        let reply = try await socket.readExactly(TunnelHandshake.replyLength, until: deadline)
        return try handshake.finish(reply: reply)
    }

    static func respond(on socket: Socket, keys: TunnelKeys) async throws -> TunnelSession {
        let deadline = ContinuousClock.now + handshakeTimeout
        let handshake = TunnelHandshake(role: .responder, keys: keys)
        let hello = try await socket.readExactly(TunnelHandshake.helloLength, until: deadline)
        let (reply, session) = try handshake.respond(toHello: hello)
        try await socket.writeAll(reply, until: deadline)
        return session
    }
}

/// The relay stage for an encrypted tunnel: side A is the local connection, side B the tunnel.
final class SealingTransform: RelayTransform {
    private let session: TunnelSession

    init(_ session: TunnelSession) { self.session = session }

    func forwardCapacity(forInputCount inputCount: Int) -> Int {
        session.sealer.sealedLength(ofPlaintextCount: inputCount)
    }

    func backwardCapacity(forInputCount inputCount: Int) -> Int {
        session.opener.maxPlaintextCount(forWireCount: inputCount)
    }

    func forward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try session.sealer.seal(input, into: output)
    }

    func backward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try session.opener.open(input, into: output)
    }

    var forwardEndCapacity: Int { RecordSealer.closeRecordLength }

    /// The local side ended: the close record goes out before the tunnel's half-close, so the peer
    /// can tell this end from a connection cut between two records.
    func forwardEnd(into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try session.sealer.sealClose(into: output)
    }

    /// The tunnel ended: an orderly end only right after the peer's close record.
    func backwardEnd() throws {
        try session.opener.finish()
    }
}
