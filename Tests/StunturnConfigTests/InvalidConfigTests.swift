import Testing
@testable import StunturnConfig

/// A valid forward body (after its `- name:` line), to keep bad cases focused on one mistake.
private let exposeBody = ["    expose: 127.0.0.1:22", "    key: \(keyA)"]

private func oneForward(_ extra: String..., top: [String] = ["server: signal.example.net:7000"]) -> String {
    // Line numbers: top lines, "forwards:", "  - name: a", expose, key, then `extra` lines.
    let lines = top + ["forwards:", "  - name: a"] + exposeBody + extra
    return lines.joined(separator: "\n") + "\n"
}

@Suite struct InvalidConfigTests {
    @Test func badPortReadsExactlyAsDocumented() {
        let found = problems(in: yaml(
            "server: signal.example.net:7000",
            "forwards:",
            "  - name: home-ssh",
            "    expose: 127.0.0.1:22",
            "    key: \(keyA)",
            "  - name: web",
            "    expose: 127.0.0.1:0",
            "    key: \(keyB)"
        ))
        #expect(found.map(\.description) == ["config.yaml line 7: forwards[1].expose: port must be 1-65535, got 0"])
    }

    static let fieldCases: [BadConfig] = [
        // Unknown keys and typos
        BadConfig("typo in a forward key", oneForward("    exposee: 127.0.0.1:23"),
                  line: 6, path: "forwards[0].exposee", "unknown key; did you mean 'expose'?"),
        BadConfig("typo with a dash", oneForward("    punch-timeout: 3s"),
                  line: 6, path: "forwards[0].punch-timeout", "unknown key; did you mean 'punch_timeout'?"),
        BadConfig("typo at the top level", yaml("sever: signal.example.net:7000", "forwards:", "  - name: a", exposeBody[0], exposeBody[1], "    server: signal.example.net:7000"),
                  line: 1, path: "sever", "unknown key; did you mean 'server'?"),
        BadConfig("unrelated key lists the valid ones", oneForward("    colour: blue"),
                  line: 6, path: "forwards[0].colour", "unknown key; valid keys are name, expose, listen, key, key_file, protocol"),
        BadConfig("forward setting at the top level", oneForward(top: ["server: signal.example.net:7000", "tries: 5"]),
                  line: 2, path: "tries", "'tries' belongs inside an item under 'forwards'"),
        BadConfig("top-level setting inside a forward", oneForward("    log_level: debug"),
                  line: 6, path: "forwards[0].log_level", "'log_level' is a top-level setting"),

        // Endpoints
        BadConfig("port zero", oneForward(top: ["server: signal.example.net:0"]),
                  line: 1, path: "server", "port must be 1-65535, got 0"),
        BadConfig("port too large", oneForward("    server: signal.example.net:65536"),
                  line: 6, path: "forwards[0].server", "port must be 1-65535, got 65536"),
        BadConfig("port not a number", oneForward(top: ["server: signal.example.net:http"]),
                  line: 1, path: "server", "port must be 1-65535, got 'http'"),
        BadConfig("missing port", oneForward(top: ["server: signal.example.net"]),
                  line: 1, path: "server", "missing port in 'signal.example.net'; expected HOST:PORT"),
        BadConfig("unbracketed IPv6", oneForward(top: ["server: 2001:db8::1:7000"]),
                  line: 1, path: "server", "IPv6 addresses must be in brackets: write [2001:db8::1]:7000"),
        BadConfig("unbracketed IPv6 listen", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    listen: ::1:2222", "    key: \(keyA)"),
                  line: 4, path: "forwards[0].listen", "IPv6 addresses must be in brackets"),
        BadConfig("bad IPv4", oneForward(top: ["server: 256.1.1.1:7000"]),
                  line: 1, path: "server", "invalid IPv4 address '256.1.1.1'"),
        BadConfig("bad host name", oneForward(top: ["server: bad_host.example:7000"]),
                  line: 1, path: "server", "invalid host 'bad_host.example'"),
        BadConfig("bad bracketed IPv6", oneForward(top: ["server: '[::g]:7000'"]),
                  line: 1, path: "server", "invalid IPv6 address '[::g]'"),
        BadConfig("listen on a remote name", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    listen: example.com:22", "    key: \(keyA)"),
                  line: 4, path: "forwards[0].listen", "host must be an IP address or 'localhost'"),
        BadConfig("serve on a remote name", oneForward(top: ["serve: example.com:7000"]),
                  line: 1, path: "serve", "host must be an IP address or 'localhost'"),
        BadConfig("metrics on a remote name", oneForward(top: ["server: 127.0.0.1:7000", "metrics: example.com:9475"]),
                  line: 2, path: "metrics", "host must be an IP address or 'localhost'"),
        BadConfig("metrics without a port", oneForward(top: ["server: 127.0.0.1:7000", "metrics: 127.0.0.1"]),
                  line: 2, path: "metrics", "missing port in '127.0.0.1'; expected HOST:PORT"),
        BadConfig("endpoint given as a list", oneForward(top: ["server: [a, b]"]),
                  line: 1, path: "server", "expected HOST:PORT, got a list"),
        BadConfig("endpoint with no value", oneForward(top: ["server:"]),
                  line: 1, path: "server", "has no value; expected HOST:PORT"),

        // Forward structure
        BadConfig("both expose and listen", oneForward("    listen: 127.0.0.1:2222"),
                  line: 6, path: "forwards[0]", "set only one of 'expose' or 'listen', not both"),
        BadConfig("neither expose nor listen", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    key: \(keyA)"),
                  line: 3, path: "forwards[0]", "set one of 'expose'"),
        BadConfig("missing name", yaml("server: 127.0.0.1:7000", "forwards:", "  - expose: 127.0.0.1:22", "    key: \(keyA)"),
                  line: 3, path: "forwards[0].name", "missing; every forward needs a unique name"),
        BadConfig("name with a space", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: my web", exposeBody[0], exposeBody[1]),
                  line: 3, path: "forwards[0].name", "must be 1-64 characters of letters, digits, '.', '_' and '-', got 'my web'"),
        BadConfig("name too long", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: \(String(repeating: "n", count: 65))", exposeBody[0], exposeBody[1]),
                  line: 3, path: "forwards[0].name", "must be 1-64 characters"),
        BadConfig("duplicate forward names",
                  yaml("server: 127.0.0.1:7000", "forwards:",
                       "  - name: web", "    expose: 127.0.0.1:80", "    key: \(keyA)",
                       "  - name: ssh", "    expose: 127.0.0.1:22", "    key: \(keyA)",
                       "  - name: web", "    listen: 127.0.0.1:8080", "    key: \(keyB)"),
                  line: 9, path: "forwards[2].name", "duplicate name 'web' (also forwards[0])"),
        BadConfig("two listen forwards on one port",
                  yaml("server: 127.0.0.1:7000", "forwards:",
                       "  - name: a", "    listen: 0.0.0.0:2222", "    key: \(keyA)",
                       "  - name: b", "    listen: 127.0.0.1:2222", "    key: \(keyB)"),
                  line: 7, path: "forwards[1].listen", "TCP port 2222 is already taken by forwards[0].listen (line 4); give each listener its own port"),
        BadConfig("a listen forward on the in-agent server's port",
                  yaml("serve: 127.0.0.1:7000", "forwards:",
                       "  - name: a", "    listen: 127.0.0.1:7000", "    protocol: udp", "    key: \(keyA)"),
                  line: 4, path: "forwards[0].listen", "UDP port 7000 is already taken by serve (line 1); give each listener its own port"),
        BadConfig("metrics on the in-agent server's port",
                  yaml("serve: 0.0.0.0:7000", "metrics: 127.0.0.1:7000", "forwards:", "  - name: a", exposeBody[0], exposeBody[1]),
                  line: 2, path: "metrics", "TCP port 7000 is already taken by serve (line 1); give the metrics endpoint its own port"),
        BadConfig("a listen forward on the metrics port",
                  yaml("server: 127.0.0.1:7000", "metrics: localhost:9475", "forwards:",
                       "  - name: a", "    listen: 127.0.0.1:9475", "    key: \(keyA)"),
                  line: 5, path: "forwards[0].listen", "TCP port 9475 is already taken by metrics (line 2); give each listener its own port"),
        BadConfig("forward is not a mapping", yaml("server: 127.0.0.1:7000", "forwards:", "  - home-ssh"),
                  line: 3, path: "forwards[0]", "expected a mapping with 'name', 'key' and 'expose' or 'listen', got 'home-ssh'"),

        // Keys
        BadConfig("missing key", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    expose: 127.0.0.1:22"),
                  line: 3, path: "forwards[0].key", "missing; set the shared access key with 'key_file' (a file holding it) or 'key', e.g. from 'stunturn-agent keygen'"),
        BadConfig("key with no value", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    expose: 127.0.0.1:22", "    key:"),
                  line: 5, path: "forwards[0].key", "has no value; expected the shared access key"),
        BadConfig("short key", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    expose: 127.0.0.1:22", "    key: s3cr3t-k3"),
                  line: 5, path: "forwards[0].key", "key is too short (9 characters); use at least 16, e.g. from 'stunturn-agent keygen'"),
        BadConfig("guessable key", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    expose: 127.0.0.1:22", "    key: abcdefghijklmnopqrst"),
                  line: 5, path: "forwards[0].key", "plain ascending or descending run"),

        // Choices and types
        BadConfig("unknown protocol", oneForward("    protocol: sctp"),
                  line: 6, path: "forwards[0].protocol", "unknown protocol 'sctp'; valid values: tcp, udp"),
        BadConfig("protocol with no value", oneForward("    protocol:"),
                  line: 6, path: "forwards[0].protocol", "has no value; expected one of tcp, udp"),
        BadConfig("unknown log level", oneForward(top: ["server: 127.0.0.1:7000", "log_level: verbose"]),
                  line: 2, path: "log_level",
                  "unknown log level 'verbose'; valid values: trace, debug, info, notice, warning, error, critical"),
        BadConfig("keepalive zero", oneForward("    keepalive: 0"),
                  line: 6, path: "forwards[0].keepalive", "must be 1-300 seconds (1s-5m), got '0'"),
        BadConfig("keepalive too short", oneForward("    keepalive: 250ms"),
                  line: 6, path: "forwards[0].keepalive", "must be 1-300 seconds (1s-5m), got '250ms'"),
        BadConfig("keepalive past the relay's idle limit", oneForward("    keepalive: 10m"),
                  line: 6, path: "forwards[0].keepalive", "must be 1-300 seconds (1s-5m), got '10m'"),
        BadConfig("key and key_file", oneForward("    key_file: /etc/stunturn/key"),
                  line: 6, path: "forwards[0]", "set only one of 'key' or 'key_file'"),
        BadConfig("unreadable key file", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    expose: 127.0.0.1:22",
                                                 "    key_file: /nonexistent/web.key"),
                  line: 5, path: "forwards[0].key_file", "cannot read the key file '/nonexistent/web.key' (no such file)"),
        BadConfig("placeholder key", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    expose: 127.0.0.1:22",
                                          "    key: REPLACE-WITH-OUTPUT-OF-stunturn-agent-keygen"),
                  line: 5, path: "forwards[0].key", "is a placeholder from the examples"),
        BadConfig("unknown relay policy", oneForward("    relay: sometimes"),
                  line: 6, path: "forwards[0].relay", "unknown relay policy 'sometimes'; valid values: auto, never, only"),
        BadConfig("negative relay_after", oneForward("    relay_after: -1"),
                  line: 6, path: "forwards[0].relay_after", "must be 0-3600 seconds (0s-1h), got '-1'"),
        BadConfig("token and token file", oneForward("    server_token: abcdefgh12345678", "    server_token_file: /nonexistent"),
                  line: 7, path: "forwards[0].server_token_file", "set only one of 'server_token' or 'server_token_file'"),
        BadConfig("token with a space", oneForward("    server_token: 'two words'"),
                  line: 6, path: "forwards[0].server_token", "a token is 1-256 characters without spaces"),
        BadConfig("unreadable token file", oneForward(top: ["server: 127.0.0.1:7000", "server_token_file: /nonexistent/token"]),
                  line: 2, path: "server_token_file", "cannot read the token file '/nonexistent/token'"),
        BadConfig("max_streams zero", oneForward("    max_streams: 0"),
                  line: 6, path: "forwards[0].max_streams", "must be 1-65536, got 0"),
        BadConfig("max_streams not a number", oneForward("    max_streams: lots"),
                  line: 6, path: "forwards[0].max_streams", "expected an integer, got 'lots'"),
        BadConfig("tries not a number", oneForward("    tries: many"),
                  line: 6, path: "forwards[0].tries", "expected an integer, got 'many'"),
        BadConfig("tries fractional", oneForward("    tries: 2.5"),
                  line: 6, path: "forwards[0].tries", "expected an integer, got '2.5'"),
        BadConfig("tries zero", oneForward("    tries: 0"),
                  line: 6, path: "forwards[0].tries", "must be 1-100000, got 0"),
        BadConfig("tries too many", oneForward("    tries: 100001"),
                  line: 6, path: "forwards[0].tries", "must be 1-100000, got 100001"),
        BadConfig("boolean misspelt", oneForward("    plaintext_insecure: maybe"),
                  line: 6, path: "forwards[0].plaintext_insecure", "expected true or false, got 'maybe'"),
        BadConfig("peer_ip not an address", oneForward("    peer_ip: peer.example.net"),
                  line: 6, path: "forwards[0].peer_ip", "expected an IP address such as 203.0.113.7 or 2001:db8::1, got 'peer.example.net'"),

        // Durations
        BadConfig("duration word", oneForward("    punch_timeout: soon"),
                  line: 6, path: "forwards[0].punch_timeout", "expected a duration such as 10 (seconds), 2.5, \"250ms\", \"10s\", \"2m\" or \"1h\", got 'soon'"),
        BadConfig("duration unknown unit", oneForward("    signal_timeout: 3 days"),
                  line: 6, path: "forwards[0].signal_timeout", "expected a duration such as 10 (seconds)"),
        BadConfig("duration zero", oneForward("    connect_timeout: 0"),
                  line: 6, path: "forwards[0].connect_timeout", "must be 0.001-3600 seconds (1ms-1h), got '0'"),
        BadConfig("duration negative", oneForward("    punch_timeout: -5s"),
                  line: 6, path: "forwards[0].punch_timeout", "must be 0.001-3600 seconds (1ms-1h), got '-5s'"),
        BadConfig("duration infinite", oneForward("    punch_timeout: .inf"),
                  line: 6, path: "forwards[0].punch_timeout", "expected a duration such as"),
        // The same limits as the command line's: a nanosecond and two hours are refused here too.
        BadConfig("idle timeout under a millisecond", oneForward("    idle_timeout: 1e-9"),
                  line: 6, path: "forwards[0].idle_timeout", "must be 0 (never) or 0.001-31536000 seconds (1ms-8760h), got '1e-9'"),
        BadConfig("punch timeout past the command line's cap", oneForward("    punch_timeout: 2h"),
                  line: 6, path: "forwards[0].punch_timeout", "must be 0.001-3600 seconds (1ms-1h), got '2h'"),
        BadConfig("duration too long", oneForward("    idle_timeout: 1e300"),
                  line: 6, path: "forwards[0].idle_timeout", "must be 0 (never) or 0.001-31536000 seconds (1ms-8760h), got '1e300'"),
        BadConfig("idle timeout negative", oneForward("    idle_timeout: -1"),
                  line: 6, path: "forwards[0].idle_timeout", "must be 0 (never) or 0.001-31536000 seconds (1ms-8760h), got '-1'"),

        // Admin socket
        BadConfig("admin with no value", oneForward(top: ["server: 127.0.0.1:7000", "admin:"]),
                  line: 2, path: "admin", "has no value; expected the path of the agent's admin socket, or none"),
        BadConfig("admin empty", oneForward(top: ["server: 127.0.0.1:7000", "admin: ''"]),
                  line: 2, path: "admin", "is empty; give the socket's path, or none"),
        BadConfig("admin a list", oneForward(top: ["server: 127.0.0.1:7000", "admin: [a, b]"]),
                  line: 2, path: "admin", "expected the path of the agent's admin socket, or none, got a list"),
        BadConfig("admin a directory", oneForward(top: ["server: 127.0.0.1:7000", "admin: /run/stunturn/"]),
                  line: 2, path: "admin", "'/run/stunturn/' names a directory; name the socket file in it, such as /run/stunturn/agent.sock"),
        BadConfig("admin too long", oneForward(top: ["server: 127.0.0.1:7000", "admin: /\(String(repeating: "d", count: 103))"]),
                  line: 2, path: "admin", "is 104 bytes long; a socket path may be at most 103 bytes"),
        BadConfig("admin inside a forward", oneForward("    admin: /tmp/a.sock"),
                  line: 6, path: "forwards[0].admin", "'admin' is a top-level setting"),

        // Servers
        BadConfig("no signaling server anywhere", yaml("forwards:", "  - name: a", exposeBody[0], exposeBody[1]),
                  line: 2, path: "forwards[0].server", "no signaling server: set 'server' at the top or on this forward"),

        // Document shape
        BadConfig("forwards is a mapping", yaml("server: 127.0.0.1:7000", "forwards:", "  name: a", "  expose: 127.0.0.1:22"),
                  line: 3, path: "forwards", "expected a list of forwards (items starting with '- '), got a mapping"),
        BadConfig("forwards is a string", yaml("server: 127.0.0.1:7000", "forwards: home-ssh"),
                  line: 2, path: "forwards", "expected a list of forwards (items starting with '- '), got 'home-ssh'"),
        BadConfig("forwards is empty", yaml("server: 127.0.0.1:7000", "forwards: []"),
                  line: 2, path: "forwards", "is empty; add at least one forward"),
        BadConfig("forwards has no value", yaml("server: 127.0.0.1:7000", "forwards:"),
                  line: 2, path: "forwards", "has no value; add at least one forward"),
        BadConfig("forwards missing", yaml("server: 127.0.0.1:7000", "log_level: info"),
                  line: 1, path: "forwards", "missing; add a list of forwards"),
        BadConfig("top level is a list", yaml("- server: 127.0.0.1:7000"),
                  line: 1, path: "", "the top level must be a mapping of settings such as 'server:' and 'forwards:', got a list"),
        BadConfig("top level is a string", yaml("just some words"),
                  line: 1, path: "", "the top level must be a mapping of settings such as 'server:' and 'forwards:', got 'just some words'"),
        BadConfig("empty file", "",
                  line: nil, path: "", "the file is empty; it needs 'server' (or 'serve') and a 'forwards' list"),
        BadConfig("only comments", yaml("# server: 127.0.0.1:7000", "", "# forwards: []"),
                  line: nil, path: "", "the file is empty"),

        // YAML syntax
        BadConfig("duplicate key in a forward", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", exposeBody[0], exposeBody[1], "    expose: 127.0.0.1:23"),
                  line: 6, path: "", "duplicate key 'expose' in the same mapping (first on line 4); each key may appear only once"),
        BadConfig("duplicate key at the top", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", exposeBody[0], exposeBody[1], "server: 127.0.0.1:7001"),
                  line: 6, path: "", "duplicate key 'server' in the same mapping (first on line 1)"),
        BadConfig("duplicate key in a flow mapping", yaml("server: 127.0.0.1:7000", "forwards:", "  - {name: a, name: b, expose: '127.0.0.1:22', key: \(keyA)}"),
                  line: 3, path: "", "duplicate key 'name' in the same mapping"),
        BadConfig("bad indentation", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "    expose: 127.0.0.1:22", "   key: \(keyA)"),
                  line: 5, path: "", "YAML syntax error:"),
        BadConfig("unclosed quote", yaml("server: \"127.0.0.1:7000", "forwards: []"),
                  line: 3, path: "", "YAML syntax error: found unexpected end of stream"),
        BadConfig("tab indentation", yaml("server: 127.0.0.1:7000", "forwards:", "  - name: a", "\texpose: 127.0.0.1:22"),
                  line: 4, path: "", "indent with spaces, not tabs"),
    ]

    @Test(arguments: fieldCases)
    func reportsTheProblemWithItsLine(_ bad: BadConfig) {
        let found = problems(in: bad.yaml)
        let match = found.first { $0.path == bad.path && $0.message.contains(bad.message) }
        #expect(match != nil, "no problem at \(bad.path) containing \"\(bad.message)\"; got:\n\(found.map(\.description).joined(separator: "\n"))")
        #expect(match?.line == bad.line, "wrong line; got:\n\(found.map(\.description).joined(separator: "\n"))")
        #expect(match?.source == "config.yaml")
    }

    @Test func collectsEveryProblemInFileOrder() {
        let found = problems(in: yaml(
            "server: 127.0.0.1:7000",
            "log_level: loud",
            "forwards:",
            "  - name: web",
            "    expose: 127.0.0.1:0",
            "    key: short",
            "    protocol: sctp",
            "  - name: web",
            "    listen: 127.0.0.1:2222",
            "    key: \(keyB)",
            "    tries: many",
            "    exposee: 1"
        ))
        #expect(found.map(\.description) == [
            "config.yaml line 2: log_level: unknown log level 'loud'; valid values: trace, debug, info, notice, warning, error, critical",
            "config.yaml line 5: forwards[0].expose: port must be 1-65535, got 0",
            "config.yaml line 6: forwards[0].key: key is too short (5 characters); use at least 16, e.g. from 'stunturn-agent keygen'",
            "config.yaml line 7: forwards[0].protocol: unknown protocol 'sctp'; valid values: tcp, udp",
            "config.yaml line 8: forwards[1].name: duplicate name 'web' (also forwards[0])",
            "config.yaml line 11: forwards[1].tries: expected an integer, got 'many'",
            "config.yaml line 12: forwards[1].exposee: unknown key; did you mean 'expose'?",
        ])
    }

    @Test func anInvalidServerDoesNotAlsoReportAMissingOne() {
        let found = problems(in: yaml(
            "server: 127.0.0.1:99999",
            "forwards:",
            "  - name: a",
            exposeBody[0],
            exposeBody[1]
        ))
        #expect(found.count == 1)
        #expect(found.first?.path == "server")
    }

    @Test func anInvalidServeDoesNotAlsoReportAMissingServer() {
        let found = problems(in: yaml(
            "serve: 0.0.0.0:0",
            "forwards:",
            "  - name: a",
            exposeBody[0],
            exposeBody[1]
        ))
        #expect(found.map(\.description) == ["config.yaml line 1: serve: port must be 1-65535, got 0"])
    }

    @Test func errorDescriptionJoinsProblemsByLine() {
        do {
            _ = try AgentConfig.parse(yaml: "server: a:0\nforwards: []\n", source: "agent.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == """
                agent.yaml line 1: server: port must be 1-65535, got 0
                agent.yaml line 2: forwards: is empty; add at least one forward
                """)
        }
    }
}
