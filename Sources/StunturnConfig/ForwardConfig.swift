/// Which side of a tunnel a forward is: offering a local service, or a local port that reaches the peer's service.
public enum ForwardMode: Sendable, Hashable {
    /// A service on this machine, made reachable to the peer.
    case expose(Endpoint)
    /// A local port; each connection accepted there goes to the peer's exposed service.
    case listen(Endpoint)

    public var endpoint: Endpoint {
        switch self {
        case .expose(let endpoint), .listen(let endpoint): return endpoint
        }
    }
}

/// The transport a forward carries between the local socket and the peer.
public enum TransportProtocol: String, Sendable, CaseIterable {
    case tcp, udp
}

/// Whether a forward's sessions may travel through the signaling server's relay.
public enum RelayMode: String, Sendable, CaseIterable, Equatable {
    /// Direct and relayed attempts together; the relay carries the session when no direct path is
    /// up within `relay_after`, and the agent keeps trying direct.
    case auto
    /// Direct paths only.
    case never
    /// Always relayed.
    case only
}

/// One validated forward with every default filled in.
public struct ForwardConfig: Sendable, Equatable {
    public static let defaultTries = 300
    public static let triesRange = 1...100_000
    public static let defaultPunchTimeout: Duration = .seconds(10)
    public static let defaultSignalTimeout: Duration = .seconds(30)
    public static let defaultConnectTimeout: Duration = .seconds(5)
    public static let defaultKeepalive: Duration = .seconds(15)
    public static let defaultMaxStreams = 1024
    public static let maxStreamsRange = 1...65_536
    public static let defaultRelayAfter: Duration = .seconds(1)

    /// Unique within the config; appears in logs.
    public var name: String
    public var mode: ForwardMode
    /// The shared access key; already checked against `AccessKeyPolicy`.
    public var key: String
    public var transport: TransportProtocol
    /// The signaling server this forward registers with.
    public var server: Endpoint
    /// The target IP an initiator announces, for servers that match receivers by IP.
    public var peerIP: String?
    /// Hole-punch attempts before giving up.
    public var tries: Int
    public var punchTimeout: Duration
    /// How long a listen forward's initiator waits at the server for its peer.
    public var signalTimeout: Duration
    /// Time allowed for connecting to the exposed local service.
    public var connectTimeout: Duration
    /// Close a relayed connection idle this long; nil never closes it.
    public var idleTimeout: Duration?
    /// Between the session's pings; three unanswered ones end the session.
    public var keepalive: Duration
    /// Streams (local connections) one session carries at once; past it new ones are refused.
    public var maxStreams: Int
    /// Turns tunnel encryption off; only for measuring its overhead.
    public var plaintextInsecure: Bool
    /// Whether sessions may be relayed through the server.
    public var relay: RelayMode
    /// With `relay: auto`, how long a direct attempt has before the relay carries the session.
    public var relayAfter: Duration
    /// The operator's token presented to the server (from `server_token` or `server_token_file`).
    public var serverToken: String?

    public init(
        name: String,
        mode: ForwardMode,
        key: String,
        transport: TransportProtocol = .tcp,
        server: Endpoint,
        peerIP: String? = nil,
        tries: Int = ForwardConfig.defaultTries,
        punchTimeout: Duration = ForwardConfig.defaultPunchTimeout,
        signalTimeout: Duration = ForwardConfig.defaultSignalTimeout,
        connectTimeout: Duration = ForwardConfig.defaultConnectTimeout,
        idleTimeout: Duration? = nil,
        keepalive: Duration = ForwardConfig.defaultKeepalive,
        maxStreams: Int = ForwardConfig.defaultMaxStreams,
        plaintextInsecure: Bool = false,
        relay: RelayMode = .auto,
        relayAfter: Duration = ForwardConfig.defaultRelayAfter,
        serverToken: String? = nil
    ) {
        self.name = name
        self.mode = mode
        self.key = key
        self.transport = transport
        self.server = server
        self.peerIP = peerIP
        self.tries = tries
        self.punchTimeout = punchTimeout
        self.signalTimeout = signalTimeout
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.keepalive = keepalive
        self.maxStreams = maxStreams
        self.plaintextInsecure = plaintextInsecure
        self.relay = relay
        self.relayAfter = relayAfter
        self.serverToken = serverToken
    }
}

/// The range a duration setting takes, in seconds, shared by the config file and the command line
/// so both accept the same values and say the same thing about the rest.
public struct DurationLimit: Sendable {
    public let range: ClosedRange<Double>
    /// What 0 means where 0 is allowed outside the range ("never", "reset at once").
    public let zeroMeans: String?

    public init(_ range: ClosedRange<Double>, zeroMeans: String? = nil) {
        self.range = range
        self.zeroMeans = zeroMeans
    }

    /// What is wrong with `seconds` (shown as `text`), or nil when it is allowed.
    public func problem(_ seconds: Double, text: String) -> String? {
        if seconds == 0, zeroMeans != nil { return nil }
        guard !range.contains(seconds) else { return nil }
        let zero = zeroMeans.map { "0 (\($0)) or " } ?? ""
        return "must be \(zero)\(Self.format(range.lowerBound))-\(Self.format(range.upperBound)) seconds "
            + "(\(DurationText.format(.milliseconds(Int64(range.lowerBound * 1000))))-\(DurationText.format(.milliseconds(Int64(range.upperBound * 1000))))), got '\(text)'"
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : "\(value)"
    }

    public static let punchTimeout = DurationLimit(0.001...3600)
    public static let signalTimeout = DurationLimit(0.001...3600)
    public static let connectTimeout = DurationLimit(0.001...3600)
    public static let idleTimeout = DurationLimit(0.001...31_536_000, zeroMeans: "never")
    /// Three unanswered pings end a session: under a second that is a hair trigger. Over five
    /// minutes, a session idle between pings outlives what NATs keep (carrier NATs drop idle TCP
    /// after a few minutes) and the server's relay, which ends a session silent for 10 minutes.
    public static let keepalive = DurationLimit(1...300)
    public static let relayAfter = DurationLimit(0...3600)
    public static let drainTimeout = DurationLimit(0.001...86_400, zeroMeans: "reset at once")
}
