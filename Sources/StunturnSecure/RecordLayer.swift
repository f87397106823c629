import Crypto
#if canImport(CCryptoBoringSSL)
// swift-crypto's own BoringSSL: one keyed AEAD context per direction, each record encrypted or
// decrypted from the caller's buffer straight into the output in one pass. Through the public API
// each 32 KiB record re-expands the key and copies its bytes three times, which cost about as much
// as the encryption itself.
import CCryptoBoringSSL
#endif

/// Encrypts a byte stream into length-prefixed Noise transport records.
///
/// Each record is a 2-byte big-endian length followed by that many bytes of AEAD ciphertext and
/// tag, sealed with the next counter nonce and empty associated data. The stream ends with a close
/// record: no plaintext, sealed with `RecordSealer.closeAssociatedData` instead, so a peer can
/// tell an end the sender meant from a connection cut between two records. Not `Sendable`: a
/// sealer belongs to one task or relay queue at a time, so its nonce counter is never shared.
public final class RecordSealer {
    /// The most plaintext a record may carry: Noise's 65535-byte message limit minus the tag.
    /// Openers accept records up to this size.
    public static let maxPayload = NoiseHandshakeState.maxMessageLength - NoiseCipher.tagLength
    /// The record size sealers use unless told otherwise. Near the 64 KiB maximum, each record's
    /// transient buffers inside swift-crypto add up to more than glibc's 128 KiB trim threshold,
    /// so every record pays fresh page faults: on the reference machine AES-GCM seal+open fell from
    /// about 2,800 MB/s at 32 KiB to about 1,200 MB/s at 65,519 bytes.
    public static let defaultRecordPayload = 32 * 1024
    /// Bytes a record adds to its plaintext: the length prefix and the tag.
    public static let overhead = 2 + NoiseCipher.tagLength
    /// The close record's associated data. Only its tag tells it from an empty data record (a
    /// keepalive), and only a holder of the key can make that tag.
    public static let closeAssociatedData = Array("stunturn close".utf8)
    /// The close record's size on the wire: a length prefix and a tag.
    public static let closeRecordLength = overhead

    /// The most plaintext this sealer puts in one record.
    public let recordPayload: Int
    /// True once the close record is sealed; nothing may be sealed after it.
    public private(set) var isClosed = false
    private var cipherState: NoiseCipherState
    private let aead: RecordAEAD?

    /// Creates a sealer from a keyed transport cipher state, such as one from `split()`.
    public init(cipherState: NoiseCipherState, recordPayload: Int = RecordSealer.defaultRecordPayload) {
        precondition(cipherState.hasKey, "a record sealer needs a keyed cipher state")
        precondition((1...Self.maxPayload).contains(recordPayload), "record payload must be 1...\(Self.maxPayload)")
        self.cipherState = cipherState
        self.recordPayload = recordPayload
        self.aead = RecordAEAD(cipherState)
    }

    /// Creates a sealer from a 32-byte key, starting at nonce 0.
    public convenience init(
        key: SymmetricKey,
        cipher: NoiseCipher,
        recordPayload: Int = RecordSealer.defaultRecordPayload
    ) {
        self.init(cipherState: NoiseCipherState(cipher: cipher, key: key), recordPayload: recordPayload)
    }

    /// The wire size of `plaintextCount` bytes once sealed by this sealer.
    public func sealedLength(ofPlaintextCount plaintextCount: Int) -> Int {
        let records = max(1, (plaintextCount + self.recordPayload - 1) / self.recordPayload)
        return plaintextCount + records * Self.overhead
    }

