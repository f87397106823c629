import ArgumentParser
import Foundation
import Logging
import StunturnConfig
import StunturnSecure
import StunturnServer
import StunturnSignaling
import StunturnSockets
import StunturnSupervisor

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the whole path on this machine: a signaling server, an exposed service and a listen forward in one process, traffic through the punched tunnel, and a report.")

    @Option(name: .long, help: "MiB to push through the tunnel.")
    var mebibytes: Int = 64

    @Option(name: .long, help: "Fresh connections to time (connect to first echoed byte).")
    var connections: Int = 5

    @Flag(name: .long, help: "Turn tunnel encryption OFF (to see its overhead).")
    var plaintextInsecure = false

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard (1...4096).contains(mebibytes) else { throw ValidationError("--mebibytes must be 1-4096, got \(mebibytes)") }
        guard (1...1000).contains(connections) else { throw ValidationError("--connections must be 1-1000, got \(connections)") }
    }

    func run() async throws {
        try await guarded { try await runDemo() }
    }

    private func runDemo() async throws {
        logging.bootstrap(default: .warning)
        let logger = Logger(label: "stunturn.demo")
        print("stunturn demo: signaling server, exposed service and listen forward in one process (loopback)")

        let server = RendezvousServer(listen: .loopback(.ipv4))
        try server.start()
        defer { server.stop() }
        let service = try DemoService()
        let listenPort = try freePort()
        let key = AccessKeyGenerator.generate()
        let serverEndpoint = Endpoint(host: "127.0.0.1", port: server.boundAddress.port)
        let expose = ForwardConfig(name: "demo-expose", mode: .expose(Endpoint(host: "127.0.0.1", port: service.address.port)),
                                   key: key, server: serverEndpoint, plaintextInsecure: plaintextInsecure)
        let listen = ForwardConfig(name: "demo-listen", mode: .listen(Endpoint(host: "127.0.0.1", port: listenPort)),
                                   key: key, server: serverEndpoint, plaintextInsecure: plaintextInsecure)
        let agent = Agent(config: AgentConfig(forwards: [expose, listen]), logger: logger)
        print("  server      \(server.boundAddress) (tcp signaling + udp stun)")
        print("  service     \(service.address) (echo / sink), exposed by forward 'demo-expose'")
        print("  listen      127.0.0.1:\(listenPort), forward 'demo-listen'")
        print("  encryption  \(plaintextInsecure ? "OFF (plaintext, insecure)" : "Noise_NNpsk0_25519_AESGCM_SHA256")")

        let target = SocketAddress.loopback(port: listenPort)
        let result: DemoResult = try await withThrowingTaskGroup(of: DemoResult?.self) { group in
            group.addTask { try await agent.run(); return nil }
            group.addTask { try await DemoTraffic.run(to: target, mebibytes: mebibytes, connections: connections) }
            defer { group.cancelAll() }
            while let value = try await group.next() {
                if let value { return value }
            }
            throw FailureExit.message("demo: the agent stopped early", code: 1)
        }
        let sorted = result.setupTimes.sorted()
        print("")
        print("  connections  \(result.setupTimes.count) fresh, each signaled, punched and handshaked")
        print("  setup        median \(formatDuration(sorted[sorted.count / 2])), min \(formatDuration(sorted.first!)), max \(formatDuration(sorted.last!)) (connect -> first echoed byte)")
        let seconds = Double(result.transferTime.components.seconds) + Double(result.transferTime.components.attoseconds) / 1e18
        let mbit = Double(result.bytes) * 8 / seconds / 1e6
        print("  transfer     \(result.bytes) bytes in \(formatDuration(result.transferTime)), \(Int(mbit)) Mbit/s, verified by the service's count and checksum")
        let out = agent.statistics["demo-listen"]!.snapshot
        print("  forward      demo-listen: \(out)")
        print("demo OK")
    }
}

struct DemoResult: Sendable {
    var setupTimes: [Duration]
    var bytes: Int
    var transferTime: Duration
}

