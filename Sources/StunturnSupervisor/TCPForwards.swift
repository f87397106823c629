import Logging
import StunturnConfig
import StunturnPunch
import StunturnRelay
import StunturnSecure
import Stunturn
import StunturnSignaling
import StunturnSockets

/// How long an exposing agent's long-poll asks the server to hold: long enough to keep polling
/// traffic negligible, short enough that a dead server connection is noticed.
let receiverLongPoll: Duration = .seconds(25)
/// Between polls of a server that answers at once (one without long-poll support).
let receiverPollInterval: Duration = .seconds(1)

/// Makes a local service reachable to the peer: polls as receiver, punches, then relays.
struct ExposeForward: Sendable {
    let context: ForwardContext
    let target: Endpoint

    func run() async {
        let log = context.logger
        log.info("exposing \(target) (\(context.config.transport)) via \(context.config.server)")
        context.statistics.updateLink { $0.state = .waitingForPeer }
        var backoff = Backoff()
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let started = ContinuousClock.now
                do {
                    // Said as soon as the server takes the poll, not when the long-poll ends.
                    let recovering = backoff.failures > 0
                    let rendezvous = try await context.signaling.pollForInitiator(
                        key: context.keys.signalingKey, wait: receiverLongPoll, udp: context.config.transport == .udp) {
                        if recovering { log.info("signaling server reachable again") }
                    }
                    backoff.reset()
                    guard let rendezvous else {
                        if ContinuousClock.now - started < receiverLongPoll / 2 { try? await Task.sleep(for: receiverPollInterval) }
                        continue
                    }
                    log.debug("initiator found", metadata: ["peer": "\(rendezvous.peerAddress)"])
                    if rendezvous.transport == .udp {
                        // Datagram sessions have no stream to finish: they stop with the forward.
                        group.addTask { await UDPExposeSession(context: context, target: target, rendezvous: rendezvous).run() }
                    } else if !context.submit({ await serve(rendezvous) }) {
                        rendezvous.signalingSocket?.close()
                    }
                } catch {
                    if Task.isCancelled { break }
                    let delay = backoff.next()
                    log.warning("\(context.describeFailure(error)); retrying in \(formatDuration(delay))")
                    try? await Task.sleep(for: delay)
                }
            }
        }
    }

    /// Punches and runs the handshake for one paired initiator, then carries its session: each
    /// stream the peer opens is a new connection to the exposed service.
    private func serve(_ rendezvous: PeerRendezvous) async {
        let log = context.logger
        let start = ContinuousClock.now
        let session: RelaySession
        let peer: String
        do {
            let tunnel = try await context.establish(rendezvous, client: context.signaling, consequence: "; nothing reached \(target)")
            let punched = ContinuousClock.now - start
            peer = tunnel.peer
            // Resolved once per session: each stream then connects at once, from the relay's queue.
            let address: SocketAddress
            do {
                address = try await context.localAddress(target)
            } catch {
                throw SessionFailure(.serviceUnreachable, "cannot resolve the exposed service \(target): \(error)", underlying: error)
            }
            let context = self.context, target = self.target, path = tunnel.path.rawValue
            var connector = IncomingConnector(address: address, timeout: context.config.connectTimeout, name: "service \(target)") { id, report in
                context.record(report, description: "stream \(id) to \(target)", peer: peer, path: path)
            }
            connector.onOpen = { _ in context.statistics.started() }
            session = context.startSession(on: tunnel.socket, peer: peer, side: .responder, secured: tunnel.secured,
                                           connectIncoming: connector)
            context.statistics.sessionUp(session, path: tunnel.path.rawValue, candidate: tunnel.candidate, peer: peer,
                                         setup: ContinuousClock.now - start)
            log.info("tunnel up: session with the peer established", metadata: [
                "peer": "\(peer)", "path": "\(tunnel.path)", "setup_ms": "\(punched.milliseconds)", "encrypted": "\(tunnel.secured != nil)"])
        } catch {
            // A peer that asks for direct only while a session with this forward is up is trying
            // to move a relayed session to a direct path, and will try again later: routine, and
            // not a failed set-up of the forward's link.
            let upgradeAttempt = rendezvous.peerRelay == .never && !context.statistics.link.sessions.isEmpty
            if !upgradeAttempt {
                context.statistics.failedSetup()
                context.statistics.setupFailed(context.describeFailure(error))
            }
            log.log(level: upgradeAttempt ? .info : .warning,
                    "\(upgradeAttempt ? "direct path attempt (the session stays on its path): " : "")\(context.describeFailure(error))",
                    metadata: ["peer": "\(rendezvous.peerAddress)"])
            return
        }
        context.logEnd(of: await context.hold(session), peer: peer)
    }
}

