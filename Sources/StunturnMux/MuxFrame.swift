/// One frame of the stream multiplexer that runs inside a session's encrypted records.
///
/// The framing is yamux's (hashicorp/yamux `spec.md`): a 12-byte big-endian header, then for Data
/// frames `length` bytes of payload. docs/PROTOCOL.md describes it byte for byte.
///
/// | bytes | field                                   |
/// |-------|-----------------------------------------|
/// | 0     | version, 0                              |
/// | 1     | type: 0 Data, 1 WindowUpdate, 2 Ping, 3 GoAway |
/// | 2-3   | flags: 1 SYN, 2 ACK, 4 FIN, 8 RST        |
/// | 4-7   | stream id (0: the session)              |
/// | 8-11  | length: payload bytes (Data), window delta (WindowUpdate), opaque value (Ping), reason (GoAway) |
public struct MuxFrame: Equatable, Sendable {
    public enum Kind: UInt8, Sendable {
        case data = 0
        case windowUpdate = 1
        case ping = 2
        case goAway = 3
    }

    public struct Flags: OptionSet, Hashable, Sendable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        /// Opens a stream (or asks for a ping's answer).
        public static let syn = Flags(rawValue: 1)
        /// Accepts a stream (or answers a ping).
        public static let ack = Flags(rawValue: 2)
        /// The sender will send no more on this stream: a half-close.
        public static let fin = Flags(rawValue: 4)
        /// The stream ends abnormally at once, both ways.
        public static let rst = Flags(rawValue: 8)
    }

    /// Why a session ends, in a GoAway frame's length field.
    public enum GoAwayReason: UInt32, Sendable {
        case normal = 0
        case protocolError = 1
        case internalError = 2
    }

    public static let version: UInt8 = 0
    public static let headerLength = 12

    public var kind: Kind
    public var flags: Flags
    public var streamID: UInt32
    /// Data: the payload's length; WindowUpdate: the window delta; Ping: the opaque value;
    /// GoAway: the reason.
    public var length: UInt32
    /// Data frames only.
    public var payload: [UInt8]

    public init(kind: Kind, flags: Flags = [], streamID: UInt32, length: UInt32 = 0, payload: [UInt8] = []) {
        self.kind = kind
        self.flags = flags
        self.streamID = streamID
        self.length = kind == .data ? UInt32(payload.count) : length
        self.payload = payload
    }

    public static func data(_ streamID: UInt32, _ payload: [UInt8], flags: Flags = []) -> MuxFrame {
        MuxFrame(kind: .data, flags: flags, streamID: streamID, payload: payload)
    }

    public static func windowUpdate(_ streamID: UInt32, delta: UInt32, flags: Flags = []) -> MuxFrame {
        MuxFrame(kind: .windowUpdate, flags: flags, streamID: streamID, length: delta)
    }

    public static func ping(_ value: UInt32, answer: Bool = false) -> MuxFrame {
        MuxFrame(kind: .ping, flags: answer ? .ack : .syn, streamID: 0, length: value)
    }

    public static func goAway(_ reason: GoAwayReason) -> MuxFrame {
        MuxFrame(kind: .goAway, streamID: 0, length: reason.rawValue)
    }

    /// Appends the frame as it goes on the wire.
    public func encode(appendingTo out: inout [UInt8]) {
        out.reserveCapacity(out.count + Self.headerLength + payload.count)
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: Self.headerLength))
        out.withUnsafeMutableBytes { Self.writeHeader(kind: kind, flags: flags, streamID: streamID, length: length,
                                                      into: UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
        out.append(contentsOf: payload)
    }

    /// Writes a frame's 12-byte header at the start of `buffer`, for a sender that puts the
    /// payload right behind it itself (such as one read straight from a socket).
    public static func writeHeader(kind: Kind, flags: Flags, streamID: UInt32, length: UInt32,
                                   into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= headerLength, "room for a mux header")
        buffer[0] = version
        buffer[1] = kind.rawValue
        buffer.storeBytes(of: flags.rawValue.bigEndian, toByteOffset: 2, as: UInt16.self)
        buffer.storeBytes(of: streamID.bigEndian, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: length.bigEndian, toByteOffset: 8, as: UInt32.self)
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        encode(appendingTo: &out)
        return out
    }

}

