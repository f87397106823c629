@preconcurrency import Crypto
import StunturnSecure
import Testing

@Suite("Record layer")
struct RecordLayerTests {
    /// Feeds `wire` to `opener` in pieces of 1...maxChunk bytes drawn from `seed`.
    static func openInChunks(_ wire: [UInt8], _ opener: RecordOpener, maxChunk: Int, seed: UInt64) throws -> [UInt8] {
        var generator = SplitMix64(seed: seed)
        var plaintext: [UInt8] = []
        var offset = 0
        while offset < wire.count {
            let end = min(wire.count, offset + Int.random(in: 1...maxChunk, using: &generator))
            try wire[offset..<end].withUnsafeBytes { try opener.open($0, appendingTo: &plaintext) }
            offset = end
        }
        return plaintext
    }

    @Test(arguments: NoiseCipher.allCases, [UInt64(1), 2, 3])
    func randomChunkingRoundTrips(cipher: NoiseCipher, seed: UInt64) throws {
        let (initiator, responder) = try establishedSessions(cipher: cipher)
        var generator = SplitMix64(seed: seed)
        var wire: [UInt8] = []
        var sent: [UInt8] = []
        for _ in 0..<40 {
            let message = [UInt8].random(count: Int.random(in: 0...3000, using: &generator), using: &generator)
            try initiator.sealer.seal(message, appendingTo: &wire)
            sent += message
        }
        let received = try Self.openInChunks(wire, responder.opener, maxChunk: 700, seed: seed)
        #expect(received == sent)
        #expect(responder.opener.bufferedByteCount == 0)
    }

    @Test func oneByteAtATimeRoundTrips() throws {
        let (initiator, responder) = try establishedSessions()
        var generator = SplitMix64(seed: 42)
        let message = [UInt8].random(count: 5000, using: &generator)
        var wire: [UInt8] = []
        try initiator.sealer.seal(message, appendingTo: &wire)
        try initiator.sealer.seal([], appendingTo: &wire)
        try initiator.sealer.seal(Array(message.prefix(10)), appendingTo: &wire)
        let received = try Self.openInChunks(wire, responder.opener, maxChunk: 1, seed: 0)
        #expect(received == message + message.prefix(10))
    }

    @Test func outputBoundIsZeroUntilARecordCanComplete() throws {
        let (initiator, responder) = try establishedSessions()
        var wire: [UInt8] = []
        try initiator.sealer.seal([UInt8](repeating: 7, count: 1000), appendingTo: &wire)
        let opener = responder.opener
        #expect(opener.maxPlaintextCount(forWireCount: 1) == 1)
        var out: [UInt8] = []
        try opener.open(Array(wire[0..<500]), appendingTo: &out)
        #expect(out.isEmpty && opener.bufferedByteCount == 500)
        // The length is known now: no room is needed until the last byte of the record arrives.
        #expect(opener.maxPlaintextCount(forWireCount: 1) == 0)
        #expect(opener.maxPlaintextCount(forWireCount: wire.count - 501) == 0)
        #expect(opener.maxPlaintextCount(forWireCount: wire.count - 500) == wire.count)
        try opener.open(Array(wire[500...]), appendingTo: &out)
        #expect(out == [UInt8](repeating: 7, count: 1000))
    }

