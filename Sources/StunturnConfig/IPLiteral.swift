import Foundation

/// Parses IP address literals without the C library, so validation stays pure and portable.
enum IPLiteral {
    /// The four octets of a dotted-quad IPv4 literal, or nil. Leading zeros are refused
    /// because resolvers disagree on whether they mean octal.
    static func ipv4Octets(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(\.isASCIIDigit) else { return nil }
            if part.count > 1 && part.first == "0" { return nil }
            guard let value = UInt8(part) else { return nil }
            octets.append(value)
        }
        return octets
    }

    /// The eight 16-bit groups of an IPv6 literal (without brackets), or nil.
    /// A zone suffix such as `%eth0` is accepted and ignored.
    static func ipv6Groups(_ text: Substring) -> [UInt16]? {
        var address = text
        if let percent = address.firstIndex(of: "%") {
            let zone = address[address.index(after: percent)...]
            guard !zone.isEmpty, zone.allSatisfy({ $0.isASCIILetterOrDigit || "._-".contains($0) }) else {
                return nil
            }
            address = address[..<percent]
        }
        guard address.count >= 2 else { return nil }

        let halves = address.components(separatedBy: "::")
        guard halves.count <= 2 else { return nil }
        let compressed = halves.count == 2

        func groups(_ part: String, allowTrailingIPv4: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            let fields = part.split(separator: ":", omittingEmptySubsequences: false)
            var result: [UInt16] = []
            for (index, field) in fields.enumerated() {
                if allowTrailingIPv4 && index == fields.count - 1 && field.contains(".") {
                    guard let octets = ipv4Octets(field) else { return nil }
                    result.append(UInt16(octets[0]) << 8 | UInt16(octets[1]))
                    result.append(UInt16(octets[2]) << 8 | UInt16(octets[3]))
                    continue
                }
                guard (1...4).contains(field.count), field.allSatisfy(\.isHexDigit), field.allSatisfy(\.isASCII),
                      let value = UInt16(field, radix: 16) else { return nil }
                result.append(value)
            }
            return result
        }

        if compressed {
            guard let head = groups(halves[0], allowTrailingIPv4: false),
                  let tail = groups(halves[1], allowTrailingIPv4: true),
                  head.count + tail.count <= 7 else { return nil }
            return head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        }
        guard let all = groups(halves[0], allowTrailingIPv4: true), all.count == 8 else { return nil }
        return all
    }

    static func isIPv4(_ text: some StringProtocol) -> Bool { ipv4Octets(Substring(text)) != nil }
    static func isIPv6(_ text: some StringProtocol) -> Bool { ipv6Groups(Substring(text)) != nil }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isWholeNumber }
    var isASCIILetterOrDigit: Bool { isASCII && (isLetter || isWholeNumber) }
}
