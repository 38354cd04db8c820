import Foundation

/// A validating scan of a JSON object that builds nothing: it checks that the
/// whole text is one well-formed JSON object (RFC 8259, valid UTF-8, nesting at
/// most `maxDepth` deep) and records where each top-level member's value lies,
/// so a receiver can read its routing fields without decoding the rest.
public struct JSONObjectScan: Sendable {
    public enum Kind: Sendable { case string, number, object, array, bool, null }

    struct Member: Sendable {
        var key: String
        var value: Range<Int>
        var kind: Kind
        var escaped: Bool
    }

    /// Where a member lies, as the scanner finds it (ranges include the quotes).
    struct Found {
        var key: Range<Int>
        var keyEscaped: Bool
        var value: Range<Int>
        var kind: Kind
        var escaped: Bool
    }

    public static let maxDepth = 256
    let data: Data
    let members: [Member]

    /// Why a text is not a JSON object, with the byte offset where the scan stopped.
    public struct Invalid: Error, CustomStringConvertible {
        public let offset: Int
        public let reason: String
        public var description: String { "\(reason) at byte \(offset)" }
    }

    public init(_ data: Data) throws(Invalid) {
        self.data = data
        let ascii = data.withUnsafeBytes { raw in !raw.contains { $0 >= 0x80 } }
        if !ascii, String(validating: data, as: UTF8.self) == nil {
            throw Invalid(offset: 0, reason: "the text is not valid UTF-8")
        }
        let result: Result<[Found], Invalid> = data.withUnsafeBytes { raw in
            var s = Scanner(bytes: raw)
            do throws(Invalid) { return .success(try s.topLevelObject()) } catch { return .failure(error) }
        }
        members = try result.get().map { f in
            Member(key: Self.decodeString(data, f.key, escaped: f.keyEscaped) ?? "", value: f.value, kind: f.kind, escaped: f.escaped)
        }
        // One member per name: a reader taking the first and another taking
        // the last must never see two different messages in one text.
        // (Pairwise for the few members of a protocol message; a set beyond.)
        if members.count <= 16 {
            for i in members.indices.dropFirst() where members[..<i].contains(where: { $0.key == members[i].key }) {
                throw Invalid(offset: members[i].value.lowerBound, reason: "the member '\(members[i].key.prefix(64))' appears twice")
            }
        } else {
            var seen = Set<String>()
            for m in members where !seen.insert(m.key).inserted {
                throw Invalid(offset: m.value.lowerBound, reason: "the member '\(m.key.prefix(64))' appears twice")
            }
        }
    }

    /// The text with `key`'s value replaced by `value` (raw JSON), the rest
    /// as written; nil if there is no such member.
    public func replacing(_ key: String, withRaw value: Data) -> Data? {
        guard let m = member(key) else { return nil }
        var out = Data(capacity: data.count + value.count)
        out.append(data[data.startIndex ..< data.startIndex + m.value.lowerBound])
        out.append(value)
        out.append(data[data.startIndex + m.value.upperBound ..< data.endIndex])
        return out
    }

    /// The text of the JSON string at `range` (quotes included) of `data`.
    static func decodeString(_ data: Data, _ range: Range<Int>, escaped: Bool) -> String? {
        let start = data.startIndex
        if !escaped { return String(decoding: data[start + range.lowerBound + 1 ..< start + range.upperBound - 1], as: UTF8.self) }
        return try? JSONDecoder().decode(String.self, from: data[start + range.lowerBound ..< start + range.upperBound])
    }

    func member(_ key: String) -> Member? { members.first { $0.key == key } }

    /// The number of top-level members.
    public var count: Int { members.count }

    /// Whether the object has `key`.
    public func has(_ key: String) -> Bool { member(key) != nil }

    /// The kind of `key`'s value, or nil if there is no such member.
    public func kind(_ key: String) -> Kind? { member(key)?.kind }

    /// `key`'s value if it is a string.
    public func string(_ key: String) -> String? {
        guard let m = member(key), m.kind == .string else { return nil }
        return Self.decodeString(data, m.value, escaped: m.escaped)
    }

    /// `key`'s value if it is a number.
    public func number(_ key: String) -> Double? {
        guard let m = member(key), m.kind == .number else { return nil }
        return Double(String(decoding: data[data.startIndex + m.value.lowerBound ..< data.startIndex + m.value.upperBound], as: UTF8.self))
    }

    /// The bytes of `key`'s value, as written.
    public func raw(_ key: String) -> Data? {
        guard let m = member(key) else { return nil }
        return data[data.startIndex + m.value.lowerBound ..< data.startIndex + m.value.upperBound]
    }
}

private struct Scanner {
    let p: UnsafeRawBufferPointer
    var i = 0
    var n: Int { p.count }

    init(bytes: UnsafeRawBufferPointer) { p = bytes }

    func fail(_ reason: String) -> JSONObjectScan.Invalid { JSONObjectScan.Invalid(offset: i, reason: reason) }

    mutating func skipSpace() {
        while i < n, p[i] == 0x20 || p[i] == 0x0A || p[i] == 0x0D || p[i] == 0x09 { i += 1 }
    }

    mutating func expect(_ c: UInt8, _ what: String) throws(JSONObjectScan.Invalid) {
        skipSpace()
        guard i < n, p[i] == c else { throw fail("expected \(what)") }
        i += 1
    }