    @Test(arguments: [
        (0, RecordSealer.defaultRecordPayload),
        (1, RecordSealer.defaultRecordPayload),
        (RecordSealer.defaultRecordPayload + 1, RecordSealer.defaultRecordPayload),
        (1 << 20, RecordSealer.defaultRecordPayload),
        (RecordSealer.maxPayload, RecordSealer.maxPayload),
        (RecordSealer.maxPayload + 1, RecordSealer.maxPayload),
        (3 * 65536 + 17, RecordSealer.maxPayload),
        (1000, 7),
    ])
    func largePayloadsSplitIntoBoundedRecords(size: Int, recordPayload: Int) throws {
        let key = SymmetricKey(data: [UInt8](repeating: 0x33, count: 32))
        let sealer = RecordSealer(key: key, cipher: .default, recordPayload: recordPayload)
        let opener = RecordOpener(key: key, cipher: .default)
        var generator = SplitMix64(seed: UInt64(size))
        let message = [UInt8].random(count: size, using: &generator)
        var wire: [UInt8] = []
        try sealer.seal(message, appendingTo: &wire)
        #expect(wire.count == sealer.sealedLength(ofPlaintextCount: size))

        // Walk the records: each covers its tag, none exceeds the chosen size or the Noise limit.
        var offset = 0
        var records = 0
        while offset < wire.count {
            let length = Int(wire[offset]) << 8 | Int(wire[offset + 1])
            #expect(length >= 16 && length <= recordPayload + 16 && length <= 65535)
            offset += 2 + length
            records += 1
        }
        #expect(offset == wire.count)
        #expect(records == max(1, (size + recordPayload - 1) / recordPayload))

        var received: [UInt8] = []
        try opener.open(wire, appendingTo: &received)
        #expect(received == message)
    }

    @Test func emptyRecordsAreAccepted() throws {
        let (initiator, responder) = try establishedSessions()
        var wire: [UInt8] = []
        try initiator.sealer.seal([], appendingTo: &wire)
        try initiator.sealer.seal([], appendingTo: &wire)
        #expect(wire.count == 2 * RecordSealer.overhead)
        var received: [UInt8] = []
        try responder.opener.open(wire, appendingTo: &received)
        #expect(received.isEmpty)
    }

    @Test func aStreamEndsBetweenRecordsOrIsTruncated() throws {
        // Inside a record's length, inside its body, or just before its last byte: cut short.
        for cut in [1, 100, 317] {
            let (initiator, responder) = try establishedSessions()
            var full: [UInt8] = []
            try initiator.sealer.seal([UInt8](repeating: 1, count: 300), appendingTo: &full)
            #expect(full.count == 318)
            var out: [UInt8] = []
            try responder.opener.open(Array(full[0..<cut]), appendingTo: &out)
            #expect(throws: TunnelSecurityError.streamTruncated) { try responder.opener.finish() }
            // And stays failed: nothing is accepted after a truncated end.
            #expect(throws: TunnelSecurityError.streamTruncated) { try responder.opener.open(Array(full[cut...]), appendingTo: &out) }
        }
        // After the close record the end is an orderly one.
        let (initiator, responder) = try establishedSessions()
        var full: [UInt8] = []
        try initiator.sealer.seal([UInt8](repeating: 2, count: 300), appendingTo: &full)
        try initiator.sealer.sealClose(appendingTo: &full)
        var out: [UInt8] = []
        try responder.opener.open(full, appendingTo: &out)
        try responder.opener.finish()
        #expect(out == [UInt8](repeating: 2, count: 300))
    }

    @Test(arguments: [1, 7, 1000])
    func theCloseRecordEndsTheStreamInOrder(maxChunk: Int) throws {
        let (initiator, responder) = try establishedSessions()
        var wire: [UInt8] = []
        try initiator.sealer.seal([UInt8](repeating: 4, count: 500), appendingTo: &wire)
        try initiator.sealer.seal([], appendingTo: &wire)  // a keepalive is not a close
        let beforeClose = wire.count
        try initiator.sealer.sealClose(appendingTo: &wire)
        #expect(wire.count - beforeClose == RecordSealer.closeRecordLength)
        #expect(initiator.sealer.isClosed)
        let received = try Self.openInChunks(wire, responder.opener, maxChunk: maxChunk, seed: UInt64(maxChunk))
        #expect(received == [UInt8](repeating: 4, count: 500))
        #expect(responder.opener.isClosed)
        try responder.opener.finish()
    }

