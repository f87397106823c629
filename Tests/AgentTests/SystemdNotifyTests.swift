import Foundation
import Glibc
import StunturnSockets
import StunturnTestSupport
import Testing

/// A datagram socket standing in for systemd's notification socket.
final class NotifySocket: @unchecked Sendable {
    let path: String
    let fd: Int32

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-notify-\(UUID().uuidString.prefix(8))").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw SocketError(call: "bind", subject: path, errno: errno) }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// The next notification, or nil after `timeout`.
    func next(timeout: Duration) async -> String? {
        let fd = self.fd
        // Off the shared pool: a blocking wait there would stall every other suite.
        return await offPool {
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let millis = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
            guard poll(&ready, 1, millis) > 0 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil
        }
    }
}

@Suite struct SystemdNotifyTests {
    @Test func readyStatusWatchdogAndStoppingReachTheNotifySocket() async throws {
        let notify = try NotifySocket()
        let rig = try TunnelRig()
        try await rig.startServer()
        try await rig.startExpose()
        let agent = try AgentProcess("listen", ["forward", "--listen", "127.0.0.1:\(rig.listenPort)", "--key", rig.key,
                                                "--server", rig.serverArgument],
                                     environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"])
        rig.listen = agent
        var received: [String] = []
        // READY=1 comes first, with a status line, once the forward's port is bound.
        let first = await notify.next(timeout: .seconds(20))
        let ready = try #require(first, "no notification\n\(rig.logs)")
        #expect(ready.split(separator: "\n").first == "READY=1", "\(ready)")
        #expect(ready.contains("STATUS=1 forward(s)"), "\(ready)")
        #expect(try await agent.waitForLog("tunnel up"), "\(rig.logs)")
        // Watchdog pings at half of WATCHDOG_USEC (0.2 s), and the status line saying the forward
        // is up: looked for until both are seen (bounded; a busy machine delays them).
        let start = ContinuousClock.now
        func watchdogs() -> Int { received.filter { $0.contains("WATCHDOG=1") }.count }
        func up() -> Bool { received.contains { $0.contains("STATUS=1 forward(s): 1 up") } }
        while (watchdogs() < 3 || !up()) && ContinuousClock.now - start < .seconds(30) {
            if let message = await notify.next(timeout: .seconds(1)) { received.append(message) }
        }
        #expect(watchdogs() >= 3, "\(received)")
        #expect(up(), "\(received)")
        _ = try await agent.stop()
        var stopping = false
        for _ in 0..<50 {
            guard let message = await notify.next(timeout: .seconds(5)) else { break }
            if message.contains("STOPPING=1") { stopping = true; break }
        }
        #expect(stopping, "no STOPPING=1")
        try await rig.stopAll()
    }

    @Test func anAbstractNotifySocketNameIsUnderstood() async throws {
        // '@name' is a name in the abstract namespace (a leading zero byte, no file): a socket
        // bound there receives what is sent to "@name".
        let name = "stunturn-notify-\(UUID().uuidString.prefix(8))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = [UInt8(0)] + Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)) }
        }
        try #require(bound == 0)
        try UnixSocket.sendDatagram(Array("READY=1".utf8), to: "@" + name)
        var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready, 1, 2000) == 1)
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        #expect(n > 0 && String(decoding: buffer[0..<max(0, n)], as: UTF8.self) == "READY=1")
        #expect(!FileManager.default.fileExists(atPath: "@" + name), "a file was made")
    }
}
