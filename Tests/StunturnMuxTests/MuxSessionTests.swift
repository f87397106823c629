import StunturnMux
import Testing

/// Two sessions joined back to back through the real encoder and decoder.
struct Pair {
    var a = MuxSession(side: .initiator)
    var b = MuxSession(side: .responder)

    /// Sends everything `a` has to send (or at most `limit` frames) through the wire format to `b`.
    static func pump(_ from: inout MuxSession, _ to: inout MuxSession, limit: Int = 10_000) throws -> (frames: [MuxFrame], events: [MuxSession.Event]) {
        var frames: [MuxFrame] = []
        var wire: [UInt8] = []
        while frames.count < limit, let frame = from.nextFrame() {
            frames.append(frame)
            frame.encode(appendingTo: &wire)
        }
        var decoder = MuxFrameDecoder()
        var events: [MuxSession.Event] = []
        for frame in try decoder.decode(wire) { events += try to.receive(frame) }
        return (frames, events)
    }

    mutating func aToB(limit: Int = 10_000) throws -> (frames: [MuxFrame], events: [MuxSession.Event]) {
        try Self.pump(&a, &b, limit: limit)
    }

    mutating func bToA(limit: Int = 10_000) throws -> (frames: [MuxFrame], events: [MuxSession.Event]) {
        try Self.pump(&b, &a, limit: limit)
    }
}

@Suite struct MuxSessionTests {
    @Test func openingCostsNoRoundTripAndEachSideHalfClosesOnItsOwn() throws {
        var pair = Pair()
        let opened = pair.a.openStream()
        let id = try #require(opened)
        #expect(id == 1)
        let written = pair.a.write(id, Array("hello".utf8))
        #expect(written)
        pair.a.finish(id)
        let first = try pair.aToB()
        // SYN, the data and the FIN in one frame: the peer has the request before any answer.
        #expect(first.frames == [.data(1, Array("hello".utf8), flags: [.syn, .fin])])
        #expect(first.events == [.opened(1), .data(1, Array("hello".utf8)), .finished(1)])
        // The responder still answers on its open half.
        let answered = pair.b.write(1, Array("yo".utf8))
        #expect(answered)
        pair.b.finish(1)
        let answer = try pair.bToA()
        #expect(answer.frames == [.data(1, Array("yo".utf8), flags: [.ack, .fin])])
        #expect(answer.events == [.data(1, Array("yo".utf8)), .finished(1)])
        #expect(pair.a.openStreams == 0 && pair.b.openStreams == 0)
    }

    @Test func streamIdsAreOddForTheInitiatorAndEvenForTheResponder() throws {
        var pair = Pair()
        let a1 = pair.a.openStream(), a2 = pair.a.openStream()
        let b1 = pair.b.openStream(), b2 = pair.b.openStream()
        #expect([a1, a2] == [1, 3])
        #expect([b1, b2] == [2, 4])
        _ = try pair.aToB()
        _ = try pair.bToA()
        #expect(pair.a.openStreams == 4 && pair.b.openStreams == 4)
    }

    @Test func aResetEndsTheStreamOnBothSidesAndTheOthersGoOn() throws {
        var pair = Pair()
        let openedBroken = pair.a.openStream(), openedOther = pair.a.openStream()
        let broken = try #require(openedBroken)
        let other = try #require(openedOther)
        _ = pair.a.write(broken, [1])
        _ = pair.a.write(other, [2])
        _ = try pair.aToB()
        pair.a.reset(broken, reason: .serviceRefused)
        _ = pair.a.write(other, [3])
        let after = try pair.aToB()
        // The reason travels in the RST's length field.
        #expect(after.events == [.reset(broken, .serviceRefused), .data(other, [3])])
        let stillOpen = pair.b.write(other, [4])
        let afterReset = pair.b.write(broken, [5])
        #expect(stillOpen)
        #expect(!afterReset, "a reset stream took data")
    }

    @Test func aSenderStopsAtTheWindowAndGoesOnAfterTheUpdateAtHalf() throws {
        var pair = Pair()
        let opened = pair.a.openStream()
        let id = try #require(opened)
        let total = 400 * 1024
        let written = pair.a.write(id, [UInt8](repeating: 7, count: total))
        #expect(written)
        let first = try pair.aToB()
        let sent = first.frames.reduce(0) { $0 + $1.payload.count }
        #expect(sent == ReceiveWindow.initial, "sent \(sent) bytes into a \(ReceiveWindow.initial)-byte window")
        let extra = pair.a.nextFrame()
        #expect(extra == nil, "a frame went out with no window left")
        // The reader takes just under half: no update yet.
        let now = ContinuousClock.now
        pair.b.consumed(id, ReceiveWindow.initial / 2 - 1, now: now, rtt: nil)
        let early = try pair.bToA()
        // Only the stream's acceptance goes back; no window update before half the window is taken.
        #expect(early.frames == [.data(id, [], flags: .ack)])
        pair.b.consumed(id, 1, now: now, rtt: nil)
        let update = try pair.bToA()
        #expect(update.frames == [.windowUpdate(id, delta: UInt32(ReceiveWindow.initial / 2))])
        // Exactly the half granted goes out; the rest waits for the next update.
        let second = try pair.aToB()
        #expect(second.frames.reduce(0) { $0 + $1.payload.count } == ReceiveWindow.initial / 2)
        #expect(total - ReceiveWindow.initial - ReceiveWindow.initial / 2 > 0)
    }

