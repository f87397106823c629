import Synchronization
import Dispatch
import Glibc
import StunturnTestSupport
import Testing
@testable import StunturnSockets

@Suite struct ReadinessGroupTests {
    /// A connected pair of non-blocking stream sockets.
    private func socketPair() throws -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
            throw SocketError(call: "socketpair", errno: errno)
        }
        for fd in fds { try SystemIO.setNonBlocking(fd) }
        return (fds[0], fds[1])
    }

    /// Every watched descriptor that receives data is reported, and only those; a closed one is
    /// never reported again, even with data pending in its peer.
    @Test func reportsReadableDescriptorsAndForgetsClosedOnes() async throws {
        let queue = DispatchQueue(label: "test.readiness-group")
        let seen = SeenDescriptors()
        let group = ReadinessGroup(queue: queue) { fd in
            // Drain, so level-triggered readiness does not report the same bytes forever.
            var byte: UInt8 = 0
            while read(fd, &byte, 1) > 0 { seen.add(fd) }
        }
        var pairs: [(watched: Int32, peer: Int32)] = []
        for _ in 0..<100 { pairs.append(try socketPair()) }
        try queue.sync { for pair in pairs { try group.watch(pair.watched) } }

        // Half of them get a byte; the other half's watched end is closed through the group.
        for (i, pair) in pairs.enumerated() where i % 2 == 0 {
            var byte: UInt8 = 1
            #expect(write(pair.peer, &byte, 1) == 1)
        }
        queue.sync { for (i, pair) in pairs.enumerated() where i % 2 == 1 { group.close(pair.watched) } }
        for (i, pair) in pairs.enumerated() where i % 2 == 1 {
            var byte: UInt8 = 1
            _ = send(pair.peer, &byte, 1, Int32(MSG_NOSIGNAL)) // the other end is gone: an error, or bytes nobody reads
        }

        let expected = Set(pairs.enumerated().filter { $0.offset % 2 == 0 }.map(\.element.watched))
        try await waitUntil("""
            the group reports exactly the descriptors written to \
            (missing: \(expected.subtracting(seen.snapshot()).sorted()), closed yet reported: \(seen.snapshot().subtracting(expected).sorted()))
            """) { seen.snapshot() == expected }

        queue.sync {
            for (i, pair) in pairs.enumerated() where i % 2 == 0 { group.close(pair.watched) }
            group.cancel()
        }
        for pair in pairs { close(pair.peer) }
    }
}


/// A set of descriptors guarded by a lock, filled on the group's queue and read by the test.
private final class SeenDescriptors: Sendable {
    private let fds = Mutex(Set<Int32>())
    func add(_ fd: Int32) { fds.withLock { _ = $0.insert(fd) } }
    func snapshot() -> Set<Int32> { fds.withLock { $0 } }
}
