// chorus: the command line — jobs (solve, submit, watch, result, cancel,
// status), one role's request, the model tools (run, tokenize, perplexity,
// score, bench, models), evaluation, harvest, train and compare, memory, keys
// and pruning. It talks to the broker as any client does.

import ArgumentParser
import Foundation
import Bus
import ServiceKit
import Inference

@main
struct Chorus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus",
        abstract: "Send questions to Chorus agents, and run language models on the CPU.",
        discussion: """
            Agent commands talk to the broker (--broker, or CHORUS_FRONTEND in deploy/chorus.conf; \
            start the services with deploy/up.sh). Local commands load a GGUF model in this \
            process; --model defaults to the model installed by deploy/setup.sh (or $CHORUS_MODEL).
            """,
        groupedSubcommands: [
            CommandGroup(name: "Agents (through the broker)", subcommands: [Solve.self, Submit.self, Watch.self, Result.self, Cancel.self, Status.self, Eval.self, Compare.self, HarvestCommand.self, MemoryGroup.self, Request.self]),
            CommandGroup(name: "Local model", subcommands: [Models.self, Run.self, Tokenize.self, Score.self, Perplexity.self, Bench.self, BenchMemory.self, Embed.self, Train.self]),
            CommandGroup(name: "Deployment", subcommands: [Keygen.self, APIKey.self, Prune.self, BenchBus.self]),
        ]
    )
}

/// An error to show the user as is.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Turns any error into one whose message is shown without decoration.
func userFacing(_ error: any Error) -> CLIError {
    if let e = error as? CLIError { return e }
    return CLIError(String(describing: error))
}

struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Path of the GGUF model.", valueName: "path"))
    var model: String?

    @Option(name: .long, help: ArgumentHelp("Threads for inference (default: every core).", valueName: "n"))
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
    }

    var modelPath: String { model ?? DefaultModel.path() }

    func load() throws -> LanguageModel {
        do {
            return try LanguageModel(path: modelPath, threads: threads ?? ThreadPool.availableCores)
        } catch {
            throw CLIError("cannot load model \(modelPath): \(error)")
        }
    }
}

enum DefaultModel {
    static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    /// $CHORUS_MODEL, else the first models/ folder found beside the current
    /// directory or the executable (a build in .build/release sits two levels
    /// below the repository).
    static func path() -> String {
        if let p = ProcessInfo.processInfo.environment["CHORUS_MODEL"], !p.isEmpty { return p }
        let candidates = folders().map { $0 + "/" + fileName }
        return candidates.first { FileManager.default.fileExists(atPath: $0) } ?? candidates[0]
    }

    /// The models folder: $CHORUS_MODELS_DIR, else the first models/ found.
    static func folder() -> String {
        if let dir = ProcessInfo.processInfo.environment["CHORUS_MODELS_DIR"], !dir.isEmpty { return dir }
        let all = folders()
        return all.first { FileManager.default.fileExists(atPath: $0) } ?? all[0]
    }

    static func folders() -> [String] {
        var candidates: [String] = []
        if let dir = ProcessInfo.processInfo.environment["CHORUS_MODELS_DIR"], !dir.isEmpty { candidates.append(dir) }
        candidates.append(FileManager.default.currentDirectoryPath + "/models")
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for up in ["../..", "../../..", "..", "."] {
            candidates.append(exe.appendingPathComponent(up).appendingPathComponent("models").standardizedFileURL.path)
        }
        return candidates
    }
}

func printJSON(_ object: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    FileHandle.standardOutput.write(data)
    FileHandle.standardOutput.write(Data("\n".utf8))
}

/// Progress of a long run on standard error: a bar redrawn in place on a
/// terminal, one line per call into a log.
enum Progress {
    static var isTerminal: Bool { isatty(2) != 0 }

    /// `[####....] done/total` and `details`.
    static func show(done: Int, total: Int, _ details: String) {
        let width = 30
        let filled = total > 0 ? width * min(done, total) / total : 0
        let line = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] \(done)/\(total)" + details
        writeErr(isTerminal ? "\r" + line + " " : line + "\n")
    }

    /// Ends a bar drawn in place.
    static func finish() { if isTerminal { writeErr("\n") } }

    /// Seconds left at the pace so far.
    static func eta(elapsed: Double, done: Int, left: Int) -> Int { done > 0 ? Int(elapsed / Double(done) * Double(left)) : 0 }
}

func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

func writeErr(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
}

func round(_ x: Double, _ places: Int) -> Double {
    let m = pow(10, Double(places))
    return (x * m).rounded() / m
}

