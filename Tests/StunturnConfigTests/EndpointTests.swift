import Testing
@testable import StunturnConfig

@Suite struct EndpointTests {
    @Test(arguments: [
        ("127.0.0.1:22", "127.0.0.1", 22, "127.0.0.1:22"),
        ("0.0.0.0:65535", "0.0.0.0", 65535, "0.0.0.0:65535"),
        ("signal.example.net:7000", "signal.example.net", 7000, "signal.example.net:7000"),
        ("localhost:1", "localhost", 1, "localhost:1"),
        ("a-1.b2.example:443", "a-1.b2.example", 443, "a-1.b2.example:443"),
        ("[::1]:7000", "::1", 7000, "[::1]:7000"),
        ("[::]:7000", "::", 7000, "[::]:7000"),
        ("[2001:db8::8a2e:370:7334]:8443", "2001:db8::8a2e:370:7334", 8443, "[2001:db8::8a2e:370:7334]:8443"),
        ("[::ffff:192.0.2.1]:80", "::ffff:192.0.2.1", 80, "[::ffff:192.0.2.1]:80"),
        ("[fe80::1%eth0]:22", "fe80::1%eth0", 22, "[fe80::1%eth0]:22"),
        ("[1:2:3:4:5:6:7:8]:9", "1:2:3:4:5:6:7:8", 9, "[1:2:3:4:5:6:7:8]:9"),
    ])
    func parsesValidEndpoints(text: String, host: String, port: Int, description: String) throws {
        let endpoint = try Endpoint(parsing: text)
        #expect(endpoint.host == host)
        #expect(Int(endpoint.port) == port)
        #expect(endpoint.description == description)
    }

    @Test(arguments: [
        ("", EndpointError.empty),
        ("example.net", .missingPort("example.net")),
        ("example.net:", .missingPort("example.net:")),
        ("[::1]", .missingPort("[::1]")),
        (":7000", .missingHost(":7000")),
        ("example.net:0", .invalidPort("0")),
        ("example.net:65536", .invalidPort("65536")),
        ("example.net:123456789", .invalidPort("123456789")),
        ("example.net:-1", .invalidPort("'-1'")),
        ("example.net:http", .invalidPort("'http'")),
        ("::1:7000", .unbracketedIPv6("[::1]:7000")),
        ("2001:db8::1", .unbracketedIPv6("[2001:db8::1]:PORT")),
        ("a:b:c", .unbracketedIPv6("[::1]:7000")),
        ("[::1:7000", .invalidIPv6("[::1:7000")),
        ("[1::2::3]:80", .invalidIPv6("[1::2::3]")),
        ("[1.2.3.4]:80", .invalidIPv6("[1.2.3.4]")),
        ("[1:2:3:4:5:6:7:8:9]:80", .invalidIPv6("[1:2:3:4:5:6:7:8:9]")),
        ("[::1]x80", .invalidHost("[::1]x80")),
        ("256.0.0.1:80", .invalidIPv4("256.0.0.1")),
        ("1.2.3:80", .invalidIPv4("1.2.3")),
        ("01.2.3.4:80", .invalidIPv4("01.2.3.4")),
        ("under_score.example:80", .invalidHost("under_score.example")),
        ("-lead.example:80", .invalidHost("-lead.example")),
        ("double..dot:80", .invalidHost("double..dot")),
        ("bad host:80", .invalidHost("bad host:80")),
    ])
    func refusesInvalidEndpoints(text: String, expected: EndpointError) {
        #expect(throws: expected) { try Endpoint(parsing: text) }
    }

    @Test func messagesSayHowToFixIt() {
        #expect(EndpointError.invalidPort("0").description == "port must be 1-65535, got 0")
        #expect(EndpointError.unbracketedIPv6("[::1]:7000").description.contains("must be in brackets"))
        #expect(EndpointError.missingPort("x").description.contains("expected HOST:PORT"))
    }

    @Test(arguments: [
        ("0.0.0.0:7000", "127.0.0.1:7000"),
        ("[::]:7000", "[::1]:7000"),
        ("[0::0]:7000", "[::1]:7000"),
        ("192.0.2.5:7000", "192.0.2.5:7000"),
        ("[::1]:7000", "[::1]:7000"),
        ("example.net:7000", "example.net:7000"),
    ])
    func dialableReplacesTheAnyAddress(listen: String, dial: String) throws {
        #expect(try Endpoint(parsing: listen).dialable.description == dial)
    }

    @Test func hostKinds() throws {
        #expect(try Endpoint(parsing: "10.0.0.1:1").isIPv4)
        #expect(try Endpoint(parsing: "[::1]:1").isIPv6)
        #expect(try !Endpoint(parsing: "example.net:1").isIPLiteral)
    }

    @Test func localhostBecomesTheIPv4LoopbackAndOtherHostsStayAsTheyAre() throws {
        #expect(try Endpoint(parsing: "localhost:22").localhostAsLoopback == Endpoint(host: "127.0.0.1", port: 22))
        #expect(try Endpoint(parsing: "LocalHost:22").localhostAsLoopback == Endpoint(host: "127.0.0.1", port: 22))
        #expect(try Endpoint(parsing: "[::1]:22").localhostAsLoopback == Endpoint(host: "::1", port: 22))
        #expect(try Endpoint(parsing: "example.net:22").localhostAsLoopback == Endpoint(host: "example.net", port: 22))
    }
}
