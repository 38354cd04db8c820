import Foundation
import Inference
import TestKit
import Testing

/// Runs the real `chorus` executable as a separate process, with the test
/// model as its default model.
enum CLI {
    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
        var json: [String: Any]? { try? JSONRead.object(stdout) }
    }

    static func run(_ arguments: [String], environment: [String: String] = [:],
                    sourceLocation: SourceLocation = #_sourceLocation) throws -> Output {
        let result = try Program.chorus(arguments, environment: ["CHORUS_MODEL": TestSupport.modelPath].merging(environment) { $1 })
        #expect(result.signal == nil, "chorus \(arguments.joined(separator: " ")) was killed by signal \(result.signal ?? 0)",
                sourceLocation: sourceLocation)
        return Output(status: result.status, stdout: result.stdout, stderr: result.stderr)
    }
}

@Suite("chorus command line", .serialized)
struct CLITests {
    @Test("run --json reports prompt and generated ids, text and speeds")
    func runJSON() throws {
        let out = try CLI.run(["run", "--chat", "What is 2+3?", "--temperature", "0", "--max-tokens", "32", "--json", "--threads", "2"])
        #expect(out.status == 0, "\(out.stderr)")
        let json = try #require(out.json, "not JSON: \(out.stdout)")
        let model = try TestSupport.model()
        let promptIDs = try JSONRead.int32s(json, "prompt_ids")
        #expect(promptIDs == model.chatPrompt([.user("What is 2+3?")]))
        let ids = try JSONRead.int32s(json, "ids")
        #expect(!ids.isEmpty && ids.count <= 32)
        // It stops at <|im_end|> (id 2) or after its 32 tokens.
        let stop = try JSONRead.value(json, "stop_reason", as: String.self)
        #expect(stop == "end_of_generation" ? ids.last == 2 : (stop == "max_tokens" && ids.count == 32), "\(stop) after \(ids.count) tokens")
        #expect(try JSONRead.value(json, "text", as: String.self) == model.tokenizer.decode(ids))
        #expect(try JSONRead.value(json, "prompt_tokens_per_second", as: Double.self) > 0)
        #expect(try JSONRead.value(json, "decode_tokens_per_second", as: Double.self) > 0)
    }

