/// A network address written as `HOST:PORT`, where HOST is an IPv4 literal, a bracketed IPv6 literal or a DNS name.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    /// The host without brackets: `127.0.0.1`, `::1` or `signal.example.net`.
    public let host: String
    public let port: UInt16

    /// Creates an endpoint from parts that are already known to be valid, such as a peer's socket address.
    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; IPv6 hosts must be bracketed, as in `[::1]:7000`.
    public init(parsing text: String) throws(EndpointError) {
        if text.isEmpty { throw .empty }
        if text.contains(where: { $0.isWhitespace }) { throw .invalidHost(text) }

        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw .invalidIPv6(text) }
            hostPart = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard IPLiteral.isIPv6(hostPart) else { throw .invalidIPv6(String(text[...close])) }
            guard rest.hasPrefix(":") else {
                if rest.isEmpty { throw .missingPort(text) }
                throw .invalidHost(text)
            }
            portPart = rest.dropFirst()
        } else {
            let colonCount = text.filter { $0 == ":" }.count
            if colonCount == 0 { throw .missingPort(text) }
            if colonCount > 1 { throw .unbracketedIPv6(Endpoint.bracketingSuggestion(for: text)) }
            let colon = text.firstIndex(of: ":")!
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            if hostPart.isEmpty { throw .missingHost(text) }
            try Endpoint.validateUnbracketedHost(hostPart)
        }

        if portPart.isEmpty { throw .missingPort(text) }
        guard portPart.allSatisfy(\.isASCIIDigit) else { throw .invalidPort("'\(portPart)'") }
        guard portPart.count <= 5, let port = Int(portPart), (1...65535).contains(port) else {
            throw .invalidPort(String(portPart))
        }
        self.host = String(hostPart)
        self.port = UInt16(port)
    }

    /// `host:port`, with an IPv6 host put back in brackets.
    public var description: String {
        isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    public var isIPv4: Bool { IPLiteral.isIPv4(host) }
    public var isIPv6: Bool { IPLiteral.isIPv6(host) }
    public var isIPLiteral: Bool { isIPv4 || isIPv6 }

    /// True for the any-address (`0.0.0.0`, `::`), which can be listened on but not dialed.
    public var isUnspecified: Bool {
        if let octets = IPLiteral.ipv4Octets(Substring(host)) { return octets.allSatisfy { $0 == 0 } }
        if let groups = IPLiteral.ipv6Groups(Substring(host)) { return groups.allSatisfy { $0 == 0 } }
        return false
    }

    /// The address a local client should dial to reach a server listening here:
    /// the any-address is replaced by loopback of the same family.
    public var dialable: Endpoint {
        guard isUnspecified else { return self }
        return Endpoint(host: isIPv6 ? "::1" : "127.0.0.1", port: port)
    }

    /// The same endpoint with `localhost` (any case) as `127.0.0.1`, so a local endpoint is an IP
    /// literal and binding or connecting to it needs no name lookup.
    public var localhostAsLoopback: Endpoint {
        host.lowercased() == "localhost" ? Endpoint(host: "127.0.0.1", port: port) : self
    }

    private static func validateUnbracketedHost(_ host: Substring) throws(EndpointError) {
        // A name whose last label is numeric is meant as an IPv4 address (RFC 3696 forbids numeric TLDs).
        let lastLabel = host.split(separator: ".", omittingEmptySubsequences: false).last ?? ""
        if !lastLabel.isEmpty && lastLabel.allSatisfy(\.isASCIIDigit) {
            guard IPLiteral.isIPv4(host) else { throw .invalidIPv4(String(host)) }
            return
        }
        guard isHostname(host) else { throw .invalidHost(String(host)) }
    }

    /// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
    static func isHostname(_ host: Substring) -> Bool {
        guard host.count <= 253 else { return false }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            (1...63).contains(label.count)
                && label.allSatisfy { $0.isASCIILetterOrDigit || $0 == "-" }
                && label.first != "-" && label.last != "-"
        }
    }

    private static func bracketingSuggestion(for text: String) -> String {
        if let colon = text.lastIndex(of: ":") {
            let host = text[..<colon]
            let port = text[text.index(after: colon)...]
            if IPLiteral.isIPv6(host), !port.isEmpty, port.allSatisfy(\.isASCIIDigit) {
                return "[\(host)]:\(port)"
            }
        }
        if IPLiteral.isIPv6(text) { return "[\(text)]:PORT" }
        return "[::1]:7000"
    }
}

/// Why a `HOST:PORT` string was refused; `description` is a message for the person editing the config.
public enum EndpointError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    case missingPort(String)
    case missingHost(String)
    /// The offending port as it should be shown: a bare number, or quoted text.
    case invalidPort(String)
    /// Carries the corrected spelling to suggest.
    case unbracketedIPv6(String)
    case invalidIPv6(String)
    case invalidIPv4(String)
    case invalidHost(String)

    public var description: String {
        switch self {
        case .empty:
            return "is empty; expected HOST:PORT, e.g. 127.0.0.1:7000"
        case .missingPort(let text):
            return "missing port in '\(text)'; expected HOST:PORT, e.g. 127.0.0.1:7000"
        case .missingHost(let text):
            return "missing host in '\(text)'; expected HOST:PORT, e.g. 127.0.0.1:7000"
        case .invalidPort(let shown):
            return "port must be 1-65535, got \(shown)"
        case .unbracketedIPv6(let suggestion):
            return "IPv6 addresses must be in brackets: write \(suggestion)"
        case .invalidIPv6(let text):
            return "invalid IPv6 address '\(text)'"
        case .invalidIPv4(let host):
            return "invalid IPv4 address '\(host)'"
        case .invalidHost(let text):
            return "invalid host '\(text)'; expected an IPv4 address, a bracketed IPv6 address or a DNS name"
        }
    }
}
