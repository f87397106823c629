import Foundation
import Testing
@testable import StunturnConfig

@Suite struct ValidConfigTests {
    @Test func issueExampleParses() throws {
        let config = try parseValid("""
            server: signal.example.net:7000     # signaling server, used by every forward unless it names its own
            forwards:
              - name: home-ssh                   # unique; used in logs
                expose: 127.0.0.1:22             # a service on this machine, made reachable to the peer
                key: 3f1c2b9e-6a0d-4c55-9e61-0b7f2d4a8c13   # the shared access key
              - name: office-ssh
                listen: 127.0.0.1:2222           # a local port; each connection goes to the peer's exposed service
                key: 9d2e7c41-0b8a-4f3e-a1d5-6c7e8f901234
                protocol: tcp                    # tcp (default) or udp
            """)
        let signal = Endpoint(host: "signal.example.net", port: 7000)
        #expect(config.server == signal)
        #expect(config.serve == nil)
        #expect(config.logLevel == "info")
        #expect(config.forwards.map(\.name) == ["home-ssh", "office-ssh"])
        #expect(config.forwards[0].mode == .expose(Endpoint(host: "127.0.0.1", port: 22)))
        #expect(config.forwards[1].mode == .listen(Endpoint(host: "127.0.0.1", port: 2222)))
        #expect(config.forwards.map(\.key) == [keyA, keyB])
        #expect(config.forwards.allSatisfy { $0.server == signal && $0.transport == .tcp })
    }

