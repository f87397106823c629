import Dispatch
#if canImport(Glibc)
import CStunturnSystem
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Many descriptors behind one DispatchSource: an epoll set (on Linux) whose own descriptor is
/// watched by a single read source on the owner's queue.
///
/// Made for servers with thousands of short connections: watching or forgetting a descriptor is
/// one `epoll_ctl`, where a DispatchSource per connection costs a hand-off to Dispatch's event
/// thread when it is created and again when it is cancelled. Readiness is level-triggered, so a
/// handler that stops reading early is called again. Where epoll is missing, each descriptor gets
/// its own read source instead; callers see the same behaviour.
public final class ReadinessGroup {
    /// Called on the queue with each descriptor that is readable (or has hung up or failed).
    public typealias Handler = (Int32) -> Void

    private let queue: DispatchQueue
    private let handler: Handler
    private var epoll: Int32 = -1
    private var source: DispatchSourceRead?
    private var fallback: [Int32: DispatchSourceRead] = [:]
    private var readyFDs = [Int32](repeating: 0, count: 256)

    /// `handler` runs on `queue`; every other method must be called on `queue` too.
    public init(queue: DispatchQueue, handler: @escaping Handler) {
        self.queue = queue
        self.handler = handler
        #if canImport(Glibc)
        let fd = stunturn_epoll_create()
        guard fd >= 0 else { return }
        epoll = fd
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [unowned self] in self.drain() }
        source.setCancelHandler { Glibc.close(fd) }
        source.resume()
        self.source = source
        #endif
    }

    deinit { cancel() }

    /// Starts watching `fd` for input; the group owns the descriptor from now on and closes it
    /// in `close(_:)`.
    public func watch(_ fd: Int32) throws {
        #if canImport(Glibc)
        if epoll >= 0 {
            guard stunturn_epoll_control(epoll, 0, fd, ReadinessGroup.readable) == 0 else {
                throw SocketError(call: "epoll_ctl", subject: "descriptor \(fd)", errno: errno)
            }
            return
        }
        #endif
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [unowned self] in self.handler(fd) }
        source.setCancelHandler { SystemIO.close(fd) }
        fallback[fd] = source
        source.resume()
    }

    /// Stops watching `fd` and closes it.
    public func close(_ fd: Int32) {
        #if canImport(Glibc)
        if epoll >= 0 {
            // Closing the only descriptor for the socket also takes it out of the epoll set.
            SystemIO.close(fd)
            return
        }
        #endif
        // Without epoll the descriptor must outlive its source: the cancel handler closes it.
        fallback.removeValue(forKey: fd)?.cancel()
    }

    /// Stops watching `fd` and hands it back open: the caller owns it again.
    public func release(_ fd: Int32) -> Int32 {
        #if canImport(Glibc)
        if epoll >= 0 {
            _ = stunturn_epoll_control(epoll, 2, fd, 0)
            return fd
        }
        #endif
        // The source's cancel handler closes the descriptor it watched: keep a duplicate.
        guard let source = fallback.removeValue(forKey: fd) else { return fd }
        let copy = dup(fd)
        source.cancel()
        return copy
    }

    /// Stops watching everything.
    public func cancel() {
        source?.cancel()
        source = nil
        for s in fallback.values { s.cancel() }
        fallback.removeAll()
    }

    private static let readable: UInt32 = 1

    /// Hands out what is ready now, a bounded batch per event so other sources on the queue get a
    /// turn; level-triggered epoll keeps the set readable while anything is left.
    private func drain() {
        #if canImport(Glibc)
        let count = readyFDs.withUnsafeMutableBufferPointer { stunturn_epoll_wait(epoll, $0.baseAddress, nil, Int32($0.count), 0) }
        guard count > 0 else { return }
        for i in 0..<Int(count) { handler(readyFDs[i]) }
        #endif
    }
}
