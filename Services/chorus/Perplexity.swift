import ArgumentParser
import Foundation
import Inference

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure perplexity on a text file, as llama.cpp's llama-perplexity does.",
        discussion: """
            The file is tokenized as a whole and cut into chunks of --context tokens \
            (trailing tokens dropped). Each chunk is evaluated from an empty cache and only \
            its second half is scored. Prints `PPL = <value>`; progress goes to standard error.
            """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Option(name: .long, help: ArgumentHelp("Text file to evaluate.", valueName: "path"))
    var file: String

    @Option(name: .long, help: ArgumentHelp("Tokens per chunk.", valueName: "n"))
    var context: Int = 512

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw CLIError("cannot read \(file)")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw CLIError("\(file) is not UTF-8 text") }
        let lm = try modelOptions.load()
        // As llama-perplexity: BOS first and at the start of every chunk when the model asks for one.
        let tokens = lm.tokenizer.encode(text, parseSpecial: false, addBOS: lm.tokenizer.addBOS)
        let session = lm.makeSession(contextLength: context, batchSize: context)
        let start = Date()
        let ppl: Double
        do {
            ppl = try session.perplexity(tokens: tokens, context: context,
                                         chunkStart: lm.tokenizer.addBOS ? lm.tokenizer.bosToken : nil) { done, total, sofar in
                writeErr(String(format: "\rchunk %d/%d  PPL so far %.4f", done, total, sofar))
                if done == total { writeErr("\n") }
            }
        } catch {
            throw userFacing(error)
        }
        let seconds = Date().timeIntervalSince(start)
        if json {
            try printJSON(["perplexity": round(ppl, 4), "tokens": tokens.count, "chunks": tokens.count / context,
                           "context": context, "seconds": round(seconds, 3)])
        } else {
            writeOut(String(format: "PPL = %.4f\n", ppl))
            writeErr(String(format: "%d tokens, %d chunks of %d, %.1f s\n", tokens.count, tokens.count / context, context, seconds))
        }
    }
}
