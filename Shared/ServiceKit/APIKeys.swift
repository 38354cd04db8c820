import Foundation

/// The gateway's bearer keys: a file with one key per line, optionally
/// followed by a name (`KEY  NAME`); `#` starts a comment line. The file is
/// read again when it changes (checked at most once a second), so keys are
/// added and removed without a restart.
public final class APIKeys: @unchecked Sendable {
    public struct Error: Swift.Error, CustomStringConvertible {
        public let description: String
    }

    public let path: String
    private let lock = NSLock()
    private var keys: [String: String] = [:]
    private var modified: Date?
    private var checked = Date.distantPast

    /// Reads `path`; a missing or empty file is an error (a gateway with no
    /// keys would let no one in).
    public init(path: String) throws(Error) {
        self.path = path
        try reload()
        if keys.isEmpty { throw Error(description: "the API key file \(path) has no keys; add one with: chorus apikey --file \(path)") }
    }

    /// Parses a key file's text: key -> name.
    public static func parse(_ text: String) -> [String: String] {
        var keys: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { continue }
            let parts = trimmed.split(maxSplits: 1, whereSeparator: \.isWhitespace)
            let key = String(parts[0])
            keys[key] = parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : "key \(key.suffix(4))"
        }
        return keys
    }

    private func reload() throws(Error) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw Error(description: "cannot read the API key file \(path) (CHORUS_API_KEYS); make one with: chorus apikey --file \(path)")
        }
        keys = Self.parse(text)
        modified = attributes[.modificationDate] as? Date
    }

    /// The name of the key in an `Authorization: Bearer KEY` header, or nil.
    public func name(authorization: String?) -> String? {
        guard let authorization, authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else { return nil }
        let key = authorization.dropFirst(7).trimmingCharacters(in: .whitespaces)
        lock.lock()
        defer { lock.unlock() }
        if Date().timeIntervalSince(checked) >= 1 {
            checked = Date()
            let now = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
            // A file that cannot be read keeps the keys last read.
            if now != modified { try? reload() }
        }
        return keys[key]
    }

    /// A new random key: `sk-chorus-` and 32 letters and digits.
    public static func generate() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        var generator = SystemRandomNumberGenerator()
        return "sk-chorus-" + String((0..<32).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
    }
}
