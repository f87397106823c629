import Foundation
import StunturnSockets
import StunturnTestSupport
import Testing

/// A config file in a temporary directory, removed afterwards.
func withConfig<T>(_ text: String, name: String = "config.yaml", _ body: (String) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-cfg-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent(name).path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return try await body(path)
}

let goodKey = "3f1c2b9e-6a0d-4c55-9e61-0b7f2d4a8c13"

/// The names a help text lists in one section ("SUBCOMMANDS:"): the first word of each line
/// indented by two spaces (not of the deeper-indented descriptions), up to the blank line that
/// ends the list.
func entries(of section: String, in help: String) -> [String] {
    let lines = help.split(separator: "\n", omittingEmptySubsequences: false)
    guard let start = lines.firstIndex(where: { $0 == "\(section):" }) else { return [] }
    var names: [String] = []
    for line in lines[(start + 1)...] {
        if line.trimmingCharacters(in: .whitespaces).isEmpty || !line.hasPrefix(" ") { break }
        guard line.hasPrefix("  "), line.dropFirst(2).first?.isWhitespace == false,
              let name = line.split(separator: " ").first else { continue }
        names.append(String(name))
    }
    return names
}

@Suite struct CommandLineTests {
    @Test func versionAndHelp() async throws {
        let (status, out, _) = try await runAgent(["--version"])
        #expect(status == 0)
        #expect(out.trimmingCharacters(in: .whitespacesAndNewlines).first?.isNumber == true)
        let (_, help, _) = try await runAgent(["--help"])
        // Each as an entry of the subcommand list, not anywhere in the text: "stun" alone would
        // be found in the binary's own name.
        let subcommands = entries(of: "SUBCOMMANDS", in: help)
        for command in ["run", "check", "forward", "status", "server", "demo", "stun", "keygen"] {
            #expect(subcommands.contains(command), "help lists \(command) among \(subcommands)")
        }
        let (_, forwardHelp, _) = try await runAgent(["forward", "--help"])
        for option in ["--expose", "--listen", "--stdio", "--key", "--server", "--udp", "--admin"] {
            #expect(forwardHelp.contains(option), "forward help lists \(option)")
        }
    }

    @Test func keygenMakesDistinctStrongKeys() async throws {
        let (s1, k1, _) = try await runAgent(["keygen"])
        let (s2, k2, _) = try await runAgent(["keygen"])
        #expect(s1 == 0 && s2 == 0)
        #expect(k1 != k2)
        #expect(k1.trimmingCharacters(in: .whitespacesAndNewlines).count == 36)
    }

    @Test(arguments: [
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:0\n    key: \(goodKey)\n",
         "forwards[0].expose: port must be 1-65535, got 0"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:22\n    key: \(goodKey)\n  - name: b\n    listen: 127.0.0.1:70000\n    key: \(goodKey)\n",
         "forwards[1].listen: port must be 1-65535"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    exposee: 127.0.0.1:22\n    key: \(goodKey)\n",
         "did you mean 'expose'"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:22\n    key: \(goodKey)\n  - name: a\n    listen: 127.0.0.1:2222\n    key: \(goodKey)\n",
         "duplicate name 'a'"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:22\n    listen: 127.0.0.1:23\n    key: \(goodKey)\n",
         "not both"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:22\n    key: secret\n",
         "key is too short"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:22\n    key: \(goodKey)\n    protocol: sctp\n",
         "unknown protocol 'sctp'"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:22\n    key: \(goodKey)\n    tries: many\n",
         "expected an integer, got 'many'"),
        ("forwards:\n  - name: a\n    expose: 127.0.0.1:22\n    key: \(goodKey)\n",
         "no signaling server"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n   expose: [unclosed\n",
         "config.yaml line"),
        ("server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:22\n    key: \(goodKey)\n    plaintext_insecur: true\n",
         "did you mean 'plaintext_insecure'"),
    ])
    func badConfigsAreRefusedByCheckAndRunWithTheSameMessage(yaml: String, message: String) async throws {
        try await withConfig(yaml) { path in
            let (checkStatus, _, checkErrors) = try await runAgent(["check", "--config", path])
            #expect(checkStatus != 0)
            #expect(checkErrors.contains(message), "check said: \(checkErrors)")
            // run refuses before anything starts: no forward is started and it exits at once.
            let (runStatus, _, runErrors) = try await runAgent(["run", "--config", path], timeout: .seconds(10))
            #expect(runStatus != 0)
            #expect(runErrors.contains(message), "run said: \(runErrors)")
            #expect(!runErrors.contains("listening on"))
            #expect(!runErrors.contains("exposing"))
        }
    }

