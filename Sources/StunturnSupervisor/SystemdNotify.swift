#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import ServiceLifecycle
import StunturnSockets

/// Tells systemd how the agent is doing (`Type=notify`), with datagrams to `$NOTIFY_SOCKET` (a path,
/// or with a leading `@` a name in the abstract namespace): `READY=1` once every forward has
/// started (its port bound, the in-agent server up), a one-line `STATUS=`, `WATCHDOG=1` at half
/// `$WATCHDOG_USEC` when the unit sets `WatchdogSec=`, and `STOPPING=1` when shutdown begins.
public struct SystemdNotifier: Sendable {
    public let socketPath: String
    /// Between watchdog pings: half the unit's `WatchdogSec=`; nil without a watchdog.
    public let watchdogInterval: Duration?

    /// The notifier systemd set up for this process, if any.
    public init?(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return nil }
        socketPath = path
        // The watchdog is ours only when WATCHDOG_PID, if set, names this process.
        let ours = environment["WATCHDOG_PID"].map { Int32($0) == getpid() } ?? true
        if ours, let text = environment["WATCHDOG_USEC"], let micros = Int64(text), micros > 0 {
            watchdogInterval = .microseconds(micros / 2)
        } else {
            watchdogInterval = nil
        }
    }

    /// Sends `fields` (`READY=1`, `STATUS=...`) in one datagram; a failure is returned, not thrown:
    /// the agent's work does not depend on it.
    @discardableResult
    public func notify(_ fields: String...) -> (any Error)? {
        do {
            try UnixSocket.sendDatagram(Array(fields.joined(separator: "\n").utf8), to: socketPath)
            return nil
        } catch {
            return error
        }
    }
}

/// Runs the notifications beside the agent's services: listed last, it is the first told of a
/// graceful shutdown, so `STOPPING=1` goes out when the drain begins.
struct SystemdNotifyService: Service, CustomStringConvertible {
    let notifier: SystemdNotifier
    let logger: Logger
    /// The one-line summary for `STATUS=`.
    let status: @Sendable () -> String

    var description: String { "systemd notifications to \(notifier.socketPath)" }

    func run() async throws {
        if let error = notifier.notify("READY=1", "STATUS=\(status())") {
            logger.warning("cannot notify systemd at \(notifier.socketPath): \(error)")
        }
        let period = min(notifier.watchdogInterval ?? .seconds(5), .seconds(5))
        await cancelWhenGracefulShutdown {
            var last = ""
            var failing = false
            while !Task.isCancelled {
                try? await Task.sleep(for: period)
                if Task.isCancelled { break }
                let now = status()
                var fields: [String] = []
                if notifier.watchdogInterval != nil { fields.append("WATCHDOG=1") }
                if now != last { fields.append("STATUS=\(now)") }
                last = now
                guard !fields.isEmpty else { continue }
                // The first failure of a streak is logged, and the recovery: a watchdog that stops
                // getting through explains systemd's restart.
                if let error = notifier.notify(fields.joined(separator: "\n")) {
                    if !failing { logger.warning("cannot notify systemd at \(notifier.socketPath): \(error)") }
                    failing = true
                } else if failing {
                    logger.info("systemd notifications get through again")
                    failing = false
                }
            }
        }
        notifier.notify("STOPPING=1", "STATUS=stopping: \(status())")
    }
}

extension Agent {
    /// One line for systemd's status: how many forwards are up, and the connections open.
    func statusLine() -> String {
        let links = statistics.values.map(\.link)
        let up = links.filter { $0.state == .up }.count
        let relayed = links.filter { $0.path == "relay" }.count
        var line = "\(config.forwards.count) forward(s): \(up) up"
        if relayed > 0 { line += " (\(relayed) relayed)" }
        let waiting = links.count - up
        if waiting > 0 { line += ", \(waiting) not up" }
        return line + "; \(openConnections) connection(s) open"
    }
}
