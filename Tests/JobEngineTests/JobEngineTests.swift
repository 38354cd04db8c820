import Foundation
import JobEngine
import Journal
import Storage
import Pipeline
import Protocol
import TestKit
import Testing

/// The job engine on its own: a real journal (a SQLite file), no sockets and
/// no processes; the test plays the router, answering the requests the
/// engine asks for.
@Suite("Job engine")
struct JobEngineTests {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-engine-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    var journalPath: String { directory.appendingPathComponent("journal.sqlite").path }

    func engine(maxJobs: Int = 10) throws -> JobEngine {
        JobEngine(journal: try JobJournal(path: journalPath), maxJobs: maxJobs)
    }

    /// A model role's result with `text`.
    static func result(_ text: String, verdict: Verdict? = nil, score: Double? = nil) throws -> RawJSON {
        try RawJSON(encoding: FakeStage.result(text, verdict: verdict, score: score, seed: 1, reusedPromptTokens: 3))
    }

    struct Dispatch: Equatable {
        let tag: String
        let role: Role
        let payload: RawJSON
    }

    static func dispatches(_ effects: [EngineEffect]) -> [Dispatch] {
        effects.compactMap {
            if case let .dispatch(tag, role, payload) = $0 { return Dispatch(tag: tag, role: role, payload: payload) }
            return nil
        }
    }

    static func events(_ effects: [EngineEffect]) -> [JobEvent.Kind] {
        effects.compactMap {
            if case let .publish(e, _) = $0 { return e.kind }
            return nil
        }
    }

    /// Answers each dispatched request the way a simple worker would, until
    /// no request is left: generate and refine say `#### <answer>`, the
    /// critic accepts, memory retrieves nothing and stores what it gets.
    static func serve(_ engine: JobEngine, _ first: [EngineEffect], answer: String = "5") throws -> [EngineEffect] {
        var queue = dispatches(first), all = first
        while !queue.isEmpty {
            let d = queue.removeFirst()
            let result: RawJSON
            switch d.role {
            case .generator, .refiner: result = try Self.result("so it is\n#### \(answer)")
            case .verifier: result = try Self.result("looks right")
            case .critic: result = try Self.result("Yes", verdict: .accept, score: 0.9)
            default:
                let request = try d.payload.decode(MemoryRequest.self)
                result = request.op == .retrieve
                    ? try RawJSON(encoding: MemoryRetrieval(examples: [], reflections: [], recalled: []))
                    : try RawJSON(encoding: MemoryStored(stored: ["ep-x"]))
            }
            let effects = try engine.finished(d.tag, attempt: 1, result: result, worker: "\(d.role)-1", queued: 0.01, seconds: 0.5)
            all += effects
            queue += dispatches(effects)
        }
        return all
    }

    @Test("a job runs stage by stage to its answer; every stage is journaled once, with its result and extracted answer")
    func runsToTheAnswer() throws {
        let engine = try engine()
        let (id, first) = try engine.submit(JobSpec(question: "What is 2 + 3?", samples: 2, rounds: 1, seed: 7, noMemory: true),
                                            memoryAvailable: false)
        #expect(Self.events(first) == [.accepted])
        let firstStages = Self.dispatches(first)
        #expect(firstStages.map(\.tag) == ["\(id)/0/0", "\(id)/1/0"] && firstStages.allSatisfy { $0.role == .generator })
        let payload = try firstStages[0].payload.decode(StagePayload.self)
        #expect(payload.stage == .generate && payload.question == "What is 2 + 3?" && payload.seed == JobPlan(spec: JobSpec(question: "", seed: 7), seed: 7).stageSeed(chain: 0, step: 0))
        #expect(engine.isOpen("\(id)/0/0") && engine.unfinishedJobIDs == [id])

        #expect(Self.events(engine.started("\(id)/0/0", role: .generator, worker: "g1", queued: 0.1)) == [.stageStarted])
        #expect(Self.events(engine.partial("\(id)/0/0", role: .generator, text: "so")) == [.partial])
        let rest = try Self.serve(engine, first)
        #expect(Self.events(rest).filter { $0 == .stageDone }.count == 8 && Self.events(rest).last == .jobDone)
        #expect(engine.unfinishedJobIDs.isEmpty && !engine.isOpen("\(id)/0/0"))

        let job = try #require(try JobJournal(path: journalPath).job(id: id))
        #expect(job.state == .done && job.answer == "5" && job.chainAnswers == ["5", "5"] && job.firstAnswers == ["5", "5"])
        #expect(job.stages.count == 8)
        let generate = try #require(job.stages.first { $0.chain == 0 && $0.step == 0 })
        #expect(generate.extracted == "5" && generate.result?.reusedPromptTokens == 3 && generate.memory == nil && generate.worker == "generator-1")
        #expect(job.stages.first { $0.stage == .verify }?.extracted == nil)
        // An answer for a stage already recorded changes nothing.
        #expect(try engine.finished("\(id)/0/0", attempt: 2, result: try Self.result("#### 9"), worker: "g2", queued: 0, seconds: 1).isEmpty)
        #expect(try JobJournal(path: journalPath).job(id: id)?.stages.count == 8)
        #expect(try engine.finished("nobody/0/0", attempt: 1, result: RawJSON(checked: Data("null".utf8)), worker: "g", queued: 0, seconds: 0).isEmpty)
    }

