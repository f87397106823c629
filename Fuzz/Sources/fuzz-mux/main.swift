import FuzzSupport
import StunturnMux

// The multiplexer's frames as a session receives them once records are opened, through
// MuxFrameDecoder into MuxSession, or (as SessionRelay does) header by header with the payload
// handed over separately. Two streams this side opened have data queued, so the peer's ACKs,
// window updates, FINs and RSTs meet streams in every state; whatever the session queues is sent.
//
// Input: one byte (bit 0: this side is the responder; bit 1: header by header; bits 2-7: the size
// of the reads, 0 for one read), then the peer's bytes.

private let maxStreams = 8
private let start = ContinuousClock.now

@_cdecl("LLVMFuzzerTestOneInput")
func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let mode = input.byte()
    var session = MuxSession(side: mode & 1 == 0 ? .initiator : .responder, maxStreams: maxStreams,
                             maxBuffered: 1 << 20, maxFramePayload: 4096, receiveBudget: 2 << 20)
    for (index, id) in [session.openStream(), session.openStream()].compactMap({ $0 }).enumerated() {
        _ = session.write(id, Array(repeating: UInt8(index), count: 10_000))
        if index == 1 { session.finish(id) }
    }
    let wire = input.rest()
    let reads = chunks(wire, size: Int(mode >> 2))
    var now = start
    do {
        if mode & 2 == 0 {
            try receiveFrames(reads, into: &session, now: &now)
        } else {
            try receiveHeaders(reads, into: &session, now: &now)
        }
    } catch {
        // A protocol error ends the session: GoAway, and nothing else goes out.
        session.goAway(.protocolError)
        guard session.nextFrame() == .goAway(.protocolError), session.nextFrame() == nil, session.openStreams == 0 else {
            fatalError("after a protocol error the session sent more than its GoAway")
        }
    }
    return 0
}

private func receiveFrames(_ reads: [ArraySlice<UInt8>], into session: inout MuxSession,
                           now: inout ContinuousClock.Instant) throws(MuxError) {
    var decoder = MuxFrameDecoder(maxPayload: 64 * 1024)
    var taken: [UInt8] = []
    // The frames decoded so far encode to the bytes taken, less what waits for the next read.
    var accounted = 0
    for read in reads {
        taken += read
        for frame in try decoder.decode(read) {
            let encoded = frame.encoded()
            guard taken[accounted...].starts(with: encoded) else {
                fatalError("a decoded frame does not encode to the bytes it came from")
            }
            accounted += encoded.count
            apply(try session.receive(frame), to: &session, now: &now)
        }
        guard accounted == taken.count - decoder.buffered else {
            fatalError("the decoder holds \(decoder.buffered) bytes, \(taken.count - accounted) are not in a frame")
        }
    }
}

/// As SessionRelay reads: headers parsed where they lie or gathered across reads, a Data frame's
/// header applied before its payload, its FIN after.
private func receiveHeaders(_ reads: [ArraySlice<UInt8>], into session: inout MuxSession,
                            now: inout ContinuousClock.Instant) throws(MuxError) {
    var header: [UInt8] = []
    var dataStream: UInt32 = 0
    var dataRemaining = 0
    var dataFin = false
    for read in reads {
        var offset = read.startIndex
        while offset < read.endIndex {
            if dataRemaining > 0 {
                let n = min(dataRemaining, read.endIndex - offset)
                offset += n
                dataRemaining -= n
                if session.contains(dataStream) { session.consumed(dataStream, n, now: now, rtt: .milliseconds(1)) }
                if dataRemaining == 0 && dataFin {
                    dataFin = false
                    apply(try session.receiveFin(dataStream), to: &session, now: &now)
                }
                continue
            }
            let take = min(MuxFrame.headerLength - header.count, read.endIndex - offset)
            header += read[offset..<(offset + take)]
            offset += take
            guard header.count == MuxFrame.headerLength else { break }
            let frame = try MuxFrameDecoder.parseHeader(header, maxPayload: 64 * 1024)
            header.removeAll()
            guard frame.kind == .data else {
                apply(try session.receive(frame), to: &session, now: &now)
                continue
            }
            apply(try session.receiveDataHeader(frame), to: &session, now: &now)
            dataStream = frame.streamID
            dataRemaining = Int(frame.length)
            dataFin = frame.flags.contains(.fin)
            if dataRemaining == 0 && dataFin {
                dataFin = false
                apply(try session.receiveFin(dataStream), to: &session, now: &now)
            }
        }
    }
}

/// Does what an owner does with the events (takes the data, answers a new stream with a little
/// of its own and a FIN), then sends every frame the session has for the peer.
private func apply(_ events: [MuxSession.Event], to session: inout MuxSession, now: inout ContinuousClock.Instant) {
    for event in events {
        switch event {
        case .opened(let id):
            _ = session.write(id, Array("welcome".utf8))
            session.finish(id)
        case .data(let id, let bytes):
            now += .microseconds(200)
            session.consumed(id, bytes.count, now: now, rtt: .milliseconds(1))
        case .finished, .reset, .refused, .pong, .goAway:
            break
        }
    }
    guard session.openStreams <= maxStreams else { fatalError("\(session.openStreams) streams open, limit \(maxStreams)") }
    guard session.grantedWindows >= 0 && session.grantedWindows <= session.receiveBudget + maxStreams * 256 * 1024 else {
        fatalError("granted windows \(session.grantedWindows)")
    }
    // Each frame goes out once: the queue always drains.
    var sent = 0
    while session.nextFrame() != nil {
        sent += 1
        guard sent < 100_000 else { fatalError("the session keeps handing out frames") }
    }
}


private func muxSeeds() -> [[UInt8]] {
    func wire(_ frames: [MuxFrame]) -> [UInt8] { frames.flatMap { $0.encoded() } }
    // The peer of an initiator: ACKs stream 1 with data, grows its window, ends it; resets 3;
    // opens 2 with data and ends it; pings; goes away.
    let toInitiator = wire([
        .data(1, Array("hello".utf8), flags: .ack),
        .windowUpdate(1, delta: 65536),
        .data(1, [], flags: .fin),
        .windowUpdate(3, delta: 2, flags: .rst),
        .data(2, Array("opened by the peer".utf8), flags: .syn),
        .data(2, Array(repeating: 0x42, count: 3000)),
        .windowUpdate(2, delta: 0, flags: .fin),
        .ping(7),
        .ping(1, answer: true),
        .goAway(.normal),
    ])
    // The peer of a responder: opens streams 1, 3, 5 (the last one past a window), RSTs 2.
    let toResponder = wire([
        .data(1, Array("a".utf8), flags: .syn),
        .data(3, Array("b".utf8), flags: [.syn, .fin]),
        .windowUpdate(2, delta: 0, flags: .ack),
        .windowUpdate(4, delta: 3, flags: .rst),
        .data(5, [], flags: .syn),
        .data(5, Array(repeating: 0x43, count: 5000), flags: .fin),
    ])
    // Too large a frame, an unknown type.
    let malformed = wire([.data(1, [], flags: .ack)]) + [0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1] + [0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    return [
        [0] + toInitiator, [2 | 1 << 2] + toInitiator, [0 | 5 << 2] + toInitiator,
        [1] + toResponder, [3 | 3 << 2] + toResponder,
        [0] + malformed, [2] + malformed,
    ]
}

runFuzzer(seeds: muxSeeds(), fuzz)
