import Foundation

/// Reads a fuzz input front to back: a few bytes that choose how the input is used, then the
/// bytes the decoder sees. Past the end every read gives zero or nothing.
public struct FuzzInput {
    public let bytes: [UInt8]
    public private(set) var offset = 0

    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        self.bytes = inputBytes(data, size)
    }

    public var isAtEnd: Bool { self.offset >= self.bytes.count }
    public var remaining: Int { self.bytes.count - self.offset }

    public mutating func byte() -> UInt8 {
        guard self.offset < self.bytes.count else { return 0 }
        defer { self.offset += 1 }
        return self.bytes[self.offset]
    }

    public mutating func uint16() -> UInt16 {
        UInt16(self.byte()) << 8 | UInt16(self.byte())
    }

    public mutating func take(_ count: Int) -> [UInt8] {
        let end = min(self.bytes.count, self.offset + max(0, count))
        defer { self.offset = end }
        return Array(self.bytes[self.offset..<end])
    }

    public mutating func rest() -> [UInt8] {
        self.take(self.remaining)
    }
}

/// Splits `bytes` into pieces of `size` bytes (all at once when `size` is 0), as a socket may
/// deliver them.
public func chunks(_ bytes: [UInt8], size: Int) -> [ArraySlice<UInt8>] {
    guard size > 0, !bytes.isEmpty else { return [bytes[...]] }
    return stride(from: 0, to: bytes.count, by: size).map { bytes[$0..<min($0 + size, bytes.count)] }
}
