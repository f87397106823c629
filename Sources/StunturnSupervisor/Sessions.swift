import Logging
import ServiceLifecycle
import Stunturn
import StunturnConfig
import StunturnMux
import StunturnRelay
import StunturnSockets
import Synchronization

/// A session the listen side set up, and how it reaches the peer.
struct OpenedSession: Sendable {
    let session: RelaySession
    let peer: String
    let path: TunnelPath
    /// Relayed, but both sides' policies would let it go direct.
    let mayGoDirect: Bool
    /// Why it is relayed, when it is.
    let relayReason: String?
}

extension ForwardContext {
    var sessionOptions: SessionOptions {
        SessionOptions(maxStreams: config.maxStreams, keepalive: config.keepalive, streamIdleTimeout: config.idleTimeout)
    }

    /// Signals as initiator, then sets the tunnel up on the paths the policy allows (punched,
    /// relayed) and runs the handshake: a session with the peer, up. `relay` overrides the
    /// forward's policy (the upgrade attempts of a relayed session are direct only).
    func openSession(relay: RelayMode? = nil) async throws -> OpenedSession {
        if statistics.link.sessions.isEmpty { statistics.updateLink { $0.state = .waitingForPeer } }
        let start = ContinuousClock.now
        var client = signaling
        if let relay { client.relay = RelayPolicy(rawValue: relay.rawValue) }
        let rendezvous = try await client.requestTCPPeer(
            key: keys.signalingKey, targetIP: config.peerIP ?? "", timeout: config.signalTimeout)
        let paired = ContinuousClock.now - start
        let tunnel = try await establish(rendezvous, client: client, relay: relay)
        let session = startSession(on: tunnel.socket, peer: tunnel.peer, side: .initiator, secured: tunnel.secured)
        statistics.sessionUp(session, path: tunnel.path.rawValue, candidate: tunnel.candidate, peer: tunnel.peer,
                             setup: ContinuousClock.now - start)
        logger.info("tunnel up: session with the peer established", metadata: [
            "peer": "\(tunnel.peer)", "path": "\(tunnel.path)", "signal_ms": "\(paired.milliseconds)",
            "setup_ms": "\((ContinuousClock.now - start).milliseconds)", "encrypted": "\(tunnel.secured != nil)"])
        return OpenedSession(session: session, peer: tunnel.peer, path: tunnel.path, mayGoDirect: tunnel.mayGoDirect,
                             relayReason: tunnel.relayReason)
    }

    /// The tunnel on the best path the pairing allows; a handshake failure names the peer.
    func establish(_ rendezvous: PeerRendezvous, client: SignalingClient, relay: RelayMode? = nil,
                   consequence: String = "") async throws -> EstablishedTunnel {
        do {
            let tunnel = try await TunnelPaths.establish(rendezvous, client: client, keys: keys, options: pathOptions(relay: relay))
            if let reason = tunnel.relayReason { logger.info("session relayed through \(config.server): \(reason)") }
            return tunnel
        } catch let error as HandshakeError {
            throw SessionFailure(.handshake, "\(error)\(consequence)", underlying: error)
        } catch let error as PathError {
            // A handshake that failed on the direct path is the cause worth naming (a wrong key, a
            // plaintext peer); the relay's failure after it says only that it was not used.
            guard let handshake = error.direct as? HandshakeError else { throw error }
            throw SessionFailure(.handshake, "\(handshake)\(consequence)", underlying: error)
        }
    }

    /// Runs the multiplexer on an established tunnel.
    func startSession(on tunnel: Socket, peer: String, side: MuxSession.Side, secured: TunnelSession?,
                      connectIncoming: IncomingConnector? = nil) -> RelaySession {
        let logger = self.logger
        return relay.session(tunnel: tunnel, peerName: "peer \(peer)", side: side, transform: secured.map(SealingTransform.init),
                             options: sessionOptions, connectIncoming: connectIncoming) { rtt in
            logger.debug("session round trip \(formatDuration(rtt))", metadata: ["peer": "\(peer)"])
        }
    }

    /// Holds a session in the connection pool until it ends: on graceful shutdown it takes no new
    /// streams and ends once its last stream has; cancellation (the drain time-out, a second
    /// signal) resets it.
    func hold(_ session: RelaySession) async -> SessionReport {
        let report = await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await session.ended
            } onGracefulShutdown: {
                session.drain()
            }
        } onCancel: {
            session.close(reason: "agent shutting down")
        }
        statistics.sessionDown(session, reason: report.clean || report.endedByOwner ? nil : report.reason)
        // Its buffers are free now: give them back rather than keep the busiest moment's size.
        FreeMemory.release()
        return report
    }

    /// Logs how a session ended: routine when in order or by the agent, a warning otherwise.
    func logEnd(of report: SessionReport, peer: String, then: String = "") {
        let level: Logger.Level = report.clean || report.endedByOwner ? .info : .warning
        logger.log(level: level, "session with the peer ended: \(report)\(then)", metadata: ["peer": "\(peer)"])
    }

    /// Logs one carried stream's end and counts it, with its bytes on `path` (the session's).
    func record(_ report: RelayReport, description: String, peer: String, path: String) {
        if report.refused {
            statistics.failedBeforeRelay()
            logger.warning("\(description) not carried: \(report.reason)", metadata: ["peer": "\(peer)"])
            return
        }
        statistics.finished(out: report.bytesAToB, in: report.bytesBToA, path: path)
        logger.log(level: report.logLevel, "\(description) closed: \(report)", metadata: ["peer": "\(peer)"])
    }
}

/// The listen side's session, as the forward's connections find it: up, or being set up.
final class SessionKeeper: Sendable {
    private let slot = AwaitedValue<(session: RelaySession, peer: String)>(isUsable: { !$0.session.isEnded })
    private let failure = Mutex<String?>(nil)

    func up(_ session: RelaySession, peer: String) {
        failure.withLock { $0 = nil }
        slot.set((session, peer))
    }

    func down(_ session: RelaySession, reason: String) {
        slot.clear(if: { $0.session === session })
        failure.withLock { $0 = reason }
    }

    /// No session will come up again: waiters are answered with nil, now and from now on.
    func shutDown() { slot.close() }

    func failed(_ reason: String) {
        failure.withLock { $0 = reason }
    }

    /// The session, if it is up now.
    var current: (session: RelaySession, peer: String)? { slot.value }

    /// Why there is no session, as last seen.
    var lastFailure: String? { failure.withLock { $0 } }

    /// The session once it is up, waiting at most `timeout`; nil if none came up in time.
    func session(within timeout: Duration) async -> (session: RelaySession, peer: String)? {
        if let current { return current }
        return await withTaskGroup(of: (session: RelaySession, peer: String)?.self) { group in
            group.addTask { await self.slot.wait() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}