func freePort() throws -> UInt16 {
    let probe = try Socket.listener(on: .loopback())
    defer { probe.close() }
    return try probe.localAddress().port
}

/// The demo's exposed service: the first byte picks echo ('E') or sink ('S': count and checksum
/// everything until end-of-file, then answer with "<count> <fnv1a>").
final class DemoService: Sendable {
    let address: SocketAddress
    private let listener: Socket
    private let task: Task<Void, Never>

    init() throws {
        let listener = try Socket.listener(on: .loopback())
        self.listener = listener
        address = try listener.localAddress()
        task = Task.detached {
            await withDiscardingTaskGroup { group in
                // Accepting ends when the demo closes the listener (or cancels the task).
                while let (connection, _) = try? await listener.accept(until: nil) {
                    group.addTask { await DemoService.serve(connection) }
                }
            }
        }
    }

    deinit { task.cancel(); listener.close() }

    static func serve(_ socket: Socket) async {
        defer { socket.close() }
        guard let mode = try? await socket.readExactly(1, until: .now + .seconds(30)) else { return }
        var count = 0
        var hash: UInt64 = 0xcbf29ce484222325
        while let chunk = try? await socket.readSome(maxLength: 1 << 18, until: .now + .seconds(30)), !chunk.isEmpty {
            if mode == [UInt8(ascii: "E")] {
                guard (try? await socket.writeAll(chunk, until: .now + .seconds(30))) != nil else { return }
            } else {
                count += chunk.count
                for byte in chunk { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
            }
        }
        if mode == [UInt8(ascii: "S")] {
            try? await socket.writeAll(Array("\(count) \(hash)".utf8), until: .now + .seconds(30))
        }
    }
}

enum DemoTraffic {
    static func run(to target: SocketAddress, mebibytes: Int, connections: Int) async throws -> DemoResult {
        // The listen forward may take a moment to bind.
        for _ in 0..<200 {
            if let probe = try? await Socket.connect(to: target, timeout: .seconds(1)) { probe.close(); break }
            try await Task.sleep(for: .milliseconds(10))
        }
        var times: [Duration] = []
        for _ in 0..<connections {
            let start = ContinuousClock.now
            let socket = try await Socket.connect(to: target, timeout: .seconds(5))
            try await socket.writeAll(Array("Ex".utf8), until: .now + .seconds(30))
            let echoed = try await socket.readExactly(1, until: .now + .seconds(30))
            guard echoed == [UInt8(ascii: "x")] else { throw FailureExit.message("demo: echo returned \(echoed)", code: 1) }
            times.append(ContinuousClock.now - start)
            socket.close()
        }
        let total = mebibytes << 20
        var block = [UInt8](repeating: 0, count: 1 << 20)
        var state: UInt64 = 42
        for i in block.indices {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            block[i] = UInt8(truncatingIfNeeded: state >> 33)
        }
        var hash: UInt64 = 0xcbf29ce484222325
        for _ in 0..<mebibytes { for byte in block { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 } }
        let socket = try await Socket.connect(to: target, timeout: .seconds(5))
        defer { socket.close() }
        let start = ContinuousClock.now
        try await socket.writeAll([UInt8(ascii: "S")], until: .now + .seconds(30))
        for _ in 0..<mebibytes { try await socket.writeAll(block, until: .now + .seconds(60)) }
        socket.shutdownWrite()
        var answer: [UInt8] = []
        while true {
            let chunk = try await socket.readSome(until: .now + .seconds(60))
            if chunk.isEmpty { break }
            answer += chunk
        }
        let elapsed = ContinuousClock.now - start
        let expected = "\(total) \(hash)"
        guard String(decoding: answer, as: UTF8.self) == expected else {
            throw FailureExit.message("demo: the service received '\(String(decoding: answer, as: UTF8.self))', expected '\(expected)'", code: 1)
        }
        return DemoResult(setupTimes: times, bytes: total, transferTime: elapsed)
    }
}
