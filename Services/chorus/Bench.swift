import ArgumentParser
import Foundation
import Inference

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prompt-processing and generation speed, alone or over many sequences at once.",
        discussion: """
            Measured like llama-bench: prompt processing evaluates --prompt-tokens random \
            tokens (default 512) in one batch from an empty cache; generation evaluates \
            --gen-tokens tokens (default 128) one at a time from an empty cache. One warm-up \
            round, then the median over --repetitions. Generation is also given as weight \
            bytes read per token and GB/s of weights (compare with chorus bench-memory, its limit).

            With --parallel, measured like llama-batched-bench instead: for each count B, B \
            sequences get random prompts of --prompt-tokens tokens (default 128), then \
            --gen-tokens (default 64) decode passes each append one greedy token to every \
            sequence; the figure is the aggregate decode speed, B x gen-tokens / seconds, \
            median over the rounds.
            """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: ArgumentHelp("Tokens in the prompt-processing test, or in each sequence's prompt with --parallel (default: 512, or 128 with --parallel).", valueName: "n"))
    var promptTokens: Int?

    @Option(name: .long, help: ArgumentHelp("Tokens in the generation test, or generated per sequence with --parallel (default: 128, or 64 with --parallel).", valueName: "n"))
    var genTokens: Int?

    @Option(name: .long, help: ArgumentHelp("Measured rounds (median reported).", valueName: "r"))
    var repetitions: Int = 5

    @Option(name: .long, help: ArgumentHelp("Decode this many sequences together, for each comma-separated count (for example 1,2,4,8,16).", valueName: "counts"))
    var parallel: String?

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    var sequenceCounts: [Int] {
        get throws {
            guard let parallel else { return [] }
            let counts = parallel.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !counts.isEmpty, counts.allSatisfy({ ($0 ?? 0) >= 1 && ($0 ?? 0) <= 1024 }) else {
                throw ValidationError("--parallel takes comma-separated sequence counts from 1 to 1024, such as 1,2,4,8,16; got '\(parallel)'")
            }
            return counts.map { $0! }
        }
    }

    func validate() throws {
        if (promptTokens ?? 1) < 1 || (genTokens ?? 1) < 1 { throw ValidationError("--prompt-tokens and --gen-tokens must be at least 1") }
        if repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
        _ = try sequenceCounts
    }

    func run() throws {
        let lm = try modelOptions.load()
        let counts = try sequenceCounts
        if counts.isEmpty { try single(lm) } else { try parallel(lm, counts: counts) }
    }

    /// One sequence: prompt processing, then generation.
    func single(_ lm: LanguageModel) throws {
        let promptTokens = promptTokens ?? 512, genTokens = genTokens ?? 128
        try checkContext(lm, promptTokens + genTokens)
        let session = lm.makeSession(contextLength: max(promptTokens, genTokens) + 16, batchSize: promptTokens)
        var random = SeededGenerator(seed: 0)
        let vocab = lm.config.vocabularySize
        var pp: [Double] = [], tg: [Double] = []
        var bytesPerToken = 0.0
        for round in 0...repetitions {
            let tokens = randomTokens(promptTokens, vocabulary: vocab, &random)
            session.reset()
            var start = Date()
            try session.evaluate(tokens)
            let ppSeconds = Date().timeIntervalSince(start)
            session.reset()
            let token = randomTokens(1, vocabulary: vocab, &random)
            let bytesBefore = session.state.weightBytesRead
            start = Date()
            for _ in 0..<genTokens { try session.evaluate(token, mode: .decode) }
            let tgSeconds = Date().timeIntervalSince(start)
            bytesPerToken = Double(session.state.weightBytesRead - bytesBefore) / Double(genTokens)
            if round > 0 {
                pp.append(Double(promptTokens) / ppSeconds)
                tg.append(Double(genTokens) / tgSeconds)
            }
            if !json {
                writeErr(String(format: "%@ round %d: pp %.1f tok/s, tg %.1f tok/s\n", round == 0 ? "warm-up" : "measured",
                                round, Double(promptTokens) / ppSeconds, Double(genTokens) / tgSeconds))
            }
        }
        let ppMedian = median(pp), tgMedian = median(tg)
        // Decoding reads every weight once per token: its speed in bytes of weights per second.
        let weightGBs = bytesPerToken * tgMedian / 1e9
        if json {
            try printJSON(["engine": "chorus", "kernels": KernelSelection.path.rawValue, "cpu": CPUFeatures.current.names,
                           "threads": lm.threads, "prompt_tokens": promptTokens,
                           "gen_tokens": genTokens, "repetitions": repetitions,
                           "prompt_tokens_per_second": round(ppMedian, 1), "decode_tokens_per_second": round(tgMedian, 1),
                           "decode_weight_bytes_per_token": Int(bytesPerToken), "decode_weight_gb_per_second": round(weightGBs, 2)])
        } else {
            writeOut(String(format: "pp%d: %.1f tok/s   tg%d: %.1f tok/s, %.1f MB of weights per token, %.2f GB/s   (%d threads, median of %d, %@ kernels)\n",
                            promptTokens, ppMedian, genTokens, tgMedian, bytesPerToken / 1e6, weightGBs, lm.threads, repetitions,
                            KernelSelection.path.rawValue))
        }
    }

    /// B sequences decoded together, for each B in `counts`.
    func parallel(_ lm: LanguageModel, counts: [Int]) throws {
        let promptTokens = promptTokens ?? 128, genTokens = genTokens ?? 64
        let context = promptTokens + genTokens + 1
        try checkContext(lm, context)
        let vocab = lm.config.vocabularySize
        var results: [[String: Any]] = []
        for b in counts {
            var random = SeededGenerator(seed: UInt64(b))
            let sessions = lm.makeSessions(b, contextLength: context, batchSize: promptTokens)
            let prompts = (0..<b).map { _ in randomTokens(promptTokens, vocabulary: vocab, &random) }
            let batch = lm.makeBatch(sequences: b, contextLength: context)
            var speeds: [Double] = []
            for round in 0...repetitions {
                // Each round starts from the prompts: the first evaluates them, later ones reuse them from the caches.
                var logits = try zip(sessions, prompts).map { session, prompt in try session.prepare(prompt).logits }
                var tokens = logits.map { Sampler.argmax($0) }
                let start = Date()
                for _ in 0..<genTokens {
                    logits = try lm.decode(Array(zip(sessions, tokens)), batch: batch)
                    tokens = logits.map { Sampler.argmax($0) }
                }
                let speed = Double(b * genTokens) / Date().timeIntervalSince(start)
                if round > 0 { speeds.append(speed) }
                if !json {
                    writeErr(String(format: "%d sequences, %@ round %d: %.1f tok/s\n", b, round == 0 ? "warm-up" : "measured", round, speed))
                }
            }
            let speed = median(speeds)
            results.append(["sequences": b, "decode_tokens_per_second": round(speed, 1)])
            if !json {
                writeOut(String(format: "B=%d: %.1f tok/s aggregate decode, %.1f per sequence   (%d-token prompts, %d generated, %d threads, median of %d)\n",
                                b, speed, speed / Double(b), promptTokens, genTokens, lm.threads, repetitions))
            }
        }
        if json {
            try printJSON(["engine": "chorus", "kernels": KernelSelection.path.rawValue, "cpu": CPUFeatures.current.names,
                           "threads": lm.threads, "prompt_tokens": promptTokens, "gen_tokens": genTokens,
                           "repetitions": repetitions, "parallel": results])
        }
    }

    func checkContext(_ lm: LanguageModel, _ tokens: Int) throws {
        if tokens > lm.config.contextLength {
            throw ValidationError("the test needs \(tokens) tokens of context but the model holds \(lm.config.contextLength); lower --prompt-tokens or --gen-tokens")
        }
    }

    func randomTokens(_ n: Int, vocabulary: Int, _ random: inout SeededGenerator) -> [Int32] {
        (0..<n).map { _ in Int32(3 + Int(random.next() % UInt64(vocabulary - 3))) }
    }

    func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