    @Test func exampleFileIsValidAndRunsOnOneMachine() throws {
        let exampleURL = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()
            .deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("config.yaml.example")
        // The example carries a placeholder the agent refuses until the user puts a key in.
        let text = try String(contentsOf: exampleURL, encoding: .utf8)
        #expect(throws: ConfigError.self) { try AgentConfig.parse(yaml: text, source: exampleURL.path) }
        let config = try AgentConfig.parse(yaml: text.replacingOccurrences(of: "REPLACE-WITH-OUTPUT-OF-stunturn-agent-keygen", with: keyA),
                                           source: exampleURL.path)
        let local7000 = Endpoint(host: "127.0.0.1", port: 7000)
        #expect(config.serve == local7000)
        #expect(config.server == local7000)
        #expect(config.forwards.count == 2)
        let modes = Set(config.forwards.map(\.mode))
        #expect(modes == [.expose(Endpoint(host: "127.0.0.1", port: 8080)), .listen(Endpoint(host: "127.0.0.1", port: 8081))])
        #expect(Set(config.forwards.map(\.key)).count == 1, "both ends of the one-machine tunnel share a key")
        #expect(config.forwards.allSatisfy { $0.server == local7000 && !$0.plaintextInsecure })

        let uuidShape = try Regex("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        #expect(config.forwards.allSatisfy { $0.key.wholeMatch(of: uuidShape) != nil })
    }

    @Test func exampleFileDocumentsEveryField() throws {
        let exampleURL = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config.yaml.example")
        let text = try String(contentsOf: exampleURL, encoding: .utf8)
        for key in ConfigParser.topLevelKeys + ConfigParser.forwardKeys {
            #expect(text.contains("\(key):"), "config.yaml.example does not mention '\(key)'")
        }
    }

    @Test func defaultsAreApplied() throws {
        let config = try parseValid(yaml(
            "server: 192.0.2.10:7000",
            "forwards:",
            "  - name: only",
            "    expose: localhost:8080",
            "    key: \(keyA)"
        ))
        let forward = try #require(config.forwards.first)
        #expect(config.logLevel == "info")
        #expect(forward.mode == .expose(Endpoint(host: "localhost", port: 8080)))
        #expect(forward.transport == .tcp)
        #expect(forward.peerIP == nil)
        #expect(forward.tries == 300)
        #expect(forward.punchTimeout == .seconds(10))
        #expect(forward.signalTimeout == .seconds(30))
        #expect(forward.connectTimeout == .seconds(5))
        #expect(forward.idleTimeout == nil)
        #expect(forward.keepalive == .seconds(15))
        #expect(forward.maxStreams == 1024)
        #expect(forward.plaintextInsecure == false)
    }

    @Test(arguments: [
        (nil, AdminSocketSetting.automatic),
        ("none", .disabled),
        ("None", .disabled),
        ("/run/stunturn/agent.sock", .path("/run/stunturn/agent.sock")),
        // Relative to the config file's folder, as token files are.
        ("agent.sock", .path("/etc/stunturn/agent.sock")),
        ("/\(String(repeating: "d", count: 102))", .path("/\(String(repeating: "d", count: 102))")),
    ] as [(String?, AdminSocketSetting)])
    func theAdminSocketIsReadOrDefaults(_ text: String?, _ expected: AdminSocketSetting) throws {
        let top = ["server: 127.0.0.1:7000"] + (text.map { ["admin: \($0)"] } ?? [])
        let lines = top + ["forwards:", "  - name: a", "    expose: 127.0.0.1:22", "    key: \(keyA)"]
        let config = try AgentConfig.parse(yaml: lines.joined(separator: "\n"), source: "/etc/stunturn/agent.yaml")
        #expect(config.admin == expected)
    }

    @Test(arguments: [
        (nil, nil),
        ("127.0.0.1:9475", Endpoint(host: "127.0.0.1", port: 9475)),
        ("localhost:9475", Endpoint(host: "localhost", port: 9475)),
        ("'[::]:9475'", Endpoint(host: "::", port: 9475)),
    ] as [(String?, Endpoint?)])
    func theMetricsEndpointIsReadAndOffByDefault(_ text: String?, _ expected: Endpoint?) throws {
        let top = ["server: 127.0.0.1:7000"] + (text.map { ["metrics: \($0)"] } ?? [])
        let lines = top + ["forwards:", "  - name: a", "    listen: 127.0.0.1:9476", "    key: \(keyA)"]
        let config = try parseValid(lines.joined(separator: "\n"))
        #expect(config.metrics == expected)
        #expect(config.lines["metrics"] == (text == nil ? nil : 2))
        #expect(config.summary().contains("metrics: \(expected.map { "http://\($0)/metrics" } ?? "off")"))
    }

    @Test func aConfigMadeInCodeOpensNoAdminSocket() {
        #expect(AgentConfig(forwards: []).admin == .disabled)
    }

    @Test func everyFieldIsRead() throws {
        let config = try parseValid(yaml(
            "server: signal.example.net:7000",
            "log_level: DEBUG",
            "forwards:",
            "  - name: game.udp_1",
            "    listen: 0.0.0.0:27015",
            "    key: \(keyB)",
            "    protocol: udp",
            "    peer_ip: 2001:db8::7",
            "    tries: 1000",
            "    punch_timeout: 250ms",
            "    signal_timeout: 2m",
            "    connect_timeout: 1.5",
            "    idle_timeout: 1h",
            "    keepalive: 5s",
            "    max_streams: 64",
            "    plaintext_insecure: true",
            "    relay: only",
            "    relay_after: 250ms",
            "    server_token: forward-token-0123456789"
        ))
        let forward = try #require(config.forwards.first)
        #expect(config.logLevel == "debug")
        #expect(forward.name == "game.udp_1")
        #expect(forward.mode == .listen(Endpoint(host: "0.0.0.0", port: 27015)))
        #expect(forward.transport == .udp)
        #expect(forward.peerIP == "2001:db8::7")
        #expect(forward.tries == 1000)
        #expect(forward.punchTimeout == .milliseconds(250))
        #expect(forward.signalTimeout == .seconds(120))
        #expect(forward.connectTimeout == .milliseconds(1500))
        #expect(forward.idleTimeout == .seconds(3600))
        #expect(forward.keepalive == .seconds(5))
        #expect(forward.maxStreams == 64)
        #expect(forward.plaintextInsecure)
        #expect(forward.relay == .only)
        #expect(forward.relayAfter == .milliseconds(250))
        #expect(forward.serverToken == "forward-token-0123456789")
    }

    @Test func anExposedServiceMayBeAnotherHostByName() throws {
        let config = try parseValid(yaml(
            "server: 127.0.0.1:7000",
            "forwards:",
            "  - name: nas",
            "    expose: nas.home.arpa:443",
            "    key: \(keyA)"
        ))
        #expect(config.forwards.first?.mode == .expose(Endpoint(host: "nas.home.arpa", port: 443)))
    }

    @Test func keysFromFilesAndAWarningWhenOthersCanReadThem() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let privateKey = directory.appendingPathComponent("private.key").path
        let sharedKey = directory.appendingPathComponent("shared.key").path
        try "# web tunnel\n\(keyA)\n".write(toFile: privateKey, atomically: true, encoding: .utf8)
        try "\(keyB)\n".write(toFile: sharedKey, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: privateKey)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: sharedKey)
        let config = try AgentConfig.parse(yaml: yaml(
            "server: 127.0.0.1:7000",
            "forwards:",
            "  - name: private",
            "    listen: 127.0.0.1:2222",
            "    key_file: private.key",
            "  - name: shared",
            "    listen: 127.0.0.1:2223",
            "    key_file: \(sharedKey)"
        ), source: directory.appendingPathComponent("agent.yaml").path)
        #expect(config.forwards.map(\.key) == [keyA, keyB])
        #expect(config.warnings.count == 1)
        #expect(config.warnings.first?.contains("forwards[1].key_file: '\(sharedKey)' is readable by every user") == true)
        #expect(config.warnings.first?.contains("chmod 600") == true)
    }

    @Test func relayDefaultsAndTokensFromFiles() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "# from the operator\n\n  top-token-0123456789\n".write(to: directory.appendingPathComponent("top.token"), atomically: true, encoding: .utf8)
        let yaml = yaml(
            "server: 127.0.0.1:7000",
            "server_token_file: top.token",
            "forwards:",
            "  - name: inherits",
            "    listen: 127.0.0.1:2222",
            "    key: \(keyA)",
            "  - name: own",
            "    listen: 127.0.0.1:2223",
            "    key: \(keyA)",
            "    server_token: own-token-0123456789"
        )
        // A relative token file is found beside the config file.
        let config = try AgentConfig.parse(yaml: yaml, source: directory.appendingPathComponent("agent.yaml").path)
        #expect(config.forwards[0].relay == .auto)
        #expect(config.forwards[0].relayAfter == .seconds(1))
        #expect(config.forwards[0].serverToken == "top-token-0123456789")
        #expect(config.forwards[1].serverToken == "own-token-0123456789")
        #expect(!config.summary().contains("top-token"), "a token in the summary")
        #expect(config.summary().contains("relay auto (after 1s without a direct path), server token set"))
    }

    @Test func ipv6Endpoints() throws {
        let config = try parseValid(yaml(
            "server: '[2001:db8::1]:7000'",
            "forwards:",
            "  - name: v6",
            "    listen: '[::1]:2222'",
            "    key: \(keyA)",
            "    peer_ip: '[fe80::1]'"
        ))
        let forward = try #require(config.forwards.first)
        #expect(config.server == Endpoint(host: "2001:db8::1", port: 7000))
        #expect(config.server?.description == "[2001:db8::1]:7000")
        #expect(forward.mode == .listen(Endpoint(host: "::1", port: 2222)))
        #expect(forward.mode.endpoint.description == "[::1]:2222")
        #expect(forward.peerIP == "fe80::1")
    }

    @Test func oneListenPortPerProtocolAndFamilyIsNoClash() throws {
        let config = try parseValid(yaml(
            "serve: 127.0.0.1:7000",
            "forwards:",
            "  - name: tcp", "    listen: 127.0.0.1:2222", "    key: \(keyA)",
            "  - name: udp", "    listen: 127.0.0.1:2222", "    protocol: udp", "    key: \(keyA)",
            "  - name: v6", "    listen: '[::1]:3333'", "    key: \(keyA)",
            "  - name: v4any", "    listen: 0.0.0.0:3333", "    key: \(keyA)"
        ))
        #expect(config.forwards.count == 4)
    }

    @Test func perForwardServerOverridesTheTopLevelOne() throws {
        let config = try parseValid(yaml(
            "server: signal.example.net:7000",
            "forwards:",
            "  - name: default-server",
            "    expose: 127.0.0.1:22",
            "    key: \(keyA)",
            "  - name: own-server",
            "    listen: 127.0.0.1:2222",
            "    key: \(keyB)",
            "    server: other.example.org:7443"
        ))
        #expect(config.forwards[0].server == Endpoint(host: "signal.example.net", port: 7000))
        #expect(config.forwards[1].server == Endpoint(host: "other.example.org", port: 7443))
    }

    @Test func everyForwardWithItsOwnServerNeedsNoTopLevelServer() throws {
        let config = try parseValid(yaml(
            "forwards:",
            "  - name: a",
            "    expose: 127.0.0.1:22",
            "    key: \(keyA)",
            "    server: 198.51.100.4:7000"
        ))
        #expect(config.server == nil)
        #expect(config.forwards[0].server == Endpoint(host: "198.51.100.4", port: 7000))
    }

    @Test(arguments: [
        ("127.0.0.1:7000", Endpoint(host: "127.0.0.1", port: 7000)),
        ("0.0.0.0:7000", Endpoint(host: "127.0.0.1", port: 7000)),
        ("'[::]:7000'", Endpoint(host: "::1", port: 7000)),
        ("'[0:0:0:0:0:0:0:0]:7001'", Endpoint(host: "::1", port: 7001)),
        ("'[::1]:7002'", Endpoint(host: "::1", port: 7002)),
        ("localhost:7003", Endpoint(host: "localhost", port: 7003)),
    ])
    func serveOnlyConfigsDialTheInAgentServer(serve: String, expected: Endpoint) throws {
        let config = try parseValid(yaml(
            "serve: \(serve)",
            "forwards:",
            "  - name: a",
            "    expose: 127.0.0.1:8080",
            "    key: \(keyA)"
        ))
        #expect(config.server == nil)
        #expect(config.serve != nil)
        #expect(config.forwards[0].server == expected)
    }

    @Test func topLevelServerWinsOverServe() throws {
        let config = try parseValid(yaml(
            "serve: 0.0.0.0:7000",
            "server: signal.example.net:7000",
            "forwards:",
            "  - name: a",
            "    expose: 127.0.0.1:8080",
            "    key: \(keyA)"
        ))
        #expect(config.forwards[0].server == Endpoint(host: "signal.example.net", port: 7000))
    }

    @Test(arguments: [
        ("10", Duration.seconds(10)),
        ("2.5", .milliseconds(2500)),
        ("0.1", .milliseconds(100)),
        ("\"250ms\"", .milliseconds(250)),
        ("10s", .seconds(10)),
        ("1.5s", .milliseconds(1500)),
        ("2m", .seconds(120)),
        ("1h", .seconds(3600)),
        ("'30'", .seconds(30)),
    ])
    func durationSpellings(text: String, expected: Duration) throws {
        let config = try parseValid(yaml(
            "server: 127.0.0.1:7000",
            "forwards:",
            "  - name: a",
            "    listen: 127.0.0.1:8081",
            "    key: \(keyA)",
            "    punch_timeout: \(text)",
            "    idle_timeout: \(text)"
        ))
        #expect(config.forwards[0].punchTimeout == expected)
        #expect(config.forwards[0].idleTimeout == expected)
    }

    @Test(arguments: ["0", "0s", "0ms", "0.0"])
    func zeroIdleTimeoutMeansNever(text: String) throws {
        let config = try parseValid(yaml(
            "server: 127.0.0.1:7000",
            "forwards:",
            "  - name: a",
            "    listen: 127.0.0.1:8081",
            "    key: \(keyA)",
            "    idle_timeout: \(text)"
        ))
        #expect(config.forwards[0].idleTimeout == nil)
    }

    @Test(arguments: AgentConfig.logLevels)
    func everyLogLevelIsAccepted(level: String) throws {
        let config = try parseValid(yaml(
            "server: 127.0.0.1:7000",
            "log_level: \(level)",
            "forwards:",
            "  - {name: a, listen: '127.0.0.1:8081', key: \(keyA)}"
        ))
        #expect(config.logLevel == level)
    }

    @Test func summaryDescribesForwardsWithoutPrintingKeys() throws {
        let config = try parseValid(yaml(
            "serve: 0.0.0.0:7000",
            "forwards:",
            "  - name: web",
            "    expose: 127.0.0.1:8080",
            "    key: \(keyA)",
            "    idle_timeout: 90s",
            "  - name: game",
            "    listen: '[::1]:9000'",
            "    key: \(keyB)",
            "    protocol: udp",
            "    plaintext_insecure: true",
            "    punch_timeout: 250ms"
        ))
        let summary = config.summary()
        #expect(summary.contains("in-agent signaling server: listening on 0.0.0.0:7000"))
        #expect(summary.contains("2 forwards:"))
        #expect(summary.contains("web: tcp exposes 127.0.0.1:8080"))
        #expect(summary.contains("game: udp listens on [::1]:9000"))
        #expect(summary.contains("server 127.0.0.1:7000"))
        #expect(summary.contains("idle_timeout 90s"))
        #expect(summary.contains("idle_timeout never"))
        #expect(summary.contains("punch_timeout 250ms"))
        #expect(summary.contains("NOT encrypted"))
        #expect(!summary.contains(keyA) && !summary.contains(keyB))
        #expect(summary.contains("3f1c…8c13"))
    }
}

