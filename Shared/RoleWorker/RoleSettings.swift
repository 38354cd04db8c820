import Foundation
import Inference
import Protocol
import ServiceKit

/// A role's model and sampling settings: `<ROLE>_MODEL`, `_THREADS`,
/// `_TEMPERATURE`, `_TOP_K`, `_TOP_P`, `_MIN_P`, `_REPEAT_PENALTY`,
/// `_MAX_TOKENS`, `_CONTEXT` and `_SLOTS` in the config (ROLE in capitals), with
/// defaults per role. `CHORUS_MODEL` is every role's default model.
public struct RoleSettings: Sendable {
    public var role: Role
    public var model: String
    public var threads: Int
    public var temperature: Double
    public var topK: Int
    public var topP: Double
    public var minP: Double
    public var repeatPenalty: Double
    public var maxTokens: Int
    public var context: Int
    /// Requests served at once, each in its own slot (a KV cache of `context` tokens).
    public var slots: Int
    public var promptsDirectory: String

    public init(role: Role, configuration c: Configuration) throws {
        self.role = role
        let prefix = role.settingsPrefix + "_"
        let defaultModel = c.string("CHORUS_MODEL", default: "models/SmolLM2-135M-Instruct.Q4_1.gguf")
        model = c.resolve(c.string(prefix + "MODEL", default: defaultModel))
        threads = try c.int(prefix + "THREADS", default: 1)
        let defaultTemperature: Double = role == .generator ? 0.3 : 0
        temperature = try c.double(prefix + "TEMPERATURE", default: defaultTemperature)
        topK = try c.int(prefix + "TOP_K", default: 40)
        topP = try c.double(prefix + "TOP_P", default: 0.95)
        minP = try c.double(prefix + "MIN_P", default: 0.05)
        repeatPenalty = try c.double(prefix + "REPEAT_PENALTY", default: 1.0)
        maxTokens = try c.int(prefix + "MAX_TOKENS", default: 320)
        context = try c.int(prefix + "CONTEXT", default: 2048)
        slots = try c.int(prefix + "SLOTS", default: 4)
        promptsDirectory = c.path("CHORUS_PROMPTS", default: "deploy/prompts")
        if threads < 1 || threads > 256 { throw Configuration.Error.invalid(key: prefix + "THREADS", value: String(threads), expected: "1 to 256") }
        if maxTokens < 1 { throw Configuration.Error.invalid(key: prefix + "MAX_TOKENS", value: String(maxTokens), expected: "at least 1") }
        if slots < 1 || slots > 64 { throw Configuration.Error.invalid(key: prefix + "SLOTS", value: String(slots), expected: "1 to 64") }
        if context < 64 { throw Configuration.Error.invalid(key: prefix + "CONTEXT", value: String(context), expected: "at least 64") }
    }

    public var promptPath: String { promptsDirectory + "/" + role.rawValue + ".txt" }

    /// The sampling for one request: these settings, overridden by the job's, with the stage's seed.
    public func sampling(_ o: SamplingOverride?, seed: UInt64) -> (SamplingParameters, SamplingRecord, Int) {
        let t = o?.temperature ?? temperature
        let k = o?.topK ?? topK
        let p = o?.topP ?? topP
        let m = o?.minP ?? minP
        let n = o?.maxTokens ?? maxTokens
        let params = SamplingParameters(temperature: Float(t), topK: k, topP: Float(p), minP: Float(m),
                                        repetitionPenalty: Float(repeatPenalty), seed: seed)
        let record = SamplingRecord(temperature: t, topK: k, topP: p, minP: m, repetitionPenalty: repeatPenalty, maxTokens: n, seed: seed)
        return (params, record, n)
    }
}