    /// Writes `plaintext` into `out` as one or more records and returns the bytes written;
    /// `out` must hold at least `sealedLength(ofPlaintextCount:)` bytes and must not overlap
    /// `plaintext`. An empty plaintext yields one empty record, which the peer accepts and which
    /// can serve as a keepalive. The cipher reads the plaintext and writes the records in one
    /// pass: no copy in between.
    public func seal(_ plaintext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws -> Int {
        precondition(!self.isClosed, "no record may follow the close record")
        precondition(out.count >= self.sealedLength(ofPlaintextCount: plaintext.count), "record output buffer too small")
        var offset = 0
        var written = 0
        repeat {
            let end = min(offset + self.recordPayload, plaintext.count)
            written += try self.sealRecord(UnsafeRawBufferPointer(rebasing: plaintext[offset..<end]), associatedData: [],
                                           into: UnsafeMutableRawBufferPointer(rebasing: out[written...]))
            offset = end
        } while offset < plaintext.count
        return written
    }

    /// Writes the close record into `out` (at least `closeRecordLength` bytes) and returns its
    /// length. It ends the stream: the peer's opener takes the end that follows as an orderly one,
    /// and this sealer seals nothing more.
    public func sealClose(into out: UnsafeMutableRawBufferPointer) throws -> Int {
        precondition(!self.isClosed, "the close record is sealed once")
        precondition(out.count >= Self.closeRecordLength, "record output buffer too small")
        let written = try self.sealRecord(UnsafeRawBufferPointer(start: nil, count: 0),
                                          associatedData: Self.closeAssociatedData, into: out)
        self.isClosed = true
        return written
    }

    /// Appends the close record to `out`.
    public func sealClose(appendingTo out: inout [UInt8]) throws {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: Self.closeRecordLength))
        do {
            _ = try out.withUnsafeMutableBytes { try self.sealClose(into: UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
        } catch {
            out.removeSubrange(start...)
            throw error
        }
    }

    /// Seals one record of at most `recordPayload` bytes at the start of `out`; returns its length.
    /// The cipher reads the plaintext and writes the record in one pass.
    @inline(__always)
    private func sealRecord(_ chunk: UnsafeRawBufferPointer, associatedData: [UInt8], into out: UnsafeMutableRawBufferPointer) throws -> Int {
        let length = chunk.count + NoiseCipher.tagLength
        out[0] = UInt8(truncatingIfNeeded: length >> 8)
        out[1] = UInt8(truncatingIfNeeded: length)
        try associatedData.withUnsafeBytes { associatedData in
            if let aead = self.aead {
                guard self.cipherState.nonce != NoiseCipherState.reservedNonce else { throw TunnelSecurityError.nonceExhausted }
                try aead.seal(chunk, associatedData: associatedData, nonce: self.cipherState.nonce, into: out.baseAddress!.advanced(by: 2))
                self.cipherState.nonce &+= 1
            } else {
                var sealed: [UInt8] = []
                try self.cipherState.encrypt(associatedData: associatedData, plaintext: chunk, appendingTo: &sealed)
                UnsafeMutableRawBufferPointer(rebasing: out[2...]).copyBytes(from: sealed)
            }
        }
        return 2 + length
    }

    /// Appends `plaintext` to `out` as one or more records.
    public func seal(_ plaintext: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws {
        let start = out.count
        let length = self.sealedLength(ofPlaintextCount: plaintext.count)
        out.append(contentsOf: repeatElement(0, count: length))
        do {
            _ = try out.withUnsafeMutableBytes { try self.seal(plaintext, into: UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
        } catch {
            out.removeSubrange(start...)
            throw error
        }
    }

    /// Appends `plaintext` to `out` as one or more records.
    public func seal(_ plaintext: [UInt8], appendingTo out: inout [UInt8]) throws {
        try plaintext.withUnsafeBytes { try self.seal($0, appendingTo: &out) }
    }
}

/// Decrypts a stream of records written by a `RecordSealer`, however the stream is chunked.
///
/// A record that fails authentication (tampered, reordered, replayed or cut short) fails the
/// opener for good: every later call throws the same error, and so do bytes after the close
/// record. When the stream ends, `finish()` says whether it ended where the sender ended it, right
/// after the close record. Not `Sendable`: an opener belongs to one task or relay queue at a time.
public final class RecordOpener {
    private var cipherState: NoiseCipherState
    private let aead: RecordAEAD?
    /// True once the close record has arrived; the stream must end there.
    public private(set) var isClosed = false
    /// The start of a record that has not fully arrived yet; its capacity is reused.
    private var pending: [UInt8] = []
    private var failure: TunnelSecurityError?
    /// Plaintext bytes the last `open` wrote, including those before a record that failed.
    private var openedByLastCall = 0

    /// Creates an opener from a keyed transport cipher state, such as one from `split()`.
    public init(cipherState: NoiseCipherState) {
        precondition(cipherState.hasKey, "a record opener needs a keyed cipher state")
        self.cipherState = cipherState
        self.aead = RecordAEAD(cipherState)
    }

    /// Creates an opener from a 32-byte key, starting at nonce 0.
    public convenience init(key: SymmetricKey, cipher: NoiseCipher) {
        self.init(cipherState: NoiseCipherState(cipher: cipher, key: key))
    }

    /// How many bytes of an incomplete record are buffered, waiting for the rest.
    public var bufferedByteCount: Int { self.pending.count }

    /// The most plaintext bytes the next `open` of `wireCount` bytes can write: nothing while the
    /// record being collected stays incomplete, so a peer that trickles a record byte by byte
    /// never makes a caller reserve room for the whole buffered record again and again.
    public func maxPlaintextCount(forWireCount wireCount: Int) -> Int {
        let total = self.pending.count + wireCount
        if self.pending.count >= 2 {
            let length = Int(self.pending[0]) << 8 | Int(self.pending[1])
            if total < 2 + length { return 0 }
        }
        return total
    }

    /// Consumes the next chunk of the wire stream, writes every completed record's plaintext into
    /// `out` and returns the bytes written; bytes of an incomplete record are kept for the next
    /// call. `out` must hold at least `maxPlaintextCount(forWireCount: wire.count)` bytes and must
    /// not overlap `wire`. Whole records are decrypted straight from `wire` into `out`, with no
    /// copy between.
    public func open(_ wire: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws -> Int {
        precondition(out.count >= self.maxPlaintextCount(forWireCount: wire.count), "record output buffer too small")
        self.openedByLastCall = 0
        if let failure = self.failure {
            throw failure
        }
        do {
            return try self.consume(wire, into: out)
        } catch let error as TunnelSecurityError {
            self.failure = error
            self.pending = []
            throw error
        }
    }

    /// Consumes the next chunk of the wire stream and appends every completed record's plaintext
    /// to `out`; bytes of an incomplete record are kept for the next call.
    public func open(_ wire: UnsafeRawBufferPointer, appendingTo out: inout [UInt8]) throws {
        let room = self.maxPlaintextCount(forWireCount: wire.count)
        if room == 0 {
            // Only part of a record: nothing to write, so nothing to reserve.
            _ = try self.open(wire, into: UnsafeMutableRawBufferPointer(start: nil, count: 0))
            return
        }
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: room))
        do {
            let written = try out.withUnsafeMutableBytes { try self.open(wire, into: UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
            out.removeSubrange((start + written)...)
        } catch {
            // Records before the one that failed were genuine and stay delivered.
            out.removeSubrange((start + self.openedByLastCall)...)
            throw error
        }
    }

    /// Consumes the next chunk of the wire stream.
    public func open(_ wire: [UInt8], appendingTo out: inout [UInt8]) throws {
        try wire.withUnsafeBytes { try self.open($0, appendingTo: &out) }
    }

    /// Call when the wire stream has ended: throws `streamTruncated` when it ended inside a record,
    /// `closeRecordMissing` when it ended between records but before the close record (or the
    /// error that failed the opener earlier).
    public func finish() throws {
        if let failure = self.failure { throw failure }
        guard self.pending.isEmpty else {
            self.failure = .streamTruncated
            throw TunnelSecurityError.streamTruncated
        }
        guard self.isClosed else {
            self.failure = .closeRecordMissing
            throw TunnelSecurityError.closeRecordMissing
        }
    }

    private func consume(_ wire: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws -> Int {
        var offset = 0
        var written = 0
        defer { self.openedByLastCall = written }
        if self.isClosed && !wire.isEmpty { throw TunnelSecurityError.dataAfterClose }

        // Complete a record left over from earlier calls, copying only the bytes it still needs.
        if !self.pending.isEmpty {
            if self.pending.count < 2 {
                let take = min(2 - self.pending.count, wire.count)
                self.pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: wire[..<take]))
                offset = take
                if self.pending.count < 2 { return 0 }
            }
            let recordLength = try Self.recordLength(self.pending[0], self.pending[1])
            let needed = 2 + recordLength - self.pending.count
            let take = min(needed, wire.count - offset)
            self.pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: wire[offset..<(offset + take)]))
            offset += take
            if take < needed { return 0 }
            written = try self.pending.withUnsafeBytes { record in
                try self.decrypt(UnsafeRawBufferPointer(rebasing: record[2...]), into: out.baseAddress!)
            }
            self.pending.removeAll(keepingCapacity: true)
            if self.isClosed && offset < wire.count { throw TunnelSecurityError.dataAfterClose }
        }

        while wire.count - offset >= 2 {
            let recordLength = try Self.recordLength(wire[offset], wire[offset + 1])
            let recordEnd = offset + 2 + recordLength
            guard recordEnd <= wire.count else { break }
            written += try self.decrypt(UnsafeRawBufferPointer(rebasing: wire[(offset + 2)..<recordEnd]),
                                        into: out.baseAddress!.advanced(by: written))
            offset = recordEnd
            if self.isClosed && offset < wire.count { throw TunnelSecurityError.dataAfterClose }
        }

        if offset < wire.count {
            self.pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: wire[offset...]))
        }
        return written
    }

