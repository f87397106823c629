/// Reads and writes durations the way the config file spells them: seconds as a number, or "250ms", "10s", "2m", "1h".
enum DurationText {
    static let units: [(suffix: String, seconds: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]

    /// Seconds (possibly negative or zero) written as `text`, or nil when it is not a duration at all.
    static func seconds(from text: String) -> Double? {
        let trimmed = text.trimmingSpaces
        // "ms" before "m" and "s", so "250ms" is not read as 250 minutes of garbage.
        for unit in units where trimmed.hasSuffix(unit.suffix) {
            let number = trimmed.dropLast(unit.suffix.count).trimmingSpaces
            guard let value = decimal(number) else { continue }
            return value * unit.seconds
        }
        return decimal(trimmed)
    }

    /// Short form for summaries: "250ms", "10s", "1.5s", "2m", "1h".
    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if attoseconds == 0 {
            if seconds != 0 && seconds % 3600 == 0 { return "\(seconds / 3600)h" }
            if seconds != 0 && seconds % 60 == 0 { return "\(seconds / 60)m" }
            return "\(seconds)s"
        }
        let milliseconds = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        if seconds == 0 { return "\(formatNumber(milliseconds))ms" }
        return "\(formatNumber(milliseconds / 1000))s"
    }

    private static func formatNumber(_ value: Double) -> String {
        value == value.rounded() ? String(Int64(value)) : String(value)
    }

    /// A plain decimal number; refuses YAML-isms such as ".inf" and hex so units stay unambiguous.
    private static func decimal(_ text: Substring) -> Double? {
        guard !text.isEmpty,
              text.allSatisfy({ $0.isASCIIDigit || $0 == "." || $0 == "-" || $0 == "+" }),
              let value = Double(text), value.isFinite else { return nil }
        return value
    }
}

extension StringProtocol {
    var trimmingSpaces: Substring {
        let sub = self[...]
        guard let first = sub.firstIndex(where: { !$0.isWhitespace }),
              let last = sub.lastIndex(where: { !$0.isWhitespace }) else { return Substring() }
        return Substring(sub[first...last])
    }
}
