// swift-tools-version:6.1
import PackageDescription

// One build runs on any CPU of its architecture: the modules are compiled
// for the baseline instruction set, except the kernels, whose source
// (Shared/KernelCode) is compiled once per x86-64 instruction set into a
// module of its own, each with its own target CPU; Inference picks the best
// one the CPU has at start (KernelSelection). ByteDot names the x86
// intrinsics (-parse-stdlib, which makes a module slower, so it holds them
// alone and they are emitted into the kernel modules that call them).
func kernels(_ isa: String, _ target: [String]) -> [SwiftSetting] {
    [
        .unsafeFlags(["-D", "CHORUS_KERNELS_\(isa)"] + target),
        .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
    ]
}
#if arch(x86_64)
let kernelModules: [(name: String, settings: [SwiftSetting])] = [
    ("KernelsPortable", kernels("PORTABLE", [])),
    ("KernelsAVX2", kernels("AVX2", ["-target-cpu", "haswell"])),
    ("KernelsAVXVNNI", kernels("AVXVNNI", ["-target-cpu", "haswell", "-Xcc", "-mavxvnni"])),
    ("KernelsAVX512VNNI", kernels("AVX512VNNI", ["-target-cpu", "skylake-avx512", "-Xcc", "-mavx512vnni"])),
]
#else
let kernelModules: [(name: String, settings: [SwiftSetting])] = [("KernelsPortable", kernels("PORTABLE", []))]
#endif
let fastMath: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))
]
// The message path (every message crosses it several times): no run-time
// exclusivity checks on its class properties in release builds.
let messagePath: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))
]

