import Foundation
import Protocol
import Storage

/// Where the memory's time comes from; tests move it forward.
public protocol RetentionClock: AnyObject, Sendable {
    func now() -> Double
}

public final class SystemClock: RetentionClock, @unchecked Sendable {
    public init() {}
    public func now() -> Double { Date().timeIntervalSince1970 }
}

/// The system time plus an offset that only grows.
public final class OffsetClock: RetentionClock, @unchecked Sendable {
    private let lock = NSLock()
    private var offset: Double = 0
    public init() {}
    public func now() -> Double {
        lock.lock(); defer { lock.unlock() }
        return Date().timeIntervalSince1970 + offset
    }
    public func advance(_ seconds: Double) {
        lock.lock(); defer { lock.unlock() }
        offset += max(0, seconds)
    }
}

/// The forgetting curve's settings (MemoryBank's form of Ebbinghaus' curve).
public struct ForgettingCurve: Sendable, Codable, Equatable {
    /// Strength S of a new memory, in seconds: retention falls to 1/e after S seconds without recall.
    public var initialStrength: Double
    /// Each recall multiplies S by this.
    public var growth: Double
    /// A sweep forgets memories whose retention is below this.
    public var forgetBelow: Double

    public init(initialStrength: Double = 86_400, growth: Double = 2, forgetBelow: Double = 0.05) {
        self.initialStrength = initialStrength
        self.growth = growth
        self.forgetBelow = forgetBelow
    }

    /// R = exp(-t / S).
    public func retention(strength: Double, since lastRecall: Double, now: Double) -> Double {
        exp(-max(0, now - lastRecall) / max(strength, 1e-9))
    }
}

/// One long-term memory: an episode (a solved job) or a reflection (a lesson
/// from a rejected or corrected attempt).
public struct Memory: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case episode, reflection }
    public var id: String
    public var kind: Kind
    /// What similarity is measured on (the question).
    public var text: String
    public var content: JSONValue
    public var strength: Double
    public var lastRecall: Double
    public var createdAt: Double
    public var recalls: Int

    enum CodingKeys: String, CodingKey {
        case id, kind, text, content, strength, lastRecall = "last_recall", createdAt = "created_at", recalls
    }
}

/// Long-term memory in SQLite, with strengths and recall times.
public final class MemoryStore {
    let db: Database
    public let curve: ForgettingCurve
    public let clock: RetentionClock

    /// 1: memories with their strengths, and the ones not yet in the search index.
    static let migrations = Migrations(name: "the memory store", firstTable: "memories", steps: [
        """
            CREATE TABLE IF NOT EXISTS memories (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                text TEXT NOT NULL,
                content TEXT NOT NULL,
                strength REAL NOT NULL,
                last_recall REAL NOT NULL,
                created_at REAL NOT NULL,
                recalls INTEGER NOT NULL DEFAULT 0
            );
            CREATE TABLE IF NOT EXISTS unindexed (id TEXT PRIMARY KEY);
            """,
    ])

    public init(path: String, curve: ForgettingCurve = ForgettingCurve(), clock: RetentionClock = SystemClock()) throws {
        db = try Database.durable(path: path)
        try Self.migrations.apply(to: db)
        self.curve = curve
        self.clock = clock
    }

    public func retention(_ m: Memory) -> Double {
        curve.retention(strength: m.strength, since: m.lastRecall, now: clock.now())
    }

    /// What a new memory holds.
    public struct New: Sendable {
        public var id: String
        public var kind: Memory.Kind
        public var text: String
        public var content: JSONValue
        public init(id: String, kind: Memory.Kind, text: String, content: JSONValue) {
            self.id = id
            self.kind = kind
            self.text = text
            self.content = content
        }
    }

