import Foundation
import Testing

/// One lab case: the topology, the NAT in front of the listen side (a) and of the exposed side
/// (b), the transport, how the routers treat unsolicited packets, and the loss on the internet.
struct NATCase: Sendable, CustomTestStringConvertible {
    let topology: String
    let natA: String
    let natB: String
    let proto: String
    let router: String
    let loss: Int
    /// The agents' relay policy: auto (their default), never or only.
    let relay: String
    /// Why the case is in the CI subset (shown when it fails).
    let why: String

    init(_ natA: String, _ natB: String, _ proto: String, _ router: String, loss: Int = 0,
         topology: String = "pair", relay: String = "auto", _ why: String) {
        self.topology = topology
        self.natA = natA
        self.natB = natB
        self.proto = proto
        self.router = router
        self.loss = loss
        self.relay = relay
        self.why = why
    }

    /// The outcome the product must reach here; "a|b" where either is right (see `Expectation`).
    var expected: String {
        Expectation.outcome(topology: topology, proto: proto, natA: natA, natB: natB, loss: loss, relay: relay)
    }

    var arguments: [String] {
        ["case", "--topology", topology, "--nat-a", natA, "--nat-b", natB, "--proto", proto,
         "--router", router, "--loss", String(loss), "--relay", relay]
    }

    var testDescription: String {
        let nats = topology == "lan" ? natA : "\(natA)/\(natB)"
        return "\(topology) \(nats) \(proto) router=\(router) loss=\(loss)%" + (relay == "auto" ? "" : " relay=\(relay)")
    }
}

/// What the agents can do today, and so the path each pairing must take. The same rules as
/// expected_outcome in scripts/natlab.sh, kept apart on purpose: the test checks that the script
/// agrees. When the agents learn more (UDP hellos announcing host candidates), flip the flag
/// here and in the script.
enum Expectation {
    static let relays: [String: Bool] = ["tcp": true, "udp": true]
    static let hostCandidates: [String: Bool] = ["tcp": true, "udp": false]

    /// The direct path a pairing offers: "srflx" (the peer's public address), "host" (its own
    /// address on a shared network) or none.
    static func directCandidate(topology: String, proto: String, natA: String, natB: String) -> String? {
        switch topology {
        case "pair":
            // An EDM side sends from a port nobody announced; only a NAT-less peer lets that in.
            let blocked = (natA == "edm" && natB != "none") || (natB == "edm" && natA != "none")
            return blocked ? nil : "srflx"
        case "lan":
            // One NAT without hairpin: only the peers' own addresses connect them.
            return hostCandidates[proto] == true ? "host" : nil
        default:
            // cgnat: the carrier NAT does not hairpin, and the peer's own address is this machine's.
            return nil
        }
    }

    /// direct-srflx, direct-host, relay or fails-cleanly, for a relay policy (auto, never,
    /// only). Under loss a direct path may come up only after relay_after (a lost SYN waits out
    /// TCP's 1 s time-out), and then the relay is right too.
    static func outcome(topology: String, proto: String, natA: String, natB: String, loss: Int, relay: String = "auto") -> String {
        let policy = relays[proto] == true ? relay : "never"
        if policy == "only" { return "relay" }
        if let candidate = directCandidate(topology: topology, proto: proto, natA: natA, natB: natB) {
            return policy == "auto" && loss > 0 ? "direct-\(candidate)|relay" : "direct-\(candidate)"
        }
        return policy == "auto" ? "relay" : "fails-cleanly"
    }

    static func matches(_ outcome: String?, _ expected: String) -> Bool {
        guard let outcome else { return false }
        return expected.split(separator: "|").contains { $0 == outcome }
    }
}

/// Where the lab script and the agent are, and whether this machine can run the lab.
enum NATLab {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let script = root.appendingPathComponent("scripts/natlab.sh").path
    static let agent: String = {
        if let path = ProcessInfo.processInfo.environment["STUNTURN_AGENT"], !path.isEmpty { return path }
        return root.appendingPathComponent(".build/debug/stunturn-agent").path
    }()
    /// This test run's namespace prefix and log folder.
    static let runPrefix = "stl\(getpid() % 100_000)-"
    static let runLogDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("natlab-logs-\(getpid())").path

    /// Short, so the cases that must fail do so quickly; a working punch takes well under a second here.
    static let punchTimeout = 6

