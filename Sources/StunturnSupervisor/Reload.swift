import Logging
import ServiceLifecycle
import StunturnConfig
import StunturnSockets
import Synchronization

/// A request to read the config file again, with where the outcome goes.
struct ReloadRequest: Sendable {
    let done: @Sendable (ReloadOutcome) -> Void
}

/// What a reload changed, or why it changed nothing.
public struct ReloadOutcome: Sendable, Encodable {
    public var added: [String] = []
    public var removed: [String] = []
    public var restarted: [String] = []
    public var unchanged: [String] = []
    /// Settings that changed but take effect only at the next start.
    public var needsRestart: [String] = []
    /// Why nothing changed (an invalid config: every problem), or nil when the reload was applied.
    public var error: String?

    public var applied: Bool { error == nil }

    enum CodingKeys: String, CodingKey {
        case added, removed, restarted, unchanged, error
        case needsRestart = "needs_restart"
    }

    /// One line for the log.
    public var summary: String {
        if let error { return "reload refused, nothing changed: \(error)" }
        var parts: [String] = []
        if !added.isEmpty { parts.append("added \(added.joined(separator: ", "))") }
        if !removed.isEmpty { parts.append("removed \(removed.joined(separator: ", "))") }
        if !restarted.isEmpty { parts.append("restarted \(restarted.joined(separator: ", ")) (changed)") }
        parts.append("\(unchanged.count) unchanged, their sessions and streams kept")
        var line = "reloaded: " + parts.joined(separator: "; ")
        if !needsRestart.isEmpty { line += "; \(needsRestart.joined(separator: ", ")) changed, which takes effect at the next start" }
        return line
    }
}

extension Agent {
    /// Reads the config file again and applies it: forwards added, removed or changed start, stop
    /// or restart; the others keep their sessions and streams. An invalid file changes nothing.
    public func reload() async -> ReloadOutcome {
        guard configPath != nil else {
            return ReloadOutcome(error: "this agent runs one forward from the command line; there is no config file to read again")
        }
        return await withCheckedContinuation { continuation in
            // The queue keeps the oldest requests: one it cannot take (full, or finished at
            // shutdown) is this one, answered here and nowhere else.
            switch reloads.continuation.yield(ReloadRequest(done: { continuation.resume(returning: $0) })) {
            case .enqueued: break
            case .dropped: continuation.resume(returning: ReloadOutcome(error: "too many reloads waiting; try again"))
            case .terminated: continuation.resume(returning: ReloadOutcome(error: "the agent is shutting down"))
            @unknown default: continuation.resume(returning: ReloadOutcome(error: "the agent cannot take a reload now"))
            }
        }
    }

    /// Swaps in the new configuration and statistics after a reload.
    func replace(config: AgentConfig, statistics: [String: ForwardStatistics]) {
        current.withLock { $0 = (config, statistics) }
    }
}

/// Every forward, as one service that can start and stop them one by one: a reload changes the set
/// without touching the forwards that stay the same.
final class ForwardsService: Service, CustomStringConvertible, Sendable {
    private struct Running {
        let context: ForwardContext
        let task: Task<Void, Never>
    }

    private let agent: Agent
    private let pool: ConnectionPool
    private let running = Mutex<[String: Running]>([:])
    private let initial: [(ForwardContext, Socket?)]

    var description: String { "forwards" }

    init(agent: Agent, pool: ConnectionPool, initial: [(ForwardContext, Socket?)]) {
        self.agent = agent
        self.pool = pool
        self.initial = initial
    }

    func run() async throws {
        for (context, listener) in initial { start(context, listener: listener) }
        await withTaskCancellationHandler {
            // Reloads are taken until shutdown begins; then each forward stops taking work on its
            // own (each runs under the group's graceful shutdown) and this waits for them.
            // Shutdown finishes the queue: requests still in it are answered (not applied), later
            // ones are refused at once, and the loop ends once it is empty.
            let reloads = agent.reloads
            await withGracefulShutdownHandler {
                for await request in reloads.stream {
                    guard !Task.isShuttingDownGracefully else {
                        request.done(ReloadOutcome(error: "the agent is shutting down"))
                        continue
                    }
                    request.done(await self.apply())
                }
            } onGracefulShutdown: {
                reloads.continuation.finish()
            }
            for task in running.withLock({ $0.values.map(\.task) }) { await task.value }
        } onCancel: {
            agent.reloads.continuation.finish()
            for task in running.withLock({ $0.values.map(\.task) }) { task.cancel() }
        }
    }

