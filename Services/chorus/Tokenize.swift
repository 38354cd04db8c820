import ArgumentParser
import Foundation
import Inference

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the token ids of a text as a JSON array.",
        discussion: """
            Tokenizes as llama.cpp's llama_tokenize(text, add_special: false, parse_special: true): \
            special tokens such as <|im_start|> or <bos> written in the text are parsed unless \
            --no-special is given, and no beginning-of-sequence token is added unless --bos is given \
            (write it in the text where wanted).
            """
    )

    @OptionGroup var modelOptions: ModelOptions

    @Flag(name: .long, help: "Treat special-token text as plain text.")
    var noSpecial = false

    @Flag(name: .long, help: "Start with the model's beginning-of-sequence token.")
    var bos = false

    @Argument(help: "The text to tokenize.")
    var text: String

    func run() throws {
        let lm = try modelOptions.load()
        let ids = lm.tokenizer.encode(text, parseSpecial: !noSpecial, addBOS: bos)
        writeOut("[" + ids.map(String.init).joined(separator: ", ") + "]\n")
    }
}
