#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Which side of a pairing a client is.
public enum SignalRole: String, Sendable, Codable {
    /// Waits at the server for a receiver (the side that wants to reach a service).
    case initiator
    /// Asks the server for a waiting initiator (the side that exposes a service).
    case receiver
}

/// The one JSON object a client sends per signaling connection.
///
/// The first four fields are the original protocol's, in its order; the rest are optional
/// extensions that older servers ignore.
public struct ClientHello: Equatable, Sendable {
    /// The pairing key (`uuid` on the wire).
    public var key: String
    /// The receiver's public IP an initiator expects (`target_ip`); empty for receivers.
    public var targetIP: String
    /// `tcp` or `udp` (`protocol`).
    public var transport: String
    /// The client's public UDP `ip:port` (`address`), for UDP pairings.
    public var address: String
    /// Explicit role; without it an empty `target_ip` means receiver.
    public var role: SignalRole?
    /// Receiver long-poll: wait up to this many seconds for an initiator.
    public var wait: Int?
    /// The client's relay policy (`relay`: `auto`, `never` or `only`); absent means the client
    /// cannot use the server's relay, as with the original clients.
    public var relay: String?
    /// On a relay connection (`protocol` `relay`): the id the pairing's reply granted (`relay_id`).
    public var relayID: String?
    /// The operator's token (`token`) that lets this client relay, or pair at all on a server that
    /// requires one. Never logged.
    public var token: String?
    /// The client's own addresses where a peer on the same network may reach it (`candidates`:
    /// comma-separated `ip:port`, ICE's host candidates); the server hands them to the peer.
    public var candidates: String?

    public init(key: String, targetIP: String = "", transport: String = "tcp", address: String = "",
                role: SignalRole? = nil, wait: Int? = nil, relay: String? = nil, relayID: String? = nil, token: String? = nil,
                candidates: String? = nil) {
        self.key = key
        self.targetIP = targetIP
        self.transport = transport
        self.address = address
        self.role = role
        self.wait = wait
        self.relay = relay
        self.relayID = relayID
        self.token = token
        self.candidates = candidates
    }

    /// The `protocol` of a hello that asks the server to join this connection to the peer's.
    public static let relayTransport = "relay"
}

extension ClientHello: CustomStringConvertible {
    /// The fields as text, the token left out.
    public var description: String {
        var copy = self
        if copy.token != nil { copy.token = "(redacted)" }
        return String(decoding: copy.encoded().dropLast(), as: UTF8.self)
    }

    /// The role the server applies: the explicit one, else receiver when `target_ip` is empty.
    public var effectiveRole: SignalRole {
        role ?? (targetIP.isEmpty ? .receiver : .initiator)
    }

    /// Encodes as the original client does: its field order, then extensions, then a newline.
    public func encoded() -> [UInt8] {
        var fields: [(String, JSONValue)] = [
            ("uuid", .string(key)), ("target_ip", .string(targetIP)),
            ("protocol", .string(transport)), ("address", .string(address)),
        ]
        if let role { fields.append(("role", .string(role.rawValue))) }
        if let wait { fields.append(("wait", .int(wait))) }
        if let relay { fields.append(("relay", .string(relay))) }
        if let relayID { fields.append(("relay_id", .string(relayID))) }
        if let token { fields.append(("token", .string(token))) }
        if let candidates { fields.append(("candidates", .string(candidates))) }
        return JSONWriter.object(fields)
    }

    /// Decodes one hello (trailing newline or whitespace allowed).
    public static func decode(_ bytes: [UInt8]) throws -> ClientHello {
        let wire: HelloWire
        if let simple = HelloWire.parseFlat(bytes) {
            wire = simple
        } else {
            do {
                wire = try JSONDecoder().decode(HelloWire.self, from: Data(bytes))
            } catch {
                throw SignalingError.malformed("hello is not a valid JSON object: \(SignalingError.summarize(error))")
            }
        }
        var role: SignalRole?
        if let text = wire.role, !text.isEmpty {
            guard let parsed = SignalRole(rawValue: text) else {
                throw SignalingError.malformed("unknown role '\(text)' (expected initiator or receiver)")
            }
            role = parsed
        }
        return ClientHello(key: wire.uuid ?? "", targetIP: wire.target_ip ?? "", transport: wire.protocol ?? "",
                           address: wire.address ?? "", role: role, wait: wire.wait, relay: wire.relay,
                           relayID: wire.relay_id, token: wire.token, candidates: wire.candidates)
    }
}

