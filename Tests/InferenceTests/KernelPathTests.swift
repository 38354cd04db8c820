import Foundation
import Inference
import Testing

@Suite("CPU features and kernel paths")
struct KernelPathTests {
    @Test("CPUID agrees with the kernel's view in /proc/cpuinfo")
    func featuresMatchCPUInfo() throws {
        let cpu = CPUFeatures.current
        #if arch(x86_64)
        #expect(cpu.isX86)
        #endif
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
        let flags = Set(flagsLine.split(separator: ":").last!.split(separator: " ").map(String.init))
        for (_, name) in CPUFeatures.known {
            #expect(cpu.has(name) == flags.contains(name), "\(name): CPUID says \(cpu.has(name)), /proc/cpuinfo says \(flags.contains(name))")
        }
    }

    @Test("the best path is the fastest one every needed feature allows")
    func bestPath() {
        func features(_ names: [String]) -> CPUFeatures {
            CPUFeatures(bits: names.reduce(1) { bits, name in bits | CPUFeatures.known.first { $0.name == name }!.bit })
        }
        #expect(KernelPath.best(for: features([])) == .portable)
        #expect(KernelPath.best(for: features(["avx2", "fma"])) == .portable, "AVX2 without F16C is not enough")
        #expect(KernelPath.best(for: features(["avx2", "fma", "f16c"])) == .avx2)
        #expect(KernelPath.best(for: features(["avx2", "fma", "f16c", "avx_vnni"])) == .avxVNNI)
        #expect(KernelPath.best(for: features(["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"])) == .avx512VNNI)
        #expect(KernelPath.best(for: features(["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"])) == .avx2,
                "AVX-512 without VNNI takes the AVX2 path")
        #expect(KernelPath.portable < .avx2 && .avx2 < .avxVNNI && .avxVNNI < .avx512VNNI)
        // Whatever CPU runs the tests can run this build.
        #expect(KernelPath.unsupported() == nil)
        #expect(KernelPath.built.runs(on: .current))
    }

    @Test("a build refuses, with the reason, a CPU that lacks what it was compiled for")
    func unsupportedCPU() {
        let bare = CPUFeatures(bits: 1)  // x86-64 with no vector extension
        if KernelPath.buildRequires.isEmpty {
            #expect(KernelPath.unsupported(on: bare) == nil, "a portable build runs anywhere")
        } else {
            let reason = KernelPath.unsupported(on: bare)
            #expect(reason?.contains(KernelPath.buildRequires[0]) == true)
            #expect(reason?.contains("CHORUS_PORTABLE=1") == true)
        }
        #expect(KernelPath.unsupported(on: CPUFeatures(bits: 0)) == nil, "not an x86 CPU: nothing to check")
    }
}
