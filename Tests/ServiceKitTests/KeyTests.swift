import Foundation
import ServiceKit
import Testing

@Suite("Key files, allow-lists and rate-limited warnings")
struct KeyTests {
    let dir: URL
    // Z85 keys (40 characters, with '$', '<', '@' and the like in them).
    static let keyA = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    static let keyB = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    static let keyC = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    func write(_ name: String, _ text: String) throws {
        try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8)
    }

    @Test("a key file's first line is its key; anything else is an error that says what to do")
    func keyFiles() throws {
        try write("a.key", Self.keyA + "\n")
        #expect(try KeyFile.read(dir.appendingPathComponent("a.key").path, what: "secret key file") == Self.keyA)
        try write("short.key", "abc\n")
        #expect(throws: KeyFile.Error.self) { try KeyFile.read(dir.appendingPathComponent("short.key").path, what: "secret key file") }
        let missing = dir.appendingPathComponent("none.key").path
        do {
            _ = try KeyFile.read(missing, what: "secret key file")
            Issue.record("a missing file was read")
        } catch {
            #expect(error.description.contains(missing) && error.description.contains("chorus keygen"))
        }
        #expect(KeyFile.isKey(Self.keyB) && !KeyFile.isKey(Self.keyB + "x") && !KeyFile.isKey(String(Self.keyB.dropLast()) + " "))
    }

    @Test("an allow-list holds the folder's .pub files by name, with the roles a key is limited to")
    func allowList() throws {
        try write("host1.pub", Self.keyA + "\n")
        try write("gpu.pub", Self.keyB + "\nroles: generator, refiner\n")
        try write("notes.txt", "not a key file, not read\n")
        let list = try AccessList(folder: dir.path)
        #expect(list.members.count == 2)
        #expect(list.member(forKey: Self.keyA)?.name == "host1" && list.member(forKey: Self.keyA)?.roles == nil)
        let gpu = try #require(list.member(forKey: Self.keyB))
        #expect(gpu.roles == ["generator", "refiner"] && gpu.allows(role: "generator") && !gpu.allows(role: "critic"))
        #expect(list.member(forKey: Self.keyC) == nil)
        // A .pub file that is not a key is refused by name; so is a folder that is not there.
        try write("broken.pub", "hello\n")
        do {
            _ = try AccessList(folder: dir.path)
            Issue.record("a broken key file was accepted")
        } catch {
            #expect(error.description.contains("broken.pub"))
        }
        #expect(throws: KeyFile.Error.self) { try AccessList(folder: dir.appendingPathComponent("nowhere").path) }
    }

    @Test("the broker's public key is read from the config, quoted or from a file; a key that is not one is refused")
    func serverKey() throws {
        try write("broker.pub", Self.keyB + "\n")
        let conf = dir.appendingPathComponent("chorus.conf").path
        try "CHORUS_CURVE_SERVER_KEY=\"\(Self.keyB)\"\n".write(toFile: conf, atomically: true, encoding: .utf8)
        #expect(try BusSettings(Configuration(path: conf, environment: [:])).curveServerKey == Self.keyB)
        try "CHORUS_CURVE_SERVER_KEY_FILE=\(dir.appendingPathComponent("broker.pub").path)\nCHORUS_CLIENT_KEY_FILE=me.key\n"
            .write(toFile: conf, atomically: true, encoding: .utf8)
        let settings = try BusSettings(Configuration(path: conf, environment: [:]))
        #expect(settings.curveServerKey == Self.keyB && settings.clientKeyFile?.hasSuffix("/me.key") == true)
        // CURVE on and no worker key: the error names the setting to add.
        do {
            _ = try settings.secretKey(asWorker: true)
            Issue.record("a worker without a key file got a key")
        } catch {
            #expect("\(error)".contains("CHORUS_WORKER_KEY_FILE") && "\(error)".contains("CHORUS_WORKER_KEYS"))
        }
        // An unquoted key with " #" in it is cut by the comment rule, and refused rather than used.
        try "CHORUS_CURVE_SERVER_KEY=abc #def\n".write(toFile: conf, atomically: true, encoding: .utf8)
        #expect(throws: Configuration.Error.self) { try BusSettings(Configuration(path: conf, environment: [:])) }
    }

    @Test("warnings of one kind: at most the limit per window, the rest counted and reported once")
    func rateLimited() {
        let log = RateLimitedLog(limit: 3, window: 60)
        for i in 0..<1000 { log.warning("bad message \(i)", now: 100) }
        #expect(log.suppressedCount == 997)
        log.warning("after the window", now: 161)
        #expect(log.suppressedCount == 0)
    }
}

@Suite("API keys")
struct APIKeyTests {
    @Test("a key file: keys with names, comments; bearer headers; a changed file is read again; an empty file is refused")
    func keyFile() throws {
        let path = NSTemporaryDirectory() + "chorus-api-keys-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let first = APIKeys.generate(), second = APIKeys.generate()
        #expect(first.hasPrefix("sk-chorus-") && first.count == 42 && first != second)
        try "# keys\n\n\(first) alice\n".write(toFile: path, atomically: true, encoding: .utf8)
        let keys = try APIKeys(path: path)
        #expect(keys.name(authorization: "Bearer \(first)") == "alice")
        #expect(keys.name(authorization: "bearer \(first)") == "alice")
        #expect(keys.name(authorization: "Bearer \(second)") == nil)
        #expect(keys.name(authorization: first) == nil)
        #expect(keys.name(authorization: nil) == nil)
        Thread.sleep(forTimeInterval: 1.1)
        try "\(second)\n".write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(5)], ofItemAtPath: path)
        #expect(keys.name(authorization: "Bearer \(second)") != nil)
        #expect(keys.name(authorization: "Bearer \(first)") == nil)
        try "# nothing\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: APIKeys.Error.self) { try APIKeys(path: path) }
        #expect(throws: APIKeys.Error.self) { try APIKeys(path: path + ".missing") }
    }
}
