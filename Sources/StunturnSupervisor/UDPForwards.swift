import Logging
import StunturnConfig
import StunturnPunch
import StunturnSecure
import Stunturn
import StunturnSignaling
import StunturnSockets
import Synchronization

/// When a UDP session last carried anything, and how much, shared by its two loops.
final class ActivityClock: Sendable {
    private struct State {
        var last = ContinuousClock.now
        var out: UInt64 = 0
        var received: UInt64 = 0
        /// When anything last came from the peer, keepalives included (they are not activity).
        var heard = ContinuousClock.now
    }
    private let state = Mutex(State())
    func carried(out: Int = 0, in received: Int = 0) {
        state.withLock {
            $0.last = .now
            $0.out += UInt64(out)
            $0.received += UInt64(received)
        }
    }
    var lastActivity: ContinuousClock.Instant { state.withLock { $0.last } }
    func heardFromPeer() { state.withLock { $0.heard = .now } }
    var lastHeard: ContinuousClock.Instant { state.withLock { $0.heard } }
    var totals: (out: UInt64, in: UInt64) { state.withLock { ($0.out, $0.received) } }

    /// The next datagram on `socket`, or nil once the session has been idle for `idle` or the
    /// socket failed (a warning names `subject`). An ICMP report of an earlier datagram (the other
    /// end's port briefly closed, a service restarting) is logged at debug and ridden out; the
    /// pause keeps a socket that keeps reporting from spinning.
    func receive(on socket: Socket, idle: Duration, context: ForwardContext, subject: String,
                 metadata: Logger.Metadata = [:]) async -> ([UInt8], SocketAddress)? {
        while !Task.isCancelled {
            do {
                return try await socket.receive(maxLength: 65536, until: lastActivity + idle)
            } catch let error as SocketError where error.code == .timedOut {
                // Traffic the other way may have moved the idle deadline meanwhile.
                if ContinuousClock.now - lastActivity < idle { continue }
                return nil
            } catch let error as SocketError where error.isDatagramDeliveryReport {
                context.logger.debug("\(subject): \(error)", metadata: metadata)
                try? await Task.sleep(for: .milliseconds(10))
            } catch {
                if !Task.isCancelled { context.logger.warning("\(subject) receive failed: \(error)", metadata: metadata) }
                return nil
            }
        }
        return nil
    }
}

/// Carries datagrams from `tunnel` (from `peer`) to `deliver` until idle; answers late punch
/// probes and repeated handshakes; drops forged datagrams with a log line.
func pumpFromTunnel(context: ForwardContext, tunnel: Socket, peer: SocketAddress, codec: DatagramCodec,
                    replyPacket: [UInt8]?, activity: ActivityClock, deliver: ([UInt8]) -> Void) async {
    let idle = context.config.idleTimeout ?? TunnelDatagram.defaultIdleTimeout
    var rejected = 0
    while let (datagram, from) = await activity.receive(on: tunnel, idle: idle, context: context, subject: "udp tunnel",
                                                         metadata: ["peer": "\(peer)"]) {
        if UDPHolePuncher.answerProbe(datagram, from: from, socket: tunnel, tag: context.keys.punchTag) { continue }
        guard from.addressBytes == peer.addressBytes else { continue }
        activity.heardFromPeer()
        if datagram == TunnelDatagram.keepalivePacket { continue }
        if datagram.first == TunnelDatagram.hello, let replyPacket {
            // The peer lost our reply: send it again. A full buffer drops it; the peer retries.
            sendDatagram(replyPacket, on: tunnel, to: from, context: context)
            continue
        }
        do {
            if let payload = try codec.unwrap(datagram) {
                activity.carried(in: payload.count)
                deliver(payload)
            }
        } catch {
            rejected += 1
            if rejected <= 5 { context.logger.warning("dropped a datagram that failed authentication", metadata: ["remote": "\(from)", "error": "\(error)"]) }
        }
    }
}

