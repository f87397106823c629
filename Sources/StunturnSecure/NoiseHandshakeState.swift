import Crypto

/// A Noise HandshakeState for `Noise_<pattern>_25519_<cipher>_SHA256` (Noise spec revision 34).
public struct NoiseHandshakeState {
    public typealias PrivateKey = Curve25519.KeyAgreement.PrivateKey
    public typealias PublicKey = Curve25519.KeyAgreement.PublicKey

    /// Noise messages, handshake or transport, never exceed this many bytes.
    public static let maxMessageLength = 65535
    static let dhLength = 32

    /// The handshake pattern.
    public let pattern: NoisePattern
    /// Whether this side sends the first message.
    public let isInitiator: Bool
    /// The full protocol name, such as `Noise_NNpsk0_25519_ChaChaPoly_SHA256`.
    public let protocolName: String

    private var symmetricState: NoiseSymmetricState
    private var localEphemeral: PrivateKey?
    private let localStatic: PrivateKey?
    /// The peer's ephemeral public key, once received.
    public private(set) var remoteEphemeral: PublicKey?
    /// The peer's static public key, given up front or learned during the handshake.
    public private(set) var remoteStatic: PublicKey?
    private var preSharedKeys: ArraySlice<[UInt8]>
    private var messageIndex = 0

    /// Creates a handshake; `localEphemeral` is generated when the pattern needs it unless given,
    /// which test vectors rely on.
    public init(
        pattern: NoisePattern,
        initiator: Bool,
        prologue: [UInt8] = [],
        psks: [[UInt8]] = [],
        cipher: NoiseCipher = .default,
        localEphemeral: PrivateKey? = nil,
        localStatic: PrivateKey? = nil,
        remoteStatic: PublicKey? = nil
    ) throws {
        guard psks.count == pattern.preSharedKeyCount, psks.allSatisfy({ $0.count == 32 }) else {
            throw TunnelSecurityError.invalidPreSharedKeys
        }
        self.pattern = pattern
        self.isInitiator = initiator
        self.protocolName = "Noise_\(pattern.name)_25519_\(cipher.name)_SHA256"
        self.symmetricState = NoiseSymmetricState(protocolName: self.protocolName, cipher: cipher)
        self.localEphemeral = localEphemeral
        self.localStatic = localStatic
        self.remoteStatic = remoteStatic
        self.preSharedKeys = psks[...]

        self.symmetricState.mixHash(prologue)
        // The initiator's pre-message is hashed first, whichever side we are.
        for (preMessage, isLocal) in [
            (pattern.initiatorPreMessage, initiator), (pattern.responderPreMessage, !initiator),
        ] {
            for token in preMessage {
                let key: PublicKey?
                switch (token, isLocal) {
                case (.s, true): key = localStatic?.publicKey
                case (.s, false): key = remoteStatic
                case (.e, true): key = localEphemeral?.publicKey
                case (.e, false): key = nil
                default: key = nil
                }
                guard let key else { throw TunnelSecurityError.missingStaticKey }
                self.symmetricState.mixHash(key.rawRepresentation)
            }
        }
    }

    /// Whether every handshake message has been written or read.
    public var isComplete: Bool { self.messageIndex == self.pattern.messages.count }

    /// The handshake hash, usable for channel binding once the handshake is complete.
    public var handshakeHash: [UInt8] { self.symmetricState.handshakeHash }

    private var isMyTurn: Bool { (self.messageIndex % 2 == 0) == self.isInitiator }

    private var usesPreSharedKeys: Bool { self.pattern.preSharedKeyCount > 0 }

