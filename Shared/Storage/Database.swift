import CSQLite
import Foundation

/// An error from SQLite, with the statement or operation that failed.
public struct DatabaseError: Error, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public var description: String { message }
}

/// A small wrapper over one SQLite connection. Not thread-safe: one owner.
public final class Database {
    private var handle: OpaquePointer?
    public let path: String

    public init(path: String, busyTimeoutMilliseconds: Int32 = 5000) throws {
        self.path = path
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw DatabaseError(code: rc, message: "cannot open database \(path): \(message)")
        }
        handle = db
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
    }

    deinit { sqlite3_close_v2(handle) }

    /// Opens a database, creating it and its folder if needed, in which every
    /// commit is on disk when it returns (write-ahead log, full sync).
    public static func durable(path: String, busyTimeoutMilliseconds: Int32 = 5000) throws -> Database {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let db = try Database(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
        try db.execute("PRAGMA journal_mode = WAL")
        try db.execute("PRAGMA synchronous = FULL")
        return db
    }

    public func execute(_ sql: String) throws {
        var error: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &error)
        if rc != SQLITE_OK {
            let message = error.map { String(cString: $0) } ?? "error \(rc)"
            sqlite3_free(error)
            throw DatabaseError(code: rc, message: "\(message) (in: \(sql.prefix(80)))")
        }
    }

    public func prepare(_ sql: String) throws -> Statement {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw error(rc, sql) }
        return Statement(statement, database: self, sql: sql)
    }

    /// Runs `body` in a transaction, committed if it returns, rolled back if it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// Rows changed by the last statement.
    public var changes: Int { Int(sqlite3_changes(handle)) }

    func error(_ rc: Int32, _ sql: String) -> DatabaseError {
        DatabaseError(code: rc, message: "\(String(cString: sqlite3_errmsg(handle))) (in: \(sql.prefix(80)))")
    }
}

/// A prepared statement: bind values, then step through rows.
public final class Statement {
    private let statement: OpaquePointer
    private let database: Database
    let sql: String
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    init(_ statement: OpaquePointer, database: Database, sql: String) {
        self.statement = statement
        self.database = database
        self.sql = sql
    }

    deinit { sqlite3_finalize(statement) }

    /// Binds values to the `?` parameters in order (String, Int, Int64, Double, Bool, Data, nil).
    @discardableResult
    public func bind(_ values: [Any?]) throws -> Statement {
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case nil: rc = sqlite3_bind_null(statement, index)
            case let v as String: rc = sqlite3_bind_text(statement, index, v, -1, Statement.transient)
            case let v as Int: rc = sqlite3_bind_int64(statement, index, Int64(v))
            case let v as Int64: rc = sqlite3_bind_int64(statement, index, v)
            case let v as Double: rc = sqlite3_bind_double(statement, index, v)
            case let v as Bool: rc = sqlite3_bind_int64(statement, index, v ? 1 : 0)
            case let v as Data:
                rc = v.withUnsafeBytes { sqlite3_bind_blob(statement, index, $0.baseAddress, Int32($0.count), Statement.transient) }
            default: throw DatabaseError(code: SQLITE_MISUSE, message: "cannot bind \(type(of: value)) (in: \(sql.prefix(80)))")
            }
            if rc != SQLITE_OK { throw database.error(rc, sql) }
        }
        return self
    }

    /// Runs a statement that returns no rows.
    public func run(_ values: [Any?] = []) throws {
        // Reset on every path: a statement left active after an error (a busy
        // database, say) would keep its transaction open.
        defer { sqlite3_reset(statement) }
        try bind(values)
        let rc = sqlite3_step(statement)
        if rc != SQLITE_DONE && rc != SQLITE_ROW { throw database.error(rc, sql) }
    }

    /// All rows, each as an array of column values (String, Int64, Double, Data or nil).
    public func rows(_ values: [Any?] = []) throws -> [[Any?]] {
        defer { sqlite3_reset(statement) }
        try bind(values)
        var out: [[Any?]] = []
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw database.error(rc, sql) }
            var row: [Any?] = []
            for c in 0..<sqlite3_column_count(statement) {
                switch sqlite3_column_type(statement, c) {
                case SQLITE_INTEGER: row.append(sqlite3_column_int64(statement, c))
                case SQLITE_FLOAT: row.append(sqlite3_column_double(statement, c))
                case SQLITE_TEXT: row.append(String(cString: sqlite3_column_text(statement, c)))
                case SQLITE_BLOB:
                    let n = Int(sqlite3_column_bytes(statement, c))
                    row.append(n > 0 ? Data(bytes: sqlite3_column_blob(statement, c), count: n) : Data())
                default: row.append(nil)
                }
            }
            out.append(row)
        }
        return out
    }
}
