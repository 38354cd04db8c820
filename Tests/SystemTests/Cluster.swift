import Bus
import Client
import Foundation
import Protocol
import ServiceKit
import TestKit
import Testing

/// A real Chorus deployment for one test: a broker and workers as separate
/// processes, talking over ipc sockets in a private folder, with their own
/// journal. Everything is killed when the cluster goes away.
final class Cluster {
    let dir: URL
    let configPath: String
    let settings: BusSettings
    /// The settings written to the cluster's config file.
    let values: [String: String]
    private(set) var broker: Process?
    private(set) var workers: [Process] = []
    private var counter = 0
    private var logNames: [Int32: String] = [:]

    /// With `secure`, the bus runs CURVE with allow-lists: the broker's key
    /// pair `broker.key`/`.pub`, folders `clients/` and `workers/`, a listed
    /// client key `cli.key` (the config's client key) and a listed worker key
    /// `workers.key` (the config's worker key).
    init(heartbeat: Double = 0.5, liveness: Int = 4, queueTimeout: Double = 30, secure: Bool = false,
         extra: [String: String] = [:]) throws {
        let name = "cs-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        dir = URL(fileURLWithPath: "/tmp").appendingPathComponent(name)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var secureValues: [String: String] = [:]
        if secure {
            for folder in ["clients", "workers"] {
                try FileManager.default.createDirectory(at: dir.appendingPathComponent(folder), withIntermediateDirectories: true)
            }
            try Self.makeKey("broker", in: dir)
            try Self.makeKey("cli", in: dir, publicFolder: dir.appendingPathComponent("clients"))
            try Self.makeKey("workers", in: dir, publicFolder: dir.appendingPathComponent("workers"))
            secureValues = [
                "CHORUS_CURVE_SECRET_KEY_FILE": dir.appendingPathComponent("broker.key").path,
                "CHORUS_CURVE_SERVER_KEY_FILE": dir.appendingPathComponent("broker.pub").path,
                "CHORUS_CLIENT_KEYS": dir.appendingPathComponent("clients").path,
                "CHORUS_WORKER_KEYS": dir.appendingPathComponent("workers").path,
                "CHORUS_CLIENT_KEY_FILE": dir.appendingPathComponent("cli.key").path,
                "CHORUS_WORKER_KEY_FILE": dir.appendingPathComponent("workers.key").path,
            ]
        }
        var values: [String: String] = [
            "CHORUS_FRONTEND": "ipc://\(dir.path)/front",
            "CHORUS_BACKEND": "ipc://\(dir.path)/back",
            "CHORUS_EVENTS": "ipc://\(dir.path)/events",
            "CHORUS_JOURNAL": dir.appendingPathComponent("journal.sqlite").path,
            "CHORUS_HEARTBEAT_INTERVAL": String(heartbeat),
            "CHORUS_HEARTBEAT_LIVENESS": String(liveness),
            "CHORUS_QUEUE_TIMEOUT": String(queueTimeout),
            "CHORUS_MODEL": Models.smolLM2,
            "CHORUS_PROMPTS": Paths.repositoryRoot.appendingPathComponent("deploy/prompts").path,
            "GENERATOR_MAX_TOKENS": "64", "VERIFIER_MAX_TOKENS": "48", "REFINER_MAX_TOKENS": "64",
            "GENERATOR_CONTEXT": "1024", "VERIFIER_CONTEXT": "1024", "REFINER_CONTEXT": "1024", "CRITIC_CONTEXT": "1024",
            "EMBEDDER_MODEL": Models.embedder,
            "KVINDEX_DIRECTORY": dir.appendingPathComponent("kvindex").path,
            "MEMORY_DATABASE": dir.appendingPathComponent("memory.sqlite").path,
            // Tests run side by side: no two brokers on the default metrics port.
            "CHORUS_METRICS": "off",
        ]
        for (k, v) in secureValues.merging(extra, uniquingKeysWith: { $1 }) { values[k] = v }
        self.values = values
        configPath = dir.appendingPathComponent("chorus.conf").path
        try values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
        settings = try BusSettings(Configuration(path: configPath, environment: [:]))
    }

