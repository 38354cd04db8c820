/// Token types as GGUF stores them in `tokenizer.ggml.token_type`.
public enum TokenType: Int, Sendable {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case unsupportedModel(String)
    case unsupportedPreTokenizer(String)
    case invalidVocabulary(String)
    case metadata(GGUFError)

    public var description: String {
        switch self {
        case let .unsupportedModel(name):
            return "tokenizer model '\(name)' is not supported (Chorus reads byte-level BPE vocabularies, tokenizer.ggml.model = gpt2)"
        case let .unsupportedPreTokenizer(name):
            return "pre-tokenizer '\(name)' is not supported (supported: smollm, gpt-2 and their relatives)"
        case let .invalidVocabulary(reason):
            return "invalid vocabulary: \(reason)"
        case let .metadata(error):
            return error.description
        }
    }
}

/// Byte-level BPE tokenizer built from a GGUF file's vocabulary and merges.
public final class Tokenizer: Sendable {
    public let vocabularySize: Int
    public let preTokenizer: PreTokenizer
    public let bosToken: Int32?
    public let eosToken: Int32?
    public let addBOS: Bool
    /// Tokens that end generation (end of sequence, end of turn).
    public let endOfGenerationTokens: Set<Int32>

    private let tokenTexts: [String]
    private let tokenTypes: [TokenType]
    private let idsByText: [String: Int32]
    /// Rank and result of merging two tokens, keyed by `left << 32 | right`.
    private let merges: [UInt64: Merge]
    /// The BPE symbol of each byte's byte-level character.
    private let byteSymbols: [Int32]
    /// Tokens for BPE symbols past the vocabulary (index: symbol - vocabularySize).
    private let extraSymbolTokens: [[Int32]]
    /// Bytes each token decodes to in output text (empty for control tokens).
    private let pieces: [[UInt8]]
    /// Special tokens matched in raw text, longest first.
    private let specialTokens: [(bytes: [UInt8], id: Int32, parseOnlyWhenSpecial: Bool)]

    struct Merge: Sendable {
        let rank: Int32
        let result: Int32
    }

    public convenience init(gguf: GGUFFile) throws(TokenizerError) {
        do {
            let model = try gguf.string("tokenizer.ggml.model")
            guard model == "gpt2" else { throw TokenizerError.unsupportedModel(model) }
            let preName = (try? gguf.string("tokenizer.ggml.pre")) ?? "default"
            guard let pre = PreTokenizer(ggufName: preName) else { throw TokenizerError.unsupportedPreTokenizer(preName) }
            let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
            let types = (try? gguf.intArray("tokenizer.ggml.token_type")) ?? []
            let merges = try gguf.stringArray("tokenizer.ggml.merges")
            func optionalID(_ key: String) -> Int32? {
                guard let v = gguf.metadata[key]?.intValue, v >= 0, v < tokens.count else { return nil }
                return Int32(v)
            }
            try self.init(tokens: tokens, types: types, merges: merges, preTokenizer: pre,
                          bos: optionalID("tokenizer.ggml.bos_token_id"),
                          eos: optionalID("tokenizer.ggml.eos_token_id"),
                          eot: optionalID("tokenizer.ggml.eot_token_id"),
                          addBOS: gguf.metadata["tokenizer.ggml.add_bos_token"]?.boolValue ?? false)
        } catch let error as TokenizerError {
            throw error
        } catch let error as GGUFError {
            throw .metadata(error)
        } catch {
            throw .invalidVocabulary("\(error)")
        }
    }

