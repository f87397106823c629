import ArgumentParser
import Glibc

@main
struct StunturnBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stunturn-bench",
        abstract: "Load generators for stunturn's benchmarks (scripts/bench.sh runs them).",
        subcommands: [Signaling.self, Records.self]
    )
}

struct Signaling: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive a signaling server with many clients and print the figures as one JSON object.",
        discussion: """
        waiting: --count initiators connect and wait; then as many receivers arrive, --window at a \
        time, each pairing with its initiator. Reports the server's RSS with every initiator \
        waiting (with --server-pid) and pairings per second.

        together: --count pairs, --window in flight; each pair's initiator and receiver connect \
        at the same moment; a receiver that overtakes its initiator is told so and asks again.

        Both speak the original protocol, so the Go original can be measured the same way.
        """
    )

    enum Mode: String, ExpressibleByArgument { case waiting, together }

    @Option(help: "The server, IPv4 HOST:PORT.") var server: String
    @Option(help: "waiting or together.") var mode: Mode
    @Option(help: "Initiators (waiting) or pairs (together).") var count = 10_000
    @Option(help: "Clients (waiting) or pairs (together) in flight at once.") var window = 256
    @Option(name: .customLong("server-pid"), help: "Read this process's RSS and CPU time from /proc.") var serverPID: Int32?
    @Option(help: "Seconds to let the server read every hello before receivers arrive (waiting).") var settle = 1.5
    @Option(help: "Give up after this many seconds.") var timeout = 120.0

    func validate() throws {
        let parts = server.split(separator: ":")
        guard parts.count == 2, UInt16(parts[1]) != nil else { throw ValidationError("--server must be IPv4 HOST:PORT, got \(server)") }
        guard count > 0, window > 0 else { throw ValidationError("--count and --window must be positive") }
    }

    func run() throws {
        let parts = server.split(separator: ":")
        let port = UInt16(parts[1])!
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let descriptors = Int(min(limit.rlim_cur, 1 << 20))
        let load = try SignalingLoad(host: String(parts[0]), port: port, maxDescriptors: descriptors)
        let deadline = monotonicSeconds() + timeout
        var figures: [(String, String)]
        switch mode {
        case .waiting: figures = try runWaiting(load, deadline: deadline)
        case .together: figures = try runTogether(load, deadline: deadline)
        }
        figures.append(("connect_failures", String(load.connectFailures)))
        var fields: [String] = []
        for (name, value) in figures { fields.append("\"" + name + "\": " + value) }
        print("{" + fields.joined(separator: ", ") + "}")
    }

    private func runWaiting(_ load: SignalingLoad, deadline: Double) throws -> [(String, String)] {
        var initiatorsDone = 0, initiatorsPaired = 0, receiversDone = 0, receiversPaired = 0
        var earlyClosed = 0
        var measuring = false
        let handle: (SignalingLoad.Role, Int, Bool, Bool) -> Void = { role, _, gotReply, isError in
            let ok: Bool = gotReply && !isError
            switch role {
            case .initiator:
                initiatorsDone += 1
                if ok { initiatorsPaired += 1 }
                if !measuring { earlyClosed += 1 }
            case .receiver:
                receiversDone += 1
                if ok { receiversPaired += 1 }
            }
        }
        // 1. Initiators connect, `window` at a time, and wait.
        var started = 0
        while started < count {
            let batchEnd = min(count, started + window)
            while started < batchEnd {
                load.start(.initiator, pair: started)
                started += 1
            }
            load.poll(timeoutMs: 0, finished: handle)
        }
        let settleEnd = monotonicSeconds() + settle
        while monotonicSeconds() < settleEnd { load.poll(timeoutMs: 50, finished: handle) }
        let rssWaiting: Int? = serverPID.flatMap { procStatus($0, "VmRSS") }

        // 2. Receivers arrive, `window` in flight, one per waiting initiator.
        measuring = true
        let (took, cpuShare) = timedPhase(load, deadline: deadline, finished: handle,
                                          done: { receiversDone == count && initiatorsDone == count },
                                          completed: { receiversDone }, start: { load.start(.receiver, pair: $0) })
        guard receiversDone == count else { throw SignalingLoad.Failure(description: "timed out: \(receiversDone) of \(count) receivers answered") }
        var out: [(String, String)] = [
            ("mode", "\"waiting\""), ("initiators", String(count)), ("window", String(window)),
            ("initiators_closed_early", String(earlyClosed)),
            ("paired", String(receiversPaired)), ("initiators_paired", String(initiatorsPaired)),
            ("seconds", format(took)), ("pairings_per_s", format(Double(receiversPaired) / took)),
        ]
        if let rssWaiting { out.append(("server_rss_waiting_kib", String(rssWaiting))) }
        if let cpuShare { out.append(("server_cpu_share", format(cpuShare))) }
        return out
    }

    private func runTogether(_ load: SignalingLoad, deadline: Double) throws -> [(String, String)] {
        // Per pair, bits: 1 initiator paired, 2 receiver paired, 4 initiator failed, 8 receiver failed.
        var state = [UInt8](repeating: 0, count: count)
        var retryCount = [UInt8](repeating: 0, count: count)
        var pairsDone = 0, pairsOK = 0, retries = 0, failures = 0
        let handle: (SignalingLoad.Role, Int, Bool, Bool) -> Void = { role, pair, gotReply, isError in
            let ok: Bool = gotReply && !isError
            switch role {
            case .initiator:
                state[pair] |= ok ? 1 : 4
            case .receiver:
                if ok {
                    state[pair] |= 2
                } else if retryCount[pair] < 50 && state[pair] & 4 == 0 {
                    // It overtook its initiator: ask again.
                    retryCount[pair] += 1
                    retries += 1
                    load.start(.receiver, pair: pair)
                    return
                } else {
                    state[pair] |= 8
                }
            }
            let s: UInt8 = state[pair]
            let initiatorDone: Bool = (s & 5) != 0
            let receiverDone: Bool = (s & 10) != 0
            if initiatorDone && receiverDone {
                pairsDone += 1
                if (s & 3) == 3 { pairsOK += 1 } else { failures += 1 }
            }
        }
        let (took, cpuShare) = timedPhase(load, deadline: deadline, finished: handle, done: { pairsDone == count },
                                          completed: { pairsDone }) { pair in
            load.start(.initiator, pair: pair)
            load.start(.receiver, pair: pair)
        }
        guard pairsDone == count else { throw SignalingLoad.Failure(description: "timed out: \(pairsDone) of \(count) pairs finished") }
        var out: [(String, String)] = [
            ("mode", "\"together\""), ("pairs", String(count)), ("window", String(window)),
            ("paired", String(pairsOK)), ("failed", String(failures)), ("receiver_retries", String(retries)),
            ("seconds", format(took)), ("pairings_per_s", format(Double(pairsOK) / took)),
        ]
        if let cpuShare { out.append(("server_cpu_share", format(cpuShare))) }
        return out
    }

    /// The measured phase of both modes: starts units 0..<count, `window` beyond the `completed`
    /// ones at a time, until `done` or the deadline. Returns the seconds taken and the server's
    /// share of one core meanwhile (with --server-pid).
    private func timedPhase(_ load: SignalingLoad, deadline: Double, finished: (SignalingLoad.Role, Int, Bool, Bool) -> Void,
                            done: () -> Bool, completed: () -> Int, start: (Int) -> Void) -> (Double, Double?) {
        let cpu0: Double? = serverPID.flatMap(cpuSeconds)
        let t0 = monotonicSeconds()
        var next = 0
        while !done() && monotonicSeconds() < deadline {
            while next < count && next - completed() < window {
                start(next)
                next += 1
            }
            load.poll(timeoutMs: 20, finished: finished)
        }
        let took = monotonicSeconds() - t0
        guard let pid = serverPID, let cpu0, let cpu1 = cpuSeconds(pid) else { return (took, nil) }
        return (took, (cpu1 - cpu0) / took)
    }
}

func format(_ x: Double) -> String {
    String((x * 1000).rounded() / 1000)
}

/// A field of /proc/PID/status in KiB, such as VmRSS.
private func procStatus(_ pid: Int32, _ field: String) -> Int? {
    guard let text = readProcFile("/proc/\(pid)/status") else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        return words.count > 1 ? Int(words[1]) : nil
    }
    return nil
}

/// User plus system CPU seconds of a process, from /proc/PID/stat.
private func cpuSeconds(_ pid: Int32) -> Double? {
    guard let text = readProcFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command come state (field 3), ..., utime (14) and stime (15): indices 11 and 12 here.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

private func readProcFile(_ path: String) -> String? {
    let fd = Glibc.open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { Glibc.close(fd) }
    var bytes = [UInt8](repeating: 0, count: 8192)
    let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return nil }
    return String(decoding: bytes[0..<n], as: UTF8.self)
}