let package = Package(
    name: "Chorus",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Inference", targets: ["Inference"]),
        .library(name: "Kernels", targets: ["Kernels"]),
        .library(name: "Bus", targets: ["Bus"]),
        .library(name: "Protocol", targets: ["Protocol"]),
        .executable(name: "chorus", targets: ["chorus"]),
        .executable(name: "chorus-broker", targets: ["chorus-broker"]),
        .executable(name: "chorus-generator", targets: ["chorus-generator"]),
        .executable(name: "chorus-verifier", targets: ["chorus-verifier"]),
        .executable(name: "chorus-refiner", targets: ["chorus-refiner"]),
        .executable(name: "chorus-critic", targets: ["chorus-critic"]),
        .executable(name: "chorus-echo", targets: ["chorus-echo"]),
        .executable(name: "chorus-kvindex", targets: ["chorus-kvindex"]),
        .executable(name: "chorus-memory", targets: ["chorus-memory"]),
        .executable(name: "chorus-gateway", targets: ["chorus-gateway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        // Hummingbird's own dependencies, named because the services import them
        // (at the versions Hummingbird resolves to).
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-http-types", exact: "1.8.0"),
    ],
    targets: [
        .target(name: "SIMDSupport", path: "Shared/SIMDSupport", swiftSettings: fastMath),
        .target(name: "ByteDot", path: "Shared/ByteDot", swiftSettings: [.unsafeFlags(["-parse-stdlib"])]),
        .target(name: "Kernels", dependencies: ["CCPUID", "SIMDSupport"], path: "Shared/Kernels", swiftSettings: fastMath),
        .target(name: "KernelDispatch", dependencies: ["Kernels"] + kernelModules.map { .target(name: $0.name) }, path: "Shared/KernelDispatch"),
        .target(
            name: "Inference",
            dependencies: ["KernelDispatch", "Kernels", "SIMDSupport"],
            path: "Shared/Inference",
            swiftSettings: fastMath
        ),
        .systemLibrary(
            name: "CZeroMQ",
            path: "Shared/CZeroMQ",
            providers: [.apt(["libzmq3-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            path: "Shared/CSQLite",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(name: "Bus", dependencies: ["CZeroMQ"], path: "Shared/Bus", swiftSettings: messagePath),
        .target(name: "Protocol", path: "Shared/Protocol", swiftSettings: messagePath),
        .target(name: "Pipeline", dependencies: ["Protocol"], path: "Shared/Pipeline"),
        .target(name: "Storage", dependencies: ["CSQLite"], path: "Shared/Storage"),
        .target(name: "Journal", dependencies: ["Protocol", "Storage"], path: "Shared/Journal"),
        .target(name: "Harvest", dependencies: ["Pipeline", "Protocol"], path: "Shared/Harvest"),
        .target(name: "JobEngine", dependencies: ["Journal", "Pipeline", "Protocol", "ServiceKit"], path: "Shared/JobEngine"),
        .target(name: "ServiceKit", dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")], path: "Shared/ServiceKit"),
        .target(name: "CPrefetch", path: "Shared/CPrefetch"),
        .target(name: "CCPUID", path: "Shared/CCPUID"),
        .target(name: "Index", dependencies: ["CPrefetch", "KernelDispatch", "SIMDSupport", "Storage"], path: "Shared/Index", swiftSettings: fastMath),
        .target(name: "Memory", dependencies: ["Pipeline", "Protocol", "ServiceKit", "Storage"], path: "Shared/Memory"),
        .executableTarget(
            name: "chorus-memory",
            dependencies: ["Memory", "Client", "Protocol", "RoleWorker", "ServiceKit",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Services/memory"
        ),
        .executableTarget(
            name: "chorus-kvindex",
            dependencies: ["Index", "Inference", "Protocol", "ServiceKit", "RoleWorker",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Services/kvindex",
            swiftSettings: fastMath
        ),
        .target(name: "Client", dependencies: ["Bus", "Protocol", "ServiceKit"], path: "Shared/Client"),
        .target(name: "OpenAI", dependencies: ["Pipeline", "Protocol"], path: "Shared/OpenAI"),
        .target(
            name: "GatewayApp",
            dependencies: ["Client", "OpenAI", "Protocol", "ServiceKit",
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "HTTPTypes", package: "swift-http-types"),
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "NIOCore", package: "swift-nio")],
            path: "Shared/GatewayApp"
        ),
        .executableTarget(
            name: "chorus-gateway",
            dependencies: ["Client", "GatewayApp", "Protocol", "ServiceKit",
                           .product(name: "ArgumentParser", package: "swift-argument-parser"),
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Services/gateway",
            resources: [.copy("web")]
        ),
        .target(
            name: "BrokerCore",
            dependencies: ["Bus", "JobEngine", "Journal", "Protocol", "ServiceKit",
                           .product(name: "Metrics", package: "swift-metrics"),
                           .product(name: "CoreMetrics", package: "swift-metrics"),
                           .product(name: "Prometheus", package: "swift-prometheus"),
                           .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "Logging", package: "swift-log")],
            path: "Shared/BrokerCore",
            swiftSettings: messagePath
        ),
        .executableTarget(
            name: "chorus-broker",
            dependencies: ["BrokerCore", "Protocol", "ServiceKit",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Services/broker"
        ),
        .target(
            name: "RoleWorker",
            dependencies: ["Bus", "Protocol", "Inference", "ServiceKit",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Shared/RoleWorker",
            swiftSettings: messagePath
        ),
        .executableTarget(name: "chorus-generator", dependencies: ["RoleWorker"], path: "Services/generator"),
        .executableTarget(name: "chorus-verifier", dependencies: ["RoleWorker"], path: "Services/verifier"),
        .executableTarget(name: "chorus-refiner", dependencies: ["RoleWorker"], path: "Services/refiner"),
        .executableTarget(name: "chorus-critic", dependencies: ["RoleWorker"], path: "Services/critic"),
        .executableTarget(name: "chorus-echo", dependencies: ["RoleWorker"], path: "Services/echo"),
        .executableTarget(
            name: "chorus",
            dependencies: [
                "Inference", "Bus", "Client", "Harvest", "Journal", "Protocol", "Pipeline", "ServiceKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Services/chorus",
            swiftSettings: fastMath
        ),
        // What every test target shares: running programs with deadlines,
        // ports, model paths, fake stage results, JSON reading.
        .target(name: "TestKit", dependencies: ["Protocol"], path: "Tests/TestKit"),
        .testTarget(name: "TestKitTests", dependencies: ["TestKit", "Protocol"], path: "Tests/TestKitTests"),
        .testTarget(
            name: "InferenceTests",
            dependencies: ["TestKit", "Inference", "Kernels", "SIMDSupport"],
            path: "Tests/InferenceTests",
            exclude: ["Fixtures"],
            swiftSettings: fastMath
        ),
        .testTarget(
            name: "ProtocolTests",
            dependencies: ["TestKit", "Protocol", "Pipeline", "Journal", "Storage"],
            path: "Tests/ProtocolTests"
        ),
        .testTarget(
            name: "SystemTests",
            dependencies: ["TestKit", "Bus", "Client", "Protocol", "Journal", "ServiceKit", "Inference"],
            path: "Tests/SystemTests"
        ),
        .testTarget(
            name: "JobEngineTests",
            dependencies: ["TestKit", "Harvest", "JobEngine", "Journal", "Pipeline", "Protocol", "Storage"],
            path: "Tests/JobEngineTests"
        ),
        .testTarget(
            name: "RoleWorkerTests",
            dependencies: ["RoleWorker", "Protocol", "Inference"],
            path: "Tests/RoleWorkerTests"
        ),
        .testTarget(
            name: "OpenAITests",
            dependencies: ["OpenAI", "Pipeline", "Protocol"],
            path: "Tests/OpenAITests"
        ),
        .testTarget(
            name: "ServiceKitTests",
            dependencies: ["ServiceKit"],
            path: "Tests/ServiceKitTests"
        ),
        .testTarget(
            name: "BusTests",
            dependencies: ["TestKit", "Bus", "CZeroMQ"],
            path: "Tests/BusTests"
        ),
        .testTarget(
            name: "BrokerCoreTests",
            dependencies: ["BrokerCore", "Bus", "Protocol"],
            path: "Tests/BrokerCoreTests"
        ),
        .testTarget(
            name: "MemoryTests",
            dependencies: ["Memory", "Index", "Inference", "Protocol", "Storage", "TestKit"],
            path: "Tests/MemoryTests",
            swiftSettings: fastMath
        ),
    ] + kernelModules.map {
        .target(name: $0.name, dependencies: ["ByteDot", "Kernels", "SIMDSupport"], path: "Shared/\($0.name)", swiftSettings: $0.settings)
    }
)
