import ArgumentParser
import Foundation
import Inference
import Protocol
#if canImport(Glibc)
import Glibc
#endif

/// `chorus train`: a role's model fine-tuned on what `chorus harvest` wrote,
/// by the project's Python trainer (scripts/train/train.py), and brought back
/// as a GGUF file that is checked to load here with the base's tokenizer.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fine-tune a role's model on harvested trees (SFT, then DPO) and write it back as GGUF.",
        discussion: """
            MALT's training step. The base GGUF is loaded into transformers (dequantised), trained \
            with TRL on the role's rows of `chorus harvest --out DIR`: SFT on DIR/sft/ROLE.jsonl \
            (loss on the completions only), then, with --dpo, DPO on DIR/dpo/ROLE.jsonl (its \
            reference model is the SFT result). LoRA adapters (--lora-rank 16; 0 trains every \
            weight) are merged into the weights, which llama.cpp's converter and llama-quantize \
            turn back into a GGUF (--quantize, default Q4_K_M). The result is then loaded here and \
            its tokenizer compared with the base's (vocabulary, special tokens, the ids of probe \
            texts); the line to give the role its model (GENERATOR_MODEL=PATH, for deploy/chorus.conf \
            or the environment) is printed on standard output, and OUT.json records the run.

            Data is checked before anything heavy happens: a missing or empty file, rows without \
            `prompt` and `completion` (or `chosen` and `rejected`), or completions without an \
            assistant turn are refused with the file and line. The trainer's Python environment \
            (torch's CPU build, transformers, TRL, PEFT: about 1.5 GB) and llama-quantize are \
            installed by deploy/setup.sh --training, which the first `chorus train` runs if they \
            are missing.

            Checkpoints go to OUT.work/ (--work): stopped with Ctrl-C, the trainer saves one \
            and exits; killed, it keeps the last one saved (every tenth of the steps). Run the \
            same command again and it goes on from there. The folder is removed once OUT is \
            written. The trainer's own messages go to OUT.log.

            On a 2-core CPU training is slow: loading Qwen2.5-0.5B into the trainer takes minutes \
            and each SFT step (one example of several hundred tokens) minutes more, so a loop \
            at scale wants a GPU machine: run the same trainer there with --device cuda \
            (scripts/train/train.py takes the same options and the same data).
            """
    )

    @Option(help: ArgumentHelp("The role the model is trained for: generator, verifier or refiner (its data is ROLE.jsonl).", valueName: "role"))
    var role: String

    @Option(help: ArgumentHelp("The harvest's sft/ folder (ROLE.jsonl in it is read), or one .jsonl file of prompt/completion rows.", valueName: "dir"))
    var data: String

    @Option(help: ArgumentHelp("The harvest's dpo/ folder (ROLE.jsonl), or one .jsonl file of prompt/chosen/rejected rows: DPO after SFT.", valueName: "dir"))
    var dpo: String?

    @Option(help: ArgumentHelp("The model to start from, a GGUF file (Llama or Qwen2 architecture).", valueName: "path"))
    var base: String

    @Option(help: ArgumentHelp("Where to write the trained model (a .gguf file; never overwritten unless --overwrite).", valueName: "path"))
    var out: String

    @Option(help: ArgumentHelp("SFT optimiser steps, one example each.", valueName: "n"))
    var steps = 100

    @Option(name: .customLong("dpo-steps"), help: ArgumentHelp("DPO optimiser steps (default: --steps).", valueName: "n"))
    var dpoSteps: Int?

    @Option(help: ArgumentHelp("Learning rate (about 1e-5 suits --lora-rank 0).", valueName: "rate"))
    var lr = 1e-4

    @Option(name: .customLong("lora-rank"), help: ArgumentHelp("Rank of the LoRA adapters; 0 trains every weight.", valueName: "r"))
    var loraRank = 16

    @Option(name: .customLong("max-length"), help: ArgumentHelp("Tokens per example; longer ones are cut.", valueName: "n"))
    var maxLength = 1024

    @Option(help: ArgumentHelp("Seed of the data order and the adapters' initial values.", valueName: "n"))
    var seed = 0

    @Option(help: ArgumentHelp("Where the trainer runs: cpu, cuda, cuda:N or mps.", valueName: "device"))
    var device = "cpu"

    @Option(help: ArgumentHelp("Type of the result: Q4_K_M, Q8_0, F16, BF16, or another llama-quantize type.", valueName: "type"))
    var quantize = "Q4_K_M"

    @Option(help: ArgumentHelp("Folder for checkpoints and intermediate files (default: OUT.work).", valueName: "dir"))
    var work: String?

    @Flag(name: .customLong("keep-work"), help: "Keep the work folder (checkpoints, the unquantised model) after success.")
    var keepWork = false

    @Flag(help: "Replace OUT if it exists.")
    var overwrite = false

    static let roles = Role.malt.map(\.rawValue)

    func validate() throws {
        guard Self.roles.contains(role) else {
            throw ValidationError("--role must be one of \(Self.roles.joined(separator: ", ")) (the roles harvest writes data for), not '\(role)'")
        }
        if steps < 1 || dpoSteps.map({ $0 < 1 }) == true { throw ValidationError("--steps and --dpo-steps must be at least 1") }
        if !(lr > 0 && lr < 1) { throw ValidationError("--lr must be between 0 and 1") }
        if loraRank < 0 || loraRank > 1024 { throw ValidationError("--lora-rank must be between 0 and 1024") }
        if maxLength < 16 || maxLength > 131_072 { throw ValidationError("--max-length must be between 16 and 131072") }
        if !out.hasSuffix(".gguf") { throw ValidationError("--out must name a .gguf file") }
        let typeCharacters = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "_"))
        if quantize.isEmpty || quantize.unicodeScalars.contains(where: { !typeCharacters.contains($0) }) {
            throw ValidationError("--quantize takes a type name such as Q4_K_M or Q8_0")
        }
        if device.isEmpty || device.contains(" ") { throw ValidationError("--device takes a name such as cpu or cuda") }
    }

    func run() throws {
        let outPath = URL(fileURLWithPath: out).standardizedFileURL.path
        let basePath = URL(fileURLWithPath: base).standardizedFileURL.path
        if outPath == basePath { throw CLIError("--out is the base model itself; write the trained model to another file") }
        if FileManager.default.fileExists(atPath: outPath) && !overwrite {
            throw CLIError("\(out) already exists; choose another --out or add --overwrite")
        }
        let outFolder = URL(fileURLWithPath: outPath).deletingLastPathComponent().path
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: outFolder, isDirectory: &isFolder), isFolder.boolValue else {
            throw CLIError("the folder of --out, \(outFolder), does not exist")
        }
        // The base's tokenizer, read first: a file that is not a model is refused before any training.
        let baseTokenizer: Tokenizer
        do { baseTokenizer = try Tokenizer(gguf: try GGUFFile(path: basePath)) } catch {
            throw CLIError("cannot read the base model \(base): \(error)")
        }
        let trainer = try TrainerLocation.find()

        // The data, checked by the trainer itself with any python3 (no packages needed).
        let check = try TrainerProcess.check(trainer: trainer, arguments: dataArguments)
        writeErr("data: \(check.sft) SFT rows for the \(role)" + (dpo != nil ? ", \(check.dpo) DPO pairs" : "")
                 + (teacherNote(base: basePath).map { "; " + $0 } ?? "") + "\n")

        let python = try TrainerLocation.ensureEnvironment(trainer)
        let work = self.work ?? outPath + ".work"
        let logPath = outPath + ".log"
        var arguments = [trainer.script, "--progress-json", "--base", basePath, "--out", outPath] + dataArguments
        arguments += ["--steps", String(steps), "--lr", String(lr), "--lora-rank", String(loraRank), "--max-length", String(maxLength),
                      "--seed", String(seed), "--device", device, "--quantize", quantize, "--work", work]
        if let dpoSteps { arguments += ["--dpo-steps", String(dpoSteps)] }
        if keepWork { arguments.append("--keep-work") }
        if overwrite { try? FileManager.default.removeItem(atPath: outPath) }
        writeErr("training \(URL(fileURLWithPath: basePath).lastPathComponent) as the \(role) (\(loraRank == 0 ? "every weight" : "LoRA rank \(loraRank)"), "
                 + "\(device)); the trainer's messages go to \(logPath)\n")
        let done = try TrainerProcess.train(python: python, arguments: arguments, logPath: logPath, trainer: trainer)

        // The result: it loads here, writes, and its tokenizer is the base's.
        writeErr("checking \(out) in Chorus\n")
        let model: LanguageModel
        do { model = try LanguageModel(path: outPath, threads: ThreadPool.availableCores) } catch {
            throw CLIError("the trained model \(out) does not load in Chorus: \(error); the trainer's messages are in \(logPath)")
        }
        let differences = baseTokenizer.differences(from: model.tokenizer)
        guard differences.isEmpty else {
            throw CLIError("the trained model's tokenizer differs from the base's, so its prompts would not match: "
                           + differences.joined(separator: "; ") + ". Do not use \(out) as is; the trainer's messages are in \(logPath)")
        }
        let sample: GenerationResult
        do {
            sample = try model.makeSession(contextLength: 256).generate(
                GenerationRequest(prompt: model.chatPrompt([.user("What is 2 + 3?")]), maxTokens: 8, sampling: .greedy))
        } catch { throw CLIError("the trained model \(out) loads but cannot generate: \(error)") }
        guard !sample.tokens.isEmpty else { throw CLIError("the trained model \(out) loads but writes nothing; its messages are in \(logPath)") }

        let size = (try? FileManager.default.attributesOfItem(atPath: outPath)[.size] as? Int) ?? 0
        var record = done
        record["event"] = nil
        record["role"] = role
        record["base"] = basePath
        record["data"] = URL(fileURLWithPath: data).standardizedFileURL.path
        record["dpo"] = dpo.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        record["rows"] = ["sft": check.sft, "dpo": check.dpo]
        record["bytes"] = size
        record["tokenizer"] = "same as the base's"
        record["sample"] = sample.text
        let json = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        try json.write(to: URL(fileURLWithPath: outPath + ".json"), options: .atomic)

        let stages = (done["stages"] as? [String: [String: Any]]) ?? [:]
        for stage in ["sft", "dpo"] {
            guard let s = stages[stage] else { continue }
            let first = (s["first_loss"] as? Double).map { String(format: "%.3f", $0) } ?? "?"
            let last = (s["last_loss"] as? Double).map { String(format: "%.3f", $0) } ?? "?"
            writeErr("\(stage.uppercased()): \(s["steps"] ?? "?") steps on \(s["rows"] ?? "?") rows, loss \(first) -> \(last), "
                     + "\(Elapsed.describe(s["seconds"] as? Double ?? 0))\n")
        }
        writeErr("wrote \(out) (\(quantize), \(size / 1_000_000) MB): it loads in Chorus and its tokenizer is the base's; "
                 + "record in \(outPath).json\n")
        writeOut("\(role.uppercased())_MODEL=\(outPath)\n")
    }

    /// Who wrote the data, from the harvest's summary.json beside --data: a
    /// note when it is another model than the base (distillation).
    func teacherNote(base: String) -> String? {
        var isFolder: ObjCBool = false
        var folder = URL(fileURLWithPath: data).standardizedFileURL
        if FileManager.default.fileExists(atPath: folder.path, isDirectory: &isFolder), !isFolder.boolValue { folder.deleteLastPathComponent() }
        let summary = folder.deletingLastPathComponent().appendingPathComponent("summary.json")
        guard let bytes = FileManager.default.contents(atPath: summary.path),
              let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any],
              let writers = (object["models"] as? [String: [String]])?[role], !writers.isEmpty else { return nil }
        let baseName = URL(fileURLWithPath: base).lastPathComponent
        if writers == [baseName] { return "written by this model (self-training)" }
        return "written by \(writers.joined(separator: ", ")) (distillation into \(baseName))"
    }

    /// The data options the trainer and its check take.
    var dataArguments: [String] {
        ["--role", role, "--data", URL(fileURLWithPath: data).standardizedFileURL.path]
            + (dpo.map { ["--dpo", URL(fileURLWithPath: $0).standardizedFileURL.path] } ?? [])
    }
}

