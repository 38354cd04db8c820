import ArgumentParser
import Foundation
import Inference

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the token ids of a text as a JSON array.",
        discussion: "Special tokens such as <|im_start|> written in the text are parsed unless --no-special is given."
    )

    @OptionGroup var modelOptions: ModelOptions

    @Flag(name: .long, help: "Treat special-token text as plain text.")
    var noSpecial = false

    @Flag(name: .long, help: "Add the beginning-of-sequence token even if the model does not ask for one.")
    var bos = false

    @Argument(help: "The text to tokenize.")
    var text: String

    func run() throws {
        let lm = try modelOptions.load()
        let ids = lm.tokenizer.encode(text, parseSpecial: !noSpecial, addBOS: bos ? true : nil)
        writeOut("[" + ids.map(String.init).joined(separator: ", ") + "]\n")
    }
}
