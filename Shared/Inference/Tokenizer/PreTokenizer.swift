/// Splits text into the words that byte-level BPE merges within, the way
/// llama.cpp does for the pre-tokenizer a GGUF file names.
public enum PreTokenizer: Sendable, Equatable {
    /// GPT-2's pattern alone:
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    case gpt2
    /// Every `\p{N}` on its own first, then GPT-2's pattern inside each piece
    /// (SmolLM, StarCoder and a few others).
    case isolatedDigitsThenGPT2
    /// Llama 3's pattern (`llama-bpe`):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
    /// a word that is itself a token is not merged further.
    case llama3
    /// Qwen2's pattern: Llama 3's with single digits (`\p{N}` for `\p{N}{1,3}`).
    case qwen2

    static let namesByType: [(PreTokenizer, [String])] = [
        (.gpt2, ["gpt-2", "gpt2", "default"]),
        (.isolatedDigitsThenGPT2, ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"]),
        (.llama3, ["llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"]),
        (.qwen2, ["qwen2", "deepseek-r1-qwen"]),
    ]

    /// Every `tokenizer.ggml.pre` value Chorus reads.
    public static var names: [String] { namesByType.flatMap { $0.1 } }

    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, or nil if unsupported.
    public init?(ggufName: String) {
        guard let match = Self.namesByType.first(where: { $0.1.contains(ggufName) }) else { return nil }
        self = match.0
    }

    /// Splits `text` into words, each returned as its UTF-8 bytes.
    public func split(_ text: String) -> [[UInt8]] {
        let scalars = Array(text.unicodeScalars)
        let classes = scalars.map(CharacterClass.init)
        var words: [[UInt8]] = []
        func emit(_ range: Range<Int>) {
            guard !range.isEmpty else { return }
            var bytes: [UInt8] = []
            for s in scalars[range] { UTF8.encode(s) { bytes.append($0) } }
            words.append(bytes)
        }
        switch self {
        case .gpt2:
            for r in Self.gpt2Words(scalars, classes, in: 0..<scalars.count) { emit(r) }
        case .isolatedDigitsThenGPT2:
            var start = 0
            for i in 0..<scalars.count where classes[i].isNumber {
                for r in Self.gpt2Words(scalars, classes, in: start..<i) { emit(r) }
                emit(i..<(i + 1))
                start = i + 1
            }
            for r in Self.gpt2Words(scalars, classes, in: start..<scalars.count) { emit(r) }
        case .llama3:
            for r in Self.llama3Words(scalars, classes, digits: 3) { emit(r) }
        case .qwen2:
            for r in Self.llama3Words(scalars, classes, digits: 1) { emit(r) }
        }
        return words
    }

    struct CharacterClass {
        let isLetter: Bool
        let isNumber: Bool
        let isWhitespace: Bool
        /// The code point is assigned (llama.cpp's flags are all zero otherwise).
        var isAssigned = true

        init(_ s: Unicode.Scalar) {
            if s.isASCII {
                let v = s.value
                isLetter = (v >= 65 && v <= 90) || (v >= 97 && v <= 122)
                isNumber = v >= 48 && v <= 57
                isWhitespace = v == 32 || (v >= 9 && v <= 13)
                return
            }
            switch s.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
                isLetter = true; isNumber = false
            case .decimalNumber, .letterNumber, .otherNumber:
                isLetter = false; isNumber = true
            default:
                isLetter = false; isNumber = false
            }
            isWhitespace = s.properties.isWhitespace
            isAssigned = s.properties.generalCategory != .unassigned
        }
    }

