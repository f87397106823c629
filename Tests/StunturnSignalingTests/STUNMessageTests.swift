import StunturnServer
import Foundation
import StunturnSockets
import Testing
@testable import StunturnSignaling

struct STUNVector: Decodable, CustomTestStringConvertible {
    struct Expect: Decodable {
        var type: String
        var software: String?
        var username: String?
        var transaction_id: String
        var xor_mapped_address: String?
    }
    var name: String
    var hex: String
    var expect: Expect
    var has_message_integrity: Bool
    var has_fingerprint: Bool
    var testDescription: String { name }
}

struct STUNVectorFile: Decodable {
    var password: String
    var vectors: [STUNVector]
}

func sharedVectorsURL(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared/vectors/\(name)")
}

func loadSTUNVectors() throws -> STUNVectorFile {
    try JSONDecoder().decode(STUNVectorFile.self, from: Data(contentsOf: sharedVectorsURL("stun-rfc5769.json")))
}

func hexBytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        out.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return out
}

@Suite struct STUNMessageTests {
    @Test func allRFC5769VectorsDecodeAndVerify() throws {
        let file = try loadSTUNVectors()
        #expect(file.vectors.count == 3)
        let key = Array(file.password.utf8)
        for vector in file.vectors {
            let bytes = hexBytes(vector.hex)
            let message = try STUNMessage.decode(bytes)
            #expect(message.transactionID == hexBytes(vector.expect.transaction_id), "\(vector.name)")
            let expectedType: STUNMessage.MessageType = vector.expect.type == "binding request" ? .bindingRequest : .bindingSuccess
            #expect(message.messageType == expectedType, "\(vector.name)")
            if let software = vector.expect.software {
                #expect(message.software == software, "\(vector.name)")
            }
            if let username = vector.expect.username {
                #expect(message.username == username, "\(vector.name)")
            }
            if let mapped = vector.expect.xor_mapped_address {
                #expect(message.xorMappedAddress?.description == mapped, "\(vector.name)")
            }
            #expect(STUNMessage.verifyFingerprint(bytes) == vector.has_fingerprint, "\(vector.name)")
            #expect(STUNMessage.verifyMessageIntegrity(bytes, key: key) == vector.has_message_integrity, "\(vector.name)")
            // A flipped byte breaks both checks.
            var tampered = bytes
            tampered[21] ^= 0x01
            #expect(!STUNMessage.verifyFingerprint(tampered))
            #expect(!STUNMessage.verifyMessageIntegrity(tampered, key: key))
            #expect(!STUNMessage.verifyMessageIntegrity(bytes, key: Array("wrong".utf8)))
        }
    }

    @Test func vectorsReEncodeByteForByte() throws {
        // Re-encoding the decoded attributes (without MI/FP) and adding them back yields the vector.
        let file = try loadSTUNVectors()
        for vector in file.vectors {
            let bytes = hexBytes(vector.hex)
            var message = try STUNMessage.decode(bytes)
            message.attributes.removeAll { $0.type == STUNMessage.AttributeType.messageIntegrity.rawValue || $0.type == STUNMessage.AttributeType.fingerprint.rawValue }
            // The vectors pad attributes with spaces (RFC 5769 section 2).
            let encoded = message.encode(integrityKey: Array(file.password.utf8), fingerprint: true, padding: 0x20)
            #expect(encoded == bytes, "\(vector.name)")
            #expect(STUNMessage.verifyFingerprint(encoded))
            #expect(STUNMessage.verifyMessageIntegrity(encoded, key: Array(file.password.utf8)))
        }
    }

    @Test(arguments: ["192.0.2.1:32853", "[2001:db8:1234:5678:11:2233:4455:6677]:32853", "127.0.0.1:1"])
    func bindingSuccessRoundTrips(address: String) throws {
        let mapped = try SocketAddress(parsing: address)
        let tid = STUNMessage.randomTransactionID()
        let bytes = STUNMessage.bindingSuccess(transactionID: tid, mapped: mapped).encode(fingerprint: true)
        #expect(STUNMessage.looksLikeSTUN(bytes))
        #expect(STUNMessage.verifyFingerprint(bytes))
        let decoded = try STUNMessage.decode(bytes)
        #expect(decoded.xorMappedAddress == mapped)
        #expect(decoded.mappedAddress == mapped)
        #expect(STUNClient.parseResponse(bytes, transactionID: tid) == mapped)
        #expect(STUNClient.parseResponse(bytes, transactionID: STUNMessage.randomTransactionID()) == nil)
    }

    @Test func serverAnswersBindingRequestsAndText() throws {
        let sender = try SocketAddress(parsing: "203.0.113.9:4242")
        let request = STUNMessage.bindingRequest()
        let response = try #require(RendezvousServer.stunResponse(to: request.encode(), from: sender))
        #expect(STUNClient.parseResponse(response, transactionID: request.transactionID) == sender)
        #expect(RendezvousServer.stunResponse(to: Array("ping".utf8), from: sender) == Array("203.0.113.9:4242".utf8))
        let v6 = try SocketAddress(parsing: "[::1]:9")
        #expect(RendezvousServer.stunResponse(to: Array("ping".utf8), from: v6) == Array("[::1]:9".utf8))
        // Text that is itself an answer, and empty datagrams, get no reply: no loops between servers.
        #expect(RendezvousServer.stunResponse(to: Array("198.51.100.1:7000".utf8), from: sender) == nil)
        #expect(RendezvousServer.stunResponse(to: Array("[::1]:7000".utf8), from: sender) == nil)
        #expect(RendezvousServer.stunResponse(to: [], from: sender) == nil)
        // A STUN response sent to the server is not answered (no reflection loops).
        let success = STUNMessage.bindingSuccess(transactionID: request.transactionID, mapped: sender).encode()
        #expect(RendezvousServer.stunResponse(to: success, from: sender) == nil)
    }

    @Test func classicRFC3489RequestsGetAMappedAddress() throws {
        let sender = try SocketAddress(parsing: "198.51.100.77:5000")
        let tid = (0..<16).map { UInt8($0 * 7) }
        let request: [UInt8] = [0x00, 0x01, 0x00, 0x00] + tid
        let response = try #require(RendezvousServer.stunResponse(to: request, from: sender))
        #expect(Array(response[0..<4]) == [0x01, 0x01, 0x00, 12])
        #expect(Array(response[4..<20]) == tid)
        #expect(Array(response[20...]) == [0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x13, 0x88, 198, 51, 100, 77])
    }

    @Test(arguments: [[UInt8](), [0x00, 0x01, 0x00, 0x04], [UInt8](repeating: 0xff, count: 40)])
    func garbageIsNotSTUN(bytes: [UInt8]) {
        #expect(!STUNMessage.looksLikeSTUN(bytes))
        #expect(throws: SignalingError.self) { try STUNMessage.decode(bytes) }
    }
}
