import Foundation
import Index
import Memory
import Protocol
import Storage
import Testing

func temporaryDirectory() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-mem-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func randomUnitVectors(_ n: Int, _ dim: Int, seed: UInt64) -> [[Float]] {
    var state = seed
    func next() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state >> 11) % 2_000_001) / 1_000_000 - 1
    }
    return (0..<n).map { _ in
        let v = (0..<dim).map { _ in next() }
        let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return v.map { $0 / norm }
    }
}

@Suite("HNSW index")
struct HNSWTests {
    @Test("recall against exact search, deletions and filters, snapshot round trip")
    func recall() throws {
        let dim = 32
        let data = randomUnitVectors(3000, dim, seed: 7)
        let index = HNSWIndex(dimension: dim, m: 16, efConstruction: 100)
        for v in data { v.withUnsafeBufferPointer { _ = index.add($0.baseAddress!) } }
        let queries = randomUnitVectors(100, dim, seed: 99)
        var hits = 0
        for q in queries {
            q.withUnsafeBufferPointer { qp in
                let approx = Set(index.search(qp.baseAddress!, k: 10, ef: 100).map(\.id))
                let exact = index.exactSearch(qp.baseAddress!, k: 10).map(\.id)
                hits += exact.filter { approx.contains($0) }.count
            }
        }
        #expect(Double(hits) / 1000 >= 0.95, "recall@10 \(Double(hits) / 1000)")
        // The walk's 8-bit scores stay within the rounding bound of the exact
        // inner product (dimension 32 pads the codes; 384 does not).
        for d in [32, 384] {
            let vs = randomUnitVectors(50, d, seed: 5)
            let small = HNSWIndex(dimension: d, m: 8, efConstruction: 20)
            for v in vs { v.withUnsafeBufferPointer { _ = small.add($0.baseAddress!) } }
            for q in randomUnitVectors(5, d, seed: 6) {
                for (id, v) in vs.enumerated() {
                    let exact = zip(q, v).reduce(Float(0)) { $0 + $1.0 * $1.1 }
                    let bound = Float(d).squareRoot() * v.map(abs).max()! / 254 + 1e-5
                    let approx = q.withUnsafeBufferPointer { small.approximateScore($0.baseAddress!, Int32(id)) }
                    #expect(abs(approx - exact) <= bound, "dimension \(d), element \(id): \(approx) vs \(exact)")
                }
            }
        }
        // The best match of a stored vector is itself, with score 1.
        data[42].withUnsafeBufferPointer { #expect(index.search($0.baseAddress!, k: 1, ef: 50).first?.id == 42) }
        // Deleted elements are never returned; filters are respected.
        index.markDeleted(42)
        data[42].withUnsafeBufferPointer { p in
            #expect(!index.search(p.baseAddress!, k: 20, ef: 50).contains { $0.id == 42 })
            let even = index.search(p.baseAddress!, k: 10, ef: 64) { $0 % 2 == 0 }
            #expect(even.count == 10 && even.allSatisfy { $0.id % 2 == 0 })
        }
        // A snapshot loads to the same graph.
        let path = temporaryDirectory() + "/g.hnsw"
        try index.save(to: path, userData: Data("meta".utf8))
        let (loaded, user) = try HNSWIndex.load(from: path)
        #expect(user == Data("meta".utf8) && loaded.count == index.count && loaded.deletedCount == 1)
        for q in queries.prefix(10) {
            q.withUnsafeBufferPointer { p in
                #expect(loaded.search(p.baseAddress!, k: 10, ef: 64).map(\.id) == index.search(p.baseAddress!, k: 10, ef: 64).map(\.id))
            }
        }
        // A truncated or foreign snapshot is refused with a reason.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path + ".cut"))
        #expect(throws: HNSWIndex.SnapshotError.self) { try HNSWIndex.load(from: path + ".cut") }
        try Data("not a snapshot at all, nope".utf8).write(to: URL(fileURLWithPath: path + ".bad"))
        #expect(throws: HNSWIndex.SnapshotError.self) { try HNSWIndex.load(from: path + ".bad") }
    }
}

@Suite("KV store")
struct KVStoreTests {
    @Test("upsert, query by namespace, delete, errors; a reopened store has everything")
    func store() throws {
        let dir = temporaryDirectory()
        let vectors = randomUnitVectors(60, 16, seed: 3)
        do {
            let s = try KVStore(directory: dir, dimension: 16)
            s.snapshotEvery = 25
            for i in 0..<60 {
                try s.upsert(namespace: i % 2 == 0 ? "even" : "odd", key: "k\(i)", vector: vectors[i], value: "{\"i\": \(i)}")
            }
            #expect(s.count == 60 && s.namespaces == ["even": 30, "odd": 30])
            let top = try s.query(vector: vectors[10], k: 3, namespace: "even")
            #expect(top.first?.key == "k10" && top.allSatisfy { $0.namespace == "even" } && top.first?.value == "{\"i\": 10}")
            // Replacing a key keeps one live entry.
            let (replaced, _) = try s.upsert(namespace: "even", key: "k10", vector: vectors[11], value: "{\"i\": 1011}")
            #expect(replaced && s.count == 60)
            #expect(try s.query(vector: vectors[11], k: 1, namespace: "even").first?.key == "k10")
            #expect(try s.delete(namespace: "odd", key: "k11"))
            #expect(try s.delete(namespace: "odd", key: "k11") == false)
            #expect(try !s.query(vector: vectors[11], k: 5, namespace: "odd").contains { $0.key == "k11" })
            #expect(throws: KVStore.Error.wrongDimension(got: 3, expected: 16)) { try s.upsert(namespace: "x", key: "y", vector: [1, 2, 3], value: "1") }
            #expect(throws: KVStore.Error.unknownNamespace("nowhere")) { try s.query(vector: vectors[0], k: 1, namespace: "nowhere") }
            #expect(throws: KVStore.Error.self) { try s.query(vector: [Float](repeating: 0, count: 16), k: 1) }
            #expect(throws: KVStore.Error.self) { try s.query(vector: vectors[0], k: 0) }
        }
        // Reopened (as after kill -9): snapshot plus the changes after it.
        let again = try KVStore(directory: dir, dimension: 16)
        #expect(again.count == 59 && again.replayedChanges > 0 && again.replayedChanges < 70)
        #expect(try again.query(vector: vectors[11], k: 1, namespace: "even").first?.value == "{\"i\": 1011}")
        #expect(try !again.query(vector: vectors[11], k: 5, namespace: "odd").contains { $0.key == "k11" })
        #expect(throws: KVStore.Error.wrongDimension(got: 8, expected: 16)) { try KVStore(directory: dir, dimension: 8) }
        // A corrupt snapshot is ignored: everything is replayed from SQLite.
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: dir + "/index.hnsw"))
        let replayed = try KVStore(directory: dir, dimension: 16)
        #expect(replayed.count == 59)
        #expect(try replayed.query(vector: vectors[20], k: 1).first?.key == "k20")
    }
}

