import ArgumentParser
import Foundation
import Inference

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text from a prompt, streaming it as it is produced.",
        discussion: """
            --prompt is raw text: special tokens such as <|im_start|> are parsed, and a \
            beginning-of-sequence token is added only if the model asks for one. --chat \
            wraps the text as a user turn in the model's chat template (with its default \
            system prompt unless --system is given). Statistics go to standard error; \
            with --json, one JSON object is printed at the end instead of the text.
            """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: ArgumentHelp("Raw prompt text.", valueName: "text"))
    var prompt: String?

    @Option(name: .long, help: ArgumentHelp("A user message, wrapped in the chat template.", valueName: "text"))
    var chat: String?

    @Option(name: .long, help: ArgumentHelp("System prompt for --chat (default: the model's own).", valueName: "text"))
    var system: String?

    @Option(name: .long, help: ArgumentHelp("Most tokens to generate.", valueName: "n"))
    var maxTokens: Int = 256

    @Option(name: .long, help: ArgumentHelp("Sampling temperature; 0 is greedy.", valueName: "t"))
    var temperature: Float = 0.8

    @Option(name: .long, help: ArgumentHelp("Keep the k most likely tokens (0 keeps all).", valueName: "k"))
    var topK: Int = 40

    @Option(name: .long, help: ArgumentHelp("Nucleus sampling threshold (1 disables).", valueName: "p"))
    var topP: Float = 0.95

    @Option(name: .long, help: ArgumentHelp("Drop tokens below p times the best one's probability (0 disables).", valueName: "p"))
    var minP: Float = 0.05

    @Option(name: .long, help: ArgumentHelp("Penalty for repeating recent tokens (1 disables).", valueName: "x"))
    var repeatPenalty: Float = 1.0

    @Option(name: .long, help: ArgumentHelp("Random seed; the same seed and input give the same text.", valueName: "s"))
    var seed: UInt64?

    @Option(name: .long, help: ArgumentHelp("Stop before this string (repeatable).", valueName: "text"))
    var stop: [String] = []

    @Option(name: .long, help: ArgumentHelp("Context length in tokens (default: the model's).", valueName: "n"))
    var context: Int?

    @Flag(name: .long, help: "Print one JSON object at the end instead of streaming text.")
    var json = false

    func validate() throws {
        if (prompt == nil) == (chat == nil) { throw ValidationError("give exactly one of --prompt or --chat") }
        if system != nil && chat == nil { throw ValidationError("--system only applies to --chat") }
        if maxTokens < 0 { throw ValidationError("--max-tokens must be 0 or more") }
        if let context, context < 2 { throw ValidationError("--context must be at least 2") }
    }

    func run() throws {
        let lm = try modelOptions.load()
        let promptIDs: [Int32]
        if let chat {
            var messages: [ChatMessage] = []
            if let system { messages.append(.system(system)) }
            messages.append(.user(chat))
            promptIDs = lm.chatPrompt(messages)
        } else {
            promptIDs = lm.tokenizer.encodePrompt(prompt ?? "")
        }
        let sampling = SamplingParameters(temperature: temperature, topK: topK, topP: topP, minP: minP,
                                          repetitionPenalty: repeatPenalty, seed: seed)
        let session = lm.makeSession(contextLength: context)
        let request = GenerationRequest(prompt: promptIDs, maxTokens: maxTokens, sampling: sampling, stopStrings: stop)
        let result: GenerationResult
        do {
            result = try session.generate(request) { piece in
                if !json { writeOut(piece) }
                return true
            }
        } catch {
            throw userFacing(error)
        }
        if json {
            try printJSON([
                "model": lm.path,
                "prompt_ids": result.promptTokens.map(Int.init),
                "ids": result.tokens.map(Int.init),
                "text": result.text,
                "stop_reason": result.stopReason.rawValue,
                "seed": result.seed,
                "prompt_tokens": result.promptTokens.count,
                "generated_tokens": result.tokens.count,
                "prompt_seconds": round(result.promptSeconds, 6),
                "generation_seconds": round(result.generationSeconds, 6),
                "prompt_tokens_per_second": round(result.promptTokensPerSecond, 2),
                "decode_tokens_per_second": round(result.decodeTokensPerSecond, 2),
                "threads": lm.threads,
                "peak_resident_mb": round(peakResidentMegabytes(), 1),
            ])
        } else {
            writeOut("\n")
            writeErr(String(format: "[prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s | stop: %@ | seed: %llu | peak memory: %.0f MB]\n",
                            result.promptTokens.count, result.promptTokensPerSecond, result.tokens.count,
                            result.decodeTokensPerSecond, result.stopReason.rawValue, result.seed, peakResidentMegabytes()))
        }
    }
}