/// A hello's fields as they appear on the wire, before `ClientHello` gives them meaning.
struct HelloWire: Decodable, Equatable {
    var uuid: String?
    var target_ip: String?
    var `protocol`: String?
    var address: String?
    var role: String?
    var wait: Int?
    var relay: String?
    var relay_id: String?
    var token: String?
    var candidates: String?

    /// The common hello, parsed without Foundation: one flat object whose keys and string values
    /// have no escapes or control characters, and whose `wait` is a plain integer. Anything else
    /// (escapes, nesting, duplicate keys, other types) returns nil, and the caller uses
    /// `JSONDecoder`, which gives the same result for the simple form and a proper error
    /// otherwise. A busy server spends most of a pairing's user time decoding hellos without this.
    static func parseFlat(_ bytes: [UInt8]) -> HelloWire? {
        var i = 0
        let n = bytes.count
        func skipSpace() {
            while i < n, bytes[i] == 0x20 || bytes[i] == 0x0a || bytes[i] == 0x0d || bytes[i] == 0x09 { i += 1 }
        }
        /// A string with no escapes; returns its byte range.
        func string() -> Range<Int>? {
            guard i < n, bytes[i] == 0x22 else { return nil }
            let start = i + 1
            var j = start
            while j < n, bytes[j] != 0x22 {
                if bytes[j] == 0x5c || bytes[j] < 0x20 { return nil }
                j += 1
            }
            guard j < n else { return nil }
            i = j + 1
            return start..<j
        }
        /// Nil for invalid UTF-8, which the full decoder refuses. (Comparing lengths after a
        /// repairing decode misses a cut 4-byte sequence: its 3 bytes become one 3-byte U+FFFD.)
        func text(_ r: Range<Int>) -> String? {
            String(validating: bytes[r], as: UTF8.self)
        }
        var hello = HelloWire()
        var seen = Set<String>()
        skipSpace()
        guard i < n, bytes[i] == 0x7b else { return nil }
        i += 1
        skipSpace()
        if i < n, bytes[i] == 0x7d { i += 1; skipSpace(); return i == n ? hello : nil }
        while true {
            skipSpace()
            guard let keyRange = string(), let key = text(keyRange), seen.insert(key).inserted else { return nil }
            skipSpace()
            guard i < n, bytes[i] == 0x3a else { return nil }
            i += 1
            skipSpace()
            if key == "wait" {
                var j = i
                if j < n, bytes[j] == 0x2d { j += 1 }
                let digits = j
                while j < n, bytes[j] >= 0x30, bytes[j] <= 0x39 { j += 1 }
                let count = j - digits
                guard count > 0, count <= 18, !(count > 1 && bytes[digits] == 0x30),
                      let value = Int(String(decoding: bytes[i..<j], as: UTF8.self)) else { return nil }
                hello.wait = value
                i = j
            } else {
                guard let valueRange = string(), let value = text(valueRange) else { return nil }
                switch key {
                case "uuid": hello.uuid = value
                case "target_ip": hello.target_ip = value
                case "protocol": hello.protocol = value
                case "address": hello.address = value
                case "role": hello.role = value
                case "relay": hello.relay = value
                case "relay_id": hello.relay_id = value
                case "token": hello.token = value
                case "candidates": hello.candidates = value
                default: break
                }
            }
            skipSpace()
            guard i < n else { return nil }
            if bytes[i] == 0x2c { i += 1; continue }
            guard bytes[i] == 0x7d else { return nil }
            i += 1
            skipSpace()
            return i == n ? hello : nil
        }
    }
}

/// The one JSON object the server sends back.
public struct ServerReply: Equatable, Sendable {
    /// The pairing's protocol (`protocol`).
    public var transport: String
    /// The peer's `ip:port` (`peer_address`), empty on error.
    public var peerAddress: String
    /// Why there is no peer (`error`), empty on success.
    public var error: String
    /// On a TCP pairing the server will relay: the id both sides present on their relay
    /// connections (`relay_id`).
    public var relayID: String?
    /// Why the server will not relay this pairing, when the client asked for it (`relay_refused`).
    public var relayRefused: String?
    /// The peer's relay policy as its hello gave it (`peer_relay`).
    public var peerRelay: String?
    /// The peer's host candidates as its hello gave them (`peer_candidates`).
    public var peerCandidates: String?

