import Foundation

/// Settings from the deployment's config file (`deploy/chorus.conf`, shell
/// syntax: `KEY=VALUE` lines, `#` comments), overridden by environment
/// variables of the same name. Relative paths are taken from `home`: the
/// folder above the config file's folder (the repository for
/// `deploy/chorus.conf`), or `$CHORUS_HOME`.
public struct Configuration: Sendable {
    public private(set) var values: [String: String]
    public let home: String
    public let path: String?

    public enum Error: Swift.Error, CustomStringConvertible, Equatable {
        case unreadable(String)
        case syntax(path: String, line: Int, text: String)
        case invalid(key: String, value: String, expected: String)

        public var description: String {
            switch self {
            case let .unreadable(path): return "cannot read config file \(path)"
            case let .syntax(path, line, text): return "\(path):\(line): expected KEY=VALUE, found '\(text)'"
            case let .invalid(key, value, expected): return "\(key)=\(value) is invalid: expected \(expected)"
            }
        }
    }

    /// Loads `path`, or $CHORUS_CONFIG, or deploy/chorus.conf found from the
    /// current directory or the executable; with no file, only the environment
    /// and the defaults apply.
    public init(path: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let chosen = path ?? environment["CHORUS_CONFIG"] ?? Self.findDefault()
        var values: [String: String] = [:]
        if let chosen {
            guard let data = FileManager.default.contents(atPath: chosen), let text = String(data: data, encoding: .utf8) else {
                throw Error.unreadable(chosen)
            }
            values = try Self.parse(text, path: chosen)
        }
        for (k, v) in environment where k.uppercased() == k && (k.hasPrefix("CHORUS_") || values[k] != nil || Self.isRoleKey(k)) {
            values[k] = v
        }
        self.values = values
        self.path = chosen
        if let h = environment["CHORUS_HOME"], !h.isEmpty {
            home = h
        } else if let chosen {
            home = URL(fileURLWithPath: chosen).standardizedFileURL.deletingLastPathComponent().deletingLastPathComponent().path
        } else {
            home = FileManager.default.currentDirectoryPath
        }
    }

    static func isRoleKey(_ key: String) -> Bool {
        ["GENERATOR_", "VERIFIER_", "REFINER_", "CRITIC_", "MEMORY_", "KVINDEX_", "ECHO_"].contains { key.hasPrefix($0) }
    }

    static func findDefault() -> String? {
        var candidates = [FileManager.default.currentDirectoryPath + "/deploy/chorus.conf"]
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for up in ["../..", "../../..", ".."] {
            candidates.append(exe.appendingPathComponent(up).appendingPathComponent("deploy/chorus.conf").standardizedFileURL.path)
        }
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// Parses KEY=VALUE lines; values may be quoted with '' or "".
    public static func parse(_ text: String, path: String = "config") throws -> [String: String] {
        var out: [String: String] = [:]
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
            guard let eq = line.firstIndex(of: "="), eq != line.startIndex else {
                throw Error.syntax(path: path, line: i + 1, text: line)
            }
            let key = String(line[..<eq]).trimmingCharacters(in: .whitespaces)
            guard key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw Error.syntax(path: path, line: i + 1, text: line)
            }
            var value = String(line[line.index(after: eq)...]).trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let f = value.first, let l = value.last, (f == "\"" && l == "\"") || (f == "'" && l == "'") {
                value = String(value.dropFirst().dropLast())
            } else if let hash = value.range(of: " #") {
                value = String(value[..<hash.lowerBound]).trimmingCharacters(in: .whitespaces)
            }
            out[key] = value
        }
        return out
    }

    public mutating func set(_ key: String, _ value: String?) { values[key] = value }

    public func string(_ key: String, default value: String) -> String {
        if let v = values[key], !v.isEmpty { return v }
        return value
    }

    public func optionalString(_ key: String) -> String? {
        if let v = values[key], !v.isEmpty { return v }
        return nil
    }

    public func int(_ key: String, default value: Int) throws -> Int {
        guard let raw = values[key], !raw.isEmpty else { return value }
        guard let v = Int(raw) else { throw Error.invalid(key: key, value: raw, expected: "an integer") }
        return v
    }

    public func double(_ key: String, default value: Double) throws -> Double {
        guard let raw = values[key], !raw.isEmpty else { return value }
        guard let v = Double(raw), v.isFinite else { throw Error.invalid(key: key, value: raw, expected: "a number") }
        return v
    }

    /// A path setting, made absolute against `home`.
    public func path(_ key: String, default value: String) -> String {
        resolve(string(key, default: value))
    }

    public func resolve(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        return URL(fileURLWithPath: home).appendingPathComponent(path).standardizedFileURL.path
    }
}

/// Endpoints and timings shared by the broker, workers and clients.
public struct BusSettings: Sendable {
    public var frontend: String
    public var backend: String
    public var events: String
    public var heartbeatInterval: Double
    public var heartbeatLiveness: Int
    /// The broker's CURVE public key (CHORUS_CURVE_SERVER_KEY, or the file
    /// CHORUS_CURVE_SERVER_KEY_FILE); when set, clients and workers use CURVE.
    public var curveServerKey: String?
    /// The secret key file a client (the command line, the memory service's
    /// requests) authenticates with (CHORUS_CLIENT_KEY_FILE).
    public var clientKeyFile: String?
    /// The secret key file a worker authenticates with (CHORUS_WORKER_KEY_FILE).
    public var workerKeyFile: String?

