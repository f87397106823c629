import Crypto
import Foundation
@testable import StunturnSecure  // TunnelSession's initializer, to build sessions from fixed keys

/// Both directions of a tunnel made by the same handshake as `TunnelHandshake` (Noise `NNpsk0`,
/// the same prologue, the psk of one access key), but with fixed ephemeral keys, so records and
/// datagrams sealed once as seeds open again in every run.
public struct FixedTunnel {
    /// The access key both sides derive their psk from.
    public static let accessKey = "0f8fad5b-d9cb-469f-a165-70867728950e"
    public static let keys = TunnelKeys(accessKey: accessKey)

    public let cipher: NoiseCipher
    /// The initiator's first message, as its hello datagram carries it.
    public let hello: [UInt8]
    private let initiatorToResponder: NoiseCipherState
    private let responderToInitiator: NoiseCipherState
    private let handshakeHash: [UInt8]

    public init(cipher: NoiseCipher) {
        do {
            var initiator = try NoiseHandshakeState(
                pattern: .NNpsk0, initiator: true, prologue: TunnelHandshake.prologue, psks: [Self.keys.psk], cipher: cipher,
                localEphemeral: try NoiseHandshakeState.PrivateKey(rawRepresentation: [UInt8](repeating: 0x11, count: 32)))
            var responder = try NoiseHandshakeState(
                pattern: .NNpsk0, initiator: false, prologue: TunnelHandshake.prologue, psks: [Self.keys.psk], cipher: cipher,
                localEphemeral: try NoiseHandshakeState.PrivateKey(rawRepresentation: [UInt8](repeating: 0x22, count: 32)))
            let hello = try initiator.writeMessage()
            _ = try responder.readMessage(hello)
            _ = try initiator.readMessage(try responder.writeMessage())
            (self.initiatorToResponder, self.responderToInitiator) = initiator.split()
            self.handshakeHash = initiator.handshakeHash
            self.hello = hello
            self.cipher = cipher
        } catch {
            fatalError("the fixed handshake failed: \(error)")
        }
    }

    /// The initiator's side: seals what the responder opens.
    public func initiatorSession() -> TunnelSession {
        TunnelSession(sending: self.initiatorToResponder, receiving: self.responderToInitiator, handshakeHash: self.handshakeHash)
    }

    /// The responder's side, as an agent that exposes a service holds it: its opener reads what
    /// the initiator sealed.
    public func responderSession() -> TunnelSession {
        TunnelSession(sending: self.responderToInitiator, receiving: self.initiatorToResponder, handshakeHash: self.handshakeHash)
    }

    /// The responder's stream opener at nonce 0.
    public func responderOpener() -> RecordOpener {
        RecordOpener(cipherState: self.initiatorToResponder)
    }

    /// The initiator's stream sealer at nonce 0.
    public func initiatorSealer(recordPayload: Int = RecordSealer.defaultRecordPayload) -> RecordSealer {
        RecordSealer(cipherState: self.initiatorToResponder, recordPayload: recordPayload)
    }
}
