import FuzzSupport
import StunturnSecure

// The encrypted stream of a tunnel as the receiving side's RecordOpener reads it: random bytes,
// and records sealed with a fixed session that the fuzzer mutates.
//
// Input: one byte (bit 0: the cipher; bits 1-7: the size of the reads, 0 for one read), then
// the wire bytes.

nonisolated(unsafe) private let tunnels = [FixedTunnel(cipher: .aesGCM), FixedTunnel(cipher: .chaChaPoly)]

@_cdecl("LLVMFuzzerTestOneInput")
func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let mode = input.byte()
    let opener = tunnels[Int(mode & 1)].responderOpener()
    let wire = input.rest()
    var failed = false
    for chunk in chunks(wire, size: Int(mode >> 1)) {
        // Exactly the room the opener asks for, in a buffer of its own: a write past it is a
        // heap overflow that AddressSanitizer reports.
        let room = opener.maxPlaintextCount(forWireCount: chunk.count)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: room, alignment: 1)
        defer { out.deallocate() }
        do {
            let written = try chunk.withUnsafeBytes { try opener.open($0, into: out) }
            guard written <= room else { fatalError("opened \(written) bytes into \(room)") }
        } catch {
            failed = true
        }
        if failed {
            // A failed opener stays failed.
            guard (try? chunk.withUnsafeBytes { try opener.open($0, into: out) }) == nil else {
                fatalError("the opener took more bytes after it failed")
            }
            break
        }
    }
    do {
        try opener.finish()
        guard !failed, opener.isClosed, opener.bufferedByteCount == 0 else { fatalError("finish() accepted a stream that did not end") }
    } catch {}
    return 0
}


private func recordSeeds() -> [[UInt8]] {
    var seeds: [[UInt8]] = []
    for (index, tunnel) in tunnels.enumerated() {
        let cipher = UInt8(index)
        // A keepalive, a little data and the close record, read at once and a byte at a time.
        let sealer = tunnel.initiatorSealer(recordPayload: 64)
        var wire: [UInt8] = []
        try! sealer.seal([], appendingTo: &wire)
        try! sealer.seal(Array("GET / HTTP/1.1\r\nHost: example\r\n\r\n".utf8), appendingTo: &wire)
        try! sealer.seal(Array(repeating: 0x5a, count: 150), appendingTo: &wire)
        try! sealer.sealClose(appendingTo: &wire)
        seeds.append([cipher] + wire)
        seeds.append([cipher | 1 << 1] + wire)
        seeds.append([cipher | 7 << 1] + wire)
        // One record cut short, and a stream without its close record.
        let open = tunnel.initiatorSealer()
        var partial: [UInt8] = []
        try! open.seal(Array(repeating: 0x41, count: 40), appendingTo: &partial)
        seeds.append([cipher] + partial)
        seeds.append([cipher] + partial.dropLast(5))
    }
    return seeds
}

runFuzzer(seeds: recordSeeds(), fuzz)
