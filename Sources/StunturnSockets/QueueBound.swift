import Dispatch

/// A value that lives on one serial queue: it may be carried anywhere, but only used on that queue.
///
/// Dispatch's `async` takes only `Sendable` closures, so state confined to a queue (a relay's
/// connections, the rendezvous server's tables) would otherwise have to claim to be `Sendable`
/// itself. This wrapper claims it instead, once, and checks the claim on every access: reading
/// `value` anywhere but on `queue` stops the process, so the confinement is enforced at run time
/// where the compiler cannot see it. It is the queue counterpart of swift-nio's `NIOLoopBound`.
public struct QueueBound<Value>: @unchecked Sendable {  // Sendable: every access is checked to run on `queue`.
    public let queue: DispatchQueue
    private let wrapped: Value

    /// Hands `value` to `queue`; the caller must not keep using it anywhere else.
    public init(_ value: Value, on queue: DispatchQueue) {
        self.queue = queue
        self.wrapped = value
    }

    /// The value; only on `queue`.
    @inline(__always)
    public var value: Value {
        dispatchPrecondition(condition: .onQueue(queue))
        return wrapped
    }

    /// Runs `body` with the value on the queue, later.
    public func async(_ body: @escaping @Sendable (Value) -> Void) {
        queue.async { body(self.value) }
    }

    /// Runs `body` with the value on the queue after `delay`.
    public func asyncAfter(_ delay: DispatchTimeInterval, _ body: @escaping @Sendable (Value) -> Void) {
        queue.asyncAfter(deadline: .now() + delay) { body(self.value) }
    }
}
