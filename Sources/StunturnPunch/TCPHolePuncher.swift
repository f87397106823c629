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
        /// The opening SYNs are over after `tries` of them, with the connection the last one made
        /// when the peer's SYN met it.
        case opened(tries: Int, Socket?)
        /// The opening's connection did not carry the peer's tag.
        case openingRejected(SocketAddress, String, tries: Int)
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
        // The receiver opens its own NAT first with short-lived SYNs (see `open`); its listener
        // starts listening once they are over.
        let openingTTL = role == .receiver ? options.openingTTL : nil
        let listener = try Socket(.stream, family: local.family)
        try listener.setReuse()
        try listener.bind(to: local)
        if openingTTL == nil { try listener.listen(backlog: 16) }
        defer { listener.close() }

        let lastError = LastError()
        return try await withThrowingTaskGroup(of: Event.self) { group in
            if let openingTTL {
                group.addTask { await open(from: local, to: peer, ttl: openingTTL, options: options, deadline: deadline, lastError: lastError) }
            }
            for target in peers where openingTTL == nil || target != peer {
                group.addTask {
                    await dial(from: local, to: target, tries: options.tries, options: options, deadline: deadline,
                               lastError: target == peer ? lastError : nil)
                }
            }
            if openingTTL == nil {
                group.addTask { await acceptOne(listener, peers: peers, deadline: deadline, options: options) }
            }
            group.addTask {
                // Cancelled once the punch is decided either way.
                try? await Task.sleep(until: deadline, clock: .continuous)
                return .deadline
            }
            defer { group.cancelAll() }
            // After the opening: full SYNs, and the listener.
            func startFullSYNs(after tried: Int) {
                group.addTask {
                    await dial(from: local, to: peer, tries: options.tries - tried, options: options, deadline: deadline, lastError: lastError)
                }
                do {
                    try listener.listen(backlog: 16)
                    group.addTask { await acceptOne(listener, peers: peers, deadline: deadline, options: options) }
                } catch {
                    // Dialing alone may still punch.
                    lastError.set(error)
                }
            }
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
                case .opened(let tried, let socket?):
                    // The peer's SYN met the waiting socket; if what arrives on it is not the
                    // peer's tag (a middlebox answered), the full SYNs follow after all.
                    group.addTask {
                        let event = await verify(socket, from: peer, tag: tag, deadline: deadline)
                        if case .rejected(let from, let reason) = event { return .openingRejected(from, reason, tries: tried) }
                        return event
                    }
                case .opened(let tried, nil):
                    startFullSYNs(after: tried)
                case .openingRejected(let from, let reason, let tried):
                    options.onRejected?(from, reason)
                    startFullSYNs(after: tried)
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

    /// Sends the receiver's opening SYNs, with a TTL that takes them through our NAT (creating its
    /// mapping) but not to the peer's. The peer's router then cannot answer them with a reset,
    /// which would close our NAT's entry for the pair, and the peer's next SYN passes our NAT and
    /// meets the waiting socket (a simultaneous open). Without them, where two answering NATs are
    /// close together, full SYNs from both sides pass only when they cross within the NATs' round
    /// trip, and two dialers retrying at the same interval can miss each other for seconds.
    ///
    /// The router where a SYN expires may answer with an ICMP time-exceeded, which ends that
    /// connect; routers limit how many of those they send, so the next SYN goes at once, a few
    /// times, until a socket is left waiting. Meanwhile nothing listens: only the socket that sent
    /// the last SYN can answer the peer's, since our NAT would not let out the listener's answer
    /// (another sequence number than the SYN it recorded), and the peer would wait for it.
    private static func open(from local: SocketAddress, to peer: SocketAddress, ttl: Int32, options: PunchOptions,
                             deadline: ContinuousClock.Instant, lastError: LastError) async -> Event {
        var tried = 0
        while tried < min(max(1, options.tries) - 1, maxOpeningSYNs), !Task.isCancelled, ContinuousClock.now < deadline {
            tried += 1
            do {
                let socket = try Socket(.stream, family: peer.family)
                try socket.setReuse()
                try socket.bind(to: local)
                let normal = try socket.hopLimit()
                try socket.setHopLimit(ttl)
                let connected = try socket.connect(to: peer)
                // The SYN has left: what the socket sends next (its SYN-ACK) must reach the peer.
                try socket.setHopLimit(normal)
                if !connected { try await socket.connect(to: peer, until: min(deadline, .now + options.openingPause)) }
                // The time-exceeded may have been queued on the socket instead of ending the connect.
                socket.discardQueuedErrors()
                return .opened(tries: tried, socket)
            } catch let error as SocketError where error.code == .timedOut {
                // Our NAT's mapping is open and the peer's SYN did not come: full SYNs from here.
                break
            } catch {
                lastError.set(error)
            }
        }
        return .opened(tries: tried, nil)
    }

    /// Opening SYNs at most: one more than a Linux router's burst of ICMP errors to one address.
    static let maxOpeningSYNs = 7

    /// Dials the peer from the punch port until one connect succeeds, `tries` run out, or time is up.
    private static func dial(from local: SocketAddress, to peer: SocketAddress, tries: Int, options: PunchOptions,
                             deadline: ContinuousClock.Instant, lastError: LastError?) async -> Event {
        for _ in 0..<max(1, tries) {
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
