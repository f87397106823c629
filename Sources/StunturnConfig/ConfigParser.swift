import Foundation
import Yams

/// A file holding a secret: an access key (`key_file`, `--key-file`) or the operator's token for
/// the signaling server (`server_token_file`, `--server-token-file`). The secret is the first line
/// that is neither blank nor a `#` comment.
public enum SecretFile {
    public static func read(_ path: String, what: String) throws(ConfigFileError) -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "permission denied or not UTF-8 text" : "no such file"
            throw ConfigFileError("cannot read the \(what) file '\(path)' (\(reason))")
        }
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        guard let first = lines.first(where: { !$0.isEmpty && !$0.hasPrefix("#") }) else {
            throw ConfigFileError("the \(what) file '\(path)' holds no \(what)")
        }
        guard first.count <= 256, !first.contains(where: \.isWhitespace) else {
            throw ConfigFileError("in '\(path)': a \(what) is 1-256 characters without spaces")
        }
        return first
    }

    /// Why a secret file is exposed (other users can read it), or nil when only its owner (and
    /// its group) can.
    public static func exposure(of path: String) -> String? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue else { return nil }
        guard mode & 0o004 != 0 else { return nil }
        return "'\(path)' is readable by every user on this machine (mode \(String(mode & 0o777, radix: 8))); restrict it: chmod 600 '\(path)'"
    }
}

/// A file holding the operator's token for the signaling server.
public enum ServerTokenFile {
    public static func read(_ path: String) throws(ConfigFileError) -> String {
        try SecretFile.read(path, what: "token")
    }
}

public struct ConfigFileError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Walks the composed YAML tree, collecting every problem with its line instead of stopping at the first.
struct ConfigParser {
    static let topLevelKeys = [
        "server", "server_token", "server_token_file", "serve", "log_level", "log_format", "drain_timeout", "admin", "metrics", "forwards",
    ]
    static let forwardKeys = [
        "name", "expose", "listen", "key", "key_file", "protocol", "server", "server_token", "server_token_file", "peer_ip", "tries",
        "punch_timeout", "signal_timeout", "connect_timeout", "idle_timeout", "keepalive", "max_streams", "plaintext_insecure",
        "relay", "relay_after",
    ]
    private static let keygenHint = "e.g. from 'stunturn-agent keygen'"

    let source: String
    private(set) var problems: [ConfigProblem] = []
    private(set) var warnings: [String] = []

    init(source: String) {
        self.source = source
    }

    /// Problems in file order; those without a line (whole-file problems) first.
    var sortedProblems: [ConfigProblem] {
        problems.enumerated()
            .sorted { ($0.element.line ?? 0, $0.offset) < ($1.element.line ?? 0, $1.offset) }
            .map(\.element)
    }

