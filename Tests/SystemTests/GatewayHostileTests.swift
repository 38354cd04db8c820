import Foundation
import TestKit
import Testing

/// The gateway as a hostile client sees it, in plain HTTP (exact bytes: paths
/// other clients would clean up, forged Host and Origin headers), against a
/// real cluster with three keys: two tenants and an admin.
@Suite("Gateway under hostile clients", .serialized)
struct GatewayHostileTests {
    struct Setup {
        let cluster: Cluster
        let http: RawHTTP
        let alice: String, bob: String, admin: String
    }

    static func setup(workers: Bool = true, extra: [String: String] = [:]) throws -> Setup {
        let cluster = try Cluster(extra: ["GENERATOR_MAX_TOKENS": "16", "VERIFIER_MAX_TOKENS": "16", "REFINER_MAX_TOKENS": "16"]
            .merging(extra) { $1 })
        try cluster.startBroker()
        if workers { for role in SystemTests.pipelineRoles { try cluster.startWorker(role) } }
        let file = cluster.dir.appendingPathComponent("api-keys").path
        func key(_ name: String, admin: Bool = false) throws -> String {
            let made = try Program.chorus(["apikey", "--file", file, "--name", name] + (admin ? ["--admin"] : []), timeout: 30)
            let key = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            guard made.status == 0, key.hasPrefix("sk-chorus-") else { throw TestKitError("chorus apikey failed: \(made.output)") }
            return key
        }
        let alice = try key("alice"), bob = try key("bob"), admin = try key("ops", admin: true)
        let url = try cluster.startGateway(environment: ["CHORUS_API_KEYS": file])
        guard let port = URL(string: url)?.port else { throw TestKitError("no port in \(url)") }
        if workers { try cluster.waitForWorkers(["generator": 1, "verifier": 1, "refiner": 1, "critic": 1]) }
        return Setup(cluster: cluster, http: RawHTTP(port: port), alice: alice, bob: bob, admin: admin)
    }

    static func bearer(_ key: String) -> [(String, String)] { [("Authorization", "Bearer \(key)")] }
    static let json = [("Content-Type", "application/json")]

