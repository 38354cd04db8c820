import Foundation

/// A database's schema as the ordered steps that made it: step n brings a
/// database from version n-1 to n (SQLite's `user_version`). Opening applies
/// the steps a file lacks, each in its own transaction with its version, and
/// refuses a file from a newer program instead of changing it.
public struct Migrations: Sendable {
    /// What the file is (for messages): "the journal", "the memory store".
    public let name: String
    /// Each step's SQL (one or more statements).
    public let steps: [String]
    /// The table step 1 creates: a file with it and no version number was
    /// written before versions were numbered, and is at version 1.
    public let firstTable: String

    public init(name: String, firstTable: String, steps: [String]) {
        self.name = name
        self.firstTable = firstTable
        self.steps = steps
    }

    /// The version this program writes.
    public var version: Int { steps.count }

    /// Brings `db` to `version`; returns the version the file had.
    @discardableResult
    public func apply(to db: Database) throws -> Int {
        var found = try db.userVersion()
        guard found <= version else {
            throw DatabaseError(code: 0, message: "\(name) \(db.path) has schema version \(found), newer than this Chorus's \(version): run the Chorus that wrote it, or a newer one")
        }
        let original = found
        if found == 0, try db.hasTable(firstTable) { found = 1 }
        for n in found..<version {
            try db.transaction {
                try db.execute(steps[n])
                try db.execute("PRAGMA user_version = \(n + 1)")
            }
        }
        if found == version && original != version { try db.execute("PRAGMA user_version = \(version)") }
        return original
    }
}

extension Database {
    /// SQLite's `user_version`: the schema version a Chorus wrote.
    public func userVersion() throws -> Int {
        try prepare("PRAGMA user_version").integer()
    }

    /// Whether the database has a table of this name.
    public func hasTable(_ name: String) throws -> Bool {
        try prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").first([name]) != nil
    }
}