/// Carries a punched flow's datagrams from the peer to `deliver` and keeps its mappings alive,
/// until it is idle or the peer falls silent; returns why it ended.
func carryPunchedFlow(context: ForwardContext, tunnel: Socket, peer: SocketAddress, codec: DatagramCodec, replyPacket: [UInt8]?,
                      activity: ActivityClock, deliver: @escaping @Sendable ([UInt8]) -> Void) async -> String {
    // The flow starts now: silence is counted from here, not from when it was asked for.
    activity.heardFromPeer()
    return await withTaskGroup(of: String.self) { group in
        group.addTask {
            await pumpFromTunnel(context: context, tunnel: tunnel, peer: peer, codec: codec, replyPacket: replyPacket,
                                 activity: activity, deliver: deliver)
            return "idle"
        }
        group.addTask { await keepUDPFlowAlive(context: context, tunnel: tunnel, peer: peer, activity: activity) }
        let first = await group.next() ?? "idle"
        group.cancelAll()
        return first
    }
}

/// Keeps a punched UDP flow's NAT mappings alive while it is up: a keepalive datagram every
/// keepalive interval (at most 25 s). Returns, ending the flow, once nothing at all has come from
/// the peer for three intervals: the path died (a NAT forgot the mapping, the peer went away), and
/// the next datagram from the client sets a new flow up rather than vanish into this one.
func keepUDPFlowAlive(context: ForwardContext, tunnel: Socket, peer: SocketAddress, activity: ActivityClock) async -> String {
    let interval = min(context.config.keepalive, TunnelDatagram.maximumKeepalive)
    while !Task.isCancelled {
        sendDatagram(TunnelDatagram.keepalivePacket, on: tunnel, to: peer, context: context)
        try? await Task.sleep(for: interval)
        let silence = ContinuousClock.now - activity.lastHeard
        if silence >= interval * 3 {
            return "nothing heard from the peer for \(formatDuration(silence)) (keepalive \(formatDuration(interval)))"
        }
    }
    return "cancelled"
}

/// The exposing side of one UDP tunnel: local service ⇄ punched socket.
struct UDPExposeSession: Sendable {
    let context: ForwardContext
    let target: Endpoint
    let rendezvous: PeerRendezvous

    /// How the session reaches the peer: a punched UDP path, or the server's relay.
    private enum PeerLink: Sendable {
        case udp(peer: SocketAddress, codec: DatagramCodec, replyPacket: [UInt8]?)
        case relay(EstablishedTunnel)
    }

    func run() async {
        let log = context.logger
        guard let tunnel = rendezvous.udpSocket else { return }
        context.statistics.started()
        defer { tunnel.close() }
        do {
            let link = try await establish(tunnel)
            let service = try await context.localAddress(target)
            let local = try Socket.udp(on: .any(service.family))
            defer { local.close() }
            let activity = ActivityClock()
            let context = self.context, target = self.target
            let peerName: String, path: String
            let toPeer: @Sendable ([UInt8]) -> Void
            var finishOutbound: (@Sendable () -> Void)?
            let fromPeer: @Sendable () async -> String
            switch link {
            case .udp(let peer, let codec, let replyPacket):
                (peerName, path) = ("\(peer)", "direct")
                log.info("udp tunnel up", metadata: ["peer": "\(peer)", "path": "direct", "encrypted": "\(codec.isEncrypted)"])
                toPeer = { sendWrapped($0, codec: codec, on: tunnel, to: peer, context: context) }
                fromPeer = {
                    await carryPunchedFlow(context: context, tunnel: tunnel, peer: peer, codec: codec, replyPacket: replyPacket,
                                           activity: activity) { payload in
                        sendDatagram(payload, on: local, to: service, context: context)
                    }
                }
            case .relay(let relayed):
                (peerName, path) = (relayed.peer, "relay")
                log.info("udp tunnel up", metadata: ["peer": "\(relayed.peer)", "path": "relay", "encrypted": "\(relayed.secured != nil)"])
                let (outbound, continuation) = RelayedDatagrams.makeOutbound()
                toPeer = { continuation.yield($0) }
                finishOutbound = { continuation.finish() }
                fromPeer = {
                    await RelayedDatagrams.run(relayed, outbound: outbound, context: context, activity: activity) { payload in
                        sendDatagram(payload, on: local, to: service, context: context)
                    }
                }
            }
            let ended = await withTaskGroup(of: String.self) { group in
                group.addTask { await fromPeer() }
                group.addTask {
                    let idle = context.config.idleTimeout ?? TunnelDatagram.defaultIdleTimeout
                    while let (payload, from) = await activity.receive(on: local, idle: idle, context: context,
                                                                       subject: "udp service \(target)") {
                        // Only the exposed service's answers go into the tunnel.
                        guard from.port == service.port, from.addressBytes == service.addressBytes || service.isUnspecified else { continue }
                        let limit = TunnelDatagram.maxPayload(encrypted: context.encrypted)
                        guard payload.count <= limit else {
                            context.logger.warning("udp datagram of \(payload.count) bytes from \(from) dropped: a tunnel datagram carries at most \(limit)")
                            continue
                        }
                        activity.carried(out: payload.count)
                        toPeer(payload)
                    }
                    return "idle"
                }
                let first = await group.next() ?? "idle"
                finishOutbound?()
                group.cancelAll()
                return first
            }
            let totals = activity.totals
            context.statistics.finished(out: totals.out, in: totals.in, path: path)
            log.info("udp tunnel closed: \(ended); \(totals.out) bytes out, \(totals.in) bytes in", metadata: ["peer": "\(peerName)"])
        } catch {
            context.statistics.failedBeforeRelay()
            log.warning("\(context.describeFailure(error))", metadata: ["peer": "\(rendezvous.peerAddress)"])
        }
    }

