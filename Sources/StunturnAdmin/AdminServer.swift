import Logging
import StunturnSockets

/// The agent's admin socket: a Unix stream socket (mode 0600) where a local client sends one
/// request line and gets one JSON object back (see `AdminProtocol`).
///
/// A client has `requestTimeout` to send its line, of which at most `maximumRequestLength` bytes
/// are read, and `responseTimeout` to take the answer; at most `maximumClients` are served at
/// once. A local program that misbehaves can neither hang the agent nor make it hold much.
public final class AdminServer: Sendable {
    /// Answers one request with the JSON to send; a thrown error is answered as an error.
    public typealias Handler = @Sendable (AdminRequest) async throws -> [UInt8]

    /// The protocol's limits (see `AdminProtocol`); tests shorten them.
    public struct Limits: Sendable {
        public var requestLength = AdminProtocol.maximumRequestLength
        public var requestTimeout = AdminProtocol.requestTimeout
        public var responseTimeout = AdminProtocol.responseTimeout
        public var clients = AdminProtocol.maximumClients

        public init() {}
    }

    public let path: String
    private let listener: UnixSocket
    /// The socket file this server made, so that it removes that one and never a successor's.
    private let identity: SystemIO.FileStatus?
    private let limits: Limits
    private let logger: Logger
    private let handler: Handler

    /// Opens the admin socket at `path`, replacing a stale one (its agent gone). Throws when
    /// another agent listens there, or when the path cannot be a socket.
    public init(path: String, limits: Limits = Limits(), logger: Logger, handler: @escaping Handler) throws(AdminError) {
        try Self.claim(path)
        do {
            listener = try UnixSocket.listener(at: path, mode: 0o600)
        } catch {
            throw AdminError(.unusable, path: path, "cannot open admin socket \(path): \(error)", underlying: error)
        }
        self.path = path
        self.identity = SystemIO.fileStatus(path)
        self.limits = limits
        self.logger = logger
        self.handler = handler
    }

    /// Throws unless `path` is free or holds a stale socket.
    static func claim(_ path: String) throws(AdminError) {
        guard let existing = SystemIO.fileStatus(path) else { return }
        guard existing.kind == .socket else {
            throw AdminError(.unusable, path: path, "\(path) exists and is not a socket; remove it or choose another admin socket path")
        }
        switch UnixSocket.probe(path) {
        case .listening:
            throw AdminError(.inUse, path: path,
                             "admin socket \(path) is in use by another running agent; give this one its own path, or none")
        case .missing, .refused:
            // Stale: the new socket replaces it when it is renamed into place.
            return
        case .failed(let error):
            throw AdminError(.unusable, path: path, "cannot use admin socket \(path): \(error)", underlying: error)
        }
    }

    /// Answers clients until the task is cancelled, then closes the socket and removes its file.
    public func run() async {
        await serveClients(limit: limits.clients, accept: { try await listener.accept(until: nil) },
                           isOpen: { listener.isOpen }, failed: { logger.warning("admin socket \(path): \($0)") },
                           serve: { await self.serve($0) })
        close()
    }

    /// Stops listening and removes the socket file, unless it has been replaced by another's.
    public func close() {
        listener.close()
        if let identity, let now = SystemIO.fileStatus(path), now.device == identity.device, now.inode == identity.inode {
            SystemIO.removeFile(path)
        }
    }

    private func serve(_ client: UnixSocket) async {
        defer { client.close() }
        let answer: [UInt8]
        switch await readRequest(client) {
        case .request(let request)?:
            do {
                answer = try await handler(request)
            } catch {
                answer = AdminProtocol.errorAnswer("\(request.rawValue) failed: \(error)")
            }
        case .invalid(let message)?:
            answer = AdminProtocol.errorAnswer(message)
        case .incomplete?, nil:
            return
        }
        try? await client.writeAll(answer, until: .now + limits.responseTimeout)
    }

    /// The client's request line, read within the limits; nil when the client went away.
    private func readRequest(_ client: UnixSocket) async -> AdminProtocol.Framing? {
        let deadline = ContinuousClock.now + limits.requestTimeout
        var received: [UInt8] = []
        while true {
            let chunk: [UInt8]
            do {
                // One byte past the limit tells a line that is too long from one that fits.
                chunk = try await client.readSome(maxLength: limits.requestLength + 1 - received.count, until: deadline)
            } catch let error as SocketError where error.isTimeout {
                return .invalid("no request within \(formatDuration(limits.requestTimeout)); \(AdminProtocol.usage)")
            } catch {
                return nil
            }
            received += chunk
            let framing = AdminProtocol.frame(received, ended: chunk.isEmpty, maximumLength: limits.requestLength)
            if framing != .incomplete { return framing }
        }
    }
}
