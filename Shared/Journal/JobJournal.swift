import Foundation
import Protocol
import Storage

/// The broker's durable record of jobs (after 9/TSP): a job is written before
/// it is acknowledged, and every stage result before the broker acts on it.
/// SQLite in WAL mode with full synchronisation: a committed write survives a
/// kill -9 of the broker (and a power cut).
public final class JobJournal {
    let db: Database
    private let insertJobStatement: Statement
    private let insertStageStatement: Statement
    private let finishStatement: Statement
    private let jobStatement: Statement
    private let stagesStatement: Statement
    private let encoder = JSONCoding.encoder()
    private let decoder = JSONDecoder()

    /// 1: jobs and their stages; 2: the submissions table (idempotency keys);
    /// 3: jobs' owners, and the job each idempotency key was sent with.
    static let migrations = Migrations(name: "the journal", firstTable: "jobs", steps: [
        """
            CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY,
                spec TEXT NOT NULL,
                seed TEXT NOT NULL,
                state TEXT NOT NULL,
                answer TEXT,
                chain_answers TEXT,
                first_answers TEXT,
                error TEXT,
                created_at REAL NOT NULL,
                finished_at REAL
            );
            CREATE TABLE IF NOT EXISTS stages (
                job_id TEXT NOT NULL REFERENCES jobs(id),
                chain INTEGER NOT NULL,
                step INTEGER NOT NULL,
                record TEXT NOT NULL,
                finished_at REAL NOT NULL,
                PRIMARY KEY (job_id, chain, step)
            );
            CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
            """,
        """
            CREATE TABLE IF NOT EXISTS submissions (
                key TEXT PRIMARY KEY,
                job_id TEXT NOT NULL REFERENCES jobs(id)
            )
            """,
        """
            ALTER TABLE jobs ADD COLUMN owner_client TEXT;
            ALTER TABLE jobs ADD COLUMN owner_tenant TEXT;
            ALTER TABLE submissions ADD COLUMN request TEXT;
            """,
    ])

    public static var schemaVersion: Int { migrations.version }

