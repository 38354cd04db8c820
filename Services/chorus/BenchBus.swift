import ArgumentParser
import Bus
import Client
import Foundation
import Protocol
import ServiceKit

struct BenchBus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-bus",
        abstract: "Measure the bus: request round trips through the broker to echo workers, or raw libzmq.",
        discussion: """
            Through the broker (the default), requests go client -> broker -> echo worker -> \
            broker -> client as protocol messages; start the broker and echo workers first \
            (deploy/scale.sh echo N). With --raw, a DEALER talks to a ROUTER that echoes in \
            this process over tcp loopback: the anchor. Latency is measured one request at a \
            time (p50, p99 of --requests round trips); throughput with --window requests in \
            flight. Prints JSON with --json.
            """
    )

    @Flag(help: "Measure raw libzmq DEALER to ROUTER instead of the broker.")
    var raw = false

    @Option(help: ArgumentHelp("Round trips for the latency test and for the throughput test.", valueName: "n"))
    var requests: Int = 20000

    @Option(help: ArgumentHelp("Requests in the throughput test (default: --requests).", valueName: "n"))
    var throughputRequests: Int?

    @Option(help: ArgumentHelp("Requests in flight in the throughput test.", valueName: "n"))
    var window: Int = 32

    @Option(help: ArgumentHelp("Payload size in bytes.", valueName: "n"))
    var payloadBytes: Int = 64

    @OptionGroup var bus: BusOptions

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        if requests < 100 { throw ValidationError("--requests must be at least 100") }
        if let t = throughputRequests, t < 100 { throw ValidationError("--throughput-requests must be at least 100") }
        // Above the sockets' high-water mark (1000 messages), a ROUTER drops replies and the test would wait for ever.
        if window < 1 || window > 1000 { throw ValidationError("--window must be between 1 and 1000 (the sockets' high-water mark)") }
    }

    /// One round-trip channel: send a message with a tag, receive replies with their tags.
    protocol Channel {
        func send(tag: Int) throws
        func receive() throws -> Int
    }

    final class RawChannel: Channel {
        let context = BusContext()
        let client: BusSocket
        let server: BusSocket
        let payload: Data
        var stop = false
        init(payloadBytes: Int) throws {
            server = try BusSocket(context, .router)
            try server.bind("tcp://127.0.0.1:*")
            client = try BusSocket(context, .dealer)
            try client.connect(server.lastEndpoint)
            payload = Data(repeating: 120, count: payloadBytes)
            let server = self.server
            let thread = Thread {
                while let frames = try? server.receive() { _ = try? server.send(frames) }
            }
            thread.start()
        }
        deinit { context.shutdown() }
        func send(tag: Int) throws { try client.send([withUnsafeBytes(of: tag) { Data($0) }, payload]) }
        func receive() throws -> Int {
            guard let frames = try client.receive(timeout: 30) else { throw CLIError("no reply within 30 s from the echoing ROUTER") }
            return frames[0].withUnsafeBytes { $0.loadUnaligned(as: Int.self) }
        }
    }

    final class BrokerChannel: Channel {
        let client: BusClient
        let header = Header(.request, role: "echo").frame
        /// The payload as JSON: a string of `payloadBytes` bytes, quotes included.
        let payloadJSON: Data
        init(client: BusClient, payloadBytes: Int) {
            self.client = client
            payloadJSON = Data(("\"" + String(repeating: "x", count: max(0, payloadBytes - 2)) + "\"").utf8)
        }
        func send(tag: Int) throws {
            try client.socket.send([header, Data(#"{"request_id":"\#(tag)","payload":"#.utf8) + payloadJSON + Data("}".utf8)])
        }
        func receive() throws -> Int {
            guard let frames = try client.socket.receive(timeout: 30) else {
                throw CLIError("no reply within 30 s; are echo workers running? (deploy/scale.sh echo 1)")
            }
            let e = try Envelope(frames: frames)
            if e.header.command == .error { throw CLIError("error reply: \(try e.decode(ErrorBody.self).message)") }
            try e.require("result")
            return Int(try e.requiredString("request_id")) ?? -1
        }
    }

    func run() throws {
        let channel: Channel
        var workers = 0
        if raw {
            channel = try RawChannel(payloadBytes: payloadBytes)
        } else {
            let client = try bus.client()
            let status: StatusBody
            do { status = try client.status() } catch { throw CLIError("\(error)") }
            workers = status.workers.filter { $0.role == .echo }.count
            guard workers > 0 else { throw CLIError("no echo worker is registered; start some with deploy/scale.sh echo 2") }
            channel = BrokerChannel(client: client, payloadBytes: payloadBytes)
        }
        // Warm-up.
        for i in 0..<200 { try channel.send(tag: i); _ = try channel.receive() }
        // Latency: one at a time.
        var samples: [Double] = []
        samples.reserveCapacity(requests)
        for i in 0..<requests {
            let t = DispatchTime.now().uptimeNanoseconds
            try channel.send(tag: i)
            let tag = try channel.receive()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t) / 1000)
            if tag != i { throw CLIError("reply \(tag) for request \(i)") }
        }
        samples.sort()
        let p50 = samples[samples.count / 2], p99 = samples[samples.count * 99 / 100]
        // Throughput: `window` in flight.
        let total = throughputRequests ?? requests
        let start = DispatchTime.now().uptimeNanoseconds
        var sent = 0, received = 0
        while sent < min(window, total) { try channel.send(tag: sent); sent += 1 }
        while received < total {
            _ = try channel.receive()
            received += 1
            if sent < total { try channel.send(tag: sent); sent += 1 }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let throughput = Double(total) / seconds
        if json {
            try printJSON(["mode": raw ? "raw" : "broker", "echo_workers": workers, "requests": requests, "window": window,
                           "payload_bytes": payloadBytes, "p50_us": round(p50, 1), "p99_us": round(p99, 1),
                           "requests_per_second": round(throughput, 0)])
        } else {
            writeOut(String(format: "%@: p50 %.1f us, p99 %.1f us one at a time; %.0f requests/s with %d in flight\n",
                            raw ? "raw libzmq DEALER-ROUTER" : "broker, \(workers) echo worker(s)", p50, p99, throughput, window))
        }
    }
}
