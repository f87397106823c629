import Crypto
import StunturnSockets

/// An RFC 5389 / 8489 STUN message: pure encode and decode, no I/O.
public struct STUNMessage: Equatable, Sendable {
    public static let magicCookie: UInt32 = 0x2112_A442
    public static let headerLength = 20
    static let fingerprintXOR: UInt32 = 0x5354_554E

    public enum MessageType: UInt16, Sendable {
        case bindingRequest = 0x0001
        case bindingIndication = 0x0011
        case bindingSuccess = 0x0101
        case bindingError = 0x0111
    }

    public enum AttributeType: UInt16, Sendable {
        case mappedAddress = 0x0001
        case username = 0x0006
        case messageIntegrity = 0x0008
        case errorCode = 0x0009
        case xorMappedAddress = 0x0020
        case software = 0x8022
        case fingerprint = 0x8028
    }

    public struct Attribute: Equatable, Sendable {
        public var type: UInt16
        public var value: [UInt8]
        public init(type: UInt16, value: [UInt8]) {
            self.type = type
            self.value = value
        }
    }

    public var type: UInt16
    public var transactionID: [UInt8]
    public var attributes: [Attribute]

    public init(type: MessageType, transactionID: [UInt8], attributes: [Attribute] = []) {
        self.type = type.rawValue
        self.transactionID = transactionID
        self.attributes = attributes
    }

    public var messageType: MessageType? { MessageType(rawValue: type) }

