// Uses the stunturn library directly: find a peer through a signaling server, punch a TCP or UDP
// hole, and exchange one message over it. Run one side as initiator and one as receiver:
//
//   stunturn-agent server --listen 127.0.0.1:7000
//   swift run punch-exchange receiver 127.0.0.1:7000 my-shared-key-0123456789
//   swift run punch-exchange initiator 127.0.0.1:7000 my-shared-key-0123456789
//
// Add "udp" as a fourth argument for a UDP hole.
import Foundation
import Stunturn

let arguments = CommandLine.arguments.dropFirst()
guard arguments.count >= 3, let role = SignalRole(rawValue: arguments[arguments.startIndex]) else {
    print("usage: punch-exchange initiator|receiver SERVER:PORT KEY [udp]")
    exit(2)
}
let server = arguments[arguments.startIndex + 1]
let keys = TunnelKeys(accessKey: arguments[arguments.startIndex + 2])
let udp = arguments.count > 3 && arguments.last == "udp"
let client = SignalingClient(server: server)

do {
    // 1. Find the peer: the initiator waits at the server, the receiver long-polls for it.
    let rendezvous: PeerRendezvous
    if role == .initiator {
        rendezvous = udp ? try await client.requestUDPPeer(key: keys.signalingKey)
            : try await client.requestTCPPeer(key: keys.signalingKey)
    } else {
        guard let found = try await client.pollForInitiator(key: keys.signalingKey, wait: .seconds(30), udp: udp) else {
            print("no initiator arrived within 30s")
            exit(1)
        }
        rendezvous = found
    }
    print("paired: \(rendezvous)")

    // 2. Punch, 3. exchange bytes over the socket it returns.
    let options = PunchOptions(tries: 300, timeout: .seconds(10))
    let greeting = Array("hello from the \(role.rawValue)".utf8)
    if rendezvous.transport == .tcp {
        let socket = try await TCPHolePuncher.punch(rendezvous, tag: keys.punchTag, options: options)
        print("punched: \(socket)")
        try await socket.writeAll([UInt8(greeting.count)] + greeting, until: .now + .seconds(5))
        let length = try await socket.readExactly(1, until: .now + .seconds(5))[0]
        let reply = try await socket.readExactly(Int(length), until: .now + .seconds(5))
        print("received: \(String(decoding: reply, as: UTF8.self))")
        socket.close()
    } else {
        let peer = try await UDPHolePuncher.punch(rendezvous, tag: keys.punchTag, options: options)
        let socket = rendezvous.udpSocket!
        print("punched udp to \(peer)")
        try await socket.send(greeting, to: peer, until: .now + .seconds(5))
        while true {
            let (datagram, from) = try await socket.receive(until: .now + .seconds(5))
            if UDPHolePuncher.answerProbe(datagram, from: from, socket: socket, tag: keys.punchTag) { continue }
            print("received: \(String(decoding: datagram, as: UTF8.self))")
            break
        }
    }
} catch {
    print("failed: \(error)")
    exit(1)
}