    public init(transport: String = "", peerAddress: String = "", error: String = "",
                relayID: String? = nil, relayRefused: String? = nil, peerRelay: String? = nil, peerCandidates: String? = nil) {
        self.transport = transport
        self.peerAddress = peerAddress
        self.error = error
        self.relayID = relayID
        self.relayRefused = relayRefused
        self.peerRelay = peerRelay
        self.peerCandidates = peerCandidates
    }

    public static func failure(_ message: String) -> ServerReply { ServerReply(error: message) }

    /// Encodes as the original server does: empty `peer_address` and `error` are left out.
    public func encoded() -> [UInt8] {
        var fields: [(String, JSONValue)] = [("protocol", .string(transport))]
        if !peerAddress.isEmpty { fields.append(("peer_address", .string(peerAddress))) }
        if !error.isEmpty { fields.append(("error", .string(error))) }
        if let relayID { fields.append(("relay_id", .string(relayID))) }
        if let relayRefused { fields.append(("relay_refused", .string(relayRefused))) }
        if let peerRelay { fields.append(("peer_relay", .string(peerRelay))) }
        if let peerCandidates { fields.append(("peer_candidates", .string(peerCandidates))) }
        return JSONWriter.object(fields)
    }

    public static func decode(_ bytes: [UInt8]) throws -> ServerReply {
        struct Wire: Decodable {
            var `protocol`: String?
            var peer_address: String?
            var error: String?
            var relay_id: String?
            var relay_refused: String?
            var peer_relay: String?
            var peer_candidates: String?
        }
        do {
            let wire = try JSONDecoder().decode(Wire.self, from: Data(bytes))
            return ServerReply(transport: wire.protocol ?? "", peerAddress: wire.peer_address ?? "", error: wire.error ?? "",
                               relayID: wire.relay_id, relayRefused: wire.relay_refused, peerRelay: wire.peer_relay,
                               peerCandidates: wire.peer_candidates)
        } catch {
            throw SignalingError.malformed("reply is not a valid JSON object: \(SignalingError.summarize(error))")
        }
    }
}

/// The original server's error texts, kept so existing clients keep recognising them.
public enum ServerErrorText {
    public static let keyInUse = "UUID already in use"
    public static let initiatorTimedOut = "Timed out waiting for an initiator"
    public static let noInitiator = "Receiver with that UUID not found"
    public static let tooManyWaiting = "Too many initiators waiting; try again later"
    public static let tooManyReceivers = "Too many receivers waiting on this key; try again later"
    public static let missingKey = "Missing uuid"
    public static let helloTooLarge = "Hello too large"
    public static let helloTimedOut = "No hello received in time"
    public static let authRequired = "Auth required: this server pairs only clients with a valid token"
    public static let relayUnknown = "Relay refused: no pairing with that relay id"
    public static let relaySideTaken = "Relay refused: that side of the pairing is already connected"
    public static let relayPeerMissing = "Relay refused: the peer did not connect to the relay in time"
}

enum JSONValue {
    case string(String)
    case int(Int)
}

