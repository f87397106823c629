import Foundation

/// The rules a shared access key must meet before the agent will use it.
public enum AccessKeyPolicy {
    public static let minimumLength = 16
    public static let minimumDistinctCharacters = 8
    /// Below this estimate a key is refused as guessable: 2^56 guesses is out of reach of an
    /// online attacker and costly offline (the key's one-way hash crosses the signaling server).
    public static let minimumBits = 56.0

    /// Keys published in this project's own examples and documentation: anyone could use them.
    static let publishedKeys: Set<String> = [
        "ae4c2c33-a6bb-4ef1-ab56-91d59e245b1f",
    ]

    private static let advice = "e.g. from 'stunturn-agent keygen'"

    /// Says what is wrong with `key` and how to fix it, or returns nil when the key is acceptable.
    public static func problem(with key: String) -> String? {
        let scalars = Array(key.unicodeScalars)
        if let index = scalars.firstIndex(where: { !(0x21...0x7E).contains($0.value) }) {
            let what = scalars[index] == " " ? "a space" : "a character that is not printable ASCII"
            return "key contains \(what) at position \(index + 1); use printable ASCII without spaces, \(advice)"
        }
        if key.uppercased().hasPrefix("REPLACE-WITH") {
            return "key '\(key)' is a placeholder from the examples; replace it with a key of your own, \(advice)"
        }
        if publishedKeys.contains(key.lowercased()) {
            return "key '\(key)' is published in this project's examples, so anyone can use it; make your own, \(advice)"
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
        let estimate = KeyStrength(key)
        if estimate.bits < minimumBits {
            let why = estimate.patterns.isEmpty ? "" : " (" + estimate.patterns.prefix(3).joined(separator: ", ") + ")"
            return "key is easy to guess: about \(Int(estimate.bits)) bits of entropy\(why), at least \(Int(minimumBits)) needed; "
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

/// A rough estimate of how many guesses a key takes, in the spirit of zxcvbn: the parts people
/// type (common words, keyboard rows, sequences, repeated characters) cost a guesser little, the
/// rest costs the size of the character classes the key uses, per character.
struct KeyStrength {
    private(set) var bits = 0.0
    /// What was found, worded for the refusal ("'password' is a common word").
    private(set) var patterns: [String] = []

    static let commonWords = [
        "password", "passwort", "letmein", "welcome", "secret", "admin", "qwerty", "dragon", "monkey", "master",
        "shadow", "sunshine", "princess", "football", "baseball", "iloveyou", "trustno1", "changeme", "default",
        "stunturn", "tunnel", "server", "access", "login", "hello", "test", "guest", "root", "user", "key",
    ]
    static let keyboardRows = ["qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890", "qwertzuiop", "azertyuiop"]

    init(_ key: String) {
        let characters = Array(key)
        let lowered = characters.map { Character($0.lowercased()) }
        // Common substitutions, undone before looking for words.
        let unleet: [Character: Character] = ["0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"]
        let plain = lowered.map { unleet[$0] ?? $0 }
        var pool = 0
        if characters.contains(where: \.isLowercase) { pool += 26 }
        if characters.contains(where: \.isUppercase) { pool += 26 }
        if characters.contains(where: \.isNumber) { pool += 10 }
        if characters.contains(where: { !$0.isLetter && !$0.isNumber }) { pool += 33 }
        let perCharacter = log2(Double(max(pool, 2)))

        var i = 0
        while i < characters.count {
            if let (length, cost, pattern) = Self.longestPattern(at: i, lowered: lowered, plain: plain) {
                bits += cost
                patterns.append(pattern)
                i += length
            } else {
                bits += perCharacter
                i += 1
            }
        }
    }

    /// The longest guessable run starting at `i`: its length, what guessing it costs, and a note.
    private static func longestPattern(at i: Int, lowered: [Character], plain: [Character]) -> (Int, Double, String)? {
        var best: (Int, Double, String)?
        func consider(_ length: Int, _ cost: Double, _ note: String) {
            if length >= 3, length > (best?.0 ?? 0) { best = (length, cost, note) }
        }
        let rest = String(plain[i...])
        for word in commonWords where word.count >= 3 && rest.hasPrefix(word) {
            consider(word.count, log2(Double(commonWords.count)) + 1, "'\(String(lowered[i..<(i + word.count)]))' is a common word")
        }
        let restLowered = String(lowered[i...])
        for row in keyboardRows {
            var length = 0
            for n in stride(from: min(row.count, restLowered.count), through: 4, by: -1) where row.contains(restLowered.prefix(n)) {
                length = n
                break
            }
            if length > 0 { consider(length, log2(Double(keyboardRows.count * row.count)) + 1, "'\(restLowered.prefix(length))' is a keyboard run") }
        }
        // A sequence: each character one step from the last, in one direction.
        if i + 2 < lowered.count, let first = lowered[i].asciiValue, let second = lowered[i + 1].asciiValue {
            let step = Int(second) - Int(first)
            if step == 1 || step == -1 {
                var end = i + 1
                while end + 1 < lowered.count, let a = lowered[end].asciiValue, let b = lowered[end + 1].asciiValue, Int(b) - Int(a) == step { end += 1 }
                let length = end - i + 1
                consider(length, log2(95) + log2(Double(length)) + 1, "'\(String(lowered[i...end]))' is a sequence")
            }
        }
        // A repeated character.
        var end = i
        while end + 1 < lowered.count, lowered[end + 1] == lowered[i] { end += 1 }
        consider(end - i + 1, log2(95) + log2(Double(end - i + 1)), "'\(String(lowered[i...end]))' repeats one character")
        return best
    }
}
