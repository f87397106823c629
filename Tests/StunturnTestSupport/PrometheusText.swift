/// One sample line of the text format, its labels parsed.
public struct PrometheusSample: Equatable, Sendable, CustomStringConvertible {
    public var name: String
    public var labels: [String: String]
    public var value: Double

    public var description: String { "\(name)\(labels.sorted { $0.key < $1.key }) \(value)" }
}

/// Prometheus' text format read back, for tests: the `# TYPE` and `# HELP` of each family, and every sample.
public struct PrometheusText: Sendable {
    public var types: [String: String] = [:]
    public var help: [String: String] = [:]
    public var samples: [PrometheusSample] = []
    /// Lines that are not comments or samples, and families typed twice.
    public var problems: [String] = []

    public init(_ text: String) {
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1).map(String.init)
                if types[parts[0]] != nil { problems.append("two TYPE lines for \(parts[0])") }
                types[parts[0]] = parts.count > 1 ? parts[1] : ""
            } else if line.hasPrefix("# HELP ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1).map(String.init)
                help[parts[0]] = parts.count > 1 ? parts[1] : ""
            } else if line.hasPrefix("#") {
                continue
            } else if let sample = Self.sample(line) {
                samples.append(sample)
            } else {
                problems.append("not a sample: \(line)")
            }
        }
    }

    /// `name{a="x",b="y"} value`; label values here never hold quotes or commas.
    static func sample(_ line: String) -> PrometheusSample? {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { return nil }
        let series = line[..<space]
        guard let brace = series.firstIndex(of: "{") else { return PrometheusSample(name: String(series), labels: [:], value: value) }
        guard series.hasSuffix("}") else { return nil }
        var labels: [String: String] = [:]
        for pair in series[series.index(after: brace)..<series.index(before: series.endIndex)].split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[1].hasPrefix("\""), parts[1].hasSuffix("\"") else { return nil }
            labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
        }
        return PrometheusSample(name: String(series[..<brace]), labels: labels, value: value)
    }

    /// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` are its own.
    public func family(of sample: PrometheusSample) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where sample.name.hasSuffix(suffix) {
            let base = String(sample.name.dropLast(suffix.count))
            if types[base] == "histogram" { return base }
        }
        return sample.name
    }

    /// The value of the sample with exactly these labels.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }
}

