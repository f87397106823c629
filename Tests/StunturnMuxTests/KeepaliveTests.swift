import StunturnMux
import Testing

@Suite struct KeepaliveTests {
    @Test func answersMeasureTheRoundTripAndPingsFollowTheInterval() {
        var keepalive = Keepalive(interval: .seconds(15))
        let start = ContinuousClock.now
        #expect(keepalive.pingDue(at: start))
        keepalive.sent(1, at: start)
        #expect(!keepalive.pingDue(at: start + .seconds(14)))
        #expect(keepalive.pingDue(at: start + .seconds(15)))
        #expect(keepalive.answered(1, at: start + .milliseconds(42)) == .milliseconds(42))
        #expect(keepalive.roundTrip == .milliseconds(42))
        #expect(keepalive.answered(99, at: start + .seconds(1)) == nil, "an answer to no ping measured something")
    }

    @Test func threeUnansweredPingsMeanThePeerIsGone() {
        var keepalive = Keepalive(interval: .seconds(15), allowedMisses: 3)
        let start = ContinuousClock.now
        for i in 0..<3 { keepalive.sent(UInt32(i), at: start + .seconds(15) * i) }
        // The third ping has not had its interval yet: two misses.
        #expect(!keepalive.peerGone(at: start + .seconds(31)))
        #expect(keepalive.peerGone(at: start + .seconds(45)))
    }

    @Test func oneLateAnswerClearsTheOlderPingsToo() {
        var keepalive = Keepalive(interval: .seconds(15), allowedMisses: 3)
        let start = ContinuousClock.now
        for i in 0..<3 { keepalive.sent(UInt32(i), at: start + .seconds(15) * i) }
        keepalive.answered(2, at: start + .seconds(44))
        #expect(!keepalive.peerGone(at: start + .seconds(100)))
    }
}
