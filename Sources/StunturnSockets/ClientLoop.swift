/// The accept loop of a small local server (the admin socket, the metrics endpoint): takes clients
/// until the task is cancelled or the listener closes, serves at most `limit` at once (the next
/// accept waits for one to finish; each is bounded in time by `serve`), and cancels those still
/// running when it ends. A failed accept (descriptors exhausted, say) is retried after `retry`;
/// `failed` hears the first of each run of failures.
public func serveClients<Client: Sendable>(
    limit: Int,
    retry: Duration = .milliseconds(100),
    accept: () async throws -> Client,
    isOpen: () -> Bool,
    failed: (any Error) -> Void,
    serve: @escaping @Sendable (Client) async -> Void
) async {
    await withTaskGroup(of: Void.self) { group in
        var running = 0
        var failuresInARow = 0
        while !Task.isCancelled {
            if running >= max(1, limit) {
                await group.next()
                running -= 1
            }
            do {
                let client = try await accept()
                failuresInARow = 0
                running += 1
                group.addTask { await serve(client) }
            } catch {
                if Task.isCancelled || !isOpen() { break }
                failuresInARow += 1
                if failuresInARow == 1 { failed(error) }
                try? await Task.sleep(for: retry)
            }
        }
        group.cancelAll()
    }
}