    @Test func aStreamOutOfWindowDoesNotHoldBackAnother() throws {
        var pair = Pair()
        let openedStalled = pair.a.openStream(), openedLive = pair.a.openStream()
        let stalled = try #require(openedStalled)
        let live = try #require(openedLive)
        _ = pair.a.write(stalled, [UInt8](repeating: 1, count: ReceiveWindow.initial + 1000))
        _ = try pair.aToB()
        let written = pair.a.write(live, Array("ping".utf8))
        #expect(written)
        let next = try pair.aToB()
        #expect(next.events == [.data(live, Array("ping".utf8))])
    }

    @Test func streamsWithDataTakeTurns() throws {
        var pair = Pair()
        let openedBulk = pair.a.openStream(), openedInteractive = pair.a.openStream()
        let bulk = try #require(openedBulk)
        let interactive = try #require(openedInteractive)
        _ = try pair.aToB()  // both SYNs
        _ = pair.a.write(bulk, [UInt8](repeating: 1, count: 4 * pair.a.maxFramePayload))
        _ = pair.a.write(interactive, [2])
        let frames = try pair.aToB(limit: 2).frames
        #expect(frames.map(\.streamID) == [bulk, interactive], "the interactive byte waited behind the bulk data")
    }

    @Test func streamsPastTheCapAreRefusedAndTheSessionGoesOn() throws {
        var pair = Pair()
        pair.b = MuxSession(side: .responder, maxStreams: 1)
        let openedFirst = pair.a.openStream(), openedSecond = pair.a.openStream()
        let first = try #require(openedFirst)
        let second = try #require(openedSecond)
        let opened = try pair.aToB()
        #expect(opened.events == [.opened(first)])
        let answer = try pair.bToA()
        #expect(answer.events.contains(.refused(second, .streamLimit)))
        let written = pair.a.write(first, [9])
        #expect(written)
        let delivered = try pair.aToB()
        #expect(delivered.events == [.data(first, [9])])
        // The local cap refuses locally.
        var capped = MuxSession(side: .initiator, maxStreams: 1)
        let one = capped.openStream(), two = capped.openStream()
        #expect(one != nil)
        #expect(two == nil)
    }

    @Test func pingsAreAnsweredWithTheirValue() throws {
        var pair = Pair()
        let value = pair.a.ping()
        let asked = try pair.aToB()
        let answered = try pair.bToA()
        #expect(asked.events.isEmpty)
        #expect(answered.events == [.pong(value)])
    }

    @Test func theSessionBuffersNoMoreThanItsCap() {
        var session = MuxSession(side: .initiator, maxBuffered: 1000)
        guard let id = session.openStream() else { Issue.record("no stream"); return }
        let full = session.write(id, [UInt8](repeating: 0, count: 1000))
        let over = session.write(id, [0])
        #expect(full)
        #expect(!over)
    }

    @Test func protocolViolationsEndTheSession() throws {
        var responder = MuxSession(side: .responder)
        // The initiator may not open an even stream id.
        #expect(throws: MuxError.self) { _ = try responder.receive(.data(2, [1], flags: .syn)) }
        // Data past the window.
        var b = MuxSession(side: .responder)
        _ = try b.receive(.data(1, [UInt8](repeating: 0, count: ReceiveWindow.initial), flags: .syn))
        #expect(throws: MuxError.self) { _ = try b.receive(.data(1, [0])) }
        // Data after FIN.
        var c = MuxSession(side: .responder)
        _ = try c.receive(.data(1, [1], flags: [.syn, .fin]))
        _ = c.write(1, [1])
        #expect(throws: MuxError.self) { _ = try c.receive(.data(1, [2])) }
    }
}