    /// A subset of `scripts/natlab.sh matrix` (which runs all 84 cases): every NAT pairing for
    /// both transports once, router kind and loss spread over them, and each path the agents
    /// take: direct to the public address (srflx), direct on a shared LAN (host), relayed
    /// (EDM with a NAT on the other side, and two homes behind one carrier-grade NAT); and, with
    /// the relay turned off, the clean failure of a pairing without a direct path. 30 cases,
    /// about 3 minutes on two cores.
    static let ciCases: [NATCase] = [
        // Direct to the public address.
        NATCase("none", "none", "tcp", "drop", "srflx, no NAT at all"),
        NATCase("none", "none", "udp", "answer", loss: 5, "srflx, no NAT at all, lossy"),
        NATCase("none", "eim-apdf", "tcp", "answer", loss: 5, "srflx through one answering NAT, lossy"),
        NATCase("none", "eim-apdf", "udp", "drop", "srflx through one dropping NAT"),
        NATCase("none", "edm", "tcp", "drop", loss: 5, "srflx: EDM with a public peer"),
        NATCase("none", "edm", "udp", "answer", "srflx: EDM with a public peer"),
        NATCase("eim-apdf", "none", "tcp", "answer", "srflx, listen side behind the NAT"),
        NATCase("eim-apdf", "none", "udp", "drop", loss: 5, "srflx, listen side behind the NAT, lossy"),
        NATCase("eim-apdf", "eim-apdf", "tcp", "drop", "srflx through two EIM NATs"),
        NATCase("eim-apdf", "eim-apdf", "tcp", "drop", loss: 5, "srflx through two EIM NATs, lossy"),
        NATCase("eim-apdf", "eim-apdf", "udp", "answer", "srflx: the opening probes' case (answering routers)"),
        NATCase("eim-apdf", "eim-apdf", "udp", "drop", loss: 5, "srflx through two EIM NATs, lossy"),
        NATCase("edm", "none", "tcp", "answer", "srflx: EDM listen side, public peer"),
        NATCase("edm", "none", "udp", "drop", loss: 5, "srflx: EDM listen side, public peer, lossy"),
        // Relayed: EDM on one side and a NAT on the other, or both EDM.
        NATCase("eim-apdf", "edm", "tcp", "drop", "relay: EDM behind the exposed side"),
        NATCase("edm", "eim-apdf", "tcp", "answer", loss: 5, "relay: EDM behind the listen side, lossy"),
        NATCase("edm", "edm", "tcp", "answer", "relay: EDM/EDM"),
        NATCase("edm", "edm", "tcp", "drop", loss: 5, "relay: EDM/EDM, lossy"),
        NATCase("eim-apdf", "edm", "udp", "answer", "relay, UDP: EDM behind the exposed side"),
        NATCase("edm", "eim-apdf", "udp", "drop", "relay, UDP: EDM behind the listen side"),
        NATCase("edm", "edm", "udp", "answer", loss: 5, "relay, UDP: EDM/EDM, lossy"),
        // Both peers on one LAN behind one NAT without hairpin: direct to the host candidate.
        NATCase("eim-apdf", "eim-apdf", "tcp", "answer", topology: "lan", "host candidate behind one EIM NAT"),
        NATCase("edm", "edm", "tcp", "drop", topology: "lan", "host candidate behind one EDM NAT"),
        NATCase("eim-apdf", "eim-apdf", "udp", "answer", topology: "lan", "UDP announces no host candidates: relay"),
        // Two homes with the same private address behind one carrier-grade NAT: relayed, never
        // connected to the own address the peer announces.
        NATCase("eim-apdf", "eim-apdf", "tcp", "answer", topology: "cgnat", "relay behind a CGNAT, same home addresses"),
        NATCase("eim-apdf", "eim-apdf", "tcp", "drop", topology: "cgnat", "relay behind a dropping CGNAT"),
        NATCase("edm", "eim-apdf", "tcp", "answer", topology: "cgnat", "relay behind a CGNAT, one home EDM"),
        NATCase("eim-apdf", "eim-apdf", "udp", "drop", topology: "cgnat", "relay, UDP, behind a CGNAT"),
        // Without the relay, a pairing with no direct path fails cleanly: said in the log within
        // the punch time-out, nothing hung or spinning (the TCP client is held until the signal
        // time-out, 30 s, in case a later attempt works).
        NATCase("edm", "edm", "udp", "drop", relay: "never", "no direct path, relay off: fails cleanly"),
        NATCase("eim-apdf", "edm", "tcp", "answer", relay: "never", "no direct path, relay off: fails cleanly"),
    ]

    /// Two answering EIM NATs over TCP: each side's full SYN is reset by the other's router unless
    /// the two cross within microseconds; the receiver's low-TTL opening SYNs let the initiator's
    /// SYN through (docs/NATLAB.md, "Two answering EIM NATs over TCP"). Run apart, with its own
    /// message, as it once went relayed in about a third of runs.
    static let answeringEIMPair = NATCase("eim-apdf", "eim-apdf", "tcp", "answer", "srflx through two answering EIM NATs")

    /// nil when the lab can run, else why not; evaluated (and printed) once per run.
    static let skipReason: String? = {
        let reason = probe()
        if let reason { print("NAT lab skipped: \(reason)") }
        return reason
    }()

    static var available: Bool { skipReason == nil }

    private static func probe() -> String? {
        guard FileManager.default.fileExists(atPath: script) else { return "\(script) is missing" }
        guard let result = try? run(["check", "--agent", agent], timeout: 30) else { return "cannot run bash" }
        if result.status == 0 { return nil }
        let first = result.output.split(separator: "\n").first.map(String.init)
        return first ?? "natlab.sh check failed (exit \(result.status))"
    }

