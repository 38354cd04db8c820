import Foundation

/// One row of a query, read by column with the type the caller expects: a
/// value of another type (a NULL where a value must be, text where a number
/// must be) is a `DatabaseError` naming the column and the statement, never a
/// crash, so a damaged file is reported rather than taking a service down.
public struct Row {
    let values: [Any?]
    let sql: String

    init(_ values: [Any?], sql: String) {
        self.values = values
        self.sql = sql
    }

    public var count: Int { values.count }

    private func value(_ column: Int) throws -> Any? {
        guard column < values.count else {
            throw DatabaseError(code: 0, message: "no column \(column) in a row of \(values.count) (in: \(sql.prefix(80)))")
        }
        return values[column]
    }

    private func mismatch(_ column: Int, _ expected: String, _ found: Any?) -> DatabaseError {
        let what = found.map { "\(type(of: $0))" } ?? "NULL"
        return DatabaseError(code: 0, message: "column \(column) holds \(what) where \(expected) was expected: the database is damaged or from another program (in: \(sql.prefix(80)))")
    }

    public func string(_ column: Int) throws -> String {
        guard let v = try value(column) as? String else { throw mismatch(column, "text", try value(column)) }
        return v
    }

    public func optionalString(_ column: Int) throws -> String? {
        switch try value(column) {
        case nil: return nil
        case let v as String: return v
        case let other: throw mismatch(column, "text or NULL", other)
        }
    }

    public func int(_ column: Int) throws -> Int {
        guard let v = try value(column) as? Int64 else { throw mismatch(column, "an integer", try value(column)) }
        return Int(v)
    }

    public func optionalInt(_ column: Int) throws -> Int? {
        switch try value(column) {
        case nil: return nil
        case let v as Int64: return Int(v)
        case let other: throw mismatch(column, "an integer or NULL", other)
        }
    }

    /// A real; an integer column value (SQLite stores 2.0 as 2 in some paths) is widened.
    public func double(_ column: Int) throws -> Double {
        switch try value(column) {
        case let v as Double: return v
        case let v as Int64: return Double(v)
        case let other: throw mismatch(column, "a number", other)
        }
    }

    public func optionalDouble(_ column: Int) throws -> Double? {
        switch try value(column) {
        case nil: return nil
        case let v as Double: return v
        case let v as Int64: return Double(v)
        case let other: throw mismatch(column, "a number or NULL", other)
        }
    }

    public func data(_ column: Int) throws -> Data {
        guard let v = try value(column) as? Data else { throw mismatch(column, "a blob", try value(column)) }
        return v
    }
}

/// A type read from one row of a query.
public protocol RowDecodable {
    init(row: Row) throws
}

extension Statement {
    /// All rows, each read as a `T`.
    public func rows<T: RowDecodable>(_ values: [Any?] = [], as type: T.Type) throws -> [T] {
        try typedRows(values).map(T.init(row:))
    }

    /// All rows, each as a `Row` to read by column.
    public func typedRows(_ values: [Any?] = []) throws -> [Row] {
        try rows(values).map { Row($0, sql: sql) }
    }

    /// The first row, if any.
    public func first(_ values: [Any?] = []) throws -> Row? {
        try typedRows(values).first
    }

    /// The integer in the first column of the first row (a COUNT(*), say); 0 without rows.
    public func integer(_ values: [Any?] = []) throws -> Int {
        guard let row = try first(values) else { return 0 }
        return try row.optionalInt(0) ?? 0
    }
}
