import Foundation
import Index
import Inference
import Memory
import Protocol
import Testing
import TestKit

/// The kvindex's work in this process: texts embedded with the real
/// all-MiniLM-L6-v2 into a real `KVStore` (HNSW and SQLite in a folder).
final class InProcessIndex: MemoryIndex {
    let store: KVStore
    let embedder: SentenceEmbedder
    init(directory: String, embedder: SentenceEmbedder) throws {
        store = try KVStore(directory: directory, dimension: embedder.dimension)
        self.embedder = embedder
    }

    func upsert(namespace: String, key: String, text: String, value: JSONValue, wait: Double) throws {
        _ = try store.upsert(namespace: namespace, key: key, vector: embedder.embed(text), value: JSONCoding.string(value))
    }

    func delete(namespace: String, key: String) throws { _ = try store.delete(namespace: namespace, key: key) }

    func query(_ text: String, namespace: String, k: Int) throws -> [KVHit] {
        do {
            return try store.query(vector: embedder.embed(text), k: k, namespace: namespace).map {
                KVHit(namespace: $0.namespace, key: $0.key, score: Double($0.score), value: try JSONDecoder().decode(JSONValue.self, from: Data($0.value.utf8)))
            }
        } catch KVStore.Error.unknownNamespace { return [] }
    }
}

/// The memory role's logic in this process, with no broker, worker or kvindex process.
@Suite("memory service, in process", .serialized)
struct MemoryServiceTests {
    static let embedder: SentenceEmbedder? = try? SentenceEmbedder(directory: Models.embedder, threads: 2)

    func service(clock: OffsetClock, sweepInterval: Double = 1e9) throws -> (MemoryService, InProcessIndex) {
        let embedder = try #require(Self.embedder, "the embedder \(Models.embedder) is not installed; run deploy/setup.sh")
        let dir = temporaryDirectory()
        let index = try InProcessIndex(directory: dir + "/index", embedder: embedder)
        let store = try MemoryStore(path: dir + "/memory.sqlite", curve: ForgettingCurve(initialStrength: 100, growth: 2, forgetBelow: 0.1),
                                    clock: clock)
        return (MemoryService(store: store, index: index, testClock: clock, examples: 1, minimumSimilarity: 0.3, sweepInterval: sweepInterval), index)
    }

    func request(_ json: String) throws -> MemoryRequest { try JSONDecoder().decode(MemoryRequest.self, from: Data(json.utf8)) }

    @Test("episodes are stored and indexed, a similar question retrieves the accepted one, recall strengthens it, forgetting reaches the index")
    func storeRetrieveForget() throws {
        let clock = OffsetClock()
        let (memory, index) = try service(clock: clock)
        let stored = try #require(try memory.handle(.store(Episode(jobID: "a", question: "A train travels 60 miles per hour for 3 hours. How far does it go?",
                                                                   solution: "60 * 3 = 180\n#### 180", answer: "180", accepted: true))) as? MemoryStored)
        #expect(stored.stored == ["ep-a"])
        // A rejected attempt leaves a reflection beside its episode.
        let rejected = try #require(try memory.handle(.store(Episode(jobID: "b", question: "A baker makes 12 loaves of bread each day. How many in a week?",
                                                                     solution: "12 + 7 = 19\n#### 19", answer: "19", accepted: false, score: 0.2))) as? MemoryStored)
        #expect(rejected.stored == ["ep-b", "rf-b"])
        #expect(index.store.namespaces == ["episodes": 2, "reflections": 1])

        _ = try memory.handle(request(#"{"op": "advance_clock", "seconds": 50}"#))
        let retrieval = try #require(try memory.handle(.retrieve(question: "A car drives 50 miles per hour for 2 hours. How far?", k: 1)) as? MemoryRetrieval)
        #expect(retrieval.recalled.first == "ep-a" && retrieval.examples.count == 1 && retrieval.examples[0].contains("60 * 3 = 180"), "\(retrieval)")
        let bread = try #require(try memory.handle(.retrieve(question: "A bakery bakes 20 loaves of bread a day. How many in a week?")) as? MemoryRetrieval)
        #expect(bread.examples.isEmpty && bread.reflections.count == 1, "a rejected episode is no example, its lesson is: \(bread)")

        _ = try memory.handle(request(#"{"op": "advance_clock", "seconds": 250}"#))
        // Every memory has faded somewhat by now: forgetting below 0.99 takes all three, from the index too.
        let forgot = try #require(try memory.handle(.forget(below: 0.99)) as? MemoryForgot)
        #expect(forgot.forgotten == 3)
        #expect(index.store.namespaces.values.reduce(0, +) == 0, "the index forgot them too")
        let stats = try #require(try memory.handle(.stats) as? MemoryStats)
        #expect(stats.episodes == 0 && stats.reflections == 0)
    }

    @Test("namespaces keep their memories apart; bad requests are bad_request errors naming what is wrong")
    func namespacesAndErrors() throws {
        let (memory, _) = try service(clock: OffsetClock())
        _ = try memory.handle(.store(Episode(jobID: "t1", question: "How many legs do 4 spiders have?", solution: "4 * 8 = 32\n#### 32",
                                             answer: "32", accepted: true, namespace: "team-a")))
        let own = try #require(try memory.handle(.search(text: "legs of spiders", namespace: "team-a")) as? [MemoryHit])
        let shared = try #require(try memory.handle(.search(text: "legs of spiders")) as? [MemoryHit])
        #expect(own.map(\.id) == ["ep-t1"] && shared.isEmpty)

        func badRequest(_ json: String) -> String? {
            do { _ = try memory.handle(try request(json)); return nil } catch let e as HandlerError where e.code == .badRequest {
                return e.description
            } catch { return "not a bad_request: \(error)" }
        }
        #expect(badRequest(#"{"op": "retrieve"}"#)?.contains("question") == true)
        #expect(badRequest(#"{"op": "search", "text": "   "}"#)?.contains("non-empty") == true)
        #expect(badRequest(#"{"op": "search", "text": "x", "namespace": "../etc"}"#)?.contains("namespace") == true)
        #expect(badRequest(#"{"op": "forget", "below": 7}"#)?.contains("between 0 and 1") == true)
        #expect(badRequest(#"{"op": "store_episode", "job_id": "x", "question": ""}"#)?.contains("question") == true)
        // Without a test clock, the clock does not move.
        let store = try MemoryStore(path: temporaryDirectory() + "/m.sqlite")
        let plain = MemoryService(store: store, index: try InProcessIndex(directory: temporaryDirectory(), embedder: try #require(Self.embedder)))
        #expect(throws: HandlerError.self) { try plain.handle(try request(#"{"op": "advance_clock", "seconds": 5}"#)) }
    }

    @Test("the sweep forgets on the memory's own clock, once its interval has passed")
    func sweep() throws {
        let clock = OffsetClock()
        let (memory, index) = try service(clock: clock, sweepInterval: 400)
        _ = try memory.handle(.store(Episode(jobID: "c", question: "A pool fills at 5 liters a minute. How long for 100 liters?",
                                             solution: "100 / 5 = 20\n#### 20", answer: "20", accepted: true)))
        clock.advance(300)
        memory.sweepIfDue()
        #expect(index.store.namespaces["episodes"] == 1, "not due yet: 300 s of a 400 s interval")
        clock.advance(200)
        memory.sweepIfDue()
        #expect(index.store.namespaces["episodes", default: 0] == 0, "R = exp(-500/100) is below 0.1: forgotten")
    }
}
