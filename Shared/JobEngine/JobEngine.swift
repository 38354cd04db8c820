// JobEngine: the broker's job logic — accepts jobs, journals each stage before
// acting on it, asks the planner what runs next, and says what to do as
// effects (dispatch a request, publish an event, reply). It must not know
// sockets, workers or how requests are routed.

import Foundation
import Journal
import Pipeline
import Protocol
import ServiceKit

/// What the engine asks of the broker after each call: requests to queue or
/// withdraw, and events to publish. The engine itself touches no socket.
public enum EngineEffect: Sendable {
    /// Queue a request for `role` under `tag` (a stage's tag, `<job>/<chain>/<step>`).
    case dispatch(tag: String, role: Role, payload: RawJSON)
    /// Withdraw the request queued under `tag` (its job has failed or was
    /// cancelled), stopping it if a worker is running it.
    case withdraw(tag: String)
    /// Publish an event of a job owned by `owner` (its subscribers are that owner's).
    case publish(JobEvent, owner: JobOwner?)
}

/// A SUBMIT the engine refuses.
public struct SubmitRefused: Error, CustomStringConvertible {
    public let error: ErrorBody
    public var description: String { error.message }
}

/// The job engine: accepts jobs, journals them, asks the plan which stages
/// run next, and turns each finished stage into a record (the answer it
/// extracted, what a memory stage came to). It knows requests only by their
/// tags and roles, and nothing of workers or sockets: the broker queues the
/// requests it asks for and tells it how each one ended.
public final class JobEngine {
    public let journal: JobJournal
    /// Unfinished jobs held at once; a SUBMIT beyond them is refused (`busy`).
    public let maxJobs: Int
    private let clock: () -> Double

    final class ActiveJob {
        var record: JobRecord
        let plan: any StagePlanner
        var finished: [StageKey: StageRecord] = [:]
        /// Stages asked for and not finished, with what the plan asked.
        var open: [StageKey: JobPlan.Pending] = [:]
        init(record: JobRecord) {
            self.record = record
            plan = planner(spec: record.spec, seed: record.seed, jobID: record.id)
        }
    }

    private var jobs: [String: ActiveJob] = [:]
    /// Jobs that ended while the journal could not record it: answered from
    /// here, and written again by `recordUnrecorded` until the journal takes them.
    private var unrecorded: [String: JobRecord] = [:]
    /// The stage each open tag stands for.
    private var tags: [String: (jobID: String, key: StageKey)] = [:]

    /// The refinement policy of a pipeline job that names none (CHORUS_REFINE).
    let defaultRefine: RefinePolicy

    public init(journal: JobJournal, maxJobs: Int, defaultRefine: RefinePolicy = .always,
                clock: @escaping () -> Double = { Date().timeIntervalSince1970 }) {
        self.defaultRefine = defaultRefine
        self.journal = journal
        self.maxJobs = maxJobs
        self.clock = clock
    }

    /// Writes again the ends of jobs the journal could not take (called from
    /// the broker's timer, off the path of messages); returns how many remain.
    @discardableResult
    public func recordUnrecorded() -> Int {
        for (id, r) in unrecorded {
            do {
                try journal.finishJob(id: id, state: r.state, answer: r.answer, chainAnswers: r.chainAnswers, firstAnswers: r.firstAnswers,
                                      error: r.error, finishedAt: r.finishedAt ?? clock())
                unrecorded[id] = nil
                Log.info("recorded the end of job \(id) in the journal")
            } catch {
                break
            }
        }
        return unrecorded.count
    }

    /// Ids of the jobs accepted and not finished.
    public var unfinishedJobIDs: [String] { jobs.keys.sorted() }

    /// The tag of a job's stage: the id its requests carry (with the attempt appended).
    public static func tag(jobID: String, key: StageKey) -> String { "\(jobID)/\(key.chain)/\(key.step)" }

    /// Takes up the journal's unfinished jobs where they stopped.
    public func resume() throws -> [EngineEffect] {
        var effects: [EngineEffect] = []
        for record in try journal.unfinishedJobs() {
            let job = ActiveJob(record: record)
            for s in record.stages { job.finished[StageKey(chain: s.chain, step: s.step)] = s }
            jobs[record.id] = job
            Log.info("resuming job \(record.id) with \(record.stages.count) finished stage(s)")
            effects += try advance(job)
        }
        return effects
    }

