import Client
import Dispatch
import Foundation
import Protocol
import ServiceKit

/// The gateway's way to the broker from async code. A `BusClient` blocks and
/// is not thread-safe, so each call runs on a thread of its own with a client
/// from a pool (a client whose call went wrong is dropped, never reused: a
/// late reply must not answer the next call). One subscriber reads every
/// job's events and hands each job's to whoever listens for it, after the
/// ones it already had (a job's first events come before its id is known).
final class BrokerLink: @unchecked Sendable {
    let settings: BusSettings
    private let lock = NSLock()
    private var pool: [BusClient] = []
    private let calls = DispatchQueue(label: "chorus.gateway.calls", attributes: .concurrent)

    private struct Listener {
        let continuation: AsyncStream<JobEvent>.Continuation
        var lastEvent: Date
    }
    private var listeners: [String: [UInt64: Listener]] = [:]
    private var nextListener: UInt64 = 0
    /// Recent events per job, for listeners that come late.
    private var recent: [String: (events: [JobEvent], touched: Date)] = [:]
    static let recentPerJob = 4096
    static let recentJobs = 256
    private var stopped = false

    init(settings: BusSettings) {
        self.settings = settings
    }

    // MARK: Calls

    /// Runs `work` with a client of the broker on a thread of its own.
    func call<T: Sendable>(_ work: @escaping @Sendable (BusClient) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            calls.async {
                let client: BusClient
                do { client = try self.checkout() } catch {
                    continuation.resume(throwing: error)
                    return
                }
                do {
                    let value = try work(client)
                    self.checkin(client)
                    continuation.resume(returning: value)
                } catch let error as ClientError {
                    if case .remote = error { self.checkin(client) } // its reply was read: the client is in step
                    continuation.resume(throwing: error)
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    private func checkout() throws -> BusClient {
        lock.lock()
        if let c = pool.popLast() {
            lock.unlock()
            return c
        }
        lock.unlock()
        return try BusClient(settings: settings)
    }

    private func checkin(_ client: BusClient) {
        lock.lock()
        if pool.count < 16 { pool.append(client) }
        lock.unlock()
    }

    // MARK: Events

    /// Starts reading events (on a thread of its own) until `stop()`.
    func start() {
        let thread = Thread { [self] in pump() }
        thread.name = "chorus.gateway.events"
        thread.start()
    }

    func stop() {
        lock.lock()
        stopped = true
        let all = listeners.values.flatMap(\.values)
        listeners = [:]
        lock.unlock()
        for l in all { l.continuation.finish() }
    }

    /// A job's events: those already seen, then new ones, ending after the
    /// job's last (done, failed or cancelled). A job that goes quiet for 2 s
    /// is looked up, so a missed last event does not leave the stream open.
    func events(of jobID: String) -> AsyncStream<JobEvent> {
        AsyncStream(bufferingPolicy: .unbounded) { continuation in
            lock.lock()
            nextListener += 1
            let id = nextListener
            // Under the lock, so that no event falls between those seen and the new ones.
            for e in recent[jobID]?.events ?? [] { continuation.yield(e) }
            let ended = recent[jobID]?.events.last.map(Self.isLast) == true
            if !ended { listeners[jobID, default: [:]][id] = Listener(continuation: continuation, lastEvent: Date()) }
            lock.unlock()
            if ended {
                continuation.finish()
            } else {
                continuation.onTermination = { [weak self] _ in self?.removeListener(jobID, id) }
            }
        }
    }

    private func removeListener(_ jobID: String, _ id: UInt64) {
        lock.lock()
        listeners[jobID]?[id] = nil
        if listeners[jobID]?.isEmpty == true { listeners[jobID] = nil }
        lock.unlock()
    }

    var listenerCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return listeners.values.reduce(0) { $0 + $1.count }
    }

    static func isLast(_ e: JobEvent) -> Bool { e.kind == .jobDone || e.kind == .jobFailed || e.kind == .jobCancelled }

    /// Keeps `e` and hands it to the job's listeners (outside the lock: a
    /// stream that finishes calls back into `removeListener`).
    private func deliver(_ e: JobEvent) {
        lock.lock()
        var entry = recent[e.jobID] ?? (events: [], touched: Date())
        if entry.events.count < Self.recentPerJob || Self.isLast(e) { entry.events.append(e) }
        entry.touched = Date()
        recent[e.jobID] = entry
        if recent.count > Self.recentJobs, let oldest = recent.min(by: { $0.value.touched < $1.value.touched })?.key {
            recent[oldest] = nil
        }
        let targets = listeners[e.jobID].map { Array($0.values) } ?? []
        if Self.isLast(e) {
            listeners[e.jobID] = nil
        } else if targets.count > 0 {
            for id in listeners[e.jobID]!.keys { listeners[e.jobID]![id]!.lastEvent = Date() }
        }
        lock.unlock()
        for l in targets {
            l.continuation.yield(e)
            if Self.isLast(e) { l.continuation.finish() }
        }
    }

    private func pump() {
        var subscriber: BusClient?
        var poller: BusClient?
        var lastCheck = Date()
        while true {
            lock.lock()
            let done = stopped
            lock.unlock()
            if done { return }
            do {
                if subscriber == nil {
                    let s = try BusClient(settings: settings)
                    try s.subscribe(nil)
                    subscriber = s
                }
                if let e = try subscriber!.nextEvent(timeout: 0.5) { deliver(e) }
            } catch {
                Log.warning("reading the broker's events: \(error); trying again")
                subscriber = nil
                Thread.sleep(forTimeInterval: 1)
            }
            guard Date().timeIntervalSince(lastCheck) >= 1 else { continue }
            lastCheck = Date()
            // Jobs gone quiet: ask the broker whether they are still running.
            lock.lock()
            let quiet = listeners.compactMap { job, ls in ls.values.allSatisfy { Date().timeIntervalSince($0.lastEvent) >= 2 } ? job : nil }
            for job in quiet { for id in listeners[job]!.keys { listeners[job]![id]!.lastEvent = Date() } }
            lock.unlock()
            for job in quiet {
                do {
                    if poller == nil { poller = try BusClient(settings: settings) }
                    let record = try poller!.result(job, timeout: 2)
                    switch record.state {
                    case .running: break
                    case .done: deliver(JobEvent(jobID: job, kind: .jobDone, answer: record.answer))
                    case .failed: deliver(JobEvent(jobID: job, kind: .jobFailed, error: record.error))
                    case .cancelled: deliver(JobEvent(jobID: job, kind: .jobCancelled, error: record.error))
                    }
                } catch let ClientError.remote(e) where e.code == .notFound {
                    deliver(JobEvent(jobID: job, kind: .jobFailed, error: "the broker has no job '\(job)'"))
                } catch {
                    poller = nil // a late reply must not answer the next call
                }
            }
        }
    }
}
