#if canImport(Glibc)
import Glibc
import StunturnSockets
import Testing

@Suite(.timeLimit(.minutes(1))) struct ErrorQueueTests {
    /// Whether poll reports the socket in error now.
    private func inError(_ socket: Socket) -> Bool {
        var entry = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLERR) != 0
    }

    @Test func discardingQueuedErrorsClearsThePollError() async throws {
        // A datagram to a closed loopback port comes back as ICMP port unreachable, which a
        // socket with IP_RECVERR keeps on its error queue, as a connect's SYN can keep a
        // time-exceeded.
        let socket = try Socket.udp(on: .loopback())
        try socket.setOption(Int32(IPPROTO_IP), IP_RECVERR, 1)
        let closed = try Socket.udp(on: .loopback())
        let target = try closed.localAddress()
        closed.close()
        var queued = false
        for _ in 0..<100 where !queued {
            _ = try [UInt8(1)].withUnsafeBytes { try socket.send($0, to: target) }
            try await Task.sleep(for: .milliseconds(10))
            queued = inError(socket)
        }
        try #require(queued, "no ICMP error was queued")
        socket.discardQueuedErrors()
        #expect(!inError(socket))
        // Nothing queued: a no-op.
        socket.discardQueuedErrors()
        #expect(!inError(socket))
    }
}
#endif
