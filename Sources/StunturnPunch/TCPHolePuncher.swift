import StunturnSockets
import Synchronization

/// Punches a TCP hole: listens on the local port and dials the peer from that same port at once,
/// so that the two SYNs cross (simultaneous open) or one side's listener takes the other's SYN.
///
/// Several connections can come up at once (each side's dial reaching the other's listener on
/// loopback, or a stranger racing to the port). The initiator keeps the first one that comes up
/// and sends `tag` on it; the receiver keeps the one on which `tag` arrives and closes the rest.
public enum TCPHolePuncher {
    private enum Event {
        case candidate(Socket, SocketAddress, fromListener: Bool)
        case verified(Socket)
        case rejected(SocketAddress, String)
        case dialerFinished
        case listenerFinished(any Error)
        case deadline
    }

    /// - Parameter alsoTry: more of the peer's addresses (its host candidates) dialled at the same
    ///   time, from the same port; the first connection that comes up wins.
    public static func punch(local: SocketAddress, peer: SocketAddress, alsoTry: [SocketAddress] = [], role: PunchRole,
                             tag: [UInt8] = defaultPunchTag, options: PunchOptions = PunchOptions()) async throws -> Socket {
        let socket = try await options.reporting("tcp") {
            try await punchOnce(local: local, peer: peer, alsoTry: alsoTry.filter { $0.family == local.family && $0 != peer },
                                role: role, tag: tag, options: options)
        }
        // A tunnel can sit quiet for hours: probes notice a peer that vanished and keep NAT state.
        // Without them (a system that refuses the options) the tunnel still works.
        try? socket.setKeepAlive()
        return socket
    }

    private static func punchOnce(local: SocketAddress, peer: SocketAddress, alsoTry: [SocketAddress], role: PunchRole,
                                  tag: [UInt8], options: PunchOptions) async throws -> Socket {
        let peers = [peer] + alsoTry
        let deadline = ContinuousClock.now + options.timeout
        let listener = try Socket(.stream, family: local.family)
        try listener.setReuse()
        try listener.bind(to: local)
        try listener.listen(backlog: 16)
        defer { listener.close() }

        let lastError = LastError()
        return try await withThrowingTaskGroup(of: Event.self) { group in
            for target in peers {
                group.addTask { await dial(from: local, to: target, options: options, deadline: deadline, lastError: target == peer ? lastError : nil) }
            }
            group.addTask { await acceptOne(listener, peers: peers, deadline: deadline, options: options) }
            group.addTask {
                // Cancelled once the punch is decided either way.
                try? await Task.sleep(until: deadline, clock: .continuous)
                return .deadline
            }
            defer { group.cancelAll() }
            while let event = try await group.next() {
                switch event {
                case .candidate(let socket, let from, let fromListener):
                    if fromListener {
                        group.addTask { await acceptOne(listener, peers: peers, deadline: deadline, options: options) }
                    }
                    if role == .initiator {
                        do {
                            try await socket.writeAll(tag, until: deadline)
                            return socket
                        } catch {
                            lastError.set(error)
                        }
                    } else {
                        group.addTask { await verify(socket, from: from, tag: tag, deadline: deadline) }
                    }
                case .verified(let socket):
                    return socket
                case .rejected(let from, let reason):
                    options.onRejected?(from, reason)
                case .dialerFinished:
                    break
                case .listenerFinished(let error):
                    // The listener only ever times out with the punch; the dialer's error says more.
                    if (error as? SocketError)?.code != .timedOut { lastError.set(error) }
                case .deadline:
                    let last = lastError.value
                    throw PunchError(.timedOut, peer: peer, transport: "tcp",
                                     message: "no connection within \(formatDuration(options.timeout)) (last error: \(last.map { "\($0)" } ?? "no answer"))",
                                     underlying: last)
                }
            }
            throw PunchError(.cancelled, peer: peer, transport: "tcp", message: "cancelled")
        }
    }

    /// Dials the peer from the punch port until one connect succeeds, tries run out, or time is up.
    private static func dial(from local: SocketAddress, to peer: SocketAddress, options: PunchOptions,
                             deadline: ContinuousClock.Instant, lastError: LastError?) async -> Event {
        for _ in 0..<max(1, options.tries) {
            if Task.isCancelled || ContinuousClock.now >= deadline { break }
            do {
                let socket = try Socket(.stream, family: peer.family)
                try socket.setReuse()
                try socket.bind(to: local)
                try await socket.connect(to: peer, until: min(deadline, .now + options.attemptTimeout))
                return .candidate(socket, peer, fromListener: false)
            } catch {
                // A host candidate's failure says little (most are not on this network): only the
                // public address's is reported.
                lastError?.set(error)
            }
            // Cancellation ends the loop at its next check.
            try? await Task.sleep(for: options.retryInterval)
        }
        return .dialerFinished
    }

    /// Accepts the next connection from one of the peer's IPs; others are rejected and closed.
    private static func acceptOne(_ listener: Socket, peers: [SocketAddress], deadline: ContinuousClock.Instant,
                                  options: PunchOptions) async -> Event {
        while !Task.isCancelled {
            do {
                let (socket, from) = try await listener.accept(until: deadline)
                if peers.contains(where: { $0.addressBytes == from.addressBytes }) { return .candidate(socket, from, fromListener: true) }
                socket.close()
                options.onRejected?(from, "connected to the punched port from an address other than the peer's (\(peers[0].ip))")
            } catch {
                return .listenerFinished(error)
            }
        }
        return .listenerFinished(CancellationError())
    }

    /// Receiver side: a candidate is the peer's when the tag arrives on it.
    private static func verify(_ socket: Socket, from: SocketAddress, tag: [UInt8], deadline: ContinuousClock.Instant) async -> Event {
        do {
            let received = try await socket.readExactly(tag.count, until: deadline)
            if received == tag { return .verified(socket) }
            socket.close()
            return .rejected(from, "sent a wrong punch tag")
        } catch {
            socket.close()
            return .rejected(from, "\(error)")
        }
    }
}

/// The most recent failure seen by any of the punch's tasks, for the final error message.
final class LastError: Sendable {
    private let error = Mutex<(any Error)?>(nil)
    func set(_ value: any Error) { error.withLock { $0 = value } }
    var value: (any Error)? { error.withLock { $0 } }
}
