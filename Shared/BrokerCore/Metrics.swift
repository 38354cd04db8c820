import CoreMetrics
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceKit

/// The broker's metrics, through swift-metrics into a Prometheus registry,
/// served as Prometheus text at `/metrics` by a small HTTP listener
/// (Hummingbird) on its own threads. Counters and histograms are updated
/// where things happen; gauges (queues, workers) once per heartbeat tick.
public final class BrokerMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private var counters: [String: Metrics.Counter] = [:]
    private var timers: [String: Metrics.Timer] = [:]
    private var gauges: [String: Metrics.Gauge] = [:]
    /// Gauge series set at the last tick, so that one that disappeared goes to 0.
    private var lastGaugeKeys: Set<String> = []

    /// Bootstraps swift-metrics with this registry (once per process).
    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        let stageBuckets: [Duration] = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300].map { .milliseconds(Int64($0 * 1000)) }
        factory.durationHistogramBuckets = ["chorus_stage_seconds": stageBuckets, "chorus_request_seconds": stageBuckets]
        MetricsSystem.bootstrap(factory)
    }

    private static func key(_ label: String, _ dimensions: [(String, String)]) -> String {
        label + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
    }

    func count(_ label: String, _ dimensions: [(String, String)] = [], by amount: Int = 1) {
        let k = Self.key(label, dimensions)
        let c = counters[k] ?? Metrics.Counter(label: label, dimensions: dimensions)
        counters[k] = c
        c.increment(by: amount)
    }

    func time(_ label: String, _ dimensions: [(String, String)], seconds: Double) {
        let k = Self.key(label, dimensions)
        let t = timers[k] ?? Metrics.Timer(label: label, dimensions: dimensions)
        timers[k] = t
        t.recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    /// Sets every series of the gauges given; those set last time and not now go to 0.
    func setGauges(_ values: [(label: String, dimensions: [(String, String)], value: Double)]) {
        var now: Set<String> = []
        for v in values {
            let k = Self.key(v.label, v.dimensions)
            let g = gauges[k] ?? Metrics.Gauge(label: v.label, dimensions: v.dimensions)
            gauges[k] = g
            g.record(v.value)
            now.insert(k)
        }
        for k in lastGaugeKeys.subtracting(now) { gauges[k]?.record(0) }
        lastGaugeKeys = now
    }

    // MARK: The listener

    /// Starts serving `/metrics` on `host:port`; throws if it cannot listen
    /// there within 10 s (the port taken, say).
    func serve(host: String, port: Int) throws {
        let router = Hummingbird.Router()
        let registry = self.registry
        router.get("metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        var logger = Logger(label: "chorus-broker.metrics")
        logger.logLevel = .warning
        try ServiceBoot.listen("metrics", host: host, port: port, fix: "set CHORUS_METRICS to a free address, or to off") { ready in
            let app = Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "chorus-broker"),
                                  onServerRunning: { _ in ready(nil) }, logger: logger)
            Task.detached {
                do { try await app.run() } catch { ready(error) }
            }
        }
    }

    /// Parses CHORUS_METRICS: `host:port`, or `off`.
    public static func address(_ text: String) throws -> (host: String, port: Int)? {
        if text == "off" { return nil }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            throw MetricsError("CHORUS_METRICS=\(text) is invalid: expected host:port (e.g. 127.0.0.1:9464) or off")
        }
        return (String(text[..<colon]), port)
    }
}

struct MetricsError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
