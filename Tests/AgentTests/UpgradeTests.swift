import Foundation
import StunturnSockets
import StunturnTestSupport
import Testing

/// A network namespace of the test's own, with its loopback up and iptables to block paths in it:
/// a relayed session must move to a direct path once one comes up.
final class PrivateNetwork: @unchecked Sendable {
    let name = "stt-upg-\(UInt32.random(in: 0...UInt32.max))"

    static var available: Bool {
        let tools = ["/usr/sbin/ip", "/sbin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
            && ["/usr/sbin/iptables", "/sbin/iptables"].contains { FileManager.default.isExecutableFile(atPath: $0) }
        return getuid() == 0 && tools
    }
    static let ip = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"

    init() async throws {
        try await Self.run(Self.ip, ["netns", "add", name])
        try await run(["ip", "link", "set", "lo", "up"])
    }

    deinit {
        // Processes in it were killed by their own handles; the namespace goes with its name.
        let name = self.name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.ip)
        process.arguments = ["netns", "delete", name]
        try? process.run()
        process.waitUntilExit()
    }

    /// Runs `command` inside the namespace to completion.
    @discardableResult
    func run(_ command: [String]) async throws -> String {
        try await Self.run(Self.ip, ["netns", "exec", name] + command)
    }

    /// Starts a process inside the namespace, logging as an agent does.
    func start(_ name: String, _ command: [String]) throws -> AgentProcess {
        try AgentProcess(name, ["netns", "exec", self.name] + command, executable: Self.ip)
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) async throws -> String {
        let (status, out, errors) = try await runProgram(executable, arguments, timeout: .seconds(30))
        guard status == 0 else { throw CommandFailed(description: "\(executable) \(arguments.joined(separator: " ")): exit \(status): \(errors)") }
        return out
    }
}

struct CommandFailed: Error, CustomStringConvertible {
    let description: String
}

@Suite(.serialized) struct UpgradeTests {
    /// A Python echo service and a client that keeps one connection echoing, both in the namespace.
    static let echoServer = """
    import socket, threading
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(PORT))); s.listen()
    def serve(c):
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
        c.close()
    while True:
        c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
    """
    static let heldClient = """
    import socket, sys, time
    c = socket.create_connection(("127.0.0.1", int(PORT)), timeout=10)
    ok = 0
    end = time.time() + float(SECONDS)
    while time.time() < end:
        msg = b"round %d" % ok
        c.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = c.recv(100)
            if not chunk: print("broken after", ok); sys.exit(1)
            got += chunk
        if got != msg: print("corrupted", got); sys.exit(1)
        ok += 1
        time.sleep(0.5)
    print("ok", ok)
    """
    static let oneEcho = """
    import socket
    c = socket.create_connection(("127.0.0.1", int(PORT)), timeout=10)
    c.sendall(b"fresh"); print(c.recv(100).decode())
    """

    @Test(.enabled(if: PrivateNetwork.available, "needs root and iproute2"))
    func aRelayedSessionMovesToADirectPathWhenOneComesUp() async throws {
        let net = try await PrivateNetwork()
        let key = newKey()
        let (serverPort, servicePort, listenPort) = (UInt16(7400), UInt16(7401), UInt16(7402))
        // Only new connections to the server, the service and the listen port get through: the
        // peers' punched connection (between their ephemeral ports) cannot come up.
        let block = ["-p", "tcp", "--syn", "-m", "multiport", "!", "--dports", "\(serverPort),\(servicePort),\(listenPort)", "-j", "DROP"]
        try await net.run(["iptables", "-A", "INPUT"] + block)
        let service = try net.start("service", ["python3", "-c", Self.echoServer.replacingOccurrences(of: "PORT", with: "\(servicePort)")])
        let server = try net.start("server", [agentBinary, "server", "--listen", "127.0.0.1:\(serverPort)"])
        defer { for process in [service, server] { kill(process.process.processIdentifier, SIGKILL) } }
        #expect(try await server.waitForLog("signaling server listening"))
        let expose = try net.start("expose", [agentBinary, "forward", "--expose", "127.0.0.1:\(servicePort)", "--key", key,
                                              "--server", "127.0.0.1:\(serverPort)", "--punch-timeout", "2", "--log-level", "debug"])
        let listen = try net.start("listen", [agentBinary, "forward", "--listen", "127.0.0.1:\(listenPort)", "--key", key,
                                              "--server", "127.0.0.1:\(serverPort)", "--punch-timeout", "2", "--log-level", "debug"])
        defer { for process in [expose, listen] { kill(process.process.processIdentifier, SIGKILL) } }
        let logs = { "--- listen:\n\(listen.log)\n--- expose:\n\(expose.log)" }
        #expect(try await listen.waitForLog("path none -> relay", timeout: .seconds(30)), "\(logs())")

        // A connection held on the relayed session, echoing twice a second for 45 s.
        let held = try net.start("held", ["python3", "-c", Self.heldClient.replacingOccurrences(of: "PORT", with: "\(listenPort)")
            .replacingOccurrences(of: "SECONDS", with: "45")])
        defer { kill(held.process.processIdentifier, SIGKILL) }
        try await Task.sleep(for: .seconds(1))
        // The direct path opens; within the upgrade's first retry (15-30 s) the session moves.
        try await net.run(["iptables", "-D", "INPUT"] + block)
        #expect(try await listen.waitForLog("path relay -> direct", timeout: .seconds(45)), "\(logs())")
        let fresh = try await net.run(["python3", "-c", Self.oneEcho.replacingOccurrences(of: "PORT", with: "\(listenPort)")])
        #expect(fresh.contains("fresh"), "\(logs())")
        // The held connection finished on the relay, intact; then the relayed session closed.
        let status = try await held.waitForExit(timeout: .seconds(60))
        let heldOutput = String(decoding: held.stdoutHandle.readDataToEndOfFile(), as: UTF8.self)
        #expect(status == 0 && heldOutput.hasPrefix("ok"), "held connection: \(heldOutput)\n\(logs())")
        #expect(try await listen.waitForLog("drained", timeout: .seconds(20)), "the relayed session did not close once empty\n\(logs())")
    }
}
