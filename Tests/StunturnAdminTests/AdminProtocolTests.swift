import Foundation
import Testing
@testable import StunturnAdmin

/// One case of request framing: the bytes a client sent, whether it closed its side, what they hold.
struct FramingCase: CustomTestStringConvertible, Sendable {
    let label: String
    let bytes: [UInt8]
    let ended: Bool
    let expected: AdminProtocol.Framing

    init(_ label: String, _ text: String, ended: Bool = false, _ expected: AdminProtocol.Framing) {
        self.init(label, Array(text.utf8), ended: ended, expected)
    }

    init(_ label: String, _ bytes: [UInt8], ended: Bool = false, _ expected: AdminProtocol.Framing) {
        self.label = label
        self.bytes = bytes
        self.ended = ended
        self.expected = expected
    }

    var testDescription: String { label }
}

@Suite struct AdminProtocolTests {
    static let usage = "send one line naming a request: status, reload"

    static let framingCases: [FramingCase] = [
        FramingCase("a request line", "status\n", .request(.status)),
        FramingCase("with CRLF", "status\r\n", .request(.status)),
        FramingCase("with spaces around", "  status \n", .request(.status)),
        FramingCase("bytes after the line are ignored", "status\nmore", .request(.status)),
        FramingCase("nothing yet", "", .incomplete),
        FramingCase("half a word", "sta", .incomplete),
        FramingCase("ended without a newline", "status", ended: true, .request(.status)),
        FramingCase("ended with nothing", "", ended: true, .invalid("empty request; \(usage)")),
        FramingCase("an empty line", "\n", .invalid("empty request; \(usage)")),
        FramingCase("unknown word", "reboot\n", .invalid("unknown request 'reboot'; \(usage)")),
        FramingCase("case matters", "STATUS\n", .invalid("unknown request 'STATUS'; \(usage)")),
        FramingCase("a long unknown word is shortened", String(repeating: "x", count: 40) + "\n",
                    .invalid("unknown request '\(String(repeating: "x", count: 32))…'; \(usage)")),
        FramingCase("not UTF-8", [0xff, 0xfe, 0x0a], .invalid("the request is not UTF-8 text; \(usage)")),
        FramingCase("the longest line", String(repeating: " ", count: 250) + "status\n", .request(.status)),
        FramingCase("one byte too long, no newline", String(repeating: "s", count: 257),
                    .invalid("request longer than 256 bytes; \(usage)")),
        FramingCase("newline past the limit", String(repeating: " ", count: 251) + "status\n",
                    .invalid("request longer than 256 bytes; \(usage)")),
    ]

    @Test(arguments: framingCases)
    func framing(_ framing: FramingCase) {
        #expect(AdminProtocol.frame(framing.bytes, ended: framing.ended) == framing.expected)
    }

    @Test func aRequestIsOneLine() {
        #expect(AdminProtocol.encode(.status) == Array("status\n".utf8))
        #expect(AdminProtocol.frame(AdminProtocol.encode(.status), ended: false) == .request(.status))
    }

    @Test func errorAnswersAreOneJSONObjectAndOneNewline() throws {
        let answer = AdminProtocol.errorAnswer("unknown request 'x'; \"quoted\"\nnext line")
        #expect(answer.last == UInt8(ascii: "\n"))
        #expect(answer.dropLast().contains(UInt8(ascii: "\n")) == false)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any])
        #expect(object.keys.sorted() == ["error"])
        #expect(AdminProtocol.errorMessage(in: answer) == "unknown request 'x'; \"quoted\"\nnext line")
    }

    @Test func aStatusIsNotAnErrorAnswer() throws {
        #expect(AdminProtocol.errorMessage(in: try StatusSamples.agent.encoded()) == nil)
    }
}

/// Statuses to encode and render.
enum StatusSamples {
    static let up = ForwardStatus(
        name: "ssh", mode: "listen", transport: "tcp", local: "127.0.0.1:2222", state: "up", path: "direct", candidate: "srflx",
        peer: "198.51.100.7:41000", sessionsUp: 1, uptimeSeconds: 125, rttMs: 0.41, streams: 2, bytesIn: 1_258_291,
        bytesOut: 49_152, connections: 14, failed: 1, sessionsEstablished: 2, setupsFailed: 1, pathChanges: 3,
        lastError: "punch failed: timed out", lastErrorAgeSeconds: 3_700)
    static let down = ForwardStatus(
        name: "web-exposed", mode: "expose", transport: "tcp", local: "127.0.0.1:8080", state: "waiting for peer", path: "none",
        candidate: "", peer: "", sessionsUp: 0, uptimeSeconds: nil, rttMs: nil, streams: 0, bytesIn: 0, bytesOut: 0,
        connections: 0, failed: 0, sessionsEstablished: 0, setupsFailed: 0, pathChanges: 0, lastError: nil,
        lastErrorAgeSeconds: nil)
    static let agent = AgentStatus(pid: 4242, admin: "/run/user/1000/stunturn/agent-4242.sock", forwards: [up, down])
}

@Suite struct AgentStatusTests {
    static let forwardKeys = [
        "bytes_in", "bytes_out", "candidate", "connections", "failed", "last_error", "last_error_age_seconds", "local", "mode",
        "name", "path", "path_changes", "peer", "protocol", "punches_failed", "punches_tried", "rtt_ms", "sessions_established",
        "sessions_up", "setups_failed",
        "state", "streams", "uptime_seconds",
    ]