/// Where the project's trainer and its Python environment are.
struct TrainerLocation {
    /// The repository's root: scripts/train/ and deploy/ are in it.
    let root: String
    var script: String { root + "/scripts/train/train.py" }
    var requirements: String { root + "/scripts/train/requirements.txt" }
    var setup: String { root + "/deploy/setup.sh" }
    /// $CHORUS_TRAIN_VENV, else .venv-train in the repository (as deploy/setup.sh makes it).
    var environment: String {
        if let v = ProcessInfo.processInfo.environment["CHORUS_TRAIN_VENV"], !v.isEmpty { return v }
        return root + "/.venv-train"
    }

    /// The repository holding scripts/train/train.py: $CHORUS_ROOT, the current
    /// folder, or the one the executable was built in.
    static func find() throws -> TrainerLocation {
        var candidates: [String] = []
        if let r = ProcessInfo.processInfo.environment["CHORUS_ROOT"], !r.isEmpty { candidates.append(r) }
        candidates.append(FileManager.default.currentDirectoryPath)
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for up in ["../..", "../../..", ".."] { candidates.append(exe.appendingPathComponent(up).standardizedFileURL.path) }
        for c in candidates where FileManager.default.fileExists(atPath: c + "/scripts/train/train.py") {
            return TrainerLocation(root: c)
        }
        throw CLIError("cannot find scripts/train/train.py (looked in \(candidates.joined(separator: ", "))); "
                       + "run chorus from the repository or set CHORUS_ROOT to it")
    }

