import Foundation
import Inference
import Protocol
import ServiceKit

/// A model worker's slots and continuous batching, on the inference thread.
///
/// The worker has `slots` sessions, each with its own KV cache. A request
/// goes to the free slot whose cache shares the longest prompt prefix with it
/// (the least recently used among equals), where its prompt is evaluated;
/// what it then generates is decoded together with every other slot's
/// request, one forward pass per step for all of them. New requests join
/// between steps; a finished one leaves at once and its slot keeps its cache
/// for the next request; when a busy slot holds more of a new request's
/// prompt than any free one, its keys and values are copied into the free slot.
final class SlotScheduler {
    let handler: ModelHandler
    let sessions: [Session]
    let batch: GenerationBatch
    /// What each slot serves now.
    private var serving: [Active?]
    /// When each slot was last given a request (a counter), for ties.
    private var lastUsed: [Int]
    private var clock = 0

    struct Active {
        let requestID: String
        let started: StartedRequest
        let since: Date
    }

    private let counters: WorkerCounters

    init(handler: ModelHandler, counters: WorkerCounters) {
        let s = handler.settings
        self.handler = handler
        self.counters = counters
        sessions = handler.model.makeSessions(s.slots, contextLength: s.context)
        batch = GenerationBatch(model: handler.model, capacity: s.slots, contextLength: s.context)
        serving = Array(repeating: nil, count: s.slots)
        lastUsed = Array(repeating: 0, count: s.slots)
    }

    /// Checks at start-up that every slot's cache can be filled: the caches
    /// are reserved lazily, so a configuration that does not fit would fail
    /// only later, under load.
    static func checkMemory(_ handler: ModelHandler) throws {
        let s = handler.settings
        let perSlot = handler.model.cacheBytes(contextLength: s.context)
        let needed = perSlot * s.slots
        guard let available = availableMemory() else { return }
        if needed > available {
            let gb = { (b: Int) in String(format: "%.2f GB", Double(b) / 1e9) }
            throw HandlerError("""
                the \(s.role) worker's \(s.slots) slots need \(gb(needed)) of KV cache (\(gb(perSlot)) each for \
                \(s.context) tokens of context) but only \(gb(available)) of memory is available; lower \
                \(s.role.settingsPrefix)_SLOTS or \(s.role.settingsPrefix)_CONTEXT
                """)
        }
    }

    /// MemAvailable from /proc/meminfo, in bytes (nil where there is none).
    static func availableMemory() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kb = Int(fields[1]) { return kb * 1024 }
        }
        return nil
    }

    var freeSlots: Int { serving.lazy.filter { $0 == nil }.count }

    /// Requests cancelled before the inference thread had them (still being
    /// prepared): answered as cancelled when they arrive.
    private var cancelledEarly: Set<String> = []

    /// Serves prepared requests from `queue` forever, sending what it produces through `send`.
    func run(queue: WorkQueue<Admission>, send: @escaping ([Data]) -> Void) -> Never {
        while true {
            // Admit what fits between steps; wait only when nothing is decoding.
            while freeSlots > 0, let request = batch.isEmpty ? queue.take() : queue.takeNow() {
                if cancelledEarly.remove(request.requestID) != nil {
                    send(Envelope.frames(.error, ErrorBody(requestID: request.requestID, code: .cancelled, message: "cancelled before it started")))
                    continue
                }
                admit(request, send: send)
            }
            for id in queue.takeCancellations() where !cancel(id, send: send) {
                if cancelledEarly.count >= 1024 { cancelledEarly.removeAll() }
                cancelledEarly.insert(id)
            }
            if batch.isEmpty { continue }
            let finished: [Generation]
            do { finished = try batch.step() } catch {
                // Every running request was checked when it started; a pass
                // that fails anyway fails them all, and their slots start afresh.
                Log.error("a decode step failed: \(error)")
                for slot in serving.indices {
                    guard let active = serving[slot] else { continue }
                    send(Envelope.frames(.error, HandlerError.body(error, requestID: active.requestID)))
                    sessions[slot].reset()
                    serving[slot] = nil
                }
                continue
            }
            for generation in finished {
                guard let slot = sessions.firstIndex(where: { $0 === generation.session }) else { continue }
                complete(slot, send: send)
            }
        }
    }

    /// Where a request with `prompt` goes: the free slot with the longest
    /// reusable prefix (the least recently used among equals), and the busy
    /// slot, if any, that holds more of the prompt, with how much.
    func placement(for prompt: [Int32]) -> (slot: Int, donor: (slot: Int, tokens: Int)?) {
        let shared = sessions.map { $0.reusablePrefix(prompt) }
        let slot = serving.indices.filter { serving[$0] == nil }.max { (shared[$0], -lastUsed[$0]) < (shared[$1], -lastUsed[$1]) }!
        let donor = serving.indices.filter { serving[$0] != nil && shared[$0] > shared[slot] }.max { shared[$0] < shared[$1] }
        return (slot, donor.map { ($0, shared[$0]) })
    }

    func admit(_ request: Admission, send: @escaping ([Data]) -> Void) {
        let id = request.requestID
        do {
            let prepared = try request.prepared.get()
            let (slot, donor) = placement(for: prepared.prompt)
            // A busy slot may hold more of this prompt (the chains of one job
            // arrive together): its keys and values are copied, not recomputed.
            if let donor { try sessions[slot].copyPrefix(of: sessions[donor.slot], count: donor.tokens) }
            clock += 1
            lastUsed[slot] = clock
            let started = try prepared.start(sessions[slot]) { text in
                send(Envelope.frames(.partial, PartialBody(requestID: id, text: text)))
            }
            serving[slot] = Active(requestID: id, started: started, since: Date())
            if let generation = started.generation, !generation.isFinished {
                try batch.add(generation)
            } else {
                complete(slot, send: send)
            }
        } catch {
            if let slot = serving.firstIndex(where: { $0?.requestID == id }) { serving[slot] = nil }
            Log.warning("request \(id) failed: \(error)")
            send(Envelope.frames(.error, HandlerError.body(error, requestID: id)))
        }
    }

    /// Stops a running request: its generation leaves the batch before its
    /// next token, and it is answered as cancelled. Its slot keeps the cache
    /// of what it evaluated.
    /// False when no slot serves it.
    @discardableResult
    func cancel(_ requestID: String, send: ([Data]) -> Void) -> Bool {
        guard let slot = serving.firstIndex(where: { $0?.requestID == requestID }), let active = serving[slot] else { return false }
        var tokens = 0
        if let generation = active.started.generation {
            generation.cancel()
            batch.remove(generation)
            tokens = generation.result.tokens.count
        }
        serving[slot] = nil
        send(Envelope.frames(.error, ErrorBody(requestID: requestID, code: .cancelled, message: "cancelled after \(tokens) tokens")))
        Log.info("stopped \(requestID) (slot \(slot)): cancelled after \(tokens) tokens")
        return true
    }

    func complete(_ slot: Int, send: ([Data]) -> Void) {
        guard let active = serving[slot] else { return }
        serving[slot] = nil
        do {
            let result = try active.started.finish()
            counters.add(result)
            send(Envelope.finalFrames(requestID: active.requestID, result: result))
            Log.info("served \(active.requestID) in \(String(format: "%.2f", Date().timeIntervalSince(active.since))) s (slot \(slot))")
        } catch {
            Log.warning("request \(active.requestID) failed: \(error)")
            send(Envelope.frames(.error, HandlerError.body(error, requestID: active.requestID)))
        }
    }
}

