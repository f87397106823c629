/// One series stunturn exports: its Prometheus name, type, labels and help text.
///
/// Every series is listed in `MetricSeries.all`, the one place to read what `/metrics` can show.
/// Names follow Prometheus' conventions: the `stunturn_` prefix, base units (`_seconds`,
/// `_bytes`), and `_total` on counters.
public struct MetricSeries: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    public let name: String
    public let kind: Kind
    /// The label names, in the order the code gives them.
    public let labels: [String]
    public let help: String

    init(_ name: String, _ kind: Kind, labels: [String] = [], _ help: String) {
        self.name = name
        self.kind = kind
        self.labels = labels
        self.help = help
    }

    public var description: String { name }
}

extension MetricSeries {
    // MARK: agent

    public static let punchAttempts = MetricSeries(
        "stunturn_punch_attempts_total", .counter, labels: ["forward", "transport", "result"],
        "Hole punches tried, by transport (tcp, udp) and result (success, timeout, cancelled: the relay won the race or the forward stopped, error).")
    public static let punchDuration = MetricSeries(
        "stunturn_punch_duration_seconds", .histogram, labels: ["forward", "transport", "result"],
        "How long each hole punch took, by transport and result.")
    public static let sessionSetupDuration = MetricSeries(
        "stunturn_session_setup_duration_seconds", .histogram, labels: ["forward", "path"],
        "From asking the signaling server for the peer (listen side) or from the pairing (expose side) to a session up with the tunnel handshake done, by path (direct, relay).")
    public static let sessionSetupFailures = MetricSeries(
        "stunturn_session_setup_failures_total", .counter, labels: ["forward"],
        "Sessions with the peer that could not be set up (signaling, punch, relay or handshake failed).")
    public static let sessions = MetricSeries(
        "stunturn_sessions", .gauge, labels: ["forward", "path"],
        "Sessions with the peer up now, by path (direct, relay).")
    public static let sessionsEstablished = MetricSeries(
        "stunturn_sessions_established_total", .counter, labels: ["forward", "path"],
        "Sessions with the peer set up, by path (direct, relay).")
    public static let pathChanges = MetricSeries(
        "stunturn_path_changes_total", .counter, labels: ["forward"],
        "Changes of a forward's path to its peer among direct, relay and none (as 'stunturn-agent status' counts them).")
    public static let openStreams = MetricSeries(
        "stunturn_open_streams", .gauge, labels: ["forward"],
        "Local connections (UDP: local clients) being carried now.")
    public static let streams = MetricSeries(
        "stunturn_streams_total", .counter, labels: ["forward"],
        "Local connections (UDP: local clients) taken to carry to the peer.")
    public static let streamFailures = MetricSeries(
        "stunturn_stream_failures_total", .counter, labels: ["forward"],
        "Local connections that were not carried (no session with the peer, refused by the peer or its service).")
    public static let bytes = MetricSeries(
        "stunturn_bytes_total", .counter, labels: ["forward", "direction", "path"],
        "Payload bytes of local connections that have ended, by direction (out: to the peer, in: from it) and path (direct, relay).")

    // MARK: signaling server

    public static let serverPairings = MetricSeries(
        "stunturn_server_pairings_total", .counter,
        "Initiators paired with a receiver.")
    public static let serverWaitingInitiators = MetricSeries(
        "stunturn_server_waiting_initiators", .gauge,
        "Initiators waiting for a receiver.")
    public static let serverWaitingReceivers = MetricSeries(
        "stunturn_server_waiting_receivers", .gauge,
        "Receivers long-polling for an initiator.")
    public static let serverConnections = MetricSeries(
        "stunturn_server_connections", .gauge,
        "Signaling connections open now.")
    public static let serverRelaySessions = MetricSeries(
        "stunturn_server_relay_sessions", .gauge,
        "Relayed sessions running now.")
    public static let serverRelaySessionsTotal = MetricSeries(
        "stunturn_server_relay_sessions_total", .counter,
        "Relayed sessions joined by both sides.")
    public static let serverRelayedBytes = MetricSeries(
        "stunturn_server_relayed_bytes_total", .counter,
        "Bytes carried, both directions, by relayed sessions that have ended.")
    public static let serverRelayRefusals = MetricSeries(
        "stunturn_server_relay_refusals_total", .counter,
        "Relays refused: pairings whose peers asked for one and were refused, and relay connections refused.")
    public static let serverSTUNResponses = MetricSeries(
        "stunturn_server_stun_responses_total", .counter,
        "Answers to STUN binding requests and address queries over UDP.")

    /// Every series, agent's and server's.
    public static let all: [MetricSeries] = [
        punchAttempts, punchDuration, sessionSetupDuration, sessionSetupFailures, sessions, sessionsEstablished, pathChanges,
        openStreams, streams, streamFailures, bytes,
        serverPairings, serverWaitingInitiators, serverWaitingReceivers, serverConnections, serverRelaySessions,
        serverRelaySessionsTotal, serverRelayedBytes, serverRelayRefusals, serverSTUNResponses,
    ]

    /// The buckets of every duration histogram: a loopback punch takes milliseconds, one across the
    /// internet tens to hundreds, and a punch gives up at its time-out (10 s by default); a
    /// session's setup adds the wait for the peer at the server (30 s by default).
    public static let durationBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(120),
    ]

    static let byName: [String: MetricSeries] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
}
