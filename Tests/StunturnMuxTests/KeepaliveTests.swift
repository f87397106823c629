import StunturnMux
import Testing

@Suite struct KeepaliveTests {
    @Test func answersMeasureTheRoundTripAndPingsFollowTheInterval() {
        var keepalive = Keepalive(interval: .seconds(15))
        let start = ContinuousClock.now
        #expect(keepalive.pingDue(at: start))
        keepalive.sent(1, at: start)
        #expect(keepalive.answered(1, at: start + .milliseconds(42)) == .milliseconds(42))
        #expect(keepalive.roundTrip == .milliseconds(42))
        #expect(!keepalive.pingDue(at: start + .seconds(14)))
        #expect(keepalive.pingDue(at: start + .seconds(15)))
        #expect(keepalive.answered(99, at: start + .seconds(1)) == nil, "an answer to no ping measured something")
    }

    @Test func theLowestRoundTripIsKeptBesideTheLast() {
        var keepalive = Keepalive(interval: .seconds(15))
        var now = ContinuousClock.now
        // An idle path, then pings that waited behind a bulk stream's queue.
        for (value, rtt) in [(1, 3), (2, 1), (3, 9), (4, 12)] as [(UInt32, Int)] {
            keepalive.sent(value, at: now)
            keepalive.answered(value, at: now + .milliseconds(rtt))
            now += .seconds(15)
        }
        #expect(keepalive.roundTrip == .milliseconds(12))
        #expect(keepalive.lowestRoundTrip == .milliseconds(1))
        // Nearly ten minutes on, the path's round trip has risen for good: the answers older
        // than ten minutes are forgotten, the 12 ms one not yet; ten minutes later, it is too.
        now += Keepalive.lowestRoundTripMemory - .seconds(20)
        keepalive.sent(5, at: now)
        keepalive.answered(5, at: now + .milliseconds(30))
        #expect(keepalive.lowestRoundTrip == .milliseconds(12))
        now += Keepalive.lowestRoundTripMemory - .seconds(1)
        keepalive.sent(6, at: now)
        keepalive.answered(6, at: now + .milliseconds(40))
        #expect(keepalive.lowestRoundTrip == .milliseconds(30))
    }

    @Test func anUnansweredPingIsFollowedByProbesAndThePeerIsGoneSecondsLater() {
        var keepalive = Keepalive(interval: .seconds(15), allowedMisses: 3)
        let start = ContinuousClock.now
        keepalive.sent(0, at: start)
        keepalive.answered(0, at: start + .milliseconds(20))
        keepalive.heard(at: start + .milliseconds(20))
        // The path dies after that answer. The next ping is due at 15 s; unanswered, probes
        // follow a second apart (four round trips is less than a second here).
        #expect(keepalive.probeTime == .seconds(1))
        #expect(!keepalive.pingDue(at: start + .seconds(14)))
        keepalive.sent(1, at: start + .seconds(15))
        #expect(!keepalive.pingDue(at: start + .milliseconds(15_500)))
        #expect(keepalive.pingDue(at: start + .seconds(16)))
        #expect(keepalive.probing(at: start + .seconds(16)))
        keepalive.sent(2, at: start + .seconds(16))
        keepalive.sent(3, at: start + .seconds(17))
        #expect(!keepalive.peerGone(at: start + .milliseconds(17_500)))
        // Three unanswered, the last for a probe time, and silence for an interval: gone at 18 s,
        // where three whole intervals would have taken until 45 s and more.
        #expect(keepalive.peerGone(at: start + .seconds(18)))
    }

    @Test func aPeerThatSendsDataIsNotGoneWhileItsPongIsLate() {
        var keepalive = Keepalive(interval: .seconds(15), allowedMisses: 3)
        let start = ContinuousClock.now
        for i in 0..<3 { keepalive.sent(UInt32(i), at: start + .seconds(i)) }
        // Bytes keep coming (a bulk transfer the pongs wait behind).
        keepalive.heard(at: start + .seconds(10))
        #expect(!keepalive.peerGone(at: start + .seconds(20)))
        #expect(keepalive.peerGone(at: start + .seconds(25)))
    }

    @Test func oneLateAnswerClearsTheOlderPingsToo() {
        var keepalive = Keepalive(interval: .seconds(15), allowedMisses: 3)
        let start = ContinuousClock.now
        for i in 0..<3 { keepalive.sent(UInt32(i), at: start + .seconds(15) * i) }
        keepalive.answered(2, at: start + .seconds(44))
        #expect(!keepalive.peerGone(at: start + .seconds(100)))
    }
}