    /// GPT-2's pattern over `range`, as llama.cpp's hand-written matcher applies it.
    static func gpt2Words(_ s: [Unicode.Scalar], _ c: [CharacterClass], in range: Range<Int>) -> [Range<Int>] {
        var words: [Range<Int>] = []
        let end = range.upperBound
        var previous = range.lowerBound
        var pos = range.lowerBound
        func add(_ until: Int) {
            if until > previous { words.append(previous..<until) }
            previous = until
        }
        func letter(_ i: Int) -> Bool { i < end && c[i].isLetter }
        func number(_ i: Int) -> Bool { i < end && c[i].isNumber }
        func space(_ i: Int) -> Bool { i < end && c[i].isWhitespace }
        func other(_ i: Int) -> Bool { i < end && !c[i].isWhitespace && !c[i].isLetter && !c[i].isNumber }

        while pos < end {
            let ch = s[pos]
            // 's|'t|'re|'ve|'m|'ll|'d
            if ch == "'" && pos + 1 < end {
                let next = s[pos + 1]
                if next == "s" || next == "t" || next == "m" || next == "d" {
                    pos += 2; add(pos); continue
                }
                if pos + 2 < end {
                    let third = s[pos + 2]
                    if (next == "r" && third == "e") || (next == "v" && third == "e") || (next == "l" && third == "l") {
                        pos += 3; add(pos); continue
                    }
                }
            }
            // A single leading space joins the word that follows it.
            let lead = ch == " " ? pos + 1 : pos
            if letter(lead) {
                pos = lead
                while letter(pos) { pos += 1 }
                add(pos); continue
            }
            if number(lead) {
                pos = lead
                while number(pos) { pos += 1 }
                add(pos); continue
            }
            if other(lead) {
                pos = lead
                while other(pos) { pos += 1 }
                add(pos); continue
            }
            var spaces = 0
            while space(pos + spaces) { spaces += 1 }
            // \s+(?!\S): a run of whitespace followed by a word leaves its last
            // character to that word.
            if spaces > 1 && pos + spaces < end {
                pos += spaces - 1; add(pos); continue
            }
            if spaces > 0 {
                pos += spaces; add(pos); continue
            }
            pos += 1; add(pos)
        }
        return words
    }

    /// Llama 3's and Qwen2's pattern, as llama.cpp's hand-written matcher
    /// applies it (`unicode_regex_split_custom_llama3`), with numbers in
    /// groups of at most `digits`.
    static func llama3Words(_ s: [Unicode.Scalar], _ c: [CharacterClass], digits: Int) -> [Range<Int>] {
        var words: [Range<Int>] = []
        let end = s.count
        var previous = 0
        var pos = 0
        func add(_ until: Int) {
            if until > previous { words.append(previous..<until) }
            previous = until
        }
        func letter(_ i: Int) -> Bool { i < end && c[i].isLetter }
        func number(_ i: Int) -> Bool { i < end && c[i].isNumber }
        func space(_ i: Int) -> Bool { i < end && c[i].isWhitespace }
        func lineBreak(_ i: Int) -> Bool { i < end && (s[i] == "\r" || s[i] == "\n") }
        func other(_ i: Int) -> Bool { i < end && c[i].isAssigned && !c[i].isWhitespace && !c[i].isLetter && !c[i].isNumber }
        func lower(_ i: Int) -> Unicode.Scalar? { i < end ? (s[i].properties.lowercaseMapping.unicodeScalars.first ?? s[i]) : nil }

        while pos < end {
            let ch = s[pos]
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if ch == "'" && pos + 1 < end {
                let next = lower(pos + 1)
                if next == "s" || next == "t" || next == "m" || next == "d" {
                    pos += 2; add(pos); continue
                }
                if pos + 2 < end {
                    let third = lower(pos + 2)
                    if (next == "r" && third == "e") || (next == "v" && third == "e") || (next == "l" && third == "l") {
                        pos += 3; add(pos); continue
                    }
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+: one character that is no line break or number may lead letters.
            if !(ch == "\r" || ch == "\n" || c[pos].isNumber) && (c[pos].isLetter || letter(pos + 1)) {
                pos += 1
                while letter(pos) { pos += 1 }
                add(pos); continue
            }
            // \p{N}{1,digits}
            if c[pos].isNumber {
                var first = pos
                while number(pos) {
                    pos += 1
                    if pos - first >= digits { add(pos); first = pos }
                }
                add(pos); continue
            }
            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            let lead = ch == " " ? pos + 1 : pos
            if other(lead) && c[pos].isAssigned {
                pos = lead
                while other(pos) { pos += 1 }
                while lineBreak(pos) { pos += 1 }
                add(pos); continue
            }
            var spaces = 0
            var lastLineBreakEnd = 0
            while space(pos + spaces) {
                if lineBreak(pos + spaces) { lastLineBreakEnd = pos + spaces + 1 }
                spaces += 1
            }
            // \s*[\r\n]+
            if lastLineBreakEnd > 0 {
                pos = lastLineBreakEnd; add(pos); continue
            }
            // \s+(?!\S)
            if spaces > 1 && pos + spaces < end {
                pos += spaces - 1; add(pos); continue
            }
            // \s+
            if spaces > 0 {
                pos += spaces; add(pos); continue
            }
            pos += 1; add(pos)
        }
        return words
    }
}
