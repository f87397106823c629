import StunturnSockets
import Testing

@Suite(.timeLimit(.minutes(1))) struct AwaitedValueTests {
    @Test func waitersGetTheValueOrNilOnCloseOrCancellation() async {
        let awaited = AwaitedValue<Int>(isUsable: { $0 >= 0 })
        async let first = awaited.wait()
        async let second = awaited.wait(cancellable: false)
        try? await Task.sleep(for: .milliseconds(20))
        awaited.set(7)
        #expect(await first == 7)
        #expect(await second == 7)
        // A value that is not usable any more is not handed out; clearing keeps waiters waiting.
        awaited.set(-1)
        #expect(awaited.value == nil)
        awaited.clear(if: { $0 == -1 })
        let cancelled = Task { await awaited.wait() }
        cancelled.cancel()
        #expect(await cancelled.value == nil)
        async let late = awaited.wait()
        try? await Task.sleep(for: .milliseconds(20))
        awaited.close()
        #expect(await late == nil)
        #expect(await awaited.wait() == nil, "closed: no wait at all")
    }
}
