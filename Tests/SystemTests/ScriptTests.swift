import Foundation
import ServiceKit
import TestKit
import Testing

/// The shell scripts users run: each one parses, the deploy scripts explain
/// themselves with --help without starting anything, and their failure paths
/// say what is wrong with a non-zero exit.
@Suite("deploy and benchmark scripts", .serialized)
struct ScriptTests {
    /// Runs a script to its end (at most 5 minutes); its exit status and output
    /// (standard output and error together). With `environment`, the CHORUS_
    /// variables of the test's own environment are left out.
    func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
             timeout: Double = 300) throws -> (status: Int32, output: String) {
        let r = try Program.run(executable, arguments, environment: environment, clearChorusVariables: !environment.isEmpty,
                                mergeOutput: true, timeout: timeout)
        return (r.status, r.output)
    }

    func scripts(_ folder: String) throws -> [String] {
        let dir = Paths.repositoryRoot.appendingPathComponent(folder)
        return try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sh") }.sorted()
            .map { dir.appendingPathComponent($0).path }
    }

    @Test("every shell script parses (bash -n)")
    func parse() throws {
        let all = try scripts("deploy") + scripts("scripts") + [Paths.repositoryRoot.appendingPathComponent(".ci/run").path]
        #expect(all.count >= 8)
        for path in all {
            let r = try run("/bin/bash", ["-n", path])
            #expect(r.status == 0, "\(path): \(r.output)")
        }
    }

    @Test("every script with a #! line is executable (a script that runs another calls it by its path)")
    func executable() throws {
        var found = 0
        for folder in ["deploy", "scripts", "scripts/train"] {
            let dir = Paths.repositoryRoot.appendingPathComponent(folder)
            for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) where name.hasSuffix(".sh") || name.hasSuffix(".py") {
                let path = dir.appendingPathComponent(name).path
                guard let handle = FileHandle(forReadingAtPath: path) else { continue }
                let start = handle.readData(ofLength: 2)
                try handle.close()
                guard start == Data("#!".utf8) else { continue }
                found += 1
                #expect(FileManager.default.isExecutableFile(atPath: path), "\(folder)/\(name) has a #! line but is not executable")
            }
        }
        #expect(found >= 10)
    }

    @Test("deploy scripts print their help")
    func help() throws {
        for name in ["setup.sh", "up.sh", "down.sh", "demo.sh", "status.sh", "scale.sh", "logs.sh"] {
            let path = Paths.repositoryRoot.appendingPathComponent("deploy/\(name)").path
            let r = try run(path, ["--help"])
            #expect(r.status == 0 && r.output.count > 20, "\(name) --help: \(r.status) \(r.output)")
        }
    }

    /// A deploy script run against a private, empty deployment: its own state
    /// folder and a config whose broker endpoints nothing listens on.
    static let deployment = URL(fileURLWithPath: "/tmp").appendingPathComponent("cs-scripts-\(getpid())")

    func deploy(_ name: String, _ arguments: [String], extra: [String: String] = [:]) throws -> (status: Int32, output: String) {
        let dir = Self.deployment
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = dir.appendingPathComponent("chorus.conf").path
        try """
            CHORUS_FRONTEND=ipc://\(dir.path)/front
            CHORUS_BACKEND=ipc://\(dir.path)/back
            CHORUS_EVENTS=ipc://\(dir.path)/events
            CHORUS_METRICS=off
            CHORUS_GATEWAY=off
            """.write(toFile: config, atomically: true, encoding: .utf8)
        // The binaries under test, never a build from inside the test run (the build folder is locked).
        var env = ["CHORUS_CONFIG": config, "CHORUS_VAR": dir.appendingPathComponent("var").path, "CHORUS_BIN": Paths.binaries.path,
                   "CHORUS_NO_BUILD": "1"]
        for (k, v) in extra { env[k] = v }
        return try run(Paths.repositoryRoot.appendingPathComponent("deploy/\(name)").path, arguments, environment: env)
    }

    @Test("deploy scripts' failure paths: unknown role, bad N, no broker, no model, unknown option")
    func failurePaths() throws {
        defer { try? FileManager.default.removeItem(at: Self.deployment) }
        func expectFailure(_ r: (status: Int32, output: String), _ message: String, _ what: String,
                           sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == 1 && r.output.contains(message), "\(what): exit \(r.status), \(r.output)", sourceLocation: sourceLocation)
        }
        expectFailure(try deploy("scale.sh", ["wizard", "1"]),
                      "scale.sh: error: unknown role 'wizard' (roles: kvindex memory generator verifier refiner critic echo)", "scale.sh wizard 1")
        expectFailure(try deploy("scale.sh", ["generator", "many"]), "scale.sh: error: N must be a number of workers, got 'many'", "bad N")
        expectFailure(try deploy("scale.sh", ["generator", "-1"]), "N must be a number of workers, got '-1'", "negative N")
        expectFailure(try deploy("scale.sh", ["generator"]), "N must be a number of workers, got ''", "missing N")
        expectFailure(try deploy("scale.sh", ["kvindex", "2"]), "run at most one kvindex per KVINDEX_DIRECTORY", "two kvindexes")
        let usage = try deploy("scale.sh", [])
        #expect(usage.status != 0 && usage.output.contains("deploy/scale.sh ROLE N"), "scale.sh without arguments: \(usage.output)")
        expectFailure(try deploy("logs.sh", ["wizard"]), "logs.sh: error: unknown role 'wizard' (broker, kvindex", "logs.sh wizard")
        expectFailure(try deploy("logs.sh", ["critic"]), "logs.sh: error: no logs for critic in", "logs.sh with no logs")
        expectFailure(try deploy("up.sh", [], extra: ["CHORUS_MODEL": "/no/such/model.gguf"]),
                      "up.sh: error: no model at /no/such/model.gguf for the generator workers; run deploy/setup.sh first", "up.sh without a model")
        expectFailure(try deploy("setup.sh", ["--frobnicate"]), "setup: error: unknown option '--frobnicate' (try --help)", "setup.sh option")

        // No broker: status says where it looked and how to start one.
        let status = try deploy("status.sh", [])
        expectFailure(status, "broker     not running", "status.sh, no broker")
        #expect(status.output.contains("no reply from the broker at ipc://") && status.output.contains("is it running? (start it with deploy/up.sh)"),
                "\(status.output)")
        // Scaling to zero with no broker is fine and says there is none; stopping nothing is fine.
        let scaled = try deploy("scale.sh", ["generator", "0"])
        #expect(scaled.status == 0 && scaled.output.contains("note: no broker is running here (deploy/up.sh starts one)")
                && scaled.output.contains("generator: 0 worker(s) running"), "\(scaled.output)")
        let down = try deploy("down.sh", [])
        #expect(down.status == 0 && down.output.contains("Chorus is down"), "\(down.output)")
    }

    @Test("the deploy scripts read the config as the services do: quoted values whole ('#' and '=' in keys survive), ' #' comments")
    func configLikeTheServices() throws {
        defer { try? FileManager.default.removeItem(at: Self.deployment) }
        try FileManager.default.createDirectory(at: Self.deployment, withIntermediateDirectories: true)
        let text = """
            # a comment
            CS_KEY="rq:/x#y=z=w#"
            CS_TRAILING=abc=
            CS_COMMENTED=value # a comment
            CS_HASH=a#b
              export CS_SINGLE='q # r'
            CS_SPACED = spaced\u{20}\u{20}
            CS_EMPTY=
            """
        let config = Self.deployment.appendingPathComponent("parse.conf")
        try text.write(to: config, atomically: true, encoding: .utf8)
        let keys = ["CS_KEY", "CS_TRAILING", "CS_COMMENTED", "CS_HASH", "CS_SINGLE", "CS_SPACED", "CS_EMPTY"]
        let script = "source \(Paths.repositoryRoot.path)/deploy/lib.sh; for k in \(keys.joined(separator: " ")); do printf '%s=%s\\n' \"$k\" \"${!k}\"; done"
        let r = try run("/bin/bash", ["-c", script], environment: ["CHORUS_CONFIG": config.path,
                                                                   "CHORUS_VAR": Self.deployment.appendingPathComponent("var").path,
                                                                   "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"])
        #expect(r.status == 0, "\(r.output)")
        var fromScripts: [String: String] = [:]
        for line in r.output.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            fromScripts[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        let fromServices = try Configuration.parse(text)
        for key in keys { #expect(fromScripts[key] == fromServices[key], "\(key): scripts \(fromScripts[key] ?? "nil"), services \(fromServices[key] ?? "nil")") }
        #expect(fromServices["CS_KEY"] == "rq:/x#y=z=w#" && fromServices["CS_TRAILING"] == "abc=" && fromServices["CS_COMMENTED"] == "value")
    }

    @Test("up.sh stops at once, saying why, when the broker cannot bind its endpoint (another program holds the port)")
    func upWithPortTaken() throws {
        defer { try? FileManager.default.removeItem(at: Self.deployment) }
        // A listening socket on a free port, standing for another Chorus.
        let holder = try ListeningSocket()
        let port = holder.port
        let settings = ["CHORUS_FRONTEND": "tcp://127.0.0.1:\(port)", "KVINDEX_WORKERS": "0", "MEMORY_WORKERS": "0",
                        "CHORUS_JOURNAL": Self.deployment.appendingPathComponent("journal.sqlite").path]
        defer { _ = try? deploy("down.sh", [], extra: settings) }
        let start = Date()
        let up = try deploy("up.sh", [], extra: settings)
        #expect(up.status == 1 && up.output.contains("up.sh: error: the broker exited at start:")
                && up.output.contains("Address already in use") && up.output.contains("another Chorus using the same endpoints?"), "\(up.output)")
        #expect(!up.output.contains("workers registered") && Date().timeIntervalSince(start) < 30)
    }

    @Test("up.sh fails at once, naming the role, the file and the reason, when a worker's model does not load")
    func upWithBrokenModel() throws {
        defer { try? FileManager.default.removeItem(at: Self.deployment) }
        try FileManager.default.createDirectory(at: Self.deployment, withIntermediateDirectories: true)
        let broken = Self.deployment.appendingPathComponent("broken.gguf").path
        try Data("GGUF but nothing after".utf8).write(to: URL(fileURLWithPath: broken))
        let settings = ["GENERATOR_MODEL": broken, "KVINDEX_WORKERS": "0", "MEMORY_WORKERS": "0",
                        "CHORUS_JOURNAL": Self.deployment.appendingPathComponent("journal.sqlite").path]
        defer { _ = try? deploy("down.sh", [], extra: settings) }
        let start = Date()
        let up = try deploy("up.sh", [], extra: settings)
        #expect(up.status == 1 && up.output.contains("up.sh: error: the generator worker exited before registering: cannot load the generator model \(broken): "),
                "\(up.output)")
        #expect(Date().timeIntervalSince(start) < 60, "no long wait for a worker that is gone")
        let scale = try deploy("scale.sh", ["generator", "1"], extra: settings)
        #expect(scale.status == 1 && scale.output.contains("cannot load the generator model \(broken)"), "\(scale.output)")
        let missing = try deploy("scale.sh", ["critic", "1"], extra: ["CRITIC_MODEL": "/no/such/critic.gguf"])
        #expect(missing.status == 1 && missing.output.contains("no model at /no/such/critic.gguf for the critic workers"), "\(missing.output)")
    }

    @Test("down.sh never kills a process that only reuses a stale pid file's pid; workers started at once by two scripts take different indexes")
    func pidFiles() throws {
        defer { try? FileManager.default.removeItem(at: Self.deployment) }
        let runDir = Self.deployment.appendingPathComponent("var/run")
        try FileManager.default.createDirectory(at: runDir, withIntermediateDirectories: true)
        // Another program now has the pid a stale file names.
        let bystander = Process()
        bystander.executableURL = URL(fileURLWithPath: "/bin/sleep")
        bystander.arguments = ["60"]
        try bystander.run()
        defer { if bystander.isRunning { bystander.terminate() } }
        try "\(bystander.processIdentifier)\n".write(to: runDir.appendingPathComponent("generator-1.pid"), atomically: true, encoding: .utf8)
        try "\(bystander.processIdentifier) 12345\n".write(to: runDir.appendingPathComponent("critic-1.pid"), atomically: true, encoding: .utf8)
        let down = try deploy("down.sh", [])
        #expect(down.status == 0 && bystander.isRunning, "down.sh killed pid \(bystander.processIdentifier), which is not a Chorus process: \(down.output)")
        #expect(!FileManager.default.fileExists(atPath: runDir.appendingPathComponent("generator-1.pid").path), "the stale pid file is removed")
        // Two scripts start an echo worker each, at once: two indexes, two processes.
        let script = """
            source \(Paths.repositoryRoot.path)/deploy/lib.sh
            start_worker echo & start_worker echo & wait
            ls "$RUN"
            """
        let config = Self.deployment.appendingPathComponent("chorus.conf").path
        try "CHORUS_FRONTEND=ipc://\(Self.deployment.path)/front\nCHORUS_BACKEND=ipc://\(Self.deployment.path)/back\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let env = ["CHORUS_CONFIG": config, "CHORUS_VAR": Self.deployment.appendingPathComponent("var").path, "CHORUS_BIN": Paths.binaries.path,
                   "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        let started = try run("/bin/bash", ["-c", script], environment: env)
        defer { _ = try? run(Paths.repositoryRoot.appendingPathComponent("deploy/down.sh").path, [], environment: env) }
        let files = started.output.split(separator: "\n").filter { $0.hasPrefix("echo-") && $0.hasSuffix(".pid") }
        #expect(Set(files) == ["echo-1.pid", "echo-2.pid"], "\(started.output)")
        let pids = try files.map { try String(contentsOf: runDir.appendingPathComponent(String($0)), encoding: .utf8).split(separator: " ").first.map(String.init) ?? "" }
        #expect(Set(pids).count == 2 && pids.allSatisfy { Int($0) != nil }, "\(pids)")
    }

    @Test("an unknown refinement policy (CHORUS_REFINE) is refused at start, naming the ones there are")
    func unknownRefinePolicy() throws {
        defer { try? FileManager.default.removeItem(at: Self.deployment) }
        try FileManager.default.createDirectory(at: Self.deployment, withIntermediateDirectories: true)
        let config = Self.deployment.appendingPathComponent("chorus.conf").path
        try """
            CHORUS_FRONTEND=ipc://\(Self.deployment.path)/front
            CHORUS_BACKEND=ipc://\(Self.deployment.path)/back
            CHORUS_EVENTS=ipc://\(Self.deployment.path)/events
            CHORUS_JOURNAL=\(Self.deployment.path)/journal.sqlite
            CHORUS_METRICS=off
            CHORUS_REFINE=sometimes
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let refused = try Program.run(Paths.binary("chorus-broker"), ["--config", config], clearChorusVariables: true, mergeOutput: true, timeout: 30)
        #expect(refused.status != 0 && refused.output.contains("CHORUS_REFINE is 'sometimes'; it takes always or checked"), "\(refused.output)")
    }

    @Test("the broker refuses to serve the network without CURVE, saying what to set, unless CHORUS_INSECURE=1")
    func exposedBroker() throws {
        defer { try? FileManager.default.removeItem(at: Self.deployment) }
        try FileManager.default.createDirectory(at: Self.deployment, withIntermediateDirectories: true)
        let port = try PortReservation()
        let config = Self.deployment.appendingPathComponent("chorus.conf").path
        try """
            CHORUS_FRONTEND=tcp://0.0.0.0:\(port.port)
            CHORUS_BACKEND=ipc://\(Self.deployment.path)/back
            CHORUS_EVENTS=ipc://\(Self.deployment.path)/events
            CHORUS_JOURNAL=\(Self.deployment.path)/journal.sqlite
            CHORUS_METRICS=off
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let refused = try Program.run(Paths.binary("chorus-broker"), ["--config", config], clearChorusVariables: true, mergeOutput: true, timeout: 30)
        #expect(refused.status != 0 && refused.output.contains("tcp://0.0.0.0:\(port.port) can be reached from the network")
                && refused.output.contains("CHORUS_INSECURE=1"), "\(refused.output)")
        port.release()
        let allowed = Process()
        allowed.executableURL = URL(fileURLWithPath: Paths.binary("chorus-broker"))
        allowed.arguments = ["--config", config]
        allowed.environment = ["CHORUS_INSECURE": "1"]
        allowed.standardOutput = FileHandle.nullDevice
        allowed.standardError = FileHandle.nullDevice
        try allowed.run()
        Thread.sleep(forTimeInterval: 1)
        #expect(allowed.isRunning, "with CHORUS_INSECURE=1 the broker serves")
        allowed.terminate()
        try allowed.exitStatus(within: 10, "the broker after SIGTERM")
    }

    @Test("the systemd units run as an unprivileged user with the filesystem read-only but for their state")
    func systemdUnits() throws {
        let dir = Paths.inRepository("deploy/systemd")
        let units = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".service") }
        #expect(units.count == 3)
        for unit in units {
            let text = try String(contentsOf: dir.appendingPathComponent(unit), encoding: .utf8)
            for line in ["User=chorus", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "StateDirectory=chorus"] {
                #expect(text.contains("\n" + line + "\n"), "\(unit) lacks \(line)")
            }
        }
    }
}
