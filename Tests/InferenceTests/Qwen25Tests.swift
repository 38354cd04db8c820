import Foundation
import Inference
import TestKit
import Testing

/// Qwen2.5-Coder-0.5B-Instruct and -1.5B-Instruct (as setup installs them)
/// against llama.cpp's own outputs (Fixtures/qwen25-0.5b and qwen25-1.5b,
/// made by `scripts/make_model_fixtures.py qwen`): the tokenizer on texts with
/// code, Chinese and Qwen's special tokens, teacher-forced greedy tokens, and
/// perplexity.
enum QwenCase: String, CaseIterable, Sendable, CustomStringConvertible {
    case small = "qwen25-0.5b"
    case large = "qwen25-1.5b"
    var description: String { rawValue }

    func model() throws -> LanguageModel { self == .small ? try TestSupport.qwen05() : try TestSupport.qwen15() }
}

@Suite("Qwen2.5-Coder against llama.cpp", .serialized)
struct Qwen25Tests {
    @Test("architecture, chat format, special tokens and tensor types are read from the file", arguments: QwenCase.allCases)
    func configuration(_ which: QwenCase) throws {
        let model = try which.model()
        let c = model.config
        #expect(c.architecture == "qwen2" && c.rope.style == .neox && c.vocabularySize == 151_936)
        #expect(c.blockCount == (which == .small ? 24 : 28) && c.embeddingLength == (which == .small ? 896 : 1536))
        #expect(model.chatTemplate.format == .chatML && !model.tokenizer.addBOS)
        let imStart = try #require(model.tokenizer.id(of: "<|im_start|>")), imEnd = try #require(model.tokenizer.id(of: "<|im_end|>"))
        #expect(model.tokenizer.isEndOfGeneration(imEnd), "<|im_end|> ends a turn")
        let prompt = model.chatPrompt([.system("Be brief."), .user("Hi")])
        #expect(prompt.first == imStart && prompt.filter { $0 == imEnd }.count == 2)
        let types = Set(model.file.tensors.map(\.type))
        #expect(types == (which == .small ? [.f32, .q5_0, .q8_0, .q4_K, .q6_K] : [.f32, .q4_K, .q6_K]), "\(types)")
    }

    @Test("every text of the tokenizer fixture tokenizes exactly as in llama.cpp", arguments: QwenCase.allCases)
    func tokenizer(_ which: QwenCase) throws {
        let model = try which.model()
        #expect(try expectTokenizerParity(model.tokenizer, "\(which)/tokenizer.jsonl") >= 250)
        for text in ["def f(x):\n    return x * 2\n", "混合 English 和中文", "  spaces\tand\nnewlines  "] {
            #expect(model.tokenizer.decode(model.tokenizer.encode(text, parseSpecial: false)) == text)
        }
    }

    @Test("teacher-forced argmax equals llama.cpp's token wherever the margin is at least 0.5", arguments: QwenCase.allCases)
    func teacherForcedParity(_ which: QwenCase) throws {
        let model = try which.model()
        let lines = try TestSupport.jsonLines("\(which)/reference.jsonl")
        let lengths = try lines.map { try JSONRead.int32s($0, "greedy_ids").count }
        #expect(lines.count == 14 && lengths.allSatisfy { (1...64).contains($0) }, "greedy lengths \(lengths)")
        let checked = try expectTeacherForcedParity(model, "\(which)/reference.jsonl", context: 1024)
        #expect(checked >= 300, "\(checked) positions checked")
    }

    @Test("perplexity over the fixture text, in chunks of 512, is within 1% of llama.cpp's", arguments: QwenCase.allCases)
    func perplexity(_ which: QwenCase) throws {
        let model = try which.model()
        let file = "\(which)/perplexity.json"
        let reference = try JSONRead.object(try Data(contentsOf: TestSupport.fixtures.appendingPathComponent(file)), file)
        let expected = try JSONRead.value(reference, "perplexity", as: Double.self)
        let expectedChunks = try JSONRead.value(reference, "chunks", as: Int.self)
        let text = try String(contentsOf: TestSupport.fixtures.appendingPathComponent(try JSONRead.value(reference, "text", as: String.self)), encoding: .utf8)
        let tokens = model.tokenizer.encode(text, parseSpecial: false)
        let session = model.makeSession(contextLength: 512, batchSize: 512)
        var chunks = 0
        let ppl = try session.perplexity(tokens: tokens, context: 512) { _, total, _ in chunks = total }
        #expect(chunks == expectedChunks && chunks >= 30)
        #expect(abs(ppl - expected) / expected < 0.01, "PPL = \(ppl), llama.cpp \(expected)")
    }
}
