#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What a client may ask an agent on its admin socket. A request is one word on one line; each
/// new request is a new word.
public enum AdminRequest: String, Sendable, CaseIterable {
    /// Each forward's link and counters, answered as an `AgentStatus`.
    case status
    /// Read the config file again and apply it; answered with what changed (or why nothing did).
    case reload
}

/// The admin socket's protocol: a client connects, sends one request line (`status\n`), and the
/// agent answers with one JSON object and a newline, then closes. An error is answered as
/// `{"error": "..."}`. Framing and parsing here are pure; `AdminServer` and `AdminClient` do the I/O.
public enum AdminProtocol {
    /// The longest request line (the words are short; anything longer is not a request), so a
    /// client cannot make the agent hold more than this.
    public static let maximumRequestLength = 256
    /// How long a client has to send its line after connecting: a local program sends it at
    /// once, and one that does not must not hold a connection for long.
    public static let requestTimeout: Duration = .seconds(2)
    /// How long a client has to take the answer. An answer fits in the socket's buffer unless
    /// the agent has hundreds of forwards, so this only ends clients that stopped reading.
    public static let responseTimeout: Duration = .seconds(5)
    /// Clients served at once; more wait in the listen backlog until one is done.
    public static let maximumClients = 8
    /// The largest answer a client accepts: a status is about 1 KiB per forward.
    public static let maximumAnswerLength = 8 << 20

    /// What a client should send, for error answers.
    public static var usage: String {
        "send one line naming a request: " + AdminRequest.allCases.map(\.rawValue).joined(separator: ", ")
    }

    /// The bytes a client sends for `request`.
    public static func encode(_ request: AdminRequest) -> [UInt8] {
        Array("\(request.rawValue)\n".utf8)
    }

    /// What the bytes received so far hold.
    public enum Framing: Equatable, Sendable {
        /// No whole line yet: read more.
        case incomplete
        case request(AdminRequest)
        /// Not a request; the message says why, for the error answer.
        case invalid(String)
    }

    /// Finds the request in what a client sent so far. `ended` says the client has closed its
    /// side, which also ends a line (as `printf status | socat`). At most `maximumLength` bytes
    /// before the newline are taken.
    public static func frame(_ received: [UInt8], ended: Bool, maximumLength: Int = maximumRequestLength) -> Framing {
        let line: ArraySlice<UInt8>
        if let newline = received.firstIndex(of: UInt8(ascii: "\n")), newline <= maximumLength {
            line = received[..<newline]
        } else if received.count > maximumLength {
            return .invalid("request longer than \(maximumLength) bytes; \(usage)")
        } else if ended {
            line = received[...]
        } else {
            return .incomplete
        }
        guard let text = String(validating: line, as: UTF8.self) else {
            return .invalid("the request is not UTF-8 text; \(usage)")
        }
        var trimmed = text.drop(while: \.isWhitespace)
        while trimmed.last?.isWhitespace == true { trimmed.removeLast() }
        let word = String(trimmed)
        if word.isEmpty { return .invalid("empty request; \(usage)") }
        guard let request = AdminRequest(rawValue: word) else {
            let shown = word.count > 32 ? "\(word.prefix(32))…" : word
            return .invalid("unknown request '\(shown)'; \(usage)")
        }
        return .request(request)
    }

    /// The answer for a request that failed.
    public static func errorAnswer(_ message: String) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a dictionary of strings cannot fail.
        let body = (try? encoder.encode(["error": message])) ?? Data(#"{"error":"unknown"}"#.utf8)
        return Array(body) + [UInt8(ascii: "\n")]
    }

    /// The error message of an error answer, or nil when `answer` is not one.
    public static func errorMessage(in answer: [UInt8]) -> String? {
        struct ErrorAnswer: Decodable { let error: String }
        return (try? JSONDecoder().decode(ErrorAnswer.self, from: Data(answer)))?.error
    }
}