    /// The punched UDP path, or the relay, by the forward's policy and what the server granted;
    /// with both allowed, whichever the initiator's handshake arrives on.
    private func establish(_ tunnel: Socket) async throws -> PeerLink {
        let options = context.pathOptions()
        switch try TunnelPaths.plan(rendezvous, options: options) {
        case .directOnly:
            return try await punched(tunnel)
        case .relayOnly(let reason):
            return .relay(try await TunnelPaths.relayed(rendezvous, client: context.signaling, keys: context.keys, options: options, reason: reason))
        case .race:
            let rendezvous = self.rendezvous, context = self.context
            switch try await TunnelPaths.race(relayAfter: options.relayAfter, direct: { try await punched(tunnel) }, relay: {
                try await TunnelPaths.relayed(rendezvous, client: context.signaling, keys: context.keys, options: options,
                                              reason: "the peer chose the relay")
            }, discard: { _ in }, discardRelay: { $0.socket.close() }) {
            case .direct(let link): return link
            case .relay(let relayed, let directError):
                if let directError { log(relayed: "punch failed: \(directError)") }
                return .relay(relayed)
            }
        }
    }

    private func log(relayed reason: String) {
        context.logger.info("udp session relayed through \(context.config.server): \(reason)")
    }

    private func punched(_ tunnel: Socket) async throws -> PeerLink {
        let peer = try await UDPHolePuncher.punch(rendezvous, tag: context.keys.punchTag, options: context.punchOptions)
        guard context.encrypted else { return .udp(peer: peer, codec: DatagramCodec(session: nil), replyPacket: nil) }
        let (session, replyPacket) = try await respond(tunnel, peer: peer)
        return .udp(peer: peer, codec: DatagramCodec(session: session), replyPacket: replyPacket)
    }

    private func respond(_ tunnel: Socket, peer: SocketAddress) async throws -> (TunnelSession, [UInt8]) {
        let deadline = ContinuousClock.now + SecureTunnel.handshakeTimeout
        while true {
            let (datagram, from) = try await tunnel.receive(maxLength: 2048, until: deadline)
            if UDPHolePuncher.answerProbe(datagram, from: from, socket: tunnel, tag: context.keys.punchTag) { continue }
            guard from.addressBytes == peer.addressBytes, let hello = TunnelDatagram.helloMessage(in: datagram) else { continue }
            let handshake = TunnelHandshake(role: .responder, keys: context.keys)
            let reply: [UInt8]
            let session: TunnelSession
            do {
                (reply, session) = try handshake.respond(toHello: hello)
            } catch {
                // A forged or wrong-key hello: keep waiting for the real one until the deadline.
                context.logger.warning("udp tunnel handshake failed", metadata: ["remote": "\(from)", "error": "\(error)"])
                continue
            }
            let packet = TunnelDatagram.replyPacket(reply)
            try await tunnel.send(packet, to: from, until: deadline)
            return (session, packet)
        }
    }
}

