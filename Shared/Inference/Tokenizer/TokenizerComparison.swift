import Foundation

extension Tokenizer {
    /// Texts that exercise a tokenizer's corners: code, numbers, Chinese,
    /// emoji, runs of whitespace, special tokens written into text, and a
    /// chat turn.
    public static let probeTexts: [String] = [
        "Janet's ducks lay 16 eggs per day; she sells the remainder for $2 each: 16 - 3 - 4 = 9, 9 * 2 = 18.",
        "def f(x):\n    return {'a': [1, 2.5e-3, -7]}  # comment\n\n\tif x >= 10_000: print(f\"{x:>8}\")",
        "我们今天学习数学。答案是四十二。 日本語のテキストも少し。",
        "Emoji 🙂👍🏽 and accents: café, naïve, Ångström, e\u{301}.",
        "   leading spaces, trailing   \n\n\n  newlines\r\n and ALLCAPS words Don't won't I'm",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
        "<s>[INST] hi [/INST]</s><|endoftext|><bos><start_of_turn>user\nhi<end_of_turn>",
        "1234567890 3.14159 0x1F -42 1e10 ½ ²",
    ]

    /// How `other` differs from this tokenizer in anything that changes the
    /// tokens a model sees or writes: the vocabulary (each token's text and
    /// type), BOS, EOS, the end-of-generation tokens, whether prompts start
    /// with BOS, the pre-tokenizer, and the ids of each probe text. Empty when
    /// they behave alike. At most `limit` differences are listed.
    ///
    /// One difference is not one: a padding placeholder (`[PAD<id>]`, the
    /// entries that round an embedding matrix up past the real vocabulary)
    /// typed `normal` in one file and `unused` in the other. No text becomes
    /// such a token (its text is in no merge), so either type tokenizes alike;
    /// llama.cpp's converter writes them `unused`, other converters `normal`.
    public func differences(from other: Tokenizer, probes: [String] = Tokenizer.probeTexts, limit: Int = 8) -> [String] {
        var found: [String] = []
        func note(_ s: String) { if found.count < limit { found.append(s) } }
        if vocabularySize != other.vocabularySize { note("vocabulary of \(vocabularySize) tokens against \(other.vocabularySize)") }
        for i in 0..<min(vocabularySize, other.vocabularySize) where found.count < limit {
            if tokenTexts[i] != other.tokenTexts[i] { note("token \(i) is \(String(reflecting: tokenTexts[i])) against \(String(reflecting: other.tokenTexts[i]))") }
            else if tokenTypes[i] != other.tokenTypes[i], !Self.isPaddingPlaceholder(i, tokenTexts[i], tokenTypes[i], other.tokenTypes[i]) { note("token \(i) (\(String(reflecting: tokenTexts[i]))) has type \(tokenTypes[i]) against \(other.tokenTypes[i])") }
        }
        if bosToken != other.bosToken { note("BOS \(bosToken.map(String.init) ?? "none") against \(other.bosToken.map(String.init) ?? "none")") }
        if eosToken != other.eosToken { note("EOS \(eosToken.map(String.init) ?? "none") against \(other.eosToken.map(String.init) ?? "none")") }
        if addBOS != other.addBOS { note("prompts start with BOS: \(addBOS) against \(other.addBOS)") }
        if endOfGenerationTokens != other.endOfGenerationTokens {
            note("end-of-generation tokens \(endOfGenerationTokens.sorted()) against \(other.endOfGenerationTokens.sorted())")
        }
        if preTokenizer != other.preTokenizer { note("pre-tokenizer \(String(describing: preTokenizer)) against \(String(describing: other.preTokenizer))") }
        for text in probes where found.count < limit {
            let a = encode(text), b = other.encode(text)
            if a != b { note("\(String(reflecting: String(text.prefix(40)))) becomes \(a.count) tokens against \(b.count) (\(a.prefix(8)) against \(b.prefix(8)))") }
        }
        return found
    }

    /// `[PAD<id>]` at its own id, typed normal on one side and unused on the other.
    static func isPaddingPlaceholder(_ id: Int, _ text: String, _ a: TokenType, _ b: TokenType) -> Bool {
        Set([a, b]) == [.normal, .unused] && text == "[PAD\(id)]"
    }
}
