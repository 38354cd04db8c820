import ArgumentParser
import Foundation
import Inference

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Embed text with all-MiniLM-L6-v2: a unit-length 384-dimensional vector.",
        discussion: """
            Inputs are truncated to 256 word pieces ([CLS] and [SEP] included). Prints the \
            numbers one line, or with --json one object with `ids` (the word pieces) and \
            `embedding`. Several texts (arguments, or lines of --file) are embedded together.
            """
    )

    @Option(help: ArgumentHelp("Folder with model.safetensors and vocab.txt (default: models/all-minilm-l6-v2 from setup).", valueName: "path"))
    var model: String?

    @Option(help: ArgumentHelp("Embed every non-empty line of this file.", valueName: "path"))
    var file: String?

    @Option(help: ArgumentHelp("Threads (default: every core).", valueName: "n"))
    var threads: Int?

    @Flag(help: "Print JSON (one object per text).")
    var json = false

    @Argument(help: "Texts to embed.")
    var texts: [String] = []

    func validate() throws {
        if texts.isEmpty && file == nil { throw ValidationError("give a text or --file") }
    }

    static func defaultPath() -> String {
        let modelFile = DefaultModel.path()
        return URL(fileURLWithPath: modelFile).deletingLastPathComponent().appendingPathComponent("all-minilm-l6-v2").path
    }

    func run() throws {
        var inputs = texts
        if let file {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw CLIError("cannot read \(file)")
            }
            inputs += text.split(separator: "\n").map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        }
        let embedder: SentenceEmbedder
        do { embedder = try SentenceEmbedder(directory: model ?? Self.defaultPath(), threads: threads ?? ThreadPool.availableCores) } catch {
            throw CLIError("\(error)")
        }
        let start = Date()
        let vectors = embedder.embed(inputs)
        let seconds = Date().timeIntervalSince(start)
        for (text, v) in zip(inputs, vectors) {
            if json {
                try printJSON(["text": text, "ids": embedder.tokenize(text).map(Int.init), "embedding": v.map { Double($0) }])
            } else {
                writeOut(v.map { String(format: "%.6f", $0) }.joined(separator: " ") + "\n")
            }
        }
        if !json && inputs.count > 1 {
            writeErr(String(format: "%d texts in %.3f s (%.1f per second)\n", inputs.count, seconds, Double(inputs.count) / seconds))
        }
    }
}
