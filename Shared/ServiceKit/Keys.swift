import Foundation

/// CURVE key files, as `chorus keygen --out PREFIX` writes them: `PREFIX.key`
/// holds a secret key and `PREFIX.pub` its public key, each on the file's
/// first line (40 characters of Z85). A worker's `.pub` file in the broker's
/// allow-list may limit the key to roles with a later line `roles: a, b`.
public enum KeyFile {
    public struct Error: Swift.Error, CustomStringConvertible, Equatable {
        public let message: String
        public var description: String { message }
    }

    static let z85 = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)

    /// Whether `text` has the form of a Z85 CURVE key.
    public static func isKey(_ text: String) -> Bool { text.utf8.count == 40 && text.utf8.allSatisfy(z85.contains) }

    /// The key on the first line of `path`; `what` names it in errors.
    public static func read(_ path: String, what: String) throws(Error) -> String {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw Error(message: "cannot read \(what) \(path); make one with chorus keygen --out PREFIX")
        }
        return try key(in: text, path: path, what: what)
    }

    static func key(in text: String, path: String, what: String) throws(Error) -> String {
        let first = text.split(separator: "\n", omittingEmptySubsequences: false).first.map {
            $0.trimmingCharacters(in: .whitespacesAndNewlines)
        } ?? ""
        guard isKey(first) else {
            throw Error(message: "\(path) is not a \(what): its first line must be a 40-character Z85 key (as chorus keygen writes)")
        }
        return first
    }
}

/// An allow-list: the public-key files (`*.pub`) in a folder. Each member is
/// named by its file (without `.pub`) and may be limited to roles.
public struct AccessList: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public let name: String
        public let publicKey: String
        /// The roles it may serve; nil for any.
        public let roles: Set<String>?
        public func allows(role: String) -> Bool { roles?.contains(role) ?? true }
    }

    public let folder: String
    public private(set) var members: [String: Member] = [:]
    private var byKey: [String: Member] = [:]

    /// Reads every `*.pub` file of `folder`; a file that is not a key is an error.
    public init(folder: String) throws(KeyFile.Error) {
        self.folder = folder
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue,
              let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
            throw KeyFile.Error(message: "the key folder \(folder) does not exist; make it and put the .pub files of the keys it admits in it")
        }
        for file in names.sorted() where file.hasSuffix(".pub") {
            let path = folder + "/" + file
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw KeyFile.Error(message: "cannot read \(path)")
            }
            let key = try KeyFile.key(in: text, path: path, what: "public key file")
            var roles: Set<String>?
            for line in text.split(separator: "\n").dropFirst() {
                let t = line.trimmingCharacters(in: .whitespaces)
                guard t.hasPrefix("roles:") else { continue }
                roles = Set(t.dropFirst(6).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
            }
            let member = Member(name: String(file.dropLast(4)), publicKey: key, roles: roles)
            members[member.name] = member
            byKey[key] = member
        }
    }

    public func member(forKey key: String) -> Member? { byKey[key] }
}

/// Warnings of one kind, at most `limit` per `window` seconds; the rest are
/// counted and reported as one line when the window ends, so that a flood of
/// bad messages cannot fill the disk.
public final class RateLimitedLog: @unchecked Sendable {
    let limit: Int
    let window: Double
    private var windowStart = 0.0
    private var written = 0
    private var suppressed = 0
    private let lock = NSLock()

    public init(limit: Int = 10, window: Double = 60) {
        self.limit = limit
        self.window = window
    }

    public func warning(_ message: @autoclosure () -> String, now: Double = Date().timeIntervalSince1970) {
        lock.lock()
        defer { lock.unlock() }
        if now - windowStart >= window {
            if suppressed > 0 { Log.warning("\(suppressed) more warnings like these in the last \(Int(window)) s were not written") }
            windowStart = now
            written = 0
            suppressed = 0
        }
        if written < limit {
            written += 1
            Log.warning(message())
        } else {
            suppressed += 1
        }
    }

    /// Warnings not written in the current window.
    public var suppressedCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return suppressed
    }
}
