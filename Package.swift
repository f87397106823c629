// swift-tools-version:6.0
import PackageDescription

// Linux only: the socket layer is built on epoll, splice(2) and Glibc. A kqueue poller beside the
// epoll one (`DescriptorPoller`, `ReadinessGroup`) is where another platform would start.
// Modules follow the data path: config → supervisor → signaling → punch → secure channel → relay.
// StunturnAdmin is the control path beside them: the agent's admin socket and `status`; StunturnMetrics
// the Prometheus endpoint.
// Only StunturnSockets imports Glibc (and stunturn-bench, the benchmarks' load generator).
let package = Package(
    name: "stunturn",
    products: [
        .executable(name: "stunturn-agent", targets: ["stunturn-agent"]),
        .library(name: "Stunturn", targets: ["Stunturn"]),
        // The decoders of outside bytes on their own: the fuzz targets (Fuzz/Package.swift) use them.
        .library(name: "StunturnConfig", targets: ["StunturnConfig"]),
        .library(name: "StunturnSignaling", targets: ["StunturnSignaling"]),
        .library(name: "StunturnSecure", targets: ["StunturnSecure"]),
        .library(name: "StunturnMux", targets: ["StunturnMux"]),
        .library(name: "StunturnAdmin", targets: ["StunturnAdmin"]),
        .library(name: "StunturnServer", targets: ["StunturnServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // Pinned to one minor version: the record layer's fast path uses the BoringSSL that
        // swift-crypto builds (CCryptoBoringSSL), which is not public API; a test checks it against
        // the public AES.GCM on every record.
        .package(url: "https://github.com/apple/swift-crypto", .upToNextMinor(from: "3.12.3")),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .target(name: "CStunturnSystem"),
        .target(name: "StunturnSockets", dependencies: ["CStunturnSystem"]),
        .target(name: "StunturnConfig", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(name: "StunturnSignaling", dependencies: ["StunturnSockets", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "StunturnServer", dependencies: [
            "StunturnSignaling", "StunturnSockets", "StunturnRelay",
            .product(name: "Logging", package: "swift-log"), .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "StunturnPunch", dependencies: ["StunturnSockets"]),
        .target(name: "StunturnSecure", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "StunturnMux"),
        .target(name: "StunturnRelay", dependencies: ["StunturnSockets", "StunturnMux"]),
        .target(name: "StunturnAdmin", dependencies: ["StunturnSockets", .product(name: "Logging", package: "swift-log")]),
        .target(name: "StunturnMetrics", dependencies: [
            "StunturnSockets",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .target(name: "StunturnSupervisor", dependencies: [
            "Stunturn", "StunturnConfig", "StunturnServer", "StunturnSignaling", "StunturnPunch", "StunturnSecure", "StunturnRelay", "StunturnSockets",
            "StunturnMux", "StunturnAdmin", "StunturnMetrics",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),
        .target(name: "Stunturn", dependencies: ["StunturnSockets", "StunturnSignaling", "StunturnPunch", "StunturnSecure", "StunturnMux", "StunturnRelay"]),
        .executableTarget(name: "stunturn-agent", dependencies: [
            "StunturnSupervisor", "StunturnConfig", "StunturnServer", "StunturnSignaling", "StunturnSecure", "StunturnSockets",
            "StunturnAdmin", "StunturnMetrics",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "stunturn-bench", dependencies: [
            "CStunturnSystem", "StunturnSecure",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "punch-exchange", dependencies: ["Stunturn"], path: "examples/punch-exchange"),
        .executableTarget(name: "session-echo", dependencies: ["Stunturn"], path: "examples/session-echo"),

        .target(name: "StunturnTestSupport", dependencies: ["StunturnServer", "StunturnSockets"], path: "Tests/StunturnTestSupport"),
        .testTarget(name: "StunturnSocketsTests", dependencies: ["StunturnSockets", "StunturnTestSupport"]),
        .testTarget(name: "StunturnSignalingTests", dependencies: ["StunturnSignaling", "StunturnServer", "StunturnSockets"]),
        .testTarget(name: "StunturnServerTests", dependencies: ["StunturnServer", "StunturnSignaling", "StunturnSockets", "StunturnTestSupport"]),
        .testTarget(name: "StunturnPunchTests", dependencies: ["Stunturn", "StunturnServer", "StunturnSockets", "StunturnTestSupport"]),
        .testTarget(name: "StunturnConfigTests", dependencies: ["StunturnConfig"]),
        .testTarget(name: "StunturnSecureTests", dependencies: ["StunturnSecure"]),
        .testTarget(name: "StunturnMuxTests", dependencies: ["StunturnMux"]),
        .testTarget(name: "StunturnRelayTests", dependencies: ["StunturnRelay", "StunturnMux", "StunturnSockets", "StunturnTestSupport"]),
        .testTarget(name: "StunturnSupervisorTests", dependencies: [
            "StunturnSupervisor", "StunturnConfig", "StunturnSecure", "StunturnSockets", "StunturnTestSupport", "StunturnAdmin", "StunturnRelay",
        ]),
        .testTarget(name: "StunturnAdminTests", dependencies: [
            "StunturnAdmin", "StunturnSockets", "StunturnTestSupport", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "StunturnMetricsTests", dependencies: [
            "StunturnMetrics", "StunturnSupervisor", "Stunturn", "StunturnServer", "StunturnRelay", "StunturnSockets", "StunturnTestSupport",
            .product(name: "Logging", package: "swift-log"), .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .testTarget(name: "AgentTests", dependencies: ["Stunturn", "StunturnSockets", "StunturnTestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "NATLabTests"),
    ],
    swiftLanguageModes: [.v6]
)