    @Test func runExitsWithTheReasonWhenItsServerCannotStart() async throws {
        let busy = try Socket.listener(on: .loopback())
        let port = try busy.localAddress().port
        let yaml = "serve: 127.0.0.1:\(port)\nforwards:\n  - name: a\n    expose: 127.0.0.1:22\n    key: \(goodKey)\n"
        try await withConfig(yaml) { path in
            let (status, _, errors) = try await runAgent(["run", "--config", path], timeout: .seconds(15))
            #expect(status == 1)
            #expect(errors.contains("127.0.0.1:\(port)"), "\(errors)")
            #expect(errors.contains("in use"), "\(errors)")
        }
        busy.close()
    }

    @Test(arguments: [["forward", "--listen", "127.0.0.1:2222", "--key", goodKey, "--server", "127.0.0.1:7000", "--punch-timeout", "inf"],
                      ["server", "--listen", "127.0.0.1:7000", "--initiator-timeout", "1e300"],
                      ["stun", "127.0.0.1:7000", "--timeout", "0"],
                      // Below a millisecond would become zero: every wait over at once.
                      ["server", "--listen", "127.0.0.1:7000", "--initiator-timeout", "0.0004"],
                      ["forward", "--listen", "127.0.0.1:2222", "--key", goodKey, "--server", "127.0.0.1:7000", "--idle-timeout", "0.0004"],
                      ["forward", "--listen", "127.0.0.1:2222", "--key", goodKey, "--server", "127.0.0.1:7000", "--drain-timeout=-1"],
                      ["run", "/nonexistent/stunturn.yaml", "--drain-timeout", "1e9"]])
    func absurdTimeoutsAreRefused(arguments: [String]) async throws {
        let (status, _, errors) = try await runAgent(arguments)
        #expect(status != 0)
        #expect(errors.contains("must be"), "\(errors)")
    }

    @Test func aPeerIPThatIsNoIPIsRefused() async throws {
        let (status, _, errors) = try await runAgent(["forward", "--listen", "127.0.0.1:2222", "--key", goodKey,
                                                      "--server", "127.0.0.1:7000", "--peer-ip", "not-an-ip"])
        #expect(status != 0)
        #expect(errors.contains("--peer-ip: expected an IP address"), "\(errors)")
    }

    @Test func missingConfigFileIsNamed() async throws {
        let (status, _, errors) = try await runAgent(["run", "--config", "/nonexistent/stunturn.yaml"])
        #expect(status != 0)
        #expect(errors.contains("config file not found: /nonexistent/stunturn.yaml"))
    }

    /// config.yaml.example with the user's key put in, as its header says.
    func exampleWithKey() throws -> String {
        try String(contentsOf: repositoryRoot.appendingPathComponent("config.yaml.example"), encoding: .utf8)
            .replacingOccurrences(of: "REPLACE-WITH-OUTPUT-OF-stunturn-agent-keygen", with: newKey())
    }

    @Test func theConfigFileCanBeNamedWithoutTheOption() async throws {
        try await withConfig(try exampleWithKey()) { example in
            let (status, out, errors) = try await runAgent(["check", example])
            #expect(status == 0, "\(errors)")
            #expect(out.contains("\(example): OK"))
        }
        let example = repositoryRoot.appendingPathComponent("config.yaml.example").path
        let (missing, _, missingErrors) = try await runAgent(["run", "/nonexistent/stunturn.yaml"])
        #expect(missing != 0)
        #expect(missingErrors.contains("config file not found: /nonexistent/stunturn.yaml"))
        let (none, _, noneErrors) = try await runAgent(["check"])
        #expect(none != 0)
        #expect(noneErrors.contains("give the config file"))
        let (two, _, twoErrors) = try await runAgent(["check", "--config", example, "/other.yaml"])
        #expect(two != 0)
        #expect(twoErrors.contains("two config files given"))
    }