@Suite struct DrainTimeoutConfigTests {
    static let forwards = """
        server: 127.0.0.1:7000
        forwards:
          - name: web
            listen: 127.0.0.1:8081
            key: 7c1d9e2a-4b3f-4e8a-9c6d-2f1e0a9b8c7d
        """

    @Test func defaultsToTenSeconds() throws {
        let config = try AgentConfig.parse(yaml: Self.forwards, source: "agent.yaml")
        #expect(config.drainTimeout == .seconds(10))
    }

    @Test(arguments: [("2.5", Duration.milliseconds(2500)), ("\"250ms\"", .milliseconds(250)), ("0", .zero), ("\"1m\"", .seconds(60))])
    func isReadFromTheTopLevel(text: String, expected: Duration) throws {
        let config = try AgentConfig.parse(yaml: "drain_timeout: \(text)\n" + Self.forwards, source: "agent.yaml")
        #expect(config.drainTimeout == expected)
    }

    @Test func aNegativeOrWordyDrainTimeoutIsRefusedWithItsLine() {
        for bad in ["-1", "soon"] {
            do {
                _ = try AgentConfig.parse(yaml: "drain_timeout: \(bad)\n" + Self.forwards, source: "agent.yaml")
                Issue.record("drain_timeout: \(bad) was accepted")
            } catch {
                #expect(error.description.hasPrefix("agent.yaml line 1: drain_timeout:"), "\(error.description)")
                if bad == "-1" { #expect(error.description.contains("must be 0 (reset at once) or 0.001-86400 seconds"), "\(error.description)") }
            }
        }
    }

    @Test func belongsAtTheTopNotInAForward() {
        let yaml = Self.forwards + "\n    drain_timeout: 5\n"
        #expect(throws: ConfigError.self) { try AgentConfig.parse(yaml: yaml, source: "agent.yaml") }
    }
}
