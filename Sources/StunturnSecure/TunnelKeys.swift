import Crypto

/// The values an agent derives from a forward's access key; the key itself never leaves the agent.
public struct TunnelKeys: Sendable {
    /// The identifier sent to the signaling server in place of the access key, shaped like a UUID.
    public let signalingKey: String
    /// The Noise pre-shared key that authenticates the tunnel handshake.
    public let psk: [UInt8]
    /// Marks this forward's first bytes on a punched TCP connection, to tell it apart from strays.
    public let punchTag: [UInt8]

    // Distinct contexts make the three outputs independent: knowing one reveals nothing about the
    // others, and the signaling server learns nothing that opens the tunnel.
    static let signalingContext = "stunturn v1 signaling key"
    static let pskContext = "stunturn v1 noise psk"
    static let punchTagContext = "stunturn v1 punch tag"

    /// Derives the keys from the access key's UTF-8 bytes exactly as given.
    public init(accessKey: String) {
        let keyMaterial = SymmetricKey(data: Array(accessKey.utf8))
        func derive(_ context: String, _ count: Int) -> [UInt8] {
            HKDF<SHA256>.deriveKey(
                inputKeyMaterial: keyMaterial,
                info: Array(context.utf8),
                outputByteCount: count
            ).withUnsafeBytes { Array($0) }
        }
        self.signalingKey = UUIDFormat.string(from: derive(Self.signalingContext, 16))
        self.psk = derive(Self.pskContext, 32)
        self.punchTag = derive(Self.punchTagContext, 16)
    }
}

/// Creates access keys for new forwards.
public enum AccessKeyGenerator {
    /// A random lowercase UUID version 4 string (122 random bits from the system CSPRNG).
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        return Self.generate(using: &generator)
    }

    /// A lowercase UUID version 4 string from `generator`, which must be cryptographically secure.
    public static func generate<Generator: RandomNumberGenerator>(using generator: inout Generator) -> String {
        var bytes = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40  // version 4
        bytes[8] = (bytes[8] & 0x3F) | 0x80  // RFC 4122 variant
        return UUIDFormat.string(from: bytes)
    }
}

enum UUIDFormat {
    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Formats 16 bytes as 8-4-4-4-12 lowercase hex.
    static func string(from bytes: [UInt8]) -> String {
        precondition(bytes.count == 16, "a UUID is 16 bytes")
        var text: [UInt8] = []
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 {
                text.append(UInt8(ascii: "-"))
            }
            text.append(Self.hexDigits[Int(byte >> 4)])
            text.append(Self.hexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
