import CStunturnSystem
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// One-shot readiness reports for many descriptors: an epoll set of ours, which Dispatch watches
/// through a single read source on the owner's queue.
///
/// The data path and the control path wait on sockets and pipes here rather than through a
/// DispatchSource per descriptor, because libdispatch's epoll backend (swift-corelibs-libdispatch
/// as shipped with Swift 6.3) frees its per-descriptor bookkeeping unsafely on a hang-up. For
/// EPOLLHUP its manager thread marks each source on the descriptor for deletion and wakes it, then
/// goes on using that bookkeeping (the "muxnote"); but a woken source that is not suspended
/// acknowledges the deletion on its own queue, on another thread, and the last acknowledgement
/// frees the muxnote. When the manager thread is preempted in between, it reads freed memory:
/// SIGSEGV in `_dispatch_event_loop_drain`, or an unrelated descriptor dropped from its epoll set.
/// A pipe at end-of-file reports EPOLLHUP alone (stdin of `forward --stdio`: about one session in
/// ten crashed once the relay allocated right after that end-of-file); a socket reports it once
/// both directions are shut or on a reset. The only descriptor Dispatch sees here is the epoll
/// set's, which never hangs up, and its source lives as long as the poller.
///
/// Every method, and the handler, runs on the owner's queue.
public final class DescriptorPoller {
    /// What a descriptor is watched for, or found ready for.
    public struct Events: OptionSet, Hashable, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: 1)  // EPOLLIN
        public static let writable = Events(rawValue: 4)  // EPOLLOUT
    }

    /// Called with a descriptor and what it is ready for; a hang-up or an error counts as both,
    /// so the caller's next read or write finds out which.
    public typealias Handler = (Int32, Events) -> Void

    private static let oneShot: UInt32 = 1 << 30  // EPOLLONESHOT
    private static let hangUpOrError: UInt32 = 8 | 16  // EPOLLERR | EPOLLHUP

    private let handler: Handler
    private let epoll: Int32
    private var source: DispatchSourceRead?
    /// Descriptors in the set, reported or not.
    private var registered = Set<Int32>()
    private var readyFDs = [Int32](repeating: 0, count: 128)
    private var readyEvents = [UInt32](repeating: 0, count: 128)

    /// `handler` runs on `queue`.
    public init(queue: DispatchQueue, handler: @escaping Handler) throws {
        let fd = stunturn_epoll_create()
        guard fd >= 0 else { throw SocketError(call: "epoll_create1", errno: errno) }
        self.epoll = fd
        self.handler = handler
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [unowned self] in self.drain() }
        source.setCancelHandler { SystemIO.close(fd) }
        source.resume()
        self.source = source
    }

    deinit { source?.cancel() }

    /// Reports `fd` once, when it is ready for any of `events`; after that it is not watched until
    /// watched again. Returns false for a descriptor epoll cannot watch (a regular file), which is
    /// always ready: the caller must not wait for it.
    public func watch(_ fd: Int32, for events: Events) throws -> Bool {
        let bits = events.rawValue | Self.oneShot
        if registered.contains(fd) {
            if stunturn_epoll_control(epoll, 1, fd, bits) == 0 { return true }
            // The number now names another file (the old one was closed): register that one.
            guard errno == ENOENT else { throw SocketError(call: "epoll_ctl", subject: "descriptor \(fd)", errno: errno) }
            registered.remove(fd)
        }
        if stunturn_epoll_control(epoll, 0, fd, bits) == 0 {
            registered.insert(fd)
            return true
        }
        if errno == EPERM { return false }
        throw SocketError(call: "epoll_ctl", subject: "descriptor \(fd)", errno: errno)
    }

    /// Stops watching `fd`; call it before closing the descriptor or pointing it at another file.
    public func forget(_ fd: Int32) {
        guard registered.remove(fd) != nil else { return }
        _ = stunturn_epoll_control(epoll, 2, fd, 0)
    }

    /// Whether a report is waiting here (a watched descriptor is ready), or `alsoReadable` (a
    /// descriptor not watched now; -1 for none) has bytes or an error to read, taking nothing: a
    /// long piece of work on the owner's queue (a bulk stream's turn) asks between its steps and
    /// ends early, so what waits is served within one step and not after the whole turn.
    public func hasWork(orReadable alsoReadable: Int32 = -1) -> Bool {
        withUnsafeTemporaryAllocation(of: pollfd.self, capacity: 2) { fds in
            fds[0] = pollfd(fd: epoll, events: Int16(POLLIN), revents: 0)
            fds[1] = pollfd(fd: alsoReadable, events: Int16(POLLIN), revents: 0)
            return poll(fds.baseAddress, alsoReadable >= 0 ? 2 : 1, 0) > 0
        }
    }

    /// Hands out what is ready now, a bounded batch per event so other work on the queue gets a
    /// turn; what is left keeps the set readable.
    private func drain() {
        let count = readyFDs.withUnsafeMutableBufferPointer { fds in
            readyEvents.withUnsafeMutableBufferPointer { events in
                stunturn_epoll_wait(epoll, fds.baseAddress, events.baseAddress, Int32(fds.count), 0)
            }
        }
        guard count > 0 else { return }
        for i in 0..<Int(count) {
            let bits = readyEvents[i]
            var events = Events(rawValue: bits & (Events.readable.rawValue | Events.writable.rawValue))
            if bits & Self.hangUpOrError != 0 { events = [.readable, .writable] }
            handler(readyFDs[i], events)
        }
    }
}
