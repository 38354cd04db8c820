import ArgumentParser
import Foundation
import Index
import Inference
import Protocol
import RoleWorker
import ServiceKit

/// Serves the kvindex role: `KVIndexRequest`s (upsert, delete, query, stats;
/// docs/PROTOCOL.md, "Role payloads"). Texts are embedded with the sentence embedder.
final class KVIndexHandler: RequestHandler, @unchecked Sendable {
    let store: KVStore
    let embedder: SentenceEmbedder
    let lock = NSLock()
    static let maxTextBytes = 100_000

    init(store: KVStore, embedder: SentenceEmbedder) {
        self.store = store
        self.embedder = embedder
    }

    var modelName: String { "all-MiniLM-L6-v2" }

    func vector(_ r: KVIndexRequest) throws -> [Float] {
        if let t = r.text {
            guard !t.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw HandlerError("the text is empty", code: .badRequest)
            }
            guard t.utf8.count <= Self.maxTextBytes else {
                throw HandlerError("the text has \(t.utf8.count) bytes, over the limit of \(Self.maxTextBytes)", code: .badRequest)
            }
            return embedder.embed(t)
        }
        guard let values = r.vector else { throw HandlerError("give 'text' or 'vector'", code: .badRequest) }
        return values.map { Float($0) }
    }

    func handle(_ payload: RawJSON, emit: (String) -> Void) throws -> any Encodable {
        let r = try decodeOpRequest(payload, as: KVIndexRequest.self, ops: KVIndexOp.self)
        lock.lock()
        defer { lock.unlock() }
        do {
            switch r.op {
            case .upsert:
                guard let ns = r.namespace, let key = r.key else {
                    throw HandlerError("upsert needs 'namespace' and 'key'", code: .badRequest)
                }
                let value = try String(decoding: JSONCoding.encoder().encode(r.value ?? .null), as: UTF8.self)
                let (replaced, count) = try store.upsert(namespace: ns, key: key, vector: try vector(r), value: value)
                return KVUpserted(replaced: replaced, count: count)
            case .delete:
                guard let ns = r.namespace, let key = r.key else {
                    throw HandlerError("delete needs 'namespace' and 'key'", code: .badRequest)
                }
                return KVDeleted(deleted: try store.delete(namespace: ns, key: key))
            case .query:
                let hits = try store.query(vector: try vector(r), k: r.k ?? 5, namespace: r.namespace, ef: r.ef ?? 64)
                return try hits.map { h in
                    KVHit(namespace: h.namespace, key: h.key, score: Double(h.score),
                          value: try JSONDecoder().decode(JSONValue.self, from: Data(h.value.utf8)))
                }
            case .stats:
                return KVIndexStats(count: store.count, dimension: store.dimension, graphElements: store.graphSize,
                                                            namespaces: store.namespaces, loadSeconds: store.loadSeconds,
                                                            replayedChanges: store.replayedChanges)
            }
        } catch let e as KVStore.Error {
            if case .unknownNamespace = e { throw HandlerError(e.description, code: .notFound) }
            throw HandlerError(e.description, code: .badRequest)
        }
    }

    func snapshot() {
        lock.lock()
        defer { lock.unlock() }
        do { try store.snapshot() } catch { Log.error("snapshot failed: \(error)") }
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the kvindex role for the broker (the default command).",
        discussion: """
            Connects out to the broker's worker endpoint and answers upsert, delete, query and \
            stats requests. Entries live in KVINDEX_DIRECTORY (default var/kvindex): every change \
            is committed to SQLite before it is acknowledged, and the graph is snapshotted every \
            KVINDEX_SNAPSHOT_EVERY changes and on exit, so a restart loads quickly. Texts are \
            embedded with all-MiniLM-L6-v2 (EMBEDDER_MODEL, default models/all-minilm-l6-v2).
            """
    )

    @OptionGroup var service: ServiceOptions

    @Option(help: ArgumentHelp("Folder of the index (KVINDEX_DIRECTORY).", valueName: "path"))
    var directory: String?

    func run() throws {
        try service.run("kvindex") { c in
            let dir = directory.map(c.resolve) ?? c.path("KVINDEX_DIRECTORY", default: "var/kvindex")
            let embedder = try SentenceEmbedder(directory: c.path("EMBEDDER_MODEL", default: "models/all-minilm-l6-v2"),
                                                threads: try c.int("KVINDEX_THREADS", default: 1))
            let store = try KVStore(directory: dir, dimension: embedder.dimension,
                                    m: try c.int("KVINDEX_M", default: 16),
                                    efConstruction: try c.int("KVINDEX_EF_CONSTRUCTION", default: 200))
            store.snapshotEvery = try c.int("KVINDEX_SNAPSHOT_EVERY", default: 5000)
            Log.info("loaded \(store.count) entries from \(dir) in \(String(format: "%.3f", store.loadSeconds)) s (\(store.replayedChanges) changes replayed)")
            let handler = KVIndexHandler(store: store, embedder: embedder)
            try RoleWorker(role: .kvindex, bus: try BusSettings(c), handler: .requests(handler)).run()
            handler.snapshot()
        }
    }
}
