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
        var backoff = Backoff()
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                let started = ContinuousClock.now
                do {
                    let rendezvous = try await context.signaling.pollForInitiator(
                        key: context.keys.signalingKey, wait: receiverLongPoll, udp: context.config.transport == .udp)
                    if backoff.failures > 0 { log.info("signaling server reachable again") }
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

    private func serve(_ rendezvous: PeerRendezvous) async {
        let log = context.logger
        let stats = context.statistics
        stats.started()
        let start = ContinuousClock.now
        do {
            let tunnel = try await TCPHolePuncher.punch(rendezvous, tag: context.keys.punchTag, options: context.punchOptions)
            let punched = ContinuousClock.now - start
            let peer = tunnel.peerDescription
            let session = try await context.secure(tunnel, as: .responder, consequence: "; nothing reached \(target)")
            let local: Socket
            do {
                local = try await Socket.connect(to: try await context.localAddress(target), timeout: context.config.connectTimeout)
            } catch {
                throw SessionFailure(.serviceUnreachable, "cannot reach the exposed service: \(error)", underlying: error)
            }
            log.info("tunnel up", metadata: ["peer": "\(peer)", "punch_ms": "\(punched.milliseconds)",
                                             "encrypted": "\(session != nil)"])
            let report = await context.carry(RelayEndpoint(socket: local, name: "service \(target)"),
                                             RelayEndpoint(socket: tunnel, name: "peer \(peer)"),
                                             transform: session.map(SealingTransform.init))
            stats.finished(out: report.bytesAToB, in: report.bytesBToA)
            log.log(level: report.logLevel, "connection closed: \(report)", metadata: ["peer": "\(peer)"])
        } catch {
            stats.failedBeforeRelay()
            log.warning("\(context.describeFailure(error))", metadata: ["peer": "\(rendezvous.peerAddress)"])
        }
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

/// Opens a local port; each connection is carried to the peer's exposed service.
struct ListenForward: Sendable {
    let context: ForwardContext
    let address: Endpoint

    func run() async {
        if context.config.transport == .udp {
            await UDPListenForward(context: context, address: address).run()
            return
        }
        let log = context.logger
        guard let listener = await context.bindLocal({ try Socket.listener(on: try await context.localAddress(address)) }) else { return }
        defer { listener.close() }
        log.info("listening on \(address), carrying connections to the peer via \(context.config.server)")
        var backoff = Backoff()
        while !Task.isCancelled {
            do {
                let (connection, from) = try await listener.accept(until: nil)
                backoff.reset()
                if !context.submit({ await carry(connection, from: from) }) {
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

    private func carry(_ local: Socket, from client: SocketAddress) async {
        await carryToPeer(context: context, local: RelayEndpoint(socket: local, name: "client \(client)"),
                          description: "connection from \(client)") {
            // Cut short by shutdown: a reset, so the client does not take it for an orderly end.
            if Task.isCancelled { try? local.setAbortiveClose() }
            local.close()
        }
    }
}

/// Signals as initiator, punches, runs the handshake and relays `local` to the peer. On failure
/// `abandon` closes the local side, so a connection that cannot be carried never hangs.
@discardableResult
func carryToPeer(context: ForwardContext, local: @autoclosure () -> RelayEndpoint, description: String,
                 abandon: () -> Void) async -> RelayReport? {
    let log = context.logger
    let stats = context.statistics
    stats.started()
    let start = ContinuousClock.now
    do {
        let rendezvous = try await context.signaling.requestTCPPeer(
            key: context.keys.signalingKey, targetIP: context.config.peerIP ?? "", timeout: context.config.signalTimeout)
        let tunnel = try await TCPHolePuncher.punch(rendezvous, tag: context.keys.punchTag, options: context.punchOptions)
        let peer = tunnel.peerDescription
        let session = try await context.secure(tunnel, as: .initiator)
        log.info("tunnel up", metadata: ["peer": "\(peer)", "setup_ms": "\((ContinuousClock.now - start).milliseconds)",
                                         "encrypted": "\(session != nil)"])
        let report = await context.carry(local(), RelayEndpoint(socket: tunnel, name: "peer \(peer)"),
                                         transform: session.map(SealingTransform.init))
        stats.finished(out: report.bytesAToB, in: report.bytesBToA)
        log.log(level: report.logLevel, "\(description) closed: \(report)", metadata: ["peer": "\(peer)"])
        return report
    } catch {
        stats.failedBeforeRelay()
        abandon()
        if Task.isCancelled {
            log.info("\(description) closed: agent shutting down")
        } else {
            log.warning("\(description) not carried: \(context.describeFailure(error))")
        }
        return nil
    }
}
