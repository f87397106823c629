import FuzzSupport
import StunturnConfig

// The agent's YAML config, through parsing and validation. Relative key and token files are
// looked up beside a config in a folder that does not exist.

@_cdecl("LLVMFuzzerTestOneInput")
func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let config = try AgentConfig.parse(yaml: text, source: "/nonexistent/stunturn-fuzz/config.yaml")
        _ = config.warnings
    } catch {
        _ = error.description
    }
    return 0
}

runFuzzer(fuzz)
