import Foundation
import ServiceKit
import Testing

@Suite("Configuration files and environment overrides")
struct ConfigurationTests {
    func write(_ text: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-config-\(UUID().uuidString)/deploy")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("chorus.conf").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("quotes, comments, '#' inside values, export and blank lines")
    func parsing() throws {
        let values = try Configuration.parse("""
            # a comment
            PLAIN=value
              SPACED  =  two words   # a comment after a value
            DOUBLE="quoted # not a comment"
            SINGLE='also # kept'
            HASH=abc#def
            KEY=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]y#f7
            export EXPORTED=yes

            EMPTY=
            EQUALS=a=b=c
            QUOTED_EMPTY=""
            """)
        #expect(values == ["PLAIN": "value", "SPACED": "two words", "DOUBLE": "quoted # not a comment", "SINGLE": "also # kept",
                           "HASH": "abc#def", "KEY": "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]y#f7", "EXPORTED": "yes", "EMPTY": "",
                           "EQUALS": "a=b=c", "QUOTED_EMPTY": ""])
    }

    @Test("a service pointed at a broker on another host reaches that host's frontend; other frontends are kept")
    func frontendBesideBackend() {
        #expect(BusSettings.frontend("tcp://127.0.0.1:5555", besideBackend: "tcp://10.1.2.3:5556") == "tcp://10.1.2.3:5555")
        #expect(BusSettings.frontend("tcp://localhost:7000", besideBackend: "tcp://broker.example:7001") == "tcp://broker.example:7000")
        #expect(BusSettings.frontend("tcp://*:5555", besideBackend: "tcp://10.1.2.3:5556") == "tcp://10.1.2.3:5555")
        // A frontend on a named host, a local broker, or another transport: as configured.
        #expect(BusSettings.frontend("tcp://10.9.9.9:5555", besideBackend: "tcp://10.1.2.3:5556") == "tcp://10.9.9.9:5555")
        #expect(BusSettings.frontend("tcp://127.0.0.1:5555", besideBackend: "tcp://127.0.0.1:6000") == "tcp://127.0.0.1:5555")
        #expect(BusSettings.frontend("ipc:///tmp/front", besideBackend: "tcp://10.1.2.3:5556") == "ipc:///tmp/front")
        #expect(BusSettings.frontend("tcp://127.0.0.1:5555", besideBackend: "ipc:///tmp/back") == "tcp://127.0.0.1:5555")
    }

    @Test("a line that is not KEY=VALUE is an error naming the file and line")
    func syntaxErrors() {
        func error(_ text: String) -> String? {
            do { _ = try Configuration.parse(text, path: "c.conf"); return nil } catch { return "\(error)" }
        }
        #expect(error("A=1\njust words\n") == "c.conf:2: expected KEY=VALUE, found 'just words'")
        #expect(error("=value") == "c.conf:1: expected KEY=VALUE, found '=value'")
        #expect(error("A=1\n\nBAD-KEY=2") == "c.conf:3: expected KEY=VALUE, found 'BAD-KEY=2'")
        #expect(throws: Configuration.Error.self) { try Configuration(path: "/no/such/chorus.conf", environment: [:]) }
    }

    @Test("environment variables override the file: CHORUS_ and role keys, and keys the file names")
    func environmentOverrides() throws {
        let path = try write("CHORUS_QUEUE_TIMEOUT=60\nGENERATOR_THREADS=1\nCUSTOM=file\nCHORUS_FRONTEND=tcp://127.0.0.1:5555\n")
        let c = try Configuration(path: path, environment: [
            "CHORUS_QUEUE_TIMEOUT": "5", "GENERATOR_THREADS": "2", "CUSTOM": "env", "VERIFIER_MODEL": "m.gguf",
            "CHORUS_NEW": "x", "HOME": "/root", "PATH": "/bin", "chorus_lower": "no", "Generator_Mixed": "no",
        ])
        #expect(try c.double("CHORUS_QUEUE_TIMEOUT", default: 1) == 5)
        #expect(try c.int("GENERATOR_THREADS", default: 1) == 2)
        #expect(c.string("CUSTOM", default: "") == "env", "a key the file names may be overridden")
        #expect(c.optionalString("VERIFIER_MODEL") == "m.gguf", "role keys come from the environment without the file")
        #expect(c.optionalString("CHORUS_NEW") == "x")
        #expect(c.string("CHORUS_FRONTEND", default: "") == "tcp://127.0.0.1:5555", "the file's value where nothing overrides it")
        #expect(c.values["HOME"] == nil && c.values["PATH"] == nil, "unrelated variables are not settings")
        #expect(c.values["chorus_lower"] == nil && c.values["Generator_Mixed"] == nil)
        // Without a file, only the environment and the defaults apply.
        let bare = try Configuration(path: nil, environment: ["CHORUS_CONFIG": path])
        #expect(bare.path == path, "CHORUS_CONFIG names the file")
    }

    @Test("typed values are checked; relative paths are taken from the folder above the config's")
    func typedValuesAndPaths() throws {
        let path = try write("N=abc\nX=1e999\nOK=7\nREL=var/journal.sqlite\nABS=/tmp/x\nBLANK=\n")
        let c = try Configuration(path: path, environment: [:])
        #expect(throws: Configuration.Error.invalid(key: "N", value: "abc", expected: "an integer")) { try c.int("N", default: 1) }
        #expect(throws: Configuration.Error.self) { try c.double("X", default: 1) }
        #expect(try c.int("OK", default: 1) == 7 && c.string("BLANK", default: "dflt") == "dflt")
        let home = URL(fileURLWithPath: path).deletingLastPathComponent().deletingLastPathComponent().standardizedFileURL.path
        #expect(c.home == home)
        #expect(c.path("REL", default: "") == home + "/var/journal.sqlite")
        #expect(c.path("ABS", default: "") == "/tmp/x")
        #expect(c.path("MISSING", default: "models/m.gguf") == home + "/models/m.gguf")
        let moved = try Configuration(path: path, environment: ["CHORUS_HOME": "/srv/chorus"])
        #expect(moved.path("REL", default: "") == "/srv/chorus/var/journal.sqlite")
    }

    @Test("bus settings: defaults, and heartbeat values out of range are refused")
    func busSettings() throws {
        let defaults = try BusSettings(Configuration(path: try write(""), environment: [:]))
        #expect(defaults.frontend == "tcp://127.0.0.1:5555" && defaults.heartbeatInterval == 1 && defaults.heartbeatLiveness == 3)
        #expect(defaults.curveServerKey == nil)
        for bad in ["CHORUS_HEARTBEAT_INTERVAL=0", "CHORUS_HEARTBEAT_INTERVAL=61", "CHORUS_HEARTBEAT_LIVENESS=0", "CHORUS_HEARTBEAT_INTERVAL=soon"] {
            #expect(throws: Configuration.Error.self, "\(bad)") { try BusSettings(Configuration(path: try write(bad), environment: [:])) }
        }
        #expect(BusSettings.connectable("tcp://*:5555") == "tcp://127.0.0.1:5555")
        #expect(BusSettings.connectable("tcp://0.0.0.0:7") == "tcp://127.0.0.1:7")
        #expect(BusSettings.connectable("ipc:///tmp/x") == "ipc:///tmp/x")
    }
}
