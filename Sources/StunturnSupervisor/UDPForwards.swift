import Logging
import StunturnConfig
import StunturnPunch
import StunturnSecure
import StunturnSignaling
import StunturnSockets

/// Datagram kinds on a punched UDP path (punch probes start with "STPU" and never collide).
enum TunnelDatagram {
    static let hello: UInt8 = 1
    static let reply: UInt8 = 2
    static let sealed: UInt8 = 3
    static let plaintext: UInt8 = 4
    /// Handshake retransmission: a lost hello or reply is sent again at this pace.
    static let handshakeRetry: Duration = .milliseconds(250)
    /// A UDP session has no close; without traffic for this long it ends.
    static let defaultIdleTimeout: Duration = .seconds(120)
    /// Datagrams a local client sends before its tunnel is up are kept, up to this many and
    /// this many bytes (so a forward's sessions together hold at most 16 MiB while they wait).
    static let maxQueuedBeforeTunnel = 64
    static let maxQueuedBytesBeforeTunnel = 64 * 1024
    /// The largest payload a tunnel datagram carries: a UDP datagram's 65,507 bytes less the
    /// kind byte and, when encrypted, the sealing overhead. Larger ones are dropped with a log line.
    static func maxPayload(encrypted: Bool) -> Int { 65_507 - 1 - (encrypted ? DatagramSealer.overhead : 0) }
    /// Local clients (source addresses) with a tunnel at once, per listen forward: each costs a
    /// signaling exchange, a punch and a socket, so a flood of spoofed sources must not multiply them.
    static let maxSessionsPerForward = 256
}

/// When a UDP session last carried anything, and how much, shared by its two loops.
final class ActivityClock: @unchecked Sendable {
    private let lock = Lock()
    private var last = ContinuousClock.now
    private var bytes: (out: UInt64, in: UInt64) = (0, 0)
    func touch() { lock.withLock { last = .now } }
    func carried(out: Int = 0, in received: Int = 0) {
        lock.withLock {
            last = .now
            bytes.out += UInt64(out)
            bytes.in += UInt64(received)
        }
    }
    var lastActivity: ContinuousClock.Instant { lock.withLock { last } }
    var totals: (out: UInt64, in: UInt64) { lock.withLock { bytes } }
}

/// Seals or passes through datagrams for one UDP tunnel.
struct DatagramCodec: Sendable {
    let session: TunnelSession?

    func wrap(_ payload: [UInt8]) throws -> [UInt8] {
        guard let session else { return [TunnelDatagram.plaintext] + payload }
        var out: [UInt8] = [TunnelDatagram.sealed]
        try payload.withUnsafeBytes { try session.datagramSealer.seal($0, appendingTo: &out) }
        return out
    }

    /// The payload of a data datagram, nil for anything else; a forged or replayed one throws.
    func unwrap(_ datagram: [UInt8]) throws -> [UInt8]? {
        guard let kind = datagram.first else { return nil }
        if let session, kind == TunnelDatagram.sealed {
            var out: [UInt8] = []
            try datagram.withUnsafeBytes { try session.datagramOpener.open(UnsafeRawBufferPointer(rebasing: $0[1...]), appendingTo: &out) }
            return out
        }
        if session == nil, kind == TunnelDatagram.plaintext { return Array(datagram[1...]) }
        return nil
    }
}

