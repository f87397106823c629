#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import ServiceLifecycle
import StunturnAdmin
import StunturnConfig
import StunturnRelay
import StunturnSockets

/// A small local server as a service (the admin socket, the metrics endpoint). The agent lists
/// these first, so they stop last: `status` and scrapes still answer while connections drain.
public struct EndpointService: Service, CustomStringConvertible {
    public let description: String
    private let serve: @Sendable () async -> Void

    public init(_ description: String, serve: @escaping @Sendable () async -> Void) {
        self.description = description
        self.serve = serve
    }

    public init(admin server: AdminServer) {
        self.init("admin socket \(server.path)") { await server.run() }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await serve() }
    }
}

extension Agent {
    /// Opens the admin socket the config asks for. A path given that cannot be used fails the
    /// start; the default path failing is only logged (`status` cannot see this agent then), as
    /// the agent's work does not need it.
    func openAdminServer() throws -> AdminServer? {
        let handler: AdminServer.Handler = { [self] request in
            switch request {
            case .status: try await status().encoded() + [UInt8(ascii: "\n")]
            case .reload: try JSONEncoder().encode(await reload()) + [UInt8(ascii: "\n")]
            }
        }
        let server: AdminServer
        switch config.admin {
        case .disabled:
            return nil
        case .path(let path):
            server = try AdminServer(path: path, logger: logger, handler: handler)
        case .automatic:
            let directory = AdminSocketDirectory.path()
            do {
                try AdminSocketDirectory.prepare(directory)
                AdminSocketDirectory.removeStaleSockets(in: directory)
                server = try AdminServer(path: AdminSocketDirectory.socketPath(forAgent: SystemIO.processID, in: directory),
                                         logger: logger, handler: handler)
            } catch {
                logger.warning("no admin socket: \(error); 'stunturn-agent status' cannot see this agent")
                return nil
            }
        }
        logger.info("admin socket \(server.path) answers 'stunturn-agent status'")
        openedAdminPath.withLock { $0 = server.path }
        return server
    }

    /// Where each forward stands now, as `stunturn-agent status` shows it.
    public func status() async -> AgentStatus {
        var forwards: [ForwardStatus] = []
        for forward in config.forwards {
            guard let statistics = statistics[forward.name] else { continue }
            forwards.append(await statistics.status(of: forward))
        }
        return AgentStatus(pid: SystemIO.processID, admin: adminPath ?? "", forwards: forwards)
    }
}

extension ForwardStatistics {
    /// The forward's status now. The counters are read before the sessions: a connection that
    /// ends in between is left out of the bytes for a moment rather than counted twice.
    func status(of forward: ForwardConfig, now: ContinuousClock.Instant = .now) async -> ForwardStatus {
        let counters = snapshot
        let link = self.link
        var sessions: [SessionStatus] = []
        for session in link.sessions { sessions.append(await session.status) }
        return ForwardStatus(forward, link: link, counters: counters, sessions: sessions, now: now)
    }
}

extension ForwardStatus {
    /// A forward's status from its link, its counters and its sessions' status (the last one is
    /// the session up last, whose peer the link names).
    init(_ forward: ForwardConfig, link: ForwardStatistics.Link, counters: ForwardStatistics.Snapshot, sessions: [SessionStatus],
         now: ContinuousClock.Instant) {
        let mode: String
        switch forward.mode {
        case .expose: mode = "expose"
        case .listen: mode = "listen"
        }
        self.init(
            name: forward.name, mode: mode, transport: forward.transport.rawValue, local: forward.mode.endpoint.description,
            state: link.state.rawValue, path: link.path, candidate: link.candidate, peer: link.peer, sessionsUp: sessions.count,
            uptimeSeconds: link.upSince.map { Self.wholeSeconds(now - $0) },
            rttMs: sessions.last?.roundTrip.map(Self.milliseconds),
            streams: sessions.reduce(0) { $0 + $1.openStreams },
            bytesIn: counters.bytesIn + sessions.reduce(0) { $0 + $1.openStreamBytesReceived },
            bytesOut: counters.bytesOut + sessions.reduce(0) { $0 + $1.openStreamBytesSent },
            connections: counters.sessions, failed: counters.failed,
            sessionsEstablished: link.sessionsEstablished, setupsFailed: link.setupsFailed, pathChanges: link.pathChanges,
            lastError: link.lastError, lastErrorAgeSeconds: link.lastErrorAt.map { Self.wholeSeconds(now - $0) },
            punchesTried: link.punchesTried, punchesFailed: link.punchesFailed)
    }

    static func wholeSeconds(_ duration: Duration) -> Int {
        max(0, Int(duration.components.seconds))
    }

    /// Milliseconds to the hundredth: enough for a loopback round trip, short to read.
    static func milliseconds(_ duration: Duration) -> Double {
        let exact = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        return (exact * 100).rounded() / 100
    }
}