    @inline(__always)
    private static func recordLength(_ high: UInt8, _ low: UInt8) throws -> Int {
        let length = Int(high) << 8 | Int(low)
        guard length >= NoiseCipher.tagLength else { throw TunnelSecurityError.malformedRecord }
        return length
    }

    /// Decrypts one record's ciphertext and tag to `out`; returns the plaintext length. A record
    /// with no plaintext whose tag fails as a data record may be the close record: it is checked
    /// again with the close record's associated data.
    @inline(__always)
    private func decrypt(_ ciphertext: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) throws -> Int {
        do {
            return try self.decrypt(ciphertext, associatedData: [], into: out)
        } catch let error as TunnelSecurityError where error == .recordAuthenticationFailed && ciphertext.count == NoiseCipher.tagLength {
            _ = try self.decrypt(ciphertext, associatedData: RecordSealer.closeAssociatedData, into: out)
            self.isClosed = true
            return 0
        }
    }

    @inline(__always)
    private func decrypt(_ ciphertext: UnsafeRawBufferPointer, associatedData: [UInt8], into out: UnsafeMutableRawPointer) throws -> Int {
        let count = ciphertext.count - NoiseCipher.tagLength
        guard self.cipherState.nonce != NoiseCipherState.reservedNonce else { throw TunnelSecurityError.nonceExhausted }
        return try associatedData.withUnsafeBytes { associatedData in
            if let aead = self.aead {
                try aead.open(ciphertext, associatedData: associatedData, nonce: self.cipherState.nonce, into: out)
                self.cipherState.nonce &+= 1
                return count
            }
            var plaintext: [UInt8] = []
            do {
                try self.cipherState.decrypt(associatedData: associatedData, ciphertext: ciphertext, appendingTo: &plaintext)
            } catch let error as TunnelSecurityError where error == .decryptionFailed {
                throw TunnelSecurityError.recordAuthenticationFailed
            }
            plaintext.withUnsafeBytes { out.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            return plaintext.count
        }
    }
}

extension Array where Element == UInt8 {
    /// Reserves room for `count` more bytes, growing geometrically so that callers appending
    /// small amounts repeatedly do not reallocate on every call.
    @inline(__always)
    mutating func reserveAdditionalCapacity(_ count: Int) {
        let needed = self.count + count
        if self.capacity < needed {
            self.reserveCapacity(Swift.max(needed, self.capacity * 2))
        }
    }
}

/// A keyed AEAD context for the record layer's transport cipher, or nil where swift-crypto does
/// not run on BoringSSL (the callers then use `NoiseCipherState`). Same wire format either way.
final class RecordAEAD {
    #if canImport(CCryptoBoringSSL)
    private let context: UnsafeMutablePointer<EVP_AEAD_CTX>
    private let cipher: NoiseCipher

