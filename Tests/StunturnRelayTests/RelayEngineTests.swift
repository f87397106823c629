import StunturnTestSupport
import Synchronization
import Foundation
import Glibc
import StunturnSockets
import Testing
@testable import StunturnRelay

/// A connected TCP pair on loopback.
func tcpPair() async throws -> (Socket, Socket) {
    let listener = try Socket.listener(on: .loopback())
    let address = try listener.localAddress()
    async let accepted = listener.accept(until: .now + .seconds(5))
    let client = try await Socket.connect(to: address, timeout: .seconds(5))
    let (server, _) = try await accepted
    return (client, server)
}

/// Collects what a relay reports when it ends.
final class ReportBox: Sendable {
    private let report = Mutex<RelayReport?>(nil)
    func set(_ r: RelayReport) { report.withLock { $0 = r } }
    var value: RelayReport? { report.withLock { $0 } }
    func wait(timeout: Duration = .seconds(20), sourceLocation: SourceLocation = #_sourceLocation) async throws -> RelayReport {
        try await waitUntil("the relay reports its end", timeout: timeout, sourceLocation: sourceLocation) { value != nil }
        return value!
    }
}


/// XOR with a rolling key: a stand-in stage that changes every byte, so a relay that skipped it would be caught.
final class XORTransform: RelayTransform {
    func forwardCapacity(forInputCount inputCount: Int) -> Int { inputCount }
    func backwardCapacity(forInputCount inputCount: Int) -> Int { inputCount }
    func forward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        for (i, byte) in input.enumerated() { output[i] = byte ^ 0x5A }
        return input.count
    }
    func backward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        try forward(input, into: output)
    }
}

/// Pseudo-random bytes: one 64 KiB block per seed, repeated with a changing first byte, so big
/// buffers cost a memcpy rather than a per-byte loop (tests share two cooperative threads).
func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    let block = (0..<65536).map { _ -> UInt8 in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
    var out: [UInt8] = []
    out.reserveCapacity(count + block.count)
    var round: UInt8 = 0
    while out.count < count {
        out.append(round)
        out.append(contentsOf: block)
        round &+= 1
    }
    return Array(out.prefix(count))
}

/// A stage that, like the tunnel, ends A's stream towards B with "END" and refuses an end of B's
/// stream that did not come after "END".
final class EndMarkTransform: RelayTransform {
    private var backwardTail: [UInt8] = []
    func forwardCapacity(forInputCount inputCount: Int) -> Int { inputCount }
    func backwardCapacity(forInputCount inputCount: Int) -> Int { inputCount }
    func forward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        output.copyMemory(from: input)
        return input.count
    }
    func backward(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        backwardTail = Array((backwardTail + Array(input)).suffix(3))
        output.copyMemory(from: input)
        return input.count
    }
    var forwardEndCapacity: Int { 3 }
    func forwardEnd(into output: UnsafeMutableRawBufferPointer) throws -> Int {
        output.copyBytes(from: Array("END".utf8))
        return 3
    }
    struct CutShort: Error, CustomStringConvertible { var description: String { "stream cut short" } }
    func backwardEnd() throws {
        if backwardTail != Array("END".utf8) { throw CutShort() }
    }
}

@Suite struct RelayEngineTests {
    /// client ⇄ [a | relay | b] ⇄ server
    func relayed(transform: RelayTransform? = nil, idle: Duration? = nil) async throws -> (client: Socket, server: Socket, box: ReportBox, connection: RelayConnection) {
        let (client, a) = try await tcpPair()
        let (b, server) = try await tcpPair()
        let box = ReportBox()
        let connection = RelayEngine.shared.relay(RelayEndpoint(socket: a, name: "a"), RelayEndpoint(socket: b, name: "b"),
                                                  transform: transform, idleTimeout: idle) { box.set($0) }
        return (client, server, box, connection)
    }

