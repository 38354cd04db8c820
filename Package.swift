// swift-tools-version:6.1
import Foundation
import PackageDescription

// Release builds are tuned for the machine that builds them (AVX-512 where the
// CPU has it). Set CHORUS_PORTABLE=1 to build binaries that run on any x86-64.
let portable = ProcessInfo.processInfo.environment["CHORUS_PORTABLE"] == "1"
let cpuFlags = portable ? [] : ["-target-cpu", "native"]
let fastMath: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"] + cpuFlags, .when(configuration: .release))
]

let package = Package(
    name: "Chorus",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Inference", targets: ["Inference"]),
        .executable(name: "chorus", targets: ["chorus"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
    ],
    targets: [
        .target(
            name: "Inference",
            path: "Shared/Inference",
            swiftSettings: fastMath
        ),
        .executableTarget(
            name: "chorus",
            dependencies: [
                "Inference",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Services/chorus",
            swiftSettings: fastMath
        ),
        .testTarget(
            name: "InferenceTests",
            dependencies: ["Inference"],
            path: "Tests/InferenceTests",
            exclude: ["Fixtures"],
            swiftSettings: fastMath
        ),
    ]
)