    public static func randomTransactionID() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<12).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// A Binding request with a fresh transaction ID.
    public static func bindingRequest(transactionID: [UInt8] = randomTransactionID(), software: String? = nil) -> STUNMessage {
        var message = STUNMessage(type: .bindingRequest, transactionID: transactionID)
        if let software { message.attributes.append(Attribute(type: AttributeType.software.rawValue, value: Array(software.utf8))) }
        return message
    }

    /// A Binding success response carrying XOR-MAPPED-ADDRESS (and MAPPED-ADDRESS for RFC 3489 clients).
    public static func bindingSuccess(transactionID: [UInt8], mapped: SocketAddress, software: String? = nil) -> STUNMessage {
        var message = STUNMessage(type: .bindingSuccess, transactionID: transactionID)
        message.attributes.append(Attribute(type: AttributeType.xorMappedAddress.rawValue,
                                            value: encodeAddress(mapped, xor: true, transactionID: transactionID)))
        message.attributes.append(Attribute(type: AttributeType.mappedAddress.rawValue,
                                            value: encodeAddress(mapped, xor: false, transactionID: transactionID)))
        if let software { message.attributes.append(Attribute(type: AttributeType.software.rawValue, value: Array(software.utf8))) }
        return message
    }

    // MARK: attribute accessors

    public func attribute(_ type: AttributeType) -> [UInt8]? {
        attributes.first { $0.type == type.rawValue }?.value
    }

    public var xorMappedAddress: SocketAddress? {
        attribute(.xorMappedAddress).flatMap { STUNMessage.decodeAddress($0, xor: true, transactionID: transactionID) }
    }

    public var mappedAddress: SocketAddress? {
        attribute(.mappedAddress).flatMap { STUNMessage.decodeAddress($0, xor: false, transactionID: transactionID) }
    }

    public var software: String? { attribute(.software).map { String(decoding: $0, as: UTF8.self) } }
    public var username: String? { attribute(.username).map { String(decoding: $0, as: UTF8.self) } }

    // MARK: framing

    /// True when `bytes` has the shape of a STUN message: top bits zero, the magic cookie, a consistent length.
    public static func looksLikeSTUN(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= headerLength, bytes[0] & 0xC0 == 0 else { return false }
        let length = Int(readU16(bytes, 2))
        return readU32(bytes, 4) == magicCookie && length % 4 == 0 && headerLength + length == bytes.count
    }

    public static func decode(_ bytes: [UInt8]) throws -> STUNMessage {
        guard looksLikeSTUN(bytes) else {
            throw SignalingError.malformed("not a STUN message (\(bytes.count) bytes)")
        }
        var message = STUNMessage(type: .bindingRequest, transactionID: Array(bytes[8..<20]))
        message.type = readU16(bytes, 0)
        var offset = headerLength
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else { throw SignalingError.malformed("STUN attribute header truncated at byte \(offset)") }
            let type = readU16(bytes, offset)
            let length = Int(readU16(bytes, offset + 2))
            guard offset + 4 + length <= bytes.count else {
                throw SignalingError.malformed("STUN attribute 0x\(String(type, radix: 16)) overruns the message")
            }
            message.attributes.append(Attribute(type: type, value: Array(bytes[(offset + 4)..<(offset + 4 + length)])))
            offset += 4 + (length + 3) & ~3
        }
        return message
    }

    /// Encodes, appending MESSAGE-INTEGRITY (HMAC-SHA1 with `integrityKey`) and FINGERPRINT when asked.
    /// `padding` fills attributes to 4-byte boundaries; its value is ignored by receivers.
    public func encode(integrityKey: [UInt8]? = nil, fingerprint: Bool = false, padding: UInt8 = 0) -> [UInt8] {
        var out: [UInt8] = []
        STUNMessage.appendU16(type, to: &out)
        STUNMessage.appendU16(0, to: &out)
        STUNMessage.appendU32(STUNMessage.magicCookie, to: &out)
        out += transactionID
        for attribute in attributes {
            STUNMessage.appendAttribute(attribute.type, attribute.value, to: &out, padding: padding)
        }
        if let integrityKey {
            STUNMessage.setLength(out.count + 24 - STUNMessage.headerLength, in: &out)
            let mac = HMAC<Insecure.SHA1>.authenticationCode(for: out, using: SymmetricKey(data: integrityKey))
            STUNMessage.appendAttribute(AttributeType.messageIntegrity.rawValue, Array(mac), to: &out)
        }
        if fingerprint {
            STUNMessage.setLength(out.count + 8 - STUNMessage.headerLength, in: &out)
            STUNMessage.appendAttribute(AttributeType.fingerprint.rawValue, bigEndian(CRC32.checksum(out) ^ STUNMessage.fingerprintXOR), to: &out)
        }
        STUNMessage.setLength(out.count - STUNMessage.headerLength, in: &out)
        return out
    }

    /// Checks FINGERPRINT in raw message bytes; false when absent or wrong.
    public static func verifyFingerprint(_ bytes: [UInt8]) -> Bool {
        guard let offset = attributeOffset(.fingerprint, in: bytes), offset + 8 == bytes.count else { return false }
        let expected = readU32(bytes, offset + 4)
        return CRC32.checksum(Array(bytes[0..<offset])) ^ fingerprintXOR == expected
    }

    /// Checks MESSAGE-INTEGRITY in raw message bytes with a short-term credential key.
    public static func verifyMessageIntegrity(_ bytes: [UInt8], key: [UInt8]) -> Bool {
        guard let offset = attributeOffset(.messageIntegrity, in: bytes), offset + 24 <= bytes.count else { return false }
        var covered = Array(bytes[0..<offset])
        setLength(offset + 24 - headerLength, in: &covered)
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: covered, using: SymmetricKey(data: key))
        return Array(mac) == Array(bytes[(offset + 4)..<(offset + 24)])
    }

    private static func attributeOffset(_ wanted: AttributeType, in bytes: [UInt8]) -> Int? {
        guard looksLikeSTUN(bytes) else { return nil }
        var offset = headerLength
        while offset + 4 <= bytes.count {
            if readU16(bytes, offset) == wanted.rawValue { return offset }
            offset += 4 + (Int(readU16(bytes, offset + 2)) + 3) & ~3
        }
        return nil
    }

    // MARK: addresses

    public static func encodeAddress(_ address: SocketAddress, xor: Bool, transactionID: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0, address.family == .ipv4 ? 0x01 : 0x02]
        let cookie = bigEndian(magicCookie)
        appendU16(xor ? address.port ^ UInt16(magicCookie >> 16) : address.port, to: &out)
        let mask = cookie + transactionID
        for (i, byte) in address.addressBytes.enumerated() { out.append(xor ? byte ^ mask[i] : byte) }
        return out
    }

    static func decodeAddress(_ value: [UInt8], xor: Bool, transactionID: [UInt8]) -> SocketAddress? {
        guard value.count >= 4 else { return nil }
        let length: Int
        switch value[1] {
        case 0x01: length = 4
        case 0x02: length = 16
        default: return nil
        }
        guard value.count >= 4 + length else { return nil }
        var port = readU16(value, 2)
        var bytes = Array(value[4..<(4 + length)])
        if xor {
            port ^= UInt16(magicCookie >> 16)
            let mask = bigEndian(magicCookie) + transactionID
            for i in bytes.indices { bytes[i] ^= mask[i] }
        }
        return SocketAddress(bytes: bytes, port: port)
    }

    // MARK: byte helpers

    static func readU16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
    static func readU32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }
    static func appendU16(_ v: UInt16, to out: inout [UInt8]) { out += [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func appendU32(_ v: UInt32, to out: inout [UInt8]) { out += bigEndian(v) }
    static func setLength(_ length: Int, in out: inout [UInt8]) {
        out[2] = UInt8(length >> 8 & 0xff)
        out[3] = UInt8(length & 0xff)
    }
    static func appendAttribute(_ type: UInt16, _ value: [UInt8], to out: inout [UInt8], padding: UInt8 = 0) {
        appendU16(type, to: &out)
        appendU16(UInt16(value.count), to: &out)
        out += value
        out += [UInt8](repeating: padding, count: (4 - value.count % 4) % 4)
    }
}

private func bigEndian(_ v: UInt32) -> [UInt8] {
    [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)]
}

/// CRC-32 (IEEE 802.3), as STUN's FINGERPRINT uses.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xff)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
