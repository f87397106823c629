import Foundation
import FuzzSupport
@testable import StunturnSignaling  // HelloWire, to hold the fast hello parser to JSONDecoder

// The signaling connection's JSON: the hello a server reads (framed by JSONObjectScanner, as the
// server frames it), the reply a client reads, in our fields and the original protocol's.

@_cdecl("LLVMFuzzerTestOneInput")
func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = inputBytes(data, size)

    switch JSONObjectScanner.scan(bytes) {
    case .complete(let end):
        guard end > 0, end <= bytes.count, bytes[end - 1] == UInt8(ascii: "}") else {
            fatalError("JSONObjectScanner ended an object at \(end) of \(bytes.count) bytes")
        }
        if let hello = try? ClientHello.decode(Array(bytes[..<end])) {
            checkRoundTrip(hello)
        }
    case .incomplete, .invalid:
        break
    }

    if let hello = try? ClientHello.decode(bytes) {
        checkRoundTrip(hello)
    }

    // The fast path must agree with JSONDecoder on every hello it takes.
    if let flat = HelloWire.parseFlat(bytes) {
        let full = try? JSONDecoder().decode(HelloWire.self, from: Data(bytes))
        guard full == flat else {
            fatalError("HelloWire.parseFlat gave \(flat), JSONDecoder \(String(describing: full))")
        }
    }

    if let reply = try? ServerReply.decode(bytes) {
        guard (try? ServerReply.decode(reply.encoded())) == reply else {
            fatalError("ServerReply does not survive encode and decode: \(reply)")
        }
        if !reply.error.isEmpty { _ = SignalingError.server(reply.error).description }
    }
    return 0
}

private func checkRoundTrip(_ hello: ClientHello) {
    _ = hello.description
    _ = hello.effectiveRole
    guard (try? ClientHello.decode(hello.encoded())) == hello else {
        fatalError("ClientHello does not survive encode and decode: \(hello)")
    }
}

runFuzzer(seeds: [
        // The original client's hellos.
        Array(#"{"uuid":"8d3e1f52-6c1a-4f0e-9b7d-2a4c5e6f7a8b","target_ip":"","protocol":"tcp","address":""}"#.utf8) + [0x0a],
        Array(#"{"uuid":"8d3e1f52-6c1a-4f0e-9b7d-2a4c5e6f7a8b","target_ip":"198.51.100.7","protocol":"udp","address":"203.0.113.5:40000"}"#.utf8),
        // Ours, with every extension.
        ClientHello(key: "8d3e1f52-6c1a-4f0e-9b7d-2a4c5e6f7a8b", targetIP: "2001:db8::7", transport: "tcp", address: "",
                    role: .initiator, wait: 25, relay: "auto", relayID: "r-1", token: "secret \"quoted\" <token>",
                    candidates: "192.168.1.4:7000,[fe80::1]:7000").encoded(),
        ClientHello(key: "k", transport: ClientHello.relayTransport, role: .receiver, relayID: "0123456789abcdef").encoded(),
        Array(#" { "wait" : -0 , "uuid" : "caf\u00e9", "extra": [1, {"a": null}] } "#.utf8),
        // Replies, the original server's and ours.
        Array(#"{"protocol":"tcp","peer_address":"198.51.100.7:40001"}"#.utf8) + [0x0a],
        Array(#"{"protocol":"","error":"Receiver with that UUID not found"}"#.utf8),
        ServerReply(transport: "tcp", peerAddress: "[2001:db8::7]:7000", relayID: "r-1", relayRefused: "no token",
                    peerRelay: "never", peerCandidates: "10.0.0.2:7000").encoded(),
    ], fuzz)