    @Test func aStreamEndingBetweenRecordsWithoutTheCloseRecordIsTruncated() throws {
        // The close record cut off, as when an attacker ends the connection between records.
        let (initiator, responder) = try establishedSessions()
        var wire: [UInt8] = []
        try initiator.sealer.seal([UInt8](repeating: 5, count: 300), appendingTo: &wire)
        try initiator.sealer.seal([], appendingTo: &wire)
        var out: [UInt8] = []
        try responder.opener.open(wire, appendingTo: &out)
        #expect(out == [UInt8](repeating: 5, count: 300))
        #expect(!responder.opener.isClosed)
        #expect(throws: TunnelSecurityError.closeRecordMissing) { try responder.opener.finish() }
        // An empty stream too: not even the close record arrived.
        let (_, fresh) = try establishedSessions()
        #expect(throws: TunnelSecurityError.closeRecordMissing) { try fresh.opener.finish() }
    }

    /// Data after the close record: in the same chunk, in a later chunk, or completing a record
    /// that began in the close record's chunk.
    @Test(arguments: [0, 1, 2])
    func bytesAfterTheCloseRecordThrow(split: Int) throws {
        let key = SymmetricKey(data: [UInt8](repeating: 0x44, count: 32))
        let sealer = RecordSealer(key: key, cipher: .default)
        var wire: [UInt8] = []
        try sealer.seal([1, 2, 3], appendingTo: &wire)
        try sealer.sealClose(appendingTo: &wire)
        let closeEnd = wire.count
        // A record that is genuine in every other way: same key, the nonce after the close record's.
        let twin = RecordSealer(key: key, cipher: .default)
        var twinWire: [UInt8] = []
        try twin.seal([1, 2, 3], appendingTo: &twinWire)
        try twin.seal([], appendingTo: &twinWire)
        let twinPrefix = twinWire.count
        try twin.seal([9], appendingTo: &twinWire)
        wire += twinWire[twinPrefix...]
        let opener = RecordOpener(key: key, cipher: .default)
        var out: [UInt8] = []
        switch split {
        case 0:
            #expect(throws: TunnelSecurityError.dataAfterClose) { try opener.open(wire, appendingTo: &out) }
        case 1:
            try opener.open(Array(wire[..<closeEnd]), appendingTo: &out)
            #expect(throws: TunnelSecurityError.dataAfterClose) { try opener.open(Array(wire[closeEnd...]), appendingTo: &out) }
        default:
            try opener.open(Array(wire[..<(closeEnd - 3)]), appendingTo: &out)
            #expect(throws: TunnelSecurityError.dataAfterClose) { try opener.open(Array(wire[(closeEnd - 3)...]), appendingTo: &out) }
        }
        // And the opener stays failed.
        #expect(throws: TunnelSecurityError.dataAfterClose) { try opener.finish() }
    }

    @Test(arguments: [0, 1, 2, 9, 17])
    func aTamperedCloseRecordFails(index: Int) throws {
        let (initiator, responder) = try establishedSessions()
        var wire: [UInt8] = []
        try initiator.sealer.seal([UInt8](repeating: 6, count: 40), appendingTo: &wire)
        let closeStart = wire.count
        try initiator.sealer.sealClose(appendingTo: &wire)
        wire[closeStart + index] ^= 0x01
        var out: [UInt8] = []
        // A changed length leaves the record incomplete; a changed tag fails authentication.
        if index < 2 {
            try responder.opener.open(wire, appendingTo: &out)
            #expect(throws: TunnelSecurityError.streamTruncated) { try responder.opener.finish() }
        } else {
            #expect(throws: TunnelSecurityError.recordAuthenticationFailed) { try responder.opener.open(wire, appendingTo: &out) }
        }
        #expect(!responder.opener.isClosed)
        #expect(out == [UInt8](repeating: 6, count: 40))
    }