    mutating func topLevelObject() throws(JSONObjectScan.Invalid) -> [JSONObjectScan.Found] {
        skipSpace()
        guard i < n, p[i] == UInt8(ascii: "{") else { throw fail("expected '{' (the body must be a JSON object)") }
        var members: [JSONObjectScan.Found]? = []
        members!.reserveCapacity(8)
        try object(depth: 0, members: &members)
        skipSpace()
        guard i == n else { throw fail("text after the object") }
        return members ?? []
    }

    /// Scans an object from its '{', appending its members to `members` if given.
    mutating func object(depth: Int, members: inout [JSONObjectScan.Found]?) throws(JSONObjectScan.Invalid) {
        i += 1
        skipSpace()
        if i < n, p[i] == UInt8(ascii: "}") { i += 1; return }
        while true {
            skipSpace()
            guard i < n, p[i] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let keyStart = i
            let keyEscaped = try string()
            let key = keyStart ..< i
            try expect(UInt8(ascii: ":"), "':'")
            skipSpace()
            let valueStart = i
            let (kind, escaped) = try value(depth: depth + 1)
            members?.append(.init(key: key, keyEscaped: keyEscaped, value: valueStart ..< i, kind: kind, escaped: escaped))
            skipSpace()
            guard i < n else { throw fail("unterminated object") }
            if p[i] == UInt8(ascii: ",") { i += 1; continue }
            if p[i] == UInt8(ascii: "}") { i += 1; return }
            throw fail("expected ',' or '}'")
        }
    }

    /// Scans one value; returns its kind and, for strings, whether it has escapes.
    mutating func value(depth: Int) throws(JSONObjectScan.Invalid) -> (JSONObjectScan.Kind, Bool) {
        guard depth <= JSONObjectScan.maxDepth else { throw fail("nested more than \(JSONObjectScan.maxDepth) deep") }
        skipSpace()
        guard i < n else { throw fail("expected a value") }
        switch p[i] {
        case UInt8(ascii: "{"):
            var none: [JSONObjectScan.Found]? = nil
            try object(depth: depth, members: &none)
            return (.object, false)
        case UInt8(ascii: "["):
            i += 1
            skipSpace()
            if i < n, p[i] == UInt8(ascii: "]") { i += 1; return (.array, false) }
            while true {
                _ = try value(depth: depth + 1)
                skipSpace()
                guard i < n else { throw fail("unterminated array") }
                if p[i] == UInt8(ascii: ",") { i += 1; continue }
                if p[i] == UInt8(ascii: "]") { i += 1; return (.array, false) }
                throw fail("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return (.string, try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return (.bool, false)
        case UInt8(ascii: "f"):
            try literal("false")
            return (.bool, false)
        case UInt8(ascii: "n"):
            try literal("null")
            return (.null, false)
        case UInt8(ascii: "-"), UInt8(ascii: "0") ... UInt8(ascii: "9"):
            try number()
            return (.number, false)
        default:
            throw fail("unexpected character")
        }
    }

    mutating func literal(_ word: StaticString) throws(JSONObjectScan.Invalid) {
        let count = word.utf8CodeUnitCount
        guard i + count <= n else { throw fail("unexpected end") }
        for k in 0..<count where p[i + k] != word.utf8Start[k] { throw fail("unexpected character") }
        i += count
    }

    mutating func digits() throws(JSONObjectScan.Invalid) {
        let start = i
        while i < n, p[i] >= UInt8(ascii: "0"), p[i] <= UInt8(ascii: "9") { i += 1 }
        guard i > start else { throw fail("expected a digit") }
    }

    mutating func number() throws(JSONObjectScan.Invalid) {
        if p[i] == UInt8(ascii: "-") { i += 1 }
        guard i < n else { throw fail("expected a digit") }
        if p[i] == UInt8(ascii: "0") { i += 1 } else { try digits() }
        if i < n, p[i] == UInt8(ascii: ".") {
            i += 1
            try digits()
        }
        if i < n, p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E") {
            i += 1
            if i < n, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i += 1 }
            try digits()
        }
    }

    /// Scans a string starting at its opening quote; returns whether it has escapes.
    mutating func string() throws(JSONObjectScan.Invalid) -> Bool {
        i += 1
        var escaped = false
        while true {
            // Eight bytes at a time while none of them is a quote, a backslash
            // or a control character (bit tricks on one 64-bit word; a word
            // they flag, rightly or not, is read byte by byte below).
            while i + 8 <= n {
                let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                let ones: UInt64 = 0x0101_0101_0101_0101
                let quote = w ^ (ones &* 0x22), backslash = w ^ (ones &* 0x5C)
                let flagged = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((w &- ones &* 0x20) & ~w)
                if flagged & (ones &* 0x80) != 0 { break }
                i += 8
            }
            guard i < n else { break }
            let c = p[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return escaped
            }
            if c == UInt8(ascii: "\\") {
                escaped = true
                i += 1
                guard i < n else { break }
                switch p[i] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    guard i + 4 < n else { throw fail("unterminated string") }
                    for k in 1...4 where !p[i + k].isHexDigit { throw fail("bad \\u escape") }
                    i += 5
                default:
                    throw fail("bad escape")
                }
                continue
            }
            guard c >= 0x20 else { throw fail("control character in a string") }
            i += 1
        }
        throw fail("unterminated string")
    }
}

private extension UInt8 {
    var isHexDigit: Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(self)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(self)
    }
}