    @Test func checkAcceptsTheExampleAndPrintsASummary() async throws {
        // As shipped, the placeholder key is refused, with what to do.
        let example = repositoryRoot.appendingPathComponent("config.yaml.example").path
        let (refused, _, refusal) = try await runAgent(["check", "--config", example])
        #expect(refused != 0)
        #expect(refusal.contains("is a placeholder from the examples"), "\(refusal)")
        try await withConfig(try exampleWithKey()) { path in
            let (status, out, errors) = try await runAgent(["check", "--config", path])
            #expect(status == 0, "\(errors)")
            #expect(out.contains("web-exposed"))
            #expect(out.contains("OK"))
        }
        for file in ["expose-ssh.yaml", "reach-ssh.yaml", "expose-web.yaml", "background-agent.yaml"] {
            // The examples carry placeholder keys that check must refuse until they are replaced.
            let text = try String(contentsOf: repositoryRoot.appendingPathComponent("examples/\(file)"), encoding: .utf8)
            var replaced = text
            for placeholder in ["REPLACE-WITH-OUTPUT-OF-stunturn-agent-keygen", "REPLACE-WITH-KEY-1", "REPLACE-WITH-KEY-2",
                                "REPLACE-WITH-KEY-3", "REPLACE-WITH-KEY-4", "REPLACE-WITH-KEY-5"] {
                replaced = replaced.replacingOccurrences(of: placeholder, with: newKey())
            }
            try await withConfig(replaced, name: file) { path in
                let (s, _, e) = try await runAgent(["check", "--config", path])
                #expect(s == 0, "\(file): \(e)")
            }
        }
    }

    @Test func theExampleConfigRunsAsItIsOnOneMachine() async throws {
        // config.yaml.example: in-agent server on 7000, expose 8080, listen 8081. Use free ports instead.
        let text = try exampleWithKey()
        let service = try TestService()
        let serverPort = try freePort()
        let listenPort = try freePort()
        let adjusted = text.replacingOccurrences(of: "127.0.0.1:7000", with: "127.0.0.1:\(serverPort)")
            .replacingOccurrences(of: "127.0.0.1:8080", with: service.address.description)
            .replacingOccurrences(of: "127.0.0.1:8081", with: "127.0.0.1:\(listenPort)")
        try await withConfig(adjusted) { path in
            let agent = try AgentProcess("example", ["run", "--config", path])
            try await agent.waitForLog("listening on")
            #expect(try await echo(.loopback(port: listenPort), "via the example config") == "via the example config")
            #expect(try await agent.stop() == 0)
        }
    }

