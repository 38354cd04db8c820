import ArgumentParser
import Client
import Foundation
import Protocol
import ServiceKit

/// Where the broker is.
struct BusOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The broker's client endpoint (default: CHORUS_FRONTEND from the config, tcp://127.0.0.1:5555); its events are then read from the same host.",
                               valueName: "endpoint"))
    var broker: String?

    @Option(help: ArgumentHelp("Config file (default: $CHORUS_CONFIG or deploy/chorus.conf).", valueName: "path"))
    var config: String?

    func settings() throws -> BusSettings {
        do {
            var c = try Configuration(path: config)
            if let broker {
                // The events socket is on the broker's host too (unless the config names another).
                c.set("CHORUS_EVENTS", BusSettings.frontend(c.string("CHORUS_EVENTS", default: "tcp://127.0.0.1:5557"), besideBackend: broker))
                c.set("CHORUS_FRONTEND", broker)
            }
            return try BusSettings(c)
        } catch {
            throw CLIError("\(error)")
        }
    }

    /// A socket session of its own, for what measures the bus itself (bench-bus).
    func client() throws -> BusClient {
        do { return try BusClient(settings: settings()) } catch let e as CLIError { throw e } catch { throw CLIError("\(error)") }
    }

    /// The broker client the commands use, started: it listens to every
    /// job's events and catches up on those it missed.
    func brokerClient() throws -> Broker {
        let client: BrokerClient
        do { client = try BrokerClient(settings: settings()) } catch let e as CLIError { throw e } catch { throw CLIError("\(error)") }
        client.start()
        return Broker(client)
    }
}

/// The async `BrokerClient` for a command that is not async: each call
/// blocks until it is answered, and its error is the command's.
struct Broker {
    let client: BrokerClient
    init(_ client: BrokerClient) { self.client = client }

    func call<T: Sendable>(_ work: @escaping @Sendable (BrokerClient) async throws -> T) throws -> T {
        do { return try client.blocking(work) } catch { throw CLIError("\(error)") }
    }

    func submit(_ spec: JobSpec) throws -> String {
        try call { try await $0.submit(spec, idempotencyKey: BusClient.newSubmissionKey(), tenant: nil) }
    }

    func result(_ jobID: String) throws -> JobRecord { try call { try await $0.result(jobID, scope: .everyTenant) } }

    /// The job, or nil when the broker does not know it.
    func knownResult(_ jobID: String) throws -> JobRecord? {
        do { return try client.blocking { try await $0.result(jobID, scope: .everyTenant) } } catch let ClientError.remote(e) where e.code == .notFound {
            return nil
        } catch { throw CLIError("\(error)") }
    }

    func cancel(_ jobID: String) throws -> JobRecord { try call { try await $0.cancel(jobID, scope: .everyTenant) } }
}

/// How a job is run.
extension RefinePolicy: ExpressibleByArgument {}

struct JobOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Independent chains, majority-voted (MALT's MV@k).", valueName: "k"))
    var samples: Int = 1

    @Option(help: ArgumentHelp("Verify-and-refine rounds at most per chain.", valueName: "r"))
    var rounds: Int = 2

    @Option(help: ArgumentHelp("Seed: the same seed and question give the same trajectory.", valueName: "s"))
    var seed: UInt64?

    @Option(help: ArgumentHelp("Most tokens per generated stage (overrides the workers' settings).", valueName: "n"))
    var maxTokens: Int?

    @Flag(help: "Do not use memory for this job.")
    var noMemory = false

    @Option(help: ArgumentHelp("When the refiner rewrites: always (MALT's), or checked (only when the verifier disagrees or the arithmetic checker finds a wrong computation).",
                               valueName: "policy"))
    var refine: RefinePolicy?

    @Option(help: ArgumentHelp("Recall from and store in this memory namespace instead of the shared one (a-z, 0-9, '-', '_', '.').",
                               valueName: "name"))
    var memoryNamespace: String?

    func spec(_ question: String, answer: String? = nil, seed override: UInt64? = nil, namespace: String? = nil) throws -> JobSpec {
        var overrides: [String: SamplingOverride]?
        if let maxTokens {
            overrides = [:]
            for role in Role.malt { overrides![role.rawValue] = SamplingOverride(maxTokens: maxTokens) }
        }
        let spec = JobSpec(question: question, samples: samples, rounds: rounds, seed: override ?? seed, answer: answer,
                           overrides: overrides, noMemory: noMemory ? true : nil,
                           memoryNamespace: noMemory ? nil : namespace ?? memoryNamespace, refine: refine)
        do { try spec.validate() } catch { throw ValidationError(error.message) }
        return spec
    }
}
