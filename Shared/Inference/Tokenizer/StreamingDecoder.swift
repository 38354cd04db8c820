/// Turns a stream of tokens into text without ever emitting broken UTF-8: a
/// character whose bytes are split across tokens is held back until it is
/// complete. Bytes that can never form a character become U+FFFD.
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
    }

    /// Adds a token and returns the text that is now complete (possibly empty).
    public mutating func append(_ token: Int32) -> String {
        pending.append(contentsOf: tokenizer.bytes(of: token))
        return takeComplete()
    }

    /// Returns whatever is held back, replacing an unfinished character with U+FFFD.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Whether bytes of an unfinished character are being held back.
    public var hasPendingBytes: Bool { !pending.isEmpty }

    private mutating func takeComplete() -> String {
        let cut = Self.completePrefixLength(pending)
        if cut == 0 { return "" }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Length of the longest prefix that does not end inside a character that
    /// could still be completed by more bytes.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        // Look back at most 3 bytes for the lead byte of the last character.
        var i = n - 1
        var continuation = 0
        while i >= 0 && continuation < 3 && bytes[i] & 0xC0 == 0x80 {
            continuation += 1
            i -= 1
        }
        guard i >= 0 else { return n }
        let lead = bytes[i]
        let needed: Int
        switch lead {
        case 0xC2...0xDF: needed = 2
        case 0xE0...0xEF: needed = 3
        case 0xF0...0xF4: needed = 4
        default: return n // ASCII or a byte that can never start a character
        }
        return continuation + 1 < needed ? i : n
    }
}