    /// A job as it stands, running or finished; nil if there is none with this id.
    public func job(_ id: String) throws -> JobRecord? {
        if let active = jobs[id] { return active.record }
        if let ended = unrecorded[id] { return ended }
        return try journal.job(id: id)
    }

    /// Accepts a job for `owner`: journals it (before it is acknowledged) and
    /// asks for its first stages. Without a memory worker, a job that would
    /// use memory runs without it (decided once, and journaled); a pipeline
    /// job that names no refinement policy gets the engine's default. Throws
    /// `SubmitRefused` when the engine holds `maxJobs` unfinished jobs. A
    /// SUBMIT repeated by the same owner with an idempotency key already
    /// journaled gets that key's job and changes nothing; the same key with
    /// another job is refused (`conflict`).
    public func submit(_ request: JobSpec, memoryAvailable: Bool, owner: JobOwner = JobOwner(client: JobOwner.localClient),
                       idempotencyKey: String? = nil) throws -> (jobID: String, effects: [EngineEffect]) {
        if let key = idempotencyKey, let existing = try journal.submission(forKey: key, owner: owner, spec: request) {
            guard existing.sameJob != false else {
                throw SubmitRefused(error: ErrorBody(code: .conflict, message:
                    "the idempotency key '\(key)' was used before for another job (\(existing.jobID)); send a new key for a new job"))
            }
            Log.info("SUBMIT repeated with key \(key): job \(existing.jobID)")
            return (existing.jobID, [])
        }
        guard jobs.count < maxJobs else {
            throw SubmitRefused(error: ErrorBody(code: .busy, message:
                "the broker already holds \(jobs.count) unfinished jobs, its limit (CHORUS_MAX_QUEUED_JOBS); submit again once some finish"))
        }
        var spec = request
        // A tree makes training data: memory of other runs would leak into it.
        if spec.isTree || (!(spec.noMemory ?? false) && !memoryAvailable) { spec.noMemory = true }
        // The policy a job ran with is journaled with it, named.
        if !spec.isTree && spec.refine == nil { spec.refine = defaultRefine }
        let id = Self.newJobID()
        let seed = spec.seed ?? UInt64.random(in: 0...UInt64(Int64.max))
        let created = clock()
        try journal.insertJob(id: id, spec: spec, seed: seed, createdAt: created, owner: owner, idempotencyKey: idempotencyKey, request: request)
        let record = JobRecord(id: id, spec: spec, seed: seed, state: .running, answer: nil, chainAnswers: [], firstAnswers: [],
                               error: nil, createdAt: created, finishedAt: nil, stages: [], owner: owner)
        let job = ActiveJob(record: record)
        jobs[id] = job
        Log.info(spec.isTree ? "job \(id) accepted for \(owner): a tree of branching \(spec.treeBranching), seed \(seed)"
                 : "job \(id) accepted for \(owner): samples \(spec.samples), rounds \(spec.rounds), seed \(seed)")
        return (id, [.publish(JobEvent(jobID: id, kind: .accepted), owner: owner)] + (try advance(job)))
    }

    /// Ids of the unfinished jobs `client` sees in `scope`.
    public func unfinishedJobIDs(seenBy client: String, in scope: TenantScope) -> [String] {
        jobs.filter { scope.sees($0.value.record.owner, client: client) }.keys.sorted()
    }

    static func newJobID() -> String {
        let t = UInt64(Date().timeIntervalSince1970 * 1000)
        return "j" + String(t, radix: 36) + String(UInt32.random(in: 0...UInt32.max), radix: 36)
    }

    /// Whether `tag` is a stage still waiting for its result.
    public func isOpen(_ tag: String) -> Bool { tags[tag] != nil }

    public func started(_ tag: String, role: Role, worker: String, queued: Double) -> [EngineEffect] {
        guard let (jobID, key) = tags[tag] else { return [] }
        return [.publish(JobEvent(jobID: jobID, kind: .stageStarted, chain: key.chain, step: key.step, role: role,
                                  worker: worker, queuedSeconds: queued), owner: jobs[jobID]?.record.owner)]
    }

    public func partial(_ tag: String, role: Role, text: String) -> [EngineEffect] {
        guard let (jobID, key) = tags[tag] else { return [] }
        return [.publish(JobEvent(jobID: jobID, kind: .partial, chain: key.chain, step: key.step, role: role, text: text),
                         owner: jobs[jobID]?.record.owner)]
    }

