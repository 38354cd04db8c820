import Bus
import Client
import Foundation
import Protocol
import ServiceKit
import TestKit
import Testing

/// CURVE with allow-lists on real processes: only listed keys get in, each
/// only where its list allows, and the broker checks every message's sender.
@Suite("Authenticated bus", .serialized)
struct SecureBusTests {
    @Test("listed keys work end to end (requests, jobs, encrypted events); unlisted clients and workers are refused and logged once")
    func allowLists() throws {
        let cluster = try Cluster(secure: true, extra: ["CHORUS_ROLES": "echo,generator,verifier,refiner,critic"])
        try cluster.startBroker()
        try cluster.startWorker("echo")
        for role in SystemTests.pipelineRoles { try cluster.startWorker(role) }
        try cluster.waitForWorkers(["echo": 1, "generator": 1, "verifier": 1, "refiner": 1, "critic": 1])
        let client = try cluster.client()
        #expect(try client.request(role: "echo", payload: .string("secret")) == .string("secret"))

        // Events reach a listed subscriber (over CURVE) and no one else.
        let listener = try cluster.client()
        try listener.subscribe(nil, confirmWithin: 10)
        let plain = BusContext(), eavesdropper = try BusSocket(plain, .sub)
        try eavesdropper.subscribe("")
        let handshakes = try eavesdropper.monitorHandshakes()
        try eavesdropper.connect(cluster.settings.events)
        // The plaintext subscriber has connected and been turned away before the job's events.
        #expect(eventually(10) { handshakes.update() != nil }, "the plaintext subscriber's handshake did not fail")
        let jobID = try client.submit(JobSpec(question: "What is 2 + 2?", samples: 1, rounds: 1, seed: 1, noMemory: true))
        let event = try listener.nextEvent(timeout: 5)
        #expect(event?.jobID == jobID && event?.kind == .accepted)
        // The job runs to its answer through the four listed model workers, its events over CURVE.
        let job = try cluster.waitForJob(jobID, client: client, timeout: 180)
        #expect(job.state == .done && job.stages.count == 4, "\(job.state) \(job.error ?? "")\n\(cluster.logs)")
        var kinds: [JobEvent.Kind] = []
        while let e = try listener.nextEvent(timeout: 1) { if e.jobID == jobID { kinds.append(e.kind) } }
        #expect(kinds.filter { $0 == .stageDone }.count == 4 && kinds.last == .jobDone, "\(kinds)")
        #expect(try eavesdropper.receive(timeout: 1) == nil, "the plaintext subscriber got an event")

        // A client whose key is not listed: refused, and told so.
        let stranger = try Cluster.makeKey("stranger", in: cluster.dir)
        var strangerSettings = cluster.settings
        strangerSettings.clientKeyFile = cluster.dir.appendingPathComponent("stranger.key").path
        do {
            _ = try BusClient(settings: strangerSettings).status(timeout: 3)
            Issue.record("an unlisted client got a STATUS")
        } catch let ClientError.refused(_, reason) {
            #expect(reason.contains("refused"))
        }
        // Twice: the broker logs it once, with the key's fingerprint.
        _ = try? BusClient(settings: strangerSettings).status(timeout: 1)
        let fingerprint = CurveKeyPair.fingerprint(stranger.publicKey)
        let refusals = cluster.log("broker.log").components(separatedBy: "key \(fingerprint)...").count - 1
        #expect(refusals == 1, "\(cluster.log("broker.log"))")

        // A worker with an unlisted key, and one using the (listed) client key: neither registers.
        let unlisted = try cluster.startWorker("echo", environment: ["CHORUS_WORKER_KEY_FILE": cluster.dir.appendingPathComponent("stranger.key").path])
        let asClient = try cluster.startWorker("echo", environment: ["CHORUS_WORKER_KEY_FILE": cluster.dir.appendingPathComponent("cli.key").path])
        #expect(eventually(10) {
            cluster.log("broker.log").contains("refused a backend connection") && cluster.log(of: unlisted).contains("refused this key")
                && cluster.log(of: asClient).contains("refused this key")
        }, "\(cluster.logs)")
        #expect(try client.status().workers.filter { $0.role == .echo }.count == 1)
        #expect(unlisted.isRunning && asClient.isRunning) // they keep trying: the key may be listed later
        cluster.kill9(unlisted)
        cluster.kill9(asClient)
    }

    @Test("the async client of an unlisted key: call after call is refused (or times out), and no send blocks its one bus thread")
    func asyncClientRefused() async throws {
        let cluster = try Cluster(secure: true, extra: ["CHORUS_ROLES": "echo"])
        try cluster.startBroker()
        _ = try Cluster.makeKey("stranger", in: cluster.dir)
        var settings = cluster.settings
        settings.clientKeyFile = cluster.dir.appendingPathComponent("stranger.key").path
        let stranger = try BrokerClient(settings: settings)
        stranger.start()
        defer { stranger.stop() }
        for attempt in 0..<4 {
            let outcome = Outcome()
            // Not awaited: a call whose send blocked would never return, and the test must say so rather than hang.
            Task {
                do {
                    _ = try await stranger.status(scope: .everyTenant, timeout: 2)
                    outcome.set("a STATUS")
                } catch ClientError.refused { outcome.set("refused") } catch ClientError.noReply { outcome.set("no reply") } catch {
                    outcome.set("\(error)")
                }
            }
            var answer: String?
            for _ in 0..<100 where answer == nil {
                try await Task.sleep(nanoseconds: 100_000_000)
                answer = outcome.value
            }
            #expect(answer == "refused" || answer == "no reply", "call \(attempt + 1) of an unlisted async client: \(answer ?? "no answer in 10 s")")
            try await Task.sleep(nanoseconds: 300_000_000)
        }
    }

    @Test("a worker key limited to roles cannot serve another; a key removed from the list is dropped at its next message")
    func rolesAndRevocation() throws {
        let cluster = try Cluster(secure: true, extra: ["CHORUS_ROLES": "echo,generator"])
        try Cluster.makeKey("gen-only", in: cluster.dir, publicFolder: cluster.dir.appendingPathComponent("workers"), roles: "generator")
        try cluster.startBroker()
        let limited = try cluster.startWorker("echo", environment: ["CHORUS_WORKER_KEY_FILE": cluster.dir.appendingPathComponent("gen-only.key").path])
        let status = try limited.exitStatus(within: 10, "the echo worker whose key may serve the generator only")
        #expect(status == 2 && cluster.log(of: limited).contains("may not serve echo"), "\(cluster.logs)")

        try cluster.startWorker("echo")
        try cluster.waitForWorkers(["echo": 1])
        try FileManager.default.removeItem(at: cluster.dir.appendingPathComponent("workers/workers.pub"))
        let client = try cluster.client()
        #expect(eventually(10) { (try? client.status(timeout: 1))?.workers.isEmpty == true }, "\(cluster.logs)")
        #expect(cluster.log("broker.log").contains("not a listed worker key"))
    }

    @Test("the broker refuses to start with CURVE but without allow-lists, saying what to set")
    func needsLists() throws {
        let cluster = try Cluster(secure: true, extra: ["CHORUS_WORKER_KEYS": ""])
        #expect(throws: ClusterError.self) { try cluster.startBroker() }
        #expect(cluster.log("broker.log").contains("CHORUS_CLIENT_KEYS or CHORUS_WORKER_KEYS is not set"), "\(cluster.logs)")
    }
}

/// What a call in an unstructured task came to.
final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: String?
    func set(_ v: String) { lock.withLock { stored = v } }
    var value: String? { lock.withLock { stored } }
}
