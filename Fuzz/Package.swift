// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for every decoder of outside bytes. A package of its own, so that `swift build`
// and `swift test` of the main package never see them: they link only with libFuzzer, which
// `-sanitize=fuzzer` brings. Build and run them with scripts/fuzz.sh; docs/FUZZING.md says more.
let package = Package(
    name: "stunturn-fuzz",
    dependencies: [
        .package(name: "stunturn", path: ".."),
    ],
    targets: [
        .target(name: "CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer", .product(name: "StunturnSecure", package: "stunturn")]),
        .executableTarget(name: "fuzz-stun", dependencies: [
            "FuzzSupport", .product(name: "StunturnSignaling", package: "stunturn"), .product(name: "StunturnServer", package: "stunturn"),
        ]),
        .executableTarget(name: "fuzz-signaling", dependencies: ["FuzzSupport", .product(name: "StunturnSignaling", package: "stunturn")]),
        .executableTarget(name: "fuzz-config", dependencies: ["FuzzSupport", .product(name: "StunturnConfig", package: "stunturn")]),
        .executableTarget(name: "fuzz-records", dependencies: ["FuzzSupport", .product(name: "StunturnSecure", package: "stunturn")]),
        .executableTarget(name: "fuzz-datagrams", dependencies: ["FuzzSupport", .product(name: "StunturnSecure", package: "stunturn")]),
        .executableTarget(name: "fuzz-mux", dependencies: ["FuzzSupport", .product(name: "StunturnMux", package: "stunturn")]),
        .executableTarget(name: "fuzz-admin", dependencies: ["FuzzSupport", .product(name: "StunturnAdmin", package: "stunturn")]),
    ],
    swiftLanguageModes: [.v6]
)
