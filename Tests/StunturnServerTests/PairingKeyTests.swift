import Testing
@testable import StunturnServer

@Suite struct PairingKeyTests {
    @Test func keysCompareAsBytes() {
        #expect(KeyBytes("caf\u{E9}") != KeyBytes("cafe\u{301}"))
        #expect(KeyBytes("same") == KeyBytes("same"))
        #expect(KeyBytes("same").hashValue == KeyBytes("same").hashValue)
    }

    @Test func aKeyAndItsTargetCannotTradeBytes() {
        // Without a boundary between them, "ab" + "c" and "a" + "bc" would always hash alike,
        // and a client could fill one hash bucket on purpose.
        let one = PairingKey(key: KeyBytes("ab"), targetIP: "c")
        let other = PairingKey(key: KeyBytes("a"), targetIP: "bc")
        #expect(one != other)
        #expect(one.hashValue != other.hashValue)
    }
}
