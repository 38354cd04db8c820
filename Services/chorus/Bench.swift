import ArgumentParser
import Foundation
import Inference

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prompt-processing and generation speed.",
        discussion: """
            Measured like llama-bench: prompt processing evaluates --prompt-tokens random \
            tokens in one batch from an empty cache; generation evaluates --gen-tokens \
            tokens one at a time from an empty cache. One warm-up round, then the median \
            over --repetitions. Generation is also given as weight bytes read per token and \
            GB/s of weights (compare with chorus bench-memory, its limit).
            """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: ArgumentHelp("Tokens in the prompt-processing test.", valueName: "n"))
    var promptTokens: Int = 512

    @Option(name: .long, help: ArgumentHelp("Tokens in the generation test.", valueName: "n"))
    var genTokens: Int = 128

    @Option(name: .long, help: ArgumentHelp("Measured rounds (median reported).", valueName: "r"))
    var repetitions: Int = 5

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if promptTokens < 1 || genTokens < 1 { throw ValidationError("--prompt-tokens and --gen-tokens must be at least 1") }
        if repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
    }

    func run() throws {
        let lm = try modelOptions.load()
        let session = lm.makeSession(contextLength: max(promptTokens, genTokens) + 16, batchSize: promptTokens)
        var random = SeededGenerator(seed: 0)
        let vocab = lm.config.vocabularySize
        var pp: [Double] = [], tg: [Double] = []
        var bytesPerToken = 0.0
        for round in 0...repetitions {
            let tokens = (0..<promptTokens).map { _ in Int32(3 + Int(random.next() % UInt64(vocab - 3))) }
            session.reset()
            var start = Date()
            try session.evaluate(tokens)
            let ppSeconds = Date().timeIntervalSince(start)
            session.reset()
            let token = Int32(3 + Int(random.next() % UInt64(vocab - 3)))
            let bytesBefore = session.state.weightBytesRead
            start = Date()
            for _ in 0..<genTokens { try session.evaluate([token], mode: .decode) }
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
            try printJSON(["engine": "chorus", "threads": lm.threads, "prompt_tokens": promptTokens,
                           "gen_tokens": genTokens, "repetitions": repetitions,
                           "prompt_tokens_per_second": round(ppMedian, 1), "decode_tokens_per_second": round(tgMedian, 1),
                           "decode_weight_bytes_per_token": Int(bytesPerToken), "decode_weight_gb_per_second": round(weightGBs, 2)])
        } else {
            writeOut(String(format: "pp%d: %.1f tok/s   tg%d: %.1f tok/s, %.1f MB of weights per token, %.2f GB/s   (%d threads, median of %d)\n",
                            promptTokens, ppMedian, genTokens, tgMedian, bytesPerToken / 1e6, weightGBs, lm.threads, repetitions))
        }
    }

    func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