    /// The environment's python, made by deploy/setup.sh --training when it is
    /// missing or was made for other requirements.
    static func ensureEnvironment(_ t: TrainerLocation) throws -> String {
        let python = t.environment + "/bin/python"
        if FileManager.default.isExecutableFile(atPath: python), t.environmentIsCurrent { return python }
        writeErr("the trainer's Python environment is missing or out of date: running deploy/setup.sh --training "
                 + "(once; about 1.5 GB of packages and a build of llama-quantize)\n")
        let status = try TrainerProcess.runAttached(t.setup, ["--training"], environment: ["CHORUS_TRAIN_VENV": t.environment])
        guard status == 0, FileManager.default.isExecutableFile(atPath: python) else {
            throw CLIError("deploy/setup.sh --training failed (status \(status)); its message is above. Fix that and run chorus train again")
        }
        return python
    }

    /// Whether the environment was made from the requirements as they are now
    /// (deploy/setup.sh keeps a copy of them in it).
    var environmentIsCurrent: Bool {
        guard let made = FileManager.default.contents(atPath: environment + "/.requirements.txt"),
              let now = FileManager.default.contents(atPath: requirements) else { return false }
        return made == now
    }
}

/// The trainer run as a child process, its progress events drawn as a bar.
enum TrainerProcess {
    /// `train.py --check`: the data's rows, or its error as the command's.
    static func check(trainer: TrainerLocation, arguments: [String]) throws -> (sft: Int, dpo: Int) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", trainer.script, "--check", "--progress-json", "--base", "-", "--out", "-"] + arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { throw CLIError("cannot run python3 to check the data: \(error) (install python3)") }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let messages = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let event = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
            if event["event"] as? String == "error" { throw CLIError("bad training data: \(event["message"] as? String ?? "?")") }
            if event["event"] as? String == "data", process.terminationStatus == 0 {
                return (event["sft"] as? Int ?? 0, event["dpo"] as? Int ?? 0)
            }
        }
        throw CLIError("the data check failed (status \(process.terminationStatus)): " + String(decoding: messages, as: UTF8.self).suffix(2000))
    }

    /// Runs a program with this process's output, returning its exit status.
    static func runAttached(_ executable: String, _ arguments: [String], environment: [String: String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs the trainer to its end, drawing its progress; returns its `done`
    /// event. Ctrl-C reaches the trainer too (same process group), which saves
    /// a checkpoint and stops; SIGTERM to this process is passed on to it.
    static func train(python: String, arguments: [String], logPath: String, trainer: TrainerLocation) throws -> [String: Any] {
        guard FileManager.default.createFile(atPath: logPath, contents: nil), let log = FileHandle(forWritingAtPath: logPath) else {
            throw CLIError("cannot write \(logPath)")
        }
        defer { try? log.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-u"] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONUNBUFFERED"] = "1"
        environment["TOKENIZERS_PARALLELISM"] = "false"
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        process.standardError = log
        process.standardInput = FileHandle.nullDevice

        // Ctrl-C: the trainer gets it from the terminal and stops cleanly; this
        // process waits for it. SIGTERM: passed on.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        let terminate = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        interrupt.setEventHandler { writeErr("\nstopping: the trainer saves a checkpoint first\n") }
        terminate.setEventHandler { if process.isRunning { kill(process.processIdentifier, SIGTERM) } }
        interrupt.resume()
        terminate.resume()
        defer { interrupt.cancel(); terminate.cancel() }
        do { try process.run() } catch { throw CLIError("cannot run the trainer (\(python)): \(error)") }

        var done: [String: Any]?
        var failure: String?
        var stopped: [String: Any]?
        var bar = TrainingBar()
        var buffer = Data()
        let reader = output.fileHandleForReading
        while true {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
            while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[buffer.startIndex..<newline]
                buffer.removeSubrange(buffer.startIndex...newline)
                guard let event = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                      let kind = event["event"] as? String else { continue }
                switch kind {
                case "loaded":
                    writeErr("loaded the base into the trainer (\(event["parameters"] ?? "?") parameters, \(event["seconds"] ?? "?") s; \(event["precision"] ?? "fp32"))\n")
                case "stage": bar.begin(event)
                case "step": bar.step(event)
                case "stopped": stopped = event
                case "convert": bar.end(); writeErr("merging, saving and converting to GGUF\n")
                case "quantize": writeErr("quantising to \(event["type"] ?? "?")\n")
                case "error": failure = event["message"] as? String
                case "done": done = event
                default: break
                }
            }
        }
        process.waitUntilExit()
        bar.end()
        let status = process.terminationStatus
        if let done, status == 0 { return done }
        let tail = (try? String(contentsOfFile: logPath, encoding: .utf8)).map { String($0.suffix(1500)) } ?? ""
        if let stopped {
            throw CLIError("stopped at \(stopped["stage"] ?? "?") step \(stopped["step"] ?? "?"), checkpoint saved in "
                           + "\(stopped["work"] ?? "the work folder"); run the same command again to go on from it")
        }
        if process.terminationReason == .uncaughtSignal {
            throw CLIError("the trainer was killed by signal \(status); run the same command again to go on from its last checkpoint "
                           + "(its messages are in \(logPath))")
        }
        throw CLIError("the trainer failed (status \(status)): \(failure ?? "see \(logPath)")\n\(failure == nil ? tail : "")")
    }
}

