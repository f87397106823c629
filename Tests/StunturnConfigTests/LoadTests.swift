import Foundation
import Testing
@testable import StunturnConfig

@Suite struct LoadTests {
    private func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("stunturn-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test func missingFileIsNamed() {
        let path = "/nonexistent/stunturn/config.yaml"
        #expect(throws: ConfigError.self) { try AgentConfig.load(path: path) }
        do {
            _ = try AgentConfig.load(path: path)
        } catch {
            #expect(error.description == "\(path): config file not found: \(path)")
            #expect(error.problems.first?.message == "config file not found: \(path)")
            #expect(error.problems.first?.line == nil)
        }
    }

    @Test func directoryIsUnreadableWithAReason() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        do {
            _ = try AgentConfig.load(path: directory.path)
            Issue.record("loading a directory should fail")
        } catch {
            #expect(error.problems.first?.message == "cannot read config file \(directory.path): it is a directory")
        }
    }

    @Test func nonUTF8FileIsRefused() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("config.yaml")
        try Data([0x73, 0x65, 0xFF, 0xFE, 0x0A]).write(to: file)
        do {
            _ = try AgentConfig.load(path: file.path)
            Issue.record("loading binary data should fail")
        } catch {
            #expect(error.problems.first?.message.contains("is not UTF-8 text") == true)
        }
    }

    @Test func problemsNameTheFileAsGiven() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("agent.yaml")
        try "server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:0\n    key: \(keyA)\n"
            .write(to: file, atomically: true, encoding: .utf8)
        do {
            _ = try AgentConfig.load(path: file.path)
            Issue.record("port 0 should be refused")
        } catch {
            #expect(error.description == "\(file.path) line 4: forwards[0].expose: port must be 1-65535, got 0")
        }
    }

    @Test func validFileLoads() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("agent.yaml")
        try "server: 127.0.0.1:7000\nforwards:\n  - name: a\n    expose: 127.0.0.1:8080\n    key: \(keyA)\n"
            .write(to: file, atomically: true, encoding: .utf8)
        let config = try AgentConfig.load(path: file.path)
        #expect(config.forwards.map(\.name) == ["a"])
    }
}
