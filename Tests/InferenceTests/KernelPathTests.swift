import Foundation
import Inference
import TestKit
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
        let avx2 = ["avx2", "fma", "f16c", "bmi2"], avx512 = avx2 + ["avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"]
        #expect(KernelPath.best(for: features([])) == .portable)
        #expect(KernelPath.best(for: features(["avx2", "fma", "bmi2"])) == .portable, "AVX2 without F16C is not enough")
        #expect(KernelPath.best(for: features(avx2)) == .avx2)
        #expect(KernelPath.best(for: features(avx2 + ["avx_vnni"])) == .avxVNNI)
        #expect(KernelPath.best(for: features(avx512 + ["avx512_vnni"])) == .avx512VNNI)
        #expect(KernelPath.best(for: features(avx512)) == .avx2, "AVX-512 without VNNI takes the AVX2 path")
        #expect(KernelPath.best(for: features(avx512 + ["avx512_vnni", "avx_vnni"])) == .avx512VNNI)
        #expect(KernelPath.portable < .avx2 && .avx2 < .avxVNNI && .avxVNNI < .avx512VNNI)
    }

    @Test("the build has every path of its architecture, and picks the best one this CPU runs unless told otherwise")
    func selection() throws {
        let compiled = KernelSelection.compiled.map(\.path)
        #if arch(x86_64)
        #expect(compiled == KernelPath.allCases)
        #else
        #expect(compiled == [.portable])
        #endif
        let cpu = CPUFeatures.current
        let available = KernelSelection.available(on: cpu).map(\.path)
        #expect(available.first == .portable && available.allSatisfy { $0.runs(on: cpu) })
        func chosen(_ value: String?, on cpu: CPUFeatures = .current) -> Result<KernelPath, KernelSelection.Problem> {
            KernelSelection.choose(cpu: cpu, environment: value.map { [KernelSelection.variable: $0] } ?? [:]).map(\.path)
        }
        #expect(try chosen(nil).get() == available.last)
        #expect(try chosen("auto").get() == available.last)
        #expect(try chosen(" Portable ").get() == .portable, "names are read without case or spaces")
        for path in available { #expect(try chosen(path.rawValue).get() == path) }
        // A bare x86-64: only the portable path; asking for more says what is missing.
        let bare = CPUFeatures(bits: 1)
        #expect(try chosen(nil, on: bare).get() == .portable)
        guard case let .failure(problem) = chosen("avx2", on: bare) else { Issue.record("avx2 chosen on a CPU without it"); return }
        #expect(problem.message.contains("lacks avx2, fma, f16c, bmi2") && problem.message.contains("it runs: portable"), "\(problem)")
        guard case let .failure(unknown) = chosen("sse9") else { Issue.record("an unknown path was accepted"); return }
        #expect(unknown.message.contains("not a kernel path") && unknown.message.contains("avx512-vnni"), "\(unknown)")
    }
}

@Suite("Kernel modules keep their code to themselves")
struct KernelSymbolTests {
    /// The linker keeps one copy of a weak function however many objects
    /// define it. A generic specialisation of the standard library emitted out
    /// of line by a kernel module (compiled for its instruction set) has the
    /// same name in every module, so one copy would serve them all: AVX-512
    /// code could then run on an AVX2 CPU. The kernel modules for an
    /// instruction set beyond the baseline must define no such function; their
    /// own functions, and the standard library's code specialised for or
    /// conforming to their types, carry their module's name in theirs.
    @Test("the AVX2, AVX-VNNI and AVX-512 VNNI kernel modules define no weak function another module could share")
    func noSharedWeakCode() throws {
        #if arch(x86_64)
        let build = Paths.binaries
        for module in ["KernelsAVX2", "KernelsAVXVNNI", "KernelsAVX512VNNI"] {
            let dir = build.appendingPathComponent("\(module).build")
            let objects = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".o") }
                .map { dir.appendingPathComponent($0).path }
            try #require(!objects.isEmpty, "no object files in \(dir.path): build with swift build -c release first")
            let dump = try Program.run("objdump", ["-t"] + objects)
            try #require(dump.status == 0, "objdump -t failed: \(dump.stderr)")
            let own = "\(module.utf8.count)\(module)"
            var foreign: [String] = []
            var weakFunctions = 0
            for line in dump.stdout.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                // "<address>  w    F .text<tab><size> [.hidden] <name>"
                guard fields.count >= 4, fields[1] == "w", fields[2] == "F", line.contains(".text") else { continue }
                weakFunctions += 1
                let name = String(fields.last!)
                if !(name.hasPrefix("$s") && name.contains(own)) { foreign.append(name) }
            }
            #expect(weakFunctions > 0, "\(module): no weak functions found at all; has objdump's format changed?")
            #expect(foreign.isEmpty, "\(module) defines functions another module may define too: \(foreign)")
        }
        #endif
    }
}

