/// Byte-level BPE (`tokenizer.ggml.model = gpt2`): text is split into words
/// by the file's pre-tokenizer, each word's bytes become GPT-2's printable
/// code points, and the best-ranked merge is applied until none is left.
struct BytePairEncoding: Sendable {
    let preTokenizer: PreTokenizer
    /// A word that is itself a token is emitted whole, without merging (Llama 3).
    let ignoreMerges: Bool
    let vocabularySize: Int
    private let idsByText: [[UInt8]: Int32]
    /// Rank and result of merging two symbols, keyed by `left << 32 | right`.
    private let merges: [UInt64: Merge]
    /// The BPE symbol of each byte's byte-level character.
    private let byteSymbols: [Int32]
    /// Tokens for BPE symbols past the vocabulary (index: symbol - vocabularySize).
    private let extraSymbolTokens: [[Int32]]

    struct Merge: Sendable {
        let rank: Int32
        let result: Int32
    }

    init(tokens: [String], idsByText ids: [[UInt8]: Int32], merges mergeLines: [String], preTokenizer: PreTokenizer,
         ignoreMerges: Bool) throws(TokenizerError) {
        self.preTokenizer = preTokenizer
        self.ignoreMerges = ignoreMerges
        vocabularySize = tokens.count
        idsByText = ids
        // BPE works on symbols: vocabulary tokens keep their ids, and any other
        // text a merge mentions (or a byte with no token of its own) gets an id
        // past the vocabulary, so merging matches llama.cpp's text-based merging.
        var symbolIDs = ids
        var extraTexts: [[UInt8]] = []
        func symbol(_ text: [UInt8]) -> Int32 {
            if let id = symbolIDs[text] { return id }
            let id = Int32(tokens.count + extraTexts.count)
            symbolIDs[text] = id
            extraTexts.append(text)
            return id
        }
        var byteSymbols = [Int32](repeating: -1, count: 256)
        for b in 0..<256 { byteSymbols[b] = symbol(Array(String(ByteLevel.byteToScalar[b]).utf8)) }
        var table: [UInt64: Merge] = [:]
        table.reserveCapacity(mergeLines.count)
        for (rank, line) in mergeLines.enumerated() {
            // The separator is the first space after the first character, so a
            // token that is itself a space still parses.
            let scalars = Array(line.unicodeScalars)
            guard let split = scalars.dropFirst().firstIndex(of: " ") else {
                throw .invalidVocabulary("merge #\(rank) '\(line)' has no space between its two parts")
            }
            let left = Array(String(String.UnicodeScalarView(scalars[..<split])).utf8)
            let right = Array(String(String.UnicodeScalarView(scalars[(split + 1)...])).utf8)
            let l = symbol(left), r = symbol(right), result = symbol(left + right)
            let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
            if table[key] == nil { table[key] = Merge(rank: Int32(rank), result: result) }
        }
        merges = table
        self.byteSymbols = byteSymbols
        // A symbol left outside the vocabulary becomes the tokens of its single
        // ASCII bytes, as in llama.cpp (other bytes have no token and are dropped).
        extraSymbolTokens = extraTexts.map { text in
            text.compactMap { b in b < 0x80 ? ids[[b]] : nil }
        }
    }

    /// The tokens of a fragment of raw text (no special tokens in it).
    func encode(_ text: [UInt8], into out: inout [Int32]) {
        for word in preTokenizer.split(String(decoding: text, as: UTF8.self)) { encodeWord(word, into: &out) }
    }

    /// Byte-level BPE on one word: start from single-byte symbols and apply the
    /// best-ranked merge (leftmost on ties) until none applies. The symbols
    /// are a linked list and the candidate merges a heap ordered by (rank,
    /// position), as in llama.cpp and tiktoken: O(n log n) in the word's
    /// length, so a pathological word of 100,000 bytes costs milliseconds.
    private func encodeWord(_ word: [UInt8], into out: inout [Int32]) {
        if word.isEmpty { return }
        if ignoreMerges, let whole = idsByText[Array(String(String.UnicodeScalarView(word.map { ByteLevel.byteToScalar[Int($0)] })).utf8)] {
            out.append(whole)
            return
        }
        let n = word.count
        var symbols = word.map { byteSymbols[Int($0)] }
        var next = Array(1...n)
        var previous = Array(-1..<(n - 1))
        var alive = [Bool](repeating: true, count: n)
        var heap = MergeHeap()
        func consider(_ left: Int) {
            let right = next[left]
            guard right < n, let m = merges[UInt64(UInt32(symbols[left])) << 32 | UInt64(UInt32(symbols[right]))] else { return }
            heap.push(MergeHeap.Candidate(rank: m.rank, left: Int32(left), leftSymbol: symbols[left], rightSymbol: symbols[right], result: m.result))
        }
        for i in 0..<(n - 1) { consider(i) }
        while let c = heap.pop() {
            let left = Int(c.left)
            guard alive[left] else { continue }
            let right = next[left]
            // Stale: one of its two symbols has merged since it was pushed.
            guard right < n, symbols[left] == c.leftSymbol, symbols[right] == c.rightSymbol else { continue }
            symbols[left] = c.result
            alive[right] = false
            next[left] = next[right]
            if next[right] < n { previous[next[right]] = left }
            if previous[left] >= 0 { consider(previous[left]) }
            consider(left)
        }
        var i = 0
        while i < n {
            let s = symbols[i]
            if Int(s) < vocabularySize { out.append(s) } else { out.append(contentsOf: extraSymbolTokens[Int(s) - vocabularySize]) }
            i = next[i]
        }
    }

    /// The bytes a normal token stands for.
    static func piece(_ text: String) -> [UInt8] { ByteLevel.decode(text) }
}

/// A binary min-heap of candidate merges, by rank and then position.
struct MergeHeap {
    struct Candidate {
        let rank: Int32
        let left: Int32
        let leftSymbol: Int32
        let rightSymbol: Int32
        let result: Int32
        var key: UInt64 { UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: left)) }
    }

    private var items: [Candidate] = []

    mutating func push(_ c: Candidate) {
        items.append(c)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].key < items[parent].key else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Candidate? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var smallest = i
                if l < items.count && items[l].key < items[smallest].key { smallest = l }
                if r < items.count && items[r].key < items[smallest].key { smallest = r }
                if smallest == i { break }
                items.swapAt(i, smallest)
                i = smallest
            }
        }
        return top
    }
}
