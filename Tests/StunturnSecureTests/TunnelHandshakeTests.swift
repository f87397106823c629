import StunturnSecure
import Testing

@Suite("Tunnel handshake")
struct TunnelHandshakeTests {
    @Test(arguments: NoiseCipher.allCases)
    func roundTripProducesMatchingSessions(cipher: NoiseCipher) throws {
        let keys = TunnelKeys(accessKey: "0f8fad5b-d9cb-469f-a165-70867728950e")
        let initiator = TunnelHandshake(role: .initiator, keys: keys, cipher: cipher)
        let responder = TunnelHandshake(role: .responder, keys: keys, cipher: cipher)

        let hello = try initiator.makeHello()
        #expect(hello.count == TunnelHandshake.helloLength)
        #expect(TunnelHandshake.helloLength == 48)
        let (reply, responderSession) = try responder.respond(toHello: hello)
        #expect(reply.count == TunnelHandshake.replyLength)
        #expect(TunnelHandshake.replyLength == 48)
        let initiatorSession = try initiator.finish(reply: reply)
        #expect(initiatorSession.handshakeHash == responderSession.handshakeHash)

        // Each direction's sealer matches the other side's opener.
        var wire: [UInt8] = []
        var received: [UInt8] = []
        try initiatorSession.sealer.seal(Array("ping".utf8), appendingTo: &wire)
        try responderSession.opener.open(wire, appendingTo: &received)
        #expect(received == Array("ping".utf8))

        wire = []
        received = []
        try responderSession.sealer.seal(Array("pong".utf8), appendingTo: &wire)
        try initiatorSession.opener.open(wire, appendingTo: &received)
        #expect(received == Array("pong".utf8))
    }

    @Test func freshEphemeralKeysGiveDistinctSessions() throws {
        let first = try establishedSessions()
        let second = try establishedSessions()
        #expect(first.initiator.handshakeHash != second.initiator.handshakeHash)
    }

    @Test func responderWithWrongKeyRejectsHello() throws {
        let initiator = TunnelHandshake(role: .initiator, keys: TunnelKeys(accessKey: "right key"))
        let responder = TunnelHandshake(role: .responder, keys: TunnelKeys(accessKey: "wrong key"))
        let hello = try initiator.makeHello()
        #expect(throws: TunnelSecurityError.peerAuthenticationFailed) {
            try responder.respond(toHello: hello)
        }
    }

    @Test func initiatorWithWrongKeyRejectsReply() throws {
        // A responder holding another key answers a hello made with its own key; the reply must not
        // satisfy an initiator that holds a different key.
        let otherKeys = TunnelKeys(accessKey: "responder's key")
        let otherInitiator = TunnelHandshake(role: .initiator, keys: otherKeys)
        let responder = TunnelHandshake(role: .responder, keys: otherKeys)
        let (reply, _) = try responder.respond(toHello: try otherInitiator.makeHello())

        let initiator = TunnelHandshake(role: .initiator, keys: TunnelKeys(accessKey: "initiator's key"))
        _ = try initiator.makeHello()
        #expect(throws: TunnelSecurityError.peerAuthenticationFailed) {
            try initiator.finish(reply: reply)
        }
    }

    @Test func failureDescriptionNamesTheCause() {
        let description = TunnelSecurityError.peerAuthenticationFailed.description
        #expect(description.contains("failed authentication"))
        #expect(description.contains("wrong access key"))
    }

    @Test(arguments: [0, 5, 31, 32, 40, 47])
    func tamperedHelloIsRejected(byteIndex: Int) throws {
        let keys = TunnelKeys(accessKey: "shared")
        var hello = try TunnelHandshake(role: .initiator, keys: keys).makeHello()
        hello[byteIndex] ^= 0x01
        let responder = TunnelHandshake(role: .responder, keys: keys)
        #expect(throws: TunnelSecurityError.peerAuthenticationFailed) {
            try responder.respond(toHello: hello)
        }
    }

    @Test(arguments: [0, 31, 32, 47])
    func tamperedReplyIsRejected(byteIndex: Int) throws {
        let keys = TunnelKeys(accessKey: "shared")
        let initiator = TunnelHandshake(role: .initiator, keys: keys)
        let responder = TunnelHandshake(role: .responder, keys: keys)
        var (reply, _) = try responder.respond(toHello: try initiator.makeHello())
        reply[byteIndex] ^= 0x80
        #expect(throws: TunnelSecurityError.peerAuthenticationFailed) {
            try initiator.finish(reply: reply)
        }
    }

    @Test func mismatchedCiphersFailAuthentication() throws {
        let keys = TunnelKeys(accessKey: "shared")
        let initiator = TunnelHandshake(role: .initiator, keys: keys, cipher: .chaChaPoly)
        let responder = TunnelHandshake(role: .responder, keys: keys, cipher: .aesGCM)
        #expect(throws: TunnelSecurityError.peerAuthenticationFailed) {
            try responder.respond(toHello: try initiator.makeHello())
        }
    }

    @Test(arguments: [0, 47, 49, 96])
    func wrongLengthHelloIsRejected(length: Int) {
        let responder = TunnelHandshake(role: .responder, keys: TunnelKeys(accessKey: "shared"))
        #expect(throws: TunnelSecurityError.malformedHandshakeMessage) {
            try responder.respond(toHello: [UInt8](repeating: 7, count: length))
        }
    }

    @Test func stepsForTheOtherRoleThrow() throws {
        let keys = TunnelKeys(accessKey: "shared")
        let responder = TunnelHandshake(role: .responder, keys: keys)
        #expect(throws: TunnelSecurityError.handshakeOutOfOrder) { try responder.makeHello() }
        let initiator = TunnelHandshake(role: .initiator, keys: keys)
        #expect(throws: TunnelSecurityError.handshakeOutOfOrder) {
            try initiator.respond(toHello: [UInt8](repeating: 0, count: TunnelHandshake.helloLength))
        }
        // A second hello from the same handshake would reuse its ephemeral key.
        _ = try initiator.makeHello()
        #expect(throws: TunnelSecurityError.handshakeOutOfOrder) { try initiator.makeHello() }
    }
}
