import CCPUID

/// The vector instructions of the CPU this process runs on (CPUID, and
/// XGETBV for whether the operating system saves their registers).
public struct CPUFeatures: Sendable, Equatable {
    public let bits: UInt32

    public init(bits: UInt32) { self.bits = bits }

    /// This CPU's features, read once.
    public static let current = CPUFeatures(bits: UInt32(chorus_cpu_features()))

    /// Each feature's bit and its name as Linux's /proc/cpuinfo spells it.
    public static let known: [(bit: UInt32, name: String)] = [
        (UInt32(CHORUS_CPU_AVX2), "avx2"), (UInt32(CHORUS_CPU_FMA), "fma"),
        (UInt32(CHORUS_CPU_F16C), "f16c"), (UInt32(CHORUS_CPU_BMI2), "bmi2"), (UInt32(CHORUS_CPU_AVX512F), "avx512f"),
        (UInt32(CHORUS_CPU_AVX512DQ), "avx512dq"), (UInt32(CHORUS_CPU_AVX512CD), "avx512cd"),
        (UInt32(CHORUS_CPU_AVX512BW), "avx512bw"), (UInt32(CHORUS_CPU_AVX512VL), "avx512vl"),
        (UInt32(CHORUS_CPU_AVX512VNNI), "avx512_vnni"), (UInt32(CHORUS_CPU_AVXVNNI), "avx_vnni"),
    ]

    public var isX86: Bool { bits & UInt32(CHORUS_CPU_X86_64) != 0 }

    public func has(_ name: String) -> Bool {
        Self.known.first { $0.name == name }.map { bits & $0.bit != 0 } ?? false
    }

    /// The features it has, by name, in `known`'s order.
    public var names: [String] { Self.known.filter { bits & $0.bit != 0 }.map(\.name) }
}

/// The ways the kernels can multiply bytes, fastest first: AVX-512 VNNI
/// (512-bit `vpdpbusd`), AVX-VNNI (256-bit `vpdpbusd`), AVX2 (`vpmaddubsw`
/// and `vpmaddwd`), and plain Swift that any CPU runs. Every path gives the
/// same results.
public enum KernelPath: String, CaseIterable, Sendable, Comparable {
    case portable
    case avx2
    case avxVNNI = "avx-vnni"
    case avx512VNNI = "avx512-vnni"

    /// The CPU features the path needs.
    public var requires: [String] {
        switch self {
        case .portable: return []
        case .avx2: return ["avx2", "fma", "f16c", "bmi2"]
        case .avxVNNI: return ["avx2", "fma", "f16c", "bmi2", "avx_vnni"]
        case .avx512VNNI: return ["avx2", "fma", "f16c", "bmi2", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512_vnni"]
        }
    }

    public func runs(on cpu: CPUFeatures) -> Bool { requires.allSatisfy(cpu.has) }

    /// The fastest path `cpu` runs.
    public static func best(for cpu: CPUFeatures) -> KernelPath {
        allCases.reversed().first { $0.runs(on: cpu) } ?? .portable
    }

    private var order: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: KernelPath, b: KernelPath) -> Bool { a.order < b.order }
}