    /// Opens (or creates) the journal at `path`. A journal written by a newer
    /// Chorus is refused rather than changed; an older one is brought up to date
    /// (one written before versions were numbered is version 1).
    public init(path: String, busyTimeoutMilliseconds: Int32 = 5000) throws {
        db = try Database.durable(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
        try db.execute("PRAGMA foreign_keys = ON")
        try Self.migrations.apply(to: db)
        insertJobStatement = try db.prepare("""
            INSERT INTO jobs (id, spec, seed, state, created_at, owner_client, owner_tenant) VALUES (?, ?, ?, 'running', ?, ?, ?)
            """)
        insertStageStatement = try db.prepare("""
            INSERT OR IGNORE INTO stages (job_id, chain, step, record, finished_at) VALUES (?, ?, ?, ?, ?)
            """)
        finishStatement = try db.prepare("""
            UPDATE jobs SET state = ?, answer = ?, chain_answers = ?, first_answers = ?, error = ?, finished_at = ?
            WHERE id = ? AND state = 'running'
            """)
        jobStatement = try db.prepare("""
            SELECT id, spec, seed, state, answer, chain_answers, first_answers, error, created_at, finished_at, owner_client, owner_tenant
            FROM jobs WHERE id = ?
            """)
        stagesStatement = try db.prepare("SELECT record FROM stages WHERE job_id = ? ORDER BY finished_at, chain, step")
    }

    public var path: String { db.path }

    /// Records a new job, and the client's idempotency key for it (scoped to
    /// its owner, with the job it was sent with) in the same transaction.
    /// `request` is the job as the client sent it (before the broker's own
    /// choices, such as running without memory), kept with the key.
    public func insertJob(id: String, spec: JobSpec, seed: UInt64, createdAt: Double, owner: JobOwner = JobOwner(client: JobOwner.localClient),
                          idempotencyKey: String? = nil, request: JobSpec? = nil) throws {
        let specText = String(decoding: try encoder.encode(spec), as: UTF8.self)
        let requestText = String(decoding: try encoder.encode(request ?? spec), as: UTF8.self)
        try db.transaction {
            try insertJobStatement.run([id, specText, String(seed), createdAt, owner.client, owner.tenant])
            if let key = idempotencyKey {
                try db.prepare("INSERT INTO submissions (key, job_id, request) VALUES (?, ?, ?)").run([Self.scoped(key, owner), id, requestText])
            }
        }
    }

    /// The job a SUBMIT with this idempotency key from `owner` created, if
    /// any, and whether it was sent with this same job (nil when the journal
    /// did not keep what it was sent with).
    public func submission(forKey key: String, owner: JobOwner, spec: JobSpec) throws -> (jobID: String, sameJob: Bool?)? {
        guard let row = try db.prepare("SELECT job_id, request FROM submissions WHERE key = ?").first([Self.scoped(key, owner)]) else { return nil }
        let jobID = try row.string(0)
        guard let request = try row.optionalString(1) else { return (jobID, nil) }
        return (jobID, request == String(decoding: try encoder.encode(spec), as: UTF8.self))
    }

    /// An idempotency key as one owner's: another client's or tenant's same key is another key.
    static func scoped(_ key: String, _ owner: JobOwner) -> String {
        "\(owner.client)\u{1F}\(owner.tenant ?? "")\u{1F}\(key)"
    }

    /// Records a stage result; returns false if the stage was already recorded
    /// (a request that ran twice), in which case nothing changes.
    @discardableResult
    public func insertStage(jobID: String, _ record: StageRecord) throws -> Bool {
        let text = String(decoding: try encoder.encode(record), as: UTF8.self)
        try insertStageStatement.run([jobID, record.chain, record.step, text, record.finishedAt])
        return db.changes == 1
    }

    /// Marks a running job done with its answer and, in the same transaction,
    /// replaces the given stage records (a tree's nodes with their credit).
    public func finishJob(id: String, answer: String?, chainAnswers: [String?], firstAnswers: [String?], finishedAt: Double,
                          updating stages: [StageRecord]) throws {
        try db.transaction {
            let update = try db.prepare("UPDATE stages SET record = ? WHERE job_id = ? AND chain = ? AND step = ?")
            for record in stages {
                try update.run([String(decoding: try encoder.encode(record), as: UTF8.self), id, record.chain, record.step])
            }
            try finishJob(id: id, state: .done, answer: answer, chainAnswers: chainAnswers, firstAnswers: firstAnswers, error: nil,
                          finishedAt: finishedAt)
        }
    }

    /// Removes the jobs that finished (done or failed) before `time`, with
    /// their stages, in one transaction; running jobs are never removed.
    /// Returns how many jobs and stages went (or, with `dryRun`, would go).
    @discardableResult
    public func prune(finishedBefore time: Double, dryRun: Bool = false) throws -> (jobs: Int, stages: Int) {
        let old = "SELECT id FROM jobs WHERE state != 'running' AND finished_at IS NOT NULL AND finished_at < ?"
        return try db.transaction {
            let jobs = try db.prepare("SELECT COUNT(*) FROM (\(old))").integer([time])
            let stages = try db.prepare("SELECT COUNT(*) FROM stages WHERE job_id IN (\(old))").integer([time])
            if !dryRun {
                try db.prepare("DELETE FROM submissions WHERE job_id IN (\(old))").run([time])
                try db.prepare("DELETE FROM stages WHERE job_id IN (\(old))").run([time])
                try db.prepare("DELETE FROM jobs WHERE id IN (\(old))").run([time])
            }
            return (jobs, stages)
        }
    }

    /// Marks a running job done or failed.
    public func finishJob(id: String, state: JobState, answer: String?, chainAnswers: [String?], firstAnswers: [String?],
                          error: String?, finishedAt: Double) throws {
        try finishStatement.run([state.rawValue, answer, json(chainAnswers), json(firstAnswers), error, finishedAt, id])
    }

    /// A job with its stages, or nil if there is no such job.
    public func job(id: String) throws -> JobRecord? {
        guard let row = try jobStatement.first([id]) else { return nil }
        return try record(from: row)
    }

    /// Jobs that were accepted and have not finished, oldest first.
    public func unfinishedJobs() throws -> [JobRecord] {
        let rows = try db.prepare("""
            SELECT id, spec, seed, state, answer, chain_answers, first_answers, error, created_at, finished_at, owner_client, owner_tenant
            FROM jobs WHERE state = 'running' ORDER BY created_at
            """).typedRows()
        return try rows.map(record(from:))
    }

    /// Number of stage rows for a job (every stage is stored at most once).
    public func stageCount(jobID: String) throws -> Int {
        try db.prepare("SELECT COUNT(*) FROM stages WHERE job_id = ?").integer([jobID])
    }

    /// Counts of jobs by state.
    public func counts() throws -> [String: Int] {
        var out: [String: Int] = [:]
        for row in try db.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state").typedRows() {
            out[try row.string(0)] = try row.int(1)
        }
        return out
    }

    private func json(_ value: [String?]) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    private func record(from row: Row) throws -> JobRecord {
        let id = try row.string(0)
        let spec = try decoder.decode(JobSpec.self, from: Data(try row.string(1).utf8))
        let stages = try stagesStatement.typedRows([id]).map {
            try decoder.decode(StageRecord.self, from: Data(try $0.string(0).utf8))
        }
        func answers(_ column: Int) throws -> [String?] {
            guard let s = try row.optionalString(column) else { return [] }
            return try decoder.decode([String?].self, from: Data(s.utf8))
        }
        let state = try row.string(3)
        return JobRecord(id: id, spec: spec, seed: UInt64(try row.string(2)) ?? 0,
                         state: JobState(rawValue: state) ?? .failed,
                         answer: try row.optionalString(4), chainAnswers: try answers(5), firstAnswers: try answers(6),
                         error: try row.optionalString(7), createdAt: try row.optionalDouble(8) ?? 0, finishedAt: try row.optionalDouble(9),
                         stages: stages, owner: try row.optionalString(10).map { JobOwner(client: $0, tenant: try row.optionalString(11)) })
    }
}
