import Foundation
import Inference
import TestKit
import Testing

/// Paths and shared objects for the tests.
enum TestSupport {
    static let testsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let repositoryRoot = Paths.repositoryRoot
    static let fixtures = testsDirectory.appendingPathComponent("Fixtures")

    /// The model deploy/setup.sh installs (or $CHORUS_MODEL).
    static var modelPath: String { Models.smolLM2 }

    /// Gemma-3-270M as deploy/setup.sh installs it (or $CHORUS_GEMMA_MODEL).
    static var gemmaPath: String { Models.gemma }

    /// The model file, or an error telling how to install it.
    static func requireModelFile(_ path: String = modelPath) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else { throw MissingModel(path: path, reason: "no such file") }
        return path
    }

    /// The real models, each loaded once for all tests; a test that needs one
    /// fails with a message saying how to install it if it cannot be loaded.
    static func model() throws -> LanguageModel { try loadedModel.get() }
    static func gemma() throws -> LanguageModel { try loadedGemma.get() }
    static func qwen05() throws -> LanguageModel { try loadedQwen05.get() }
    static func qwen15() throws -> LanguageModel { try loadedQwen15.get() }

    private static let loadedModel = load(modelPath)
    private static let loadedGemma = load(gemmaPath)
    private static let loadedQwen05 = load(Models.qwen05)
    private static let loadedQwen15 = load(Models.qwen15)

    private static func load(_ path: String) -> Result<LanguageModel, MissingModel> {
        do {
            return .success(try LanguageModel(path: try requireModelFile(path)))
        } catch let e as MissingModel {
            return .failure(e)
        } catch {
            return .failure(MissingModel(path: path, reason: "\(error)"))
        }
    }

    /// Each line of a JSON-lines fixture.
    static func jsonLines(_ relativePath: String) throws -> [[String: Any]] {
        try JSONRead.lines(fixtures.appendingPathComponent(relativePath))
    }

    static func temporaryFile(_ name: String) -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(UUID().uuidString + "-" + name)
    }
}

/// The test model is not installed (or does not load).
struct MissingModel: Error, CustomStringConvertible {
    let path: String
    let reason: String
    var description: String {
        "cannot load the test model \(path): \(reason). Run deploy/setup.sh first (it installs the models), or set CHORUS_MODEL"
    }
}

/// Checks a model against one of llama.cpp's greedy references
/// (`reference.jsonl`: prompt_ids, greedy_ids, margins, top5_first): fed the
/// prompt and llama.cpp's greedy tokens, the model's argmax must equal
/// llama.cpp's token at every position whose margin is at least `margin`.
/// Returns the number of positions checked.
@discardableResult
func expectTeacherForcedParity(_ model: LanguageModel, _ fixture: String, margin: Double = 0.5, context: Int = 512,
                               sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
    let session = model.makeSession(contextLength: context)
    var checked = 0, agreed = 0
    for line in try TestSupport.jsonLines(fixture) {
        let prompt = try JSONRead.int32s(line, "prompt_ids")
        let greedy = try JSONRead.int32s(line, "greedy_ids")
        let margins = try JSONRead.doubles(line, "margins")
        try #require(margins.count >= greedy.count, "\(fixture): \(margins.count) margins for \(greedy.count) greedy tokens", sourceLocation: sourceLocation)
        if let text = line["prompt"] as? String {
            #expect(model.tokenizer.encode(text) == prompt, "\(fixture): the prompt tokenizes as in llama.cpp", sourceLocation: sourceLocation)
        }
        let scores = try session.score(prompt: prompt, continuation: greedy)
        try #require(scores.count == greedy.count, "\(fixture): \(scores.count) scores for \(greedy.count) tokens", sourceLocation: sourceLocation)
        for (i, s) in scores.enumerated() where margins[i] >= margin {
            checked += 1
            if s.argmax == greedy[i] { agreed += 1 } else {
                Issue.record("\(fixture) \((line["prompt"] as? String ?? "").prefix(40).debugDescription) step \(i): argmax \(s.argmax), llama.cpp \(greedy[i]), margin \(margins[i])",
                             sourceLocation: sourceLocation)
            }
            #expect(s.logprob < 0 && s.logprob > -30, sourceLocation: sourceLocation)
        }
        // The first step's argmax is among llama.cpp's five best.
        if let top5 = line["top5_first"] as? [[NSNumber]], let first = scores.first {
            let best: [Int32] = top5.compactMap { $0.first?.int32Value }
            #expect(best.contains(first.argmax), sourceLocation: sourceLocation)
        }
    }
    #expect(agreed == checked, "\(fixture): \(agreed) of \(checked) positions agree", sourceLocation: sourceLocation)
    return checked
}

