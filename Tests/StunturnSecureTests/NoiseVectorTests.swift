@preconcurrency import Crypto
import Foundation
import StunturnSecure
import Testing

/// One cacophony test vector for a Curve25519/SHA256 protocol.
struct NoiseVector: Decodable, CustomTestStringConvertible, Sendable {
    struct Message: Decodable, Sendable {
        let payload: String
        let ciphertext: String
    }

    let protocolName: String
    let initPrologue: String
    let initPsks: [String]?
    let initEphemeral: String
    let initStatic: String?
    let initRemoteStatic: String?
    let respPrologue: String
    let respPsks: [String]?
    let respEphemeral: String?
    let respStatic: String?
    let respRemoteStatic: String?
    let handshakeHash: String
    let messages: [Message]

    enum CodingKeys: String, CodingKey {
        case protocolName = "protocol_name"
        case initPrologue = "init_prologue"
        case initPsks = "init_psks"
        case initEphemeral = "init_ephemeral"
        case initStatic = "init_static"
        case initRemoteStatic = "init_remote_static"
        case respPrologue = "resp_prologue"
        case respPsks = "resp_psks"
        case respEphemeral = "resp_ephemeral"
        case respStatic = "resp_static"
        case respRemoteStatic = "resp_remote_static"
        case handshakeHash = "handshake_hash"
        case messages
    }

    var testDescription: String { self.protocolName }

    /// `Noise_<pattern>_25519_<cipher>_SHA256` split into its pattern and cipher.
    var patternName: String { self.protocolName.split(separator: "_")[1].description }
    var cipher: NoiseCipher? { NoiseCipher(rawValue: self.protocolName.split(separator: "_")[3].description) }

    /// The vectors live beside the repository: `<repo>/../shared/vectors`.
    static let fileURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // StunturnSecureTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // repository root
        .appendingPathComponent("../shared/vectors/noise-25519-sha256.json")
        .standardized

    static func loadAll() throws -> [NoiseVector] {
        struct File: Decodable { let vectors: [NoiseVector] }
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: Self.fileURL)).vectors
    }
}

extension Array where Element == UInt8 {
    init(hex: String) {
        precondition(hex.count % 2 == 0, "odd-length hex string")
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        self = bytes
    }

    var hex: String { self.map { String(format: "%02x", $0) }.joined() }
}

@Suite("Noise cacophony vectors")
struct NoiseVectorTests {
    static let vectors = (try? NoiseVector.loadAll()) ?? []

    @Test func vectorFileCoversEveryPatternAndBothCiphersForTheTunnelPatterns() throws {
        let vectors = try NoiseVector.loadAll()
        let names = Set(vectors.map(\.protocolName))
        for pattern in ["NN", "NNpsk0"] {
            for cipher in NoiseCipher.allCases {
                #expect(names.contains("Noise_\(pattern)_25519_\(cipher.name)_SHA256"))
            }
        }
        // Every pattern in the file is implemented, so every vector runs below.
        let unsupported = vectors.filter { NoisePattern(name: $0.patternName) == nil || $0.cipher == nil }
        #expect(unsupported.map(\.protocolName) == [])
        #expect(vectors.count == 118)
    }

    @Test(arguments: vectors)
    func vectorReproducesByteForByte(_ vector: NoiseVector) throws {
        let pattern = try #require(NoisePattern(name: vector.patternName))
        let cipher = try #require(vector.cipher)
        typealias PrivateKey = Curve25519.KeyAgreement.PrivateKey
        typealias PublicKey = Curve25519.KeyAgreement.PublicKey

        var initiator = try NoiseHandshakeState(
            pattern: pattern,
            initiator: true,
            prologue: [UInt8](hex: vector.initPrologue),
            psks: (vector.initPsks ?? []).map { [UInt8](hex: $0) },
            cipher: cipher,
            localEphemeral: try PrivateKey(rawRepresentation: [UInt8](hex: vector.initEphemeral)),
            localStatic: try vector.initStatic.map { try PrivateKey(rawRepresentation: [UInt8](hex: $0)) },
            remoteStatic: try vector.initRemoteStatic.map { try PublicKey(rawRepresentation: [UInt8](hex: $0)) }
        )
        var responder = try NoiseHandshakeState(
            pattern: pattern,
            initiator: false,
            prologue: [UInt8](hex: vector.respPrologue),
            psks: (vector.respPsks ?? []).map { [UInt8](hex: $0) },
            cipher: cipher,
            localEphemeral: try vector.respEphemeral.map { try PrivateKey(rawRepresentation: [UInt8](hex: $0)) },
            localStatic: try vector.respStatic.map { try PrivateKey(rawRepresentation: [UInt8](hex: $0)) },
            remoteStatic: try vector.respRemoteStatic.map { try PublicKey(rawRepresentation: [UInt8](hex: $0)) }
        )

        var transport: (initiatorSend: NoiseCipherState, initiatorReceive: NoiseCipherState,
                        responderSend: NoiseCipherState, responderReceive: NoiseCipherState)?
        for (index, message) in vector.messages.enumerated() {
            let payload = [UInt8](hex: message.payload)
            let expected = [UInt8](hex: message.ciphertext)
            // After a one-way pattern only the initiator sends; otherwise turns keep alternating.
            let initiatorSends = pattern.isOneWay || index % 2 == 0

            if var keys = transport {
                let ciphertext: [UInt8]
                let plaintext: [UInt8]
                if initiatorSends {
                    ciphertext = try keys.initiatorSend.encrypt(plaintext: payload)
                    plaintext = try keys.responderReceive.decrypt(ciphertext: ciphertext)
                } else {
                    ciphertext = try keys.responderSend.encrypt(plaintext: payload)
                    plaintext = try keys.initiatorReceive.decrypt(ciphertext: ciphertext)
                }
                transport = keys
                #expect(ciphertext.hex == expected.hex, "transport message \(index)")
                #expect(plaintext == payload, "transport message \(index)")
                continue
            }

            let ciphertext: [UInt8]
            let plaintext: [UInt8]
            if initiatorSends {
                ciphertext = try initiator.writeMessage(payload: payload)
                plaintext = try responder.readMessage(ciphertext)
            } else {
                ciphertext = try responder.writeMessage(payload: payload)
                plaintext = try initiator.readMessage(ciphertext)
            }
            #expect(ciphertext.hex == expected.hex, "handshake message \(index)")
            #expect(plaintext == payload, "handshake message \(index)")

            if initiator.isComplete {
                #expect(responder.isComplete)
                #expect(initiator.handshakeHash.hex == vector.handshakeHash)
                #expect(responder.handshakeHash.hex == vector.handshakeHash)
                let (initiatorToResponder, responderToInitiator) = initiator.split()
                let (responderIncoming, responderOutgoing) = responder.split()
                transport = (initiatorToResponder, responderToInitiator, responderOutgoing, responderIncoming)
            }
        }
        #expect(transport != nil, "the handshake never completed")
    }
}