/// The calls a session engine uses to move payload without copying it through the state machine:
/// frames it builds itself from the window it is allowed, and payload delivered as it arrives.
@Suite struct MuxDirectPathTests {
    @Test func directFramesTakeTheWindowAndCarryTheOpeningFlags() throws {
        var session = MuxSession(side: .initiator, maxFramePayload: 64 * 1024)
        let opened = session.openStream()
        let id = try #require(opened)
        // One frame at most, within the 256 KiB window.
        #expect(session.directAllowance(id) == 64 * 1024)
        let firstFlags = session.sentDirect(id, 1000)
        let secondFlags = session.sentDirect(id, 1000)
        #expect(firstFlags == [.syn])
        #expect(secondFlags == [])
        for _ in 0..<4 { _ = session.sentDirect(id, min(session.directAllowance(id), 64 * 1024)) }
        // 2,000 + 4 x 64 KiB is past 256 KiB: what is left of the window, then nothing.
        #expect(session.directAllowance(id) == 0)
        // The SYN it carried is not sent again, and a FIN queued later goes out on its own.
        session.finish(id)
        let fin = session.nextFrame()
        let after = session.nextFrame()
        #expect(fin == .data(id, [], flags: .fin))
        #expect(after == nil)
        #expect(session.directAllowance(id) == 0, "nothing direct after the local side ended")
    }

    @Test func severalDirectFramesAtOnceTakeTheWholeWindowNoMore() throws {
        var session = MuxSession(side: .initiator, maxFramePayload: 64 * 1024)
        let opened = session.openStream()
        let id = try #require(opened)
        // One read may fill several frames: the whole 256 KiB window, not one frame's worth.
        #expect(session.directCredit(id) == ReceiveWindow.initial)
        var flags: [MuxFrame.Flags] = []
        for _ in 0..<4 { flags.append(session.sentDirect(id, 64 * 1024)) }
        #expect(flags == [[.syn], [], [], []], "the SYN rides on the first frame only")
        #expect(session.directCredit(id) == 0)
        // Bytes queued by write go first: nothing direct until they are sent.
        _ = try session.receive(.windowUpdate(id, delta: 128 * 1024))
        #expect(session.directCredit(id) == 128 * 1024)
        let accepted = session.write(id, [1, 2, 3])
        #expect(accepted)
        #expect(session.directCredit(id) == 0)
        while session.nextFrame() != nil {}
        #expect(session.directCredit(id) == 128 * 1024 - 3)
        session.finish(id)
        #expect(session.directCredit(id) == 0, "nothing direct after the local side ended")
    }

    @Test func payloadDeliveredByTheOwnerIsChargedToTheWindowAndTheFinComesAfter() throws {
        var session = MuxSession(side: .responder)
        let header = try MuxFrameDecoder.parseHeader(MuxFrame.data(1, [UInt8](repeating: 7, count: 300), flags: [.syn, .fin]).encoded().prefix(12),
                                                     maxPayload: 1 << 18)
        #expect(header.length == 300 && header.payload.isEmpty)
        // The header opens the stream, and the FIN waits for the payload.
        let opening = try session.receiveDataHeader(header)
        let ending = try session.receiveFin(1)
        #expect(opening == [.opened(1)])
        #expect(ending == [.finished(1)])
        // A header past the window is refused before its payload arrives.
        var full = MuxFrame.data(3, [], flags: .syn)
        full.length = UInt32(ReceiveWindow.initial + 1)
        var copy = session
        #expect(throws: MuxError.self) { _ = try copy.receiveDataHeader(full) }
    }

    @Test(arguments: [
        ([1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], "version 1"),
        ([0, 9, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], "unknown type 9"),
        ([0, 0, 0, 0, 0, 0, 0, 1, 0, 4, 0, 1], "262145 bytes"),
        ([0, 2, 0, 1, 0, 0, 0, 5, 0, 0, 0, 1], "on stream 5"),
    ] as [([UInt8], String)])
    func headersAreJudgedAlone(_ bytes: [UInt8], _ message: String) {
        #expect {
            _ = try MuxFrameDecoder.parseHeader(bytes, maxPayload: 1 << 18)
        } throws: { error in
            "\(error)".contains(message)
        }
    }
}

@Suite struct ReceiveBudgetTests {
    @Test func windowsGrowOnlyWithinTheSessionBudget() throws {
        // A budget of 2 MiB: two fast streams grow their windows until the sum reaches it.
        var session = MuxSession(side: .responder, receiveBudget: 2 << 20)
        let start = ContinuousClock.now
        for id in [UInt32(1), 3] {
            _ = try session.receive(.data(id, [], flags: .syn))
        }
        #expect(session.grantedWindows == 2 * ReceiveWindow.initial)
        var now = start
        for _ in 0..<200 {
            for id in [UInt32(1), 3] {
                // Each stream takes half its window right away (well within two round trips).
                now += .microseconds(10)
                var frame = MuxFrame(kind: .data, streamID: id)
                frame.length = UInt32(ReceiveWindow.initial / 2)
                _ = try session.receiveDataHeader(frame)
                session.consumed(id, ReceiveWindow.initial / 2, now: now, rtt: .milliseconds(5))
            }
        }
        #expect(session.grantedWindows <= 2 << 20, "windows grew past the budget: \(session.grantedWindows)")
        #expect(session.grantedWindows > 2 * ReceiveWindow.initial, "windows never grew")
        // Streams that end give their windows back.
        session.reset(1)
        session.reset(3)
        #expect(session.grantedWindows == 0)
    }
}