    @Test("bench --parallel --json reports aggregate decode speed for each sequence count")
    func benchParallel() throws {
        let out = try CLI.run(["bench", "--parallel", "1,3", "--prompt-tokens", "16", "--gen-tokens", "4", "--repetitions", "1", "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let json = try #require(out.json)
        let rows = try #require(json["parallel"] as? [[String: Any]])
        #expect(rows.map { $0["sequences"] as? Int } == [1, 3])
        #expect(rows.allSatisfy { ($0["decode_tokens_per_second"] as? Double ?? 0) > 0 })
        #expect(json["prompt_tokens"] as? Int == 16 && json["gen_tokens"] as? Int == 4)
        for bad in ["0", "1,x", "", "2,,4"] {
            let refused = try CLI.run(["bench", "--parallel", bad])
            #expect(refused.status != 0 && refused.stderr.contains("--parallel takes comma-separated sequence counts"), "\(bad): \(refused.stderr)")
        }
        let tooLong = try CLI.run(["bench", "--parallel", "2", "--prompt-tokens", "9000"])
        #expect(tooLong.status != 0 && tooLong.stderr.contains("tokens of context"), "\(tooLong.stderr)")
    }

    @Test("run streams text, and a seed makes sampling reproducible across processes")
    func runStreamsAndSeeds() throws {
        let args = ["run", "--prompt", "Once upon a time", "--max-tokens", "16", "--temperature", "0.9", "--seed", "7"]
        let a = try CLI.run(args), b = try CLI.run(args)
        #expect(a.status == 0 && b.status == 0)
        #expect(!a.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        #expect(a.stdout == b.stdout)
        #expect(a.stderr.contains("tok/s"))
    }

    @Test("tokenize prints a JSON array")
    func tokenize() throws {
        let out = try CLI.run(["tokenize", "--", "<|im_start|>user\nHello"])
        #expect(out.status == 0)
        #expect(out.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[1, 4093, 198, 19556]")
    }

    @Test("score --json gives argmax and log-probabilities that match llama.cpp's greedy tokens")
    func score() throws {
        let line = try TestSupport.jsonLines("smollm2/reference.jsonl")[1]
        let greedy = try JSONRead.ints(line, "greedy_ids")
        let margins = try JSONRead.doubles(line, "margins")
        let prompt = try JSONRead.value(line, "prompt", as: String.self)
        let out = try CLI.run(["score", "--prompt", prompt, "--ids", greedy.map(String.init).joined(separator: ","), "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let json = try #require(out.json)
        let argmax = try JSONRead.ints(json, "argmax")
        let logprobs = try JSONRead.doubles(json, "logprobs")
        try #require(argmax.count == greedy.count && logprobs.count == greedy.count && margins.count >= greedy.count,
                     "\(argmax.count) argmax and \(logprobs.count) log-probabilities for \(greedy.count) tokens")
        for i in 0..<greedy.count where margins[i] >= 0.5 { #expect(argmax[i] == greedy[i]) }
        #expect(logprobs.allSatisfy { $0 <= 0 })
    }

    @Test("bench --json reports both speeds")
    func bench() throws {
        let out = try CLI.run(["bench", "--prompt-tokens", "64", "--gen-tokens", "8", "--repetitions", "1", "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let json = try #require(out.json)
        #expect((json["prompt_tokens_per_second"] as? Double ?? 0) > 0)
        #expect((json["decode_tokens_per_second"] as? Double ?? 0) > 0)
        #expect((json["decode_weight_bytes_per_token"] as? Int ?? 0) > 50_000_000, "SmolLM2 reads tens of MB of weights per token")
        #expect((json["decode_weight_gb_per_second"] as? Double ?? 0) > 0)
    }

    @Test("perplexity prints PPL on a short file")
    func perplexity() throws {
        let text = try String(contentsOf: TestSupport.fixtures.appendingPathComponent("smollm2/perplexity.txt"), encoding: .utf8)
        let url = TestSupport.temporaryFile("short.txt")
        try String(text.prefix(3000)).write(to: url, atomically: true, encoding: .utf8)
        let out = try CLI.run(["perplexity", "--file", url.path, "--context", "128"])
        #expect(out.status == 0, "\(out.stderr)")
        let value = Double(out.stdout.replacingOccurrences(of: "PPL = ", with: "").trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(value.map { $0 > 1 && $0 < 100 } == true, "\(out.stdout)")
    }

    @Test("a missing, corrupt or truncated model is a clear error, not a crash")
    func badModels() throws {
        let missing = try CLI.run(["run", "--prompt", "hi", "--model", "/no/such/model.gguf"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no model at /no/such/model.gguf"))
        #expect(missing.stderr.contains("deploy/setup.sh"))

        let garbage = try writeTemporary(Array("this is not a model".utf8))
        let corrupt = try CLI.run(["tokenize", "--model", garbage, "hello"])
        #expect(corrupt.status == 1 && corrupt.stderr.contains("not a GGUF file"))

        let head = try FileHandle(forReadingFrom: URL(fileURLWithPath: try TestSupport.requireModelFile())).read(upToCount: 500_000) ?? Data()
        let truncated = try writeTemporary(Array(head))
        let cut = try CLI.run(["run", "--prompt", "hi", "--model", truncated])
        #expect(cut.status == 1 && cut.stderr.contains("truncated"), "\(cut.stderr)")
    }

    @Test("models describes the installed models, and says why a file does not load")
    func models() throws {
        let list = try CLI.run(["models"], environment: ["CHORUS_MODELS_DIR": TestSupport.repositoryRoot.appendingPathComponent("models").path])
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && list.stdout.contains("gemma-3-270m-q4_k_m.gguf"), "\(list.stdout)")
        let garbage = try writeTemporary(Array("GGUF and nothing more".utf8))
        let gemma = try TestSupport.requireModelFile(TestSupport.gemmaPath)
        let out = try CLI.run(["models", "--json", "--model", gemma, "--model", garbage,
                               "--model", TestSupport.fixtures.appendingPathComponent("synthetic/qwen2-Q5_K_M.gguf").path])
        #expect(out.status == 0, "\(out.stderr)")
        let items = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]])
        try #require(items.count == 3, "\(items.count) models described, not 3: \(out.stdout)")
        let g = items[0]
        #expect(g["architecture"] as? String == "gemma3" && g["loads"] as? Bool == true && g["bos"] as? String == "<bos>")
        #expect(g["chat_template"] as? String == "plain" && g["context_length"] as? Int == 32768)
        #expect((g["parameters"] as? Int).map { $0 > 260_000_000 && $0 < 280_000_000 } == true)
        #expect(g["tensor_types"] as? [String: Int] == ["F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10, "Q6_K": 9])
        #expect(items[1]["loads"] as? Bool == false && (items[1]["error"] as? String)?.contains("GGUF version") == true, "\(items[1])")
        #expect(items[2]["architecture"] as? String == "qwen2" && items[2]["loads"] as? Bool == true)
        let empty = try CLI.run(["models"], environment: ["CHORUS_MODELS_DIR": FileManager.default.temporaryDirectory.appendingPathComponent("no-models-here").path])
        #expect(empty.status != 0 && empty.stderr.contains("run deploy/setup.sh"), "\(empty.stderr)")
    }

    @Test("keygen prints a quoted pair, or writes PREFIX.key (mode 600) and PREFIX.pub and never overwrites them")
    func keygen() throws {
        let printed = try CLI.run(["keygen"])
        let lines = printed.stdout.split(separator: "\n")
        #expect(printed.status == 0 && lines.count == 2 && lines[0].hasPrefix("CHORUS_CURVE_SECRET_KEY=\"")
                && lines[1].hasPrefix("CHORUS_CURVE_SERVER_KEY=\"") && lines.allSatisfy { $0.hasSuffix("\"") })
        for line in lines { #expect(line.split(separator: "\"").last?.count == 40, "a Z85 key is 40 characters: \(line)") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let prefix = dir.appendingPathComponent("worker1").path
        let written = try CLI.run(["keygen", "--out", prefix])
        #expect(written.status == 0 && written.stdout.contains("wrote \(prefix).key"), "\(written.stderr)")
        let secret = try String(contentsOfFile: prefix + ".key", encoding: .utf8), pub = try String(contentsOfFile: prefix + ".pub", encoding: .utf8)
        #expect(secret.count == 41 && pub.count == 41 && secret != pub)
        let mode = try FileManager.default.attributesOfItem(atPath: prefix + ".key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let again = try CLI.run(["keygen", "--out", prefix])
        #expect(again.status != 0 && again.stderr.contains("\(prefix).key already exists"), "\(again.stderr)")
        #expect(try String(contentsOfFile: prefix + ".key", encoding: .utf8) == secret, "the secret key is untouched")
    }

    @Test("bad arguments are explained")
    func badArguments() throws {
        let neither = try CLI.run(["run"])
        #expect(neither.status != 0 && neither.stderr.contains("--prompt or --chat"))
        let badIDs = try CLI.run(["score", "--prompt", "x", "--ids", "1,two,3"])
        #expect(badIDs.status != 0 && badIDs.stderr.contains("'two' is not a token id"))
        let outside = try CLI.run(["score", "--prompt", "x", "--ids", "1,999999"])
        #expect(outside.status == 1 && outside.stderr.contains("outside the vocabulary"))
        let threads = try CLI.run(["bench", "--threads", "0"])
        #expect(threads.status != 0 && threads.stderr.contains("--threads"))
        let help = try CLI.run(["run", "--help"])
        for option in ["--prompt", "--chat", "--max-tokens", "--temperature", "--top-k", "--top-p", "--min-p", "--seed", "--threads", "--json", "--model"] {
            #expect(help.stdout.contains(option), "run --help lacks \(option)")
        }
    }
}
