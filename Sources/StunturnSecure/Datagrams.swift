@preconcurrency import Crypto  // SymmetricKey is immutable but not yet marked Sendable in swift-crypto 3.12
import Synchronization

/// Protects datagrams for a UDP path: each is an 8-byte big-endian counter, then AEAD ciphertext
/// and tag sealed with that counter as nonce.
///
/// Safe to share: each datagram takes the next counter atomically, so no two datagrams ever
/// share a nonce, whichever threads seal them.
public final class DatagramSealer: Sendable {
    /// Bytes a datagram adds to its plaintext: the counter and the tag.
    public static let overhead = 8 + NoiseCipher.tagLength

    private let cipher: NoiseCipher
    private let key: SymmetricKey
    private let counter = Atomic<UInt64>(0)

    /// Creates a sealer from a 32-byte key that no other sealer or record layer uses.
    public init(key: SymmetricKey, cipher: NoiseCipher) {
        precondition(key.bitCount == NoiseCipher.keyLength * 8, "datagram keys are 32 bytes")
        self.key = key
        self.cipher = cipher
    }

    /// Appends one protected datagram carrying `plaintext` to `out`.
    public func seal(_ plaintext: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws {
        let nonce = try self.takeNonce()
        out.reserveAdditionalCapacity(plaintext.count + Self.overhead)
        withUnsafeBytes(of: nonce.bigEndian) { out.append(contentsOf: $0) }
        try self.cipher.seal(
            key: self.key,
            nonce: nonce,
            associatedData: UnsafeRawBufferPointer(start: nil, count: 0),
            plaintext: plaintext,
            appendingTo: &out
        )
    }

    /// The next counter, taken for good: a datagram whose sealing fails leaves a gap, never a reuse.
    private func takeNonce() throws -> UInt64 {
        var current = self.counter.load(ordering: .relaxed)
        while true {
            guard current != NoiseCipherState.reservedNonce else { throw TunnelSecurityError.nonceExhausted }
            let (exchanged, original) = self.counter.compareExchange(
                expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return current }
            current = original
        }
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
/// packets. Safe to share: the replay check, the decryption and the record of the counter happen
/// under one lock, so a datagram delivered twice at once is accepted once.
public final class DatagramOpener: Sendable {
    private let cipher: NoiseCipher
    private let key: SymmetricKey
    private let replayWindow = Mutex(ReplayWindow())

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
        try self.replayWindow.withLock { window in
            guard counter != NoiseCipherState.reservedNonce, window.mayAccept(counter) else {
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
            window.record(counter)
        }
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