extension RelayReport {
    /// A broken connection is worth a warning: the application saw a reset, and the line says why.
    /// An idle time-out or a shutdown resets too, but is the agent's own doing.
    var logLevel: Logger.Level { reset && !endedByRelay ? .warning : .info }
}

/// Why one session failed before its relay started, worded for the log, with the error underneath.
struct SessionFailure: Error, CustomStringConvertible {
    struct Code: Hashable, Sendable {
        private enum Base: Hashable, Sendable { case handshake, serviceUnreachable, noUDPAddress }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        /// The tunnel handshake failed (wrong key, a stranger, no answer).
        static let handshake = Code(.handshake)
        /// The exposed local service refused or did not answer.
        static let serviceUnreachable = Code(.serviceUnreachable)
        /// The server paired a UDP forward without the address it needs.
        static let noUDPAddress = Code(.noUDPAddress)
    }

    let code: Code
    let description: String
    let underlying: (any Error)?

    init(_ code: Code, _ description: String, underlying: (any Error)? = nil) {
        self.code = code
        self.description = description
        self.underlying = underlying
    }
}

/// Opens a local port and keeps a session with the peer up; each connection is a stream on it.
struct ListenForward: Sendable {
    let context: ForwardContext
    let address: Endpoint
    /// The local socket when the agent bound it at the start; else it is bound here, with retries.
    var bound: Socket?

    func run() async {
        if context.config.transport == .udp {
            await UDPListenForward(context: context, address: address, bound: bound).run()
            return
        }
        let log = context.logger
        guard let listener = await context.localSocket(bound: bound, {
            try Socket.listener(on: try await context.localAddress(address))
        }) else { return }
        defer { listener.close() }
        log.info("listening on \(address), carrying connections to the peer via \(context.config.server)")
        let keeper = SessionKeeper()
        await withDiscardingTaskGroup { group in
            group.addTask {
                await keepSession(keeper)
                // No session comes up any more: connections waiting for one stop waiting.
                keeper.shutDown()
            }
            await accept(on: listener, keeper: keeper)
            group.cancelAll()
        }
    }

