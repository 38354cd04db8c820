#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How the next token is chosen from the logits.
public struct SamplingParameters: Sendable, Equatable, Codable {
    /// 0 chooses the most likely token (greedy); higher values flatten the distribution.
    public var temperature: Float
    /// Keep only the k most likely tokens (0 keeps all).
    public var topK: Int
    /// Keep the smallest set of tokens whose probabilities add up to p (1 keeps all).
    public var topP: Float
    /// Drop tokens less likely than min-p times the most likely one (0 keeps all).
    public var minP: Float
    /// Divide positive logits (multiply negative ones) of recently seen tokens by this (1 disables).
    public var repetitionPenalty: Float
    /// How many recent tokens the repetition penalty looks at.
    public var repetitionWindow: Int
    /// Seed of the random generator; the same seed and input always give the same tokens.
    public var seed: UInt64?

    public init(temperature: Float = 0.8, topK: Int = 40, topP: Float = 0.95, minP: Float = 0.05,
                repetitionPenalty: Float = 1.0, repetitionWindow: Int = 64, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.repetitionWindow = repetitionWindow
        self.seed = seed
    }

    public static let greedy = SamplingParameters(temperature: 0, topK: 1, topP: 1, minP: 0)

    /// Checks the values, naming the first one out of range.
    public func validate() throws(SamplingError) {
        if !(temperature >= 0) || !temperature.isFinite { throw .invalid("temperature must be 0 or more, got \(temperature)") }
        if topK < 0 { throw .invalid("top-k must be 0 or more, got \(topK)") }
        if !(topP > 0 && topP <= 1) { throw .invalid("top-p must be in (0, 1], got \(topP)") }
        if !(minP >= 0 && minP <= 1) { throw .invalid("min-p must be in [0, 1], got \(minP)") }
        if !(repetitionPenalty > 0) || !repetitionPenalty.isFinite { throw .invalid("repetition penalty must be above 0, got \(repetitionPenalty)") }
        if repetitionWindow < 0 { throw .invalid("repetition window must be 0 or more, got \(repetitionWindow)") }
    }
}

public enum SamplingError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    public var description: String {
        switch self { case let .invalid(m): return m }
    }
}

/// A small, fast, seedable random generator (xoshiro256**, seeded by SplitMix64).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var z = seed
        func splitMix() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// A uniform Float in [0, 1).
    public mutating func nextUnit() -> Float {
        Float(next() >> 40) * (1.0 / Float(1 << 24))
    }
}

/// Chooses tokens from logits: repetition penalty, then top-k, top-p and min-p
/// on the model's distribution, then temperature, then a seeded draw (the
/// order llama.cpp uses).
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    public let seed: UInt64
    private var random: SeededGenerator
    private var candidates: [(id: Int32, logit: Float)] = []
    /// The natural-log probability of the token `sample` chose last, under
    /// the model's untempered distribution (after any repetition penalty)
    /// over the `topK` most likely tokens, the rest carrying next to nothing:
    /// how sure the model was of it. Nil after a greedy choice, which does
    /// not look at the distribution.
    public private(set) var lastLogProbability: Float?

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        var seed = parameters.seed ?? 0
        if parameters.seed == nil {
            var system = SystemRandomNumberGenerator()
            seed = system.next()
        }
        self.seed = seed
        random = SeededGenerator(seed: seed)
    }

    /// Picks the next token. `recent` are the tokens seen so far (for the penalty).
    public mutating func sample(logits: UnsafeBufferPointer<Float>, recent: ArraySlice<Int32> = []) -> Int32 {
        let p = parameters
        lastLogProbability = nil
        let penalised = p.repetitionPenalty != 1 && p.repetitionWindow > 0 && !recent.isEmpty
        if p.temperature == 0 || p.topK == 1 {
            if !penalised { return Self.argmax(logits) }
        }
        candidates.removeAll(keepingCapacity: true)
        candidates.reserveCapacity(logits.count)
        for i in 0..<logits.count { candidates.append((Int32(i), logits[i])) }
        if penalised {
            var seen = Set<Int32>()
            for t in recent.suffix(p.repetitionWindow) where t >= 0 && Int(t) < logits.count && seen.insert(t).inserted {
                let l = candidates[Int(t)].logit
                candidates[Int(t)].logit = l > 0 ? l / p.repetitionPenalty : l * p.repetitionPenalty
            }
        }
        if p.temperature == 0 || p.topK == 1 {
            var best = 0
            for i in 1..<candidates.count where candidates[i].logit > candidates[best].logit { best = i }
            return candidates[best].id
        }
        // top-k: partial order is enough, then sort what is kept.
        let k = p.topK > 0 ? min(p.topK, candidates.count) : candidates.count
        if k < candidates.count {
            candidates = Self.largest(candidates, k)
        }
        candidates.sort { $0.logit > $1.logit || ($0.logit == $1.logit && $0.id < $1.id) }

        // Probabilities of the untempered distribution for top-p and min-p.
        let maxLogit = candidates[0].logit
        var probs = candidates.map { expf($0.logit - maxLogit) }
        var total = probs.reduce(0, +)
        let logTotal = logf(total)
        func chosen(_ i: Int) -> Int32 {
            lastLogProbability = candidates[i].logit - maxLogit - logTotal
            return candidates[i].id
        }
        if p.topP < 1 {
            var cumulative: Float = 0
            var keep = candidates.count
            for i in 0..<candidates.count {
                cumulative += probs[i] / total
                if cumulative >= p.topP { keep = i + 1; break }
            }
            candidates.removeSubrange(keep...)
            probs.removeSubrange(keep...)
            total = probs.reduce(0, +)
        }
        if p.minP > 0 {
            let threshold = p.minP * probs[0]
            var keep = 1
            while keep < probs.count && probs[keep] >= threshold { keep += 1 }
            candidates.removeSubrange(keep...)
            probs.removeSubrange(keep...)
        }
        // Temperature, then draw.
        var weights = candidates.map { expf(($0.logit - maxLogit) / p.temperature) }
        total = weights.reduce(0, +)
        let r = random.nextUnit() * total
        var cumulative: Float = 0
        for i in 0..<weights.count {
            cumulative += weights[i]
            if r < cumulative { return chosen(i) }
        }
        weights.removeAll()
        return chosen(candidates.count - 1)
    }

    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue {
            bestValue = logits[i]
            best = i
        }
        return Int32(best)
    }

    /// The k entries with the largest logits (unordered), by a quickselect.
    static func largest(_ items: [(id: Int32, logit: Float)], _ k: Int) -> [(id: Int32, logit: Float)] {
        var a = items
        var lo = 0
        var hi = a.count - 1
        while lo < hi {
            let pivot = a[(lo + hi) / 2].logit
            var i = lo
            var j = hi
            while i <= j {
                while a[i].logit > pivot { i += 1 }
                while a[j].logit < pivot { j -= 1 }
                if i <= j { a.swapAt(i, j); i += 1; j -= 1 }
            }
            if k - 1 <= j { hi = j } else if k - 1 >= i { lo = i } else { break }
        }
        return Array(a[..<k])
    }
}