    /// Runs one case; its RESULT line's fields, and the whole output.
    static func runCase(_ labCase: NATCase) async throws -> (fields: [String: String], line: Substring?, status: Int32, output: String) {
        let result = try await runAsync(labCase.arguments + ["--punch-timeout", String(punchTimeout), "--agent", agent], timeout: 100)
        let line = result.output.split(separator: "\n").first { $0.hasPrefix("RESULT ") }
        return (fields(result.output, tag: "RESULT") ?? [:], line, result.status, result.output)
    }

    /// The key=value fields of the first line that starts with `tag` and a space.
    static func fields(_ output: String, tag: String) -> [String: String]? {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix(tag + " ") }) else { return nil }
        return Dictionary(
            line.split(separator: " ").compactMap { token -> (String, String)? in
                let parts = token.split(separator: "=", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
            },
            uniquingKeysWith: { first, _ in first })
    }

    /// Runs natlab.sh; output goes to a file, so a chatty case cannot fill a pipe and stall.
    /// The same, waiting without blocking a thread of Swift's small cooperative pool, so the
    /// other suites running meanwhile are not stalled for the length of a case.
    static func runAsync(_ arguments: [String], timeout: TimeInterval, prefix: String = runPrefix) async throws -> (status: Int32, output: String) {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try run(arguments, timeout: timeout, prefix: prefix) })
            }
        }
    }

    /// `prefix` names the namespaces: the run's own by default; the fault checks use theirs.
    static func run(_ arguments: [String], timeout: TimeInterval, prefix: String = runPrefix) throws -> (status: Int32, output: String) {
        let outURL = FileManager.default.temporaryDirectory.appendingPathComponent("natlab-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outURL) }
        let handle = try FileHandle(forWritingTo: outURL)
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script] + arguments
        // Names and logs of this run's own, so a second run on the machine (another checkout's
        // tests, a soak) neither tears this one's namespaces down nor mixes its logs in.
        process.environment = ProcessInfo.processInfo.environment.merging([
            "NATLAB_PREFIX": prefix, "NATLAB_LOGDIR": NATLab.runLogDirectory,
        ]) { _, ours in ours }
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The script bounds every wait itself; this is the backstop. SIGTERM runs its cleanup trap.
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if process.isRunning {
            process.terminate()
            let grace = Date().addingTimeInterval(10)
            while process.isRunning && Date() < grace { Thread.sleep(forTimeInterval: 0.1) }
        }
        if process.isRunning { return (-1, "natlab.sh did not stop within \(Int(timeout)) s + 10 s grace") }
        let output = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        return (process.terminationStatus, output)
    }
}

// Namespaces and the lab's addresses are global to the machine: one case at a time.
// Skips as a whole (one "NAT lab skipped: ..." line) without root, namespaces or a built agent.
@Suite("NAT lab", .serialized, .enabled(if: NATLab.available, "needs root, network namespaces and a built stunturn-agent"))
struct NATLabTests {
    @Test("Forward through a NAT pairing, on the expected path", .timeLimit(.minutes(2)), arguments: NATLab.ciCases)
    func pairing(_ labCase: NATCase) async throws {
        let result = try await NATLab.runCase(labCase)
        #expect(result.line != nil, "no RESULT line from natlab.sh:\n\(result.output)")
        #expect(result.fields["expected"] == labCase.expected, "script and test disagree on the expected outcome")
        let outcome = result.fields["outcome"]
        #expect(Expectation.matches(outcome, labCase.expected),
                "\(labCase.testDescription) (\(labCase.why)): expected \(labCase.expected):\n\(result.output)")
        if Expectation.matches(outcome, labCase.expected) {
            #expect(result.status == 0, "natlab.sh exit \(result.status):\n\(result.output)")
        }
    }

    @Test("Two answering EIM NATs over TCP go direct", .timeLimit(.minutes(2)))
    func answeringEIMPair() async throws {
        let labCase = NATLab.answeringEIMPair
        var result = try await NATLab.runCase(labCase)
        if result.fields["outcome"] == "relay" {
            // One more run before failing: a loaded 2-core machine can delay a SYN past the
            // receiver's opening (docs/NATLAB.md, "Two answering EIM NATs over TCP"); twice in a
            // row is a defect.
            print("answering EIM pair: relayed on the first run, running it once more")
            result = try await NATLab.runCase(labCase)
        }
        #expect(result.line != nil, "no RESULT line from natlab.sh:\n\(result.output)")
        let outcome = result.fields["outcome"]
        #expect(outcome == "direct-srflx",
                "\(labCase.testDescription): \(outcome == "relay" ? "relayed: the punch was not up within relay_after" : "outcome \(outcome ?? "none")"):\n\(result.output)")
        if outcome == "direct-srflx" {
            #expect(result.status == 0, "natlab.sh exit \(result.status):\n\(result.output)")
        }
    }
}