/// Why the multiplexer refused what the peer sent; each is a protocol error that ends the session.
public struct MuxError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable {
        private enum Base: Hashable, Sendable {
            case unsupportedVersion, unknownType, frameTooLarge, badStreamID, windowExceeded, windowOverflow,
                 unknownStream, duplicateStream, tooManyStreams, dataAfterFin
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }
        public static let unsupportedVersion = Code(.unsupportedVersion)
        public static let unknownType = Code(.unknownType)
        public static let frameTooLarge = Code(.frameTooLarge)
        public static let badStreamID = Code(.badStreamID)
        public static let windowExceeded = Code(.windowExceeded)
        public static let windowOverflow = Code(.windowOverflow)
        public static let unknownStream = Code(.unknownStream)
        public static let duplicateStream = Code(.duplicateStream)
        public static let tooManyStreams = Code(.tooManyStreams)
        public static let dataAfterFin = Code(.dataAfterFin)
    }

    public let code: Code
    public let description: String

    public init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }
}

/// Splits a byte stream (the session's decrypted records, however they are chunked) into frames.
///
/// A frame whose payload is larger than `maxPayload` is refused before any of it is buffered, so
/// a peer cannot make the decoder hold more than one frame's worth of memory.
public struct MuxFrameDecoder: Sendable {
    public let maxPayload: Int
    private var buffer: [UInt8] = []
    private var start = 0

    /// `maxPayload` bounds one Data frame; senders split larger writes.
    public init(maxPayload: Int = 256 * 1024) {
        self.maxPayload = maxPayload
    }

    /// Bytes held that do not make a whole frame yet.
    public var buffered: Int { buffer.count - start }

    /// Takes more bytes and returns the frames they complete, in order.
    public mutating func decode(_ bytes: some Collection<UInt8>) throws(MuxError) -> [MuxFrame] {
        buffer.append(contentsOf: bytes)
        var frames: [MuxFrame] = []
        while buffer.count - start >= MuxFrame.headerLength {
            let header = try Self.parseHeader(buffer[start..<(start + MuxFrame.headerLength)], maxPayload: maxPayload)
            let payloadLength = header.kind == .data ? Int(header.length) : 0
            guard buffer.count - start >= MuxFrame.headerLength + payloadLength else { break }
            let payloadStart = start + MuxFrame.headerLength
            var frame = header
            frame.payload = Array(buffer[payloadStart..<(payloadStart + payloadLength)])
            frames.append(frame)
            start = payloadStart + payloadLength
        }
        // Compact once the consumed part dominates, so the buffer stays about one frame large.
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
        return frames
    }

    /// Reads one 12-byte header (`bytes` holds exactly that) into a frame without its payload;
    /// for Data frames `length` is the payload that follows. Refuses what the header alone shows
    /// is wrong: another version, an unknown type, a payload past `maxPayload`, a session frame
    /// on a stream.
    public static func parseHeader<Bytes: Collection<UInt8>>(_ bytes: Bytes, maxPayload: Int) throws(MuxError) -> MuxFrame
    where Bytes.Index == Int {
        precondition(bytes.count == MuxFrame.headerLength, "a mux header is 12 bytes")
        let base = bytes.startIndex
        guard bytes[base] == MuxFrame.version else {
            throw MuxError(.unsupportedVersion, "mux frame of version \(bytes[base]), expected \(MuxFrame.version)")
        }
        guard let kind = MuxFrame.Kind(rawValue: bytes[base + 1]) else {
            throw MuxError(.unknownType, "mux frame of unknown type \(bytes[base + 1])")
        }
        let flags = MuxFrame.Flags(rawValue: UInt16(bytes[base + 2]) << 8 | UInt16(bytes[base + 3]))
        let streamID = load(bytes, at: base + 4)
        let length = load(bytes, at: base + 8)
        if kind == .data {
            guard length <= maxPayload else {
                throw MuxError(.frameTooLarge, "mux data frame of \(length) bytes on stream \(streamID), limit \(maxPayload)")
            }
        } else if streamID != 0 && (kind == .ping || kind == .goAway) {
            throw MuxError(.badStreamID, "mux \(kind) frame on stream \(streamID); it belongs to the session (0)")
        }
        var frame = MuxFrame(kind: kind, flags: flags, streamID: streamID, length: length)
        frame.length = length  // a Data frame's payload is not here yet
        return frame
    }

    private static func load<Bytes: Collection<UInt8>>(_ bytes: Bytes, at offset: Int) -> UInt32 where Bytes.Index == Int {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }
}
