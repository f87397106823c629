import Foundation
import StunturnSockets
import StunturnTestSupport
import Testing

/// A throwaway sshd on a loopback port with its own host key and one authorized client key.
final class TestSSHD: @unchecked Sendable {
    let directory: URL
    let port: UInt16
    let clientKey: String
    private let sshd: Process

    static var sshdPath: String? {
        ["/usr/sbin/sshd", "/usr/bin/sshd"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-sshd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        port = try freePort()
        clientKey = directory.appendingPathComponent("client_key").path
        let hostKey = directory.appendingPathComponent("host_key").path
        try TestSSHD.shell("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKey])
        try TestSSHD.shell("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", clientKey])
        let authorized = directory.appendingPathComponent("authorized_keys")
        try FileManager.default.copyItem(atPath: clientKey + ".pub", toPath: authorized.path)
        let config = """
        Port \(port)
        ListenAddress 127.0.0.1
        HostKey \(hostKey)
        AuthorizedKeysFile \(authorized.path)
        PidFile \(directory.appendingPathComponent("sshd.pid").path)
        StrictModes no
        UsePAM no
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin yes
        LogLevel VERBOSE
        """
        let configPath = directory.appendingPathComponent("sshd_config").path
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        sshd = Process()
        sshd.executableURL = URL(fileURLWithPath: TestSSHD.sshdPath!)
        sshd.arguments = ["-D", "-e", "-f", configPath]
        let sshdLog = directory.appendingPathComponent("sshd.log")
        _ = FileManager.default.createFile(atPath: sshdLog.path, contents: nil)
        sshd.standardError = try FileHandle(forWritingTo: sshdLog)
        try sshd.run()
    }

    deinit {
        kill(sshd.processIdentifier, SIGKILL)
        var status: Int32 = 0
        waitpid(sshd.processIdentifier, &status, 0)
        try? FileManager.default.removeItem(at: directory)
    }

    var address: SocketAddress { .loopback(port: port) }

    static func shell(_ path: String, _ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        var status: Int32 = 0
        waitpid(p.processIdentifier, &status, 0)
        guard status == 0 else { throw SocketError(.failed, call: path, reason: "exit status \(status)") }
    }

    /// Runs the real ssh client with `options` and a remote command; returns (status, stdout, stderr).
    func ssh(_ options: [String], command: String) async throws -> (Int32, String, String) {
        try await runProgram("/usr/bin/ssh", ["-i", clientKey, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                               "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"] + options + [command],
                              timeout: .seconds(60))
    }
}

let sshAvailable = TestSSHD.sshdPath != nil && FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh")

@Suite(.serialized, .enabled(if: sshAvailable, "needs openssh-server and openssh-client (.ci/run installs them)"))
struct SSHTests {
    @Test func realSSHThroughAListenPortAndThroughStdioProxyCommand() async throws {
        let sshd = try TestSSHD()
        // sshd takes a moment to bind.
        (try await connectWithRetry(sshd.address)).close()
        let serverPort = try freePort()
        let listenPort = try freePort()
        let key = newKey()
        let server = try AgentProcess("server", ["server", "--listen", "127.0.0.1:\(serverPort)"])
        try await server.waitForLog("signaling server listening")
        let expose = try AgentProcess("expose", ["forward", "--expose", sshd.address.description, "--key", key,
                                                 "--server", "127.0.0.1:\(serverPort)"])
        let listen = try AgentProcess("listen", ["forward", "--listen", "127.0.0.1:\(listenPort)", "--key", key,
                                                 "--server", "127.0.0.1:\(serverPort)"])
        try await listen.waitForLog("listening on")
        try await expose.waitForLog("exposing")
        let user = ProcessInfo.processInfo.environment["USER"] ?? "root"

        let (status, output, errors) = try await sshd.ssh(["-p", "\(listenPort)", "\(user)@127.0.0.1"], command: "echo through-listen-port")
        #expect(status == 0, "ssh failed: \(errors)\nlisten log:\n\(listen.log)\nexpose log:\n\(expose.log)")
        #expect(output.trimmingCharacters(in: .whitespacesAndNewlines) == "through-listen-port")

        let proxy = "\(agentBinary) forward --stdio --key \(key) --server 127.0.0.1:\(serverPort)"
        let (status2, output2, errors2) = try await sshd.ssh(["-o", "ProxyCommand=\(proxy)", "\(user)@stunturn-peer"], command: "echo through-proxycommand")
        #expect(status2 == 0, "ssh with ProxyCommand failed: \(errors2)\nexpose log:\n\(expose.log)")
        #expect(output2.trimmingCharacters(in: .whitespacesAndNewlines) == "through-proxycommand")
        #expect(expose.log.contains("tunnel up"))
        // ssh hangs up its ProxyCommand (SIGHUP) as it exits; the proxy still ends the tunnel in
        // order, so the exposing agent sees two complete sessions and nothing broken.
        #expect(try await expose.waitForLog("closed: both sides closed", count: 2), "expose log:\n\(expose.log)")
        #expect(!expose.log.contains("close record"), "expose log:\n\(expose.log)")
        for p in [listen, expose, server] { try await p.stop() }
    }
}