@Suite("Memory on a forgetting curve")
struct MemoryStoreTests {
    @Test("retention is exp(-t/S); recall strengthens; a sweep forgets what faded")
    func retention() throws {
        let clock = OffsetClock()
        let store = try MemoryStore(path: temporaryDirectory() + "/m.sqlite",
                                    curve: ForgettingCurve(initialStrength: 100, growth: 2, forgetBelow: 0.1), clock: clock)
        try store.add(id: "a", kind: .episode, text: "question a", content: .object(["accepted": .bool(true)]))
        try store.add(id: "b", kind: .episode, text: "question b", content: .null)
        try store.add(id: "r", kind: .reflection, text: "question a", content: .object(["lesson": .string("check")]))
        #expect(abs(store.retention(try #require(try store.memory("a"))) - 1) < 1e-3)
        clock.advance(50)
        try store.recall(["a"])
        let a = try #require(try store.memory("a"))
        #expect(a.strength == 200 && a.recalls == 1 && abs(store.retention(a) - 1) < 1e-3)
        clock.advance(250)
        // a: exp(-250/200) = 0.29; b and r: exp(-300/100) = 0.05.
        #expect(abs(store.retention(try #require(try store.memory("b"))) - exp(-3)) < 1e-3)
        let forgotten = try store.sweep()
        #expect(Set(forgotten.map(\.id)) == ["b", "r"])
        #expect(try store.all().map(\.id) == ["a"])
        #expect(try store.count(.episode) == 1)
        #expect(try store.count(.reflection) == 0)
        // An explicit threshold forgets more.
        #expect(try store.sweep(below: 0.5).map(\.id) == ["a"])
    }

    @Test("memories stored together stay marked unindexed until indexed; reopening keeps the marks; forgetting clears them")
    func indexMarks() throws {
        let path = temporaryDirectory() + "/m.sqlite"
        var store = try MemoryStore(path: path, curve: ForgettingCurve(initialStrength: 100, growth: 2, forgetBelow: 0.1))
        try store.add([MemoryStore.New(id: "ep-1", kind: .episode, text: "q1", content: .object(["solution": .string("#### 1")])),
                       MemoryStore.New(id: "rf-1", kind: .reflection, text: "q1", content: .object(["lesson": .string("check")]))])
        try store.add(id: "ep-2", kind: .episode, text: "q2", content: .null)
        #expect(try store.unindexed().map(\.id) == ["ep-1", "rf-1", "ep-2"])
        try store.markIndexed(["ep-1", "rf-1"])
        store = try MemoryStore(path: path)
        #expect(try store.unindexed().map(\.id) == ["ep-2"], "the marks are durable")
        #expect(try store.memory("ep-1")?.content["solution"] == .string("#### 1"))
        try store.remove("ep-2")
        #expect(try store.unindexed().isEmpty && store.count() == 2)
        try store.add(id: "ep-3", kind: .episode, text: "q3", content: .null)
        _ = try store.sweep(below: 1.1)
        #expect(try store.unindexed().isEmpty && store.count() == 0)
    }
}

@Suite("memory store on a damaged file")
struct MemoryStoreDamageTests {
    @Test("a row whose strength is text is an error naming the column when read, never a crash; the store still opens")
    func damagedRow() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("memory-\(UUID().uuidString).sqlite").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try MemoryStore(path: path)
        try store.add([.init(id: "m1", kind: .episode, text: "q", content: .string("a"))])
        try Database(path: path).execute("UPDATE memories SET strength = 'strong' WHERE id = 'm1'")
        let reopened = try MemoryStore(path: path)
        #expect(try reopened.count() == 1)
        do {
            _ = try reopened.all()
            Issue.record("a memory with a text strength was read")
        } catch let e as DatabaseError {
            #expect(e.message.contains("column 4") && e.message.contains("damaged"), "\(e)")
        }
    }
}
