@preconcurrency import Crypto
import Foundation
import StunturnSecure
import Testing

@Suite("Noise cipher state")
struct NoiseCipherStateTests {
    static let key = SymmetricKey(data: [UInt8](repeating: 0x11, count: 32))

    @Test(arguments: [UInt64(0), 1, 0x1_0000_0002, UInt64.max - 1])
    func nonceEncodingMatchesTheSpec(counter: UInt64) throws {
        let plaintext = Array("nonce check".utf8)
        for cipher in NoiseCipher.allCases {
            var state = NoiseCipherState(cipher: cipher, key: Self.key, nonce: counter)
            let ciphertext = try state.encrypt(plaintext: plaintext)
            #expect(state.nonce == counter &+ 1)

            // 4 zero bytes, then the counter: little-endian for ChaChaPoly, big-endian for AES-GCM.
            let counterBytes = cipher == .chaChaPoly
                ? withUnsafeBytes(of: counter.littleEndian) { Array($0) }
                : withUnsafeBytes(of: counter.bigEndian) { Array($0) }
            let nonce = [0, 0, 0, 0] + counterBytes
            let expected: Data
            switch cipher {
            case .chaChaPoly:
                let box = try ChaChaPoly.seal(plaintext, using: Self.key, nonce: ChaChaPoly.Nonce(data: nonce))
                expected = box.ciphertext + box.tag
            case .aesGCM:
                let box = try AES.GCM.seal(plaintext, using: Self.key, nonce: AES.GCM.Nonce(data: nonce))
                expected = box.ciphertext + box.tag
            }
            #expect(ciphertext == Array(expected), "\(cipher)")
        }
    }

    @Test(arguments: NoiseCipher.allCases)
    func reservedNonceThrows(cipher: NoiseCipher) throws {
        var sender = NoiseCipherState(cipher: cipher, key: Self.key, nonce: UInt64.max)
        #expect(throws: TunnelSecurityError.nonceExhausted) { try sender.encrypt(plaintext: [1]) }
        var receiver = NoiseCipherState(cipher: cipher, key: Self.key, nonce: UInt64.max)
        #expect(throws: TunnelSecurityError.nonceExhausted) {
            try receiver.decrypt(ciphertext: [UInt8](repeating: 0, count: 17))
        }
    }

    @Test(arguments: NoiseCipher.allCases)
    func failedDecryptionKeepsTheNonce(cipher: NoiseCipher) throws {
        var sender = NoiseCipherState(cipher: cipher, key: Self.key)
        var receiver = NoiseCipherState(cipher: cipher, key: Self.key)
        var ciphertext = try sender.encrypt(associatedData: [9], plaintext: [1, 2, 3])
        #expect(throws: TunnelSecurityError.decryptionFailed) {
            try receiver.decrypt(associatedData: [8], ciphertext: ciphertext)
        }
        #expect(receiver.nonce == 0)
        #expect(try receiver.decrypt(associatedData: [9], ciphertext: ciphertext) == [1, 2, 3])
        ciphertext[0] ^= 1
        #expect(throws: TunnelSecurityError.decryptionFailed) {
            try receiver.decrypt(associatedData: [9], ciphertext: ciphertext)
        }
    }

    @Test func withoutKeyDataPassesThrough() throws {
        var state = NoiseCipherState(cipher: .chaChaPoly)
        #expect(try state.encrypt(plaintext: [1, 2]) == [1, 2])
        #expect(state.nonce == 0)
    }

    @Test(arguments: NoiseCipher.allCases)
    func rekeyChangesTheKeyOnBothSidesAlike(cipher: NoiseCipher) throws {
        var sender = NoiseCipherState(cipher: cipher, key: Self.key)
        var receiver = NoiseCipherState(cipher: cipher, key: Self.key)
        try sender.rekey()
        let ciphertext = try sender.encrypt(plaintext: [5])
        var stale = receiver
        #expect(throws: TunnelSecurityError.decryptionFailed) { try stale.decrypt(ciphertext: ciphertext) }
        try receiver.rekey()
        #expect(try receiver.decrypt(ciphertext: ciphertext) == [5])
    }

    @Test(arguments: ["NN", "NNpsk0", "XXpsk3", "NKpsk0+psk2", "X1K1", "N"])
    func patternNamesParse(name: String) throws {
        let pattern = try #require(NoisePattern(name: name))
        #expect(pattern.name == name)
    }

    @Test(arguments: ["", "QQ", "NNpsk", "NNpsk3", "NNpskX", "NN+psk0", "nn"])
    func invalidPatternNamesAreRejected(name: String) {
        #expect(NoisePattern(name: name) == nil)
    }

    @Test func pskModifiersPlaceTokens() {
        #expect(NoisePattern.NNpsk0.messages == [[.psk, .e], [.e, .ee]])
        #expect(NoisePattern.NNpsk2.messages == [[.e], [.e, .ee, .psk]])
        #expect(NoisePattern.NNpsk0.preSharedKeyCount == 1)
    }

    @Test func handshakeRequiresTheRightPreSharedKeys() {
        #expect(throws: TunnelSecurityError.invalidPreSharedKeys) {
            try NoiseHandshakeState(pattern: .NNpsk0, initiator: true)
        }
        #expect(throws: TunnelSecurityError.invalidPreSharedKeys) {
            try NoiseHandshakeState(pattern: .NNpsk0, initiator: true, psks: [[1, 2, 3]])
        }
        #expect(throws: TunnelSecurityError.missingStaticKey) {
            try NoiseHandshakeState(pattern: .NK, initiator: true)
        }
    }

    @Test func xxLearnsTheRemoteStaticKey() throws {
        let initiatorStatic = Curve25519.KeyAgreement.PrivateKey()
        let responderStatic = Curve25519.KeyAgreement.PrivateKey()
        var initiator = try NoiseHandshakeState(pattern: .XX, initiator: true, localStatic: initiatorStatic)
        var responder = try NoiseHandshakeState(pattern: .XX, initiator: false, localStatic: responderStatic)
        _ = try responder.readMessage(try initiator.writeMessage())
        _ = try initiator.readMessage(try responder.writeMessage(payload: [1]))
        #expect(try responder.readMessage(try initiator.writeMessage(payload: [2])) == [2])
        #expect(initiator.isComplete && responder.isComplete)
        #expect(initiator.remoteStatic?.rawRepresentation == responderStatic.publicKey.rawRepresentation)
        #expect(responder.remoteStatic?.rawRepresentation == initiatorStatic.publicKey.rawRepresentation)
        #expect(throws: TunnelSecurityError.handshakeOutOfOrder) { try initiator.writeMessage() }
    }
}
