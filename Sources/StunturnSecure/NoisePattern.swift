/// A Noise handshake pattern: pre-messages, message token sequences and psk modifiers.
public struct NoisePattern: Hashable, Sendable, CustomStringConvertible {
    /// A token in a handshake message.
    public enum Token: String, Hashable, Sendable {
        case e, s, ee, es, se, ss, psk
    }

    /// The pattern name as it appears in the protocol name, such as `XXpsk3`.
    public let name: String
    /// Keys the responder knows about the initiator before the handshake (`e` or `s`).
    public let initiatorPreMessage: [Token]
    /// Keys the initiator knows about the responder before the handshake.
    public let responderPreMessage: [Token]
    /// Handshake messages in order; even indices go initiator to responder.
    public let messages: [[Token]]

    public var description: String { self.name }

    /// Whether this is a one-way pattern (N, K, X), after which only the initiator sends.
    public var isOneWay: Bool { self.messages.count == 1 }

    /// How many pre-shared keys the handshake consumes.
    public var preSharedKeyCount: Int {
        self.messages.reduce(0) { count, message in count + message.filter { $0 == .psk }.count }
    }

    /// Creates a pattern from its name, such as `NN`, `NNpsk0`, `X1K1` or `XXpsk0+psk3`;
    /// nil if the base pattern or a modifier is unknown.
    public init?(name: String) {
        let base: Substring
        var modifiers: [Substring] = []
        if let pskStart = name.firstRange(of: "psk") {
            base = name[..<pskStart.lowerBound]
            modifiers = name[pskStart.lowerBound...].split(separator: "+", omittingEmptySubsequences: false)
        } else {
            base = name[...]
        }
        guard let definition = Self.definitions[String(base)], let parsed = Self.parse(definition) else {
            return nil
        }
        var messages = parsed.messages
        for modifier in modifiers {
            guard modifier.hasPrefix("psk"), let position = Int(modifier.dropFirst(3)), position <= messages.count
            else {
                return nil
            }
            if position == 0 {
                messages[0].insert(.psk, at: 0)
            } else {
                messages[position - 1].append(.psk)
            }
        }
        self.name = name
        self.initiatorPreMessage = parsed.initiator
        self.responderPreMessage = parsed.responder
        self.messages = messages
    }

    public static let N = NoisePattern(name: "N")!
    public static let K = NoisePattern(name: "K")!
    public static let X = NoisePattern(name: "X")!
    public static let NN = NoisePattern(name: "NN")!
    public static let NK = NoisePattern(name: "NK")!
    public static let NX = NoisePattern(name: "NX")!
    public static let XN = NoisePattern(name: "XN")!
    public static let XK = NoisePattern(name: "XK")!
    public static let XX = NoisePattern(name: "XX")!
    public static let KN = NoisePattern(name: "KN")!
    public static let KK = NoisePattern(name: "KK")!
    public static let KX = NoisePattern(name: "KX")!
    public static let IN = NoisePattern(name: "IN")!
    public static let IK = NoisePattern(name: "IK")!
    public static let IX = NoisePattern(name: "IX")!
    public static let NNpsk0 = NoisePattern(name: "NNpsk0")!
    public static let NNpsk2 = NoisePattern(name: "NNpsk2")!
    public static let NKpsk0 = NoisePattern(name: "NKpsk0")!
    public static let XXpsk3 = NoisePattern(name: "XXpsk3")!

