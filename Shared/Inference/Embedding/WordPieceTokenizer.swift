import Foundation

public enum WordPieceError: Error, CustomStringConvertible, Equatable {
    case unreadable(String)
    case missingToken(String)

    public var description: String {
        switch self {
        case let .unreadable(path): return "cannot read vocabulary \(path)"
        case let .missingToken(t): return "the vocabulary has no \(t) token"
        }
    }
}

/// BERT's uncased WordPiece tokenizer, as Hugging Face's BertTokenizer applies
/// it: clean the text, put spaces around CJK characters, strip accents and
/// lowercase, split on whitespace and punctuation, then greedy longest-match
/// word pieces ("##" marks a continuation), [UNK] for words it cannot split.
public final class WordPieceTokenizer: Sendable {
    public let vocabulary: [String: Int32]
    public let clsToken: Int32
    public let sepToken: Int32
    public let unknownToken: Int32
    public let maxCharactersPerWord = 100

    public convenience init(vocabularyPath path: String) throws(WordPieceError) {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw .unreadable(path)
        }
        var tokens = text.components(separatedBy: "\n")
        if tokens.last == "" { tokens.removeLast() }
        try self.init(tokens: tokens.map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 })
    }

    public init(tokens: [String]) throws(WordPieceError) {
        var vocabulary: [String: Int32] = [:]
        for (i, t) in tokens.enumerated() where vocabulary[t] == nil { vocabulary[t] = Int32(i) }
        self.vocabulary = vocabulary
        guard let cls = vocabulary["[CLS]"] else { throw .missingToken("[CLS]") }
        guard let sep = vocabulary["[SEP]"] else { throw .missingToken("[SEP]") }
        guard let unk = vocabulary["[UNK]"] else { throw .missingToken("[UNK]") }
        clsToken = cls
        sepToken = sep
        unknownToken = unk
    }

    /// `[CLS]`, the word pieces of `text`, `[SEP]`, at most `maxLength` ids in all.
    public func encode(_ text: String, maxLength: Int = 256) -> [Int32] {
        var ids: [Int32] = [clsToken]
        let room = max(0, maxLength - 2)
        for word in basicTokens(text) {
            if ids.count - 1 >= room { break }
            ids.append(contentsOf: wordPieces(word))
        }
        if ids.count - 1 > room { ids.removeSubrange((room + 1)...) }
        ids.append(sepToken)
        return ids
    }

    /// Normalised words: cleaned, CJK isolated, accents stripped, lowercased,
    /// split on whitespace and punctuation.
    func basicTokens(_ text: String) -> [String] {
        var cleaned = String.UnicodeScalarView()
        for s in text.unicodeScalars {
            if s.value == 0 || s.value == 0xFFFD || Self.isControl(s) { continue }
            if Self.isWhitespace(s) {
                cleaned.append(" ")
            } else if Self.isCJK(s) {
                cleaned.append(" ")
                cleaned.append(s)
                cleaned.append(" ")
            } else {
                cleaned.append(s)
            }
        }
        var words: [String] = []
        for chunk in String(cleaned).split(separator: " ", omittingEmptySubsequences: true) {
            // Strip accents (decompose, drop combining marks), then lowercase.
            var stripped = String.UnicodeScalarView()
            for s in String(chunk).decomposedStringWithCanonicalMapping.unicodeScalars where s.properties.generalCategory != .nonspacingMark {
                stripped.append(s)
            }
            let lowered = String(stripped).lowercased()
            var current = String.UnicodeScalarView()
            for s in lowered.unicodeScalars {
                if Self.isPunctuation(s) {
                    if !current.isEmpty { words.append(String(current)); current = String.UnicodeScalarView() }
                    words.append(String(s))
                } else if Self.isWhitespace(s) {
                    if !current.isEmpty { words.append(String(current)); current = String.UnicodeScalarView() }
                } else {
                    current.append(s)
                }
            }
            if !current.isEmpty { words.append(String(current)) }
        }
        return words
    }

    /// Greedy longest-match-first word pieces of one word.
    func wordPieces(_ word: String) -> [Int32] {
        let chars = Array(word.unicodeScalars)
        if chars.count > maxCharactersPerWord { return [unknownToken] }
        var pieces: [Int32] = []
        var start = 0
        while start < chars.count {
            var end = chars.count
            var found: Int32?
            while start < end {
                var piece = String(String.UnicodeScalarView(chars[start..<end]))
                if start > 0 { piece = "##" + piece }
                if let id = vocabulary[piece] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let id = found else { return [unknownToken] }
            pieces.append(id)
            start = end
        }
        return pieces
    }

    static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        s == " " || s == "\t" || s == "\n" || s == "\r" || s.properties.generalCategory == .spaceSeparator
    }

    static func isControl(_ s: Unicode.Scalar) -> Bool {
        if s == "\t" || s == "\n" || s == "\r" { return false }
        switch s.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    static func isCJK(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        return (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B820...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }
}