/// Every line of a llama.cpp tokenizer fixture (`text`, `ids`) tokenizes exactly
/// (special tokens parsed, no BOS added). Returns the number of lines.
@discardableResult
func expectTokenizerParity(_ tokenizer: Tokenizer, _ fixture: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
    let lines = try TestSupport.jsonLines(fixture)
    var mismatches = 0
    for line in lines {
        let text = try JSONRead.value(line, "text", as: String.self)
        let expected = try JSONRead.int32s(line, "ids")
        let ids = tokenizer.encode(text)
        if ids != expected {
            mismatches += 1
            Issue.record("\(fixture) \(text.prefix(80).debugDescription): \(ids.prefix(16)) vs \(expected.prefix(16))", sourceLocation: sourceLocation)
        }
    }
    #expect(mismatches == 0, "\(fixture): \(mismatches) of \(lines.count) lines differ", sourceLocation: sourceLocation)
    return lines.count
}

/// Deterministic random numbers for kernel tests.
struct TestRandom {
    var generator: SeededGenerator
    init(_ seed: UInt64) { generator = SeededGenerator(seed: seed) }
    mutating func float(_ range: ClosedRange<Float> = -1...1) -> Float {
        range.lowerBound + generator.nextUnit() * (range.upperBound - range.lowerBound)
    }
    mutating func floats(_ n: Int, _ range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<n).map { _ in float(range) }
    }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: generator.next()) }
    mutating func int(_ range: Range<Int>) -> Int { range.lowerBound + Int(generator.next() % UInt64(range.count)) }
}

/// Random blocks of a quantised type with realistic scales.
func randomBlocks(_ type: GGMLType, count: Int, random: inout TestRandom) -> [UInt8] {
    var out: [UInt8] = []
    func half(_ x: Float) { withUnsafeBytes(of: Float16(x).bitPattern.littleEndian) { out.append(contentsOf: $0) } }
    switch type {
    case .f32:
        for _ in 0..<count { withUnsafeBytes(of: random.float(-2...2).bitPattern.littleEndian) { out.append(contentsOf: $0) } }
    case .f16:
        for _ in 0..<count { half(random.float(-2...2)) }
    case .q8_0:
        for _ in 0..<(count / 32) { half(random.float(-0.05...0.05)); for _ in 0..<32 { out.append(random.byte()) } }
    case .q4_0:
        for _ in 0..<(count / 32) { half(random.float(-0.1...0.1)); for _ in 0..<16 { out.append(random.byte()) } }
    case .q4_1:
        for _ in 0..<(count / 32) {
            half(random.float(-0.1...0.1)); half(random.float(-0.5...0.5))
            for _ in 0..<16 { out.append(random.byte()) }
        }
    case .bf16:
        for _ in 0..<count {
            withUnsafeBytes(of: UInt16(random.float(-2...2).bitPattern >> 16).littleEndian) { out.append(contentsOf: $0) }
        }
    case .q5_0:
        for _ in 0..<(count / 32) { half(random.float(-0.1...0.1)); for _ in 0..<20 { out.append(random.byte()) } }
    case .q5_1:
        for _ in 0..<(count / 32) {
            half(random.float(-0.1...0.1)); half(random.float(-0.5...0.5))
            for _ in 0..<20 { out.append(random.byte()) }
        }
    case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
        // Random bits everywhere, then realistic f16 super-block scales.
        let scaleOffsets: [Int] = switch type {
        case .q2_K: [80, 82]
        case .q3_K: [108]
        case .q4_K, .q5_K: [0, 2]
        default: [208]
        }
        for _ in 0..<(count / 256) {
            var block = (0..<type.blockBytes).map { _ in random.byte() }
            for offset in scaleOffsets {
                withUnsafeBytes(of: Float16(random.float(-0.01...0.01)).bitPattern.littleEndian) {
                    block[offset] = $0[0]; block[offset + 1] = $0[1]
                }
            }
            out += block
        }
    default:
        Issue.record("no random blocks for \(type)")
    }
    return out
}

/// Asserts two float arrays agree within an absolute plus relative tolerance.
func expectClose(_ a: [Float], _ b: [Float], absolute: Float = 1e-4, relative: Float = 1e-4,
                 _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == b.count, "\(what): \(a.count) values vs \(b.count)", sourceLocation: sourceLocation)
    var worst: Float = 0
    var worstIndex = 0
    for i in 0..<min(a.count, b.count) {
        let excess = abs(a[i] - b[i]) - (absolute + relative * max(abs(a[i]), abs(b[i])))
        if excess > worst { worst = excess; worstIndex = i }
    }
    #expect(worst == 0, "\(what): index \(worstIndex) differs: \(a[worstIndex]) vs \(b[worstIndex])", sourceLocation: sourceLocation)
}