    /// Starts one forward; its task inherits the group's graceful shutdown.
    private func start(_ context: ForwardContext, listener: Socket?) {
        let service = ForwardService(context: context, listener: listener)
        let task = Task { _ = try? await service.run() }
        running.withLock { $0[context.config.name] = Running(context: context, task: task) }
    }

    /// Stops one forward: it takes no new work, and its sessions end once their streams have.
    private func stop(_ name: String) async {
        guard let stopped = running.withLock({ $0.removeValue(forKey: name) }) else { return }
        // First the flag, then the drain: a session being set up now sees one or the other.
        stopped.context.lifetime.stop()
        stopped.task.cancel()
        await stopped.task.value
        for session in stopped.context.statistics.link.sessions { session.drain() }
    }

    private func apply() async -> ReloadOutcome {
        let logger = agent.logger
        notify("RELOADING=1")
        defer { notify("READY=1", "STATUS=\(agent.statusLine())") }
        let old = agent.config
        let new: AgentConfig
        do {
            var loaded = try AgentConfig.load(path: agent.configPath ?? "")
            agent.overrides(&loaded)
            new = loaded
        } catch {
            let outcome = ReloadOutcome(error: "\(error.problems.count) problem(s) in \(agent.configPath ?? ""): " + error.description)
            logger.error("reload refused, nothing changed; \(error.problems.count) problem(s):")
            for problem in error.problems { logger.error("\(problem)") }
            return outcome
        }
        var outcome = ReloadOutcome()
        for (setting, changed) in [("serve", old.serve != new.serve), ("metrics", old.metrics != new.metrics),
                                   ("admin", old.admin != new.admin), ("log_level", old.logLevel != new.logLevel),
                                   ("log_format", old.logFormat != new.logFormat), ("drain_timeout", old.drainTimeout != new.drainTimeout)]
            where changed { outcome.needsRestart.append(setting) }
        let before = Dictionary(uniqueKeysWithValues: old.forwards.map { ($0.name, $0) })
        let after = Dictionary(uniqueKeysWithValues: new.forwards.map { ($0.name, $0) })
        outcome.removed = before.keys.filter { after[$0] == nil }.sorted()
        outcome.added = after.keys.filter { before[$0] == nil }.sorted()
        outcome.restarted = after.keys.filter { before[$0] != nil && before[$0] != after[$0] }.sorted()
        outcome.unchanged = after.keys.filter { before[$0] == after[$0] }.sorted()
        for name in outcome.removed + outcome.restarted {
            logger.info("reload: stopping forward \"\(name)\" (\(outcome.removed.contains(name) ? "removed" : "changed"))")
            await stop(name)
        }
        var statistics = agent.statistics
        for name in outcome.removed { statistics[name] = nil }
        for name in outcome.added + outcome.restarted {
            guard let forward = after[name] else { continue }
            let stats = ForwardStatistics(forward: name, metrics: agent.metricsFactory)
            statistics[name] = stats
            let context = ForwardContext(config: forward, logger: logger, relay: agent.relay, statistics: stats, connections: pool)
            // Bound here when possible, so a port that is taken is said at once; else the forward
            // binds it itself, retrying.
            var listener: Socket?
            if case .listen(let endpoint) = forward.mode, let address = try? SocketAddress(parsing: endpoint.localhostAsLoopback.description) {
                do {
                    listener = forward.transport == .udp ? try Socket.udp(on: address) : try Socket.listener(on: address)
                } catch {
                    logger.error("reload: forward \"\(name)\" cannot listen on \(forward.transport) \(endpoint) yet: \(error); retrying")
                }
            }
            start(context, listener: listener)
        }
        // The new forwards under their new settings, the rest as they were.
        var config = old
        config.forwards = new.forwards
        agent.replace(config: config, statistics: statistics)
        logger.info("\(outcome.summary)")
        return outcome
    }

    private func notify(_ fields: String...) {
        agent.notifier?.notify(fields.joined(separator: "\n"))
    }
}
