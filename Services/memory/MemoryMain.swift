// chorus-memory: the memory role's executable — its options, and the memory
// (Shared/Memory's MemoryService) behind a role worker, searching through the
// kvindex role over the bus.

import ArgumentParser
import Client
import Foundation
import Memory
import Protocol
import RoleWorker
import ServiceKit

/// The kvindex role through the broker, as the memory's index.
final class KVIndexOverBus: MemoryIndex, @unchecked Sendable {
    let bus: BusSettings
    private var client: BrokerClient?

    init(bus: BusSettings) { self.bus = bus }

    func call<Result: Decodable & Sendable>(_ request: KVIndexRequest, as: Result.Type, wait: Double = 30) throws -> Result {
        if client == nil {
            let c = try BrokerClient(settings: bus)
            c.start()
            client = c
        }
        do {
            // The client reconnects by itself: it is kept across failures.
            return try client!.blocking {
                try await $0.request(role: Role.kvindex.rawValue, payload: request, as: Result.self, queueTimeout: wait, timeout: 120)
            }
        } catch let ClientError.remote(e) {
            throw HandlerError("the kvindex said: \(e.message)", code: e.code == .notFound ? .notFound : .workerFailed)
        } catch let ClientError.unexpected(m) {
            throw HandlerError("the kvindex returned an unreadable \(request.op.rawValue) result: \(m)")
        } catch {
            throw HandlerError("cannot reach the kvindex: \(error)")
        }
    }

    func upsert(namespace: String, key: String, text: String, value: JSONValue, wait: Double) throws {
        _ = try call(.upsert(namespace: namespace, key: key, text: text, value: value), as: KVUpserted.self, wait: wait)
    }

    func delete(namespace: String, key: String) throws {
        _ = try call(.delete(namespace: namespace, key: key), as: KVDeleted.self)
    }

    func query(_ text: String, namespace: String, k: Int) throws -> [KVHit] {
        do {
            return try call(.query(text: text, namespace: namespace, k: k), as: [KVHit].self)
        } catch let e as HandlerError where e.code == .notFound {
            return []
        }
    }
}

/// Serves the memory role (`MemoryService`) behind a role worker: the
/// payload decoded once as a `MemoryRequest`. See docs/PROTOCOL.md, "Role payloads".
final class MemoryHandler: RequestHandler, @unchecked Sendable {
    let service: MemoryService
    init(service: MemoryService) { self.service = service }
    var modelName: String { "memory" }

    func handle(_ payload: RawJSON, emit: (String) -> Void) throws -> any Encodable {
        try service.handle(try decodeOpRequest(payload, as: MemoryRequest.self, ops: MemoryOp.self))
    }
}

@main
struct MemoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-memory",
        abstract: "The Chorus memory: episodes and reflections on a forgetting curve, as a role service.",
        discussion: """
            Connects out to the broker as the memory role. Memories live in SQLite \
            (MEMORY_DATABASE, default var/memory.sqlite); their texts are embedded and searched \
            through the kvindex role. Retention is R = exp(-t/S): t the time since the last \
            recall, S the strength (MEMORY_INITIAL_STRENGTH seconds, multiplied by \
            MEMORY_STRENGTH_GROWTH at each recall); every MEMORY_SWEEP_INTERVAL seconds, memories \
            with R below MEMORY_FORGET_BELOW are forgotten. MEMORY_EXAMPLES similar accepted \
            cases (similarity at least MEMORY_MIN_SIMILARITY) are given to the generator.
            """
    )

    @OptionGroup var service: ServiceOptions

    func run() throws {
        try service.run("memory") { c in
            let curve = ForgettingCurve(initialStrength: try c.double("MEMORY_INITIAL_STRENGTH", default: 86_400),
                                        growth: try c.double("MEMORY_STRENGTH_GROWTH", default: 2),
                                        forgetBelow: try c.double("MEMORY_FORGET_BELOW", default: 0.05))
            guard curve.initialStrength > 0, curve.growth >= 1, (0...1).contains(curve.forgetBelow) else {
                throw ValidationError("MEMORY_INITIAL_STRENGTH must be positive, MEMORY_STRENGTH_GROWTH at least 1, MEMORY_FORGET_BELOW in [0, 1]")
            }
            let testClock = c.string("MEMORY_TEST_CLOCK", default: "0") == "1" ? OffsetClock() : nil
            let store = try MemoryStore(path: c.path("MEMORY_DATABASE", default: "var/memory.sqlite"), curve: curve,
                                        clock: testClock ?? SystemClock())
            let bus = try BusSettings(c)
            let memory = MemoryService(store: store, index: KVIndexOverBus(bus: bus), testClock: testClock,
                                        examples: try c.int("MEMORY_EXAMPLES", default: 2),
                                        minimumSimilarity: try c.double("MEMORY_MIN_SIMILARITY", default: 0.5),
                                        sweepInterval: try c.double("MEMORY_SWEEP_INTERVAL", default: 600))
            let count = try store.count()
            Log.info("\(count) memories in \(c.path("MEMORY_DATABASE", default: "var/memory.sqlite"))")
            // The sweep runs on its own timer, as well as before any request that
            // finds it due; so does indexing what a previous run left unindexed.
            let sweeper = Thread {
                while !StopSignal.isRequested {
                    memory.indexPending()
                    Thread.sleep(forTimeInterval: 1)
                    memory.sweepIfDue()
                }
            }
            sweeper.start()
            try RoleWorker(role: .memory, bus: bus, handler: .requests(MemoryHandler(service: memory))).run()
        }
    }
}
