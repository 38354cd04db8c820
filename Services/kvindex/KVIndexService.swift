import ArgumentParser
import Foundation
import Index
import Inference
import Protocol
import RoleWorker
import ServiceKit

/// Serves the kvindex role: payloads `{"op": "upsert" | "delete" | "query" | "stats", ...}`
/// (docs/PROTOCOL.md, "Role payloads"). Texts are embedded with the sentence embedder.
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

    func string(_ payload: JSONValue, _ key: String) -> String? { payload[key]?.stringValue }

    func vector(_ payload: JSONValue) throws -> [Float] {
        if let text = payload["text"] {
            guard let t = text.stringValue else { throw HandlerError("'text' must be a string") }
            guard !t.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw HandlerError("the text is empty") }
            guard t.utf8.count <= Self.maxTextBytes else {
                throw HandlerError("the text has \(t.utf8.count) bytes, over the limit of \(Self.maxTextBytes)")
            }
            return embedder.embed(t)
        }
        guard case let .array(values)? = payload["vector"] else { throw HandlerError("give 'text' or 'vector'") }
        return try values.map { v -> Float in
            guard let d = v.doubleValue else { throw HandlerError("'vector' must be an array of numbers") }
            return Float(d)
        }
    }

    func handle(_ payload: JSONValue, emit: (String) -> Void) throws -> JSONValue {
        lock.lock()
        defer { lock.unlock() }
        do {
            switch string(payload, "op") {
            case "upsert":
                guard let ns = string(payload, "namespace"), let key = string(payload, "key") else {
                    throw HandlerError("upsert needs 'namespace' and 'key'")
                }
                let value = try String(decoding: JSONEncoder().encode(payload["value"] ?? .null), as: UTF8.self)
                let (replaced, count) = try store.upsert(namespace: ns, key: key, vector: try vector(payload), value: value)
                return .object(["replaced": .bool(replaced), "count": .number(Double(count))])
            case "delete":
                guard let ns = string(payload, "namespace"), let key = string(payload, "key") else {
                    throw HandlerError("delete needs 'namespace' and 'key'")
                }
                return .object(["deleted": .bool(try store.delete(namespace: ns, key: key))])
            case "query":
                let k = Int(payload["k"]?.doubleValue ?? 5)
                let ef = Int(payload["ef"]?.doubleValue ?? 64)
                let hits = try store.query(vector: try vector(payload), k: k, namespace: string(payload, "namespace"), ef: ef)
                return .array(try hits.map { h in
                    .object(["namespace": .string(h.namespace), "key": .string(h.key), "score": .number(Double(h.score)),
                             "value": try JSONDecoder().decode(JSONValue.self, from: Data(h.value.utf8))])
                })
            case "stats":
                return .object([
                    "count": .number(Double(store.count)), "dimension": .number(Double(store.dimension)),
                    "graph_elements": .number(Double(store.graphSize)),
                    "namespaces": .object(store.namespaces.mapValues { .number(Double($0)) }),
                    "load_seconds": .number(store.loadSeconds), "replayed_changes": .number(Double(store.replayedChanges)),
                ])
            case let op?:
                throw HandlerError("unknown op '\(op)' (upsert, delete, query, stats)")
            case nil:
                throw HandlerError("the payload needs an 'op'")
            }
        } catch let e as KVStore.Error {
            throw HandlerError(e.description)
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
        do {
            let c = try service.start("kvindex")
            let dir = directory.map(c.resolve) ?? c.path("KVINDEX_DIRECTORY", default: "var/kvindex")
            let embedder = try SentenceEmbedder(directory: c.path("EMBEDDER_MODEL", default: "models/all-minilm-l6-v2"),
                                                threads: try c.int("KVINDEX_THREADS", default: 1))
            let store = try KVStore(directory: dir, dimension: embedder.dimension,
                                    m: try c.int("KVINDEX_M", default: 16),
                                    efConstruction: try c.int("KVINDEX_EF_CONSTRUCTION", default: 200))
            store.snapshotEvery = try c.int("KVINDEX_SNAPSHOT_EVERY", default: 5000)
            Log.info("loaded \(store.count) entries from \(dir) in \(String(format: "%.3f", store.loadSeconds)) s (\(store.replayedChanges) changes replayed)")
            let handler = KVIndexHandler(store: store, embedder: embedder)
            try RoleWorker(role: "kvindex", bus: try BusSettings(c), handler: .requests(handler)).run()
            handler.snapshot()
        } catch {
            Log.error("\(error)")
            throw ExitCode(1)
        }
    }
}