    @Test func theJSONHasEveryKeyWithNullsForWhatIsNotKnown() throws {
        let json = try #require(try JSONSerialization.jsonObject(with: Data(StatusSamples.agent.encoded())) as? [String: Any])
        #expect(json.keys.sorted() == ["admin", "forwards", "pid"])
        #expect(json["pid"] as? Int == 4242)
        let forwards = try #require(json["forwards"] as? [[String: Any]])
        #expect(forwards.count == 2)
        for forward in forwards { #expect(forward.keys.sorted() == Self.forwardKeys) }
        let up = forwards[0]
        #expect(up["name"] as? String == "ssh")
        #expect(up["path"] as? String == "direct")
        #expect(up["candidate"] as? String == "srflx")
        #expect(up["state"] as? String == "up")
        #expect(up["rtt_ms"] as? Double == 0.41)
        #expect(up["uptime_seconds"] as? Int == 125)
        #expect(up["bytes_in"] as? Int == 1_258_291)
        #expect(up["last_error"] as? String == "punch failed: timed out")
        let down = forwards[1]
        #expect(down["state"] as? String == "waiting for peer")
        for key in ["uptime_seconds", "rtt_ms", "last_error", "last_error_age_seconds"] {
            #expect(down[key] is NSNull, "\(key) should be null, is \(String(describing: down[key]))")
        }
    }

    @Test func decodingGivesBackWhatWasEncoded() throws {
        #expect(try AgentStatus(decoding: StatusSamples.agent.encoded()) == StatusSamples.agent)
        #expect(try AgentStatus(decoding: StatusSamples.agent.encoded(pretty: true)) == StatusSamples.agent)
    }

    @Test func theSameStatusEncodesTheSameWay() throws {
        #expect(try StatusSamples.agent.encoded() == StatusSamples.agent.encoded())
    }

    @Test func severalAgentsAreAList() throws {
        let list = AgentStatusList(agents: [StatusSamples.agent])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(list.encoded())) as? [String: Any])
        #expect((json["agents"] as? [[String: Any]])?.first?["pid"] as? Int == 4242)
    }
}

@Suite struct StatusTableTests {
    @Test func theTableAlignsItsColumns() {
        let expected = """
            agent 4242 (/run/user/1000/stunturn/agent-4242.sock), 2 forwards:
            FORWARD      MODE    STATE             PATH            PEER                   RTT     UP  STREAMS  CONNECTIONS  FAILED      IN    OUT  LAST ERROR
            ssh          listen  up                direct (srflx)  198.51.100.7:41000  0.41ms  2m05s        2           14       1  1.2MiB  48KiB  punch failed: timed out (1h01m ago)
            web-exposed  expose  waiting for peer  none            -                        -      -        0            0       0      0B     0B  -
            """
        #expect(StatusTable.render(StatusSamples.agent) == expected)
    }

    @Test func agentsAreABlankLineApart() {
        let one = StatusTable.render(StatusSamples.agent)
        #expect(StatusTable.render([StatusSamples.agent, StatusSamples.agent]) == one + "\n\n" + one)
    }

    @Test(arguments: [(0, "0B"), (1023, "1023B"), (1024, "1KiB"), (1536, "1.5KiB"), (10 * 1024 + 600, "11KiB"),
                      (5 << 20, "5MiB"), (3 << 30, "3GiB")] as [(UInt64, String)])
    func bytes(_ count: UInt64, _ text: String) {
        #expect(StatusTable.bytes(count) == text)
    }

    @Test(arguments: [(0, "0s"), (59, "59s"), (60, "1m00s"), (125, "2m05s"), (3600, "1h00m"), (3700, "1h01m"),
                      (86_400, "1d00h"), (190_000, "2d04h")])
    func durations(_ seconds: Int, _ text: String) {
        #expect(StatusTable.duration(seconds: seconds) == text)
    }

    @Test(arguments: [(nil, "-"), (0.05, "0.05ms"), (0.41, "0.41ms"), (9.994, "9.99ms"), (12.4, "12ms"), (250, "250ms"),
                      (-0.5, "-"), (-1e300, "-"), (1e300, "-"), (.infinity, "-"), (.nan, "-")]
          as [(Double?, String)])
    func roundTrips(_ milliseconds: Double?, _ text: String) {
        #expect(StatusTable.roundTrip(milliseconds) == text)
    }

    /// `status` stopped on an answer whose rtt_ms was 1e300, converting it to Int (fuzz-admin
    /// renders every answer it decodes). Whatever numbers an answer holds, the table shows.
    @Test func anAnswerWithOutlandishNumbersRenders() throws {
        var json = String(decoding: try StatusSamples.agent.encoded(), as: UTF8.self)
        json = json.replacingOccurrences(of: #""rtt_ms":0.41"#, with: #""rtt_ms":1e300"#)
            .replacingOccurrences(of: #""uptime_seconds":125"#, with: #""uptime_seconds":-9223372036854775808"#)
            .replacingOccurrences(of: #""last_error_age_seconds":3700"#, with: #""last_error_age_seconds":9223372036854775807"#)
        let status = try AgentStatus(decoding: Array(json.utf8))
        #expect(status.forwards[0].rttMs == 1e300)
        let table = StatusTable.render(status)
        #expect(table.contains("198.51.100.7:41000    -  0s"))
    }
}
