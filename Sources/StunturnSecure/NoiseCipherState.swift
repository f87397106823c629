import Crypto

/// A Noise CipherState: an optional key and a 64-bit nonce counter.
public struct NoiseCipherState {
    /// The AEAD cipher in use.
    public let cipher: NoiseCipher
    /// The current key, or nil before the handshake has mixed in any key material.
    public private(set) var key: SymmetricKey?
    /// The nonce the next encryption or decryption will use.
    public var nonce: UInt64

    /// Nonce 2^64-1 is reserved by the Noise spec for rekeying.
    static let reservedNonce = UInt64.max

    /// Creates a cipher state; `key` must be 32 bytes when present.
    public init(cipher: NoiseCipher, key: SymmetricKey? = nil, nonce: UInt64 = 0) {
        precondition(key.map { $0.bitCount == NoiseCipher.keyLength * 8 } ?? true, "Noise keys are 32 bytes")
        self.cipher = cipher
        self.key = key
        self.nonce = nonce
    }

    /// Whether a key is set; without one, encryption and decryption pass data through unchanged.
    public var hasKey: Bool { self.key != nil }

    /// Replaces the key and resets the nonce, as `InitializeKey` does.
    public mutating func initializeKey(_ key: SymmetricKey?) {
        self = NoiseCipherState(cipher: self.cipher, key: key)
    }

    /// Encrypts `plaintext` with `associatedData` and advances the nonce.
    public mutating func encrypt(associatedData: [UInt8] = [], plaintext: [UInt8]) throws -> [UInt8] {
        guard self.key != nil else { return plaintext }
        var out: [UInt8] = []
        out.reserveCapacity(plaintext.count + NoiseCipher.tagLength)
        try associatedData.withUnsafeBytes { ad in
            try plaintext.withUnsafeBytes { try self.encrypt(associatedData: ad, plaintext: $0, appendingTo: &out) }
        }
        return out
    }

    /// Decrypts `ciphertext` with `associatedData` and advances the nonce only on success.
    public mutating func decrypt(associatedData: [UInt8] = [], ciphertext: [UInt8]) throws -> [UInt8] {
        guard self.key != nil else { return ciphertext }
        var out: [UInt8] = []
        out.reserveCapacity(ciphertext.count)
        try associatedData.withUnsafeBytes { ad in
            try ciphertext.withUnsafeBytes { try self.decrypt(associatedData: ad, ciphertext: $0, appendingTo: &out) }
        }
        return out
    }

    /// Replaces the key with one derived from it, as the Noise `Rekey()` function does.
    public mutating func rekey() throws {
        guard let key = self.key else { return }
        var derived: [UInt8] = []
        let zeros = [UInt8](repeating: 0, count: NoiseCipher.keyLength)
        try zeros.withUnsafeBytes { zeros in
            try self.cipher.seal(
                key: key,
                nonce: Self.reservedNonce,
                associatedData: UnsafeRawBufferPointer(start: nil, count: 0),
                plaintext: zeros,
                appendingTo: &derived
            )
        }
        self.key = SymmetricKey(data: derived[..<NoiseCipher.keyLength])
    }

    /// Encrypts into a caller-owned buffer; the key must be set.
    @inline(__always)
    mutating func encrypt(
        associatedData: UnsafeRawBufferPointer,
        plaintext: UnsafeRawBufferPointer,
        appendingTo out: inout [UInt8]
    ) throws {
        guard self.nonce != Self.reservedNonce else { throw TunnelSecurityError.nonceExhausted }
        try self.cipher.seal(
            key: self.key!,
            nonce: self.nonce,
            associatedData: associatedData,
            plaintext: plaintext,
            appendingTo: &out
        )
        self.nonce &+= 1
    }

    /// Decrypts into a caller-owned buffer; the key must be set.
    @inline(__always)
    mutating func decrypt(
        associatedData: UnsafeRawBufferPointer,
        ciphertext: UnsafeRawBufferPointer,
        appendingTo out: inout [UInt8]
    ) throws {
        guard self.nonce != Self.reservedNonce else { throw TunnelSecurityError.nonceExhausted }
        try self.cipher.open(
            key: self.key!,
            nonce: self.nonce,
            associatedData: associatedData,
            ciphertext: ciphertext,
            appendingTo: &out
        )
        self.nonce &+= 1
    }
}