    /// LeakSanitizer found each server's engine leaving its workers' scratch buffers behind
    /// (1.2 MB a server). Buffers this large are mappings of their own, untouched, so the
    /// process's address space shows them: twenty engines that left theirs would hold 5 GB.
    @Test func anEngineGivesBackItsBuffers() throws {
        func mappedBytes() throws -> Int {
            let statm = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8)
            return Int(statm.split(separator: " ")[0])! * Int(sysconf(Int32(_SC_PAGESIZE)))
        }
        let before = try mappedBytes()
        for _ in 0..<20 {
            _ = RelayEngine(workers: 2, chunkSize: 64 << 20)
        }
        // AddressSanitizer keeps up to 256 MB of freed memory in quarantine.
        #expect(try mappedBytes() - before < 1 << 30)
    }

    /// A session's reads take a 1 MiB buffer on its worker; once the worker's last session has
    /// ended it is given back, so a session that moved to another worker leaves none behind.
    @Test func aWorkerGivesBackWhatOnlySessionsNeedOnceItsLastSessionEnds() async throws {
        let engine = RelayEngine(workers: 1)
        let worker = engine.nextWorkerBound()
        func sessionBuffer() -> Int { worker.queue.sync { worker.value.sessionScratch.count } }
        let (a, b) = try await tcpPair()
        let initiator = engine.session(tunnel: a, peerName: "peer", side: .initiator, transform: nil)
        let responder = engine.session(tunnel: b, peerName: "peer", side: .responder, transform: nil)
        let (local, far) = try await tcpPair()
        defer { far.close() }
        // Written before the stream opens: the responder refuses it (it takes no streams) and the
        // reset could otherwise meet this write.
        try await far.writeAll([UInt8](repeating: 7, count: 4096), until: .now + .seconds(5))
        initiator.open(local, name: "test") { _ in }
        try await waitUntil("the session read its stream into its buffer") { sessionBuffer() >= 1 << 20 }
        initiator.close(reason: "test over")
        #expect(sessionBuffer() >= 1 << 20, "kept while a session is left on the worker")
        responder.close(reason: "test over")
        _ = await initiator.endedUnlessCancelled()
        _ = await responder.endedUnlessCancelled()
        try await waitUntil("the buffer is given back") { sessionBuffer() == 0 }
    }

    @Test func largeTransferBothWaysArrivesIntact() async throws {
        let (client, server, box, _) = try await relayed()
        let up = pattern(24 << 20, seed: 1)
        let down = pattern(8 << 20, seed: 2)
        async let sendUp: Void = { try await client.writeAll(up, until: .now + .seconds(60)); client.shutdownWrite() }()
        async let sendDown: Void = { try await server.writeAll(down, until: .now + .seconds(60)); server.shutdownWrite() }()
        async let receivedUp = readAll(server)
        async let receivedDown = readAll(client)
        _ = try await (sendUp, sendDown)
        #expect(try await receivedUp == up)
        #expect(try await receivedDown == down)
        let report = try await box.wait()
        #expect(report.clean)
        #expect(report.bytesAToB == UInt64(up.count))
        #expect(report.bytesBToA == UInt64(down.count))
    }

    @Test func halfClosePropagatesAndTheOtherDirectionKeepsWorking() async throws {
        let (client, server, box, _) = try await relayed()
        try await client.writeAll(Array("request".utf8), until: .now + .seconds(5))
        client.shutdownWrite()
        // The server sees the request and then end-of-file...
        #expect(try await readAll(server) == Array("request".utf8))
        // ...and can still answer over the open direction.
        try await server.writeAll(Array("response".utf8), until: .now + .seconds(5))
        server.shutdownWrite()
        #expect(try await readAll(client) == Array("response".utf8))
        #expect(try await box.wait().reason == "both sides closed")
    }

    @Test func transformStageSitsBetweenTheSockets() async throws {
        let (client, a) = try await tcpPair()
        let (b, server) = try await tcpPair()
        let box = ReportBox()
        RelayEngine.shared.relay(RelayEndpoint(socket: a, name: "a"), RelayEndpoint(socket: b, name: "b"), transform: XORTransform()) { box.set($0) }
        let data = pattern(1 << 20, seed: 3)
        async let sending: Void = { try await client.writeAll(data, until: .now + .seconds(30)); client.shutdownWrite() }()
        let received = try await readAll(server)
        try await sending
        #expect(received == data.map { $0 ^ 0x5A })
        server.shutdownWrite()
        _ = try await readAll(client)
        _ = try await box.wait()
    }

    @Test func transformedOutputHeldForAFullDestinationArrivesIntact() async throws {
        // One worker, so both connections share its output buffer: while the first holds output
        // its stalled reader has not taken, the second keeps flowing through the same worker.
        let engine = RelayEngine(workers: 1, chunkSize: 64 * 1024)
        var ends: [(client: Socket, server: Socket, box: ReportBox)] = []
        for _ in 0..<2 {
            let (client, a) = try await tcpPair()
            let (b, server) = try await tcpPair()
            // Small buffers on the relay's destination side, so its writes come back short at once.
            _ = try b.setOption(SOL_SOCKET_VALUE, SO_SNDBUF_VALUE, 16 * 1024)
            _ = try server.setOption(SOL_SOCKET_VALUE, SO_RCVBUF_VALUE, 16 * 1024)
            let box = ReportBox()
            engine.relay(RelayEndpoint(socket: a, name: "a"), RelayEndpoint(socket: b, name: "b"), transform: XORTransform()) { box.set($0) }
            ends.append((client, server, box))
        }
        let data = [pattern(3 << 20, seed: 10), pattern(3 << 20, seed: 11)]
        let writers = (0..<2).map { i in
            Task { [ends] in
                try await ends[i].client.writeAll(data[i], until: .now + .seconds(60))
                ends[i].client.shutdownWrite()
            }
        }
        // Compared as a whole without printing megabytes when they differ.
        let flowing = try await readAll(ends[1].server)
        #expect(flowing.count == data[1].count)
        let flowingIntact = flowing.elementsEqual(data[1].lazy.map { $0 ^ 0x5A })
        #expect(flowingIntact)
        let stalled = try await readAll(ends[0].server)
        #expect(stalled.count == data[0].count)
        let stalledIntact = stalled.elementsEqual(data[0].lazy.map { $0 ^ 0x5A })
        #expect(stalledIntact)
        for writer in writers { try await writer.value }
        for end in ends {
            end.server.shutdownWrite()
            _ = try await readAll(end.client)
            #expect(try await end.box.wait().clean)
        }
    }

    @Test func theTransformsEndGoesOutBeforeTheHalfClose() async throws {
        let (client, server, box, _) = try await relayed(transform: EndMarkTransform())
        try await client.writeAll(Array("data".utf8), until: .now + .seconds(5))
        client.shutdownWrite()
        #expect(try await readAll(server) == Array("dataEND".utf8))
        // The other way, an end after the mark is an orderly one.
        try await server.writeAll(Array("replyEND".utf8), until: .now + .seconds(5))
        server.shutdownWrite()
        #expect(try await readAll(client) == Array("replyEND".utf8))
        let report = try await box.wait()
        #expect(report.clean && !report.reset, "\(report.reason)")
        #expect(report.bytesAToB == 4)
    }

    @Test func anEndTheTransformRefusesResetsTheOtherSide() async throws {
        let (client, server, box, _) = try await relayed(transform: EndMarkTransform())
        try await client.writeAll(Array("data".utf8), until: .now + .seconds(5))
        client.shutdownWrite()
        #expect(try await readAll(server) == Array("dataEND".utf8))
        // B ends without the mark: A is reset, not handed an orderly end.
        try await server.writeAll(Array("partial".utf8), until: .now + .seconds(5))
        server.shutdownWrite()
        var received: [UInt8] = []
        var failure: SocketError?
        do {
            while true {
                let chunk = try await client.readSome(until: .now + .seconds(5))
                if chunk.isEmpty { break }
                received += chunk
            }
        } catch let error as SocketError {
            failure = error
        }
        #expect(failure?.errno == ECONNRESET, "read ended with \(String(describing: failure)) after \(received.count) bytes")
        let report = try await box.wait()
        #expect(!report.clean)
        #expect(report.reset)
        #expect(report.reason.contains("stream cut short"))
    }

    @Test func slowReaderBackpressuresInsteadOfBuffering() async throws {
        let (client, server, box, connection) = try await relayed()
        // Push far more than the socket buffers hold while the server reads nothing.
        let data = pattern(64 << 20, seed: 4)
        let writer = Task { try await client.writeAll(data, until: .now + .seconds(60)) }
        // Until the relay has stopped taking more: its count unchanged over a quarter of a second.
        var carried: UInt64 = 0
        var unchangedPolls = 0
        try await waitUntil("the relay stops reading from the writer", interval: .milliseconds(50)) {
            let now = await connection.byteCounts.aToB
            unchangedPolls = now > 0 && now == carried ? unchangedPolls + 1 : 0
            carried = now
            return unchangedPolls >= 5
        }
        // The relay stopped reading: what it took is bounded by kernel buffers plus one chunk, far below 64 MiB.
        #expect(carried < 40 << 20)
        let received = try await readAll(server, limit: data.count)
        #expect(received == data)
        try await writer.value
        connection.close()
        _ = try await box.wait()
    }

    @Test func aSlowButSteadyReaderIsNotIdle() async throws {
        let (client, a) = try await tcpPair()
        let (b, server) = try await tcpPair()
        // Small kernel buffers towards the reader, so what waits for it waits in the relay, where
        // the relay can see it go.
        _ = try b.setOption(SOL_SOCKET_VALUE, SO_SNDBUF_VALUE, 16 * 1024)
        _ = try server.setOption(SOL_SOCKET_VALUE, SO_RCVBUF_VALUE, 16 * 1024)
        let box = ReportBox()
        // An idle time longer than a test runner busy with other suites may leave this test unrun
        // (the whole suite shares two threads with every other suite).
        RelayEngine.shared.relay(RelayEndpoint(socket: a, name: "a"), RelayEndpoint(socket: b, name: "b"),
                                 idleTimeout: .seconds(5)) { box.set($0) }
        let data = pattern(3 << 19, seed: 7)
        let writer = Task { try await client.writeAll(data, until: .now + .seconds(60)); client.shutdownWrite() }
        // About 100 KB/s: what the relay holds for this reader (up to a pipe's megabyte) takes
        // longer than the idle time to drain, during which it reads nothing from the sender. The
        // reader is a thread of its own, so suites busy on the shared pool cannot stall it past the
        // idle time (which would be a real idle gap, and a reset).
        let received = await withCheckedContinuation { (continuation: CheckedContinuation<[UInt8], Never>) in
            let thread = Thread {
                var received: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 8 * 1024)
                let deadline = ContinuousClock.now + .seconds(60)
                reading: while received.count < data.count, ContinuousClock.now < deadline {
                    var ready = pollfd(fd: server.fd, events: Int16(POLLIN), revents: 0)
                    guard poll(&ready, 1, 1000) >= 0 else { break }
                    let result = try? chunk.withUnsafeMutableBytes { try server.read(into: $0) }
                    switch result {
                    case .bytes(let n)?: received += chunk[0..<n]
                    case .wouldBlock?: continue reading
                    default: break reading
                    }
                    usleep(80_000)
                }
                continuation.resume(returning: received)
            }
            thread.start()
        }
        #expect(received.count == data.count, "\(box.value?.reason ?? "still running")")
        let intact = received.elementsEqual(data)
        #expect(intact)
        try await writer.value
        server.shutdownWrite()
        let report = try await box.wait()
        #expect(report.clean, "\(report.reason)")
    }

    @Test func idleConnectionsAreReset() async throws {
        let (client, server, box, _) = try await relayed(idle: .milliseconds(300))
        let report = try await box.wait()
        #expect(report.reason.contains("idle"))
        #expect(report.reset && report.endedByRelay && !report.clean)
        // Both applications learn that the relay cut the stream, rather than see an orderly end.
        for side in [client, server] {
            let failure = await readUntilFailure(side)
            #expect(failure?.errno == ECONNRESET, "read ended with \(String(describing: failure))")
        }
    }

    @Test func closeByTheOwnerResetsBothSides() async throws {
        let (client, server, box, connection) = try await relayed()
        try await client.writeAll(Array("held".utf8), until: .now + .seconds(5))
        #expect(try await server.readExactly(4, until: .now + .seconds(5)) == Array("held".utf8))
        connection.close(reason: "agent shutting down")
        let report = try await box.wait()
        #expect(report.reason == "agent shutting down")
        #expect(report.reset && report.endedByRelay)
        for side in [client, server] {
            let failure = await readUntilFailure(side)
            #expect(failure?.errno == ECONNRESET, "read ended with \(String(describing: failure))")
        }
    }

    @Test func resetOnOneSideEndsTheRelayWithAReason() async throws {
        let (client, server, box, _) = try await relayed()
        try server.setAbortiveClose()
        server.close()
        let report = try await box.wait()
        #expect(!report.clean)
        #expect(report.reset && !report.endedByRelay)
        // The reason names the side that failed ("b: <call> fd …: connection reset by peer").
        #expect(report.reason.hasPrefix("b: ") && report.reason.hasSuffix(": connection reset by peer"), "\(report.reason)")
        // The reset is passed on: the other side does not see an orderly end.
        let failure = await readUntilFailure(client)
        #expect(failure?.errno == ECONNRESET, "\(String(describing: failure))")
    }
}

/// Reads until end-of-file (or `limit` bytes).
func readAll(_ socket: Socket, limit: Int = .max) async throws -> [UInt8] {
    var out: [UInt8] = []
    while out.count < limit {
        let chunk = try await socket.readSome(maxLength: 1 << 20, until: .now + .seconds(60))
        if chunk.isEmpty { break }
        out += chunk
    }
    return out
}

/// Reads until the stream ends; the error that ended it, or nil for an orderly end.
