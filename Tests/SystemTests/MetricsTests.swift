import Client
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Protocol
import TestKit
import Testing

/// The broker's Prometheus endpoint, scraped over HTTP from a real deployment.
@Suite("Metrics", .serialized)
struct MetricsTests {
    /// Samples of a Prometheus text exposition, by `name{labels}`; every
    /// line is checked against the format (HELP and TYPE comments, samples
    /// of declared metrics with well-formed labels and values).
    static func parse(_ text: String) throws -> [String: Double] {
        var samples: [String: Double] = [:]
        var types: [String: String] = [:]
        let name = #"[a-zA-Z_:][a-zA-Z0-9_:]*"#
        let sample = try Regex(#"^(\#(name))(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? (\S+)$"#)
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# HELP ") { continue }
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(String(parts[3])) else {
                    throw ParseError("bad TYPE line: \(line)")
                }
                types[String(parts[2])] = String(parts[3])
                continue
            }
            guard let m = try sample.wholeMatch(in: String(line)) else { throw ParseError("not a sample line: \(line)") }
            let metric = String(m.output[1].substring!)
            let base = ["_bucket", "_sum", "_count"].reduce(metric) { $0.hasSuffix($1) && types[$0] == nil ? String($0.dropLast($1.count)) : $0 }
            guard types[base] != nil else { throw ParseError("sample of an undeclared metric: \(line)") }
            let valueText = String(m.output[m.output.count - 1].substring!)
            guard let value = valueText == "+Inf" ? Double.infinity : Double(valueText) else { throw ParseError("bad value: \(line)") }
            samples[metric + (m.output[2].substring.map(String.init) ?? "")] = value
        }
        return samples
    }

    struct ParseError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    static func scrape(_ port: Int) throws -> (text: String, samples: [String: Double]) {
        let text = try String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8)
        return (text, try parse(text))
    }

    @Test("a job's counters, stage latencies per role, queues, workers, tokens from the workers' heartbeats and bad messages, in Prometheus text")
    func scrapeAfterJob() throws {
        let reservation = try PortReservation(), port = reservation.port
        let cluster = try Cluster(extra: ["CHORUS_METRICS": "127.0.0.1:\(port)"])
        try cluster.startBroker()
        reservation.release()
        for role in ["generator", "verifier", "refiner", "critic"] { try cluster.startWorker(role) }
        try cluster.waitForWorkers(["generator": 1, "verifier": 1, "refiner": 1, "critic": 1])
        let client = try cluster.client()
        let id = try client.submit(JobSpec(question: "What is 3 + 4?", samples: 1, rounds: 1, seed: 5, noMemory: true))
        let job = try cluster.waitForJob(id)
        #expect(job.state == .done)
        // One message that breaks the protocol.
        let rogue = try RawPeer(cluster.settings.frontend)
        try rogue.send("CHORUS/1 NONSENSE", "{}")
        _ = try rogue.reply()

        // Tokens arrive with the workers' next heartbeats.
        var samples: [String: Double] = [:], text = ""
        #expect(eventually(10) {
            guard let s = try? Self.scrape(port) else { return false }
            (text, samples) = s
            // Gauges follow at the broker's next tick.
            return (samples[#"chorus_tokens_generated_total{role="generator"}"#] ?? 0) > 0
                && (samples[#"chorus_prompt_tokens_total{role="critic"}"#] ?? 0) > 0
                && ["generator", "verifier", "refiner", "critic"].allSatisfy { samples[#"chorus_workers{role="\#($0)",state="idle"}"#] == 1 }
        }, "\(text)")
        #expect(samples["chorus_jobs_accepted_total"] == 1 && samples["chorus_jobs_done_total"] == 1, "\(text)")
        #expect(samples["chorus_jobs_failed_total"] == nil || samples["chorus_jobs_failed_total"] == 0)
        for role in ["generator", "verifier", "refiner", "critic"] {
            let count = samples[#"chorus_stage_seconds_count{role="\#(role)"}"#] ?? 0
            #expect(count >= 1, "\(role): \(text)")
            #expect(samples[#"chorus_stage_seconds_bucket{role="\#(role)",le="+Inf"}"#] == count)
            #expect(samples[#"chorus_workers{role="\#(role)",state="idle"}"#] == 1, "\(text)")
            #expect(samples[#"chorus_queue_depth{role="\#(role)"}"#] == 0)
        }
        let generated = job.stages.filter { $0.role == .generator }.compactMap { $0.result?.completionTokens }.reduce(0, +)
        #expect(samples[#"chorus_tokens_generated_total{role="generator"}"#] == Double(generated), "\(text)")
        #expect((samples[#"chorus_prompt_tokens_total{role="critic"}"#] ?? 0) > 0)
        #expect(samples[#"chorus_prompt_tokens_reused_total{role="generator"}"#] != nil)
        #expect((samples[#"chorus_bus_messages_total{socket="frontend"}"#] ?? 0) >= 3)
        #expect((samples[#"chorus_bus_messages_total{socket="backend"}"#] ?? 0) >= 8)
        #expect(samples[#"chorus_bad_messages_total{socket="frontend"}"#] == 1, "\(text)")

        // The parser is not a rubber stamp.
        #expect(throws: ParseError.self) { try Self.parse("# TYPE x counter\nx{a=b} 1\n") }
        #expect(throws: ParseError.self) { try Self.parse("y 1\n") }
    }

    @Test("a metrics address that is taken or malformed stops the broker at start with a message saying what to do")
    func badAddress() throws {
        let reservation = try PortReservation(), port = reservation.port
        let first = try Cluster(extra: ["CHORUS_METRICS": "127.0.0.1:\(port)"])
        try first.startBroker()
        reservation.release()
        let second = try Cluster(extra: ["CHORUS_METRICS": "127.0.0.1:\(port)"])
        #expect(throws: ClusterError.self) { try second.startBroker() }
        #expect(second.log("broker.log").contains("cannot serve metrics on 127.0.0.1:\(port)"), "\(second.logs)")
        let third = try Cluster(extra: ["CHORUS_METRICS": "everywhere"])
        #expect(throws: ClusterError.self) { try third.startBroker() }
        #expect(third.log("broker.log").contains("CHORUS_METRICS=everywhere is invalid"), "\(third.logs)")
    }
}
