import CLibFuzzer
import Foundation

/// The signature libFuzzer calls for each input.
public typealias FuzzTarget = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// Runs libFuzzer with the command line's arguments and exits with its status. With
/// `STUNTURN_FUZZ_WRITE_SEEDS=DIR` in the environment it writes `seeds` to DIR (seed-1, seed-2,
/// ...) instead, so the seed corpora that need keys or encoders are made by the code they feed.
public func runFuzzer(seeds: @autoclosure () -> [[UInt8]] = [], _ target: FuzzTarget) -> Never {
    if let directory = ProcessInfo.processInfo.environment["STUNTURN_FUZZ_WRITE_SEEDS"] {
        writeSeeds(seeds(), to: directory)
        exit(0)
    }
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, target))
}

private func writeSeeds(_ seeds: [[UInt8]], to directory: String) {
    do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (index, seed) in seeds.enumerated() {
            try Data(seed).write(to: URL(fileURLWithPath: directory).appendingPathComponent("seed-\(index + 1)"))
        }
    } catch {
        FileHandle.standardError.write(Data("writing seeds to \(directory): \(error)\n".utf8))
        exit(1)
    }
}

/// The input libFuzzer passes (a null pointer when it is empty) as bytes.
public func inputBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}
