import Foundation
import Storage

/// Keyed vectors with values, searchable by inner product within a namespace,
/// and durable: every change is committed to SQLite (WAL, full sync) before
/// it is acknowledged, and the HNSW graph is snapshotted now and then, so a
/// restart loads the snapshot and replays only the changes made after it.
public final class KVStore {
    public enum Error: Swift.Error, CustomStringConvertible, Equatable {
        case wrongDimension(got: Int, expected: Int)
        case invalidVector(String)
        case unknownNamespace(String)
        case invalidArgument(String)

        public var description: String {
            switch self {
            case let .wrongDimension(got, expected): return "the vector has \(got) dimensions; this index holds \(expected)"
            case let .invalidVector(reason): return "invalid vector: \(reason)"
            case let .unknownNamespace(ns): return "unknown namespace '\(ns)' (nothing was stored in it)"
            case let .invalidArgument(reason): return reason
            }
        }
    }

    public struct Hit: Sendable {
        public let namespace: String
        public let key: String
        public let score: Float
        public let value: String
    }

    public let dimension: Int
    public let directory: String
    public private(set) var index: HNSWIndex
    let db: Database
    /// The row (sequence number) behind each graph element.
    private var rowOfElement: [Int64] = []
    private var elementOfRow: [Int64: Int32] = [:]
    private var namespaceOfElement: [Int32] = []
    private var namespaceIDs: [String: Int32] = [:]
    private var namespaceNames: [String] = []
    /// The live row of each (namespace, key).
    private var live: [String: Int64] = [:]
    private var liveCount: [String: Int] = [:]
    private var nextSeq: Int64 = 1
    private var snapshotSeq: Int64 = 0
    private var changesSinceSnapshot = 0
    public var snapshotEvery = 5000
    public private(set) var loadSeconds = 0.0
    public private(set) var replayedChanges = 0

    var snapshotPath: String { directory + "/index.hnsw" }

    /// 1: items (vectors with their keys and values, deletions by sequence) and settings.
    static let migrations = Migrations(name: "the index's items", firstTable: "items", steps: [
        """
            CREATE TABLE IF NOT EXISTS items (
                seq INTEGER PRIMARY KEY,
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                vector BLOB NOT NULL,
                value TEXT NOT NULL,
                deleted_seq INTEGER
            );
            CREATE INDEX IF NOT EXISTS items_by_key ON items(namespace, key) WHERE deleted_seq IS NULL;
            CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            """,
    ])

    public init(directory: String, dimension: Int, m: Int = 16, efConstruction: Int = 200) throws {
        let start = Date()
        self.directory = directory
        self.dimension = dimension
        db = try Database.durable(path: directory + "/items.sqlite") // creates the folder for the snapshots too
        try Self.migrations.apply(to: db)
        if let stored = try db.prepare("SELECT value FROM settings WHERE name = 'dimension'").first()?.string(0),
           Int(stored) != dimension {
            throw Error.wrongDimension(got: dimension, expected: Int(stored) ?? 0)
        }
        try db.prepare("INSERT OR IGNORE INTO settings (name, value) VALUES ('dimension', ?)").run([String(dimension)])
        index = HNSWIndex(dimension: dimension, m: m, efConstruction: efConstruction)

        // The snapshot, if it is readable, then every change after it.
        if FileManager.default.fileExists(atPath: snapshotPath),
           let (graph, user) = try? HNSWIndex.load(from: snapshotPath), graph.dimension == dimension,
           let meta = try? JSONDecoder().decode(SnapshotMeta.self, from: user), meta.rows.count == graph.count {
            index = graph
            snapshotSeq = meta.lastSeq
            rowOfElement = meta.rows
            for (element, row) in meta.rows.enumerated() { elementOfRow[row] = Int32(element) }
            namespaceNames = meta.namespaces
            for (i, n) in meta.namespaces.enumerated() { namespaceIDs[n] = Int32(i) }
            namespaceOfElement = meta.namespaceOfElement
        }
        let maxRow = try db.prepare("SELECT MAX(seq), MAX(deleted_seq) FROM items").first()
        nextSeq = Int64(max(try maxRow?.optionalInt(0) ?? 0, try maxRow?.optionalInt(1) ?? 0) + 1)
        // Rows added after the snapshot go into the graph.
        for row in try db.prepare("SELECT seq, namespace, vector FROM items WHERE seq > ? ORDER BY seq").typedRows([snapshotSeq]) {
            let vector = Self.floats(try row.data(2))
            guard vector.count == dimension else { continue }
            addElement(seq: Int64(try row.int(0)), namespace: try row.string(1), vector: vector)
            replayedChanges += 1
        }
        // Rows deleted after the snapshot are marked.
        for row in try db.prepare("SELECT seq FROM items WHERE deleted_seq > ?").typedRows([snapshotSeq]) {
            if let e = elementOfRow[Int64(try row.int(0))] { index.markDeleted(e) }
            replayedChanges += 1
        }
        for row in try db.prepare("SELECT seq, namespace, key FROM items WHERE deleted_seq IS NULL").typedRows() {
            let ns = try row.string(1)
            live[Self.liveKey(ns, try row.string(2))] = Int64(try row.int(0))
            liveCount[ns, default: 0] += 1
        }
        changesSinceSnapshot = replayedChanges
        loadSeconds = Date().timeIntervalSince(start)
    }

