import Foundation
import Testing

/// natlab.sh's idle and rebind checks. Their namespaces carry a prefix of their own, so they
/// neither tear down nor wait for the pairing cases, which may run at the same time.
enum NATFaultLab {
    static let prefix = "stf\(getpid() % 100_000)-"

    static let hasConntrack: Bool = {
        ["/usr/sbin/conntrack", "/sbin/conntrack", "/usr/bin/conntrack"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Runs natlab.sh with the prefix.
    static func run(_ arguments: [String], timeout: TimeInterval) async throws -> (status: Int32, output: String) {
        try await NATLab.runAsync(arguments, timeout: timeout, prefix: prefix)
    }
}

// One check at a time: both use the same namespaces. About 2.5 minutes together.
@Suite("NAT lab: idle time-outs and rebinding", .serialized,
       .enabled(if: NATLab.available, "needs root, network namespaces and a built stunturn-agent"))
struct NATFaultTests {
    /// The routers forget a UDP mapping after 30 s and an established TCP one after 60 s; the
    /// agents' keepalives (15 s) must hold them through 90 s without traffic.
    @Test("After 90 s idle behind 30 s UDP and 60 s TCP conntrack time-outs, the same UDP flow and a new TCP connection echo within 2 s",
          .timeLimit(.minutes(4)))
    func idleTimeouts() async throws {
        let result = try await NATFaultLab.run(["idle", "--agent", NATLab.agent, "--idle", "90", "--limit", "2"], timeout: 200)
        let fields = try #require(NATLab.fields(result.output, tag: "IDLE"), "no IDLE line from natlab.sh:\n\(result.output)")
        #expect(fields["conntrack_udp"] == "30s" && fields["conntrack_tcp_established"] == "60s")
        #expect(fields["udp"] == "ok", "the UDP client's second datagram got no echo within 2 s:\n\(result.output)")
        #expect(fields["tcp"] == "ok", "a new TCP connection got no echo within 2 s:\n\(result.output)")
        // One flow: the keepalives held its mappings, so the pause did not end it.
        #expect(fields["udp_flows"] == "1", "the UDP flow was set up more than once:\n\(result.output)")
        #expect(result.status == 0, "natlab.sh exit \(result.status):\n\(result.output)")
    }

    /// Both routers lose every mapping at once, as after a NAT reboot or a mapping time-out under
    /// load. The connection open through the forward may be reset but never truncated silently
    /// (its echo is checked byte by byte), and new connections must work again within 20 s.
    @Test("After conntrack -F on both routers the open connection survives or is reset, and new connections work within 20 s",
          .timeLimit(.minutes(3)), .enabled(if: NATFaultLab.hasConntrack, "needs the conntrack tool"))
    func rebinding() async throws {
        let result = try await NATFaultLab.run(["rebind", "--agent", NATLab.agent, "--limit", "20"], timeout: 150)
        let fields = try #require(NATLab.fields(result.output, tag: "REBIND"), "no REBIND line from natlab.sh:\n\(result.output)")
        let open = fields["open_connection"] ?? "none"
        #expect(open == "survived" || open == "reset", "the open connection was \(open):\n\(result.output)")
        let seconds = Double(fields["new_connections_s"] ?? "") ?? .infinity
        #expect(seconds <= 20, "new connections worked again only after \(fields["new_connections_s"] ?? "-") s:\n\(result.output)")
        #expect(result.status == 0, "natlab.sh exit \(result.status):\n\(result.output)")
    }
}
