import Bus
import Foundation
import Protocol
import TestKit
import Testing

/// A real model worker process, with the test playing its broker on a bare
/// ROUTER socket: what the worker does with requests a broker would not send.
@Suite("A role worker process against a scripted broker", .serialized)
struct RoleWorkerProcessTests {
    @Test("with its one slot taken, a second request is refused with an internal error; a repeat of the current one is ignored")
    func busyWorker() throws {
        let cluster = try Cluster(heartbeat: 5, liveness: 20, extra: ["GENERATOR_MAX_TOKENS": "24", "GENERATOR_SLOTS": "1"])
        let context = BusContext()
        let broker = try BusSocket(context, .router)
        try broker.bind(cluster.settings.backend)
        try cluster.startWorker("generator")
        let ready = try #require(try broker.receive(timeout: 60), "the generator did not register\n\(cluster.logs)")
        let identity = ready[0]
        let readyEnvelope = try Envelope(frames: ready.dropFirst())
        #expect(readyEnvelope.header.command == .ready && readyEnvelope.header.role == "generator")
        #expect(try readyEnvelope.decode(ReadyBody.self).capacity == 1)

        func request(_ id: String, _ question: String) throws {
            let payload = try JSONValue(encoding: StagePayload(stage: .generate, question: question, seed: 3))
            try broker.send(to: identity, Envelope.frames(.request, role: "generator", RequestBody(requestID: id, payload: payload)))
        }
        /// Replies from the worker until `last` says stop, skipping heartbeats.
        func replies(timeout: Double = 60, until last: (Envelope) -> Bool) throws -> [Envelope] {
            var out: [Envelope] = []
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline, let frames = try broker.receive(timeout: deadline.timeIntervalSinceNow) {
                let e = try Envelope(frames: frames.dropFirst())
                if e.header.command == .heartbeat { continue }
                out.append(e)
                if last(e) { return out }
            }
            return out
        }
        func isEnd(_ e: Envelope) -> Bool { e.header.command == .final || e.header.command == .error }

        try request("a", "What is 12 times 11?")
        try request("b", "What is 7 plus 5?")
        try request("a", "What is 12 times 11?")
        let first = try replies(until: isEnd)
        let refused = try #require(first.last)
        #expect(refused.header.command == .error, "the second request was refused at once, not queued")
        let error = try refused.decode(ErrorBody.self)
        #expect(error.code == .internalError && error.requestID == "b" && error.message.contains("is busy: its 1 slot(s) serve a"), "\(error)")

        let served = try replies(until: isEnd)
        let final = try #require(served.last)
        #expect(final.header.command == .final)
        #expect(try final.decode(FinalBody<JSONValue>.self).requestID == "a")
        #expect(served.dropLast().allSatisfy { $0.header.command == .partial }, "text streams before the result")
        // The repeated "a" produced nothing more: no second result within a second.
        #expect(try replies(timeout: 1) { _ in false }.isEmpty)

        // Once idle, the worker serves the request it refused.
        try request("b", "What is 7 plus 5?")
        let later = try #require(try replies(until: isEnd).last)
        #expect(later.header.command == .final)
        #expect(try later.decode(FinalBody<JSONValue>.self).requestID == "b")
    }
}