@Suite("Every kernel path generates the same tokens", .serialized)
struct KernelPathModelTests {
    /// The ids `chorus run` generates greedily with the kernels of `path`.
    func generated(_ model: String, path: KernelPath, prompt: String, tokens: Int) throws -> [Int32] {
        let out = try CLI.run(["run", "--model", model, "--prompt", prompt, "--temperature", "0", "--max-tokens", String(tokens),
                               "--threads", "2", "--json"], environment: [KernelSelection.variable: path.rawValue])
        try #require(out.status == 0, "\(path): \(out.stderr)")
        return try JSONRead.int32s(try #require(out.json, "not JSON: \(out.stdout)"), "ids")
    }

    // A prompt of 43 tokens or so: prompt processing takes tiles of 8, 2 and
    // 1 columns, then decoding one at a time.
    static let prompt = "Question: A farmer has 17 sheep and buys 5 more each week for 6 weeks. Then he sells half of them. "
        + "How many sheep does he have left? Answer step by step:"

    @Test("SmolLM2 (Q4_1), Gemma 3 (Q4_K, Q5_0, Q6_K, Q8_0) and Qwen2.5 (Q5_0, Q8_0, Q6_K): the same ids on every path this CPU runs",
          arguments: [Models.smolLM2, Models.gemma, Models.qwen05])
    func sameTokens(model: String) throws {
        let file = try Models.require(model)
        let paths = KernelSelection.available().map(\.path)
        let best = try generated(file, path: paths.last!, prompt: Self.prompt, tokens: 24)
        #expect(!best.isEmpty)
        for path in paths.dropLast() {
            #expect(try generated(file, path: path, prompt: Self.prompt, tokens: 24) == best, "\(path) against \(paths.last!)")
        }
    }

    @Test("CHORUS_KERNELS that cannot be followed stops a model from loading, saying why; chorus models and bench say which path runs")
    func forcedPath() throws {
        let bad = try CLI.run(["run", "--prompt", "Hi", "--max-tokens", "1"], environment: [KernelSelection.variable: "sse9"])
        #expect(bad.status != 0 && bad.stderr.contains("CHORUS_KERNELS=sse9 is not a kernel path"), "\(bad.stderr)")
        for path in KernelSelection.available().map(\.path) {
            let models = try CLI.run(["models", "--model", Models.smolLM2, "--json"], environment: [KernelSelection.variable: path.rawValue])
            #expect(models.status == 0 && models.stdout.contains("\"kernels\":\"\(path.rawValue)\""), "\(path): \(models.stdout)")
        }
        let bench = try CLI.run(["bench", "--prompt-tokens", "8", "--gen-tokens", "2", "--repetitions", "1", "--json"],
                                environment: [KernelSelection.variable: "portable"])
        #expect(bench.status == 0 && bench.json?["kernels"] as? String == "portable", "\(bench.stdout) \(bench.stderr)")
        if !CPUFeatures.current.has("avx512_vnni") {
            let refused = try CLI.run(["run", "--prompt", "Hi", "--max-tokens", "1"], environment: [KernelSelection.variable: "avx512-vnni"])
            #expect(refused.status != 0 && refused.stderr.contains("asks for kernels this CPU cannot run"), "\(refused.stderr)")
        }
    }
}

@Suite("One build on other CPUs")
struct OtherCPUTests {
    static let qemu = ["/usr/bin/qemu-x86_64", "/usr/local/bin/qemu-x86_64"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let underCI = ProcessInfo.processInfo.environment["CI"] == "true"

    /// The build, run by QEMU as a CPU without AVX-512 (Haswell: AVX2, FMA,
    /// F16C) and as a bare x86-64 (no AVX at all): it picks the AVX2 and the
    /// portable kernels, and generates exactly what it generates natively. An
    /// instruction the emulated CPU lacks would stop it with SIGILL.
    @Test("under QEMU as a Haswell and as a bare x86-64 CPU, chorus picks AVX2 and portable kernels and generates the same tokens",
          .enabled(if: qemu != nil || underCI, "needs qemu-x86_64 (deploy/setup.sh installs qemu-user)"))
    func emulatedCPUs() throws {
        #if arch(x86_64)
        let qemu = try #require(Self.qemu, "qemu-x86_64 is not installed: run deploy/setup.sh (it installs qemu-user)")
        let model = try Models.require(Models.smolLM2)
        let arguments = ["run", "--model", model, "--prompt", "Three sheep and five sheep are", "--temperature", "0", "--max-tokens", "4",
                         "--threads", "1", "--json"]
        func ids(_ result: ProgramResult) throws -> [Int32] {
            try #require(result.status == 0 && result.signal == nil, "status \(result.status), signal \(result.signal ?? 0): \(result.stderr)")
            return try JSONRead.int32s(try JSONRead.object(result.stdout), "ids")
        }
        let native = try ids(try Program.chorus(arguments))
        for (cpu, path) in [("Haswell-v4", KernelPath.avx2), ("qemu64", .portable)] {
            let listed = try Program.run(qemu, ["-cpu", cpu, Paths.binary("chorus"), "models", "--model", model, "--json"], timeout: 120)
            #expect(listed.status == 0 && listed.stdout.contains("\"kernels\":\"\(path.rawValue)\""), "\(cpu): \(listed.stdout) \(listed.stderr)")
            let emulated = try ids(try Program.run(qemu, ["-cpu", cpu, Paths.binary("chorus")] + arguments, timeout: 300))
            #expect(emulated == native, "\(cpu) (\(path) kernels) against this CPU's")
        }
        #endif
    }
}
