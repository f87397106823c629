import StunturnSecure

/// A small deterministic generator so chunking and payloads are reproducible from a seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Array where Element == UInt8 {
    static func random<Generator: RandomNumberGenerator>(count: Int, using generator: inout Generator) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }
}

/// Runs the tunnel handshake in memory and returns (initiator, responder) sessions.
func establishedSessions(
    accessKey: String = "0f8fad5b-d9cb-469f-a165-70867728950e",
    cipher: NoiseCipher = .default
) throws -> (initiator: TunnelSession, responder: TunnelSession) {
    let keys = TunnelKeys(accessKey: accessKey)
    let initiator = TunnelHandshake(role: .initiator, keys: keys, cipher: cipher)
    let responder = TunnelHandshake(role: .responder, keys: keys, cipher: cipher)
    let hello = try initiator.makeHello()
    let (reply, responderSession) = try responder.respond(toHello: hello)
    let initiatorSession = try initiator.finish(reply: reply)
    return (initiatorSession, responderSession)
}