/// Writes JSON the way Go's encoding/json does, so our bytes match the original's byte for byte.
enum JSONWriter {
    static func object(_ fields: [(String, JSONValue)]) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "{")]
        for (index, (name, value)) in fields.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            appendString(name, to: &out)
            out.append(UInt8(ascii: ":"))
            switch value {
            case .string(let s): appendString(s, to: &out)
            case .int(let n): out.append(contentsOf: Array(String(n).utf8))
            }
        }
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
        return out
    }

    private static let hex = Array("0123456789abcdef".utf8)

    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for scalar in s.unicodeScalars {
            switch scalar.value {
            case 0x22: out += [0x5c, 0x22]
            case 0x5c: out += [0x5c, 0x5c]
            case 0x0a: out += [0x5c, UInt8(ascii: "n")]
            case 0x0d: out += [0x5c, UInt8(ascii: "r")]
            case 0x09: out += [0x5c, UInt8(ascii: "t")]
            case 0x08: out += [0x5c, UInt8(ascii: "b")]
            case 0x0c: out += [0x5c, UInt8(ascii: "f")]
            // Go escapes these for safe embedding in HTML and JavaScript.
            case 0x00..<0x20, 0x3c, 0x3e, 0x26, 0x2028, 0x2029:
                let v = scalar.value
                out += [0x5c, UInt8(ascii: "u"), hex[Int(v >> 12 & 0xf)], hex[Int(v >> 8 & 0xf)], hex[Int(v >> 4 & 0xf)], hex[Int(v & 0xf)]]
            default:
                out.append(contentsOf: Array(String(scalar).utf8))
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// Finds where the first JSON object in a byte stream ends, so a hello can be read without a newline.
public enum JSONObjectScanner {
    public enum Result: Equatable, Sendable {
        /// The object ends just before this index.
        case complete(end: Int)
        case incomplete
        /// The stream does not start with an object.
        case invalid
    }

    public static func scan(_ bytes: [UInt8]) -> Result {
        var depth = 0
        var inString = false
        var escaped = false
        var started = false
        for (i, b) in bytes.enumerated() {
            if inString {
                if escaped { escaped = false } else if b == 0x5c { escaped = true } else if b == 0x22 { inString = false }
                continue
            }
            switch b {
            case 0x20, 0x09, 0x0a, 0x0d:
                continue
            case UInt8(ascii: "{"):
                depth += 1
                started = true
            case UInt8(ascii: "}"):
                guard started else { return .invalid }
                depth -= 1
                if depth == 0 { return .complete(end: i + 1) }
            case 0x22:
                guard started else { return .invalid }
                inString = true
            default:
                guard started else { return .invalid }
            }
        }
        return .incomplete
    }
}

/// A signaling failure: the server's own error, a malformed message, or a transport problem,
/// with the error that caused it.
public struct SignalingError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, for code that decides what to do next.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable { case server, noInitiator, noPeer, malformed, transport, timedOut }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The server refused the request and said why.
        public static let server = Code(.server)
        /// A receiver asked for an initiator and none was waiting (the server's normal answer to a poll).
        public static let noInitiator = Code(.noInitiator)
        /// An initiator waited and no receiver with its key came: nobody exposes with this key.
        public static let noPeer = Code(.noPeer)
        /// A message could not be decoded.
        public static let malformed = Code(.malformed)
        /// The server could not be reached, or the connection to it failed.
        public static let transport = Code(.transport)
        /// The server did not answer in time.
        public static let timedOut = Code(.timedOut)

        public var description: String {
            switch base {
            case .server: "refused by the server"
            case .noInitiator: "no initiator waiting"
            case .noPeer: "no peer with this key"
            case .malformed: "malformed message"
            case .transport: "transport failure"
            case .timedOut: "timed out"
            }
        }
    }

    public let code: Code
    /// The message, worded for people: operation, subject and cause.
    public let message: String
    /// The error underneath, such as the socket error of a failed connect.
    public let underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    /// The server's own error text; its "no initiator" answer gets its own code.
    public static func server(_ message: String) -> SignalingError {
        switch message {
        case ServerErrorText.noInitiator: SignalingError(.noInitiator, message)
        // The original server's words for an initiator nobody came for.
        case ServerErrorText.initiatorTimedOut: SignalingError(.noPeer, message)
        default: SignalingError(.server, message)
        }
    }
    public static func malformed(_ message: String, underlying: (any Error)? = nil) -> SignalingError {
        SignalingError(.malformed, message, underlying: underlying)
    }
    public static func transport(_ message: String, underlying: (any Error)? = nil) -> SignalingError {
        SignalingError(.transport, message, underlying: underlying)
    }

    public var description: String {
        switch code {
        case .server, .noInitiator: return "signaling server: \(message)"
        default: return message
        }
    }

    static func summarize(_ error: Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "field '\(path)': \(context.debugDescription)"
        case DecodingError.dataCorrupted(let context):
            return trimmed(context.debugDescription)
        default:
            return trimmed("\(error)")
        }
    }

    /// Without the final full stop, so the sentence it goes into can go on.
    private static func trimmed(_ text: String) -> String {
        text.hasSuffix(".") ? String(text.dropLast()) : text
    }
}
