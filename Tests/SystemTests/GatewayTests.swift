import Foundation
import TestKit
import Testing

/// The HTTP gateway against a real cluster, through the official `openai`
/// Python client (scripts/test-gateway-openai.py) and the web page in
/// headless Chromium (scripts/test-gateway-browser.py). Where Python with
/// `openai` or Chromium is missing the tests are skipped, except under CI,
/// where deploy/setup.sh installs them and a missing one is a failure.
@Suite("Gateway", .serialized)
struct GatewayTests {
    static let underCI = ProcessInfo.processInfo.environment["CI"] == "true"

    static func python(has module: String) -> Bool {
        guard let python = python3 else { return false }
        return (try? Program.run(python.path, ["-c", "import \(module)"], in: "/", timeout: 60))?.status == 0
    }

    static var python3: URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent("python3") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    static var hasChromium: Bool {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var canRunClient: Bool { underCI || python(has: "openai") }
    static var canRunBrowser: Bool { underCI || (hasChromium && python(has: "websocket")) }

    /// A cluster of the four model roles and a gateway with an API key.
    static func gateway(environment: [String: String] = [:]) throws -> (cluster: Cluster, url: String, key: String) {
        let cluster = try Cluster()
        try cluster.startBroker()
        for role in ["generator", "verifier", "refiner", "critic"] { try cluster.startWorker(role) }
        let keys = cluster.dir.appendingPathComponent("api-keys").path
        let made = try Program.chorus(["apikey", "--file", keys, "--name", "tests"], timeout: 30)
        let key = made.stdout.split(separator: "\n").last.map(String.init) ?? ""
        guard made.status == 0, key.hasPrefix("sk-chorus-") else { throw ClusterError("chorus apikey failed: \(made.output)") }
        let url = try cluster.startGateway(environment: ["CHORUS_API_KEYS": keys].merging(environment) { $1 })
        try cluster.waitForWorkers(["generator": 1, "verifier": 1, "refiner": 1, "critic": 1])
        return (cluster, url, key)
    }

    @Test("the openai client: models, jobs and role requests streamed and not, the jobs API with keep-alives, cancel, every error case, clients leaving mid-stream (a role's request is then cancelled)",
          .enabled(if: canRunClient, "needs python3 with the openai package (deploy/setup.sh installs it)"))
    func openAIClient() throws {
        let python = try #require(Self.python3, "no python3")
        #expect(Self.python(has: "openai"), "the openai Python package is missing: run deploy/setup.sh")
        // Keep-alive comments every half second: the openai client must read past them.
        let (cluster, url, key) = try Self.gateway(environment: ["CHORUS_GATEWAY_KEEPALIVE": "0.5"])
        let script = Paths.repositoryRoot.appendingPathComponent("scripts/test-gateway-openai.py").path
        let run = try Program.run(python.path, [script, "--url", url, "--key", key, "--keepalive", "0.5"], mergeOutput: true, timeout: 900)
        let (status, output) = (run.status, run.output)
        #expect(status == 0 && output.contains("gateway test passed"), "\(output)\n\(cluster.logs)")
        // The role request whose client left was cancelled at the broker, not run to its end.
        #expect(cluster.fullLogs(of: "broker").contains("cancelled by its client"), "\(cluster.logs)")
        // The gateway lived through it all.
        let alive = cluster.workers.allSatisfy { $0.isRunning }
        #expect(alive, "a process died:\n\(cluster.logs)")
    }

    @Test("the web page in headless Chromium: submit a question, the stages stream, the answer, the tree and the timeline appear; the workers view; screenshots",
          .enabled(if: canRunBrowser, "needs chromium and python3 with websocket-client (deploy/setup.sh installs them)"))
    func webPage() throws {
        let python = try #require(Self.python3, "no python3")
        #expect(Self.hasChromium && Self.python(has: "websocket"), "chromium or websocket-client is missing: run deploy/setup.sh")
        let (cluster, url, key) = try Self.gateway()
        let shots = cluster.dir.appendingPathComponent("screenshots").path
        let script = Paths.repositoryRoot.appendingPathComponent("scripts/test-gateway-browser.py").path
        let run = try Program.run(python.path, [script, "--url", url, "--key", key, "--out", shots], mergeOutput: true, timeout: 600)
        let (status, output) = (run.status, run.output)
        #expect(status == 0 && output.contains("browser test passed"), "\(output)\n\(cluster.logs)")
        for name in ["web-job.png", "web-workers.png"] {
            let size = (try? FileManager.default.attributesOfItem(atPath: shots + "/" + name)[.size] as? Int) ?? 0
            #expect(size > 10_000, "screenshot \(name) is \(size) bytes")
        }
    }

    @Test("the gateway refuses to start, saying why: its address taken, a routable address without API keys, a key file missing or empty, a bad address")
    func startFailures() throws {
        let cluster = try Cluster()
        func start(_ settings: [String: String]) throws -> ProgramResult {
            var args = ["--config", cluster.configPath]
            for (k, v) in settings.sorted(by: { $0.key < $1.key }) { args += [k, v] }
            // Each of these must refuse to start: a gateway still running after 30 s is a failure.
            return try Program.run(Paths.binary("chorus-gateway"), args, mergeOutput: true, timeout: 30)
        }
        // Another program holds the port.
        let holder = try ListeningSocket()
        let port = holder.port
        let taken = try start(["--address": "127.0.0.1:\(port)"])
        #expect(taken.status == 1 && taken.output.contains("cannot serve the API on 127.0.0.1:\(port)") && taken.output.contains("set CHORUS_GATEWAY to a free address"),
                "\(taken.output)")
        let spare = try PortReservation()
        let open = try start(["--address": "0.0.0.0:\(spare.port)"])
        #expect(open.status != 0 && open.output.contains("needs API keys: set CHORUS_API_KEYS"), "\(open.output)")
        let missing = try start(["--address": "127.0.0.1:\(spare.port)", "--api-keys": cluster.dir.path + "/no-such-keys"])
        #expect(missing.status == 1 && missing.output.contains("cannot read the API key file") && missing.output.contains("chorus apikey"), "\(missing.output)")
        let empty = cluster.dir.appendingPathComponent("empty-keys").path
        try "# no keys yet\n".write(toFile: empty, atomically: true, encoding: .utf8)
        let none = try start(["--address": "127.0.0.1:\(spare.port)", "--api-keys": empty])
        #expect(none.status == 1 && none.output.contains("has no keys"), "\(none.output)")
        let bad = try start(["--address": "localhost"])
        #expect(bad.status != 0 && bad.output.contains("is not host:port"), "\(bad.output)")
    }
}