    init?(_ state: NoiseCipherState) {
        guard let key = state.key else { return nil }
        let aead: OpaquePointer?
        switch state.cipher {
        case .aesGCM: aead = CCryptoBoringSSL_EVP_aead_aes_256_gcm()
        case .chaChaPoly: aead = CCryptoBoringSSL_EVP_aead_chacha20_poly1305()
        }
        let made = key.withUnsafeBytes { key in
            CCryptoBoringSSL_EVP_AEAD_CTX_new(aead, key.bindMemory(to: UInt8.self).baseAddress, key.count, NoiseCipher.tagLength)
        }
        guard let made else { return nil }
        self.context = made
        self.cipher = state.cipher
    }

    deinit { CCryptoBoringSSL_EVP_AEAD_CTX_free(self.context) }

    /// Noise's 96-bit nonce: 32 zero bits, then the counter, little-endian for ChaChaPoly and
    /// big-endian for AES-GCM (as `NoiseCipher` encodes it).
    @inline(__always)
    private func withNonce<R>(_ counter: UInt64, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        var words: (UInt32, UInt32, UInt32)
        switch self.cipher {
        case .chaChaPoly: words = (0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian)
        case .aesGCM: words = (0, UInt32(truncatingIfNeeded: counter >> 32).bigEndian, UInt32(truncatingIfNeeded: counter).bigEndian)
        }
        return withUnsafeBytes(of: &words) { body($0.bindMemory(to: UInt8.self).baseAddress!) }
    }