    public init(tokens: [String], types: [Int], merges mergeLines: [String], preTokenizer: PreTokenizer,
                bos: Int32?, eos: Int32?, eot: Int32? = nil, addBOS: Bool) throws(TokenizerError) {
        guard !tokens.isEmpty, tokens.count < Int(Int32.max) else { throw .invalidVocabulary("the vocabulary is empty") }
        guard types.isEmpty || types.count == tokens.count else {
            throw .invalidVocabulary("\(types.count) token types for \(tokens.count) tokens")
        }
        vocabularySize = tokens.count
        self.preTokenizer = preTokenizer
        tokenTexts = tokens
        tokenTypes = types.isEmpty ? Array(repeating: .normal, count: tokens.count)
                                   : types.map { TokenType(rawValue: $0) ?? .normal }
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where ids[t] == nil { ids[t] = Int32(i) }
        idsByText = ids

        // BPE works on symbols: vocabulary tokens keep their ids, and any other
        // text a merge mentions (or a byte with no token of its own) gets an id
        // past the vocabulary, so merging matches llama.cpp's text-based merging.
        var symbolIDs = ids
        var extraTexts: [String] = []
        func symbol(_ text: String) -> Int32 {
            if let id = symbolIDs[text] { return id }
            let id = Int32(tokens.count + extraTexts.count)
            symbolIDs[text] = id
            extraTexts.append(text)
            return id
        }
        var byteSymbols = [Int32](repeating: -1, count: 256)
        for b in 0..<256 { byteSymbols[b] = symbol(String(ByteLevel.byteToScalar[b])) }
        var table: [UInt64: Merge] = [:]
        table.reserveCapacity(mergeLines.count)
        for (rank, line) in mergeLines.enumerated() {
            // The separator is the first space after the first character, so a
            // token that is itself a space still parses.
            let scalars = Array(line.unicodeScalars)
            guard let split = scalars.dropFirst().firstIndex(of: " ") else {
                throw .invalidVocabulary("merge #\(rank) '\(line)' has no space between its two parts")
            }
            let left = String(String.UnicodeScalarView(scalars[..<split]))
            let right = String(String.UnicodeScalarView(scalars[(split + 1)...]))
            let l = symbol(left), r = symbol(right), result = symbol(left + right)
            let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
            if table[key] == nil { table[key] = Merge(rank: Int32(rank), result: result) }
        }
        merges = table
        self.byteSymbols = byteSymbols
        // A symbol left outside the vocabulary becomes the tokens of its single
        // ASCII bytes, as in llama.cpp (other bytes have no token and are dropped).
        extraSymbolTokens = extraTexts.map { text in
            text.utf8.compactMap { b in b < 0x80 ? ids[String(UnicodeScalar(b))] : nil }
        }

        var pieces: [[UInt8]] = []
        pieces.reserveCapacity(tokens.count)
        var specials: [(bytes: [UInt8], id: Int32, parseOnlyWhenSpecial: Bool)] = []
        for (i, text) in tokens.enumerated() {
            switch tokenTypes[i] {
            case .control, .unknown:
                pieces.append([])
                if !text.isEmpty { specials.append((Array(text.utf8), Int32(i), true)) }
            case .userDefined:
                pieces.append(Array(text.utf8))
                if !text.isEmpty { specials.append((Array(text.utf8), Int32(i), false)) }
            case .unused:
                pieces.append([])
            default:
                pieces.append(ByteLevel.decode(text))
            }
        }
        self.pieces = pieces
        specialTokens = specials.sorted { $0.bytes.count > $1.bytes.count }

        bosToken = bos
        eosToken = eos
        self.addBOS = addBOS && bos != nil
        var eog = Set<Int32>()
        if let eos { eog.insert(eos) }
        if let eot { eog.insert(eot) }
        // Tokens that end a turn in common chat formats, as llama.cpp recognises them.
        for name in ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "<|eom_id|>"] {
            if let id = ids[name], tokenTypes[Int(id)] == .control { eog.insert(id) }
        }
        endOfGenerationTokens = eog
    }

    // MARK: Encoding

    /// Tokenizes `text`. With `parseSpecial`, control tokens such as `<|im_start|>`
    /// written in the text become their ids; user-defined tokens always do.
    /// `addBOS` defaults to what the model asks for.
    public func encode(_ text: String, parseSpecial: Bool = true, addBOS: Bool? = nil) -> [Int32] {
        var out: [Int32] = []
        if addBOS ?? self.addBOS, let bos = bosToken { out.append(bos) }
        for fragment in splitOnSpecialTokens(Array(text.utf8), parseSpecial: parseSpecial) {
            switch fragment {
            case let .token(id):
                out.append(id)
            case let .text(bytes):
                let string = String(decoding: bytes, as: UTF8.self)
                for word in preTokenizer.split(string) { bpe(word, into: &out) }
            }
        }
        return out
    }

    enum Fragment: Equatable {
        case text([UInt8])
        case token(Int32)
    }

    /// Splits raw text around special tokens, longest token first, as llama.cpp does.
    func splitOnSpecialTokens(_ bytes: [UInt8], parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = [.text(bytes)]
        for special in specialTokens {
            if special.parseOnlyWhenSpecial && !parseSpecial { continue }
            var next: [Fragment] = []
            next.reserveCapacity(fragments.count)
            for fragment in fragments {
                guard case let .text(t) = fragment, t.count >= special.bytes.count else {
                    next.append(fragment); continue
                }
                var start = 0
                var i = 0
                let needle = special.bytes
                while i + needle.count <= t.count {
                    if t[i] == needle[0] && t[i..<(i + needle.count)].elementsEqual(needle) {
                        if i > start { next.append(.text(Array(t[start..<i]))) }
                        next.append(.token(special.id))
                        i += needle.count
                        start = i
                    } else {
                        i += 1
                    }
                }
                if start < t.count { next.append(.text(start == 0 ? t : Array(t[start...]))) }
            }
            fragments = next
        }
        return fragments
    }

    /// Byte-level BPE on one word: start from single-byte tokens and apply the
    /// best-ranked merge (leftmost on ties) until none applies.
    private func bpe(_ word: [UInt8], into out: inout [Int32]) {
        if word.isEmpty { return }
        var symbols = word.map { byteSymbols[Int($0)] }
        while symbols.count > 1 {
            var bestRank = Int32.max
            var bestIndex = -1
            var bestResult: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                let key = UInt64(UInt32(symbols[i])) << 32 | UInt64(UInt32(symbols[i + 1]))
                if let m = merges[key], m.rank < bestRank {
                    bestRank = m.rank
                    bestIndex = i
                    bestResult = m.result
                }
            }
            if bestIndex < 0 { break }
            symbols[bestIndex] = bestResult
            symbols.remove(at: bestIndex + 1)
        }
        for s in symbols {
            if Int(s) < vocabularySize { out.append(s) } else { out.append(contentsOf: extraSymbolTokens[Int(s) - vocabularySize]) }
        }
    }

    // MARK: Decoding

    /// The bytes a token contributes to output text. Control tokens contribute
    /// nothing unless `special` is set, in which case their own text is returned.
    public func bytes(of token: Int32, special: Bool = false) -> [UInt8] {
        let i = Int(token)
        guard i >= 0 && i < vocabularySize else { return [] }
        if special && (tokenTypes[i] == .control || tokenTypes[i] == .unknown) { return Array(tokenTexts[i].utf8) }
        return pieces[i]
    }

    /// Decodes tokens to text; invalid UTF-8 becomes U+FFFD.
    public func decode(_ tokens: [Int32], special: Bool = false) -> String {
        var bytes: [UInt8] = []
        for t in tokens { bytes.append(contentsOf: self.bytes(of: t, special: special)) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The token's text as stored in the vocabulary.
    public func text(of token: Int32) -> String? {
        let i = Int(token)
        return i >= 0 && i < vocabularySize ? tokenTexts[i] : nil
    }

    public func type(of token: Int32) -> TokenType? {
        let i = Int(token)
        return i >= 0 && i < vocabularySize ? tokenTypes[i] : nil
    }

    /// The id of a token by its vocabulary text.
    public func id(of text: String) -> Int32? { idsByText[text] }

    public func isEndOfGeneration(_ token: Int32) -> Bool { endOfGenerationTokens.contains(token) }
}
