/// The rules a shared access key must meet before the agent will use it.
public enum AccessKeyPolicy {
    public static let minimumLength = 16
    public static let minimumDistinctCharacters = 8

    private static let advice = "e.g. from 'stunturn-agent keygen'"

    /// Says what is wrong with `key` and how to fix it, or returns nil when the key is acceptable.
    public static func problem(with key: String) -> String? {
        let scalars = Array(key.unicodeScalars)
        if let index = scalars.firstIndex(where: { !(0x21...0x7E).contains($0.value) }) {
            let what = scalars[index] == " " ? "a space" : "a character that is not printable ASCII"
            return "key contains \(what) at position \(index + 1); use printable ASCII without spaces, \(advice)"
        }
        if scalars.count < minimumLength {
            return "key is too short (\(scalars.count) characters); use at least \(minimumLength), \(advice)"
        }
        if let block = repeatedBlock(scalars) {
            let shown = String(String.UnicodeScalarView(block))
            return "key is '\(shown)' repeated, which is easy to guess; use a random key, \(advice)"
        }
        let distinct = Set(scalars).count
        if distinct < minimumDistinctCharacters {
            return "key has only \(distinct) distinct characters, which is easy to guess; "
                + "use a random key with at least \(minimumDistinctCharacters), \(advice)"
        }
        if isSequentialRun(scalars) {
            return "key is a plain ascending or descending run of characters, which is easy to guess; "
                + "use a random key, \(advice)"
        }
        return nil
    }

    /// The shortest block that, repeated at least twice, makes up the key (a partial final copy allowed).
    private static func repeatedBlock(_ scalars: [Unicode.Scalar]) -> ArraySlice<Unicode.Scalar>? {
        guard scalars.count >= 2 else { return nil }
        for period in 1...(scalars.count / 2) {
            let repeats = (period..<scalars.count).allSatisfy { scalars[$0] == scalars[$0 - period] }
            if repeats { return scalars[0..<period] }
        }
        return nil
    }

    /// True when each character follows the previous one by one step, in ASCII order or in
    /// the digits-then-letters order people type ("0123456789abcdef…"), in one direction throughout.
    private static func isSequentialRun(_ scalars: [Unicode.Scalar]) -> Bool {
        let alphanumericOrder = Array("0123456789abcdefghijklmnopqrstuvwxyz".unicodeScalars)
        func rank(_ scalar: Unicode.Scalar) -> Int? {
            let lowered = scalar.properties.lowercaseMapping.unicodeScalars.first ?? scalar
            return alphanumericOrder.firstIndex(of: lowered)
        }
        func isRun(_ position: (Unicode.Scalar) -> Int?) -> Bool {
            var step: Int?
            for (previous, current) in zip(scalars, scalars.dropFirst()) {
                guard let a = position(previous), let b = position(current) else { return false }
                let delta = b - a
                guard delta == 1 || delta == -1 else { return false }
                if let step, step != delta { return false }
                step = delta
            }
            return true
        }
        return isRun { Int($0.value) } || isRun(rank)
    }
}
