import Foundation
import StunturnServer
import StunturnSockets
import Testing
@testable import StunturnSignaling

/// A /proc file read to its end (they report a size of 0, so read in a loop rather than by size).
func procText(_ path: String) -> String? {
    guard let handle = FileHandle(forReadingAtPath: path), let data = try? handle.readToEnd() else { return nil }
    return String(decoding: data, as: UTF8.self)
}

/// The server's side of a paired connection must close first, as the original server's nearly
/// always does: TIME_WAIT then lands on the server's port, and the client's signaling port, which
/// its TCP punch binds next, is free.
@Suite struct CloseOrderTests {
    /// Like the original Go client: read the reply object, then close at once, without waiting
    /// for the server's end-of-file.
    /// Also says whether the end-of-file was already there the moment the reply was read: it is
    /// when the FIN came in the reply's own segment, and that is what makes the server close first.
    static func exchangeClosingOnReply(_ server: SocketAddress, _ hello: [UInt8]) async throws
        -> (reply: ServerReply, port: UInt16, endWithReply: Bool) {
        let socket = try await Socket.connect(to: server, timeout: .seconds(5))
        defer { socket.close() }
        let port = try socket.localAddress().port
        try await socket.writeAll(hello, until: .now + .seconds(5))
        var buffer: [UInt8] = []
        while true {
            let chunk = try await socket.readSome(until: .now + .seconds(10))
            guard !chunk.isEmpty else { break }
            buffer += chunk
            if case .complete(let end) = JSONObjectScanner.scan(buffer) {
                buffer = Array(buffer[0..<end])
                break
            }
        }
        var probe = [UInt8](repeating: 0, count: 64)
        let next = try probe.withUnsafeMutableBytes { try socket.read(into: $0) }
        return (try ServerReply.decode(buffer), port, next == .endOfFile)
    }

    /// Local ports of loopback TCP sockets in TIME_WAIT whose peer port is `remotePort`.
    static func timeWaitPorts(towards remotePort: UInt16) throws -> Set<UInt16> {
        var ports = Set<UInt16>()
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = procText(file) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 3, fields[3] == "06",
                      let local = fields[1].split(separator: ":").last, let remote = fields[2].split(separator: ":").last,
                      let localPort = UInt16(local, radix: 16), let peerPort = UInt16(remote, radix: 16),
                      peerPort == remotePort else { continue }
                ports.insert(localPort)
            }
        }
        return ports
    }

    static func states(port: UInt16) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = procText(file) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 3 else { continue }
                let local = UInt16(fields[1].split(separator: ":").last!, radix: 16)!
                let remote = UInt16(fields[2].split(separator: ":").last!, radix: 16)!
                if local == port { counts["server " + fields[3], default: 0] += 1 }
                if remote == port { counts["client " + fields[3], default: 0] += 1 }
            }
        }
        return counts
    }

    @Test func theServerClosesPairedConnectionsFirst() async throws {
        let server = RendezvousServer(listen: .loopback(.ipv4))
        try server.start()
        defer { server.stop() }
        let address = server.boundAddress
        // Pairings run ten at a time: the race the fix closes (a client that reads the reply and
        // closes before the server's FIN arrives) is narrow, and concurrency widens it.
        let clientPorts = try await withThrowingTaskGroup(of: [UInt16].self) { group in
            for lane in 0..<10 {
                group.addTask {
                    var ports: [UInt16] = []
                    for round in 0..<10 {
                        let key = "close-order-\(lane)-\(round)-\(UUID().uuidString)"
                        async let initiator = Self.exchangeClosingOnReply(address, ClientHello(key: key, role: .initiator).encoded())
                        // A long-polling receiver pairs whenever the initiator comes, before or after it.
                        let receiver = try await Self.exchangeClosingOnReply(
                            address, ClientHello(key: key, transport: "", role: .receiver, wait: 10).encoded())
                        let initiatorResult = try await initiator
                        #expect(receiver.reply.error.isEmpty && initiatorResult.reply.error.isEmpty, "lane \(lane) round \(round) did not pair")
                        ports += [receiver.port, initiatorResult.port]
                        #expect(receiver.endWithReply && initiatorResult.endWithReply,
                                "lane \(lane) round \(round): the server's FIN came after its reply, not with it")
                    }
                    return ports
                }
            }
            var all = Set<UInt16>()
            for try await ports in group { all.formUnion(ports) }
            return all
        }
        // 200 connections; the system may hand a port out twice over the run.
        #expect(clientPorts.count >= 150)
        // TIME_WAIT towards the server would mean a client closed first.
        let clientTimeWaits = try Self.timeWaitPorts(towards: address.port).intersection(clientPorts)
        #expect(clientTimeWaits.isEmpty, "\(clientTimeWaits.count) of \(clientPorts.count) client ports are in TIME_WAIT: the client closed first")
        // And the server's own port holds them instead (TIME_WAIT lasts 60 s on Linux).
        let states = try Self.states(port: address.port)
        var serverSide = 0
        for port in clientPorts where try Self.timeWaitPorts(towards: port).contains(address.port) { serverSide += 1 }
        #expect(serverSide == clientPorts.count, "only \(serverSide) of \(clientPorts.count) server-side connections are in TIME_WAIT; \(states)")
    }
}
