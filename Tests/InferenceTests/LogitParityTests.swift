import Foundation
import Inference
import TestKit
import Testing

/// llama.cpp's logits themselves (Fixtures/logits, written by
/// scripts/make_model_fixtures.py logits), not only its argmax: the eight best
/// at every teacher-forced position. Chorus quantises activations as
/// llama.cpp pairs them with each weight type (Q8_K, one scale per 256
/// values, for the K-quants; Q8_0 with an f16 scale for the others) and rounds
/// to f16 where llama.cpp's CPU path does (queries and attention weights meet
/// the f16 cache as f16; GELU from a table over f16). What is left is the
/// order of float sums, and the 8-bit roundings it flips.
///
/// Measured when this was written (mean and largest difference over the
/// eight best logits of every position; in brackets, positions where the
/// argmax differs although llama.cpp's best two are 0.1 apart, 0.5 for Gemma):
///
/// | fixture | K-quants' activations as Q8_0, no f16 | as Q8_0, f16 as llama.cpp | Q8_K and f16 as llama.cpp | and integer sums per 256 as ggml (now) | llama.cpp's AVX2 build against its AVX-512 one |
/// |---|---|---|---|---|---|
/// | llama3-Q6_K (synthetic) | 0.100 / 0.48 | 0.101 / 0.45 (4) | 0.005 / 0.23 (0) | 0.0027 / 0.16 (0) | 0.00000002 / 0.00001 |
/// | qwen2-Q4_K_M (synthetic) | 0.079 / 0.39 | 0.079 / 0.35 (8) | 0.0014 / 0.16 (0) | 0.0008 / 0.13 (0) | 0.0002 / 0.12 |
/// | Gemma 3 270M Q4_K_M | 0.237 / 1.80 | 0.259 / 2.16 (1) | 0.240 / 1.72 (0) | 0.249 / 2.70 (0) | 0.204 / 1.25 |
///
/// On Gemma's 18 layers the 8-bit roundings that float order flips dominate:
/// llama.cpp differs from itself as much between its AVX2 and AVX-512
/// builds (its margin at one position is 1.02 in one, 0.25 in the other), so
/// there the argmax is held only where the margin is beyond that variation
/// (1.3), and the mean bounds the noise rather than any one rounding; its
/// largest single difference moves with any change in the order of float
/// sums (1.7 to 2.7 over the versions above) and is bounded loosely.
@Suite("Logits against llama.cpp's", .serialized)
struct LogitParityTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let fixture: String
        let model: String
        /// The largest mean difference allowed, and the largest single one.
        let mean: Double
        let largest: Double
        /// Where llama.cpp's best two logits are this far apart, the argmax must agree.
        let margin: Double
        var testDescription: String { fixture }
    }

    static let cases = [
        Case(fixture: "logits/llama3-Q6_K.jsonl", model: "synthetic/llama3-Q6_K.gguf", mean: 0.02, largest: 0.35, margin: 0.1),
        Case(fixture: "logits/qwen2-Q4_K_M.jsonl", model: "synthetic/qwen2-Q4_K_M.gguf", mean: 0.02, largest: 0.25, margin: 0.1),
        Case(fixture: "logits/gemma3.jsonl", model: "", mean: 0.3, largest: 4, margin: 1.3),
    ]

    struct Differences {
        var largest = 0.0, total = 0.0, count = 0, positions = 0
        /// Positions where llama.cpp's best two are at least the case's margin apart, and those where Chorus's argmax is another token.
        var clear = 0, disagreements: [String] = []
        var mean: Double { total / Double(max(count, 1)) }
    }

    static func differences(_ c: Case) throws -> Differences {
        let path = c.model.isEmpty ? Models.gemma : TestSupport.fixtures.appendingPathComponent(c.model).path
        let model = try LanguageModel(path: path, threads: 2)
        var d = Differences()
        for (n, line) in try TestSupport.jsonLines(c.fixture).enumerated() {
            let prompt = try JSONRead.int32s(line, "prompt_ids"), greedy = try JSONRead.int32s(line, "greedy_ids")
            let top = try #require(line["top8"] as? [[[NSNumber]]], "\(c.fixture): top8")
            let ids = prompt + greedy
            try #require(!prompt.isEmpty && top.count == greedy.count, "\(c.fixture): \(top.count) positions for \(greedy.count) tokens")
            let state = model.decoder.makeState(contextLength: ids.count + 1, batchSize: ids.count)
            ids.withUnsafeBufferPointer { model.decoder.forward($0, state: state, logitRows: 0..<ids.count) }
            for (i, best) in top.enumerated() {
                try #require(best.count == 8 && best.allSatisfy { $0.count == 2 }, "\(c.fixture): line \(n) position \(i)")
                let logits = state.logits(row: prompt.count - 1 + i)
                for pair in best {
                    let difference = abs(Double(logits[pair[0].intValue]) - pair[1].doubleValue)
                    d.largest = max(d.largest, difference)
                    d.total += difference
                    d.count += 1
                }
                d.positions += 1
                if best[0][1].doubleValue - best[1][1].doubleValue >= c.margin {
                    d.clear += 1
                    let argmax = logits.indices.max { logits[$0] < logits[$1] }!
                    if argmax != best[0][0].intValue { d.disagreements.append("line \(n) position \(i): \(argmax) for \(best[0][0])") }
                }
            }
        }
        return d
    }

    @Test("logits are within float rounding of llama.cpp's at every position, and the argmax agrees wherever llama.cpp's best two are clearly apart",
          arguments: cases)
    func logits(_ c: Case) throws {
        let d = try Self.differences(c)
        print("\(c.fixture): \(d.positions) positions, difference mean \(d.mean), largest \(d.largest); argmax differs at \(d.disagreements.count) of \(d.clear) positions with a margin of \(c.margin)")
        #expect(d.positions >= 90)
        #expect(d.mean <= c.mean, "\(c.fixture): logits differ from llama.cpp's by \(d.mean) on average")
        #expect(d.largest <= c.largest, "\(c.fixture): a logit differs from llama.cpp's by \(d.largest)")
        #expect(d.disagreements.isEmpty, "\(c.fixture): \(d.disagreements)")
    }
}