/// Work handed between a worker's threads (requests from the socket thread
/// to the preparing thread, prepared ones on to the inference thread), with
/// the ids of requests to stop.
final class WorkQueue<Item>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Item] = []
    private var cancelled: Set<String> = []
    private let id: (Item) -> String

    init(id: @escaping (Item) -> String) { self.id = id }

    /// Removes an item not yet taken; false when it is not waiting.
    func remove(_ requestID: String) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard let i = items.firstIndex(where: { id($0) == requestID }) else { return false }
        items.remove(at: i)
        return true
    }

    /// Asks the taker to stop a request it has taken (or is yet to get).
    func cancel(_ requestID: String) {
        condition.lock()
        cancelled.insert(requestID)
        condition.signal()
        condition.unlock()
    }

    /// The requests to stop, asked for since the last call.
    func takeCancellations() -> Set<String> {
        condition.lock()
        defer { condition.unlock() }
        let out = cancelled
        cancelled.removeAll()
        return out
    }

    func put(_ item: Item) {
        condition.lock()
        items.append(item)
        condition.signal()
        condition.unlock()
    }

    /// The next item, waiting for one.
    func take() -> Item? {
        condition.lock()
        while items.isEmpty { condition.wait() }
        let item = items.removeFirst()
        condition.unlock()
        return item
    }

    /// The next item if there is one.
    func takeNow() -> Item? {
        condition.lock()
        defer { condition.unlock() }
        return items.isEmpty ? nil : items.removeFirst()
    }

    var isEmpty: Bool {
        condition.lock()
        defer { condition.unlock() }
        return items.isEmpty
    }
}

/// Requests from the socket thread.
typealias JobQueue = WorkQueue<IncomingRequest>

/// A request the preparing thread has made ready for a slot: its prompt
/// tokenized (off the inference thread, so a long text never stalls the
/// slots that are decoding), or why it cannot run.
struct Admission {
    let requestID: String
    let prepared: Result<PreparedRequest, Error>
}

/// The preparing thread of a model worker: takes requests from `incoming`,
/// builds their prompts and hands them to `ready`, forever.
func prepareRequests(_ handler: ModelHandler, from incoming: JobQueue, to ready: WorkQueue<Admission>) -> Never {
    while true {
        guard let request = incoming.take() else { continue }
        ready.put(Admission(requestID: request.requestID, prepared: Result { try handler.prepare(request.payload) }))
    }
}