    public init(_ c: Configuration) throws {
        frontend = c.string("CHORUS_FRONTEND", default: "tcp://127.0.0.1:5555")
        backend = c.string("CHORUS_BACKEND", default: "tcp://127.0.0.1:5556")
        events = c.string("CHORUS_EVENTS", default: "tcp://127.0.0.1:5557")
        heartbeatInterval = try c.double("CHORUS_HEARTBEAT_INTERVAL", default: 1)
        heartbeatLiveness = try c.int("CHORUS_HEARTBEAT_LIVENESS", default: 3)
        curveServerKey = c.optionalString("CHORUS_CURVE_SERVER_KEY")
        if curveServerKey == nil, let file = c.optionalString("CHORUS_CURVE_SERVER_KEY_FILE") {
            curveServerKey = try KeyFile.read(c.resolve(file), what: "public key file (CHORUS_CURVE_SERVER_KEY_FILE)")
        }
        if let key = curveServerKey, !KeyFile.isKey(key) {
            throw Configuration.Error.invalid(key: "CHORUS_CURVE_SERVER_KEY", value: key, expected: "a 40-character Z85 public key (quote it in the config file)")
        }
        clientKeyFile = c.optionalString("CHORUS_CLIENT_KEY_FILE").map(c.resolve)
        workerKeyFile = c.optionalString("CHORUS_WORKER_KEY_FILE").map(c.resolve)
        if heartbeatInterval <= 0 || heartbeatInterval > 60 {
            throw Configuration.Error.invalid(key: "CHORUS_HEARTBEAT_INTERVAL", value: String(heartbeatInterval), expected: "seconds in (0, 60]")
        }
        if heartbeatLiveness < 1 || heartbeatLiveness > 100 {
            throw Configuration.Error.invalid(key: "CHORUS_HEARTBEAT_LIVENESS", value: String(heartbeatLiveness), expected: "a count in [1, 100]")
        }
    }

    /// The frontend a service started with `--broker BACKEND` reaches (the
    /// memory service sends its kvindex requests there): the broker's own host
    /// with the configured frontend's port, when the configured frontend is
    /// a loopback or wildcard address and the broker is elsewhere; otherwise
    /// the configured frontend.
    public static func frontend(_ configured: String, besideBackend backend: String) -> String {
        func hostAndPort(_ endpoint: String) -> (host: String, port: String)? {
            guard endpoint.hasPrefix("tcp://"), let colon = endpoint.lastIndex(of: ":"), colon > endpoint.index(endpoint.startIndex, offsetBy: 6) else {
                return nil
            }
            return (String(endpoint[endpoint.index(endpoint.startIndex, offsetBy: 6)..<colon]), String(endpoint[endpoint.index(after: colon)...]))
        }
        let local: Set<String> = ["127.0.0.1", "localhost", "[::1]", "*", "0.0.0.0"]
        guard let broker = hostAndPort(backend), !local.contains(broker.host),
              let front = hostAndPort(configured), local.contains(front.host) else { return configured }
        return "tcp://\(broker.host):\(front.port)"
    }

    /// The key pair's secret key this peer authenticates with (from
    /// `clientKeyFile` or `workerKeyFile`), or nil without CURVE. With CURVE on
    /// and no key file, an error that says what to set.
    public func secretKey(asWorker: Bool) throws -> String? {
        guard curveServerKey != nil else { return nil }
        let setting = asWorker ? "CHORUS_WORKER_KEY_FILE" : "CHORUS_CLIENT_KEY_FILE"
        guard let file = asWorker ? workerKeyFile : clientKeyFile else {
            throw KeyFile.Error(message: """
                CURVE is on (CHORUS_CURVE_SERVER_KEY) but \(setting) is not set: make a key with \
                chorus keygen --out PREFIX, set \(setting)=PREFIX.key, and add PREFIX.pub to the broker's \
                \(asWorker ? "CHORUS_WORKER_KEYS" : "CHORUS_CLIENT_KEYS") folder
                """)
        }
        return try KeyFile.read(file, what: "secret key file (\(setting))")
    }

    /// A connectable address for an endpoint a server binds (`tcp://*:5555` becomes `tcp://127.0.0.1:5555`).
    /// Whether a bound endpoint can be reached only from this machine (ipc,
    /// inproc, or tcp on a loopback address); `tcp://*` and routable addresses
    /// can be reached from the network.
    public static func isLocalOnly(_ endpoint: String) -> Bool {
        guard endpoint.hasPrefix("tcp://") else { return true }
        let rest = endpoint.dropFirst(6)
        let host = rest.hasPrefix("[") ? String(rest.prefix { $0 != "]" }.dropFirst()) : String(rest.prefix { $0 != ":" })
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    public static func connectable(_ endpoint: String) -> String {
        endpoint.replacingOccurrences(of: "tcp://*:", with: "tcp://127.0.0.1:")
            .replacingOccurrences(of: "tcp://0.0.0.0:", with: "tcp://127.0.0.1:")
    }
}