    /// A stage's request answered: records the stage (journal first) and asks
    /// for what follows. A result that does not read as the stage's kind fails the job.
    public func finished(_ tag: String, attempt: Int, result: RawJSON, worker: String, queued: Double,
                         seconds: Double) throws -> [EngineEffect] {
        guard let (job, key, pending) = openStage(tag) else { return [] }
        let payload = pending.payload
        var record = StageRecord(chain: key.chain, step: key.step, round: pending.round, stage: payload.stage,
                                 role: payload.stage.role, attempt: attempt, worker: worker, payload: payload, extracted: nil,
                                 queuedSeconds: queued, seconds: seconds, finishedAt: clock())
        do {
            switch payload.stage {
            case .retrieve: record.memory = MemoryOutcome(retrieved: try result.decode(MemoryRetrieval.self))
            case .remember: record.memory = MemoryOutcome(stored: try result.decode(MemoryStored.self).stored)
            case .generate, .verify, .refine, .critic:
                let r = try result.decode(StageResult.self)
                record.result = r
                if payload.stage == .generate || payload.stage == .refine { record.extracted = AnswerExtractor.extract(r.text) }
            }
        } catch {
            close(tag, key, of: job)
            return fail(job, "the \(payload.stage.role) worker \(worker) returned an unreadable \(payload.stage.rawValue) result: \(error)")
        }
        return try store(record, of: job)
    }

    /// A stage's request ended without a result. Memory helps a job but is not
    /// needed for it: a memory stage that fails is recorded as such and the job
    /// goes on without it. Any other stage fails its job.
    public func failed(_ tag: String, error: ErrorBody, worker: String?, queued: Double, seconds: Double) throws -> [EngineEffect] {
        guard let (job, key, pending) = openStage(tag) else { return [] }
        let payload = pending.payload
        guard payload.stage.role == .memory else {
            close(tag, key, of: job)
            return fail(job, error.message)
        }
        Log.warning("job \(job.record.id): memory stage failed, continuing without it: \(error.message)")
        let record = StageRecord(chain: key.chain, step: key.step, round: 0, stage: payload.stage, role: payload.stage.role,
                                 attempt: 1, worker: worker ?? "none", payload: payload, memory: MemoryOutcome(error: error.message),
                                 extracted: nil, queuedSeconds: queued, seconds: seconds, finishedAt: clock())
        return try store(record, of: job)
    }

    /// The stage is no longer waiting for its request.
    private func close(_ tag: String, _ key: StageKey, of job: ActiveJob) {
        job.open[key] = nil
        tags[tag] = nil
    }

    private func openStage(_ tag: String) -> (ActiveJob, StageKey, JobPlan.Pending)? {
        guard let (jobID, key) = tags[tag], let job = jobs[jobID], let payload = job.open[key] else { return nil }
        return (job, key, payload)
    }

    private func store(_ record: StageRecord, of job: ActiveJob) throws -> [EngineEffect] {
        let key = StageKey(chain: record.chain, step: record.step)
        let jobID = job.record.id
        // The journal first: a stage counts once it is stored, and only once.
        // A journal that cannot store it fails the job (its request is over:
        // nothing else would ever end the job).
        let stored: Bool
        do { stored = try journal.insertStage(jobID: jobID, record) } catch {
            close(Self.tag(jobID: jobID, key: key), key, of: job)
            return fail(job, "internal: the journal could not record the \(record.stage.rawValue) stage (chain \(key.chain), step \(key.step)): \(error)")
        }
        close(Self.tag(jobID: jobID, key: key), key, of: job)
        var effects: [EngineEffect] = []
        if stored {
            job.finished[key] = record
            job.record.stages.append(record)
            effects.append(.publish(JobEvent(jobID: jobID, kind: .stageDone, chain: key.chain, step: key.step, role: record.role,
                                             worker: record.worker, text: record.text, seconds: record.seconds,
                                             queuedSeconds: record.queuedSeconds, promptTokens: record.result?.promptTokens,
                                             completionTokens: record.result?.completionTokens, answer: record.extracted,
                                             reusedPromptTokens: record.result?.reusedPromptTokens, model: record.result?.model,
                                             verdict: record.result?.verdict, score: record.result?.score), owner: job.record.owner))
        }
        return effects + (try advance(job))
    }

