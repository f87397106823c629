/// The datagrams of a punched UDP path once the punch is done: a kind byte, then the handshake
/// message or the payload (sealed, or as it is on a plaintext forward). Punch probes start with
/// "STPU" and never collide with these kinds.
public enum TunnelDatagram {
    public static let hello: UInt8 = 1
    public static let reply: UInt8 = 2
    public static let sealed: UInt8 = 3
    public static let plaintext: UInt8 = 4
    /// Sent by each side while a flow is up and idle, so the NATs on the way keep its mapping (home
    /// routers forget idle UDP mappings after 30 s or less) and each side hears that the other is
    /// still there. One byte, nothing else; receivers that do not know it ignore it.
    public static let keepalive: UInt8 = 5
    public static let keepalivePacket: [UInt8] = [keepalive]
    /// The longest time between keepalives, whatever the forward's keepalive setting.
    public static let maximumKeepalive: Duration = .seconds(25)

    /// Handshake retransmission: a lost hello or reply is sent again at this pace.
    public static let handshakeRetry: Duration = .milliseconds(250)
    /// A UDP session has no close; without traffic for this long it ends.
    public static let defaultIdleTimeout: Duration = .seconds(120)
    /// Datagrams a local client sends before its tunnel is up are kept, up to this many and
    /// this many bytes (so a forward's sessions together hold at most 16 MiB while they wait).
    public static let maxQueuedBeforeTunnel = 64
    public static let maxQueuedBytesBeforeTunnel = 64 * 1024
    /// Local clients (source addresses) with a tunnel at once, per listen forward: each costs a
    /// signaling exchange, a punch and a socket, so a flood of spoofed sources must not multiply them.
    public static let maxSessionsPerForward = 256

    /// The largest payload a tunnel datagram carries: a UDP datagram's 65,507 bytes less the
    /// kind byte and, when encrypted, the sealing overhead.
    public static func maxPayload(encrypted: Bool) -> Int { 65_507 - 1 - (encrypted ? DatagramSealer.overhead : 0) }

    /// The initiator's handshake datagram.
    public static func helloPacket(_ message: [UInt8]) -> [UInt8] { [hello] + message }
    /// The responder's handshake datagram.
    public static func replyPacket(_ message: [UInt8]) -> [UInt8] { [reply] + message }

    /// The handshake message in a hello datagram, nil for anything else.
    public static func helloMessage(in datagram: [UInt8]) -> [UInt8]? {
        guard datagram.first == hello, datagram.count == 1 + TunnelHandshake.helloLength else { return nil }
        return Array(datagram[1...])
    }

    /// The handshake message in a reply datagram, nil for anything else.
    public static func replyMessage(in datagram: [UInt8]) -> [UInt8]? {
        guard datagram.first == reply, datagram.count == 1 + TunnelHandshake.replyLength else { return nil }
        return Array(datagram[1...])
    }
}

/// Seals or passes through the payload datagrams of one UDP tunnel. Safe to share between the
/// task that sends and the task that receives: the sealer and opener are.
public struct DatagramCodec: Sendable {
    private let sealer: DatagramSealer?
    private let opener: DatagramOpener?

    /// An encrypted codec with a session's datagram keys, or a plaintext one (nil).
    public init(session: TunnelSession?) {
        self.sealer = session?.datagramSealer
        self.opener = session?.datagramOpener
    }

    public var isEncrypted: Bool { sealer != nil }

    /// The datagram carrying `payload`.
    public func wrap(_ payload: [UInt8]) throws -> [UInt8] {
        guard let sealer else { return [TunnelDatagram.plaintext] + payload }
        var out: [UInt8] = [TunnelDatagram.sealed]
        try payload.withUnsafeBytes { try sealer.seal($0, appendingTo: &out) }
        return out
    }

    /// The payload of a data datagram, nil for anything else (a handshake datagram, or a kind this
    /// codec does not take); a forged or replayed one throws.
    public func unwrap(_ datagram: [UInt8]) throws -> [UInt8]? {
        guard let kind = datagram.first else { return nil }
        if let opener {
            guard kind == TunnelDatagram.sealed else { return nil }
            var out: [UInt8] = []
            try datagram.withUnsafeBytes { try opener.open(UnsafeRawBufferPointer(rebasing: $0[1...]), appendingTo: &out) }
            return out
        }
        return kind == TunnelDatagram.plaintext ? Array(datagram[1...]) : nil
    }
}
