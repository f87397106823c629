/// An error raised by the Noise handshake, the tunnel record layer or datagram protection.
public struct TunnelSecurityError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case peerAuthenticationFailed
        case malformedHandshakeMessage
        case handshakeOutOfOrder
        case missingStaticKey
        case invalidPreSharedKeys
        case invalidPublicKey
        case messageTooLong
        case nonceExhausted
        case decryptionFailed
        case recordAuthenticationFailed
        case malformedRecord
        case datagramTooShort
        case datagramAuthenticationFailed
        case datagramReplayed
        case streamTruncated
        case closeRecordMissing
        case dataAfterClose
    }

    private let code: Code

    private init(_ code: Code) {
        self.code = code
    }

    /// The tunnel peer did not prove knowledge of the same access key.
    public static let peerAuthenticationFailed = TunnelSecurityError(.peerAuthenticationFailed)
    /// A handshake message had the wrong length.
    public static let malformedHandshakeMessage = TunnelSecurityError(.malformedHandshakeMessage)
    /// A handshake step was called out of turn.
    public static let handshakeOutOfOrder = TunnelSecurityError(.handshakeOutOfOrder)
    /// The pattern needs a static key that was not supplied.
    public static let missingStaticKey = TunnelSecurityError(.missingStaticKey)
    /// The pre-shared keys do not match what the pattern needs.
    public static let invalidPreSharedKeys = TunnelSecurityError(.invalidPreSharedKeys)
    /// A received Curve25519 public key was rejected.
    public static let invalidPublicKey = TunnelSecurityError(.invalidPublicKey)
    /// A Noise message would exceed 65535 bytes.
    public static let messageTooLong = TunnelSecurityError(.messageTooLong)
    /// A cipher state ran out of nonces.
    public static let nonceExhausted = TunnelSecurityError(.nonceExhausted)
    /// A Noise message failed authentication.
    public static let decryptionFailed = TunnelSecurityError(.decryptionFailed)
    /// A tunnel record failed authentication.
    public static let recordAuthenticationFailed = TunnelSecurityError(.recordAuthenticationFailed)
    /// A tunnel record header announced an impossible length.
    public static let malformedRecord = TunnelSecurityError(.malformedRecord)
    /// A datagram was too short to hold its counter and tag.
    public static let datagramTooShort = TunnelSecurityError(.datagramTooShort)
    /// A datagram failed authentication.
    public static let datagramAuthenticationFailed = TunnelSecurityError(.datagramAuthenticationFailed)
    /// A datagram was a duplicate or older than the replay window.
    public static let datagramReplayed = TunnelSecurityError(.datagramReplayed)

    /// The tunnel's byte stream ended inside a record: cut short on the way.
    public static let streamTruncated = TunnelSecurityError(.streamTruncated)
    /// The tunnel's byte stream ended between records but before the close record: cut on the way.
    public static let closeRecordMissing = TunnelSecurityError(.closeRecordMissing)
    /// Bytes followed the close record, which ends the stream.
    public static let dataAfterClose = TunnelSecurityError(.dataAfterClose)

    public var description: String {
        switch self.code {
        case .peerAuthenticationFailed:
            return "the peer failed authentication: wrong access key or tampered handshake"
        case .malformedHandshakeMessage:
            return "a handshake message has the wrong length for this protocol"
        case .handshakeOutOfOrder:
            return "a handshake step was called out of order, by the wrong role, or after completion"
        case .missingStaticKey:
            return "the handshake pattern needs a static key that was not supplied"
        case .invalidPreSharedKeys:
            return "the handshake pattern needs a different number of 32-byte pre-shared keys"
        case .invalidPublicKey:
            return "the peer sent a Curve25519 public key that yields no usable shared secret"
        case .messageTooLong:
            return "a Noise message would exceed the 65535-byte limit"
        case .nonceExhausted:
            return "the cipher state has used every nonce and must be replaced"
        case .decryptionFailed:
            return "a Noise message failed authentication"
        case .recordAuthenticationFailed:
            return "a tunnel record failed authentication: it was tampered with, reordered, replayed or truncated"
        case .malformedRecord:
            return "a tunnel record header announces a length shorter than its authentication tag"
        case .datagramTooShort:
            return "a datagram is shorter than its counter and authentication tag"
        case .datagramAuthenticationFailed:
            return "a datagram failed authentication"
        case .datagramReplayed:
            return "a datagram was already received or is older than the replay window"
        case .streamTruncated:
            return "the tunnel ended inside a record: the stream was cut short"
        case .closeRecordMissing:
            return "the tunnel ended without the peer's close record: the stream was cut short"
        case .dataAfterClose:
            return "the tunnel carried bytes after the peer's close record"
        }
    }
}
