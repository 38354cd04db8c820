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
            return "tokenizer model '\(name)' is not supported (Chorus reads byte-level BPE, tokenizer.ggml.model = gpt2, and SentencePiece-style vocabularies, tokenizer.ggml.model = llama)"
        case let .unsupportedPreTokenizer(name):
            return "pre-tokenizer '\(name)' is not supported (supported: \(PreTokenizer.names.joined(separator: ", ")))"
        case let .invalidVocabulary(reason):
            return "invalid vocabulary: \(reason)"
        case let .metadata(error):
            return error.description
        }
    }
}

/// A GGUF file's tokenizer: the vocabulary, its special tokens and how text
/// becomes tokens (byte-level BPE or SentencePiece-style merging by score),
/// and back.
public final class Tokenizer: Sendable {
    /// How text between special tokens becomes tokens.
    enum Algorithm: Sendable {
        case bytePairs(BytePairEncoding)
        case sentencePiece(SentencePiece)
    }

    public let vocabularySize: Int
    public let bosToken: Int32?
    public let eosToken: Int32?
    /// Whether a prompt starts with BOS (`tokenizer.ggml.add_bos_token`, else the tokenizer's default).
    public let addBOS: Bool
    /// Tokens that end generation (end of sequence, end of turn).
    public let endOfGenerationTokens: Set<Int32>

    let algorithm: Algorithm

    /// The pre-tokenizer of a byte-level BPE vocabulary (nil for SentencePiece).
    public var preTokenizer: PreTokenizer? {
        if case let .bytePairs(bpe) = algorithm { return bpe.preTokenizer }
        return nil
    }
    let tokenTexts: [String]
    let tokenTypes: [TokenType]
    /// Token ids by the UTF-8 bytes of their text (bytes, not `String`s: Swift
    /// compares strings by canonical equivalence, so "é" and "e\u{301}", or
    /// ";" and the Greek question mark, would be one key).
    private let idsByText: [[UInt8]: Int32]
    /// Bytes each token decodes to in output text (empty for control tokens).
    private let pieces: [[UInt8]]
    /// Special tokens matched in raw text, longest first.
    private let specialTokens: [(bytes: [UInt8], id: Int32, parseOnlyWhenSpecial: Bool)]

    public convenience init(gguf: GGUFFile) throws(TokenizerError) {
        do {
            let model = try gguf.string("tokenizer.ggml.model")
            let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
            let types = (try? gguf.intArray("tokenizer.ggml.token_type")) ?? []
            func optionalID(_ key: String) -> Int32? {
                guard let v = gguf.metadata[key]?.intValue, v >= 0, v < tokens.count else { return nil }
                return Int32(v)
            }
            let fileAddBOS = gguf.metadata["tokenizer.ggml.add_bos_token"]?.boolValue
            let kind: Kind
            switch model {
            case "gpt2":
                let preName = (try? gguf.string("tokenizer.ggml.pre")) ?? "default"
                guard let pre = PreTokenizer(ggufName: preName) else { throw TokenizerError.unsupportedPreTokenizer(preName) }
                kind = .bytePairs(merges: try gguf.stringArray("tokenizer.ggml.merges"), preTokenizer: pre)
            case "llama":
                kind = .sentencePiece(scores: try gguf.floatArray("tokenizer.ggml.scores"), unknown: optionalID("tokenizer.ggml.unknown_token_id"),
                                      addSpacePrefix: gguf.metadata["tokenizer.ggml.add_space_prefix"]?.boolValue ?? true)
            default:
                throw TokenizerError.unsupportedModel(model)
            }
            try self.init(tokens: tokens, types: types, kind: kind,
                          bos: optionalID("tokenizer.ggml.bos_token_id"),
                          eos: optionalID("tokenizer.ggml.eos_token_id"),
                          eot: optionalID("tokenizer.ggml.eot_token_id"),
                          addBOS: fileAddBOS)
        } catch let error as TokenizerError {
            throw error
        } catch let error as GGUFError {
            throw .metadata(error)
        } catch {
            throw .invalidVocabulary("\(error)")
        }
    }

    /// Which algorithm, with what it needs beyond the vocabulary.
    public enum Kind: Sendable {
        case bytePairs(merges: [String], preTokenizer: PreTokenizer)
        case sentencePiece(scores: [Float], unknown: Int32?, addSpacePrefix: Bool)
    }

    /// `addBOS` nil takes the algorithm's default, as llama.cpp does: on for
    /// SentencePiece and for Llama 3's pre-tokenizer, off otherwise.
    public init(tokens: [String], types: [Int], kind: Kind, bos: Int32?, eos: Int32?, eot: Int32? = nil,
                addBOS: Bool?) throws(TokenizerError) {
        guard !tokens.isEmpty, tokens.count < Int(Int32.max) else { throw .invalidVocabulary("the vocabulary is empty") }
        guard types.isEmpty || types.count == tokens.count else {
            throw .invalidVocabulary("\(types.count) token types for \(tokens.count) tokens")
        }
        vocabularySize = tokens.count
        tokenTexts = tokens
        tokenTypes = types.isEmpty ? Array(repeating: .normal, count: tokens.count)
                                   : types.map { TokenType(rawValue: $0) ?? .normal }
        // Text to id as llama.cpp keeps it: where two tokens share a text, the later one.
        var ids: [[UInt8]: Int32] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() { ids[Array(t.utf8)] = Int32(i) }
        idsByText = ids

        let defaultAddBOS: Bool
        switch kind {
        case let .bytePairs(merges, pre):
            algorithm = .bytePairs(try BytePairEncoding(tokens: tokens, idsByText: ids, merges: merges, preTokenizer: pre,
                                                        ignoreMerges: pre == .llama3))
            defaultAddBOS = pre == .llama3
        case let .sentencePiece(scores, unknown, addSpacePrefix):
            algorithm = .sentencePiece(try SentencePiece(tokens: tokens, idsByText: ids, scores: scores, unknown: unknown,
                                                         addSpacePrefix: addSpacePrefix))
            defaultAddBOS = true
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
            case .byte:
                if case .sentencePiece = algorithm, let b = SentencePiece.byteValue(text) { pieces.append([b]) } else { pieces.append([]) }
            default:
                switch algorithm {
                case .bytePairs: pieces.append(BytePairEncoding.piece(text))
                case .sentencePiece: pieces.append(SentencePiece.piece(text))
                }
            }
        }
        self.pieces = pieces
        specialTokens = specials.sorted { $0.bytes.count > $1.bytes.count }

