#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A fixed set of threads that run one parallel job at a time. The calling
/// thread takes part as thread 0, so a pool of n threads starts n - 1. Workers
/// spin briefly between jobs (a forward pass issues a few hundred small jobs
/// per token) and then sleep, so an idle pool costs no CPU.
public final class ThreadPool: @unchecked Sendable {
    /// Threads that take part in each job, the caller included.
    public var threadCount: Int { participants }

    private let epoch = Atomic<UInt64>(0)
    private let remaining = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private var job: ((Int, Int) -> Void)?
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    /// Serialises callers: one job runs at a time.
    private var runLock = pthread_mutex_t()
    private var threads: [pthread_t] = []
    /// Threads that take part in a job: the workers that started, plus the caller.
    private var participants = 1
    /// Spins before a worker goes to sleep waiting for the next job.
    private let spinLimit: Int

    /// The number of cores this process may use.
    public static var availableCores: Int {
        let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        return max(1, Int(n))
    }

    public init(threadCount: Int = ThreadPool.availableCores, spinLimit: Int = 200_000) {
        self.spinLimit = spinLimit
        pthread_mutex_init(&mutex, nil)
        pthread_mutex_init(&runLock, nil)
        pthread_cond_init(&condition, nil)
        // Workers hold the pool unretained: deinit joins them before the pool goes away.
        let unretained = Unmanaged.passUnretained(self)
        for index in 1..<max(1, threadCount) {
            let context = Unmanaged.passRetained(WorkerContext(pool: unretained, index: index))
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                context.pool.takeUnretainedValue().workerLoop(index: context.index)
                return nil
            }, context.toOpaque())
            if rc == 0 { threads.append(thread) } else { context.release(); break }
        }
        participants = threads.count + 1
    }

    deinit {
        stopping.store(true, ordering: .releasing)
        pthread_mutex_lock(&mutex)
        epoch.add(1, ordering: .releasing)
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
        for t in threads { pthread_join(t, nil) }
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
        pthread_mutex_destroy(&runLock)
    }

    /// Runs `body(threadIndex, threadCount)` on every thread and returns when all
    /// are done. Calls from several threads are serialised; `body` must not call
    /// back into the pool.
    public func run(_ body: (_ thread: Int, _ threadCount: Int) -> Void) {
        let n = participants
        if n == 1 {
            body(0, 1)
            return
        }
        pthread_mutex_lock(&runLock)
        defer { pthread_mutex_unlock(&runLock) }
        withoutActuallyEscaping(body) { escapable in
            job = escapable
            remaining.store(n - 1, ordering: .relaxed)
            pthread_mutex_lock(&mutex)
            epoch.add(1, ordering: .releasing)
            pthread_cond_broadcast(&condition)
            pthread_mutex_unlock(&mutex)
            escapable(0, n)
            while remaining.load(ordering: .acquiring) != 0 {}
            job = nil
        }
    }

    /// Runs `body(range)` over `0..<count`, split into one contiguous part per thread.
    public func parallelFor(_ count: Int, _ body: (Range<Int>) -> Void) {
        if count <= 0 { return }
        let parts = min(count, participants)
        if parts == 1 {
            body(0..<count)
            return
        }
        run { thread, n in
            let r = ThreadPool.split(count, part: thread, of: n)
            if !r.isEmpty { body(r) }
        }
    }

    /// The `part`-th of `n` nearly equal contiguous ranges of `0..<count`.
    public static func split(_ count: Int, part: Int, of n: Int) -> Range<Int> {
        let base = count / n
        let extra = count % n
        let start = part * base + min(part, extra)
        return start..<(start + base + (part < extra ? 1 : 0))
    }

    private func workerLoop(index: Int) {
        var seen: UInt64 = 0
        while true {
            var current = epoch.load(ordering: .acquiring)
            var spins = 0
            while current == seen && spins < spinLimit {
                spins += 1
                current = epoch.load(ordering: .acquiring)
            }
            if current == seen {
                pthread_mutex_lock(&mutex)
                current = epoch.load(ordering: .acquiring)
                while current == seen {
                    pthread_cond_wait(&condition, &mutex)
                    current = epoch.load(ordering: .acquiring)
                }
                pthread_mutex_unlock(&mutex)
            }
            seen = current
            if stopping.load(ordering: .acquiring) { return }
            if let job { job(index, participants) }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}

private final class WorkerContext {
    let pool: Unmanaged<ThreadPool>
    let index: Int
    init(pool: Unmanaged<ThreadPool>, index: Int) {
        self.pool = pool
        self.index = index
    }
}
