// swift-tools-version:6.0
import PackageDescription

// Modules follow the data path: config → supervisor → signaling → punch → secure channel → relay.
// Only StunturnSockets imports Glibc (and stunturn-bench, the benchmarks' load generator).
let package = Package(
    name: "stunturn",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "stunturn-agent", targets: ["stunturn-agent"]),
        .library(name: "Stunturn", targets: ["Stunturn"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .target(name: "CStunturnSystem"),
        .target(name: "StunturnSockets", dependencies: ["CStunturnSystem"]),
        .target(name: "StunturnConfig", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(name: "StunturnSignaling", dependencies: ["StunturnSockets", .product(name: "Crypto", package: "swift-crypto"), .product(name: "Logging", package: "swift-log")]),
        .target(name: "StunturnPunch", dependencies: ["StunturnSockets", "StunturnSignaling"]),
        .target(name: "StunturnSecure", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "StunturnRelay", dependencies: ["StunturnSockets", .product(name: "Logging", package: "swift-log")]),
        .target(name: "StunturnSupervisor", dependencies: [
            "StunturnConfig", "StunturnSignaling", "StunturnPunch", "StunturnSecure", "StunturnRelay", "StunturnSockets",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "Stunturn", dependencies: ["StunturnSockets", "StunturnSignaling", "StunturnPunch", "StunturnSecure"]),
        .executableTarget(name: "stunturn-agent", dependencies: [
            "StunturnSupervisor", "StunturnConfig", "StunturnSignaling", "StunturnSecure", "StunturnSockets",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "stunturn-bench", dependencies: [
            "CStunturnSystem", "StunturnSecure",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "punch-exchange", dependencies: ["Stunturn"], path: "examples/punch-exchange"),

        .testTarget(name: "StunturnSocketsTests", dependencies: ["StunturnSockets"]),
        .testTarget(name: "StunturnSignalingTests", dependencies: ["StunturnSignaling", "StunturnSockets"]),
        .testTarget(name: "StunturnPunchTests", dependencies: ["StunturnPunch", "StunturnSignaling", "StunturnSockets"]),
        .testTarget(name: "StunturnConfigTests", dependencies: ["StunturnConfig"]),
        .testTarget(name: "StunturnSecureTests", dependencies: ["StunturnSecure"]),
        .testTarget(name: "StunturnRelayTests", dependencies: ["StunturnRelay", "StunturnSockets"]),
        .testTarget(name: "AgentTests", dependencies: ["StunturnSockets", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "NATLabTests"),
    ],
    swiftLanguageModes: [.v5]
)
