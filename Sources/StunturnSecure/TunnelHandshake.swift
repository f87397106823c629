import Crypto

/// Which end of a tunnel handshake this agent plays.
public enum TunnelRole: Hashable, Sendable {
    /// Sends the hello and waits for the reply.
    case initiator
    /// Waits for the hello and answers it.
    case responder
}

/// The agent-to-agent handshake: Noise `NNpsk0` keyed by the forward's access key.
///
/// Both payloads are empty, so each message is an ephemeral public key plus a tag and has a fixed
/// length. The psk authenticates both peers; the ephemeral keys give forward secrecy.
public final class TunnelHandshake {
    /// Binds the handshake to this protocol version; a peer speaking another version fails it.
    public static let prologue = Array("stunturn tunnel v3".utf8)
    /// The initiator's hello: ephemeral key and tag.
    public static let helloLength = 32 + NoiseCipher.tagLength
    /// The responder's reply: ephemeral key and tag.
    public static let replyLength = 32 + NoiseCipher.tagLength

    /// This side's role.
    public let role: TunnelRole
    /// The AEAD cipher; both peers must use the same one.
    public let cipher: NoiseCipher
    private var state: NoiseHandshakeState

    /// Prepares a handshake for `role`, authenticated by `keys.psk`.
    public init(role: TunnelRole, keys: TunnelKeys, cipher: NoiseCipher = .default) {
        self.role = role
        self.cipher = cipher
        do {
            self.state = try NoiseHandshakeState(
                pattern: .NNpsk0,
                initiator: role == .initiator,
                prologue: Self.prologue,
                psks: [keys.psk],
                cipher: cipher
            )
        } catch {
            // NNpsk0 needs no static keys and TunnelKeys.psk is always 32 bytes.
            preconditionFailure("NNpsk0 handshake setup failed: \(error)")
        }
    }

    /// Initiator: the first message to send.
    public func makeHello() throws -> [UInt8] {
        guard self.role == .initiator else { throw TunnelSecurityError.handshakeOutOfOrder }
        return try self.state.writeMessage(payload: [])
    }

    /// Initiator: checks the responder's reply and returns the session.
    public func finish(reply: [UInt8]) throws -> TunnelSession {
        guard self.role == .initiator else { throw TunnelSecurityError.handshakeOutOfOrder }
        guard reply.count == Self.replyLength else { throw TunnelSecurityError.malformedHandshakeMessage }
        try self.read(reply)
        let (initiatorToResponder, responderToInitiator) = self.state.split()
        return TunnelSession(
            sending: initiatorToResponder,
            receiving: responderToInitiator,
            handshakeHash: self.state.handshakeHash
        )
    }

    /// Responder: checks the initiator's hello and returns the reply to send and the session.
    public func respond(toHello hello: [UInt8]) throws -> (reply: [UInt8], session: TunnelSession) {
        guard self.role == .responder else { throw TunnelSecurityError.handshakeOutOfOrder }
        guard hello.count == Self.helloLength else { throw TunnelSecurityError.malformedHandshakeMessage }
        try self.read(hello)
        let reply = try self.state.writeMessage(payload: [])
        let (initiatorToResponder, responderToInitiator) = self.state.split()
        let session = TunnelSession(
            sending: responderToInitiator,
            receiving: initiatorToResponder,
            handshakeHash: self.state.handshakeHash
        )
        return (reply, session)
    }

    /// With a psk in the first message, any peer without the same access key fails the tag check.
    private func read(_ message: [UInt8]) throws {
        do {
            let payload = try self.state.readMessage(message)
            guard payload.isEmpty else { throw TunnelSecurityError.malformedHandshakeMessage }
        } catch let error as TunnelSecurityError where error == .decryptionFailed || error == .invalidPublicKey {
            throw TunnelSecurityError.peerAuthenticationFailed
        }
    }
}

/// The keys of an established tunnel: a record layer for TCP streams and datagram protection for
/// UDP paths.
public final class TunnelSession {
    /// Seals the stream this side sends.
    public let sealer: RecordSealer
    /// Opens the stream this side receives.
    public let opener: RecordOpener
    /// Seals datagrams this side sends.
    public let datagramSealer: DatagramSealer
    /// Opens datagrams this side receives.
    public let datagramOpener: DatagramOpener
    /// The Noise handshake hash, identical on both sides; usable for channel binding.
    public let handshakeHash: [UInt8]

    /// Datagrams use keys derived from, but independent of, the stream keys, so the two nonce
    /// sequences never share a key. Each direction has exactly one sealer, so no counter repeats.
    static let datagramContext = Array("stunturn v1 datagram key".utf8)

    init(sending: NoiseCipherState, receiving: NoiseCipherState, handshakeHash: [UInt8]) {
        self.sealer = RecordSealer(cipherState: sending)
        self.opener = RecordOpener(cipherState: receiving)
        self.datagramSealer = DatagramSealer(key: Self.datagramKey(from: sending.key!), cipher: sending.cipher)
        self.datagramOpener = DatagramOpener(key: Self.datagramKey(from: receiving.key!), cipher: receiving.cipher)
        self.handshakeHash = handshakeHash
    }

    private static func datagramKey(from streamKey: SymmetricKey) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: streamKey,
            info: Self.datagramContext,
            outputByteCount: NoiseCipher.keyLength
        )
    }
}
