import ArgumentParser
import Foundation
import Inference

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score given tokens after a prompt (teacher forcing).",
        discussion: """
            Evaluates the prompt followed by the given token ids and, for each given id, \
            prints the model's most likely token at that position and the natural-log \
            probability of the given id. With --json: one object with `argmax` and `logprobs`.
            """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: ArgumentHelp("Prompt text (special tokens parsed).", valueName: "text"))
    var prompt: String

    @Option(name: .long, help: ArgumentHelp("Comma-separated token ids to score, e.g. 12,34,56.", valueName: "ids"))
    var ids: String

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    func parsedIDs() throws -> [Int32] {
        let parts = ids.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        var out: [Int32] = []
        for p in parts {
            guard let v = Int32(p) else { throw ValidationError("--ids: '\(p)' is not a token id (expected e.g. 12,34,56)") }
            out.append(v)
        }
        if out.isEmpty { throw ValidationError("--ids is empty") }
        return out
    }

    func validate() throws { _ = try parsedIDs() }

    func run() throws {
        let forced = try parsedIDs()
        let lm = try modelOptions.load()
        let promptIDs = lm.tokenizer.encode(prompt, parseSpecial: true)
        let session = lm.makeSession(contextLength: promptIDs.count + forced.count + 1)
        let scores: [TokenScore]
        do { scores = try session.score(prompt: promptIDs, continuation: forced) } catch { throw userFacing(error) }
        if json {
            try printJSON([
                "prompt_ids": promptIDs.map(Int.init),
                "ids": forced.map(Int.init),
                "argmax": scores.map { Int($0.argmax) },
                "logprobs": scores.map { round($0.logprob, 6) },
            ])
        } else {
            writeOut("position\tid\targmax\tlogprob\ttoken\n")
            for (i, s) in scores.enumerated() {
                let text = lm.tokenizer.decode([forced[i]], special: true).debugDescription
                writeOut("\(i)\t\(forced[i])\t\(s.argmax)\t\(String(format: "%.4f", s.logprob))\t\(text)\n")
            }
            let total = scores.reduce(0) { $0 + $1.logprob }
            writeOut(String(format: "total logprob %.4f over %d tokens\n", total, scores.count))
        }
    }
}