/// Carries datagrams from `tunnel` (from `peer`) to `deliver` until idle; answers late punch
/// probes and repeated handshakes; drops forged datagrams with a log line.
func pumpFromTunnel(context: ForwardContext, tunnel: Socket, peer: SocketAddress, codec: DatagramCodec,
                    replyPacket: [UInt8]?, activity: ActivityClock, deliver: ([UInt8]) -> Void) async {
    let idle = context.config.idleTimeout ?? TunnelDatagram.defaultIdleTimeout
    var rejected = 0
    while !Task.isCancelled {
        let datagram: [UInt8]
        let from: SocketAddress
        do {
            (datagram, from) = try await tunnel.receive(maxLength: 65536, until: activity.lastActivity + idle)
        } catch {
            if ContinuousClock.now - activity.lastActivity < idle && !Task.isCancelled { continue }
            return
        }
        if UDPHolePuncher.answerProbe(datagram, from: from, socket: tunnel, tag: context.keys.punchTag) { continue }
        guard from.addressBytes == peer.addressBytes else { continue }
        if datagram.first == TunnelDatagram.hello, let replyPacket {
            _ = try? replyPacket.withUnsafeBytes { try tunnel.send($0, to: from) }
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
            let service = try context.localAddress(target)
            let local = try Socket.udp(on: .any(service.family))
            defer { local.close() }
            log.info("udp tunnel up", metadata: ["peer": "\(peer)", "encrypted": "\(session != nil)"])
            let codec = DatagramCodec(session: session)
            let activity = ActivityClock()
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await pumpFromTunnel(context: context, tunnel: tunnel, peer: peer, codec: codec,
                                         replyPacket: replyPacket, activity: activity) { payload in
                        _ = try? payload.withUnsafeBytes { try local.send($0, to: service) }
                    }
                }
                group.addTask {
                    let idle = context.config.idleTimeout ?? TunnelDatagram.defaultIdleTimeout
                    while !Task.isCancelled {
                        guard let (payload, from) = try? await local.receive(maxLength: 65536, until: activity.lastActivity + idle) else {
                            if ContinuousClock.now - activity.lastActivity < idle && !Task.isCancelled { continue }
                            return
                        }
                        // Only the exposed service's answers go into the tunnel.
                        guard from.port == service.port, from.addressBytes == service.addressBytes || service.isUnspecified else { continue }
                        let limit = TunnelDatagram.maxPayload(encrypted: context.encrypted)
                        guard payload.count <= limit else {
                            context.logger.warning("udp datagram of \(payload.count) bytes from \(from) dropped: a tunnel datagram carries at most \(limit)")
                            continue
                        }
                        activity.carried(out: payload.count)
                        if let wrapped = try? codec.wrap(payload) {
                            _ = try? wrapped.withUnsafeBytes { try tunnel.send($0, to: peer) }
                        }
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
            guard from.addressBytes == peer.addressBytes, datagram.first == TunnelDatagram.hello,
                  datagram.count == 1 + TunnelHandshake.helloLength else { continue }
            let handshake = TunnelHandshake(role: .responder, keys: context.keys)
            guard let (reply, session) = try? handshake.respond(toHello: Array(datagram[1...])) else {
                // A forged or wrong-key hello: keep waiting for the real one until the deadline.
                context.logger.warning("udp tunnel handshake failed", metadata: ["remote": "\(from)"])
                continue
            }
            let packet = [TunnelDatagram.reply] + reply
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
        guard let socket = await context.bindLocal({ try Socket.udp(on: try context.localAddress(address)) }) else { return }
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

final class UDPSessionTable: @unchecked Sendable {
    private let lock = Lock()
    private var sessions: [SocketAddress: UDPListenSession] = [:]

    func session(for client: SocketAddress, limit: Int, make: () -> UDPListenSession) -> (UDPListenSession, Bool)? {
        lock.withLock {
            if let existing = sessions[client] { return (existing, false) }
            guard sessions.count < limit else { return nil }
            let created = make()
            sessions[client] = created
            return (created, true)
        }
    }

    func remove(_ client: SocketAddress) { lock.withLock { _ = sessions.removeValue(forKey: client) } }
}

/// One local UDP client's tunnel.
final class UDPListenSession: @unchecked Sendable {
    let context: ForwardContext
    let listen: Socket
    let client: SocketAddress
    private let lock = Lock()
    private var queued: [[UInt8]] = []
    private var queuedBytes = 0
    private var link: (tunnel: Socket, peer: SocketAddress, codec: DatagramCodec)?
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
        // Sealing happens under the lock: the sealer's counter must never be used by two
        // threads at once, or two datagrams would share a nonce.
        lock.withLock {
            guard let link else {
                if queued.count < TunnelDatagram.maxQueuedBeforeTunnel,
                   queuedBytes + datagram.count <= TunnelDatagram.maxQueuedBytesBeforeTunnel {
                    queued.append(datagram)
                    queuedBytes += datagram.count
                }
                return
            }
            Self.send(datagram, over: link)
        }
    }

    /// Seals and sends without waiting: a full socket buffer drops the datagram, as UDP would.
    private static func send(_ datagram: [UInt8], over link: (tunnel: Socket, peer: SocketAddress, codec: DatagramCodec)) {
        guard let wrapped = try? link.codec.wrap(datagram) else { return }
        _ = try? wrapped.withUnsafeBytes { try link.tunnel.send($0, to: link.peer) }
    }

    func run() async {
        let log = context.logger
        context.statistics.started()
        do {
            let rendezvous = try await context.signaling.requestUDPPeer(
                key: context.keys.signalingKey, targetIP: context.config.peerIP ?? "", timeout: context.config.signalTimeout)
            guard let tunnel = rendezvous.udpSocket else { throw SessionFailure("the server paired this UDP forward without a UDP address") }
            // Unlink before the socket closes, under the lock, so no client datagram can reach a closed socket.
            defer {
                lock.withLock { link = nil }
                tunnel.close()
            }
            let peer = try await UDPHolePuncher.punch(rendezvous, tag: context.keys.punchTag, options: context.punchOptions)
            let session = context.encrypted ? try await initiate(tunnel, peer: peer) : nil
            let codec = DatagramCodec(session: session)
            lock.withLock {
                let ready = (tunnel: tunnel, peer: peer, codec: codec)
                link = ready
                for datagram in queued { Self.send(datagram, over: ready) }
                queued = []
                queuedBytes = 0
            }
            log.info("udp tunnel up", metadata: ["client": "\(client)", "peer": "\(peer)", "encrypted": "\(session != nil)"])
            let listen = self.listen
            let client = self.client
            await pumpFromTunnel(context: context, tunnel: tunnel, peer: peer, codec: codec, replyPacket: nil, activity: activity) { payload in
                _ = try? payload.withUnsafeBytes { try listen.send($0, to: client) }
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
        let hello = [TunnelDatagram.hello] + (try handshake.makeHello())
        var lastError = "no reply"
        let deadline = ContinuousClock.now + SecureTunnel.handshakeTimeout
        while ContinuousClock.now < deadline {
            try Task.checkCancellation()
            try await tunnel.send(hello, to: peer, until: deadline)
            let retry = min(deadline, .now + TunnelDatagram.handshakeRetry)
            while ContinuousClock.now < retry {
                try Task.checkCancellation()
                guard let (datagram, from) = try? await tunnel.receive(maxLength: 2048, until: retry) else { break }
                if UDPHolePuncher.answerProbe(datagram, from: from, socket: tunnel, tag: context.keys.punchTag) { continue }
                guard from.addressBytes == peer.addressBytes, datagram.first == TunnelDatagram.reply,
                      datagram.count == 1 + TunnelHandshake.replyLength else { continue }
                do {
                    return try handshake.finish(reply: Array(datagram[1...]))
                } catch {
                    // One forged reply must not end the session; the real one may still come.
                    context.logger.warning("udp tunnel handshake failed", metadata: ["remote": "\(from)", "error": "\(error)"])
                    lastError = "\(error)"
                }
            }
        }
        throw SessionFailure("tunnel handshake with \(peer) failed within \(formatDuration(SecureTunnel.handshakeTimeout)): \(lastError)")
    }
}
