// Uses the stunturn library's sessions: one encrypted, multiplexed session between two peers that
// share a key, and many streams on it. The server side echoes every stream the peer opens; the
// client side opens several at once and checks each answer.
//
//   stunturn-agent server --listen 127.0.0.1:7000
//   swift run session-echo serve 127.0.0.1:7000 "$(stunturn-agent keygen)"   # on one side
//   swift run session-echo client 127.0.0.1:7000 SAME-KEY                    # on the other
import Foundation
import Stunturn

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count == 3, ["serve", "client"].contains(arguments[0]) else {
    print("usage: session-echo serve|client SERVER:PORT KEY")
    exit(2)
}
let (mode, server, key) = (arguments[0], arguments[1], arguments[2])

struct EchoMismatch: Error { let stream: Int }

do {
    if mode == "serve" {
        // Waits for the client, then echoes each stream it opens until the session ends.
        let session = try await PeerSession.accept(server: server, key: key, wait: .seconds(120))
        print("session with \(session.peer)")
        await withDiscardingTaskGroup { group in
            for await stream in session.incoming {
                group.addTask {
                    do {
                        for try await chunk in stream.chunks { try await stream.write(chunk) }
                        stream.finish()
                    } catch {
                        print("stream: \(error)")
                    }
                    stream.close()
                }
            }
        }
        print("session ended: \(await session.ended)")
    } else {
        let session = try await PeerSession.connect(server: server, key: key)
        print("session with \(session.peer)")
        // Eight streams at once on the one session: no handshake or punch per stream.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<8 {
                group.addTask {
                    let stream = try await session.openStream()
                    let message = Array("stream \(i) says hello".utf8)
                    try await stream.write(message)
                    stream.finish()
                    var answer: [UInt8] = []
                    for try await chunk in stream.chunks { answer += chunk }
                    stream.close()
                    print("\(String(decoding: answer, as: UTF8.self))\(answer == message ? "" : " (MISMATCH)")")
                    if answer != message { throw EchoMismatch(stream: i) }
                }
            }
            try await group.waitForAll()
        }
        session.drain()
        print("session ended: \(await session.ended)")
    }
} catch {
    print("failed: \(error)")
    exit(1)
}