/// Peak resident memory of this process so far, in megabytes.
func peakResidentMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024 // kilobytes on Linux
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a new CurveZMQ key pair for encrypting the bus.",
        discussion: """
            Without --out, prints the pair as config lines: put the secret key in the broker \
            host's config as CHORUS_CURVE_SECRET_KEY and the public key in every client's and \
            worker's config as CHORUS_CURVE_SERVER_KEY (quoted: keys may hold '#' and '='). \
            With --out PREFIX, writes the secret key to PREFIX.key (readable by its owner only) \
            and the public key to PREFIX.pub, one key per file, and never overwrites either.
            """
    )

    @Option(help: ArgumentHelp("Write PREFIX.key (secret) and PREFIX.pub (public) instead of printing.", valueName: "prefix"))
    var out: String?

    func run() throws {
        let keys: CurveKeyPair
        do { keys = try CurveKeyPair.generate() } catch { throw CLIError("\(error) (is libzmq built with CURVE?)") }
        guard let out else {
            writeOut("CHORUS_CURVE_SECRET_KEY=\"\(keys.secretKey)\"\nCHORUS_CURVE_SERVER_KEY=\"\(keys.publicKey)\"\n")
            return
        }
        let secret = out + ".key", pub = out + ".pub"
        for path in [secret, pub] where FileManager.default.fileExists(atPath: path) {
            throw CLIError("\(path) already exists; remove it or choose another prefix (a key is never overwritten)")
        }
        // The secret key is created readable by its owner only, before a byte is written.
        guard FileManager.default.createFile(atPath: secret, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: secret) else {
            throw CLIError("cannot write \(secret)")
        }
        handle.write(Data((keys.secretKey + "\n").utf8))
        try handle.close()
        guard FileManager.default.createFile(atPath: pub, contents: Data((keys.publicKey + "\n").utf8),
                                             attributes: [.posixPermissions: 0o644]) else {
            throw CLIError("cannot write \(pub)")
        }
        writeOut("wrote \(secret) (secret, mode 600) and \(pub) (public)\n")
    }
}

struct APIKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikey",
        abstract: "Make a new API key for the HTTP gateway.",
        discussion: """
            Prints a new random key. With --file, also adds it to that key file (one key per \
            line, then its name, then "admin" for an admin key; created readable by its owner \
            only): point the gateway's CHORUS_API_KEYS at the file. The gateway reads the file \
            again when it changes, so keys are added and removed (delete the line) without a \
            restart. Each key is a tenant: its jobs are its own (another key gets "not found"); \
            an admin key sees every key's jobs and the workers' hosts. Clients send the key as \
            "Authorization: Bearer KEY" (the openai client's api_key).
            """
    )

    @Option(help: ArgumentHelp("Add the key to this key file.", valueName: "path"))
    var file: String?

    @Option(help: ArgumentHelp("A name for the key, kept beside it in the file (letters, digits, '-', '_', '.', '@'; unique in the file).", valueName: "name"))
    var name: String?

    @Flag(help: "Make an admin key: it sees every key's jobs and the workers' hosts.")
    var admin = false

    func validate() throws {
        if let name, name.isEmpty || !name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.@".contains($0) }) {
            throw ValidationError("--name may hold letters, digits, '-', '_', '.' and '@' only")
        }
    }

    func run() throws {
        let key = APIKeys.generate()
        if let file {
            if !FileManager.default.fileExists(atPath: file) {
                guard FileManager.default.createFile(atPath: file, contents: Data("# Chorus gateway API keys: KEY NAME, one per line\n".utf8),
                                                     attributes: [.posixPermissions: 0o600]) else {
                    throw CLIError("cannot create \(file)")
                }
            }
            let keyName = name ?? "key-\(Int(Date().timeIntervalSince1970))"
            let existing: [String: APIKeys.Entry]
            do { existing = try APIKeys.parse((try? String(contentsOfFile: file, encoding: .utf8)) ?? "", path: file) } catch {
                throw CLIError("\(error); fix the file first")
            }
            if existing.values.contains(where: { $0.name == keyName }) {
                throw CLIError("\(file) already has a key named '\(keyName)'; choose another --name (a key's name is its tenant)")
            }
            guard let handle = FileHandle(forWritingAtPath: file) else { throw CLIError("cannot write \(file)") }
            handle.seekToEndOfFile()
            handle.write(Data("\(key) \(keyName)\(admin ? " admin" : "")\n".utf8))
            try handle.close()
            writeErr("added to \(file)\n")
        }
        writeOut(key + "\n")
    }
}