    private func accept(on listener: Socket, keeper: SessionKeeper) async {
        let log = context.logger
        var backoff = Backoff()
        while !Task.isCancelled {
            do {
                let (connection, from) = try await listener.accept(until: nil)
                backoff.reset()
                // With the session up, the connection is a stream on it at once; the session
                // itself is what the connection pool holds and drains.
                if let (session, peer) = keeper.current {
                    context.statistics.started()
                    let context = self.context, path = context.statistics.path(of: session) ?? context.statistics.link.path
                    session.open(connection, name: "client \(from)") { report in
                        context.record(report, description: "connection from \(from)", peer: peer, path: path)
                    }
                    continue
                }
                if !context.submit({ await carry(connection, from: from, keeper: keeper) }) {
                    log.info("connection from \(from) refused: the agent is shutting down")
                    connection.close()
                }
            } catch {
                if Task.isCancelled { break }
                // Out of descriptors, or one client's failed connection: pause, never spin,
                // and keep the listener (and the sessions it already carries).
                let delay = backoff.next()
                log.error("accept on \(address) failed: \(error); retrying in \(formatDuration(delay))")
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// Sets the session up, holds it (in the connection pool, so it drains on shutdown) and sets
    /// it up again, with back-off, whenever it ends; until the forward stops. A relayed session is
    /// replaced by a direct one as soon as one comes up (tried in the background, with back-off):
    /// new streams go direct, and the relayed session ends once its last stream has.
    private func keepSession(_ keeper: SessionKeeper) async {
        let log = context.logger
        var backoff = Backoff()
        // The path of the last session that was up ("none" before the first), and why the link
        // went down since, for the line that says where the next session goes.
        var path = "none"
        var down: String?
        var next: OpenedSession?
        while !Task.isCancelled {
            do {
                let opened: OpenedSession
                if let upgraded = next {
                    opened = upgraded
                    next = nil
                } else {
                    opened = try await context.openSession()
                }
                let (session, peer) = (opened.session, opened.peer)
                let started = ContinuousClock.now
                if path != opened.path.rawValue || down != nil {
                    var why = opened.relayReason ?? (opened.path == .direct ? "direct path up" : "relayed")
                    if let down { why += "; after: \(down)" }
                    log.info("path \(path) -> \(opened.path) (\(why))", metadata: ["peer": "\(peer)"])
                    path = opened.path.rawValue
                    down = nil
                }
                keeper.up(session, peer: peer)
                if !context.submit({ context.logEnd(of: await context.hold(session), peer: peer) }) {
                    session.close(reason: "agent shutting down")
                }
                if opened.path == .relay && opened.mayGoDirect && context.config.relay == .auto,
                   let direct = await upgradeWhileUp(session) {
                    log.info("path relay -> direct (a direct path came up; streams on the relay finish there)",
                             metadata: ["peer": "\(direct.peer)"])
                    session.drain()
                    next = direct
                    path = direct.path.rawValue
                    continue
                }
                guard let report = await session.endedUnlessCancelled() else { return }
                keeper.down(session, reason: "the last session ended: \(report.reason)")
                down = "the \(path) session ended: \(report.reason)"
                log.info("path \(path) -> none (the session ended: \(report.reason))")
                // A session that lasted was healthy: set it up again at once, not after a long wait.
                if ContinuousClock.now - started > .seconds(30) { backoff.reset() }
                if Task.isCancelled { return }
                let delay = backoff.next()
                context.statistics.backingOff()
                log.info("setting the session up again in \(formatDuration(delay))")
                try? await Task.sleep(for: delay)
            } catch {
                if Task.isCancelled { return }
                let reason = context.describeFailure(error)
                keeper.failed(reason)
                context.statistics.setupFailed(reason)
                if down == nil && path == "none" { down = reason }
                let delay = backoff.next()
                context.statistics.backingOff()
                log.warning("no session with the peer: \(reason); retrying in \(formatDuration(delay))")
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// While a relayed session is up, tries a direct one now and then (every 30 s at first, then
    /// less often, up to every 5 minutes). Returns the direct session once one is up; nil when the
    /// relayed session ended first or the forward stops.
    private func upgradeWhileUp(_ relayed: RelaySession) async -> OpenedSession? {
        let context = self.context
        return await withTaskGroup(of: OpenedSession?.self) { group in
            group.addTask {
                _ = await relayed.endedUnlessCancelled()
                return nil
            }
            group.addTask {
                var backoff = Backoff(base: .seconds(30), cap: .seconds(300))
                while !Task.isCancelled {
                    try? await Task.sleep(for: backoff.next())
                    if Task.isCancelled || relayed.isEnded { return nil }
                    do {
                        let direct = try await context.openSession(relay: .never)
                        if direct.path == .direct { return direct }
                        direct.session.close(reason: "not direct")
                    } catch {
                        context.logger.debug("direct path still unavailable: \(context.describeFailure(error))")
                    }
                }
                return nil
            }
            var direct = await group.next() ?? nil
            group.cancelAll()
            // A direct session that came up as the relayed one ended is still the one to use.
            for await late in group {
                if let late { if direct == nil { direct = late } else { late.session.close(reason: "a direct session is already up") } }
            }
            return direct
        }
    }

    private func carry(_ local: Socket, from client: SocketAddress, keeper: SessionKeeper) async {
        let description = "connection from \(client)"
        context.statistics.started()
        guard let (session, peer) = await keeper.session(within: context.config.signalTimeout) else {
            context.statistics.failedBeforeRelay()
            // Nothing reached the peer: the client sees a reset, never an orderly end it could take
            // for the service's answer.
            try? local.setAbortiveClose()
            if Task.isCancelled {
                context.logger.info("\(description) closed: agent shutting down")
            } else {
                context.logger.warning("\(description) not carried: no session with the peer within \(formatDuration(context.config.signalTimeout)) (\(keeper.lastFailure ?? "still being set up"))")
            }
            local.close()
            return
        }
        let path = context.statistics.path(of: session) ?? context.statistics.link.path
        let report = await session.carry(local, name: "client \(client)")
        context.record(report, description: description, peer: peer, path: path)
    }
}
