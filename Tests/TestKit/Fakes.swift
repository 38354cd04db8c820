import Foundation
import Protocol

/// Stage results as a model worker would send them, for tests that play a
/// worker's part (the job engine, scripted workers on the bus, the journal).
public enum FakeStage {
    /// The sampling a fake result records.
    public static func sampling(seed: UInt64 = 0, maxTokens: Int = 64) -> SamplingRecord {
        SamplingRecord(temperature: 0.3, topK: 40, topP: 0.95, minP: 0.05, repetitionPenalty: 1, maxTokens: maxTokens, seed: seed)
    }

    /// A well-formed result with `text`; a critic's carries `verdict` and
    /// `score` (by default 1 for accept and 0 for reject).
    public static func result(_ text: String, verdict: Verdict? = nil, score: Double? = nil, seed: UInt64 = 0,
                              prompt: String = "the prompt", model: String = "m", promptTokens: Int = 10,
                              completionTokens: Int = 5, reusedPromptTokens: Int? = nil,
                              messages: [ChatTurn]? = nil) -> StageResult {
        StageResult(text: text, prompt: prompt, sampling: sampling(seed: seed), model: model, promptTokens: promptTokens,
                    completionTokens: completionTokens, promptSeconds: 0.01, generationSeconds: 0.02, stopReason: "eos",
                    verdict: verdict, score: score ?? verdict.map { $0 == .accept ? 1 : 0 },
                    reusedPromptTokens: reusedPromptTokens, messages: messages)
    }

    /// The same result as the JSON a worker's FINAL carries.
    public static func json(_ text: String, verdict: Verdict? = nil, score: Double? = nil, seed: UInt64 = 0,
                            prompt: String = "the prompt", model: String = "m", promptTokens: Int = 10,
                            completionTokens: Int = 5, reusedPromptTokens: Int? = nil,
                            messages: [ChatTurn]? = nil) throws -> JSONValue {
        try JSONValue(encoding: result(text, verdict: verdict, score: score, seed: seed, prompt: prompt, model: model,
                                       promptTokens: promptTokens, completionTokens: completionTokens,
                                       reusedPromptTokens: reusedPromptTokens, messages: messages))
    }
}