    mutating func parse(yaml: String) -> AgentConfig? {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            reportSyntaxError(error, yaml: yaml)
            return nil
        } catch {
            report(line: nil, path: "", "cannot parse YAML: \(error)")
            return nil
        }
        guard let root, root.tagName != .null else {
            report(line: nil, path: "", "the file is empty; it needs 'server' (or 'serve') and a 'forwards' list")
            return nil
        }
        guard let mapping = root.mapping else {
            report(root, path: "", "the top level must be a mapping of settings such as 'server:' and 'forwards:', got \(describe(root))")
            return nil
        }
        return parseTopLevel(mapping, rootNode: root)
    }

    // MARK: - Top level

    private mutating func parseTopLevel(_ mapping: Node.Mapping, rootNode: Node) -> AgentConfig? {
        var server: Endpoint?
        var serverGiven = false
        var serve: Endpoint?
        var serveNode: Node?
        var serveGiven = false
        var logLevel = AgentConfig.defaultLogLevel
        var logFormat = "text"
        var drainTimeout = AgentConfig.defaultDrainTimeout
        var admin = AdminSocketSetting.automatic
        var metrics: Endpoint?
        var metricsNode: Node?
        var forwardsNode: Node?
        var token = TokenSetting()

        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            switch key {
            case "server":
                serverGiven = true
                server = endpoint(value, path: "server")
            case "server_token", "server_token_file":
                token.read(key, value, parser: &self, path: key)
            case "serve":
                serveGiven = true
                serveNode = value
                serve = localEndpoint(value, path: "serve")
            case "log_level":
                logLevel = choice(value, path: "log_level", from: AgentConfig.logLevels, what: "log level") ?? logLevel
            case "log_format":
                logFormat = choice(value, path: "log_format", from: AgentConfig.logFormats, what: "log format") ?? logFormat
            case "drain_timeout":
                drainTimeout = duration(value, path: "drain_timeout", limit: .drainTimeout) ?? drainTimeout
            case "admin":
                admin = adminSocket(value, path: "admin") ?? admin
            case "metrics":
                metricsNode = value
                metrics = localEndpoint(value, path: "metrics")
            case "forwards":
                forwardsNode = value
            default:
                reportUnknownKey(keyNode, parentPath: "", known: Self.topLevelKeys, otherLevel: Self.forwardKeys,
                                 otherLevelHint: "belongs inside an item under 'forwards'")
            }
        }

        guard let forwardsNode else {
            report(rootNode, path: "forwards", "missing; add a list of forwards, each with 'name', 'key' and 'expose' or 'listen'")
            return nil
        }
        let drafts = parseForwards(forwardsNode)

        // Forwards without their own server fall back to the top-level one, then to the in-agent server.
        let sharedServer = server ?? serve?.dialable
        var forwards: [ForwardConfig] = []
        for draft in drafts {
            var forwardServer = draft.server ?? sharedServer
            // An invalid server setting was already reported; "missing" would only add noise.
            if forwardServer == nil && !draft.serverGiven && !serverGiven && !serveGiven {
                report(draft.node, path: "\(draft.path).server",
                       "no signaling server: set 'server' at the top or on this forward")
            }
            if draft.serverGiven && draft.server == nil { forwardServer = nil }
            guard var forward = draft.build(server: forwardServer) else { continue }
            if !draft.token.given { forward.serverToken = token.value }
            forwards.append(forward)
        }
        reportDuplicateNames(drafts)
        reportPortClashes(drafts, serve: serve, serveNode: serveNode, metrics: metrics, metricsNode: metricsNode)

        guard problems.isEmpty else { return nil }
        var lines: [String: Int] = [:]
        if let line = serveNode?.mark?.line { lines["serve"] = line }
        if let line = metricsNode?.mark?.line { lines["metrics"] = line }
        for draft in drafts {
            if let name = draft.name, let line = draft.modeNode?.mark?.line { lines["forward \(name)"] = line }
        }
        return AgentConfig(server: server, serve: serve, logLevel: logLevel, drainTimeout: drainTimeout, forwards: forwards, lines: lines,
                           admin: admin, logFormat: logFormat, metrics: metrics)
    }

    // MARK: - Forwards

    /// What could be read from one forward; fields that had problems stay nil.
    private struct ForwardDraft {
        let path: String
        let node: Node
        var name: String?
        var nameNode: Node?
        var mode: ForwardMode?
        var modeNode: Node?
        var key: String?
        var keyNodes: [Node] = []
        var transport: TransportProtocol? = .tcp
        var server: Endpoint?
        var serverGiven = false
        var peerIP: String?? = .some(nil)
        var tries: Int? = ForwardConfig.defaultTries
        var punchTimeout: Duration? = ForwardConfig.defaultPunchTimeout
        var signalTimeout: Duration? = ForwardConfig.defaultSignalTimeout
        var connectTimeout: Duration? = ForwardConfig.defaultConnectTimeout
        var idleTimeout: Duration?? = .some(nil)
        var keepalive: Duration? = ForwardConfig.defaultKeepalive
        var maxStreams: Int? = ForwardConfig.defaultMaxStreams
        var plaintextInsecure: Bool? = false
        var relay: RelayMode? = .auto
        var relayAfter: Duration? = ForwardConfig.defaultRelayAfter
        var token = TokenSetting()

        func build(server: Endpoint?) -> ForwardConfig? {
            guard let name, let mode, let key, let transport, let server, let peerIP, let tries,
                  let punchTimeout, let signalTimeout, let connectTimeout, let idleTimeout,
                  let keepalive, let maxStreams, let plaintextInsecure, let relay, let relayAfter, !token.failed else { return nil }
            return ForwardConfig(
                name: name, mode: mode, key: key, transport: transport, server: server, peerIP: peerIP,
                tries: tries, punchTimeout: punchTimeout, signalTimeout: signalTimeout,
                connectTimeout: connectTimeout, idleTimeout: idleTimeout, keepalive: keepalive, maxStreams: maxStreams,
                plaintextInsecure: plaintextInsecure, relay: relay, relayAfter: relayAfter, serverToken: token.value)
        }
    }

    private mutating func parseForwards(_ node: Node) -> [ForwardDraft] {
        if node.tagName == .null {
            report(node, path: "forwards", "has no value; add at least one forward as a list item starting with '- '")
            return []
        }
        guard let sequence = node.sequence else {
            report(node, path: "forwards", "expected a list of forwards (items starting with '- '), got \(describe(node))")
            return []
        }
        if sequence.isEmpty {
            report(node, path: "forwards", "is empty; add at least one forward")
            return []
        }
        var drafts: [ForwardDraft] = []
        for (index, item) in sequence.enumerated() {
            let path = "forwards[\(index)]"
            guard let mapping = item.mapping else {
                report(item, path: path, "expected a mapping with 'name', 'key' and 'expose' or 'listen', got \(describe(item))")
                continue
            }
            drafts.append(parseForward(mapping, node: item, path: path))
        }
        return drafts
    }

    private mutating func parseForward(_ mapping: Node.Mapping, node: Node, path: String) -> ForwardDraft {
        var draft = ForwardDraft(path: path, node: node)
        var modeKeys: [Node] = []

        for (keyNode, value) in mapping {
            let key = keyNode.string ?? ""
            let fieldPath = "\(path).\(key)"
            switch key {
            case "name":
                draft.nameNode = value
                draft.name = name(value, path: fieldPath)
            case "expose", "listen":
                modeKeys.append(keyNode)
                draft.modeNode = value
                // A listen port is on this machine; an exposed service may be another host on its
                // network (resolved when a session starts).
                if let endpoint = key == "expose" ? endpoint(value, path: fieldPath) : localEndpoint(value, path: fieldPath) {
                    draft.mode = key == "expose" ? .expose(endpoint) : .listen(endpoint)
                }
            case "key":
                draft.keyNodes.append(keyNode)
                draft.key = accessKey(value, path: fieldPath)
            case "key_file":
                draft.keyNodes.append(keyNode)
                if let file = scalarText(value, path: fieldPath, expected: "the path of a file holding the access key") {
                    draft.key = keyFromFile(file, node: value, path: fieldPath)
                }
            case "protocol":
                draft.transport = choice(value, path: fieldPath, from: TransportProtocol.allCases.map(\.rawValue), what: "protocol")
                    .flatMap(TransportProtocol.init(rawValue:))
            case "server":
                draft.serverGiven = true
                draft.server = endpoint(value, path: fieldPath)
            case "peer_ip":
                draft.peerIP = ipAddress(value, path: fieldPath).map { .some($0) }
            case "tries":
                draft.tries = integer(value, path: fieldPath, in: ForwardConfig.triesRange)
            case "punch_timeout":
                draft.punchTimeout = duration(value, path: fieldPath, limit: .punchTimeout)
            case "signal_timeout":
                draft.signalTimeout = duration(value, path: fieldPath, limit: .signalTimeout)
            case "connect_timeout":
                draft.connectTimeout = duration(value, path: fieldPath, limit: .connectTimeout)
            case "idle_timeout":
                // Zero means "never close", which the API spells as nil.
                draft.idleTimeout = duration(value, path: fieldPath, limit: .idleTimeout).map { (value: Duration) -> Duration? in
                    value == .zero ? nil : value
                }
            case "keepalive":
                draft.keepalive = duration(value, path: fieldPath, limit: .keepalive)
            case "max_streams":
                draft.maxStreams = integer(value, path: fieldPath, in: ForwardConfig.maxStreamsRange)
            case "plaintext_insecure":
                draft.plaintextInsecure = boolean(value, path: fieldPath)
            case "relay":
                draft.relay = choice(value, path: fieldPath, from: RelayMode.allCases.map(\.rawValue), what: "relay policy")
                    .flatMap(RelayMode.init(rawValue:))
            case "relay_after":
                draft.relayAfter = duration(value, path: fieldPath, limit: .relayAfter)
            case "server_token", "server_token_file":
                draft.token.read(key, value, parser: &self, path: fieldPath)
            default:
                reportUnknownKey(keyNode, parentPath: path, known: Self.forwardKeys,
                                 otherLevel: Self.topLevelKeys.filter { $0 != "server" },
                                 otherLevelHint: "is a top-level setting; move it out of the forward")
            }
        }

        if draft.nameNode == nil {
            report(node, path: "\(path).name", "missing; every forward needs a unique name (used in logs)")
        }
        if draft.keyNodes.isEmpty {
            report(node, path: "\(path).key", "missing; set the shared access key with 'key_file' (a file holding it) or 'key', \(Self.keygenHint)")
        } else if draft.keyNodes.count > 1 {
            draft.key = nil
            report(draft.keyNodes[1], path: path, "set only one of 'key' or 'key_file'")
        }
        if modeKeys.isEmpty {
            report(node, path: path, "set one of 'expose' (offer a local service to the peer) or 'listen' (a local port that reaches the peer's service)")
        } else if modeKeys.count > 1 {
            draft.mode = nil
            report(modeKeys[1], path: path, "set only one of 'expose' or 'listen', not both; use two forwards for both directions")
        }
        return draft
    }

    private mutating func reportDuplicateNames(_ drafts: [ForwardDraft]) {
        var firstPathByName: [String: String] = [:]
        for draft in drafts {
            guard let name = draft.name else { continue }
            if let firstPath = firstPathByName[name] {
                report(draft.nameNode, path: "\(draft.path).name", "duplicate name '\(name)' (also \(firstPath))")
            } else {
                firstPathByName[name] = draft.path
            }
        }
    }

    /// Two listeners on one port and protocol cannot both bind: said here, naming both, rather
    /// than left to a bind error that `run` would retry for ever.
    private mutating func reportPortClashes(_ drafts: [ForwardDraft], serve: Endpoint?, serveNode: Node?, metrics: Endpoint?,
                                            metricsNode: Node?) {
        var taken: [(endpoint: Endpoint, udp: Bool, owner: String, line: Int?)] = []
        if let serve {
            // The in-agent server takes the port for TCP signaling and for STUN over UDP.
            for udp in [false, true] { taken.append((serve, udp, "serve", serveNode?.mark?.line)) }
        }
        if let metrics {
            if let other = taken.first(where: { !$0.udp && Self.bindsOverlap($0.endpoint, metrics) }) {
                let where_ = other.line.map { " (line \($0))" } ?? ""
                report(metricsNode, path: "metrics", "TCP port \(metrics.port) is already taken by \(other.owner)\(where_); give the metrics endpoint its own port")
            } else {
                taken.append((metrics, false, "metrics", metricsNode?.mark?.line))
            }
        }
        for draft in drafts {
            guard case .listen(let endpoint)? = draft.mode, let transport = draft.transport else { continue }
            let udp = transport == .udp
            let path = "\(draft.path).listen"
            if let other = taken.first(where: { $0.udp == udp && Self.bindsOverlap($0.endpoint, endpoint) }) {
                let where_ = other.line.map { " (line \($0))" } ?? ""
                report(draft.modeNode, path: path,
                       "\(udp ? "UDP" : "TCP") port \(endpoint.port) is already taken by \(other.owner)\(where_); give each listener its own port")
            } else {
                taken.append((endpoint, udp, path, draft.modeNode?.mark?.line))
            }
        }
    }

    /// Whether two local addresses with the same port cannot both be bound: the same host, or an
    /// any-address of the same family (an IPv6 one also takes IPv4, being dual-stack). `localhost`
    /// is 127.0.0.1, as the agent binds it.
    static func bindsOverlap(_ a: Endpoint, _ b: Endpoint) -> Bool {
        let a = a.localhostAsLoopback, b = b.localhostAsLoopback
        guard a.port == b.port else { return false }
        if a.host.lowercased() == b.host.lowercased() { return true }
        for (any, other) in [(a, b), (b, a)] where any.isUnspecified {
            if any.isIPv6 || !other.isIPv6 { return true }
        }
        return false
    }

    // MARK: - Field readers (each reports its own problem and returns nil on failure)

    /// The text of a scalar; reports lists, mappings and empty values.
    private mutating func scalarText(_ node: Node, path: String, expected: String) -> String? {
        guard let scalar = node.scalar else {
            report(node, path: path, "expected \(expected), got \(describe(node))")
            return nil
        }
        if node.tagName == .null {
            report(node, path: path, "has no value; expected \(expected)")
            return nil
        }
        return scalar.string
    }

    private mutating func endpoint(_ node: Node, path: String) -> Endpoint? {
        guard let text = scalarText(node, path: path, expected: "HOST:PORT") else { return nil }
        do {
            return try Endpoint(parsing: text)
        } catch {
            report(node, path: path, error.description)
            return nil
        }
    }

    /// An address on this machine: listening or connecting to something that is not here makes no sense.
    private mutating func localEndpoint(_ node: Node, path: String) -> Endpoint? {
        guard let endpoint = endpoint(node, path: path) else { return nil }
        guard endpoint.isIPLiteral || endpoint.host.lowercased() == "localhost" else {
            report(node, path: path, "host must be an IP address or 'localhost' (an address on this machine), got '\(endpoint.host)'")
            return nil
        }
        return endpoint
    }

    /// `server_token` or `server_token_file`, at the top or on a forward: at most one of the two.
    struct TokenSetting {
        var value: String?
        var given = false
        var failed = false

        mutating func read(_ key: String, _ node: Node, parser: inout ConfigParser, path: String) {
            if given {
                parser.report(node, path: path, "set only one of 'server_token' or 'server_token_file'")
                failed = true
                return
            }
            given = true
            if key == "server_token" {
                value = parser.token(node, path: path)
            } else if let file = parser.scalarText(node, path: path, expected: "the path of a file holding the token") {
                value = parser.tokenFromFile(file, node: node, path: path)
            }
            if value == nil { failed = true }
        }
    }

    fileprivate mutating func token(_ node: Node, path: String) -> String? {
        guard let text = scalarText(node, path: path, expected: "the token the server's operator gave you") else { return nil }
        return checkedToken(text, node: node, path: path, origin: "")
    }

    private mutating func checkedToken(_ text: String, node: Node, path: String, origin: String) -> String? {
        guard !text.isEmpty, text.count <= 256, !text.contains(where: \.isWhitespace) else {
            report(node, path: path, "\(origin)a token is 1-256 characters without spaces")
            return nil
        }
        return text
    }

    /// A path as the config gives it, taken from the config file's folder when relative.
    private func resolve(_ file: String) -> String {
        guard !file.hasPrefix("/"), let slash = source.lastIndex(of: "/") else { return file }
        return String(source[...slash]) + file
    }

    /// The access key in a key file (its first line that is neither blank nor a `#` comment),
    /// checked like any key; a file other users can read is a warning.
    private mutating func keyFromFile(_ file: String, node: Node, path: String) -> String? {
        let resolved = resolve(file)
        let key: String
        do {
            key = try SecretFile.read(resolved, what: "key")
        } catch {
            report(node, path: path, error.description)
            return nil
        }
        if let problem = AccessKeyPolicy.problem(with: key) {
            report(node, path: path, "in '\(resolved)': \(problem)")
            return nil
        }
        if let exposure = SecretFile.exposure(of: resolved) { warnings.append("\(path): \(exposure)") }
        return key
    }

    /// The first token in a file (blank lines and `#` comments skipped); a relative path is taken
    /// from the config file's folder.
    fileprivate mutating func tokenFromFile(_ file: String, node: Node, path: String) -> String? {
        let resolved = resolve(file)
        let first: String
        do {
            first = try ServerTokenFile.read(resolved)
        } catch {
            report(node, path: path, error.description)
            return nil
        }
        if let exposure = SecretFile.exposure(of: resolved) { warnings.append("\(path): \(exposure)") }
        return first
    }

    /// `none`, or the admin socket's path; a relative path is taken from the config file's folder.
    private mutating func adminSocket(_ node: Node, path: String) -> AdminSocketSetting? {
        guard let text = scalarText(node, path: path, expected: "the path of the agent's admin socket, or none") else { return nil }
        if text.lowercased() == "none" { return .disabled }
        var resolved = text
        if !text.isEmpty, !text.hasPrefix("/"), let slash = source.lastIndex(of: "/") {
            resolved = String(source[...slash]) + text
        }
        if let problem = AdminSocketSetting.problem(with: resolved) {
            report(node, path: path, problem)
            return nil
        }
        return .path(resolved)
    }

    private mutating func name(_ node: Node, path: String) -> String? {
        guard let text = scalarText(node, path: path, expected: "a name") else { return nil }
        let allowed = text.allSatisfy { $0.isASCIILetterOrDigit || "._-".contains($0) }
        guard (1...64).contains(text.count), allowed else {
            report(node, path: path, "must be 1-64 characters of letters, digits, '.', '_' and '-', got '\(text)'")
            return nil
        }
        return text
    }

    private mutating func accessKey(_ node: Node, path: String) -> String? {
        guard let text = scalarText(node, path: path, expected: "the shared access key, \(Self.keygenHint)") else { return nil }
        if let problem = AccessKeyPolicy.problem(with: text) {
            report(node, path: path, problem)
            return nil
        }
        return text
    }

    /// One of `values`, compared case-insensitively and returned lowercased.
    private mutating func choice(_ node: Node, path: String, from values: [String], what: String) -> String? {
        let valid = values.joined(separator: ", ")
        guard let text = scalarText(node, path: path, expected: "one of \(valid)") else { return nil }
        let lowered = text.lowercased()
        guard values.contains(lowered) else {
            report(node, path: path, "unknown \(what) '\(text)'; valid values: \(valid)")
            return nil
        }
        return lowered
    }

    private mutating func ipAddress(_ node: Node, path: String) -> String? {
        let expected = "an IP address such as 203.0.113.7 or 2001:db8::1"
        guard let text = scalarText(node, path: path, expected: expected) else { return nil }
        let unbracketed = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        guard IPLiteral.isIPv4(unbracketed) || IPLiteral.isIPv6(unbracketed) else {
            report(node, path: path, "expected \(expected), got '\(text)'")
            return nil
        }
        return unbracketed
    }

    private mutating func integer(_ node: Node, path: String, in range: ClosedRange<Int>) -> Int? {
        guard let text = scalarText(node, path: path, expected: "an integer") else { return nil }
        // Quoted digits are accepted too; the intent is unambiguous.
        guard let value = node.tagName == .int ? node.int : Int(text) else {
            report(node, path: path, "expected an integer, got '\(text)'")
            return nil
        }
        guard range.contains(value) else {
            report(node, path: path, "must be \(range.lowerBound)-\(range.upperBound), got \(value)")
            return nil
        }
        return value
    }

    private mutating func boolean(_ node: Node, path: String) -> Bool? {
        guard let text = scalarText(node, path: path, expected: "true or false") else { return nil }
        let value = node.tagName == .bool ? node.bool : Bool(text.lowercased())
        guard let value else {
            report(node, path: path, "expected true or false, got '\(text)'")
            return nil
        }
        return value
    }

    /// A duration within `limit`, the same the command line takes.
    private mutating func duration(_ node: Node, path: String, limit: DurationLimit) -> Duration? {
        let expected = "a duration such as 10 (seconds), 2.5, \"250ms\", \"10s\", \"2m\" or \"1h\""
        guard let text = scalarText(node, path: path, expected: expected) else { return nil }
        let seconds: Double?
        switch node.tagName {
        case .int: seconds = node.int.map(Double.init)
        case .float: seconds = node.float.flatMap { $0.isFinite ? $0 : nil }
        default: seconds = DurationText.seconds(from: text)
        }
        guard let seconds else {
            report(node, path: path, "expected \(expected), got '\(text)'")
            return nil
        }
        if let problem = limit.problem(seconds, text: text) {
            report(node, path: path, problem)
            return nil
        }
        // Milliseconds, as the command line takes them: 1e-9 is not a duration anyone means.
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }

    // MARK: - Reporting

    private mutating func report(_ node: Node?, path: String, _ message: String) {
        report(line: node?.mark?.line, path: path, message)
    }

    private mutating func report(line: Int?, path: String, _ message: String) {
        problems.append(ConfigProblem(source: source, line: line, path: path, message: message))
    }

    private mutating func reportUnknownKey(_ keyNode: Node, parentPath: String, known: [String],
                                           otherLevel: [String], otherLevelHint: String) {
        let key = keyNode.string ?? describe(keyNode)
        let path = parentPath.isEmpty ? key : "\(parentPath).\(key)"
        if otherLevel.contains(key) {
            report(keyNode, path: path, "unknown key here; '\(key)' \(otherLevelHint)")
        } else if let suggestion = Self.closestKey(to: key, in: known) {
            report(keyNode, path: path, "unknown key; did you mean '\(suggestion)'?")
        } else {
            report(keyNode, path: path, "unknown key; valid keys are \(known.joined(separator: ", "))")
        }
    }

    private mutating func reportSyntaxError(_ error: YamlError, yaml: String) {
        switch error {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            var message = "YAML syntax error: \(problem)"
            if let context {
                message += " (\(context.text) on line \(context.mark.line))"
            }
            if Self.line(mark.line, of: yaml)?.contains("\t") == true {
                message += "; indent with spaces, not tabs"
            }
            report(line: mark.line, path: "", message)
        case .reader(let problem, let offset, _, _):
            let line = offset.map { offset in 1 + yaml.prefix(offset).filter(\.isNewline).count }
            report(line: line, path: "", "cannot read YAML: \(problem); the file must be UTF-8 text")
        case .duplicatedKeysInMapping(let duplicates, let context):
            let first = context.mark
            for key in duplicates {
                if let line = Self.repeatedKeyLine(key, after: first, in: yaml) {
                    report(line: line, path: "", "duplicate key '\(key)' in the same mapping (first on line \(first.line)); each key may appear only once")
                } else {
                    report(line: first.line, path: "", "duplicate key '\(key)' in the same mapping; each key may appear only once")
                }
            }
        default:
            report(line: nil, path: "", "YAML error: \(error)")
        }
    }

    // MARK: - Helpers

    private func describe(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar(let scalar): return node.tagName == .null ? "nothing" : "'\(scalar.string)'"
        case .alias: return "an alias"
        }
    }

    /// The nearest known key within edit distance 2, for typo suggestions.
    static func closestKey(to key: String, in known: [String]) -> String? {
        let scored = known.map { (candidate: $0, distance: editDistance(key.lowercased(), $0)) }
        guard let best = scored.min(by: { $0.distance < $1.distance }), best.distance <= 2 else { return nil }
        return best.candidate
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = Array(repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }

    private static func line(_ number: Int, of text: String) -> Substring? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return lines.indices.contains(number - 1) ? lines[number - 1] : nil
    }

    /// Yams reports where a duplicated key first appears; the mistake is usually the later copy,
    /// so look for the same key at the same column further down.
    static func repeatedKeyLine(_ key: String, after first: Mark, in text: String) -> Int? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard first.line >= 1 else { return nil }
        for number in (first.line + 1)...max(first.line + 1, lines.count) where number <= lines.count {
            let line = lines[number - 1]
            let column = first.column - 1
            guard line.count > column else { continue }
            let start = line.index(line.startIndex, offsetBy: column)
            let rest = line[start...]
            let before = line[..<start]
            guard before.allSatisfy({ $0 == " " || $0 == "-" }) else { continue }
            for spelling in [key, "\"\(key)\"", "'\(key)'"] where rest.hasPrefix(spelling) {
                if rest.dropFirst(spelling.count).trimmingSpaces.hasPrefix(":") { return number }
            }
        }
        return nil
    }
}

extension Node {
    /// The resolved tag's name (`Tag.name` itself is not public).
    var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }
}
