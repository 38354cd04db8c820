import Foundation
import Storage
import Testing

/// The SQLite wrapper every store uses: schemas as numbered steps, rows read
/// by type with errors instead of crashes.
@Suite("storage")
struct StorageTests {
    func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("storage-\(UUID().uuidString).sqlite").path
    }

    @Test("migrations apply the steps a file lacks, each once; an unversioned file with step 1's table is at version 1; a newer file is refused, unchanged")
    func migrations() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let two = Migrations(name: "the test store", firstTable: "a", steps: [
            "CREATE TABLE a (x INTEGER)",
            "ALTER TABLE a ADD COLUMN y TEXT",
        ])
        let db = try Database.durable(path: path)
        #expect(try two.apply(to: db) == 0)
        #expect(try db.userVersion() == 2)
        try db.prepare("INSERT INTO a (x, y) VALUES (?, ?)").run([1, "one"])
        // Again: nothing to do (a step run twice would fail: the column exists).
        #expect(try two.apply(to: db) == 2)
        // A third step later: only it runs.
        let three = Migrations(name: "the test store", firstTable: "a", steps: two.steps + ["CREATE TABLE b (z REAL)"])
        #expect(try three.apply(to: db) == 2)
        #expect(try db.userVersion() == 3 && db.hasTable("b"))
        #expect(try db.prepare("SELECT x, y FROM a").first()?.string(1) == "one")

        // A file made before versions: having step 1's table, it is at version 1.
        let legacyPath = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: legacyPath) }
        let legacy = try Database.durable(path: legacyPath)
        try legacy.execute("CREATE TABLE a (x INTEGER)")
        #expect(try two.apply(to: legacy) == 0)
        #expect(try legacy.userVersion() == 2)
        try legacy.prepare("INSERT INTO a (x, y) VALUES (?, ?)").run([2, "two"])

        // A step that fails leaves the file at the version before it.
        let failing = Migrations(name: "the test store", firstTable: "a", steps: three.steps + [
            "CREATE TABLE c (w INTEGER); THIS IS NOT SQL",
        ])
        #expect(throws: DatabaseError.self) { try failing.apply(to: db) }
        #expect(try db.userVersion() == 3 && !db.hasTable("c"))

        // Newer than the program: refused, naming both versions, and unchanged.
        try db.execute("PRAGMA user_version = 9")
        do {
            try three.apply(to: db)
            Issue.record("a file of version 9 was opened by a program of version 3")
        } catch let e as DatabaseError {
            #expect(e.message.contains("the test store \(path) has schema version 9, newer than this Chorus's 3"), "\(e)")
        }
        #expect(try db.userVersion() == 9)
    }

    @Test("rows read by type: NULLs, widening, and a value of the wrong type is an error naming the column, not a crash")
    func typedRows() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let db = try Database.durable(path: path)
        try db.execute("CREATE TABLE t (s TEXT, i INTEGER, r REAL, b BLOB)")
        try db.prepare("INSERT INTO t VALUES (?, ?, ?, ?)").run(["text", 7, 2.5, Data([1, 2, 3])])
        try db.prepare("INSERT INTO t VALUES (?, ?, ?, ?)").run([nil, nil, 3, nil])
        // SQLite keeps what it is given: text in the integer column.
        try db.prepare("INSERT INTO t VALUES (?, ?, ?, ?)").run([5, "seven", "x", "not a blob"])
        let rows = try db.prepare("SELECT s, i, r, b FROM t ORDER BY rowid").typedRows()
        #expect(rows.count == 3)
        #expect(try rows[0].string(0) == "text" && rows[0].int(1) == 7 && rows[0].double(2) == 2.5 && rows[0].data(3) == Data([1, 2, 3]))
        #expect(try rows[1].optionalString(0) == nil && rows[1].optionalInt(1) == nil && rows[1].double(2) == 3)
        #expect(try rows[1].optionalDouble(2) == 3)
        for (read, column) in [({ _ = try rows[1].string(0) }, 0), ({ _ = try rows[2].int(1) }, 1), ({ _ = try rows[2].double(2) }, 2),
                               ({ _ = try rows[2].data(3) }, 3), ({ _ = try rows[0].string(9) }, 9)] as [(() throws -> Void, Int)] {
            do {
                try read()
                Issue.record("column \(column) was read as a type it does not hold")
            } catch let e as DatabaseError {
                #expect(e.message.contains("column \(column)") && e.message.contains("SELECT s, i, r, b FROM t"), "\(e)")
            }
        }
        #expect(try db.prepare("SELECT COUNT(*) FROM t").integer() == 3)
        #expect(try db.prepare("SELECT i FROM t WHERE s = ?").integer(["none"]) == 0)

        struct Item: RowDecodable {
            let s: String
            let i: Int
            init(row: Row) throws {
                s = try row.string(0)
                i = try row.int(1)
            }
        }
        #expect(try db.prepare("SELECT s, i FROM t WHERE rowid = 1").rows(as: Item.self).map(\.i) == [7])
        #expect(throws: DatabaseError.self) { try db.prepare("SELECT s, i FROM t").rows(as: Item.self) }
    }
}
