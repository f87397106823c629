import Foundation
import Testing

/// One lab case: the NAT in front of the listen side (a) and of the exposed side (b), and the path.
struct NATCase: Sendable, CustomTestStringConvertible {
    let natA: String
    let natB: String
    let proto: String
    let router: String
    let loss: Int

    init(_ natA: String, _ natB: String, _ proto: String, _ router: String, loss: Int = 0) {
        self.natA = natA
        self.natB = natB
        self.proto = proto
        self.router = router
        self.loss = loss
    }

    /// An EDM side sends from a port nobody announced; only a NAT-less peer lets that in (see docs/NATLAB.md).
    var expected: String {
        let blocked = (natA == "edm" && natB != "none") || (natB == "edm" && natA != "none")
        return blocked ? "fails-cleanly" : "works"
    }

    var testDescription: String { "\(natA)/\(natB) \(proto) router=\(router) loss=\(loss)%" }
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
    /// Short, so the cases that must fail do so quickly; a working punch takes well under a second here.
    static let punchTimeout = 6

    /// The whole matrix: every pairing of the NAT kinds, TCP and UDP, with and without 5 % loss,
    /// with dropping and with answering routers (72 cases, about six minutes on two cores).
    static let ciCases: [NATCase] = {
        let kinds = ["none", "eim-apdf", "edm"]
        var cases: [NATCase] = []
        for a in kinds {
            for b in kinds {
                for router in ["drop", "answer"] {
                    for proto in ["tcp", "udp"] {
                        for loss in [0, 5] { cases.append(NATCase(a, b, proto, router, loss: loss)) }
                    }
                }
            }
        }
        return cases
    }()

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

    /// Runs natlab.sh; output goes to a file, so a chatty case cannot fill a pipe and stall.
    /// The same, waiting without blocking a thread of Swift's small cooperative pool, so the
    /// other suites running meanwhile are not stalled for the length of a case.
    static func runAsync(_ arguments: [String], timeout: TimeInterval) async throws -> (status: Int32, output: String) {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try run(arguments, timeout: timeout) })
            }
        }
    }

    static func run(_ arguments: [String], timeout: TimeInterval) throws -> (status: Int32, output: String) {
        let outURL = FileManager.default.temporaryDirectory.appendingPathComponent("natlab-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outURL) }
        let handle = try FileHandle(forWritingTo: outURL)
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script] + arguments
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
    @Test("Forward through a NAT pairing", .timeLimit(.minutes(2)), arguments: NATLab.ciCases)
    func pairing(_ labCase: NATCase) async throws {
        let result = try await NATLab.runAsync([
            "case", "--nat-a", labCase.natA, "--nat-b", labCase.natB, "--proto", labCase.proto,
            "--router", labCase.router, "--loss", String(labCase.loss),
            "--punch-timeout", String(NATLab.punchTimeout), "--agent", NATLab.agent,
        ], timeout: 100)
        let line = result.output.split(separator: "\n").first { $0.hasPrefix("RESULT ") }
        let fields = Dictionary(
            (line ?? "").split(separator: " ").compactMap { token -> (String, String)? in
                let parts = token.split(separator: "=", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
            },
            uniquingKeysWith: { $1 })
        #expect(line != nil, "no RESULT line from natlab.sh:\n\(result.output)")
        #expect(fields["expected"] == labCase.expected, "script and test disagree on the expected outcome")
        #expect(fields["outcome"] == labCase.expected, "\(labCase.testDescription):\n\(result.output)")
        if fields["outcome"] == labCase.expected {
            #expect(result.status == 0, "natlab.sh exit \(result.status):\n\(result.output)")
        }
    }
}