    /// Writes the ciphertext and tag of `plaintext` to `out` (`plaintext.count` + 16 bytes).
    func seal(_ plaintext: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer, nonce: UInt64,
              into out: UnsafeMutableRawPointer) throws {
        let count = plaintext.count
        let body = out.assumingMemoryBound(to: UInt8.self)
        let input = plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(body)
        let ok = self.withNonce(nonce) { nonce -> Int32 in
            var tagLength = 0
            return CCryptoBoringSSL_EVP_AEAD_CTX_seal_scatter(
                self.context, body, body + count, &tagLength, NoiseCipher.tagLength,
                nonce, 12, input, count, nil, 0,
                associatedData.baseAddress?.assumingMemoryBound(to: UInt8.self), associatedData.count)
        }
        guard ok == 1 else { throw TunnelSecurityError.messageTooLong }
    }

    /// Writes the plaintext of `ciphertext` (which ends with the tag) to `out`.
    func open(_ ciphertext: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer, nonce: UInt64,
              into out: UnsafeMutableRawPointer) throws {
        guard ciphertext.count >= NoiseCipher.tagLength else { throw TunnelSecurityError.recordAuthenticationFailed }
        let count = ciphertext.count - NoiseCipher.tagLength
        let input = ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let ok = self.withNonce(nonce) { nonce in
            CCryptoBoringSSL_EVP_AEAD_CTX_open_gather(
                self.context, out.assumingMemoryBound(to: UInt8.self), nonce, 12, input, count,
                input + count, NoiseCipher.tagLength,
                associatedData.baseAddress?.assumingMemoryBound(to: UInt8.self), associatedData.count)
        }
        guard ok == 1 else { throw TunnelSecurityError.recordAuthenticationFailed }
    }

    #else
    init?(_ state: NoiseCipherState) { return nil }
    func seal(_ plaintext: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer, nonce: UInt64,
              into out: UnsafeMutableRawPointer) throws {}
    func open(_ ciphertext: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer, nonce: UInt64,
              into out: UnsafeMutableRawPointer) throws {}
    #endif
}
