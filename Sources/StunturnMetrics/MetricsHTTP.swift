/// The little of HTTP/1.1 the metrics endpoint speaks, as pure functions: read one request head,
/// choose the answer, write it with `Connection: close`. Headers and any body are ignored.
public enum MetricsHTTP {
    /// The one path served.
    public static let path = "/metrics"
    /// Prometheus' text format, version 0.0.4.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// What the bytes read so far hold.
    public enum Head: Equatable, Sendable {
        /// No blank line yet: read more.
        case incomplete
        /// A request line that parsed; the target as sent (origin form, query included).
        case request(method: String, target: String)
        /// Not an HTTP/1.x request line; why.
        case invalid(String)
        /// No end of the head within the limit.
        case tooLarge
    }

    /// Frames the request head in `bytes`, which must end within `maximumLength` bytes. Blank lines
    /// before the request line are skipped, as RFC 9112 asks; lines may end in CRLF or LF alone.
    public static func head(_ bytes: [UInt8], maximumLength: Int) -> Head {
        var start = 0
        while start < bytes.count, bytes[start] == cr || bytes[start] == lf { start += 1 }
        guard let end = endOfHead(bytes, from: start) else {
            return bytes.count > maximumLength ? .tooLarge : .incomplete
        }
        guard end <= maximumLength else { return .tooLarge }
        var lineEnd = start
        while bytes[lineEnd] != lf { lineEnd += 1 }
        if lineEnd > start, bytes[lineEnd - 1] == cr { lineEnd -= 1 }
        let line = bytes[start..<lineEnd]
        guard line.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else { return .invalid("the request line is not printable ASCII") }
        let parts = line.split(separator: space, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
            return .invalid("expected a request line such as 'GET /metrics HTTP/1.1'")
        }
        guard parts[0].utf8.allSatisfy({ (0x41...0x5a).contains($0) }) else { return .invalid("'\(parts[0])' is not a method") }
        guard parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0" else { return .invalid("'\(parts[2])' is not HTTP/1.0 or HTTP/1.1") }
        return .request(method: parts[0], target: parts[1])
    }

    /// How a request is answered.
    public enum Route: Equatable, Sendable {
        /// The metrics, or with `HEAD` only their headers.
        case metrics(bodyIncluded: Bool)
        case notFound
        case methodNotAllowed
    }

    public static func route(method: String, target: String) -> Route {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        guard path == Self.path else { return .notFound }
        switch method {
        case "GET": return .metrics(bodyIncluded: true)
        case "HEAD": return .metrics(bodyIncluded: false)
        default: return .methodNotAllowed
        }
    }

    /// A whole response: status line, headers, and the body unless `bodyIncluded` is false (its
    /// length is still announced, as for `HEAD`).
    public static func response(status: Int, reason: String, contentType: String = "text/plain; charset=utf-8",
                                extraHeaders: [(String, String)] = [], body: [UInt8], bodyIncluded: Bool = true) -> [UInt8] {
        var head = "HTTP/1.1 \(status) \(reason)\r\n"
        head += "Content-Type: \(contentType)\r\n"
        head += "Content-Length: \(body.count)\r\n"
        for (name, value) in extraHeaders { head += "\(name): \(value)\r\n" }
        head += "Connection: close\r\n\r\n"
        return Array(head.utf8) + (bodyIncluded ? body : [])
    }

    /// A short plain-text answer to a request that is not served.
    public static func refusal(_ status: Int, _ reason: String, _ message: String, extraHeaders: [(String, String)] = [],
                               bodyIncluded: Bool = true) -> [UInt8] {
        response(status: status, reason: reason, extraHeaders: extraHeaders, body: Array("\(message)\n".utf8), bodyIncluded: bodyIncluded)
    }

    /// The answer to a request head; `exposition` is asked only for the metrics.
    public static func answer(_ head: Head, exposition: () async -> [UInt8]) async -> [UInt8] {
        switch head {
        case .incomplete:
            return refusal(400, "Bad Request", "the request ended before its head did")
        case .invalid(let why):
            return refusal(400, "Bad Request", why)
        case .tooLarge:
            return refusal(431, "Request Header Fields Too Large", "the request head is too large")
        case .request(let method, let target):
            let headOnly = method == "HEAD"
            switch route(method: method, target: target) {
            case .metrics(let bodyIncluded):
                return response(status: 200, reason: "OK", contentType: contentType, body: await exposition(), bodyIncluded: bodyIncluded)
            case .notFound:
                return refusal(404, "Not Found", "not found: this server answers GET \(path) only", bodyIncluded: !headOnly)
            case .methodNotAllowed:
                return refusal(405, "Method Not Allowed", "\(path) answers GET and HEAD only", extraHeaders: [("Allow", "GET, HEAD")])
            }
        }
    }

    private static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), space = UInt8(ascii: " ")

    /// The index just past the blank line that ends the head, if it has arrived.
    private static func endOfHead(_ bytes: [UInt8], from start: Int) -> Int? {
        var index = start
        while index < bytes.count {
            if bytes[index] == lf {
                // LF LF, or LF CR LF: the line just ended was empty.
                if index + 1 < bytes.count, bytes[index + 1] == lf { return index + 2 }
                if index + 2 < bytes.count, bytes[index + 1] == cr, bytes[index + 2] == lf { return index + 3 }
            }
            index += 1
        }
        return nil
    }
}
