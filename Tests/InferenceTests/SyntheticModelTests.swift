import Foundation
import Inference
import Testing

/// Small synthetic models of the architectures no installed model covers
/// (Fixtures/synthetic, written by scripts/make_synthetic_models.py: random
/// weights, a real tokenizer's vocabulary, quantised by llama-quantize), held
/// to llama.cpp's greedy tokens by the same teacher-forced rule as the real models.
@Suite("Synthetic Llama 3, Qwen2 and Qwen3 models against llama.cpp")
struct SyntheticModelTests {
    static let files: [(String, String)] = ["llama3", "qwen2", "qwen3"].flatMap { name in
        ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"].map { (name, $0) }
    } + [("llama2", "Q4_K_M")]

    static func load(_ name: String, _ type: String) throws -> LanguageModel {
        try LanguageModel(path: TestSupport.fixtures.appendingPathComponent("synthetic/\(name)-\(type).gguf").path, threads: 1)
    }

    @Test("teacher-forced argmax equals llama.cpp's token wherever the margin is at least 0.5", arguments: files)
    func teacherForced(name: String, type: String) throws {
        let model = try Self.load(name, type)
        #expect(model.config.architecture == (name.hasPrefix("llama") ? "llama" : name))
        let types = Set(model.file.tensors.map(\.type))
        switch type {
        case "Q4_K_M": #expect(types.isSuperset(of: [.q4_K, .q6_K]))
        case "Q5_K_M": #expect(types.isSuperset(of: [.q5_K, .q6_K]))
        case "Q6_K": #expect(types.contains(.q6_K))
        default: #expect(types.contains(.q8_0))
        }
        switch name {
        case "llama3":
            #expect(model.config.rope.style == .normal && model.decoder.ropes[0].frequencyFactors?.count == 32)
            #expect(model.decoder.ropes[0].frequencyFactors?.contains(8) == true, "Llama 3's rope_freqs are read")
        case "llama2":
            #expect(model.tokenizer.preTokenizer == nil, "a SentencePiece vocabulary")
        case "qwen3":
            #expect(model.config.queryDim == 512 && model.config.embeddingLength == 256, "the attention is wider than the model")
            #expect(model.config.rope.style == .neox)
        default:
            #expect(model.config.rope.style == .neox)
        }
        let checked = try expectTeacherForcedParity(model, "synthetic/\(name)-\(type).jsonl")
        #expect(checked >= 120, "\(checked) positions checked")
    }

    @Test("the llama-bpe and qwen2 pre-tokenizers split as llama.cpp's do")
    func preTokenizers() throws {
        let llama3 = try Self.load("llama3", "Q8_0").tokenizer, qwen2 = try Self.load("qwen2", "Q8_0").tokenizer
        #expect(llama3.preTokenizer == .llama3 && qwen2.preTokenizer == .qwen2)
        #expect(try expectTokenizerParity(llama3, "synthetic/tokenizer-llama-bpe.jsonl") >= 150)
        #expect(try expectTokenizerParity(qwen2, "synthetic/tokenizer-qwen2.jsonl") >= 150)
        // Llama 3 groups digits by three, Qwen2 keeps each apart.
        #expect(llama3.encode("123456").count == 2 && qwen2.encode("123456").count == 6)
    }

    @Test("a SentencePiece vocabulary without add_space_prefix and add_bos_token keys gets both, as in Llama 2 files")
    func sentencePieceDefaults() throws {
        let tokenizer = try Self.load("llama2", "Q4_K_M").tokenizer
        #expect(try expectTokenizerParity(tokenizer, "synthetic/tokenizer-spm-space-prefix.jsonl") >= 150)
        #expect(tokenizer.addBOS && tokenizer.bosToken == 2 && tokenizer.encodePrompt("Hi").first == 2)
        let ids = tokenizer.encode("Hi")
        #expect(tokenizer.text(of: ids[0])?.hasPrefix("▁") == true, "a space before the text")
        #expect(tokenizer.decode(ids) == " Hi")
    }
}
