@preconcurrency import Crypto
import StunturnSecure
import Testing

@Suite("Datagram protection")
struct DatagramTests {
    static func pair(cipher: NoiseCipher = .default) -> (DatagramSealer, DatagramOpener) {
        let key = SymmetricKey(data: [UInt8](repeating: 0x42, count: 32))
        return (DatagramSealer(key: key, cipher: cipher), DatagramOpener(key: key, cipher: cipher))
    }

    @Test(arguments: NoiseCipher.allCases)
    func sessionDatagramsRoundTripBothWays(cipher: NoiseCipher) throws {
        let (initiator, responder) = try establishedSessions(cipher: cipher)
        let datagram = try initiator.datagramSealer.seal(Array("hello".utf8))
        #expect(datagram.count == 5 + DatagramSealer.overhead)
        #expect(Array(datagram.prefix(8)) == [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(try responder.datagramOpener.open(datagram) == Array("hello".utf8))
        let answer = try responder.datagramSealer.seal([])
        #expect(try initiator.datagramOpener.open(answer) == [])
    }

    @Test func datagramAndStreamKeysDiffer() throws {
        let (initiator, responder) = try establishedSessions()
        // The same counter on both paths must not yield the same ciphertext.
        var record: [UInt8] = []
        try initiator.sealer.seal([UInt8](repeating: 0, count: 32), appendingTo: &record)
        let datagram = try initiator.datagramSealer.seal([UInt8](repeating: 0, count: 32))
        #expect(Array(record[2...]) != Array(datagram[8...]))
        var received: [UInt8] = []
        #expect(throws: TunnelSecurityError.recordAuthenticationFailed) {
            try responder.opener.open([0, 48] + Array(datagram[8...]), appendingTo: &received)
        }
    }

    @Test func counterIsExplicitAndBigEndian() throws {
        let (sealer, _) = Self.pair()
        var last: [UInt8] = []
        for _ in 0...258 { last = try sealer.seal([7]) }
        #expect(Array(last.prefix(8)) == [0, 0, 0, 0, 0, 0, 1, 2])
    }

    @Test func duplicateIsRejected() throws {
        let (sealer, opener) = Self.pair()
        let datagram = try sealer.seal([1, 2, 3])
        #expect(try opener.open(datagram) == [1, 2, 3])
        #expect(throws: TunnelSecurityError.datagramReplayed) { try opener.open(datagram) }
    }

    @Test func reorderingWithinTheWindowIsAccepted() throws {
        let (sealer, opener) = Self.pair()
        let datagrams = try (0..<1100).map { try sealer.seal([UInt8(truncatingIfNeeded: $0)]) }
        var generator = SplitMix64(seed: 9)
        // Deliver a window's worth shuffled: all accepted once, each replay refused.
        for index in Array(0..<1000).shuffled(using: &generator) {
            #expect(try opener.open(datagrams[index]) == [UInt8(truncatingIfNeeded: index)])
        }
        for index in [0, 500, 999] {
            #expect(throws: TunnelSecurityError.datagramReplayed) { try opener.open(datagrams[index]) }
        }
        // Newest is 1099 after this; 1099 - 1023 = 76 is the oldest counter still in the window.
        _ = try opener.open(datagrams[1099])
        #expect(throws: TunnelSecurityError.datagramReplayed) { try opener.open(datagrams[75]) }
        #expect(throws: TunnelSecurityError.datagramReplayed) { try opener.open(datagrams[500]) }
        #expect(try opener.open(datagrams[1050]) == [UInt8(truncatingIfNeeded: 1050)])
    }

    @Test func tooOldIsRejectedEvenIfNeverSeen() throws {
        let (sealer, opener) = Self.pair()
        let datagrams = try (0..<2000).map { _ in try sealer.seal([9]) }
        _ = try opener.open(datagrams[1999])
        #expect(throws: TunnelSecurityError.datagramReplayed) { try opener.open(datagrams[0]) }
        #expect(throws: TunnelSecurityError.datagramReplayed) { try opener.open(datagrams[1999 - 1024]) }
        _ = try opener.open(datagrams[1999 - 1023])
    }

    @Test func largeJumpClearsTheWholeWindow() throws {
        let (sealer, opener) = Self.pair()
        let datagrams = try (0..<5000).map { _ in try sealer.seal([]) }
        _ = try opener.open(datagrams[3])
        _ = try opener.open(datagrams[4999])
        // Bits left from counter 3 must not make counters sharing its ring slot look seen.
        for index in [3 + 17 * 64 * 4, 4999 - 1000, 4998] {
            #expect(try opener.open(datagrams[index]) == [])
        }
    }

    @Test(arguments: [0, 7, 8, 12, 23])
    func tamperedByteIsRejected(index: Int) throws {
        let (sealer, opener) = Self.pair()
        var datagram = try sealer.seal(Array("payload".utf8))
        let genuine = datagram
        datagram[index] ^= 0x04
        #expect(throws: (any Error).self) { try opener.open(datagram) }
        // A forgery must not consume the counter of the genuine datagram.
        #expect(try opener.open(genuine) == Array("payload".utf8))
    }

    @Test func forgedHighCounterDoesNotAdvanceTheWindow() throws {
        let (sealer, opener) = Self.pair()
        let first = try sealer.seal([1])
        var forged = first
        forged.replaceSubrange(0..<8, with: [0, 0, 0, 0, 0, 1, 0, 0])
        #expect(throws: TunnelSecurityError.datagramAuthenticationFailed) { try opener.open(forged) }
        #expect(try opener.open(first) == [1])
    }

    @Test(arguments: [0, 8, 23])
    func shortDatagramIsRejected(length: Int) {
        let (_, opener) = Self.pair()
        #expect(throws: TunnelSecurityError.datagramTooShort) {
            try opener.open([UInt8](repeating: 0, count: length))
        }
    }
}
