/// The status as an aligned table, for people; `--json` is for programs.
public enum StatusTable {
    private static let headings = ["FORWARD", "MODE", "STATE", "PATH", "PEER", "RTT", "UP", "STREAMS", "CONNECTIONS",
                                   "FAILED", "IN", "OUT", "LAST ERROR"]
    /// Numbers line up on the right.
    private static let rightAligned: Set<Int> = [5, 6, 7, 8, 9, 10, 11]

    /// One agent: a line naming it, then a row per forward.
    public static func render(_ agent: AgentStatus) -> String {
        let count = agent.forwards.count == 1 ? "1 forward" : "\(agent.forwards.count) forwards"
        let rows = agent.forwards.map(row)
        return "agent \(agent.pid) (\(agent.admin)), \(count):\n" + table([headings] + rows)
    }

    /// Several agents, a blank line apart.
    public static func render(_ agents: [AgentStatus]) -> String {
        agents.map(render).joined(separator: "\n\n")
    }

    static func row(_ forward: ForwardStatus) -> [String] {
        let path = forward.path == "direct" && !forward.candidate.isEmpty ? "direct (\(forward.candidate))" : forward.path
        var lastError = "-"
        if let error = forward.lastError {
            let oneLine = error.split(whereSeparator: \.isNewline).joined(separator: " ")
            lastError = oneLine + (forward.lastErrorAgeSeconds.map { " (\(duration(seconds: $0)) ago)" } ?? "")
        }
        return [
            forward.name, forward.mode, forward.state, path, forward.peer.isEmpty ? "-" : forward.peer,
            roundTrip(forward.rttMs), forward.uptimeSeconds.map { duration(seconds: $0) } ?? "-",
            "\(forward.streams)", "\(forward.connections)", "\(forward.failed)",
            bytes(forward.bytesIn), bytes(forward.bytesOut), lastError,
        ]
    }

    /// Columns two spaces apart, each as wide as its widest cell; the last is not padded.
    static func table(_ rows: [[String]]) -> String {
        guard let columns = rows.map(\.count).max() else { return "" }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        return rows.map { row in
            row.enumerated().map { index, cell in
                let padding = String(repeating: " ", count: widths[index] - cell.count)
                if rightAligned.contains(index) { return padding + cell }
                return index == row.count - 1 ? cell : cell + padding
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// `512B`, `1.5KiB`, `12MiB`: three significant figures at most.
    static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(count)B" }
        let rounded = value < 10 ? (value * 10).rounded() / 10 : value.rounded()
        let text = rounded == rounded.rounded() ? "\(Int(rounded))" : "\(rounded)"
        return text + units[unit]
    }

    /// `45s`, `2m05s`, `3h12m`, `2d04h`.
    static func duration(seconds: Int) -> String {
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        switch seconds {
        case ..<60: return "\(max(0, seconds))s"
        case ..<3600: return "\(seconds / 60)m\(two(seconds % 60))s"
        case ..<86_400: return "\(seconds / 3600)h\(two(seconds % 3600 / 60))m"
        default: return "\(seconds / 86_400)d\(two(seconds % 86_400 / 3600))h"
        }
    }

    /// `0.41ms` below 10 ms, `12ms` above; `-` when not known, or when the answer's number is no
    /// round trip (negative, or past what an Int holds).
    static func roundTrip(_ milliseconds: Double?) -> String {
        guard let milliseconds, milliseconds >= 0, let whole = Int(exactly: milliseconds.rounded()) else { return "-" }
        if milliseconds < 10 { return "\(twoDecimals(milliseconds))ms" }
        return "\(whole)ms"
    }

    /// `0.41`, `12.00`: a count that is not negative with two decimals; `-` for one that is not
    /// such a number.
    static func twoDecimals(_ value: Double) -> String {
        guard value >= 0, let hundredths = Int(exactly: (value * 100).rounded()) else { return "-" }
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    /// `text` followed by spaces up to `width` characters.
    static func padded(_ text: String, to width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }
}
