#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What a signaling server answers to `status` on its admin socket (`server --admin PATH`): the
/// same view an agent gives of its forwards, for the pairing and the relay.
public struct ServerStatus: Codable, Sendable, Equatable {
    public var pid: Int32
    public var admin: String
    /// The TCP and UDP address it serves.
    public var listen: String
    public var uptimeSeconds: Int
    public var waitingInitiators: Int
    public var waitingReceivers: Int
    public var openConnections: Int
    public var pairings: Int
    /// Pairings per second over the last minute (or since the start, when shorter).
    public var pairingsPerSecond: Double
    public var relaying: Bool
    public var relayedSessionsActive: Int
    /// Relays granted on a pairing whose sides have not both joined yet.
    public var relaysPending: Int
    public var relayedSessions: Int
    /// Bytes carried by relayed sessions that have ended, both directions.
    public var relayedBytes: UInt64
    public var relayRefusals: Int
    public var rejected: Int
    public var stunResponses: Int

    public init(pid: Int32, admin: String, listen: String, uptimeSeconds: Int, waitingInitiators: Int, waitingReceivers: Int,
                openConnections: Int, pairings: Int, pairingsPerSecond: Double, relaying: Bool, relayedSessionsActive: Int,
                relaysPending: Int, relayedSessions: Int, relayedBytes: UInt64, relayRefusals: Int, rejected: Int, stunResponses: Int) {
        self.pid = pid
        self.admin = admin
        self.listen = listen
        self.uptimeSeconds = uptimeSeconds
        self.waitingInitiators = waitingInitiators
        self.waitingReceivers = waitingReceivers
        self.openConnections = openConnections
        self.pairings = pairings
        self.pairingsPerSecond = pairingsPerSecond
        self.relaying = relaying
        self.relayedSessionsActive = relayedSessionsActive
        self.relaysPending = relaysPending
        self.relayedSessions = relayedSessions
        self.relayedBytes = relayedBytes
        self.relayRefusals = relayRefusals
        self.rejected = rejected
        self.stunResponses = stunResponses
    }

    enum CodingKeys: String, CodingKey {
        case pid, admin, listen, pairings, relaying, rejected
        case uptimeSeconds = "uptime_seconds"
        case waitingInitiators = "waiting_initiators"
        case waitingReceivers = "waiting_receivers"
        case openConnections = "open_connections"
        case pairingsPerSecond = "pairings_per_second"
        case relayedSessionsActive = "relayed_sessions_active"
        case relaysPending = "relays_pending"
        case relayedSessions = "relayed_sessions"
        case relayedBytes = "relayed_bytes"
        case relayRefusals = "relay_refusals"
        case stunResponses = "stun_responses"
    }

    /// Wrapped as `{"server": {...}}`, so a client tells it from an agent's answer.
    public func encoded(pretty: Bool = false) throws -> [UInt8] {
        Array(try AgentStatus.encoder(pretty: pretty).encode(["server": self]))
    }

    /// The server's status in an answer, nil when the answer is an agent's.
    public static func decode(_ bytes: [UInt8]) -> ServerStatus? {
        (try? JSONDecoder().decode([String: ServerStatus].self, from: Data(bytes)))?["server"]
    }

    /// For people: one fact per line.
    public var table: String {
        let rows: [(String, String)] = [
            ("server", "pid \(pid), listening on \(listen) (TCP and UDP), up \(uptimeSeconds)s"),
            ("waiting", "\(waitingInitiators) initiator(s), \(waitingReceivers) receiver(s); \(openConnections) connection(s) open"),
            ("pairings", "\(pairings) (\(StatusTable.twoDecimals(pairingsPerSecond))/s over the last minute); \(rejected) refused"),
            ("relay", relaying
                ? "\(relayedSessionsActive) session(s) relayed now, \(relaysPending) waiting for a side; \(relayedSessions) in all, \(relayedBytes) bytes; \(relayRefusals) refused"
                : "off"),
            ("stun", "\(stunResponses) response(s)"),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { StatusTable.padded($0.0, to: width) + "  " + $0.1 }.joined(separator: "\n")
    }
}
