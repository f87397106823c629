import Synchronization

/// A value that tasks wait for: set (and for some owners cleared and set again), or closed for
/// good. Any number of tasks may wait; each waiter is resumed once, with the value, or with nil
/// when the value is closed or (for a cancellable wait) its task is cancelled.
public final class AwaitedValue<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var closed = false
        var waiters: [Int: CheckedContinuation<Value?, Never>] = [:]
        var nextTicket = 0
    }

    private let state = Mutex(State())
    /// A value that fails this is treated as not there (a session that has ended meanwhile).
    private let isUsable: @Sendable (Value) -> Bool

    public init(isUsable: @escaping @Sendable (Value) -> Bool = { _ in true }) {
        self.isUsable = isUsable
    }

    /// The value now, if there is a usable one.
    public var value: Value? {
        state.withLock { $0.value }.flatMap { isUsable($0) ? $0 : nil }
    }

    /// Sets the value and hands it to every waiting task.
    public func set(_ value: Value) {
        resumeAll(with: value) { $0.value = value }
    }

    /// Forgets the value if `matches` says it is the one to forget; waiters go on waiting.
    public func clear(if matches: (Value) -> Bool) {
        state.withLock { state in
            if let value = state.value, matches(value) { state.value = nil }
        }
    }

    /// No value will come: waiters get nil, now and from now on.
    public func close() {
        resumeAll(with: nil) { $0.closed = true }
    }

    /// Waits for a usable value; nil once closed, or when the waiting task is cancelled and
    /// `cancellable` (a wait that is not cancellable ends only with a value or the close).
    public func wait(cancellable: Bool = true) async -> Value? {
        let ticket = state.withLock { state -> Int in
            state.nextTicket += 1
            return state.nextTicket
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
                let ready = state.withLock { state -> Value?? in
                    if let value = state.value, isUsable(value) { return .some(value) }
                    if state.closed || (cancellable && Task.isCancelled) { return .some(nil) }
                    state.waiters[ticket] = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            guard cancellable else { return }
            let waiter = state.withLock { $0.waiters.removeValue(forKey: ticket) }
            waiter?.resume(returning: nil)
        }
    }

    private func resumeAll(with value: Value?, _ update: (inout State) -> Void) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value?, Never>] in
            update(&state)
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }
}
