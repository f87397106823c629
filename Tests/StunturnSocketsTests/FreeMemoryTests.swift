import StunturnSockets
import Testing

/// What the release gives back is glibc's business and is measured by the soak (docs/RELIABILITY.md,
/// resident size from minute 2); here, that it runs no more often than asked.
@Suite struct FreeMemoryTests {
    @Test func releasesAtMostOncePerInterval() {
        #expect(FreeMemory.release(atMostEvery: .zero))
        #expect(!FreeMemory.release(atMostEvery: .seconds(3600)))
        #expect(FreeMemory.release(atMostEvery: .zero))
    }
}