/// A local UDP port whose clients each get a tunnel to the peer's exposed UDP service.
struct UDPListenForward: Sendable {
    let context: ForwardContext
    let address: Endpoint
    /// The local socket when the agent bound it at the start.
    var bound: Socket?

    func run() async {
        let log = context.logger
        guard let socket = await context.localSocket(bound: bound, {
            try Socket.udp(on: try await context.localAddress(address))
        }) else { return }
        defer { socket.close() }
        log.info("listening on udp \(address), carrying datagrams to the peer via \(context.config.server)")
        let table = UDPSessionTable()
        var backoff = Backoff()
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let datagram: [UInt8]
                let client: SocketAddress
                do {
                    (datagram, client) = try await socket.receive(maxLength: 65536, until: nil)
                    backoff.reset()
                } catch {
                    if Task.isCancelled { break }
                    let delay = backoff.next()
                    log.error("receive on udp \(address) failed: \(error); retrying in \(formatDuration(delay))")
                    try? await Task.sleep(for: delay)
                    continue
                }
                guard let (session, isNew) = table.session(for: client, limit: TunnelDatagram.maxSessionsPerForward, make: {
                    UDPListenSession(context: context, listen: socket, client: client)
                }) else {
                    log.warning("udp datagram from \(client) dropped: \(TunnelDatagram.maxSessionsPerForward) sessions already open")
                    continue
                }
                session.fromClient(datagram)
                if isNew {
                    group.addTask {
                        await session.run()
                        table.remove(client)
                    }
                }
            }
        }
    }
}

/// A listen forward's UDP sessions by local client, at most `limit` at once.
final class UDPSessionTable: Sendable {
    private let sessions = Mutex<[SocketAddress: UDPListenSession]>([:])

    func session(for client: SocketAddress, limit: Int, make: () -> UDPListenSession) -> (UDPListenSession, Bool)? {
        sessions.withLock { sessions in
            if let existing = sessions[client] { return (existing, false) }
            guard sessions.count < limit else { return nil }
            let created = make()
            sessions[client] = created
            return (created, true)
        }
    }

    func remove(_ client: SocketAddress) { sessions.withLock { _ = $0.removeValue(forKey: client) } }

    var count: Int { sessions.withLock { $0.count } }
}

/// One local UDP client's tunnel.
final class UDPListenSession: Sendable {
    /// Where the client's datagrams go once the tunnel is up.
    enum Link {
        /// The punched UDP path.
        case udp(tunnel: Socket, peer: SocketAddress, codec: DatagramCodec)
        /// The relay: the queue its writer takes from.
        case relay(AsyncStream<[UInt8]>.Continuation)

        func send(_ datagram: [UInt8], context: ForwardContext) {
            switch self {
            case .udp(let tunnel, let peer, let codec): sendWrapped(datagram, codec: codec, on: tunnel, to: peer, context: context)
            case .relay(let queue): queue.yield(datagram)
            }
        }
    }

    /// Datagrams from the client: kept (within caps) until the tunnel is up, then sent at once.
    struct Outbox {
        var queued: [[UInt8]] = []
        var queuedBytes = 0
        var link: Link?

        /// Queues `datagram` while there is no link; false when the caps drop it.
        mutating func queue(_ datagram: [UInt8]) -> Bool {
            guard queued.count < TunnelDatagram.maxQueuedBeforeTunnel,
                  queuedBytes + datagram.count <= TunnelDatagram.maxQueuedBytesBeforeTunnel else { return false }
            queued.append(datagram)
            queuedBytes += datagram.count
            return true
        }

        /// Sets the link and hands back what was queued for it.
        mutating func connect(_ link: Link) -> [[UInt8]] {
            self.link = link
            defer { queued = []; queuedBytes = 0 }
            return queued
        }
    }

    let context: ForwardContext
    let listen: Socket
    let client: SocketAddress
    private let outbox = Mutex(Outbox())
    private let activity = ActivityClock()

    init(context: ForwardContext, listen: Socket, client: SocketAddress) {
        self.context = context
        self.listen = listen
        self.client = client
    }

