import StunturnSockets

/// Asks a running agent on its admin socket (`stunturn-agent status`).
public enum AdminClient {
    /// How long a client waits for the whole answer: the agent answers at once unless it is stuck.
    public static let defaultTimeout: Duration = .seconds(5)

    /// Sends `request` to the agent at `path` and returns its answer, a JSON object. Throws an
    /// `AdminError` naming the path: no socket there, a stale one, no answer in time, or the
    /// agent's own error answer.
    public static func ask(_ request: AdminRequest, at path: String, timeout: Duration = defaultTimeout) async throws(AdminError) -> [UInt8] {
        let deadline = ContinuousClock.now + timeout
        let socket: UnixSocket
        do {
            socket = try await UnixSocket.connect(to: path, until: deadline)
        } catch let error as SocketError {
            throw AdminError.connecting(error, path: path)
        } catch {
            throw AdminError(.failed, path: path, "cannot ask admin socket \(path): \(error)")
        }
        defer { socket.close() }
        var answer: [UInt8] = []
        do {
            try await socket.writeAll(AdminProtocol.encode(request), until: deadline)
            while true {
                let room = AdminProtocol.maximumAnswerLength + 1 - answer.count
                let chunk: [UInt8]
                do {
                    chunk = try await socket.readSome(maxLength: min(room, 1 << 16), until: deadline)
                } catch let error as SocketError where error.isReset && answer.last == UInt8(ascii: "\n") {
                    // The agent closed with bytes of ours unread, after its whole answer.
                    break
                }
                if chunk.isEmpty { break }
                answer += chunk
                guard answer.count <= AdminProtocol.maximumAnswerLength else {
                    throw AdminError(.badAnswer, path: path, "the agent at \(path) answered more than \(AdminProtocol.maximumAnswerLength) bytes")
                }
            }
        } catch let error as AdminError {
            throw error
        } catch let error as SocketError where error.isTimeout {
            throw AdminError(.timedOut, path: path, "the agent at \(path) did not answer '\(request.rawValue)' within \(formatDuration(timeout))",
                             underlying: error)
        } catch {
            throw AdminError(.failed, path: path, "asking the agent at \(path) failed: \(error)", underlying: error as? SocketError)
        }
        if let message = AdminProtocol.errorMessage(in: answer) {
            throw AdminError(.agentError, path: path, "the agent at \(path) answered: \(message)")
        }
        return answer
    }

    /// The status of the agent at `path`.
    public static func status(at path: String, timeout: Duration = defaultTimeout) async throws(AdminError) -> AgentStatus {
        let answer = try await ask(.status, at: path, timeout: timeout)
        do {
            return try AgentStatus(decoding: answer)
        } catch {
            throw AdminError(.badAnswer, path: path, "the agent at \(path) answered something that is not a status: \(error)")
        }
    }
}