    private func advance(_ job: ActiveJob) throws -> [EngineEffect] {
        switch job.plan.decide(finished: job.finished) {
        case let .run(pending):
            var effects: [EngineEffect] = []
            for p in pending {
                let key = StageKey(chain: p.chain, step: p.step)
                if job.open[key] != nil { continue }
                let payload = try p.payload.memory.map { try RawJSON(encoding: $0) } ?? RawJSON(encoding: p.payload)
                job.open[key] = p
                let tag = Self.tag(jobID: job.record.id, key: key)
                tags[tag] = (job.record.id, key)
                effects.append(.dispatch(tag: tag, role: p.role, payload: payload))
            }
            return effects
        case let .done(answer, chainAnswers, firstAnswers):
            let t = clock()
            // A complete tree's nodes get their credit, stored with them as the job finishes.
            var credited: [StageRecord] = []
            if let tree = job.plan as? TreePlan {
                for (key, credit) in tree.credit(job.finished) {
                    guard var r = job.finished[key] else { continue }
                    r.credit = credit
                    job.finished[key] = r
                    credited.append(r)
                }
                job.record.stages = job.record.stages.map { job.finished[StageKey(chain: $0.chain, step: $0.step)] ?? $0 }
            }
            do {
                try journal.finishJob(id: job.record.id, answer: answer, chainAnswers: chainAnswers, firstAnswers: firstAnswers,
                                      finishedAt: t, updating: credited)
            } catch {
                return fail(job, "internal: the journal could not record the job's answer: \(error)")
            }
            job.record.state = .done
            job.record.answer = answer
            job.record.chainAnswers = chainAnswers
            job.record.firstAnswers = firstAnswers
            job.record.finishedAt = t
            jobs[job.record.id] = nil
            Log.info("job \(job.record.id) done: answer \(answer ?? "none") in \(String(format: "%.1f", t - job.record.createdAt)) s")
            return [.publish(JobEvent(jobID: job.record.id, kind: .jobDone, answer: answer), owner: job.record.owner)]
        }
    }

    /// Cancels a running job: it is journaled as cancelled, its open stages'
    /// requests withdrawn (the broker stops those already running). A job
    /// that has finished is returned as it is; nil when there is no such job.
    /// The journal is written first: a cancel it cannot record fails (the
    /// job runs on, as it would after a restart) rather than stopping a job
    /// that would resume.
    public func cancel(_ jobID: String) throws -> (record: JobRecord?, effects: [EngineEffect]) {
        guard let job = jobs[jobID] else { return (try journal.job(id: jobID), []) }
        let message = "cancelled by a client", t = clock()
        try journal.finishJob(id: jobID, state: .cancelled, answer: nil, chainAnswers: [], firstAnswers: [], error: message, finishedAt: t)
        let effects = end(job, state: .cancelled, message, journaledAt: t)
        return (job.record, effects)
    }

    private func fail(_ job: ActiveJob, _ message: String) -> [EngineEffect] {
        end(job, state: .failed, message)
    }

    /// Ends a job without an answer (failed or cancelled): journaled (unless
    /// it was, at `journaledAt`), its open requests withdrawn, an event. A
    /// failure the journal cannot record ends the job here all the same; on a
    /// restart it resumes from the journal.
    private func end(_ job: ActiveJob, state: JobState, _ message: String, journaledAt: Double? = nil) -> [EngineEffect] {
        let t = journaledAt ?? clock()
        if journaledAt == nil {
            do {
                try journal.finishJob(id: job.record.id, state: state, answer: nil, chainAnswers: [], firstAnswers: [],
                                      error: message, finishedAt: t)
            } catch {
                Log.error("could not record the end of job \(job.record.id): \(error); writing it again later (if the broker stops first, the job resumes)")
                var ended = job.record
                ended.state = state
                ended.error = message
                ended.finishedAt = t
                unrecorded[job.record.id] = ended
            }
        }
        job.record.state = state
        job.record.error = message
        job.record.finishedAt = t
        var effects: [EngineEffect] = []
        for key in job.open.keys {
            let tag = Self.tag(jobID: job.record.id, key: key)
            tags[tag] = nil
            effects.append(.withdraw(tag: tag))
        }
        job.open.removeAll()
        jobs[job.record.id] = nil
        if state == .cancelled {
            Log.info("job \(job.record.id) cancelled")
            return effects + [.publish(JobEvent(jobID: job.record.id, kind: .jobCancelled, error: message), owner: job.record.owner)]
        }
        Log.warning("job \(job.record.id) failed: \(message)")
        return effects + [.publish(JobEvent(jobID: job.record.id, kind: .jobFailed, error: message), owner: job.record.owner)]
    }
}
