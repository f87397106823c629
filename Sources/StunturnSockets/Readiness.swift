import Dispatch
import Glibc

/// The bridge from Dispatch to async/await for the control path: one-shot waits for a socket to
/// become readable or writable, with a deadline, that honour task cancellation.
enum Readiness {
    enum Interest { case read, write }
    enum Outcome { case ready, timedOut, cancelled, failed(SocketError) }

    /// One serial queue serialises every waiter's bookkeeping, so no lock is needed.
    static let queue = DispatchQueue(label: "stunturn.readiness")

    private final class Waiter {
        let fd: Int32
        let interest: DescriptorPoller.Events
        var timer: DispatchWorkItem?
        var outcome: Outcome?
        var continuation: CheckedContinuation<Outcome, Never>?

        init(fd: Int32, interest: DescriptorPoller.Events) {
            self.fd = fd
            self.interest = interest
        }
    }

    /// Every waiting descriptor sits in one epoll set (see DescriptorPoller for why not a
    /// DispatchSource per wait). Only touched on `queue`.
    private final class Waiters {
        private var poller: DescriptorPoller?
        private var byDescriptor: [Int32: [Waiter]] = [:]

        func add(_ waiter: Waiter) {
            byDescriptor[waiter.fd, default: []].append(waiter)
            rearm(waiter.fd)
        }

        /// Records the first outcome, stops watching for this waiter and resumes it.
        func finish(_ waiter: Waiter, _ result: Outcome) {
            guard waiter.outcome == nil else { return }
            waiter.outcome = result
            // Drop the deadline at once: long deadlines would otherwise pile up pending timers.
            waiter.timer?.cancel()
            waiter.timer = nil
            if var list = byDescriptor[waiter.fd] {
                list.removeAll { $0 === waiter }
                byDescriptor[waiter.fd] = list.isEmpty ? nil : list
                rearm(waiter.fd)
            }
            waiter.continuation?.resume(returning: result)
            waiter.continuation = nil
        }

        /// Watches `fd` for what its waiters still wait for, or forgets it when none is left.
        private func rearm(_ fd: Int32) {
            guard let list = byDescriptor[fd] else {
                poller?.forget(fd)
                return
            }
            let interest = list.reduce(into: DescriptorPoller.Events()) { $0.formUnion($1.interest) }
            do {
                if poller == nil {
                    poller = try DescriptorPoller(queue: Readiness.queue) { [unowned self] fd, events in
                        self.ready(fd, events)
                    }
                }
                // A descriptor epoll cannot watch never blocks.
                if try !poller!.watch(fd, for: interest) { ready(fd, [.readable, .writable]) }
            } catch let error as SocketError {
                for waiter in list { finish(waiter, .failed(error)) }
            } catch {
                preconditionFailure("unexpected \(error)")
            }
        }

        private func ready(_ fd: Int32, _ events: DescriptorPoller.Events) {
            guard let list = byDescriptor[fd] else { return }
            let done = list.filter { !$0.interest.isDisjoint(with: events) }
            // One-shot: re-armed for the others even when nobody was ready.
            if done.isEmpty { rearm(fd) }
            for waiter in done { finish(waiter, .ready) }
        }
    }

    private static let waiters = QueueBound(Waiters(), on: queue)

    static func wait(fd: Int32, for interest: Interest, deadline: ContinuousClock.Instant?) async -> Outcome {
        let waiter = QueueBound(Waiter(fd: fd, interest: interest == .read ? .readable : .writable), on: queue)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
                queue.async {
                    let waiter = waiter.value
                    // A cancellation that arrived first has already recorded its outcome (the
                    // cancellation handler runs before this block when the task was cancelled on entry).
                    if let outcome = waiter.outcome {
                        continuation.resume(returning: outcome)
                        return
                    }
                    waiter.continuation = continuation
                    if let deadline {
                        let remaining = ContinuousClock.now.duration(to: deadline)
                        let timer = DispatchWorkItem { waiters.value.finish(waiter, .timedOut) }
                        waiter.timer = timer
                        queue.asyncAfter(deadline: .now() + remaining.dispatchInterval, execute: timer)
                    }
                    waiters.value.add(waiter)
                }
            }
        } onCancel: {
            waiter.async { waiters.value.finish($0, .cancelled) }
        }
    }
}

extension Duration {
    /// This duration as a Dispatch interval, never negative.
    public var dispatchInterval: DispatchTimeInterval {
        let ns = components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
        return .nanoseconds(Int(max(0, min(ns, Int64(Int.max)))))
    }
}

/// Why an async socket operation stopped early.
extension SocketError {
    static func cancelled(_ call: String, _ subject: String) -> SocketError {
        SocketError(.cancelled, call: call, subject: subject, reason: "cancelled")
    }
}

extension Socket {
    /// Waits until readable; throws a time-out or cancellation error naming `call` and `subject`.
    public func waitReadable(until deadline: ContinuousClock.Instant?, call: String = "read", subject: String? = nil) async throws {
        try await waitReady(.read, deadline, call, subject)
    }

