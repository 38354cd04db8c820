/// SentencePiece-style tokenization (`tokenizer.ggml.model = llama`: Llama 1
/// and 2, Mistral, Gemma), as llama.cpp does it: spaces become "▁", the text
/// starts as one symbol per UTF-8 character, and the adjacent pair whose
/// joined text is the vocabulary token with the highest score is merged
/// (the leftmost on ties) until no pair is a token. A symbol that is no token
/// falls back to the byte tokens `<0xNN>`.
struct SentencePiece: Sendable {
    /// Prefix each fragment that follows a special token (or starts the text) with a space.
    let addSpacePrefix: Bool
    private let idsByText: [[UInt8]: Int32]
    private let scores: [Float]
    /// The `<0xNN>` token of each byte (the unknown token where there is none).
    private let byteTokens: [Int32]

    init(tokens: [String], idsByText ids: [[UInt8]: Int32], scores: [Float], unknown: Int32?, addSpacePrefix: Bool) throws(TokenizerError) {
        guard scores.count == tokens.count else {
            throw .invalidVocabulary("\(scores.count) scores for \(tokens.count) tokens")
        }
        self.addSpacePrefix = addSpacePrefix
        idsByText = ids
        self.scores = scores
        let hex = Array("0123456789ABCDEF")
        byteTokens = (0..<256).map { b in ids[Array("<0x\(hex[b >> 4])\(hex[b & 15])>".utf8)] ?? unknown ?? 0 }
    }

    struct Symbol {
        var start: Int
        var length: Int
        var previous: Int
        var next: Int
    }

    struct Bigram: Comparable {
        let left: Int
        let right: Int
        let score: Float
        let size: Int
        /// Higher scores first, then the leftmost pair.
        static func < (a: Bigram, b: Bigram) -> Bool { a.score > b.score || (a.score == b.score && a.left < b.left) }
    }

    /// The tokens of one fragment of raw text (no special tokens in it);
    /// `afterSpecial` says it starts the text or follows a special token.
    func encode(_ raw: [UInt8], afterSpecial: Bool, into out: inout [Int32]) {
        // An empty fragment is no fragment (llama.cpp makes none), so it gets no space either.
        if raw.isEmpty { return }
        var text: [UInt8] = addSpacePrefix && afterSpecial ? [0xE2, 0x96, 0x81] : []
        for b in raw { if b == 0x20 { text += [0xE2, 0x96, 0x81] } else { text.append(b) } }
        if text.isEmpty { return }

        // One symbol per UTF-8 character (a stray continuation byte is one of its own).
        var symbols: [Symbol] = []
        var offset = 0
        while offset < text.count {
            let lead = text[offset]
            let length = min(lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4, text.count - offset)
            symbols.append(Symbol(start: offset, length: length, previous: symbols.count - 1,
                                  next: offset + length == text.count ? -1 : symbols.count + 1))
            offset += length
        }
        func token(_ start: Int, _ length: Int) -> Int32? {
            idsByText[Array(text[start..<(start + length)])]
        }
        var queue = Heap<Bigram>()
        func tryPair(_ left: Int, _ right: Int) {
            guard left >= 0, right >= 0 else { return }
            let size = symbols[left].length + symbols[right].length
            guard let id = token(symbols[left].start, size) else { return }
            queue.push(Bigram(left: left, right: right, score: scores[Int(id)], size: size))
        }
        for i in 1..<symbols.count { tryPair(i - 1, i) }
        while let best = queue.pop() {
            let left = symbols[best.left], right = symbols[best.right]
            // Skip a pair one of whose symbols has changed since it was queued.
            if left.length == 0 || right.length == 0 || left.length + right.length != best.size { continue }
            symbols[best.left].length += right.length
            symbols[best.right].length = 0
            symbols[best.left].next = right.next
            if right.next >= 0 { symbols[right.next].previous = best.left }
            tryPair(symbols[best.left].previous, best.left)
            tryPair(best.left, symbols[best.left].next)
        }
        var i = 0
        while i != -1 {
            let s = symbols[i]
            if let id = token(s.start, s.length) {
                out.append(id)
            } else {
                for b in text[s.start..<(s.start + s.length)] { out.append(byteTokens[Int(b)]) }
            }
            i = s.next
        }
    }

    /// The bytes a normal token stands for: its text with "▁" as a space.
    static func piece(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if i + 2 < bytes.count && bytes[i] == 0xE2 && bytes[i + 1] == 0x96 && bytes[i + 2] == 0x81 {
                out.append(0x20)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }

    /// The byte of a `<0xNN>` token.
    static func byteValue(_ text: String) -> UInt8? {
        guard text.count == 6, text.hasPrefix("<0x"), text.hasSuffix(">") else { return nil }
        return UInt8(text.dropFirst(3).prefix(2), radix: 16)
    }
}

/// A binary min-heap (by `<`).
struct Heap<Element: Comparable> {
    private var items: [Element] = []

    mutating func push(_ e: Element) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !(items[i] < items[parent]) { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l] < items[m] { m = l }
                if r < items.count && items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
