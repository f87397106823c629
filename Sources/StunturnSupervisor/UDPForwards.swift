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

/// The exposing side of one UDP tunnel: local service ⇄ punched socket.
struct UDPExposeSession: Sendable {
    let context: ForwardContext
    let target: Endpoint
    let rendezvous: PeerRendezvous

    func run() async {
        let log = context.logger
        guard let tunnel = rendezvous.udpSocket else { return }
        context.statistics.started()
        defer { tunnel.close() }
        do {
            let peer = try await UDPHolePuncher.punch(rendezvous, tag: context.keys.punchTag, options: context.punchOptions)
            var session: TunnelSession?
            var replyPacket: [UInt8]?
            if context.encrypted {
                (session, replyPacket) = try await respond(tunnel, peer: peer)
            }
            let service = try await context.localAddress(target)
            let local = try Socket.udp(on: .any(service.family))
            defer { local.close() }
            log.info("udp tunnel up", metadata: ["peer": "\(peer)", "encrypted": "\(session != nil)"])
            let codec = DatagramCodec(session: session)
            let activity = ActivityClock()
            let handshakeReply = replyPacket
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await pumpFromTunnel(context: context, tunnel: tunnel, peer: peer, codec: codec,
                                         replyPacket: handshakeReply, activity: activity) { payload in
                        sendDatagram(payload, on: local, to: service, context: context)
                    }
                }
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
                        sendWrapped(payload, codec: codec, on: tunnel, to: peer, context: context)
                    }
                }
                await group.next()
                group.cancelAll()
            }
            let totals = activity.totals
            context.statistics.finished(out: totals.out, in: totals.in)
            log.info("udp tunnel closed: idle; \(totals.out) bytes out, \(totals.in) bytes in", metadata: ["peer": "\(peer)"])
        } catch {
            context.statistics.failedBeforeRelay()
            log.warning("\(context.describeFailure(error))", metadata: ["peer": "\(rendezvous.peerAddress)"])
        }
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

    func run() async {
        let log = context.logger
        guard let socket = await context.bindLocal({ try Socket.udp(on: try await context.localAddress(address)) }) else { return }
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
    typealias Link = (tunnel: Socket, peer: SocketAddress, codec: DatagramCodec)

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
            sendWrapped(datagram, codec: link.codec, on: link.tunnel, to: link.peer, context: context)
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
            let peer = try await UDPHolePuncher.punch(rendezvous, tag: context.keys.punchTag, options: context.punchOptions)
            let session = context.encrypted ? try await initiate(tunnel, peer: peer) : nil
            let codec = DatagramCodec(session: session)
            outbox.withLock { outbox in
                for datagram in outbox.connect((tunnel: tunnel, peer: peer, codec: codec)) {
                    sendWrapped(datagram, codec: codec, on: tunnel, to: peer, context: context)
                }
            }
            log.info("udp tunnel up", metadata: ["client": "\(client)", "peer": "\(peer)", "encrypted": "\(session != nil)"])
            let listen = self.listen
            let client = self.client
            await pumpFromTunnel(context: context, tunnel: tunnel, peer: peer, codec: codec, replyPacket: nil, activity: activity) { payload in
                sendDatagram(payload, on: listen, to: client, context: self.context)
            }
            let totals = activity.totals
            context.statistics.finished(out: totals.out, in: totals.in)
            log.info("udp session for \(client) closed: idle; \(totals.out) bytes out, \(totals.in) bytes in")
        } catch {
            context.statistics.failedBeforeRelay()
            log.warning("udp datagrams from \(client) not carried: \(context.describeFailure(error))")
        }
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
