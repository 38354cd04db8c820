import Foundation
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
        return (try? runToEnd(python, ["-c", "import \(module)"]))?.status == 0
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
        let made = try runToEnd(Cluster.binaries.appendingPathComponent("chorus"), ["apikey", "--file", keys, "--name", "tests"])
        let key = made.output.split(separator: "\n").last.map(String.init) ?? ""
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
        let script = Cluster.repositoryRoot.appendingPathComponent("scripts/test-gateway-openai.py").path
        let (status, output) = try runToEnd(python, [script, "--url", url, "--key", key, "--keepalive", "0.5"])
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
        let script = Cluster.repositoryRoot.appendingPathComponent("scripts/test-gateway-browser.py").path
        let (status, output) = try runToEnd(python, [script, "--url", url, "--key", key, "--out", shots])
        #expect(status == 0 && output.contains("browser test passed"), "\(output)\n\(cluster.logs)")
        for name in ["web-job.png", "web-workers.png"] {
            let size = (try? FileManager.default.attributesOfItem(atPath: shots + "/" + name)[.size] as? Int) ?? 0
            #expect(size > 10_000, "screenshot \(name) is \(size) bytes")
        }
    }

    @Test("the gateway refuses to start, saying why: its address taken, a routable address without API keys, a key file missing or empty, a bad address")
    func startFailures() throws {
        let cluster = try Cluster()
        let gateway = Cluster.binaries.appendingPathComponent("chorus-gateway")
        func start(_ settings: [String: String]) throws -> (status: Int32, output: String) {
            var args = ["--config", cluster.configPath]
            for (k, v) in settings.sorted(by: { $0.key < $1.key }) { args += [k, v] }
            return try runToEnd(gateway, args)
        }
        // Another program holds the port.
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(holder) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder, $0, length) } }
        _ = listen(holder, 1)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(holder, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let taken = try start(["--address": "127.0.0.1:\(port)"])
        #expect(taken.status == 1 && taken.output.contains("cannot serve on 127.0.0.1:\(port)") && taken.output.contains("set CHORUS_GATEWAY to a free address"),
                "\(taken.output)")
        let open = try start(["--address": "0.0.0.0:\(Cluster.freePort())"])
        #expect(open.status != 0 && open.output.contains("needs API keys: set CHORUS_API_KEYS"), "\(open.output)")
        let missing = try start(["--address": "127.0.0.1:\(Cluster.freePort())", "--api-keys": cluster.dir.path + "/no-such-keys"])
        #expect(missing.status == 1 && missing.output.contains("cannot read the API key file") && missing.output.contains("chorus apikey"), "\(missing.output)")
        let empty = cluster.dir.appendingPathComponent("empty-keys").path
        try "# no keys yet\n".write(toFile: empty, atomically: true, encoding: .utf8)
        let none = try start(["--address": "127.0.0.1:\(Cluster.freePort())", "--api-keys": empty])
        #expect(none.status == 1 && none.output.contains("has no keys"), "\(none.output)")
        let bad = try start(["--address": "localhost"])
        #expect(bad.status != 0 && bad.output.contains("is not host:port"), "\(bad.output)")
    }
}
