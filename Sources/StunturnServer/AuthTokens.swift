import Crypto
import StunturnSockets
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The operator's relay tokens (`server --auth-token-file`): one per line; blank lines and lines
/// starting with `#` are skipped. Only their SHA-256 digests are kept, and a presented token is
/// checked against every one of them in constant time, so neither its content nor which entry
/// matched shows in the time taken.
public struct AuthTokens: Sendable {
    private let digests: [[UInt8]]

    public var count: Int { digests.count }

    public init(tokens: [String]) {
        digests = tokens.map { Array(SHA256.hash(data: Array($0.utf8))) }
    }

    /// Parses a token file's text; `source` names it in errors.
    public init(parsing text: String, source: String) throws(AuthTokenError) {
        var tokens: [String] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = raw.drop(while: \.isWhitespace)
            while line.last?.isWhitespace == true { line.removeLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard line.count >= 16 else {
                throw AuthTokenError("\(source) line \(index + 1): a token must be at least 16 characters (found \(line.count)); make one with `stunturn-agent keygen`")
            }
            guard !line.contains(where: \.isWhitespace) else {
                throw AuthTokenError("\(source) line \(index + 1): a token cannot contain spaces")
            }
            tokens.append(String(line))
        }
        guard !tokens.isEmpty else { throw AuthTokenError("\(source): no token in the file (one per line; # starts a comment)") }
        self.init(tokens: tokens)
    }

    /// Reads a token file.
    public static func load(path: String) throws(AuthTokenError) -> AuthTokens {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw AuthTokenError("cannot read the token file \(path): \(SocketError.describe(errno: errno))")
        }
        defer { close(descriptor) }
        // A token file is a few lines; one far larger is not one.
        let limit = 1 << 20
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while bytes.count <= limit {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                throw AuthTokenError("cannot read the token file \(path): \(SocketError.describe(errno: errno))")
            }
            bytes += chunk[..<count]
        }
        guard bytes.count <= limit else { throw AuthTokenError("\(path): larger than 1 MiB, not a token file") }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw AuthTokenError("\(path): not UTF-8 text")
        }
        return try AuthTokens(parsing: text, source: path)
    }

    /// Whether `token` is one of the operator's, compared in constant time.
    public func accepts(_ token: String?) -> Bool {
        guard let token else { return false }
        let presented = Array(SHA256.hash(data: Array(token.utf8)))
        var matched: UInt8 = 0
        for digest in digests {
            var difference: UInt8 = 0
            for i in 0..<presented.count { difference |= digest[i] ^ presented[i] }
            matched |= difference == 0 ? 1 : 0
        }
        return matched == 1
    }
}

public struct AuthTokenError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