    /// Stores memories (replacing ones with the same ids) at full strength, all
    /// or none, each marked as not yet in the search index until
    /// `markIndexed` says it is.
    public func add(_ memories: [New]) throws {
        let now = clock.now()
        let insert = try db.prepare("INSERT OR REPLACE INTO memories (id, kind, text, content, strength, last_recall, created_at, recalls) VALUES (?, ?, ?, ?, ?, ?, ?, 0)")
        let mark = try db.prepare("INSERT OR REPLACE INTO unindexed (id) VALUES (?)")
        let encoder = JSONCoding.encoder()
        let rows = try memories.map { ($0, String(decoding: try encoder.encode($0.content), as: UTF8.self)) }
        try db.transaction {
            for (m, json) in rows {
                try insert.run([m.id, m.kind.rawValue, m.text, json, curve.initialStrength, now, now])
                try mark.run([m.id])
            }
        }
    }

    public func add(id: String, kind: Memory.Kind, text: String, content: JSONValue) throws {
        try add([New(id: id, kind: kind, text: text, content: content)])
    }

    /// These memories are in the search index now.
    public func markIndexed(_ ids: [String]) throws {
        let statement = try db.prepare("DELETE FROM unindexed WHERE id = ?")
        try db.transaction {
            for id in ids { try statement.run([id]) }
        }
    }

    /// Memories stored but not yet known to be in the search index (the
    /// service stopped between the two), oldest first.
    public func unindexed() throws -> [Memory] {
        try db.prepare("SELECT m.id, m.kind, m.text, m.content, m.strength, m.last_recall, m.created_at, m.recalls FROM memories m JOIN unindexed u ON u.id = m.id ORDER BY m.created_at, m.id")
            .rows(as: Memory.self)
    }

    public func memory(_ id: String) throws -> Memory? {
        try db.prepare("SELECT id, kind, text, content, strength, last_recall, created_at, recalls FROM memories WHERE id = ?")
            .rows([id], as: Memory.self).first
    }

    public func all() throws -> [Memory] {
        try db.prepare("SELECT id, kind, text, content, strength, last_recall, created_at, recalls FROM memories ORDER BY created_at, id")
            .rows(as: Memory.self)
    }

    /// A recall raises the strength and resets the time since the last recall.
    public func recall(_ ids: [String]) throws {
        let now = clock.now()
        let statement = try db.prepare("UPDATE memories SET strength = strength * ?, last_recall = ?, recalls = recalls + 1 WHERE id = ?")
        try db.transaction {
            for id in ids { try statement.run([curve.growth, now, id]) }
        }
    }

    /// Forgets every memory whose retention is below `threshold` (default:
    /// the curve's); returns the forgotten ones.
    @discardableResult
    public func sweep(below threshold: Double? = nil) throws -> [Memory] {
        let limit = threshold ?? curve.forgetBelow
        let gone = try all().filter { retention($0) < limit }
        let statement = try db.prepare("DELETE FROM memories WHERE id = ?")
        let unmark = try db.prepare("DELETE FROM unindexed WHERE id = ?")
        try db.transaction {
            for m in gone {
                try statement.run([m.id])
                try unmark.run([m.id])
            }
        }
        return gone
    }

    public func remove(_ id: String) throws {
        try db.transaction {
            try db.prepare("DELETE FROM memories WHERE id = ?").run([id])
            try db.prepare("DELETE FROM unindexed WHERE id = ?").run([id])
        }
    }

    public func count(_ kind: Memory.Kind? = nil) throws -> Int {
        guard let kind else { return try db.prepare("SELECT COUNT(*) FROM memories").integer() }
        return try db.prepare("SELECT COUNT(*) FROM memories WHERE kind = ?").integer([kind.rawValue])
    }
}

/// A memory as the store's queries select it: id, kind, text, content,
/// strength, last_recall, created_at, recalls. Content that is not JSON reads
/// as null, an unknown kind as an episode.
extension Memory: RowDecodable {
    public init(row: Row) throws {
        let content = (try? JSONDecoder().decode(JSONValue.self, from: Data(try row.string(3).utf8))) ?? .null
        self.init(id: try row.string(0), kind: Memory.Kind(rawValue: try row.string(1)) ?? .episode, text: try row.string(2),
                  content: content, strength: try row.double(4), lastRecall: try row.double(5),
                  createdAt: try row.double(6), recalls: try row.int(7))
    }
}