    @Test func helpNeverWrapsACommandAcrossLines() async throws {
        let (_, top, _) = try await runAgent(["--help"], environment: ["COLUMNS": "80"])
        for command in ["  stunturn-agent server --listen 0.0.0.0:7000",
                        "  stunturn-agent forward --expose 127.0.0.1:22 --key-file key --server H:7000",
                        "  stunturn-agent forward --listen 127.0.0.1:2222 --key-file key --server H:7000"] {
            #expect(top.split(separator: "\n").contains(Substring(command)), "\(command) is not one line of:\n\(top)")
        }
        let (_, forward, _) = try await runAgent(["forward", "--help"], environment: ["COLUMNS": "80"])
        // Two lines joined by the shell's line continuation: pasted as it is, it runs.
        #expect(forward.contains("  ssh -o ProxyCommand=\"stunturn-agent forward --stdio \\\n    --key-file KEYFILE --server HOST:PORT\" you@host"),
                "\(forward)")
        let (status, _, errors) = try await runAgent(["run", "/tmp/none.yaml", "--log-level", "verbose"])
        #expect(status != 0)
        #expect(errors.contains("Usage: stunturn-agent run"), "a subcommand's bad option shows that subcommand's usage: \(errors)")
    }

    @Test func theServerListensOnANameAndForwardTakesAConnectTimeout() async throws {
        let port = try freePort()
        let server = try AgentProcess("server", ["server", "--listen", "localhost:\(port)"])
        #expect(try await server.waitForLog("signaling server listening"), "\(server.log)")
        #expect(server.log.contains("127.0.0.1:\(port)"))
        _ = try await server.stop()
        let (bad, _, badErrors) = try await runAgent(["forward", "--expose", "127.0.0.1:22", "--key", goodKey, "--server", "127.0.0.1:7000",
                                                      "--connect-timeout", "0"])
        #expect(bad != 0)
        #expect(badErrors.contains("--connect-timeout"), "\(badErrors)")
    }

    @Test func theKeyComesFromAFileOrTheEnvironment() async throws {
        let rig = try TunnelRig()
        try await rig.startServer()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-key-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let keyFile = directory.appendingPathComponent("tunnel.key").path
        try "\(rig.key)\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: keyFile)
        rig.expose = try AgentProcess("expose", ["forward", "--expose", rig.service.address.description, "--key-file", keyFile,
                                                 "--server", rig.serverArgument])
        rig.listen = try AgentProcess("listen", ["forward", "--listen", "127.0.0.1:\(rig.listenPort)", "--server", rig.serverArgument],
                                      environment: ["STUNTURN_KEY": rig.key])
        try await rig.listen!.waitForLog("listening on")
        #expect(try await echo(rig.listenAddress, "keys kept off the command line") == "keys kept off the command line", "\(rig.logs)")
        #expect(rig.expose!.log.contains("is readable by every user on this machine"), "\(rig.logs)")
        #expect(!rig.listen!.log.contains("shows in 'ps'"))
        try await rig.stopAll()

        let (none, _, noneErrors) = try await runAgent(["forward", "--listen", "127.0.0.1:2222", "--server", "127.0.0.1:7000"],
                                                        environment: ["STUNTURN_KEY": ""])
        #expect(none != 0)
        #expect(noneErrors.contains("no access key: give --key-file PATH"), "\(noneErrors)")
        let (weak, _, weakErrors) = try await runAgent(["forward", "--listen", "127.0.0.1:2222", "--server", "127.0.0.1:7000"],
                                                        environment: ["STUNTURN_KEY": "password12345678"])
        #expect(weak != 0)
        #expect(weakErrors.contains("STUNTURN_KEY: key is easy to guess"), "\(weakErrors)")
        let (missing, _, missingErrors) = try await runAgent(["forward", "--listen", "127.0.0.1:2222", "--server", "127.0.0.1:7000",
                                                              "--key-file", "/nonexistent/tunnel.key"])
        #expect(missing != 0)
        #expect(missingErrors.contains("--key-file: cannot read the key file '/nonexistent/tunnel.key' (no such file)"), "\(missingErrors)")
    }

    @Test func forwardValidatesItsOptions() async throws {
        let (s1, _, e1) = try await runAgent(["forward", "--key", goodKey, "--server", "127.0.0.1:7000"])
        #expect(s1 != 0)
        #expect(e1.contains("exactly one of --expose"))
        let (s2, _, e2) = try await runAgent(["forward", "--listen", "127.0.0.1:2222", "--key", "short", "--server", "127.0.0.1:7000"])
        #expect(s2 != 0)
        #expect(e2.contains("--key"))
        let (s3, _, e3) = try await runAgent(["forward", "--listen", "127.0.0.1:2222", "--key", goodKey, "--server", "::1:7000"])
        #expect(s3 != 0)
        #expect(e3.contains("bracket"))
    }

    @Test func stunCommandPrintsTheMappedAddressLast() async throws {
        let port = try freePort()
        let server = try AgentProcess("server", ["server", "--listen", "127.0.0.1:\(port)"])
        try await server.waitForLog("signaling server listening")
        let (status, out, errors) = try await runAgent(["stun", "127.0.0.1:\(port)"])
        #expect(status == 0, "\(errors)")
        let last = out.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("127.0.0.1:"))
        #expect(try await server.stop() == 0)
        // Nobody answering: a clear error within the time-out, not a hang.
        let (s2, _, e2) = try await runAgent(["stun", "127.0.0.1:\(port)", "--timeout", "1"])
        #expect(s2 != 0)
        #expect(e2.contains("no response"))
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/stun"), "needs Debian's stun-client (.ci/run installs it)"))
    func aStandardSTUNClientGetsItsMappedAddress() async throws {
        let port = try freePort()
        let server = try AgentProcess("server", ["server", "--listen", "127.0.0.1:\(port)"])
        try await server.waitForLog("signaling server listening")
        // The client picks its own local ports at random and gives up when one is taken: a few tries.
        var printed = ""
        for _ in 0..<5 where !printed.contains("MappedAddress = 127.0.0.1:") {
            let (_, out, errors) = try await runProgram("/bin/sh", ["-c", "exec /usr/bin/stun 127.0.0.1:\(port) -v </dev/null"],
                                                        timeout: .seconds(30))
            printed = out + errors
        }
        #expect(printed.contains("MappedAddress = 127.0.0.1:"), "stun printed: \(printed)")
        #expect(try await server.stop() == 0)
    }

    @Test func serverRefusesABusyPortClearly() async throws {
        let port = try freePort()
        let first = try AgentProcess("server", ["server", "--listen", "127.0.0.1:\(port)"])
        try await first.waitForLog("signaling server listening")
        let (status, _, errors) = try await runAgent(["server", "--listen", "127.0.0.1:\(port)"])
        #expect(status != 0)
        #expect(errors.contains("127.0.0.1:\(port)"))
        #expect(errors.contains("in use"))
        #expect(try await first.stop() == 0)
    }
}
