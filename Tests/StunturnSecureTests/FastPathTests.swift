@preconcurrency import Crypto
import Foundation
import StunturnSecure
import Testing

/// The record layer seals and opens through swift-crypto's BoringSSL directly (not public API);
/// these tests hold it to the public `AES.GCM` and `ChaChaPoly`, record by record, so an update of
/// swift-crypto that changed anything underneath would fail here before it reached a tunnel.
@Suite struct FastPathAgreesWithThePublicAPI {
    static let key = SymmetricKey(data: (0..<32).map { UInt8($0 &* 7 &+ 3) })

    /// Noise's nonce for a counter: 4 zero bytes, then 8 bytes, big-endian for AES-GCM and
    /// little-endian for ChaChaPoly.
    static func nonce(_ counter: UInt64, _ cipher: NoiseCipher) -> [UInt8] {
        [0, 0, 0, 0] + (cipher == .aesGCM ? withUnsafeBytes(of: counter.bigEndian) { Array($0) }
                                           : withUnsafeBytes(of: counter.littleEndian) { Array($0) })
    }

    static func publicSeal(_ plaintext: [UInt8], counter: UInt64, associatedData: [UInt8], cipher: NoiseCipher) throws -> [UInt8] {
        switch cipher {
        case .aesGCM:
            let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce(counter, cipher)),
                                       authenticating: associatedData)
            return Array(box.ciphertext + box.tag)
        case .chaChaPoly:
            let box = try ChaChaPoly.seal(plaintext, using: key, nonce: ChaChaPoly.Nonce(data: nonce(counter, cipher)),
                                          authenticating: associatedData)
            return Array(box.ciphertext + box.tag)
        }
    }

    /// Record sizes from empty to the largest a sealer makes, with odd sizes between.
    static let sizes = [0, 1, 15, 16, 17, 255, 4096, 32 * 1024 - 1, RecordSealer.defaultRecordPayload, RecordSealer.maxPayload]

    @Test(arguments: NoiseCipher.allCases)
    func everySealedRecordIsWhatThePublicAPISeals(cipher: NoiseCipher) throws {
        let sealer = RecordSealer(key: Self.key, cipher: cipher, recordPayload: RecordSealer.maxPayload)
        var generator = SystemRandomNumberGenerator()
        for (counter, size) in Self.sizes.enumerated() {
            let plaintext = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var wire: [UInt8] = []
            try sealer.seal(plaintext, appendingTo: &wire)
            let expected = try Self.publicSeal(plaintext, counter: UInt64(counter), associatedData: [], cipher: cipher)
            #expect(wire.count == 2 + expected.count)
            #expect(Int(wire[0]) << 8 | Int(wire[1]) == expected.count)
            #expect(Array(wire[2...]) == expected, "record \(counter) (\(size) bytes) differs from \(cipher) sealed through the public API")
        }
        var close: [UInt8] = []
        try sealer.sealClose(appendingTo: &close)
        let expectedClose = try Self.publicSeal([], counter: UInt64(Self.sizes.count), associatedData: RecordSealer.closeAssociatedData,
                                                cipher: cipher)
        #expect(Array(close[2...]) == expectedClose, "the close record differs from the public API's")
    }

    @Test(arguments: NoiseCipher.allCases)
    func everyRecordThePublicAPISealsOpens(cipher: NoiseCipher) throws {
        let opener = RecordOpener(key: Self.key, cipher: cipher)
        var generator = SystemRandomNumberGenerator()
        var wire: [UInt8] = []
        var sent: [UInt8] = []
        for (counter, size) in Self.sizes.enumerated() {
            let plaintext = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let sealed = try Self.publicSeal(plaintext, counter: UInt64(counter), associatedData: [], cipher: cipher)
            wire += [UInt8(sealed.count >> 8), UInt8(sealed.count & 0xFF)] + sealed
            sent += plaintext
        }
        let close = try Self.publicSeal([], counter: UInt64(Self.sizes.count), associatedData: RecordSealer.closeAssociatedData, cipher: cipher)
        wire += [UInt8(close.count >> 8), UInt8(close.count & 0xFF)] + close
        var received: [UInt8] = []
        try wire.withUnsafeBytes { try opener.open($0, appendingTo: &received) }
        #expect(received == sent)
        #expect(opener.isClosed)
        try opener.finish()
    }

    @Test(arguments: NoiseCipher.allCases)
    func aRecordWithOneFlippedBitIsRefusedAsThePublicAPIRefusesIt(cipher: NoiseCipher) throws {
        var sealed = try Self.publicSeal(Array("one record".utf8), counter: 0, associatedData: [], cipher: cipher)
        sealed[3] ^= 0x10
        let opener = RecordOpener(key: Self.key, cipher: cipher)
        var out: [UInt8] = []
        let wire = [UInt8(sealed.count >> 8), UInt8(sealed.count & 0xFF)] + sealed
        #expect(throws: TunnelSecurityError.self) { try wire.withUnsafeBytes { try opener.open($0, appendingTo: &out) } }
        #expect(out.isEmpty)
    }
}
