#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What an agent answers to `status`: who it is and where each of its forwards stands.
public struct AgentStatus: Codable, Sendable, Equatable {
    /// The agent's process id.
    public var pid: Int32
    /// The admin socket it answered on.
    public var admin: String
    public var forwards: [ForwardStatus]

    public init(pid: Int32, admin: String, forwards: [ForwardStatus]) {
        self.pid = pid
        self.admin = admin
        self.forwards = forwards
    }

    /// The JSON the agent answers with: keys sorted, so the same status reads the same.
    public func encoded(pretty: Bool = false) throws -> [UInt8] {
        Array(try Self.encoder(pretty: pretty).encode(self))
    }

    public init(decoding bytes: [UInt8]) throws {
        self = try JSONDecoder().decode(AgentStatus.self, from: Data(bytes))
    }

    static func encoder(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}

/// Several agents' answers, as `stunturn-agent status --json` prints them without `--admin`.
public struct AgentStatusList: Codable, Sendable, Equatable {
    public var agents: [AgentStatus]

    public init(agents: [AgentStatus]) { self.agents = agents }

    public func encoded(pretty: Bool = false) throws -> [UInt8] {
        Array(try AgentStatus.encoder(pretty: pretty).encode(self))
    }
}

/// One forward as `status` shows it: its link to the peer (how it is carried, since when, how
/// well) and what it has carried. JSON keys are snake_case; a value not known now is null, never
/// left out.
public struct ForwardStatus: Codable, Sendable, Equatable {
    public var name: String
    /// `expose` or `listen`.
    public var mode: String
    /// `tcp` or `udp`.
    public var transport: String
    /// The exposed service or the local listen address.
    public var local: String
    /// `starting`, `waiting for peer`, `up` or `backing off`.
    public var state: String
    /// `direct`, `relay` or `none`.
    public var path: String
    /// ICE's name for what carries the path: `host`, `srflx` or `relay`; empty when down.
    public var candidate: String
    /// The peer of the session up last; empty before the first.
    public var peer: String
    /// Sessions with peers up now (an exposing forward may have one per peer).
    public var sessionsUp: Int
    /// Since when a session has been up without a break; nil while none is.
    public var uptimeSeconds: Int?
    /// The last ping's round trip on the session up last; nil before one was answered.
    public var rttMs: Double?
    /// Streams (local connections) open on the sessions now.
    public var streams: Int
    /// Payload bytes from the peer to local connections, and from them to the peer: finished
    /// connections and those still open.
    public var bytesIn: UInt64
    public var bytesOut: UInt64
    /// Local connections carried since the agent started, and those that failed.
    public var connections: Int
    public var failed: Int
    public var sessionsEstablished: Int
    public var setupsFailed: Int
    /// Hole punches tried (TCP and UDP), and those that failed (time-out or error).
    public var punchesTried: Int
    public var punchesFailed: Int
    /// How often the path changed (direct, relay, none), counting a session going down.
    public var pathChanges: Int
    public var lastError: String?
    public var lastErrorAgeSeconds: Int?

    public init(name: String, mode: String, transport: String, local: String, state: String, path: String, candidate: String,
                peer: String, sessionsUp: Int, uptimeSeconds: Int?, rttMs: Double?, streams: Int, bytesIn: UInt64,
                bytesOut: UInt64, connections: Int, failed: Int, sessionsEstablished: Int, setupsFailed: Int, pathChanges: Int,
                lastError: String?, lastErrorAgeSeconds: Int?, punchesTried: Int = 0, punchesFailed: Int = 0) {
        self.punchesTried = punchesTried
        self.punchesFailed = punchesFailed
        self.name = name
        self.mode = mode
        self.transport = transport
        self.local = local
        self.state = state
        self.path = path
        self.candidate = candidate
        self.peer = peer
        self.sessionsUp = sessionsUp
        self.uptimeSeconds = uptimeSeconds
        self.rttMs = rttMs
        self.streams = streams
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.connections = connections
        self.failed = failed
        self.sessionsEstablished = sessionsEstablished
        self.setupsFailed = setupsFailed
        self.pathChanges = pathChanges
        self.lastError = lastError
        self.lastErrorAgeSeconds = lastErrorAgeSeconds
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, mode, transport = "protocol", local, state, path, candidate, peer
        case sessionsUp = "sessions_up", uptimeSeconds = "uptime_seconds", rttMs = "rtt_ms", streams
        case bytesIn = "bytes_in", bytesOut = "bytes_out", connections, failed
        case sessionsEstablished = "sessions_established", setupsFailed = "setups_failed", pathChanges = "path_changes"
        case punchesTried = "punches_tried", punchesFailed = "punches_failed"
        case lastError = "last_error", lastErrorAgeSeconds = "last_error_age_seconds"
    }

    /// Every key, nulls included: a reader can tell "not known" from "not sent".
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(mode, forKey: .mode)
        try container.encode(transport, forKey: .transport)
        try container.encode(local, forKey: .local)
        try container.encode(state, forKey: .state)
        try container.encode(path, forKey: .path)
        try container.encode(candidate, forKey: .candidate)
        try container.encode(peer, forKey: .peer)
        try container.encode(sessionsUp, forKey: .sessionsUp)
        try container.encode(uptimeSeconds, forKey: .uptimeSeconds)
        try container.encode(rttMs, forKey: .rttMs)
        try container.encode(streams, forKey: .streams)
        try container.encode(bytesIn, forKey: .bytesIn)
        try container.encode(bytesOut, forKey: .bytesOut)
        try container.encode(connections, forKey: .connections)
        try container.encode(failed, forKey: .failed)
        try container.encode(sessionsEstablished, forKey: .sessionsEstablished)
        try container.encode(setupsFailed, forKey: .setupsFailed)
        try container.encode(pathChanges, forKey: .pathChanges)
        try container.encode(punchesTried, forKey: .punchesTried)
        try container.encode(punchesFailed, forKey: .punchesFailed)
        try container.encode(lastError, forKey: .lastError)
        try container.encode(lastErrorAgeSeconds, forKey: .lastErrorAgeSeconds)
    }
}