/// The progress bar of a training stage: step, loss, tokens per second, time left.
struct TrainingBar {
    var stage = ""
    var steps = 0
    var start = 0
    var began = Date()
    var drawn = false
    /// Tokens and seconds at the first step drawn: the rate counts from there
    /// (a stage going on from a checkpoint starts with the tokens before it).
    var first: (tokens: Int, seconds: Double)?

    mutating func begin(_ event: [String: Any]) {
        end()
        stage = event["stage"] as? String ?? "?"
        steps = event["steps"] as? Int ?? 0
        start = event["start"] as? Int ?? 0
        began = Date()
        first = nil
        writeErr("\(stage.uppercased()): \(steps) steps" + (start > 0 ? ", going on from the checkpoint at step \(start)" : "") + "\n")
    }

    mutating func step(_ event: [String: Any]) {
        let step = event["step"] as? Int ?? 0
        let loss = event["loss"] as? Double ?? .nan
        let tokens = event["tokens"] as? Int ?? 0
        let seconds = event["seconds"] as? Double ?? Date().timeIntervalSince(began)
        let done = max(step - start, 0)
        if first == nil { first = (tokens, seconds) }
        let rate = done > 1 && seconds > first!.seconds ? Double(tokens - first!.tokens) / (seconds - first!.seconds)
            : (seconds > 0 ? Double(tokens) / seconds : 0)
        let eta = Progress.eta(elapsed: seconds, done: done, left: steps - step)
        Progress.show(done: step, total: steps, String(format: " %@ loss %.4f · %.0f tok/s · eta %@", stage, loss, rate, Elapsed.describe(Double(eta))))
        drawn = true
    }

    mutating func end() {
        if drawn { Progress.finish() }
        drawn = false
    }
}

enum Elapsed {
    /// "42 s", "3 min 5 s", "1 h 2 min".
    static func describe(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s) s" }
        if s < 3600 { return "\(s / 60) min \(s % 60) s" }
        return "\(s / 3600) h \(s % 3600 / 60) min"
    }
}