    struct SnapshotMeta: Codable {
        var lastSeq: Int64
        var rows: [Int64]
        var namespaces: [String]
        var namespaceOfElement: [Int32]
    }

    static func liveKey(_ namespace: String, _ key: String) -> String { namespace + "\u{1F}" + key }

    static func floats(_ data: Data) -> [Float] {
        data.withUnsafeBytes { raw in (0..<(raw.count / 4)).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
    }

    private func addElement(seq: Int64, namespace: String, vector: [Float]) {
        let nsID: Int32
        if let id = namespaceIDs[namespace] { nsID = id } else {
            nsID = Int32(namespaceNames.count)
            namespaceIDs[namespace] = nsID
            namespaceNames.append(namespace)
        }
        let element = vector.withUnsafeBufferPointer { index.add($0.baseAddress!) }
        rowOfElement.append(seq)
        elementOfRow[seq] = element
        namespaceOfElement.append(nsID)
    }

    func validate(_ vector: [Float]) throws(Error) -> [Float] {
        guard vector.count == dimension else { throw .wrongDimension(got: vector.count, expected: dimension) }
        guard vector.allSatisfy(\.isFinite) else { throw .invalidVector("it has a value that is not a finite number") }
        let norm = vector.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
        guard norm > 1e-6 else { throw .invalidVector("it is all zeros") }
        return vector.map { Float(Double($0) / norm) }
    }

    /// Stores `vector` (normalised to unit length) and `value` under `key` in
    /// `namespace`, replacing what was there. Durable when it returns.
    @discardableResult
    public func upsert(namespace: String, key: String, vector: [Float], value: String) throws -> (replaced: Bool, count: Int) {
        guard !namespace.isEmpty, !key.isEmpty else { throw Error.invalidArgument("namespace and key must not be empty") }
        let unit = try validate(vector)
        let lk = Self.liveKey(namespace, key)
        let old = live[lk]
        let deleteSeq = nextSeq, insertSeq = nextSeq + 1
        let blob = unit.withUnsafeBytes { Data($0) }
        try db.transaction {
            if let old { try db.prepare("UPDATE items SET deleted_seq = ? WHERE seq = ?").run([deleteSeq, old]) }
            try db.prepare("INSERT INTO items (seq, namespace, key, vector, value) VALUES (?, ?, ?, ?, ?)")
                .run([insertSeq, namespace, key, blob, value])
        }
        nextSeq += 2
        if let old, let e = elementOfRow[old] { index.markDeleted(e) }
        addElement(seq: insertSeq, namespace: namespace, vector: unit)
        live[lk] = insertSeq
        if old == nil { liveCount[namespace, default: 0] += 1 }
        try noteChange()
        return (old != nil, index.count - index.deletedCount)
    }

    /// Removes `key` from `namespace`; false if it was not there.
    @discardableResult
    public func delete(namespace: String, key: String) throws -> Bool {
        let lk = Self.liveKey(namespace, key)
        guard let old = live[lk] else { return false }
        try db.prepare("UPDATE items SET deleted_seq = ? WHERE seq = ?").run([nextSeq, old])
        nextSeq += 1
        if let e = elementOfRow[old] { index.markDeleted(e) }
        live[lk] = nil
        liveCount[namespace, default: 1] -= 1
        try noteChange()
        return true
    }

    /// The `k` entries most similar to `vector`, optionally only in `namespace`.
    public func query(vector: [Float], k: Int, namespace: String? = nil, ef: Int = 64) throws -> [Hit] {
        guard k >= 1, k <= 1000 else { throw Error.invalidArgument("k must be between 1 and 1000, got \(k)") }
        let unit = try validate(vector)
        var accept: ((Int32) -> Bool)?
        if let namespace {
            guard let ns = namespaceIDs[namespace], (liveCount[namespace] ?? 0) > 0 else { throw Error.unknownNamespace(namespace) }
            let owners = namespaceOfElement
            accept = { owners[Int($0)] == ns }
        }
        let found = unit.withUnsafeBufferPointer { index.search($0.baseAddress!, k: k, ef: max(ef, k), accept: accept) }
        guard !found.isEmpty else { return [] }
        let rows = found.map { rowOfElement[Int($0.id)] }
        let placeholders = rows.map { _ in "?" }.joined(separator: ",")
        var byRow: [Int64: (String, String, String)] = [:]
        for r in try db.prepare("SELECT seq, namespace, key, value FROM items WHERE seq IN (\(placeholders))").typedRows(rows) {
            byRow[Int64(try r.int(0))] = (try r.string(1), try r.string(2), try r.string(3))
        }
        return zip(found, rows).compactMap { hit, row in
            byRow[row].map { Hit(namespace: $0.0, key: $0.1, score: hit.score, value: $0.2) }
        }
    }

    public var count: Int { live.count }
    public var namespaces: [String: Int] { liveCount.filter { $0.value > 0 } }
    public var graphSize: Int { index.count }

    private func noteChange() throws {
        changesSinceSnapshot += 1
        if changesSinceSnapshot >= snapshotEvery { try snapshot() }
    }

    /// Saves the graph so the next start replays nothing before this point.
    public func snapshot() throws {
        let meta = SnapshotMeta(lastSeq: nextSeq - 1, rows: rowOfElement, namespaces: namespaceNames, namespaceOfElement: namespaceOfElement)
        try index.save(to: snapshotPath, userData: try JSONEncoder().encode(meta))
        snapshotSeq = nextSeq - 1
        changesSinceSnapshot = 0
    }
}
