import Foundation

/// Any JSON value, for payloads whose shape depends on the role.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    /// A number written without a fraction or exponent that fits 64 bits: kept
    /// exact, so seeds and counts above 2^53 survive a pass through a JSONValue.
    case integer(Int64)
    case unsigned(UInt64)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        // Most likely first: every failed attempt builds an error.
        if c.decodeNil() { self = .null }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let o = try? c.decode([String: JSONValue].self) { self = .object(o) }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Int64.self) { self = .integer(n) }
        else if let n = try? c.decode(UInt64.self) { self = .unsigned(n) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else { self = .array(try c.decode([JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case let .bool(b): try c.encode(b)
        case let .number(n): try c.encode(n)
        case let .integer(n): try c.encode(n)
        case let .unsigned(n): try c.encode(n)
        case let .string(s): try c.encode(s)
        case let .array(a): try c.encode(a)
        case let .object(o): try c.encode(o)
        }
    }

    /// Converts any Encodable value to a JSONValue.
    public init<T: Encodable>(encoding value: T) throws {
        self = try JSONDecoder().decode(JSONValue.self, from: try JSONEncoder().encode(value))
    }

    /// Decodes this value as `T`.
    public func decode<T: Decodable>(as type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: try JSONEncoder().encode(self))
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    public var doubleValue: Double? {
        switch self {
        case let .number(n): return n
        case let .integer(n): return Double(n)
        case let .unsigned(n): return Double(n)
        default: return nil
        }
    }

    /// Numbers are equal when their values are, however they were written.
    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)): return x == y
        case let (.integer(x), .integer(y)): return x == y
        case let (.unsigned(x), .unsigned(y)): return x == y
        case (.integer, .unsigned), (.unsigned, .integer): return false
        default:
            guard let x = a.doubleValue, let y = b.doubleValue else { return false }
            return x == y
        }
    }
}

/// JSON Lines: one JSON object per line, keys sorted, slashes as they are.
public enum JSONLines {
    public static func encode<T: Encodable>(_ items: [T]) throws -> Data {
        let encoder = JSONCoding.encoder()
        var data = Data()
        for item in items {
            data.append(try encoder.encode(item))
            data.append(UInt8(ascii: "\n"))
        }
        return data
    }

    /// Writes the file whole or not at all.
    public static func write<T: Encodable>(_ items: [T], to url: URL) throws {
        try encode(items).write(to: url, options: .atomic)
    }
}
