import Foundation
import Testing
@testable import StunturnSignaling

@Suite struct SignalMessagesTests {
    // Bytes exactly as the original Go client and server put them on the wire (encoding/json, field order, newline).
    @Test(arguments: [
        (ClientHello(key: "k1", targetIP: "1.2.3.4", transport: "tcp"),
         #"{"uuid":"k1","target_ip":"1.2.3.4","protocol":"tcp","address":""}"# + "\n"),
        (ClientHello(key: "k1", transport: "", address: "5.6.7.8:9"),
         #"{"uuid":"k1","target_ip":"","protocol":"","address":"5.6.7.8:9"}"# + "\n"),
        (ClientHello(key: "a<b>&\"\\\n", transport: "udp"),
         #"{"uuid":"a\u003cb\u003e\u0026\"\\\n","target_ip":"","protocol":"udp","address":""}"# + "\n"),
        (ClientHello(key: "k", transport: "tcp", role: .initiator, wait: nil),
         #"{"uuid":"k","target_ip":"","protocol":"tcp","address":"","role":"initiator"}"# + "\n"),
        (ClientHello(key: "k", transport: "", role: .receiver, wait: 25),
         #"{"uuid":"k","target_ip":"","protocol":"","address":"","role":"receiver","wait":25}"# + "\n"),
    ])
    func helloEncodesLikeTheOriginal(hello: ClientHello, expected: String) throws {
        #expect(hello.encoded() == Array(expected.utf8))
        #expect(try ClientHello.decode(hello.encoded()) == hello)
    }

    @Test(arguments: [
        (ServerReply(transport: "tcp", peerAddress: "1.2.3.4:5"), #"{"protocol":"tcp","peer_address":"1.2.3.4:5"}"# + "\n"),
        (ServerReply(transport: "udp", peerAddress: "[::1]:7"), #"{"protocol":"udp","peer_address":"[::1]:7"}"# + "\n"),
        (ServerReply.failure("UUID already in use"), #"{"protocol":"","error":"UUID already in use"}"# + "\n"),
        (ServerReply.failure(ServerErrorText.noInitiator), #"{"protocol":"","error":"Receiver with that UUID not found"}"# + "\n"),
    ])
    func replyEncodesLikeTheOriginal(reply: ServerReply, expected: String) throws {
        #expect(reply.encoded() == Array(expected.utf8))
        #expect(try ServerReply.decode(reply.encoded()) == reply)
    }

    @Test func helloDecodesWithoutNewlineAndIgnoresUnknownFields() throws {
        let hello = try ClientHello.decode(Array(#"{"uuid":"x","target_ip":"","protocol":"udp","address":"1.1.1.1:2","extra":true}"#.utf8))
        #expect(hello.key == "x")
        #expect(hello.effectiveRole == .receiver)
        #expect(hello.address == "1.1.1.1:2")
    }

    @Test(arguments: [#"{"uuid":5}"#, "[1,2]", "not json", #"{"uuid":"x","role":"boss"}"#])
    func malformedHellosThrow(text: String) {
        #expect(throws: SignalingError.self) { try ClientHello.decode(Array(text.utf8)) }
    }

    @Test(arguments: [
        (#"{"a":"}"}"#, JSONObjectScanner.Result.complete(end: 9)),
        (#"  {"a":{"b":"\"}"}}xyz"#, .complete(end: 19)),
        (#"{"a":"#, .incomplete),
        ("", .incomplete),
        ("GET / HTTP/1.1", .invalid),
        ("}", .invalid),
    ])
    func scannerFindsTheEndOfTheObject(text: String, expected: JSONObjectScanner.Result) {
        #expect(JSONObjectScanner.scan(Array(text.utf8)) == expected)
    }

    /// The hand-written parser for common hellos must agree with Foundation's decoder wherever it
    /// answers, and step aside (nil) for everything it does not handle.
    @Test func flatHelloParserAgreesWithJSONDecoder() throws {
        let handled = [
            #"{"uuid":"k1","target_ip":"1.2.3.4","protocol":"tcp","address":""}"# + "\n",
            #"{"uuid":"k1","target_ip":"","protocol":"","address":"5.6.7.8:9","role":"receiver","wait":25}"#,
            #" { "uuid" : "ключ" , "wait" : -3 , "extra" : "x" } "#,
            #"{"wait":0}"#, #"{}"#, #"{"uuid":""}"#,
        ]
        let declined = [
            #"{"uuid":"a\"b"}"#, #"{"uuid":"k","uuid":"j"}"#, #"{"uuid":1}"#, #"{"wait":"5"}"#, #"{"wait":05}"#,
            #"{"wait":1.5}"#, #"{"uuid":"k","x":{"y":1}}"#, #"{"uuid":"k",}"#, #"{"uuid":"k"} x"#, #"["uuid"]"#,
            #"{"uuid":"k"#, #"{"uuid":"tab"# + "\t" + #"here"}"#, #"{"x":true}"#, #"{"x":null}"#,
        ]
        for text in handled {
            let bytes = Array(text.utf8)
            let flat = try #require(HelloWire.parseFlat(bytes), "should parse: \(text)")
            #expect(flat == (try JSONDecoder().decode(HelloWire.self, from: Data(bytes))), "\(text)")
        }
        for text in declined {
            #expect(HelloWire.parseFlat(Array(text.utf8)) == nil, "should decline: \(text)")
        }
        // Invalid UTF-8 is left to the full decoder too.
        #expect(HelloWire.parseFlat(Array(#"{"uuid":""#.utf8) + [0xff, 0x22, 0x7d]) == nil)
        // And ClientHello.decode still reports what is wrong with a hello the fast path declined.
        #expect(throws: SignalingError.self) { try ClientHello.decode(Array(#"{"wait":"5"}"#.utf8)) }
        #expect(try ClientHello.decode(Array(#"{"uuid":"a\u0041"}"#.utf8)).key == "aA")
    }

    /// Found by fuzzing: a 4-byte sequence cut after 3 bytes decodes to one U+FFFD of 3 bytes, so
    /// the fast path took it (two such keys then named the same pairing) where JSONDecoder refuses.
    @Test(arguments: [[0xf0, 0x90, 0x80], [0xf0, 0x90, 0x80, 0x41], [0x61, 0xf4, 0x8f, 0xbf], [0xe0, 0x80, 0x80]] as [[UInt8]])
    func helloWithInvalidUTF8IsRefused(key: [UInt8]) {
        let bytes = Array(#"{"uuid":""#.utf8) + key + Array(#""}"#.utf8)
        #expect(HelloWire.parseFlat(bytes) == nil)
        #expect(throws: SignalingError.self) { try ClientHello.decode(bytes) }
    }
}
