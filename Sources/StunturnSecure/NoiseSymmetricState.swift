import Crypto

/// A Noise SymmetricState: the chaining key, the handshake hash and the current cipher state.
public struct NoiseSymmetricState {
    /// The chaining key.
    private var chainingKey: [UInt8]
    /// The running handshake hash `h`.
    public private(set) var handshakeHash: [UInt8]
    /// The cipher state keyed by the latest `MixKey`.
    public private(set) var cipherState: NoiseCipherState

    static let hashLength = SHA256.byteCount

    /// Initializes from a full protocol name, as `InitializeSymmetric` does.
    public init(protocolName: String, cipher: NoiseCipher) {
        let name = Array(protocolName.utf8)
        if name.count <= Self.hashLength {
            self.handshakeHash = name + [UInt8](repeating: 0, count: Self.hashLength - name.count)
        } else {
            self.handshakeHash = Array(SHA256.hash(data: name))
        }
        self.chainingKey = self.handshakeHash
        self.cipherState = NoiseCipherState(cipher: cipher)
    }

    /// Mixes Diffie-Hellman output or other key material into the chaining key and rekeys.
    public mutating func mixKey(_ inputKeyMaterial: [UInt8]) {
        let outputs = Self.hkdf(chainingKey: self.chainingKey, inputKeyMaterial: inputKeyMaterial, count: 2)
        self.chainingKey = outputs[0]
        self.cipherState.initializeKey(SymmetricKey(data: outputs[1]))
    }

    /// Hashes `data` into the handshake hash.
    public mutating func mixHash<Bytes: Sequence>(_ data: Bytes) where Bytes.Element == UInt8 {
        var hasher = SHA256()
        hasher.update(data: self.handshakeHash)
        hasher.update(data: Array(data))
        self.handshakeHash = Array(hasher.finalize())
    }

    /// Mixes a pre-shared key into both the chaining key and the handshake hash.
    public mutating func mixKeyAndHash(_ inputKeyMaterial: [UInt8]) {
        let outputs = Self.hkdf(chainingKey: self.chainingKey, inputKeyMaterial: inputKeyMaterial, count: 3)
        self.chainingKey = outputs[0]
        self.mixHash(outputs[1])
        self.cipherState.initializeKey(SymmetricKey(data: outputs[2]))
    }

    /// Encrypts `plaintext` (if a key is set) with the handshake hash as associated data.
    public mutating func encryptAndHash(_ plaintext: [UInt8]) throws -> [UInt8] {
        let ciphertext = try self.cipherState.encrypt(associatedData: self.handshakeHash, plaintext: plaintext)
        self.mixHash(ciphertext)
        return ciphertext
    }

    /// Decrypts `ciphertext` (if a key is set) with the handshake hash as associated data.
    public mutating func decryptAndHash(_ ciphertext: [UInt8]) throws -> [UInt8] {
        let plaintext = try self.cipherState.decrypt(associatedData: self.handshakeHash, ciphertext: ciphertext)
        self.mixHash(ciphertext)
        return plaintext
    }

    /// Derives the two transport cipher states, initiator-to-responder first.
    public func split() -> (NoiseCipherState, NoiseCipherState) {
        let outputs = Self.hkdf(chainingKey: self.chainingKey, inputKeyMaterial: [], count: 2)
        let cipher = self.cipherState.cipher
        return (
            NoiseCipherState(cipher: cipher, key: SymmetricKey(data: outputs[0])),
            NoiseCipherState(cipher: cipher, key: SymmetricKey(data: outputs[1]))
        )
    }

    /// Noise's HKDF is RFC 5869 HKDF with the chaining key as salt and empty info.
    static func hkdf(chainingKey: [UInt8], inputKeyMaterial: [UInt8], count: Int) -> [[UInt8]] {
        let derived = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: inputKeyMaterial),
            salt: chainingKey,
            info: [UInt8](),
            outputByteCount: count * Self.hashLength
        )
        return derived.withUnsafeBytes { bytes in
            (0..<count).map { Array(bytes[($0 * Self.hashLength)..<(($0 + 1) * Self.hashLength)]) }
        }
    }
}
