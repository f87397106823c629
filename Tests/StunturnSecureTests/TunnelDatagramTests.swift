@preconcurrency import Crypto
import StunturnSecure
import Testing

/// The UDP path's wire format: a kind byte, then a handshake message or a payload.
@Suite struct TunnelDatagramTests {
    @Test func handshakeDatagramsAreTheKindByteThenTheMessage() throws {
        let keys = TunnelKeys(accessKey: "0f8fad5b-d9cb-469f-a165-70867728950e")
        let hello = try TunnelHandshake(role: .initiator, keys: keys).makeHello()
        let packet = TunnelDatagram.helloPacket(hello)
        #expect(packet.first == 1)
        #expect(packet.count == 1 + TunnelHandshake.helloLength)
        #expect(TunnelDatagram.helloMessage(in: packet) == hello)
        // Not a hello: a reply, a wrong length, nothing at all.
        #expect(TunnelDatagram.helloMessage(in: TunnelDatagram.replyPacket(hello)) == nil)
        #expect(TunnelDatagram.helloMessage(in: Array(packet.dropLast())) == nil)
        #expect(TunnelDatagram.helloMessage(in: []) == nil)
        let reply = [UInt8](repeating: 9, count: TunnelHandshake.replyLength)
        #expect(TunnelDatagram.replyPacket(reply) == [2] + reply)
        #expect(TunnelDatagram.replyMessage(in: [2] + reply) == reply)
        #expect(TunnelDatagram.replyMessage(in: [2] + reply + [0]) == nil)
    }

    @Test func plaintextCodecFramesWithKindFourAndTakesNothingElse() throws {
        let codec = DatagramCodec(session: nil)
        #expect(!codec.isEncrypted)
        #expect(try codec.wrap([7, 8]) == [4, 7, 8])
        #expect(try codec.unwrap([4, 7, 8]) == [7, 8])
        #expect(try codec.unwrap([4]) == [])
        #expect(try codec.unwrap([3, 7, 8]) == nil, "a sealed datagram reached a plaintext forward")
        #expect(try codec.unwrap([1] + [UInt8](repeating: 0, count: 48)) == nil)
        #expect(try codec.unwrap([]) == nil)
    }

    @Test func sealedCodecRoundTripsAndRefusesPlaintextForgeriesAndReplays() throws {
        let (initiator, responder) = try establishedSessions()
        let sending = DatagramCodec(session: initiator)
        let receiving = DatagramCodec(session: responder)
        #expect(sending.isEncrypted)
        let wire = try sending.wrap(Array("ping".utf8))
        #expect(wire.first == 3)
        #expect(wire.count == 1 + 4 + DatagramSealer.overhead)
        #expect(try receiving.unwrap(wire) == Array("ping".utf8))
        #expect(throws: TunnelSecurityError.self) { try receiving.unwrap(wire) }  // replayed
        var forged = try sending.wrap(Array("pong".utf8))
        forged[forged.count - 1] ^= 1
        #expect(throws: TunnelSecurityError.self) { try receiving.unwrap(forged) }
        // An encrypted forward never takes a plaintext datagram for data.
        #expect(try receiving.unwrap([4] + Array("sneaky".utf8)) == nil)
    }

    @Test func payloadLimitsFitAUDPDatagram() {
        #expect(TunnelDatagram.maxPayload(encrypted: false) + 1 == 65_507)
        #expect(TunnelDatagram.maxPayload(encrypted: true) + 1 + DatagramSealer.overhead == 65_507)
    }

    /// The sealer is shared by the tasks that send: counters must never repeat, whichever thread seals.
    @Test func concurrentSealingNeverReusesACounter() async throws {
        let sealer = DatagramSealer(key: SymmetricKey(data: [UInt8](repeating: 5, count: 32)), cipher: .aesGCM)
        let all = try await withThrowingTaskGroup(of: [UInt64].self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var mine: [UInt64] = []
                    for _ in 0..<500 {
                        let datagram = try sealer.seal([1, 2, 3])
                        mine.append(datagram.prefix(8).reduce(0) { $0 << 8 | UInt64($1) })
                    }
                    return mine
                }
            }
            var all: [UInt64] = []
            for try await mine in group { all += mine }
            return all
        }
        #expect(all.count == 4000)
        #expect(Set(all).count == all.count, "\(all.count - Set(all).count) counters were used twice")
        #expect(Set(all) == Set(0..<4000))
    }
}