    @Test("every route under every other spelling of its path is refused before routing, with or without a key; canonical paths need a key")
    func pathSpellings() throws {
        let s = try Self.setup(workers: false)
        let routes: [(String, String)] = [("GET", "/v1/models"), ("GET", "/v1/status"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/jx"),
                                          ("DELETE", "/v1/jobs/jx"), ("GET", "/v1/jobs/jx/events"), ("POST", "/v1/chat/completions")]
        func spellings(_ path: String) -> [String] {
            let rest = String(path.dropFirst("/v1/".count))
            return ["/" + path, "//" + path.dropFirst(), "///" + path.dropFirst(), "/v1//" + rest, "/./v1/" + rest, "/v1/./" + rest,
                    "/v1/../v1/" + rest, "/x/../v1/" + rest, "/v1%2F" + rest, "/%761/" + rest, "/v1/" + rest.replacingOccurrences(of: "/", with: "%2F"),
                    "/v1\\" + rest].filter { $0 != path }
        }
        let body = Data(#"{"question": "What is 2 + 2?", "model": "chorus", "messages": [{"role": "user", "content": "hi"}]}"#.utf8)
        for (method, path) in routes {
            for spelled in spellings(path) {
                for headers in [[], Self.bearer(s.alice)] {
                    let r = try s.http.send(method, spelled, headers: headers + Self.json, body: method == "POST" ? body : Data())
                    #expect(r.status == 400 && r.body.contains("invalid_path"), "\(method) \(spelled) \(headers.isEmpty ? "without" : "with") a key: \(r)")
                }
            }
            let r = try s.http.send(method, path, headers: Self.json, body: method == "POST" ? body : Data())
            #expect(r.status == 401, "\(method) \(path) without a key: \(r)")
        }
        // The page itself needs no key.
        let page = try s.http.send("GET", "/")
        #expect(page.status == 200 && page.body.contains("<html"), "\(page)")
    }

    @Test("API keys are tenants: another key gets 404 for a job, its events and its cancel, and status lists a key's own jobs; an admin key sees all; idempotency keys are per key and bound to the body")
    func tenants() throws {
        let s = try Self.setup()
        func submit(_ key: String, _ question: String, idempotencyKey: String? = nil) throws -> RawHTTP.Response {
            try s.http.send("POST", "/v1/jobs", headers: Self.bearer(key) + Self.json + (idempotencyKey.map { [("Idempotency-Key", $0)] } ?? []),
                            body: Data(#"{"question": "\#(question)", "rounds": 1, "no_memory": true}"#.utf8))
        }
        let made = try submit(s.alice, "What is 6 times 7?", idempotencyKey: "same-key")
        #expect(made.status == 202, "\(made)")
        let id = try JSONRead.value(try JSONRead.object(made.body), "id", as: String.self)
        for (method, path) in [("GET", "/v1/jobs/\(id)"), ("DELETE", "/v1/jobs/\(id)"), ("GET", "/v1/jobs/\(id)/events")] {
            let theirs = try s.http.send(method, path, headers: Self.bearer(s.bob))
            #expect(theirs.status == 404 && theirs.body.contains("not_found") && !theirs.body.contains("6 times 7"), "bob \(method) \(path): \(theirs)")
        }
        #expect(try s.http.send("GET", "/v1/jobs/\(id)", headers: Self.bearer(s.alice)).status == 200)
        #expect(try s.http.send("GET", "/v1/jobs/\(id)", headers: Self.bearer(s.admin)).status == 200)
        // Status: bob sees neither alice's job nor the workers' hosts; alice sees her job; the admin sees all.
        let bobStatus = try JSONRead.object(try s.http.send("GET", "/v1/status", headers: Self.bearer(s.bob)).body)
        #expect((bobStatus["jobs_in_flight"] as? [String])?.contains(id) == false, "\(bobStatus)")
        let hosts = (try JSONRead.value(bobStatus, "workers", as: [[String: Any]].self)).compactMap { $0["host"] as? String }
        #expect(!hosts.isEmpty && hosts.allSatisfy(\.isEmpty), "hosts shown to a tenant: \(hosts)")
        let adminStatus = try JSONRead.object(try s.http.send("GET", "/v1/status", headers: Self.bearer(s.admin)).body)
        let adminHosts = (try JSONRead.value(adminStatus, "workers", as: [[String: Any]].self)).compactMap { $0["host"] as? String }
        #expect(adminHosts.allSatisfy { !$0.isEmpty }, "\(adminHosts)")
        // The same Idempotency-Key from bob is his own: another job.
        let bobs = try submit(s.bob, "What is 6 times 7?", idempotencyKey: "same-key")
        #expect(bobs.status == 202 && !bobs.body.contains(id), "\(bobs)")
        // Alice again: the same job; with another body: refused.
        let again = try submit(s.alice, "What is 6 times 7?", idempotencyKey: "same-key")
        #expect(again.status == 202 && again.body.contains(id), "\(again)")
        let other = try submit(s.alice, "What is 5 times 5?", idempotencyKey: "same-key")
        #expect(other.status == 422 && other.body.contains("idempotency_key_reused"), "\(other)")
        // The owner can cancel it; the record says whose it is.
        let cancelled = try s.http.send("DELETE", "/v1/jobs/\(id)", headers: Self.bearer(s.alice))
        #expect(cancelled.status == 200 && cancelled.body.contains("\"tenant\":\"alice\""), "\(cancelled)")
    }

    @Test("what a browser can be made to send: a form or text/plain body, another site's Origin, a forged Host (DNS rebinding) are refused")
    func browserBorne() throws {
        let s = try Self.setup(workers: false)
        let body = Data(#"{"question": "What is 2 + 2?"}"#.utf8)
        let plain = try s.http.send("POST", "/v1/jobs", headers: Self.bearer(s.alice) + [("Content-Type", "text/plain")], body: body)
        #expect(plain.status == 415, "\(plain)")
        let form = try s.http.send("POST", "/v1/jobs", headers: Self.bearer(s.alice) + [("Content-Type", "application/x-www-form-urlencoded")], body: body)
        #expect(form.status == 415, "\(form)")
        let none = try s.http.send("POST", "/v1/jobs", headers: Self.bearer(s.alice), body: body)
        #expect(none.status == 415, "\(none)")
        let foreign = try s.http.send("POST", "/v1/jobs", headers: Self.bearer(s.alice) + Self.json + [("Origin", "https://evil.example")], body: body)
        #expect(foreign.status == 403 && foreign.body.contains("cross_origin"), "\(foreign)")
        let rebound = try s.http.send("GET", "/v1/models", headers: Self.bearer(s.alice) + [("Host", "evil.example")])
        #expect(rebound.status == 421, "\(rebound)")
        let reboundPage = try s.http.send("GET", "/", headers: [("Host", "evil.example:\(s.http.port)")])
        #expect(reboundPage.status == 421, "\(reboundPage)")
        // Its own page's origin and its own names are served.
        let own = try s.http.send("GET", "/v1/models", headers: Self.bearer(s.alice) + [("Origin", "http://127.0.0.1:\(s.http.port)")])
        #expect(own.status != 403 && own.status != 421, "\(own)")
        let localhost = try s.http.send("GET", "/", headers: [("Host", "localhost:\(s.http.port)")])
        #expect(localhost.status == 200, "\(localhost)")
    }

    @Test("an oversized request is refused on its own: a small request sent beside it gets its own answer")
    func oversizedBeside() throws {
        let s = try Self.setup()
        let small = Data(#"{"model": "generator", "max_tokens": 4, "seed": 1, "messages": [{"role": "user", "content": "What is 1 + 1?"}]}"#.utf8)
        let huge = Data(#"{"model": "generator", "messages": [{"role": "user", "content": ""#.utf8) + Data(repeating: UInt8(ascii: "a"), count: 1_000_000)
            + Data(#""}]}"#.utf8)
        final class Box: @unchecked Sendable { var small: RawHTTP.Response?; var huge: RawHTTP.Response?; var error: Error? }
        let box = Box(), group = DispatchGroup(), http = s.http, key = s.alice
        for (i, body) in [small, huge].enumerated() {
            group.enter()
            Thread {
                do {
                    let r = try http.send("POST", "/v1/chat/completions", headers: Self.bearer(key) + Self.json, body: body, timeout: 60)
                    if i == 0 { box.small = r } else { box.huge = r }
                } catch { box.error = error }
                group.leave()
            }.start()
        }
        group.wait()
        if let e = box.error { throw e }
        let smallReply = try #require(box.small), hugeReply = try #require(box.huge)
        #expect(smallReply.status == 200 && smallReply.body.contains("chat.completion"), "\(smallReply)")
        #expect(hugeReply.status == 413, "\(hugeReply)")
    }

    @Test("beyond the broker's limits a request is refused 429 with Retry-After, and the client may retry")
    func busy() throws {
        let s = try Self.setup(workers: false, extra: ["CHORUS_MAX_QUEUED_JOBS": "1"])
        let body = Data(#"{"question": "What is 2 + 2?", "no_memory": true}"#.utf8)
        let first = try s.http.send("POST", "/v1/jobs", headers: Self.bearer(s.alice) + Self.json, body: body)
        #expect(first.status == 202, "\(first)")
        let second = try s.http.send("POST", "/v1/jobs", headers: Self.bearer(s.bob) + Self.json, body: body)
        #expect(second.status == 429 && second.header("Retry-After") == "1" && second.header("x-should-retry") == "true", "\(second) \(second.headers)")
    }
}