    /// Sends a client datagram into the tunnel, or keeps it until the tunnel is up.
    func fromClient(_ datagram: [UInt8]) {
        let limit = TunnelDatagram.maxPayload(encrypted: context.encrypted)
        guard datagram.count <= limit else {
            context.logger.warning("udp datagram of \(datagram.count) bytes from \(client) dropped: a tunnel datagram carries at most \(limit)")
            return
        }
        activity.carried(out: datagram.count)
        // Sent under the lock, so no datagram goes to a socket the session is closing.
        let dropped = outbox.withLock { outbox -> Bool in
            guard let link = outbox.link else { return !outbox.queue(datagram) }
            link.send(datagram, context: context)
            return false
        }
        if dropped {
            context.logger.debug("udp datagram from \(client) dropped: the queue before the tunnel is up is full")
        }
    }

    func run() async {
        let log = context.logger
        context.statistics.started()
        do {
            let rendezvous = try await context.signaling.requestUDPPeer(
                key: context.keys.signalingKey, targetIP: context.config.peerIP ?? "", timeout: context.config.signalTimeout)
            guard let tunnel = rendezvous.udpSocket else { throw SessionFailure(.noUDPAddress, "the server paired this UDP forward without a UDP address") }
            // Unlink before the socket closes, under the lock, so no client datagram can reach a closed socket.
            defer {
                outbox.withLock { $0.link = nil }
                tunnel.close()
            }
            let listen = self.listen
            let client = self.client
            let context = self.context
            let ended: String, path: String
            switch try await establish(rendezvous, tunnel: tunnel) {
            case .direct(let peer, let codec):
                path = "direct"
                connect(.udp(tunnel: tunnel, peer: peer, codec: codec))
                log.info("udp tunnel up", metadata: ["client": "\(client)", "peer": "\(peer)", "path": "direct", "encrypted": "\(codec.isEncrypted)"])
                ended = await carryPunchedFlow(context: context, tunnel: tunnel, peer: peer, codec: codec, replyPacket: nil,
                                               activity: activity) { payload in
                    sendDatagram(payload, on: listen, to: client, context: context)
                }
            case .relay(let relayed):
                path = "relay"
                let (outbound, queue) = RelayedDatagrams.makeOutbound()
                connect(.relay(queue))
                defer { queue.finish() }
                log.info("udp tunnel up", metadata: ["client": "\(client)", "peer": "\(relayed.peer)", "path": "relay",
                                                     "encrypted": "\(relayed.secured != nil)"])
                ended = await RelayedDatagrams.run(relayed, outbound: outbound, context: context, activity: activity) { payload in
                    sendDatagram(payload, on: listen, to: client, context: context)
                }
            }
            let totals = activity.totals
            context.statistics.finished(out: totals.out, in: totals.in, path: path)
            log.info("udp session for \(client) closed: \(ended); \(totals.out) bytes out, \(totals.in) bytes in")
        } catch {
            context.statistics.failedBeforeRelay()
            log.warning("udp datagrams from \(client) not carried: \(context.describeFailure(error))")
        }
    }

    /// Sets the link and sends what the client sent while there was none.
    private func connect(_ link: Link) {
        outbox.withLock { outbox in
            for datagram in outbox.connect(link) { link.send(datagram, context: context) }
        }
    }

    private enum Established: Sendable {
        case direct(SocketAddress, DatagramCodec)
        case relay(EstablishedTunnel)
    }

