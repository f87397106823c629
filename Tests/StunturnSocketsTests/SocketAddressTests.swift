import StunturnSockets
import Testing

@Suite struct SocketAddressTests {
    @Test func ipLiteralsParseBracketedOrNot() {
        #expect(SocketAddress(ip: "[2001:DB8:0::1]", port: 0)?.ip == "2001:db8::1")
        #expect(SocketAddress(ip: "2001:db8::1", port: 0)?.ip == "2001:db8::1")
        #expect(SocketAddress(ip: "::ffff:127.0.0.1", port: 0)?.ip == "127.0.0.1")
        #expect(SocketAddress(ip: "[]", port: 0) == nil)
        #expect(SocketAddress(ip: "[::1", port: 0) == nil)
        #expect(SocketAddress(ip: "not an ip", port: 0) == nil)
    }
}
