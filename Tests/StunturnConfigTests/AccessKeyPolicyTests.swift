import Testing
@testable import StunturnConfig

@Suite struct AccessKeyPolicyTests {
    @Test(arguments: [
        "3f1c2b9e-6a0d-4c55-9e61-0b7f2d4a8c13",
        "9d2e7c41-0b8a-4f3e-a1d5-6c7e8f901234",
        "0c0b6e45-2c9f-4d8e-b7f1-9a3e6d2c5b80",
        "Zq8#vL2!pR6^tW0&",
        "correct-horse-battery-staple-42",
        "k7Fq2xPm9LwT4bNs",
    ])
    func acceptsRandomKeys(key: String) {
        #expect(AccessKeyPolicy.problem(with: key) == nil)
    }

    @Test(arguments: [
        ("", "key is too short (0 characters); use at least 16, e.g. from 'stunturn-agent keygen'"),
        ("s3cr3t-k3", "key is too short (9 characters); use at least 16, e.g. from 'stunturn-agent keygen'"),
        ("k7Fq2xPm9LwT4bN", "key is too short (15 characters)"),
        ("k7Fq2xPm 9LwT4bNs", "key contains a space at position 9; use printable ASCII without spaces"),
        ("k7Fq2xPm9LwT4bNs\t", "key contains a character that is not printable ASCII at position 17"),
        ("k7Fq2xPm9LwT4bNsé", "key contains a character that is not printable ASCII at position 17"),
        ("aaaaaaaaaaaaaaaaaaaa", "key is 'a' repeated, which is easy to guess"),
        ("abcdefghabcdefgh", "key is 'abcdefgh' repeated"),
        ("Xy7!Xy7!Xy7!Xy7!Xy", "key is 'Xy7!' repeated"),
        ("aabbccddaabbccdd1", "key has only 5 distinct characters"),
        ("qwqwqwqwertyerty", "key has only 6 distinct characters"),
        ("abcdefghijklmnopq", "key is a plain ascending or descending run"),
        ("zyxwvutsrqponmlkj", "key is a plain ascending or descending run"),
        ("0123456789abcdef", "key is a plain ascending or descending run"),
        ("FEDCBA9876543210", "key is a plain ascending or descending run"),
        ("!\"#$%&'()*+,-./0", "key is a plain ascending or descending run"),
        ("password12345678", "key is easy to guess"),
        ("Password!2024qwerty", "key is easy to guess"),
        ("letmein-letmein-now", "key is easy to guess"),
        ("REPLACE-WITH-KEY-1", "is a placeholder from the examples"),
        ("REPLACE-WITH-OUTPUT-OF-stunturn-agent-keygen", "is a placeholder from the examples"),
        ("ae4c2c33-a6bb-4ef1-ab56-91d59e245b1f", "is published in this project's examples"),
    ])
    func refusesGuessableKeys(key: String, expected: String) throws {
        let problem = try #require(AccessKeyPolicy.problem(with: key))
        #expect(problem.contains(expected), "got: \(problem)")
        #expect(problem.contains("'stunturn-agent keygen'"), "every refusal says how to make a good key")
    }
}