    /// Base patterns as written in the Noise spec (sections 7.4, 7.5 and 18): pre-messages, then
    /// `...`, then messages alternating from `->`.
    private static let definitions: [String: [String]] = [
        // One-way.
        "N": ["<- s", "...", "-> e, es"],
        "K": ["-> s", "<- s", "...", "-> e, es, ss"],
        "X": ["<- s", "...", "-> e, es, s, ss"],
        // Fundamental interactive.
        "NN": ["-> e", "<- e, ee"],
        "NK": ["<- s", "...", "-> e, es", "<- e, ee"],
        "NX": ["-> e", "<- e, ee, s, es"],
        "XN": ["-> e", "<- e, ee", "-> s, se"],
        "XK": ["<- s", "...", "-> e, es", "<- e, ee", "-> s, se"],
        "XX": ["-> e", "<- e, ee, s, es", "-> s, se"],
        "KN": ["-> s", "...", "-> e", "<- e, ee, se"],
        "KK": ["-> s", "<- s", "...", "-> e, es, ss", "<- e, ee, se"],
        "KX": ["-> s", "...", "-> e", "<- e, ee, se, s, es"],
        "IN": ["-> e, s", "<- e, ee, se"],
        "IK": ["<- s", "...", "-> e, es, s, ss", "<- e, ee, se"],
        "IX": ["-> e, s", "<- e, ee, se, s, es"],
        // Deferred.
        "NK1": ["<- s", "...", "-> e", "<- e, ee, es"],
        "NX1": ["-> e", "<- e, ee, s", "-> es"],
        "X1N": ["-> e", "<- e, ee", "-> s", "<- se"],
        "X1K": ["<- s", "...", "-> e, es", "<- e, ee", "-> s", "<- se"],
        "XK1": ["<- s", "...", "-> e", "<- e, ee, es", "-> s, se"],
        "X1K1": ["<- s", "...", "-> e", "<- e, ee, es", "-> s", "<- se"],
        "X1X": ["-> e", "<- e, ee, s, es", "-> s", "<- se"],
        "XX1": ["-> e", "<- e, ee, s", "-> es, s, se"],
        "X1X1": ["-> e", "<- e, ee, s", "-> es, s", "<- se"],
        "K1N": ["-> s", "...", "-> e", "<- e, ee", "-> se"],
        "K1K": ["-> s", "<- s", "...", "-> e, es", "<- e, ee", "-> se"],
        "KK1": ["-> s", "<- s", "...", "-> e", "<- e, ee, se, es"],
        "K1K1": ["-> s", "<- s", "...", "-> e", "<- e, ee, es", "-> se"],
        "K1X": ["-> s", "...", "-> e", "<- e, ee, s, es", "-> se"],
        "KX1": ["-> s", "...", "-> e", "<- e, ee, se, s", "-> es"],
        "K1X1": ["-> s", "...", "-> e", "<- e, ee, s", "-> se, es"],
        "I1N": ["-> e, s", "<- e, ee", "-> se"],
        "I1K": ["<- s", "...", "-> e, es, s", "<- e, ee", "-> se"],
        "IK1": ["<- s", "...", "-> e, s", "<- e, ee, se, es"],
        "I1K1": ["<- s", "...", "-> e, s", "<- e, ee, es", "-> se"],
        "I1X": ["-> e, s", "<- e, ee, s, es", "-> se"],
        "IX1": ["-> e, s", "<- e, ee, se, s", "-> es"],
        "I1X1": ["-> e, s", "<- e, ee, s", "-> se, es"],
    ]

    private static func parse(
        _ lines: [String]
    ) -> (initiator: [Token], responder: [Token], messages: [[Token]])? {
        var initiator: [Token] = []
        var responder: [Token] = []
        var messageLines = lines[...]
        if let separator = lines.firstIndex(of: "...") {
            for line in lines[..<separator] {
                guard let (fromInitiator, tokens) = Self.parseLine(line) else { return nil }
                if fromInitiator { initiator = tokens } else { responder = tokens }
            }
            messageLines = lines[(separator + 1)...]
        }
        var messages: [[Token]] = []
        for (index, line) in messageLines.enumerated() {
            guard let (fromInitiator, tokens) = Self.parseLine(line), fromInitiator == (index % 2 == 0) else {
                return nil
            }
            messages.append(tokens)
        }
        return (initiator, responder, messages)
    }

    private static func parseLine(_ line: String) -> (fromInitiator: Bool, tokens: [Token])? {
        let fromInitiator: Bool
        if line.hasPrefix("-> ") {
            fromInitiator = true
        } else if line.hasPrefix("<- ") {
            fromInitiator = false
        } else {
            return nil
        }
        var tokens: [Token] = []
        for word in line.dropFirst(3).split(whereSeparator: { $0 == "," || $0 == " " }) {
            guard let token = Token(rawValue: String(word)) else { return nil }
            tokens.append(token)
        }
        return (fromInitiator, tokens)
    }
}