    deinit {
        for p in workers + [broker].compactMap({ $0 }) where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in workers + [broker].compactMap({ $0 }) { p.waitUntilExit() }
        try? FileManager.default.removeItem(at: dir)
    }

    private func spawn(_ executable: String, log: String, environment: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = Paths.binaries.appendingPathComponent(executable)
        p.arguments = ["--config", configPath]
        var env = ProcessInfo.processInfo.environment
        for key in env.keys where key.hasPrefix("CHORUS_") { env[key] = nil }
        for (k, v) in environment { env[k] = v }
        p.environment = env
        _ = FileManager.default.createFile(atPath: dir.appendingPathComponent(log).path, contents: nil)
        let handle = try FileHandle(forWritingTo: dir.appendingPathComponent(log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        return p
    }

    /// Starts the broker and waits until it answers.
    @discardableResult
    func startBroker() throws -> Process {
        let p = try spawn("chorus-broker", log: "broker.log")
        broker = p
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && p.isRunning {
            if (try? client().status(timeout: 0.5)) != nil { return p }
        }
        throw ClusterError("the broker did not answer within 20 s:\n" + log("broker.log"))
    }

    /// Starts a worker of `role`; `environment` overrides the config for it alone.
    @discardableResult
    func startWorker(_ role: String, environment: [String: String] = [:]) throws -> Process {
        try requireModel(for: role)
        counter += 1
        let p = try spawn("chorus-\(role)", log: "\(role)-\(counter).log", environment: environment)
        workers.append(p)
        logNames[p.processIdentifier] = "\(role)-\(counter).log"
        return p
    }

    /// The log of a worker this cluster started.
    func log(of worker: Process) -> String { logNames[worker.processIdentifier].map(log) ?? "(not a worker of this cluster)" }

    /// Starts the HTTP gateway on a free loopback port; returns its base URL
    /// once it serves.
    func startGateway(environment: [String: String] = [:]) throws -> String {
        let port = try PortReservation()
        counter += 1
        let log = "gateway-\(counter).log"
        let p = try spawn("chorus-gateway", log: log, environment: ["CHORUS_GATEWAY": "127.0.0.1:\(port.port)"].merging(environment) { $1 })
        workers.append(p)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && p.isRunning {
            if self.log(log).contains("serving http://") {
                port.release()
                return "http://127.0.0.1:\(port.port)"
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw ClusterError("the gateway did not start within 20 s:\n" + self.log(log))
    }

    /// Fails with a message saying how to install the models when a role's model is missing.
    func requireModel(for role: String) throws {
        let key: String
        switch role {
        case "generator", "verifier", "refiner", "critic": key = values["\(role.uppercased())_MODEL"] == nil ? "CHORUS_MODEL" : "\(role.uppercased())_MODEL"
        case "kvindex": key = "EMBEDDER_MODEL"
        default: return
        }
        guard let path = values[key], FileManager.default.fileExists(atPath: path) else {
            throw ClusterError("the \(role) worker's model \(values[key] ?? "(unset)") (\(key)) is not installed; run deploy/setup.sh first")
        }
    }

    /// Waits until the broker lists at least these workers per role.
    func waitForWorkers(_ want: [String: Int], timeout: Double = 60) throws {
        let c = try client()
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let s = try? c.status(timeout: 1), want.allSatisfy({ role, n in s.workers.filter { $0.role.rawValue == role }.count == n }) { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw ClusterError("workers \(want) did not register within \(Int(timeout)) s: \(String(describing: try? c.status()))")
    }

    func client() throws -> BusClient { try BusClient(settings: settings) }

    /// Writes a new CURVE key pair as `chorus keygen --out` does: `<name>.key`
    /// in the cluster's folder and `<name>.pub` in `publicFolder` (or beside it).
    @discardableResult
    static func makeKey(_ name: String, in dir: URL, publicFolder: URL? = nil, roles: String? = nil) throws -> CurveKeyPair {
        let keys = try CurveKeyPair.generate()
        try (keys.secretKey + "\n").write(to: dir.appendingPathComponent("\(name).key"), atomically: true, encoding: .utf8)
        try (keys.publicKey + "\n" + (roles.map { "roles: \($0)\n" } ?? ""))
            .write(to: (publicFolder ?? dir).appendingPathComponent("\(name).pub"), atomically: true, encoding: .utf8)
        return keys
    }

    func kill9(_ p: Process) {
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// Submits `spec` through a client subscribed to its events, waits for
    /// `stages` of its stages to finish, kills the broker with SIGKILL, starts
    /// a new one on the same journal, and waits for the job through it.
    func killBrokerMidJob(_ spec: JobSpec, afterStages stages: Int, within seconds: Double) throws -> (stagesSeen: Int, job: JobRecord) {
        let events = try client()
        try events.subscribe(nil, confirmWithin: 10)
        let id = try events.submit(spec)
        var done = 0
        let deadline = Date().addingTimeInterval(seconds)
        while done < stages && Date() < deadline {
            if let e = try events.nextEvent(timeout: 1), e.jobID == id, e.kind == .stageDone { done += 1 }
        }
        kill9(broker!)
        Thread.sleep(forTimeInterval: 0.5)
        try startBroker()
        return (done, try waitForJob(id, client: try client()))
    }

    /// SIGTERM, and the process must exit within 10 s.
    func terminate(_ p: Process) {
        p.terminate()
        let deadline = Date().addingTimeInterval(10)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if p.isRunning {
            Issue.record("process \(p.processIdentifier) ignored SIGTERM")
            kill9(p)
        }
    }

    func log(_ name: String) -> String {
        (try? String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)) ?? "(no log)"
    }

    /// The whole logs of every process of one role (or "broker"), oldest first.
    func fullLogs(of role: String) -> String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0 == "\(role).log" || ($0.hasPrefix("\(role)-") && $0.hasSuffix(".log")) }
            .sorted { $0.count == $1.count ? $0 < $1 : $0.count < $1.count }.map(log).joined(separator: "\n")
    }

    /// Every log, for failure messages.
    var logs: String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".log") }.sorted()) ?? []
        return names.map { "--- \($0)\n" + String(log($0).suffix(3000)) }.joined(separator: "\n")
    }

    /// Polls RESULT until the job finishes.
    func waitForJob(_ id: String, client c: BusClient? = nil, timeout: Double = 240) throws -> JobRecord {
        let deadline = Date().addingTimeInterval(timeout)
        var c = try c ?? client()
        while Date() < deadline {
            do {
                let r = try c.result(id, timeout: 2)
                if r.state != .running { return r }
            } catch {
                c = try client() // the broker may be restarting
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        throw ClusterError("job \(id) did not finish within \(Int(timeout)) s\n" + logs)
    }
}

struct ClusterError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A raw ZeroMQ peer, for sending messages that break the protocol.
final class RawPeer {
    let context = BusContext()
    let socket: BusSocket

    init(_ endpoint: String) throws {
        socket = try BusSocket(context, .dealer)
        try socket.connect(endpoint)
    }

    func send(_ frames: [Data]) throws { try socket.send(frames) }

    func send(_ header: String, _ body: String) throws { try socket.send([Data(header.utf8), Data(body.utf8)]) }

    /// The next reply as an envelope, or nil after `timeout`.
    func reply(timeout: Double = 5) throws -> Envelope? {
        guard let frames = try socket.receive(timeout: timeout) else { return nil }
        return try Envelope(frames: frames, maxBodyBytes: 1 << 24)
    }

    /// Sends STATUS and waits for its reply.
    func statusReply(timeout: Double = 1) throws -> Envelope? {
        try send(Envelope.frames(.status))
        return try reply(timeout: timeout)
    }

    func errorCode(timeout: Double = 5) throws -> ErrorCode? {
        guard let e = try reply(timeout: timeout), e.header.command == .error else { return nil }
        return try e.decode(ErrorBody.self).code
    }
}
