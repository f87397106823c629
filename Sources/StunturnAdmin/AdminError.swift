import StunturnSockets

/// Why an admin socket could not be opened or asked, naming the socket's path and keeping the cause.
public struct AdminError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, for code that decides what to do next; the description is for people.
    public struct Code: Hashable, Sendable {
        private enum Base: Hashable, Sendable {
            case badRequest, notFound, stale, inUse, unusable, timedOut, badAnswer, agentError, failed
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A client's request was not one the agent knows, or did not arrive whole in time.
        public static let badRequest = Code(.badRequest)
        /// No socket is at the path: no agent opened one there.
        public static let notFound = Code(.notFound)
        /// A socket file is at the path but no agent listens on it any more.
        public static let stale = Code(.stale)
        /// Another running agent listens at the path.
        public static let inUse = Code(.inUse)
        /// The path or its directory cannot be used (not a socket, another user's, no permission).
        public static let unusable = Code(.unusable)
        /// The agent did not answer in time.
        public static let timedOut = Code(.timedOut)
        /// The answer was not the JSON object the protocol promises.
        public static let badAnswer = Code(.badAnswer)
        /// The agent answered with an error.
        public static let agentError = Code(.agentError)
        /// Anything else; the underlying error says what.
        public static let failed = Code(.failed)
    }

    public let code: Code
    /// The admin socket concerned; empty for a request that has no path of its own.
    public let path: String
    public let message: String
    /// The error that caused it, when there is one.
    public let underlying: (any Error & Sendable)?

    public init(_ code: Code, path: String, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.path = path
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }

    /// A failed connect to `path`, told by its cause.
    static func connecting(_ error: SocketError, path: String) -> AdminError {
        if error.isNotFound {
            return AdminError(.notFound, path: path, "no admin socket at \(path): no agent is running with it", underlying: error)
        }
        if error.isConnectionRefused {
            return AdminError(.stale, path: path,
                              "admin socket \(path) refused the connection: its agent is no longer running (the socket is stale)",
                              underlying: error)
        }
        if error.isPermissionDenied {
            return AdminError(.unusable, path: path, "cannot connect to admin socket \(path): permission denied", underlying: error)
        }
        if error.isTimeout {
            return AdminError(.timedOut, path: path, "admin socket \(path) stayed busy: \(error)", underlying: error)
        }
        return AdminError(.failed, path: path, "cannot ask admin socket \(path): \(error)", underlying: error)
    }
}
