import StunturnMux
import Testing

@Suite struct MuxFrameCodecTests {
    /// Frames and their exact bytes.
    static let table: [(MuxFrame, [UInt8])] = [
        (.data(1, [0xAA, 0xBB], flags: .syn), [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xAA, 0xBB]),
        (.data(2, []), [0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]),
        (.data(0x0102_0304, [7], flags: [.fin]), [0, 0, 0, 4, 1, 2, 3, 4, 0, 0, 0, 1, 7]),
        (.windowUpdate(3, delta: 262_144, flags: .ack), [0, 1, 0, 2, 0, 0, 0, 3, 0, 4, 0, 0]),
        (.windowUpdate(5, delta: 0, flags: .rst), [0, 1, 0, 8, 0, 0, 0, 5, 0, 0, 0, 0]),
        (.ping(0xDEAD_BEEF), [0, 2, 0, 1, 0, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF]),
        (.ping(7, answer: true), [0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7]),
        (.goAway(.protocolError), [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    ]

    @Test func framesEncodeByteForByte() {
        for (frame, bytes) in Self.table {
            #expect(frame.encoded() == bytes, "\(frame)")
        }
    }

    @Test(arguments: [1, 2, 5, 13, 1000])
    func framesDecodeHoweverTheStreamIsChunked(chunk: Int) throws {
        let wire = Self.table.flatMap(\.1)
        var decoder = MuxFrameDecoder()
        var frames: [MuxFrame] = []
        var offset = 0
        while offset < wire.count {
            let end = min(wire.count, offset + chunk)
            frames += try decoder.decode(wire[offset..<end])
            offset = end
        }
        #expect(frames == Self.table.map(\.0))
        #expect(decoder.buffered == 0)
    }

    @Test func aFrameThatIsNotWholeYetIsKept() throws {
        var decoder = MuxFrameDecoder()
        let bytes = MuxFrame.data(9, [1, 2, 3]).encoded()
        #expect(try decoder.decode(bytes.dropLast()) == [])
        #expect(decoder.buffered == bytes.count - 1)
        #expect(try decoder.decode(bytes.suffix(1)) == [.data(9, [1, 2, 3])])
    }

    @Test func hostileHeadersAreRefusedWithTheirReason() {
        let cases: [([UInt8], MuxError.Code)] = [
            ([1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], .unsupportedVersion),
            ([0, 9, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], .unknownType),
            // 16 MiB of data announced: refused at the header, before any of it is held.
            ([0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0], .frameTooLarge),
            ([0, 2, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0], .badStreamID),
            ([0, 3, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0], .badStreamID),
        ]
        for (bytes, code) in cases {
            var decoder = MuxFrameDecoder()
            do {
                _ = try decoder.decode(bytes)
                Issue.record("\(bytes) was accepted")
            } catch {
                #expect(error.code == code, "\(bytes): \(error)")
            }
        }
    }
}

@Suite struct FlowControlTests {
    @Test func aPeerThatSendsPastTheWindowIsRefused() throws {
        var window = ReceiveWindow()
        try window.received(ReceiveWindow.initial - 1)
        try window.received(1)
        #expect(window.credit == 0)
        #expect(throws: MuxError.self) { try window.received(1) }
    }

    @Test func theUpdateGoesOutAtHalfTheWindowNotAtZero() throws {
        var window = ReceiveWindow()
        let now = ContinuousClock.now
        try window.received(ReceiveWindow.initial)
        #expect(window.consumed(ReceiveWindow.initial / 2 - 1, now: now, rtt: nil) == nil)
        let delta = window.consumed(1, now: now, rtt: nil)
        #expect(delta == UInt32(ReceiveWindow.initial / 2))
        #expect(window.credit == ReceiveWindow.initial / 2)
        #expect(window.consumedSinceUpdate == 0)
    }

    @Test func theWindowGrowsWhileItIsWhatLimitsTheStreamAndStopsAtSixteenMiB() throws {
        var window = ReceiveWindow()
        var now = ContinuousClock.now
        let rtt = Duration.milliseconds(50)
        var sizes: [Int] = []
        for _ in 0..<12 {
            // The reader takes each half-window within one round trip: the window is the limit.
            let half = window.size / 2
            try window.received(half)
            _ = window.consumed(half, now: now, rtt: rtt)
            sizes.append(window.size)
            now += .milliseconds(10)
        }
        #expect(sizes.first == ReceiveWindow.initial, "the first update has nothing to compare with")
        #expect(sizes.last == ReceiveWindow.maximum)
        #expect(sizes == sizes.sorted())
        #expect(sizes.allSatisfy { $0 <= ReceiveWindow.maximum })
    }

    /// Where a reader that takes `rate` bytes a second settles on a path of `rtt`: at the window
    /// the path needs (about four times rate x round trip, at most 16 MiB), not beyond it, where
    /// the rest would only wait in the tunnel in front of other streams.
    @Test(arguments: [
        // loopback: a ping answers in 40 us, counted as 250 us
        (rtt: Duration.microseconds(40), megabytesPerSecond: 1_200, size: 2 << 20),
        (rtt: Duration.microseconds(40), megabytesPerSecond: 100, size: 256 << 10),
        // a LAN
        (rtt: Duration.microseconds(500), megabytesPerSecond: 110, size: 256 << 10),
        (rtt: Duration.microseconds(500), megabytesPerSecond: 1_100, size: 4 << 20),
        // the Internet
        (rtt: Duration.milliseconds(20), megabytesPerSecond: 12, size: 1 << 20),
        (rtt: Duration.milliseconds(40), megabytesPerSecond: 110, size: 16 << 20),
    ])
    func theWindowSettlesWhereThePathNeedsIt(rtt: Duration, megabytesPerSecond: Int, size: Int) throws {
        var window = ReceiveWindow()
        var now = ContinuousClock.now
        for _ in 0..<40 {
            let half = window.size / 2
            try window.received(half)
            now += .nanoseconds(Int64(half) * 1_000 / Int64(megabytesPerSecond))
            _ = window.consumed(half, now: now, rtt: rtt)
        }
        #expect(window.size == size)
    }

    @Test func aSlowReaderDoesNotGrowItsWindow() throws {
        var window = ReceiveWindow()
        var now = ContinuousClock.now
        for _ in 0..<10 {
            let half = window.size / 2
            try window.received(half)
            _ = window.consumed(half, now: now, rtt: .milliseconds(50))
            now += .seconds(1)  // far slower than the round trip: the reader is the limit
        }
        #expect(window.size == ReceiveWindow.initial)
    }

    @Test func windowsAreIndependentSoOneStoppedReaderStallsOnlyItsOwnStream() throws {
        var stopped = SendWindow()
        var flowing = SendWindow()
        var receiverOfFlowing = ReceiveWindow()
        // The stopped stream's reader takes nothing: its sender runs out of credit and waits.
        #expect(stopped.take(upTo: ReceiveWindow.initial) == ReceiveWindow.initial)
        #expect(stopped.take(upTo: 1) == 0)
        // The other stream keeps flowing on its own window and updates.
        let now = ContinuousClock.now
        for _ in 0..<8 {
            let sent = flowing.take(upTo: 64 * 1024)
            #expect(sent == 64 * 1024)
            try receiverOfFlowing.received(sent)
            if let delta = receiverOfFlowing.consumed(sent, now: now, rtt: nil) { try flowing.grant(delta) }
        }
        #expect(stopped.take(upTo: 1) == 0)
    }

    @Test func aWindowUpdatePastFourGiBIsRefused() throws {
        var window = SendWindow(initial: Int(UInt32.max) - 10)
        try window.grant(10)
        #expect(throws: MuxError.self) { try window.grant(1) }
    }
}

@Suite struct RoundRobinTests {
    @Test func readyStreamsAreServedInTurn() {
        var queue = RoundRobin<UInt32>()
        for id: UInt32 in [1, 3, 5] { queue.markReady(id) }
        queue.markReady(1)  // already waiting: not queued twice
        var served: [UInt32] = []
        // Stream 1 (bulk) always has more; 3 and 5 send once each.
        for _ in 0..<6 {
            guard let id = queue.next() else { break }
            served.append(id)
            if id == 1 { queue.markReady(1) }
        }
        #expect(served == [1, 3, 5, 1, 1, 1])
    }

    @Test func anInteractiveStreamWaitsAtMostOneTurnBehindABulkOne() {
        var queue = RoundRobin<UInt32>()
        queue.markReady(1)
        var waited: [Int] = []
        for round in 0..<1000 {
            if round % 10 == 0 { queue.markReady(3) }
            var turns = 0
            while let id = queue.next() {
                turns += 1
                if id == 3 { waited.append(turns - 1); break }
                queue.markReady(1)
                if turns > 2 { break }
            }
        }
        #expect(!waited.isEmpty)
        #expect(waited.allSatisfy { $0 <= 1 }, "an interactive frame waited \(waited.max() ?? 0) bulk frames")
    }

    @Test func removedStreamsAreNotServed() {
        var queue = RoundRobin<UInt32>()
        queue.markReady(1)
        queue.markReady(2)
        queue.remove(1)
        #expect(queue.next() == 2)
        #expect(queue.next() == nil)
        #expect(queue.isEmpty)
    }
}