    public func waitWritable(until deadline: ContinuousClock.Instant?, call: String = "write", subject: String? = nil) async throws {
        try await waitReady(.write, deadline, call, subject)
    }

    private func waitReady(_ interest: Readiness.Interest, _ deadline: ContinuousClock.Instant?, _ call: String, _ subject: String?) async throws {
        if let deadline, deadline <= .now {
            throw SocketError(.timedOut, call: call, subject: subject ?? peerDescription, reason: "timed out")
        }
        switch await Readiness.wait(fd: fd, for: interest, deadline: deadline) {
        case .ready: return
        case .timedOut: throw SocketError(.timedOut, call: call, subject: subject ?? peerDescription, reason: "timed out")
        case .cancelled: throw SocketError.cancelled(call, subject ?? peerDescription)
        case .failed(let error): throw error
        }
    }

    /// The peer (or local) address for messages.
    public var peerDescription: String {
        if let remote = try? remoteAddress() { return remote.description }
        if let local = try? localAddress() { return local.description }
        return "fd \(fd)"
    }

    /// Connects a new non-blocking TCP socket to `address`, optionally from a fixed local address
    /// with port reuse (as hole punching needs).
    public static func connect(to address: SocketAddress, from local: SocketAddress? = nil, reuse: Bool = false,
                               timeout: Duration) async throws -> Socket {
        let socket = try Socket(.stream, family: address.family)
        if reuse { try socket.setReuse() }
        if let local { try socket.bind(to: local) }
        try await socket.connect(to: address, until: .now + timeout, timeout: timeout)
        return socket
    }

    /// Completes a connect on this socket, waiting until `deadline`.
    public func connect(to address: SocketAddress, until deadline: ContinuousClock.Instant, timeout: Duration? = nil) async throws {
        if try connect(to: address) { return }
        do {
            try await waitWritable(until: deadline, call: "connect", subject: address.description)
        } catch let error as SocketError where error.code == .timedOut {
            if let timeout { throw SocketError.timedOut("connect", address.description, after: timeout) }
            throw error
        }
        try finishConnect(to: address)
    }

    /// Accepts one connection, waiting until `deadline`.
    public func accept(until deadline: ContinuousClock.Instant?) async throws -> (Socket, SocketAddress) {
        while true {
            if let accepted = try accept() { return accepted }
            try await waitReadable(until: deadline, call: "accept", subject: (try? localAddress().description) ?? "fd \(fd)")
        }
    }

    /// Reads whatever arrives next (at most `maxLength` bytes); an empty array means end-of-file.
    public func readSome(maxLength: Int = 65536, until deadline: ContinuousClock.Instant?) async throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: maxLength)
        while true {
            let result = try buffer.withUnsafeMutableBytes { try read(into: $0) }
            switch result {
            case .bytes(let n): return Array(buffer[0..<n])
            case .endOfFile: return []
            case .wouldBlock: try await waitReadable(until: deadline)
            }
        }
    }

    /// Reads exactly `count` bytes; end-of-file first is an error.
    public func readExactly(_ count: Int, until deadline: ContinuousClock.Instant?) async throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let result = try buffer.withUnsafeMutableBytes { try read(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
            switch result {
            case .bytes(let n): filled += n
            case .endOfFile: throw SocketError(.endOfStream, call: "read", subject: peerDescription, reason: "connection closed after \(filled) of \(count) bytes")
            case .wouldBlock: try await waitReadable(until: deadline)
            }
        }
        return buffer
    }

    /// Writes all of `bytes`, waiting for buffer space as needed.
    public func writeAll(_ bytes: [UInt8], until deadline: ContinuousClock.Instant?) async throws {
        var sent = 0
        while sent < bytes.count {
            let n = try bytes.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[sent...])) }
            if let n { sent += n } else { try await waitWritable(until: deadline) }
        }
    }

    /// Receives one datagram, waiting until `deadline`.
    public func receive(maxLength: Int = 2048, until deadline: ContinuousClock.Instant?) async throws -> ([UInt8], SocketAddress) {
        var buffer = [UInt8](repeating: 0, count: maxLength)
        while true {
            if let (n, from) = try buffer.withUnsafeMutableBytes({ try receive(into: $0) }) {
                return (Array(buffer[0..<n]), from)
            }
            try await waitReadable(until: deadline, call: "recvfrom", subject: (try? localAddress().description) ?? "fd \(fd)")
        }
    }

    /// Sends one datagram, waiting for buffer space if the socket is full.
    public func send(_ bytes: [UInt8], to address: SocketAddress, until deadline: ContinuousClock.Instant?) async throws {
        while try !bytes.withUnsafeBytes({ try send($0, to: address) }) {
            try await waitWritable(until: deadline, call: "sendto", subject: address.description)
        }
    }
}