    @Test func aCloseRecordIsBoundToItsPlaceInTheStream() throws {
        // Moved ahead of the last data record, it fails: the nonce does not match.
        let (initiator, responder) = try establishedSessions()
        var wire: [UInt8] = []
        try initiator.sealer.seal([1], appendingTo: &wire)
        let dataLength = wire.count
        try initiator.sealer.sealClose(appendingTo: &wire)
        let moved = Array(wire[dataLength...] + wire[..<dataLength])
        var out: [UInt8] = []
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) { try responder.opener.open(moved, appendingTo: &out) }
        // An empty data record does not pass for a close record.
        let (initiator2, responder2) = try establishedSessions()
        var keepalive: [UInt8] = []
        try initiator2.sealer.seal([], appendingTo: &keepalive)
        try responder2.opener.open(keepalive, appendingTo: &out)
        #expect(!responder2.opener.isClosed)
    }

    /// Three records of 100 bytes, each 2 + 100 + 16 = 118 bytes on the wire.
    static func threeRecords() throws -> (wire: [UInt8], opener: RecordOpener) {
        let (initiator, responder) = try establishedSessions()
        var wire: [UInt8] = []
        for fill in [UInt8(1), 2, 3] {
            try initiator.sealer.seal([UInt8](repeating: fill, count: 100), appendingTo: &wire)
        }
        return (wire, responder.opener)
    }

    @Test(arguments: [2, 50, 101, 117, 118 + 2, 118 + 117, 236 + 60])
    func tamperedByteThrows(index: Int) throws {
        var (wire, opener) = try Self.threeRecords()
        wire[index] ^= 0x20
        var received: [UInt8] = []
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try opener.open(wire, appendingTo: &received)
        }
        // Records before the damaged one were delivered, nothing after it.
        #expect(received.count == (index / 118) * 100)
    }

    @Test func tamperedLengthThrows() throws {
        var (wire, opener) = try Self.threeRecords()
        wire[1] = 10  // shorter than a tag
        var received: [UInt8] = []
        #expect(throws: TunnelSecurityError.malformedRecord) { try opener.open(wire, appendingTo: &received) }
    }

    @Test func reorderedRecordsThrow() throws {
        let (wire, opener) = try Self.threeRecords()
        let reordered = Array(wire[118..<236] + wire[0..<118] + wire[236...])
        var received: [UInt8] = []
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try opener.open(reordered, appendingTo: &received)
        }
        #expect(received.isEmpty)
    }

    @Test func replayedRecordThrows() throws {
        let (wire, opener) = try Self.threeRecords()
        var received: [UInt8] = []
        try opener.open(Array(wire[0..<118]), appendingTo: &received)
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try opener.open(Array(wire[0..<118]), appendingTo: &received)
        }
        #expect(received == [UInt8](repeating: 1, count: 100))
    }

    @Test func droppedRecordThrows() throws {
        let (wire, opener) = try Self.threeRecords()
        var received: [UInt8] = []
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try opener.open(Array(wire[0..<118] + wire[236...]), appendingTo: &received)
        }
    }

    @Test func truncatedRecordFollowedByMoreDataThrows() throws {
        let (wire, opener) = try Self.threeRecords()
        // The first record loses its last 10 bytes and the stream continues.
        let damaged = Array(wire[0..<108] + wire[118...])
        var received: [UInt8] = []
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try opener.open(damaged, appendingTo: &received)
        }
    }

    @Test func openerStaysFailed() throws {
        var (wire, opener) = try Self.threeRecords()
        let intact = wire
        wire[20] ^= 1
        var received: [UInt8] = []
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try opener.open(Array(wire[0..<118]), appendingTo: &received)
        }
        // Even the genuine record, which would otherwise open, is refused afterwards.
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try opener.open(intact, appendingTo: &received)
        }
        #expect(received.isEmpty)
    }

    @Test func wrongDirectionKeysDoNotOpen() throws {
        let (initiator, _) = try establishedSessions()
        var wire: [UInt8] = []
        try initiator.sealer.seal([1, 2, 3], appendingTo: &wire)
        var received: [UInt8] = []
        // The initiator's own opener uses the responder-to-initiator key.
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try initiator.opener.open(wire, appendingTo: &received)
        }
    }
}
