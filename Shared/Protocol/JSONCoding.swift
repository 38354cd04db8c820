import Foundation

/// Chorus's one JSON configuration, for every message, record and file it
/// writes: keys sorted (the same value is always the same bytes, so journals
/// and exports compare and diff as text) and slashes left unescaped; `pretty`
/// adds the line breaks and indentation of what people read. Decoding needs
/// no configuration: a plain `JSONDecoder` reads all of it.
public enum JSONCoding {
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// `value` as JSON text.
    public static func string<T: Encodable>(_ value: T, pretty: Bool = false) throws -> String {
        String(decoding: try encoder(pretty: pretty).encode(value), as: UTF8.self)
    }

    /// `text` as a JSON string (quotes included), as the encoder writes it.
    public static func quoted(_ text: String) -> Data {
        let needsEscape = text.utf8.contains { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }
        if needsEscape { return (try? encoder().encode(text)) ?? Data(#""""#.utf8) }
        var out = Data(capacity: text.utf8.count + 2)
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: text.utf8)
        out.append(UInt8(ascii: "\""))
        return out
    }
}