    /// Writes the next handshake message carrying `payload`.
    public mutating func writeMessage(payload: [UInt8] = []) throws -> [UInt8] {
        guard !self.isComplete, self.isMyTurn else { throw TunnelSecurityError.handshakeOutOfOrder }
        var message: [UInt8] = []
        for token in self.pattern.messages[self.messageIndex] {
            switch token {
            case .e:
                let ephemeral = self.localEphemeral ?? PrivateKey()
                self.localEphemeral = ephemeral
                let publicKey = Array(ephemeral.publicKey.rawRepresentation)
                message += publicKey
                self.symmetricState.mixHash(publicKey)
                if self.usesPreSharedKeys { self.symmetricState.mixKey(publicKey) }
            case .s:
                guard let localStatic = self.localStatic else { throw TunnelSecurityError.missingStaticKey }
                message += try self.symmetricState.encryptAndHash(Array(localStatic.publicKey.rawRepresentation))
            case .ee, .es, .se, .ss:
                try self.mixDiffieHellman(token)
            case .psk:
                self.symmetricState.mixKeyAndHash(self.preSharedKeys.removeFirst())
            }
        }
        message += try self.symmetricState.encryptAndHash(payload)
        guard message.count <= Self.maxMessageLength else { throw TunnelSecurityError.messageTooLong }
        self.messageIndex += 1
        return message
    }

    /// Reads the next handshake message and returns its payload.
    public mutating func readMessage(_ message: [UInt8]) throws -> [UInt8] {
        guard !self.isComplete, !self.isMyTurn else { throw TunnelSecurityError.handshakeOutOfOrder }
        guard message.count <= Self.maxMessageLength else { throw TunnelSecurityError.messageTooLong }
        var rest = message[...]
        for token in self.pattern.messages[self.messageIndex] {
            switch token {
            case .e:
                guard rest.count >= Self.dhLength else { throw TunnelSecurityError.malformedHandshakeMessage }
                let publicKey = Array(rest.prefix(Self.dhLength))
                rest = rest.dropFirst(Self.dhLength)
                self.remoteEphemeral = try Self.publicKey(publicKey)
                self.symmetricState.mixHash(publicKey)
                if self.usesPreSharedKeys { self.symmetricState.mixKey(publicKey) }
            case .s:
                let length = Self.dhLength + (self.symmetricState.cipherState.hasKey ? NoiseCipher.tagLength : 0)
                guard rest.count >= length else { throw TunnelSecurityError.malformedHandshakeMessage }
                let publicKey = try self.symmetricState.decryptAndHash(Array(rest.prefix(length)))
                rest = rest.dropFirst(length)
                self.remoteStatic = try Self.publicKey(publicKey)
            case .ee, .es, .se, .ss:
                try self.mixDiffieHellman(token)
            case .psk:
                self.symmetricState.mixKeyAndHash(self.preSharedKeys.removeFirst())
            }
        }
        let payload = try self.symmetricState.decryptAndHash(Array(rest))
        self.messageIndex += 1
        return payload
    }

    /// Derives the transport cipher states, initiator-to-responder first.
    public func split() -> (NoiseCipherState, NoiseCipherState) {
        precondition(self.isComplete, "split() called before the handshake completed")
        return self.symmetricState.split()
    }

    /// `es` means initiator ephemeral with responder static, whichever side computes it.
    private mutating func mixDiffieHellman(_ token: NoisePattern.Token) throws {
        let local: PrivateKey?
        let remote: PublicKey?
        switch (token, self.isInitiator) {
        case (.ee, _): (local, remote) = (self.localEphemeral, self.remoteEphemeral)
        case (.ss, _): (local, remote) = (self.localStatic, self.remoteStatic)
        case (.es, true), (.se, false): (local, remote) = (self.localEphemeral, self.remoteStatic)
        case (.es, false), (.se, true): (local, remote) = (self.localStatic, self.remoteEphemeral)
        default: preconditionFailure("\(token) is not a Diffie-Hellman token")
        }
        guard let local, let remote else { throw TunnelSecurityError.missingStaticKey }
        let sharedSecret: SharedSecret
        do {
            sharedSecret = try local.sharedSecretFromKeyAgreement(with: remote)
        } catch {
            throw TunnelSecurityError.invalidPublicKey
        }
        self.symmetricState.mixKey(sharedSecret.withUnsafeBytes { Array($0) })
    }

    private static func publicKey(_ bytes: [UInt8]) throws -> PublicKey {
        do {
            return try PublicKey(rawRepresentation: bytes)
        } catch {
            throw TunnelSecurityError.invalidPublicKey
        }
    }
}