        bosToken = bos
        eosToken = eos
        self.addBOS = (addBOS ?? defaultAddBOS) && bos != nil
        var eog = Set<Int32>()
        if let eos { eog.insert(eos) }
        if let eot { eog.insert(eot) }
        // Tokens that end a turn in common chat formats, as llama.cpp recognises them.
        for name in ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "<|eom_id|>"] {
            if let id = ids[Array(name.utf8)], tokenTypes[Int(id)] == .control { eog.insert(id) }
        }
        endOfGenerationTokens = eog
    }

    // MARK: Encoding

    /// Tokenizes `text` as llama.cpp's `llama_tokenize(text, add_special, parse_special)`
    /// does. With `parseSpecial`, control tokens such as `<|im_start|>` written in
    /// the text become their ids; user-defined tokens always do. `addBOS`
    /// defaults to false: write `<bos>` (or the model's BOS) in the text where
    /// wanted, or pass `addBOS: addBOS` for what the model asks for.
    public func encode(_ text: String, parseSpecial: Bool = true, addBOS: Bool = false) -> [Int32] {
        encode(text, parseSpecial: parseSpecial, addBOS: addBOS, literal: [])
    }

    /// Tokenizes `text`, in which special tokens are parsed except inside the
    /// `literal` byte ranges: there, text that spells a special token is only
    /// text (a chat's message contents, written by users and models, never
    /// open or close a turn).
    public func encode(_ text: String, parseSpecial: Bool = true, addBOS: Bool = false, literal: [Range<Int>]) -> [Int32] {
        var out: [Int32] = []
        if addBOS, let bos = bosToken { out.append(bos) }
        var afterSpecial = true
        for fragment in splitOnSpecialTokens(Array(text.utf8), parseSpecial: parseSpecial, literal: literal) {
            switch fragment {
            case let .token(id):
                out.append(id)
                afterSpecial = true
            case let .text(bytes, _):
                switch algorithm {
                case let .bytePairs(bpe): bpe.encode(bytes, into: &out)
                case let .sentencePiece(spm): spm.encode(bytes, afterSpecial: afterSpecial, into: &out)
                }
                afterSpecial = false
            }
        }
        return out
    }

    /// The tokens of a prompt for the model: BOS first when the model asks for it.
    public func encodePrompt(_ text: String) -> [Int32] { encode(text, parseSpecial: true, addBOS: addBOS) }

    /// The tokens of a rendered chat: special tokens only from the chat
    /// template's own text, never from the messages' contents; BOS first when
    /// the model asks for it.
    public func encodePrompt(_ chat: RenderedChat) -> [Int32] {
        encode(chat.text, parseSpecial: true, addBOS: addBOS, literal: chat.contents)
    }

    enum Fragment: Equatable {
        /// Bytes of text, and where they start in the whole text.
        case text([UInt8], offset: Int)
        case token(Int32)
    }

    /// Splits raw text around special tokens, longest token first, as llama.cpp
    /// does; none is taken from inside a `literal` range.
    func splitOnSpecialTokens(_ bytes: [UInt8], parseSpecial: Bool, literal: [Range<Int>] = []) -> [Fragment] {
        var fragments: [Fragment] = [.text(bytes, offset: 0)]
        for special in specialTokens {
            if special.parseOnlyWhenSpecial && !parseSpecial { continue }
            var next: [Fragment] = []
            next.reserveCapacity(fragments.count)
            for fragment in fragments {
                guard case let .text(t, offset) = fragment, t.count >= special.bytes.count else {
                    next.append(fragment); continue
                }
                var start = 0
                var i = 0
                let needle = special.bytes
                while i + needle.count <= t.count {
                    if t[i] == needle[0] && t[i..<(i + needle.count)].elementsEqual(needle)
                        && !literal.contains(where: { $0.overlaps((offset + i)..<(offset + i + needle.count)) }) {
                        if i > start { next.append(.text(Array(t[start..<i]), offset: offset + start)) }
                        next.append(.token(special.id))
                        i += needle.count
                        start = i
                    } else {
                        i += 1
                    }
                }
                if start < t.count { next.append(.text(start == 0 ? t : Array(t[start...]), offset: offset + start)) }
            }
            fragments = next
        }
        return fragments
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
    public func id(of text: String) -> Int32? { idsByText[Array(text.utf8)] }

    public func isEndOfGeneration(_ token: Int32) -> Bool { endOfGenerationTokens.contains(token) }
}
