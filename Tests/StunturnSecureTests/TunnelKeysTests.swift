import StunturnSecure
import Testing

@Suite("Access keys and derived tunnel keys")
struct TunnelKeysTests {
    static let accessKeys = [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "correct horse battery staple",
        "",
    ]

    static func isUUIDShaped(_ text: String) -> Bool {
        let groups = text.split(separator: "-", omittingEmptySubsequences: false)
        return groups.map(\.count) == [8, 4, 4, 4, 12]
            && groups.allSatisfy { $0.allSatisfy { "0123456789abcdef".contains($0) } }
    }

    @Test(arguments: accessKeys)
    func derivationIsDeterministicAndShaped(accessKey: String) {
        let first = TunnelKeys(accessKey: accessKey)
        let second = TunnelKeys(accessKey: accessKey)
        #expect(first.signalingKey == second.signalingKey)
        #expect(first.psk == second.psk)
        #expect(first.punchTag == second.punchTag)
        #expect(Self.isUUIDShaped(first.signalingKey))
        #expect(first.psk.count == 32)
        #expect(first.punchTag.count == 16)
        // The three outputs come from different contexts.
        #expect(Array(first.psk.prefix(16)) != first.punchTag)
    }

    @Test(arguments: accessKeys.filter { !$0.isEmpty })
    func signalingKeyRevealsNothingOfTheAccessKey(accessKey: String) {
        let signalingKey = TunnelKeys(accessKey: accessKey).signalingKey
        #expect(signalingKey != accessKey)
        // No run of six characters from the access key appears in what the server sees.
        let characters = Array(accessKey)
        for start in 0...(max(characters.count - 6, 0)) {
            let window = String(characters[start..<min(start + 6, characters.count)])
            #expect(!signalingKey.contains(window), "shares \"\(window)\"")
        }
    }

    @Test func distinctAccessKeysGiveDistinctKeys() {
        let derived = Self.accessKeys.map { TunnelKeys(accessKey: $0) }
        #expect(Set(derived.map(\.signalingKey)).count == Self.accessKeys.count)
        #expect(Set(derived.map(\.psk)).count == Self.accessKeys.count)
        #expect(Set(derived.map(\.punchTag)).count == Self.accessKeys.count)
        // Near-identical keys still diverge completely.
        let a = TunnelKeys(accessKey: "0f8fad5b-d9cb-469f-a165-70867728950e")
        let b = TunnelKeys(accessKey: "0f8fad5b-d9cb-469f-a165-70867728950f")
        #expect(a.signalingKey != b.signalingKey)
        #expect(a.psk != b.psk)
    }

    @Test func knownAnswerPinsTheDerivation() {
        // Values from an independent RFC 5869 HKDF-SHA256 (empty salt, context as info), pinned so
        // a changed context string or format breaks interoperability loudly.
        let keys = TunnelKeys(accessKey: "0f8fad5b-d9cb-469f-a165-70867728950e")
        #expect(keys.signalingKey == "340ff499-4a16-ffa1-8d1a-8cf385c1dbc4")
        #expect(keys.psk == [UInt8](hex: "eb2f5720df39630581d647358828f1075ef80779aa37fb264c734d0f4c95d038"))
        #expect(keys.punchTag == [UInt8](hex: "1db239c127b4ec438cb1ea6743b73e83"))
    }

    @Test func generatedKeysAreVersion4UUIDs() {
        var seen = Set<String>()
        for _ in 0..<200 {
            let key = AccessKeyGenerator.generate()
            #expect(Self.isUUIDShaped(key))
            let characters = Array(key)
            #expect(characters[14] == "4")
            #expect("89ab".contains(characters[19]))
            seen.insert(key)
        }
        #expect(seen.count == 200)
    }

    @Test func generatorUsesItsRandomSource() {
        var first = SplitMix64(seed: 1)
        var second = SplitMix64(seed: 1)
        var third = SplitMix64(seed: 2)
        let a = AccessKeyGenerator.generate(using: &first)
        #expect(a == AccessKeyGenerator.generate(using: &second))
        #expect(a != AccessKeyGenerator.generate(using: &third))
    }
}
