import FuzzSupport
@testable import StunturnSecure  // ReplayWindow, to hold it to a plain model

// The datagrams of a punched UDP path as an agent receives them: handshake hellos and replies,
// sealed payload (DatagramCodec and DatagramOpener of a fixed session), plaintext payload; and
// the replay window under any order of counters.
//
// Input: one byte (bit 0: the cipher; bit 1: a plaintext forward; bit 2: the replay window
// alone), then datagrams, each a 2-byte big-endian length and its bytes; for the replay window,
// counters, each a 2-byte signed step from the one before (0x7fff: the next 8 bytes are the
// counter itself).

nonisolated(unsafe) private let tunnels = [FixedTunnel(cipher: .aesGCM), FixedTunnel(cipher: .chaChaPoly)]

@_cdecl("LLVMFuzzerTestOneInput")
func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let mode = input.byte()
    if mode & 4 != 0 {
        checkReplayWindow(&input)
        return 0
    }
    let tunnel = tunnels[Int(mode & 1)]
    let session = tunnel.responderSession()
    let codec = DatagramCodec(session: mode & 2 == 0 ? session : nil)
    while !input.isAtEnd {
        let datagram = input.take(Int(input.uint16()))
        if let hello = TunnelDatagram.helloMessage(in: datagram) {
            let responder = TunnelHandshake(role: .responder, keys: FixedTunnel.keys, cipher: tunnel.cipher)
            _ = try? responder.respond(toHello: hello)
        }
        if let reply = TunnelDatagram.replyMessage(in: datagram) {
            let initiator = TunnelHandshake(role: .initiator, keys: FixedTunnel.keys, cipher: tunnel.cipher)
            _ = try? initiator.makeHello()
            _ = try? initiator.finish(reply: reply)
        }
        _ = try? codec.unwrap(datagram)
        _ = try? session.datagramOpener.open(datagram)
    }
    return 0
}

/// Feeds counters to a ReplayWindow and to a set of every counter taken, and checks that the
/// window accepts exactly the counters it should: new ones, and unseen ones within its width.
private func checkReplayWindow(_ input: inout FuzzInput) {
    var window = ReplayWindow()
    var taken = Set<UInt64>()
    var newest: UInt64?
    var counter: UInt64 = 0
    while input.remaining >= 2 {
        let step = Int16(bitPattern: input.uint16())
        if step == .max {
            counter = input.take(8).reduce(0) { $0 << 8 | UInt64($1) }
        } else {
            counter = step < 0 ? counter &- UInt64(-Int(step)) : counter &+ UInt64(step)
        }
        // The opener refuses the reserved nonce before it asks the window.
        if counter == NoiseCipherState.reservedNonce { continue }
        let expected: Bool
        if taken.contains(counter) {
            expected = false
        } else if let newest, counter <= newest {
            expected = newest - counter < ReplayWindow.width
        } else {
            expected = true
        }
        guard window.mayAccept(counter) == expected else {
            fatalError("replay window: counter \(counter) after newest \(String(describing: newest)): expected \(expected)")
        }
        if expected {
            window.record(counter)
            taken.insert(counter)
            newest = max(newest ?? counter, counter)
        }
    }
}


private func framed(_ datagrams: [[UInt8]]) -> [UInt8] {
    datagrams.flatMap { [UInt8($0.count >> 8), UInt8($0.count & 0xff)] + $0 }
}

private func datagramSeeds() -> [[UInt8]] {
    var seeds: [[UInt8]] = []
    for (index, tunnel) in tunnels.enumerated() {
        let cipher = UInt8(index)
        let sender = DatagramCodec(session: tunnel.initiatorSession())
        var sealed = (0..<4).map { try! sender.wrap(Array("datagram \($0)".utf8)) }
        // Out of order, and one repeated.
        sealed = [sealed[1], sealed[0], sealed[3], sealed[3], sealed[2]]
        seeds.append([cipher] + framed([TunnelDatagram.helloPacket(tunnel.hello)] + sealed))
        seeds.append([cipher] + framed([TunnelDatagram.replyPacket(Array(repeating: 7, count: TunnelHandshake.replyLength))]))
    }
    seeds.append([2] + framed([[TunnelDatagram.plaintext] + Array("plain".utf8), [TunnelDatagram.sealed, 1, 2, 3], []]))
    // Counters: 0, 1, 2, far ahead, back within the window, back past it, a repeat.
    seeds.append([4, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x7f, 0xff, 0, 0, 0, 0, 0, 0, 0x10, 0x00,
                  0xff, 0xff, 0xfc, 0x00, 0xff, 0xf0, 0x00, 0x00])
    return seeds
}

runFuzzer(seeds: datagramSeeds(), fuzz)
