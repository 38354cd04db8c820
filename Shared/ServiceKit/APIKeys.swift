import Foundation

/// The gateway's bearer keys: a file with one key per line, then its name
/// (letters, digits, '-', '_', '.', '@'; unique in the file) and, for a key
/// that may see every key's jobs, the word `admin` (`KEY NAME [admin]`); `#`
/// starts a comment line. Each key is a tenant, named by its name. The file
/// is read again when it changes (checked at most once a second), so keys
/// are added and removed without a restart; a file that is gone, or no longer
/// reads as a key file, lets no one in until it is fixed.
public final class APIKeys: @unchecked Sendable {
    public struct Error: Swift.Error, CustomStringConvertible {
        public let description: String
    }

    /// Whom a key stands for.
    public struct Entry: Sendable, Equatable {
        public let name: String
        /// An admin key sees every key's jobs and the workers' hosts.
        public let admin: Bool
        public init(name: String, admin: Bool = false) {
            self.name = name
            self.admin = admin
        }
    }

    public let path: String
    private let lock = NSLock()
    private var keys: [(key: [UInt8], entry: Entry)] = []
    private var modified: Date?
    private var checked = Date.distantPast

    /// Reads `path`; a missing or empty file is an error (a gateway with no
    /// keys would let no one in).
    public init(path: String) throws(Error) {
        self.path = path
        try reload()
        if keys.isEmpty { throw Error(description: "the API key file \(path) has no keys; add one with: chorus apikey --file \(path)") }
    }

    /// Parses a key file's text: key -> entry. Two keys of one name are an error.
    public static func parse(_ text: String, path: String = "the key file") throws(Error) -> [String: Entry] {
        var keys: [String: Entry] = [:]
        var names: Set<String> = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { continue }
            let parts = trimmed.split(whereSeparator: \.isWhitespace).map(String.init)
            let key = parts[0]
            let name = parts.count > 1 ? parts[1] : "key-" + String(key.suffix(8))
            let admin = parts.count > 2 && parts[2] == "admin"
            guard parts.count <= 2 || (parts.count == 3 && admin) else {
                throw Error(description: "\(path):\(number + 1): expected KEY NAME [admin], found \(parts.count) words")
            }
            guard names.insert(name).inserted else {
                throw Error(description: "\(path):\(number + 1): a second key named '\(name)'; each key's name is its tenant and must be unique")
            }
            keys[key] = Entry(name: name, admin: admin)
        }
        return keys
    }

    private func reload() throws(Error) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw Error(description: "cannot read the API key file \(path) (CHORUS_API_KEYS); make one with: chorus apikey --file \(path)")
        }
        keys = try Self.parse(text, path: path).map { (Array($0.key.utf8), $0.value) }
        modified = attributes[.modificationDate] as? Date
    }

    /// Whom the key in an `Authorization: Bearer KEY` header stands for, or nil.
    public func entry(authorization: String?) -> Entry? {
        guard let authorization, authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else { return nil }
        // The key after "Bearer ", spaces around it dropped (bytes: no Foundation on every request).
        var presented = Array(authorization.utf8.dropFirst(7))
        while presented.last == UInt8(ascii: " ") || presented.last == UInt8(ascii: "\t") { presented.removeLast() }
        while presented.first == UInt8(ascii: " ") || presented.first == UInt8(ascii: "\t") { presented.removeFirst() }
        lock.lock()
        defer { lock.unlock() }
        if Date().timeIntervalSince(checked) >= 1 {
            checked = Date()
            let now = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
            if now == nil || now != modified {
                do { try reload() } catch {
                    // Gone or broken: no one gets in on keys that may have been revoked.
                    if !keys.isEmpty { FileHandle.standardError.write(Data("gateway: \(error); no API key is accepted until it is fixed\n".utf8)) }
                    keys = []
                    modified = now
                }
            }
        }
        // Every key is compared, each in time independent of where it differs.
        var found: Entry?
        for (key, entry) in keys where Self.constantTimeEqual(key, presented) { found = entry }
        return found
    }

    /// The name of the key in an `Authorization: Bearer KEY` header, or nil.
    public func name(authorization: String?) -> String? { entry(authorization: authorization)?.name }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        for i in 0..<max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0
    }

    /// A new random key: `sk-chorus-` and 32 letters and digits.
    public static func generate() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        var generator = SystemRandomNumberGenerator()
        return "sk-chorus-" + String((0..<32).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] })
    }
}
