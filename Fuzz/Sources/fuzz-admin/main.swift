import FuzzSupport
import StunturnAdmin

// The admin socket: the request line an agent reads from a client (framed read by read, as
// AdminServer reads it, then with the client's end), and the answer `status` reads from an agent
// (an error answer, or a status to decode and show as a table).
//
// Input: one byte (bit 0: an answer rather than a request; bits 1-7: the size of the reads, 0 for
// one read), then the bytes.

@_cdecl("LLVMFuzzerTestOneInput")
func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let mode = input.byte()
    let bytes = input.rest()
    if mode & 1 != 0 {
        _ = AdminProtocol.errorMessage(in: bytes)
        if let status = try? AgentStatus(decoding: bytes) {
            _ = StatusTable.render(status)
            _ = try? status.encoded(pretty: true)
        }
        return 0
    }
    // AdminServer reads at most one byte past the limit in all.
    let limit = AdminProtocol.maximumRequestLength
    var received: [UInt8] = []
    var framing = AdminProtocol.Framing.incomplete
    for read in chunks(bytes, size: Int(mode >> 1)) {
        received += read.prefix(limit + 1 - received.count)
        framing = AdminProtocol.frame(received, ended: false, maximumLength: limit)
        if framing != .incomplete { break }
        if received.count > limit { fatalError("more than \(limit) bytes without an answer") }
    }
    if framing == .incomplete {
        framing = AdminProtocol.frame(received, ended: true, maximumLength: limit)
        guard framing != .incomplete else { fatalError("a request that ended is still incomplete") }
    }
    if case .invalid(let message) = framing {
        _ = AdminProtocol.errorAnswer(message)
    }
    return 0
}

private func adminSeeds() -> [[UInt8]] {
    let up = ForwardStatus(
        name: "ssh", mode: "listen", transport: "tcp", local: "127.0.0.1:2222", state: "up", path: "direct", candidate: "srflx",
        peer: "198.51.100.7:41000", sessionsUp: 1, uptimeSeconds: 125, rttMs: 0.41, streams: 2, bytesIn: 1_258_291,
        bytesOut: 49_152, connections: 14, failed: 1, sessionsEstablished: 2, setupsFailed: 1, pathChanges: 3,
        lastError: "punch failed:\ntimed out", lastErrorAgeSeconds: 3_700)
    let down = ForwardStatus(
        name: "web", mode: "expose", transport: "udp", local: "127.0.0.1:8080", state: "waiting for peer", path: "none",
        candidate: "", peer: "", sessionsUp: 0, uptimeSeconds: nil, rttMs: nil, streams: 0, bytesIn: 0, bytesOut: 0,
        connections: 0, failed: 0, sessionsEstablished: 0, setupsFailed: 0, pathChanges: 0, lastError: nil,
        lastErrorAgeSeconds: nil)
    let status = AgentStatus(pid: 4242, admin: "/run/user/1000/stunturn/agent-4242.sock", forwards: [up, down])
    return [
        [0] + AdminProtocol.encode(.status), [0] + AdminProtocol.encode(.reload), [0] + Array(" status \r\n".utf8),
        [0] + Array("reload".utf8), [3 << 1] + AdminProtocol.encode(.status), [0] + Array(repeating: UInt8(ascii: "s"), count: 300),
        [1] + AdminProtocol.errorAnswer("unknown request 'x'; \(AdminProtocol.usage)"),
        [1] + (try! status.encoded()), [1] + (try! status.encoded(pretty: true)),
    ]
}

runFuzzer(seeds: adminSeeds(), fuzz)
