import Crypto

/// Protects datagrams for a UDP path: each is an 8-byte big-endian counter, then AEAD ciphertext
/// and tag sealed with that counter as nonce.
///
/// Not thread-safe: use each instance from one thread at a time.
public final class DatagramSealer: @unchecked Sendable {
    /// Bytes a datagram adds to its plaintext: the counter and the tag.
    public static let overhead = 8 + NoiseCipher.tagLength

    private let cipher: NoiseCipher
    private let key: SymmetricKey
    private var counter: UInt64 = 0

    /// Creates a sealer from a 32-byte key that no other sealer or record layer uses.
    public init(key: SymmetricKey, cipher: NoiseCipher) {
        precondition(key.bitCount == NoiseCipher.keyLength * 8, "datagram keys are 32 bytes")
        self.key = key
        self.cipher = cipher
    }

    /// Appends one protected datagram carrying `plaintext` to `out`.
    public func seal(_ plaintext: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws {
        guard self.counter != NoiseCipherState.reservedNonce else { throw TunnelSecurityError.nonceExhausted }
        out.reserveAdditionalCapacity(plaintext.count + Self.overhead)
        withUnsafeBytes(of: self.counter.bigEndian) { out.append(contentsOf: $0) }
        try self.cipher.seal(
            key: self.key,
            nonce: self.counter,
            associatedData: UnsafeRawBufferPointer(start: nil, count: 0),
            plaintext: plaintext,
            appendingTo: &out
        )
        self.counter += 1
    }

    /// Returns one protected datagram carrying `plaintext`.
    public func seal(_ plaintext: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        try plaintext.withUnsafeBytes { try self.seal($0, appendingTo: &out) }
        return out
    }
}

/// Opens datagrams from a `DatagramSealer`, rejecting forgeries, duplicates and counters that
/// have fallen behind the replay window; reordering within the window is accepted.
///
/// A rejected datagram does not affect later ones, since UDP paths carry stray and forged
/// packets. Not thread-safe: use each instance from one thread at a time.
public final class DatagramOpener: @unchecked Sendable {
    private let cipher: NoiseCipher
    private let key: SymmetricKey
    private var replayWindow = ReplayWindow()

    /// Creates an opener for the peer sealer's key.
    public init(key: SymmetricKey, cipher: NoiseCipher) {
        precondition(key.bitCount == NoiseCipher.keyLength * 8, "datagram keys are 32 bytes")
        self.key = key
        self.cipher = cipher
    }

    /// Authenticates `datagram` and appends its plaintext to `out`.
    public func open(_ datagram: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws {
        guard datagram.count >= DatagramSealer.overhead else { throw TunnelSecurityError.datagramTooShort }
        let counter = datagram.loadUnaligned(as: UInt64.self).bigEndian
        // Checked before decrypting to save the work, but recorded only after the datagram
        // authenticates, so forgeries cannot burn counters the real peer has yet to send.
        guard counter != NoiseCipherState.reservedNonce, self.replayWindow.mayAccept(counter) else {
            throw TunnelSecurityError.datagramReplayed
        }
        do {
            try self.cipher.open(
                key: self.key,
                nonce: counter,
                associatedData: UnsafeRawBufferPointer(start: nil, count: 0),
                ciphertext: UnsafeRawBufferPointer(rebasing: datagram[8...]),
                appendingTo: &out
            )
        } catch {
            throw TunnelSecurityError.datagramAuthenticationFailed
        }
        self.replayWindow.record(counter)
    }

    /// Authenticates `datagram` and returns its plaintext.
    public func open(_ datagram: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        try datagram.withUnsafeBytes { try self.open($0, appendingTo: &out) }
        return out
    }
}

/// A sliding window of the counters seen most recently, in the style of RFC 6479: a ring of
/// 64-bit words, one spare, so sliding forward only clears whole words.
struct ReplayWindow {
    /// Counters more than this far behind the newest one are rejected.
    static let width: UInt64 = 1024
    private static let wordCount = Int(width / 64) + 1

    private var words = [UInt64](repeating: 0, count: wordCount)
    /// One more than the newest counter recorded; 0 before any.
    private var limit: UInt64 = 0

    func mayAccept(_ counter: UInt64) -> Bool {
        if counter >= self.limit { return true }
        if self.limit - counter > Self.width { return false }
        let (word, bit) = Self.position(counter)
        return self.words[word] & bit == 0
    }

    mutating func record(_ counter: UInt64) {
        if counter >= self.limit {
            let newestWord = self.limit == 0 ? nil : (self.limit - 1) / 64
            let targetWord = counter / 64
            // Clear the words the window slides onto; a jump past the ring clears all of it.
            if let newestWord {
                let stale = min(targetWord - newestWord, UInt64(Self.wordCount))
                for step in stride(from: UInt64(1), through: stale, by: 1) {
                    self.words[Int((newestWord + step) % UInt64(Self.wordCount))] = 0
                }
            }
            self.limit = counter + 1
        }
        let (word, bit) = Self.position(counter)
        self.words[word] |= bit
    }

    private static func position(_ counter: UInt64) -> (word: Int, bit: UInt64) {
        (Int((counter / 64) % UInt64(Self.wordCount)), 1 << (counter % 64))
    }
}
