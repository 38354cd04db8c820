import Foundation
import Inference
import Protocol
import TestKit
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `chorus train` through the real trainer: torch, transformers and TRL in the
/// environment deploy/setup.sh --training makes, llama.cpp's converter and
/// llama-quantize, on a tiny random Llama with SmolLM2's tokenizer (made by
/// scripts/train/make_tiny_model.py), then loaded by Chorus.
@Suite("chorus train: fine-tuning a role's model and bringing it back", .serialized)
struct TrainTests {
    static let underCI = ProcessInfo.processInfo.environment["CI"] == "true"
    static let environment: String = {
        if let v = ProcessInfo.processInfo.environment["CHORUS_TRAIN_VENV"], !v.isEmpty { return v }
        return Paths.inRepository(".venv-train").path
    }()
    static var python: String { environment + "/bin/python" }
    static let llama = Paths.inRepository(".build-llama")
    /// The trainer's environment and llama.cpp's converter are installed (in CI they must be).
    static var canTrain: Bool {
        underCI || (FileManager.default.isExecutableFile(atPath: python)
            && FileManager.default.fileExists(atPath: llama.appendingPathComponent("src/convert_hf_to_gguf.py").path))
    }
    /// llama-quantize is built too (deploy/setup.sh --training; CI leaves its build out).
    static var canQuantize: Bool {
        FileManager.default.isExecutableFile(atPath: python)
            && FileManager.default.isExecutableFile(atPath: llama.appendingPathComponent("build/bin/llama-quantize").path)
    }

    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("sft"), withIntermediateDirectories: true)
    }

    /// Hand-made SFT rows in the harvest's form.
    static let rows: [(String, String)] = [
        ("What is 2 + 3?", "2 + 3 = 5\n#### 5"), ("What is 7 * 6?", "7 * 6 = 42\n#### 42"),
        ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = 7\n#### 7"),
        ("What is 10 - 4?", "10 - 4 = 6\n#### 6"), ("A box holds 12 eggs. How many eggs are in 3 boxes?", "12 * 3 = 36\n#### 36"),
    ]

    func writeSFT(_ name: String = "sft/generator.jsonl", _ lines: [String]? = nil) throws -> URL {
        let url = dir.appendingPathComponent(name)
        let text = lines ?? Self.rows.map { q, a in
            #"{"prompt": [{"role": "system", "content": "Solve the problem."}, {"role": "user", "content": "\#(q)"}], "#
                + #""completion": [{"role": "assistant", "content": "\#(a.replacingOccurrences(of: "\n", with: "\\n"))"}]}"#
        }
        try (text.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// The tiny random model with SmolLM2's tokenizer.
    func tinyModel() throws -> String {
        let out = dir.appendingPathComponent("tiny.gguf").path
        let made = try Program.run(Self.python, [Paths.inRepository("scripts/train/make_tiny_model.py").path, try Models.require(Models.smolLM2), out],
                                   mergeOutput: true, timeout: 300)
        guard made.status == 0 else {
            throw TestKitError("make_tiny_model.py failed (is the trainer's environment installed? deploy/setup.sh --training):\n\(made.stdout)")
        }
        return out
    }

    func train(_ base: String, out: String, _ extra: [String], timeout: Double = 900) throws -> ProgramResult {
        try Program.chorus(["train", "--role", "generator", "--data", dir.appendingPathComponent("sft").path, "--base", base, "--out", out] + extra,
                           timeout: timeout)
    }

    /// Largest difference between two models' values of `tensor`, dequantised.
    func largestDifference(_ a: GGUFFile, _ b: GGUFFile, _ tensor: String) throws -> Float {
        guard let x = a.tensorInfo(tensor), let y = b.tensorInfo(tensor), x.dimensions == y.dimensions else {
            throw TestKitError("\(tensor) is missing or has another shape in one of the models")
        }
        let n = x.rowLength
        var u = [Float](repeating: 0, count: n), v = [Float](repeating: 0, count: n)
        var largest: Float = 0
        for r in 0..<x.rowCount {
            Dequantize.row(x.type, a.data(of: x) + r * x.byteCount / x.rowCount, count: n, into: &u)
            Dequantize.row(y.type, b.data(of: y) + r * y.byteCount / y.rowCount, count: n, into: &v)
            for i in 0..<n { largest = max(largest, abs(u[i] - v[i])) }
        }
        return largest
    }

    @Test("chorus compare pairs two evaluations by question and seed; a file that is not jobs, or no question in both, is an error")
    func compare() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        func job(_ q: String, seed: UInt64, first: String, final: String) -> JobRecord {
            var spec = JobSpec(question: q, samples: 1, rounds: 1, seed: seed)
            spec.answer = "5"
            return JobRecord(id: q, spec: spec, seed: seed, state: .done, answer: final, chainAnswers: [final], firstAnswers: [first],
                             error: nil, createdAt: 0, finishedAt: 1, stages: [])
        }
        let before = dir.appendingPathComponent("before.jsonl"), after = dir.appendingPathComponent("after.jsonl")
        try JSONLines.write([job("a", seed: 1, first: "5", final: "5"), job("b", seed: 2, first: "4", final: "4"),
                             job("c", seed: 3, first: "4", final: "4")], to: before)
        try JSONLines.write([job("c", seed: 3, first: "5", final: "5"), job("b", seed: 2, first: "5", final: "5"),
                             job("a", seed: 1, first: "5", final: "4")], to: after)
        let r = try Program.chorus(["compare", before.path, after.path, "--json"], timeout: 60)
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONRead.object(r.stdout, "compare --json")
        let rows = try JSONRead.value(report, "configurations", as: [[String: Any]].self)
        #expect(report["questions"] as? Int == 3 && rows.count == 2)
        #expect(rows.first?["before"] as? Int == 1 && rows.first?["after"] as? Int == 3 && rows.first?["gained"] as? Int == 2, "\(rows)")
        #expect(rows.last?["lost"] as? Int == 1 && rows.last?["gained"] as? Int == 2, "\(rows)")
        let text = try Program.chorus(["compare", before.path, after.path], timeout: 60)
        #expect(text.status == 0 && text.stdout.contains("3 questions in both") && text.stdout.contains("single generator"), "\(text.stdout)")

        let garbage = dir.appendingPathComponent("garbage.jsonl")
        try "{\"id\": 1}\nnot json\n".write(to: garbage, atomically: true, encoding: .utf8)
        let bad = try Program.chorus(["compare", before.path, garbage.path], timeout: 60)
        #expect(bad.status != 0 && bad.stderr.contains("garbage.jsonl:1: not a job"), "\(bad.stderr)")
        let other = dir.appendingPathComponent("other.jsonl")
        try JSONLines.write([job("z", seed: 9, first: "5", final: "5")], to: other)
        let none = try Program.chorus(["compare", before.path, other.path], timeout: 60)
        #expect(none.status != 0 && none.stderr.contains("no question is in both files"), "\(none.stderr)")
        let missing = try Program.chorus(["compare", before.path, dir.appendingPathComponent("nope.jsonl").path], timeout: 60)
        #expect(missing.status != 0 && missing.stderr.contains("cannot read"), "\(missing.stderr)")
    }

    @Test("bad data, a bad base, an unknown role and an existing output are refused before any training, each with what to fix")
    func refusesBadData() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = try Models.require(Models.smolLM2)
        let out = dir.appendingPathComponent("out.gguf").path
        let cases: [(String, [String]?, String)] = [
            ("empty", [], "no rows"),
            ("wrong columns", [#"{"messages": [{"role": "user", "content": "hi"}]}"#], "sft/generator.jsonl:1: no prompt, completion column"),
            ("no assistant turn", [#"{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "user", "content": "x"}]}"#],
             "generator.jsonl:1: `completion` has no assistant turn"),
            ("not JSON", [#"{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "ok"}]}"#, "{oops"],
             "generator.jsonl:2: not a JSON line"),
            ("turns that are not turns", [#"{"prompt": "hi", "completion": [{"role": "assistant", "content": "ok"}]}"#],
             "generator.jsonl:1: `prompt` is not a non-empty list"),
        ]
        for (what, lines, message) in cases {
            _ = try writeSFT("sft/generator.jsonl", lines)
            let r = try train(base, out: out, [], timeout: 60)
            #expect(r.status != 0 && r.stderr.contains("bad training data") && r.stderr.contains(message), "\(what): \(r.stderr)")
            #expect(!r.stderr.contains("setup.sh") && !FileManager.default.fileExists(atPath: out), "\(what): nothing installed or written")
        }
        // No data file for the role.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("sft/generator.jsonl"))
        let missing = try train(base, out: out, [], timeout: 60)
        #expect(missing.status != 0 && missing.stderr.contains("holds no generator.jsonl"), "\(missing.stderr)")
        _ = try writeSFT()
        // DPO rows need chosen and rejected.
        let dpo = try writeSFT("dpo.jsonl", [#"{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}]}"#])
        let badPairs = try train(base, out: out, ["--dpo", dpo.path], timeout: 60)
        #expect(badPairs.status != 0 && badPairs.stderr.contains("dpo.jsonl:1: no rejected column"), "\(badPairs.stderr)")
        // A base that is not a model, an unknown role, an output that exists, the base as output.
        let notModel = try writeSFT("notmodel.gguf", ["GGUF but not really"])
        let r1 = try train(notModel.path, out: out, [], timeout: 60)
        #expect(r1.status != 0 && r1.stderr.contains("cannot read the base model"), "\(r1.stderr)")
        let r2 = try Program.chorus(["train", "--role", "critic", "--data", dir.path, "--base", base, "--out", out], timeout: 60)
        #expect(r2.status != 0 && r2.stderr.contains("--role must be one of generator, verifier, refiner"), "\(r2.stderr)")
        FileManager.default.createFile(atPath: out, contents: Data("keep me".utf8))
        let r3 = try train(base, out: out, [], timeout: 60)
        #expect(r3.status != 0 && r3.stderr.contains("already exists") && (try? String(contentsOfFile: out, encoding: .utf8)) == "keep me", "\(r3.stderr)")
        let r4 = try train(base, out: base, [], timeout: 60)
        #expect(r4.status != 0 && (r4.stderr.contains("the base model itself") || r4.stderr.contains("already exists")), "\(r4.stderr)")
        let r5 = try train(base, out: dir.appendingPathComponent("no/such/folder/x.gguf").path, [], timeout: 60)
        #expect(r5.status != 0 && r5.stderr.contains("does not exist"), "\(r5.stderr)")
    }

    @Test("a tiny model trained for a few steps (every weight; SFT, then DPO), converted back: it loads in Chorus, its weights changed, its tokenizer is the base's",
          .enabled(if: canTrain, "needs the trainer's environment (deploy/setup.sh --training)"))
    func trainsTinyModel() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = try tinyModel()
        _ = try writeSFT()
        // The harvest's summary says a bigger model wrote these rows: distillation, which the command names.
        try #"{"models": {"generator": ["teacher-1.5b.gguf"]}, "questions": 5}"#.write(to: dir.appendingPathComponent("summary.json"),
                                                                                       atomically: true, encoding: .utf8)
        let pairs = try writeSFT("dpo.jsonl", Self.rows.map { q, a in
            #"{"prompt": [{"role": "user", "content": "\#(q)"}], "chosen": [{"role": "assistant", "content": "\#(a.replacingOccurrences(of: "\n", with: "\\n"))"}], "#
                + #""rejected": [{"role": "assistant", "content": "I do not know.\n#### 0"}]}"#
        })
        let out = dir.appendingPathComponent("trained.gguf").path
        let r = try train(base, out: out, ["--steps", "5", "--lora-rank", "0", "--lr", "0.003", "--quantize", "F16", "--max-length", "128",
                                           "--dpo", pairs.path, "--dpo-steps", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "GENERATOR_MODEL=\(out)\n", "\(r.stdout)")
        #expect(r.stderr.contains("data: 5 SFT rows for the generator, 5 DPO pairs; written by teacher-1.5b.gguf (distillation into tiny.gguf)") && r.stderr.contains("SFT: 5 steps") && r.stderr.contains("5/5")
                && r.stderr.contains("DPO: 2 steps") && r.stderr.contains("2/2")
                && r.stderr.contains("loss") && r.stderr.contains("tok/s") && r.stderr.contains("its tokenizer is the base's"), "\(r.stderr)")
        let trained = try LanguageModel(path: out, threads: 1)
        let original = try LanguageModel(path: base, threads: 1)
        #expect(original.tokenizer.differences(from: trained.tokenizer).isEmpty)
        let a = try GGUFFile(path: base), b = try GGUFFile(path: out)
        #expect((try? b.stringArray("tokenizer.ggml.tokens")) == (try? a.stringArray("tokenizer.ggml.tokens")))
        #expect(b.metadata["tokenizer.chat_template"]?.stringValue == a.metadata["tokenizer.chat_template"]?.stringValue)
        // f16 rounds these N(0, 0.02) weights by at most about 1e-5; training moved them much more.
        for tensor in ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"] {
            #expect(try largestDifference(a, b, tensor) > 1e-3, "\(tensor) changed")
        }
        let record = try JSONRead.object(try Data(contentsOf: URL(fileURLWithPath: out + ".json")), "the record")
        let stages = try JSONRead.value(record, "stages", as: [String: [String: Any]].self)
        let first = try #require(stages["sft"]?["first_loss"] as? Double), last = try #require(stages["sft"]?["last_loss"] as? Double)
        #expect(last < first, "the loss fell: \(first) -> \(last)")
        #expect(stages["dpo"]?["rows"] as? Int == 5 && stages["dpo"]?["steps"] as? Int == 2, "\(stages)")
        // bfloat16 only on hardware that has it; float32 elsewhere (the fast path of an AVX2 CPU).
        let precision = try JSONRead.value(record, "precision", as: String.self)
        #expect(["fp32", "bf16 mixed"].contains(precision) && r.output.contains("; \(precision))"), "\(precision)")
        if !(try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)).contains("avx512_bf16") { #expect(precision == "fp32") }
        #expect(!FileManager.default.fileExists(atPath: out + ".work"), "the work folder is removed")
    }

    @Test("the default type, Q4_K_M, through llama-quantize (LoRA): the result loads in Chorus",
          .enabled(if: canQuantize, "needs llama-quantize (deploy/setup.sh --training)"))
    func quantisesByDefault() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = try tinyModel()
        _ = try writeSFT()
        let out = dir.appendingPathComponent("trained.gguf").path
        let r = try train(base, out: out, ["--steps", "2", "--max-length", "64"])
        #expect(r.status == 0 && r.stderr.contains("quantising to Q4_K_M") && r.stderr.contains("(Q4_K_M,"), "\(r.stderr)")
        let trained = try GGUFFile(path: out)
        #expect(trained.tensors.contains { $0.type == .q4_K }, "\(Set(trained.tensors.map(\.type)))")
        _ = try LanguageModel(path: out, threads: 1)
    }

    @Test("killed mid-training, the same command goes on from the last checkpoint (LoRA, Q8_0); other arguments for that work are refused",
          .enabled(if: canTrain, "needs the trainer's environment (deploy/setup.sh --training)"))
    func resumesAfterKill() throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = try tinyModel()
        _ = try writeSFT()
        let out = dir.appendingPathComponent("trained.gguf").path
        let arguments = ["train", "--role", "generator", "--data", dir.appendingPathComponent("sft").path, "--base", base, "--out", out,
                         "--steps", "60", "--lr", "0.001", "--max-length", "64", "--quantize", "Q8_0"]
        // Run on a thread of its own; killed (chorus and its trainer, both
        // naming `out` in their arguments) once the first checkpoint is whole.
        final class Outcome: @unchecked Sendable { var result: Result<ProgramResult, Error>? }
        let outcome = Outcome(), finished = DispatchSemaphore(value: 0)
        let chorusArguments = arguments
        Thread {
            outcome.result = Result { try Program.chorus(chorusArguments, timeout: 900) }
            finished.signal()
        }.start()
        let checkpoint = out + ".work/sft/checkpoint-6/trainer_state.json"
        try waitUntil(600, "the first checkpoint (\(checkpoint))") {
            FileManager.default.fileExists(atPath: checkpoint) || finished.wait(timeout: .now()) == .success
        }
        _ = try Program.run("pkill", ["-KILL", "-f", out], timeout: 30)
        #expect(finished.wait(timeout: .now() + 60) == .success, "chorus train ended once killed")
        let killed = try #require(try outcome.result?.get())
        #expect(killed.status != 0, "\(killed.stderr)")
        #expect(FileManager.default.fileExists(atPath: checkpoint), "killed after the first checkpoint, not finished before")
        #expect(!FileManager.default.fileExists(atPath: out))

        let other = try Program.chorus(arguments.map { $0 == "0.001" ? "0.002" : $0 }, timeout: 300)
        #expect(other.status != 0 && other.stderr.contains("holds a run with other arguments (lr)"), "\(other.stderr)")

        let again = try Program.chorus(arguments, timeout: 900)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("going on from the checkpoint at step"), "\(again.stderr)")
        #expect(again.stdout.hasPrefix("GENERATOR_MODEL="), "\(again.stdout)")
        let trained = try GGUFFile(path: out)
        #expect(trained.tensors.contains { $0.type == .q8_0 }, "quantised to Q8_0")
        let record = try JSONRead.object(try Data(contentsOf: URL(fileURLWithPath: out + ".json")), "the record")
        #expect((try JSONRead.value(record, "stages", as: [String: [String: Any]].self))["sft"]?["resumed"] as? Bool == true)
        _ = try LanguageModel(path: out, threads: 1)
    }
}