    @Test("memory stages get typed requests and keep typed outcomes; a failed memory stage is recorded and the job goes on")
    func memoryStages() throws {
        let engine = try engine()
        let (id, first) = try engine.submit(JobSpec(question: "What is 2 + 3?", samples: 1, rounds: 1, seed: 7), memoryAvailable: true)
        let retrieve = try #require(Self.dispatches(first).first)
        #expect(retrieve.role == .memory && retrieve.tag == "\(id)/-1/0")
        #expect(try retrieve.payload.decode(MemoryRequest.self) == .retrieve(question: "What is 2 + 3?"))
        let afterFailure = try engine.failed(retrieve.tag, error: ErrorBody(code: .noWorker, message: "no memory worker"), worker: nil,
                                             queued: 2, seconds: 0)
        #expect(Self.dispatches(afterFailure).map(\.role) == [.generator], "the job goes on without memory")
        let all = try Self.serve(engine, afterFailure)
        let remember = try #require(all.compactMap { e -> RawJSON? in
            if case let .dispatch(_, role, payload) = e, role == .memory { return payload }
            return nil
        }.first)
        let episode = try #require(try remember.decode(MemoryRequest.self).episode)
        #expect(episode == Episode(jobID: id, question: "What is 2 + 3?", solution: "so it is\n#### 5", answer: "5", firstAnswer: "5",
                                   accepted: true, score: 0.9))
        let job = try #require(try engine.job(id))
        #expect(job.state == .done && job.answer == "5")
        let retrieved = try #require(job.stages.first { $0.stage == .retrieve })
        #expect(retrieved.result == nil && retrieved.memory == MemoryOutcome(error: "no memory worker"))
        #expect(retrieved.text == "memory unavailable: no memory worker" && retrieved.worker == "none")
        #expect(job.stages.first { $0.stage == .remember }?.memory == MemoryOutcome(stored: ["ep-x"]))
    }

    @Test("a model stage that fails, or returns what does not read as its result, fails the job and withdraws its other requests")
    func failures() throws {
        let engine = try engine()
        let (id, first) = try engine.submit(JobSpec(question: "q", samples: 3, rounds: 1, seed: 1, noMemory: true), memoryAvailable: false)
        let effects = try engine.failed("\(id)/1/0", error: ErrorBody(code: .workerFailed, message: "the generator crashed"),
                                        worker: "g1", queued: 0, seconds: 1)
        let withdrawn = effects.compactMap { e -> String? in
            if case let .withdraw(tag) = e { return tag }
            return nil
        }
        #expect(Set(withdrawn) == ["\(id)/0/0", "\(id)/2/0"] && Self.events(effects) == [.jobFailed])
        #expect(!engine.isOpen("\(id)/0/0") && engine.unfinishedJobIDs.isEmpty)
        #expect(try JobJournal(path: journalPath).job(id: id)?.state == .failed)
        #expect(try engine.job(id)?.error == "the generator crashed")
        // A late answer to a withdrawn stage is ignored.
        #expect(try engine.finished(Self.dispatches(first)[0].tag, attempt: 1, result: try Self.result("#### 1"), worker: "g2",
                                    queued: 0, seconds: 1).isEmpty)

        let (other, _) = try engine.submit(JobSpec(question: "q", samples: 1, rounds: 1, seed: 1, noMemory: true), memoryAvailable: false)
        let bad = try engine.finished("\(other)/0/0", attempt: 1, result: try RawJSON(encoding: JSONValue.object(["text": .number(3)])), worker: "g1", queued: 0, seconds: 1)
        #expect(Self.events(bad) == [.jobFailed])
        let message = try #require(try engine.job(other)?.error)
        #expect(message.contains("the generator worker g1 returned an unreadable generate result"), "\(message)")
    }

    @Test("cancel journals the job as cancelled with the stages it had, withdraws its open requests, and is a no-op on a finished or unknown job")
    func cancel() throws {
        let engine = try engine()
        let (id, first) = try engine.submit(JobSpec(question: "q", samples: 2, rounds: 1, seed: 1, noMemory: true), memoryAvailable: false)
        let tags = Self.dispatches(first).map(\.tag)
        // One chain's generator answers; the other is still running when the job is cancelled.
        let after = try engine.finished(tags[0], attempt: 1, result: try Self.result("#### 4"), worker: "g1", queued: 0, seconds: 1)
        let (record, effects) = try engine.cancel(id)
        let withdrawn = effects.compactMap { e -> String? in
            if case let .withdraw(tag) = e { return tag }
            return nil
        }
        let open = [tags[1]] + Self.dispatches(after).map(\.tag)
        #expect(Set(withdrawn) == Set(open) && Self.events(effects) == [.jobCancelled])
        #expect(record?.state == .cancelled && record?.stages.count == 1)
        let journaled = try #require(try JobJournal(path: journalPath).job(id: id))
        #expect(journaled.state == .cancelled && journaled.stages.count == 1 && journaled.finishedAt != nil)
        #expect(engine.unfinishedJobIDs.isEmpty && !engine.isOpen(tags[1]))
        // What a worker still sends for it changes nothing.
        #expect(try engine.finished(tags[1], attempt: 1, result: try Self.result("#### 4"), worker: "g2", queued: 0, seconds: 1).isEmpty)
        // Again: the job as it is, nothing to do; an unknown job: none.
        let again = try engine.cancel(id)
        #expect(again.record?.state == .cancelled && again.effects.isEmpty)
        #expect(try engine.cancel("nope").record == nil)
        // A cancelled job is finished: it does not resume after a restart.
        #expect(try JobEngine(journal: JobJournal(path: journalPath), maxJobs: 10).resume().isEmpty)
    }

    @Test("a SUBMIT beyond the job limit is refused as busy; without a memory worker a job runs without memory, journaled so")
    func limitsAndMemoryChoice() throws {
        let engine = try engine(maxJobs: 1)
        let (id, _) = try engine.submit(JobSpec(question: "q", seed: 1), memoryAvailable: false)
        #expect(try engine.job(id)?.spec.noMemory == true)
        let refused = #expect(throws: SubmitRefused.self) { try engine.submit(JobSpec(question: "q2"), memoryAvailable: false) }
        #expect(refused?.error.code == .busy && refused?.error.message.contains("CHORUS_MAX_QUEUED_JOBS") == true)
    }

    @Test("a SUBMIT repeated with its idempotency key gets the first job, even after a restart and beyond the job limit; a new key makes a new job")
    func idempotentSubmit() throws {
        let engine = try engine(maxJobs: 1)
        let spec = JobSpec(question: "q", seed: 2, noMemory: true)
        let (first, effects) = try engine.submit(spec, memoryAvailable: false, idempotencyKey: "client-7")
        #expect(!Self.dispatches(effects).isEmpty)
        let (again, none) = try engine.submit(spec, memoryAvailable: false, idempotencyKey: "client-7")
        #expect(again == first && none.isEmpty, "no second job, nothing dispatched again")
        #expect(throws: SubmitRefused.self) { try engine.submit(spec, memoryAvailable: false, idempotencyKey: "client-8") }
        let restarted = try self.engine(maxJobs: 10)
        _ = try restarted.resume()
        #expect(try restarted.submit(spec, memoryAvailable: false, idempotencyKey: "client-7").jobID == first)
        let (other, _) = try restarted.submit(spec, memoryAvailable: false, idempotencyKey: "client-9")
        #expect(other != first)
        #expect(try JobJournal(path: journalPath).counts()["running"] == 2, "two jobs in all")
        // Pruned with its job, the key is free again.
        let journal = try JobJournal(path: journalPath)
        try journal.finishJob(id: first, state: .failed, answer: nil, chainAnswers: [], firstAnswers: [], error: "x", finishedAt: 1)
        try journal.prune(finishedBefore: 2)
        let local = JobOwner(client: JobOwner.localClient)
        #expect(try journal.submission(forKey: "client-7", owner: local, spec: spec) == nil)
        #expect(try journal.submission(forKey: "client-9", owner: local, spec: spec)?.jobID == other)
    }

    @Test("jobs belong to their owner; idempotency keys are each owner's own and bound to the job they were sent with")
    func owners() throws {
        let engine = try engine()
        let alice = JobOwner(client: "client:gateway", tenant: "alice"), bob = JobOwner(client: "client:gateway", tenant: "bob")
        let spec = JobSpec(question: "q", seed: 2, noMemory: true)
        let (a, _) = try engine.submit(spec, memoryAvailable: false, owner: alice, idempotencyKey: "k1")
        // Bob's same key is another key: his own job.
        let (b, _) = try engine.submit(spec, memoryAvailable: false, owner: bob, idempotencyKey: "k1")
        #expect(a != b)
        #expect(try engine.job(a)?.owner == alice && engine.job(b)?.owner == bob)
        // Alice's key again with another question is refused, naming the job it made.
        do {
            _ = try engine.submit(JobSpec(question: "another", seed: 2, noMemory: true), memoryAvailable: false, owner: alice, idempotencyKey: "k1")
            Issue.record("a key reused with another job was accepted")
        } catch let refused as SubmitRefused {
            #expect(refused.error.code == .conflict && refused.error.message.contains(a), "\(refused)")
        }
        #expect(try engine.submit(spec, memoryAvailable: false, owner: alice, idempotencyKey: "k1").jobID == a)
        // Who sees what: one's own tenant, or every tenant of one's own client; never another client's.
        #expect(TenantScope.only("alice").sees(alice, client: "client:gateway"))
        #expect(!TenantScope.only("bob").sees(alice, client: "client:gateway"))
        #expect(TenantScope.everyTenant.sees(alice, client: "client:gateway"))
        #expect(!TenantScope.everyTenant.sees(alice, client: "client:cli"))
        #expect(engine.unfinishedJobIDs(seenBy: "client:gateway", in: .only("bob")) == [b])
        #expect(engine.unfinishedJobIDs(seenBy: "client:gateway", in: .everyTenant).sorted() == [a, b].sorted())
        #expect(engine.unfinishedJobIDs(seenBy: "local", in: .everyTenant).isEmpty)
        // The owner survives a restart.
        let restarted = try self.engine()
        _ = try restarted.resume()
        #expect(try restarted.job(a)?.owner == alice)
    }

    @Test("a pipeline job that names no refinement policy gets the engine's default, journaled; one that names it keeps it; trees get none")
    func defaultRefinePolicy() throws {
        let engine = JobEngine(journal: try JobJournal(path: journalPath), maxJobs: 10, defaultRefine: .checked)
        let (plain, _) = try engine.submit(JobSpec(question: "q", samples: 1, rounds: 1, seed: 4, noMemory: true), memoryAvailable: false)
        let (named, _) = try engine.submit(JobSpec(question: "q", samples: 1, rounds: 1, seed: 4, noMemory: true, refine: .always), memoryAvailable: false)
        let (tree, _) = try engine.submit(JobSpec(question: "q", seed: 4, answer: "1", kind: .tree, branching: 1), memoryAvailable: false)
        #expect(try engine.job(plain)?.spec.refine == .checked && engine.job(named)?.spec.refine == .always && engine.job(tree)?.spec.refine == nil)
        #expect(try JobJournal(path: journalPath).job(id: plain)?.spec.refine == .checked, "the policy is journaled with the job")
        #expect(try self.engine().submit(JobSpec(question: "q", seed: 4, noMemory: true), memoryAvailable: false).jobID != "")
        let (byDefault, _) = try self.engine().submit(JobSpec(question: "q", seed: 4, noMemory: true), memoryAvailable: false)
        #expect(try JobJournal(path: journalPath).job(id: byDefault)?.spec.refine == .always, "MALT's policy when nothing is configured")
    }

    @Test("a journal that cannot write: a stage it cannot store fails its job (internal, with an event) instead of leaving it running; a cancel it cannot record is refused and the job runs on")
    func journalWriteFailures() throws {
        let engine = JobEngine(journal: try JobJournal(path: journalPath, busyTimeoutMilliseconds: 50), maxJobs: 10)
        let spec = JobSpec(question: "q", samples: 1, rounds: 1, seed: 4, noMemory: true)
        let (a, _) = try engine.submit(spec, memoryAvailable: false)
        let (b, _) = try engine.submit(spec, memoryAvailable: false)
        // Another connection holds the database's write lock.
        let holder = try Database(path: journalPath)
        try holder.execute("BEGIN IMMEDIATE")
        let effects = try engine.finished("\(a)/0/0", attempt: 1, result: try Self.result("#### 5"), worker: "g", queued: 0, seconds: 1)
        #expect(Self.events(effects) == [.jobFailed], "\(Self.events(effects))")
        let failed = try #require(try engine.job(a))
        #expect(failed.state == .failed && failed.error?.hasPrefix("internal: the journal could not record") == true, "\(failed.error ?? "")")
        #expect(!engine.isOpen("\(a)/0/0") && !engine.unfinishedJobIDs.contains(a))
        #expect(throws: DatabaseError.self) { try engine.cancel(b) }
        #expect(try engine.job(b)?.state == .running && engine.isOpen("\(b)/0/0"), "a cancel that was not journaled leaves the job running")
        #expect(engine.recordUnrecorded() == 1, "the failure waits to be written")
        try holder.execute("ROLLBACK")
        #expect(engine.recordUnrecorded() == 0)
        #expect(try JobJournal(path: journalPath).job(id: a)?.state == .failed, "written once the journal could take it")
        #expect(try engine.cancel(b).record?.state == .cancelled)
        #expect(try JobJournal(path: journalPath).job(id: b)?.state == .cancelled)
    }

    @Test("a new engine on the same journal resumes each unfinished job where it stopped, asking only for unfinished stages")
    func resumes() throws {
        let (id, first): (String, [EngineEffect])
        do {
            let engine = try engine()
            (id, first) = try engine.submit(JobSpec(question: "q", samples: 2, rounds: 1, seed: 3, noMemory: true), memoryAvailable: false)
            // Chain 0 is generated and verified; chain 1 not yet.
            let verify = try engine.finished("\(id)/0/0", attempt: 1, result: try Self.result("#### 5"), worker: "g", queued: 0, seconds: 1)
            #expect(Self.dispatches(verify).map(\.tag) == ["\(id)/0/1"])
            _ = try engine.finished("\(id)/0/1", attempt: 1, result: try Self.result("fine"), worker: "v", queued: 0, seconds: 1)
        }
        #expect(Self.dispatches(first).count == 2)
        let restarted = try engine()
        let resumed = try restarted.resume()
        #expect(Set(Self.dispatches(resumed).map(\.tag)) == ["\(id)/0/2", "\(id)/1/0"])
        let refine = try #require(Self.dispatches(resumed).first { $0.tag == "\(id)/0/2" })
        let payload = try refine.payload.decode(StagePayload.self)
        #expect(payload.answer == "#### 5" && payload.critique == "fine")
        _ = try Self.serve(restarted, resumed)
        let job = try #require(try restarted.job(id))
        #expect(job.state == .done && job.stages.count == 8)
        #expect(Set(job.stages.map { "\($0.chain)/\($0.step)" }).count == 8, "no stage recorded twice")
    }

    @Test("memory stages journaled before they had their own outcome still read, as outcomes")
    func legacyMemoryRecords() throws {
        let old = #"""
        {"chain":-1,"step":0,"round":0,"stage":"retrieve","role":"memory","attempt":1,"worker":"memory-1",
         "payload":{"stage":"retrieve","question":"q","seed":0,"memory":{"op":"retrieve","question":"q"}},
         "result":{"text":"1 example(s) and 0 reflection(s) retrieved","prompt":"","model":"memory","prompt_tokens":0,
                   "completion_tokens":0,"prompt_seconds":0,"generation_seconds":0,"stop_reason":"done",
                   "sampling":{"temperature":0,"top_k":0,"top_p":1,"min_p":0,"repetition_penalty":1,"max_tokens":0,"seed":0},
                   "data":{"examples":["Problem: q\nSolution:\n#### 1"],"reflections":[],"recalled":["ep-1"]}},
         "queued_seconds":0,"seconds":0.1,"finished_at":1}
        """#
        let record = try JSONDecoder().decode(StageRecord.self, from: Data(old.utf8))
        #expect(record.result == nil && record.payload.memory == .retrieve(question: "q"))
        #expect(record.memory?.retrieved == MemoryRetrieval(examples: ["Problem: q\nSolution:\n#### 1"], reflections: [], recalled: ["ep-1"]))
        let plan = JobPlan(spec: JobSpec(question: "q", samples: 1, rounds: 1), seed: 1)
        guard case let .run(next) = plan.decide(finished: [JobPlan.retrieveKey: record]) else { Issue.record("no stage"); return }
        #expect(next.first?.payload.examples == ["Problem: q\nSolution:\n#### 1"])
    }
}