    /// The punched UDP path, or the relay, by the forward's policy and what the server granted;
    /// with both, the punched path if it is up within `relay_after`.
    private func establish(_ rendezvous: PeerRendezvous, tunnel: Socket) async throws -> Established {
        let options = context.pathOptions()
        let context = self.context
        switch try TunnelPaths.plan(rendezvous, options: options) {
        case .directOnly:
            return try await punched(rendezvous, tunnel: tunnel)
        case .relayOnly(let reason):
            context.logger.info("udp session relayed through \(context.config.server): \(reason)")
            return .relay(try await TunnelPaths.relayed(rendezvous, client: context.signaling, keys: context.keys, options: options, reason: reason))
        case .race:
            let client = context.signaling
            // The punch alone races the relay; the handshake runs on the path chosen, so the peer
            // never completes it on one path while this side takes the other.
            let punchTag = context.keys.punchTag, punchOptions = context.punchOptions
            switch try await TunnelPaths.race(relayAfter: options.relayAfter, direct: {
                try await UDPHolePuncher.punch(rendezvous, tag: punchTag, options: punchOptions)
            }, relay: {
                try await client.joinRelay(rendezvous, key: context.keys.signalingKey)
            }, discard: { _ in }, discardRelay: { $0.0.close() }) {
            case .direct(let peer):
                let session = context.encrypted ? try await initiate(tunnel, peer: peer) : nil
                return .direct(peer, DatagramCodec(session: session))
            case .relay((let socket, let peer), let directError):
                let reason = TunnelPaths.relayReason(directError: directError, relayAfter: options.relayAfter)
                context.logger.info("udp session relayed through \(context.config.server): \(reason)")
                return .relay(try await TunnelPaths.secureRelay(socket, peer: peer, client: client, keys: context.keys,
                                                                options: options, reason: reason))
            }
        }
    }

    private func punched(_ rendezvous: PeerRendezvous, tunnel: Socket) async throws -> Established {
        let peer = try await UDPHolePuncher.punch(rendezvous, tag: context.keys.punchTag, options: context.punchOptions)
        let session = context.encrypted ? try await initiate(tunnel, peer: peer) : nil
        return .direct(peer, DatagramCodec(session: session))
    }

    private func initiate(_ tunnel: Socket, peer: SocketAddress) async throws -> TunnelSession {
        let handshake = TunnelHandshake(role: .initiator, keys: context.keys)
        let hello = TunnelDatagram.helloPacket(try handshake.makeHello())
        var lastError = "no reply"
        let deadline = ContinuousClock.now + SecureTunnel.handshakeTimeout
        while ContinuousClock.now < deadline {
            try Task.checkCancellation()
            try await tunnel.send(hello, to: peer, until: deadline)
            let retry = min(deadline, .now + TunnelDatagram.handshakeRetry)
            while ContinuousClock.now < retry {
                try Task.checkCancellation()
                let datagram: [UInt8]
                let from: SocketAddress
                do {
                    (datagram, from) = try await tunnel.receive(maxLength: 2048, until: retry)
                } catch let error as SocketError where error.code == .timedOut || error.isDatagramDeliveryReport {
                    if error.isDatagramDeliveryReport { lastError = "\(error)" }
                    break  // send the hello again
                }
                if UDPHolePuncher.answerProbe(datagram, from: from, socket: tunnel, tag: context.keys.punchTag) { continue }
                guard from.addressBytes == peer.addressBytes, let reply = TunnelDatagram.replyMessage(in: datagram) else { continue }
                do {
                    return try handshake.finish(reply: reply)
                } catch {
                    // One forged reply must not end the session; the real one may still come.
                    context.logger.warning("udp tunnel handshake failed", metadata: ["remote": "\(from)", "error": "\(error)"])
                    lastError = "\(error)"
                }
            }
        }
        throw SessionFailure(.handshake, "tunnel handshake with \(peer) failed within \(formatDuration(SecureTunnel.handshakeTimeout)): \(lastError)")
    }
}

/// Sends one datagram without waiting: a full socket buffer drops it, as UDP would; any other
/// failure is logged.
func sendDatagram(_ datagram: [UInt8], on socket: Socket, to address: SocketAddress, context: ForwardContext) {
    do {
        if try !datagram.withUnsafeBytes({ try socket.send($0, to: address) }) {
            context.logger.debug("udp datagram to \(address) dropped: socket buffer full")
        }
    } catch {
        context.logger.warning("udp datagram to \(address) not sent: \(error)")
    }
}

/// Seals (or frames) `payload` and sends it into a tunnel; a failure to seal is logged, never silent.
func sendWrapped(_ payload: [UInt8], codec: DatagramCodec, on tunnel: Socket, to peer: SocketAddress, context: ForwardContext) {
    let wrapped: [UInt8]
    do {
        wrapped = try codec.wrap(payload)
    } catch {
        context.logger.error("udp datagram for \(peer) dropped: sealing failed: \(error)")
        return
    }
    sendDatagram(wrapped, on: tunnel, to: peer, context: context)
}
