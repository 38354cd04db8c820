import ArgumentParser
import Foundation
import Inference

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the installed models and what Chorus makes of each.",
        discussion: """
            Shows every GGUF file in the models folder (CHORUS_MODELS_DIR, else models/ beside the \
            current directory or the executable), or the files given with --model: architecture, \
            parameter count, tensor types, context length, size, whether prompts start with a BOS \
            token, the chat format, and whether Chorus loads it (and if not, why). Use it to check a \
            GGUF file of your own before giving it to a role (<ROLE>_MODEL in deploy/chorus.conf).
            """
    )

    @Option(name: .long, help: ArgumentHelp("A GGUF file to describe (repeatable; default: every file in the models folder).", valueName: "path"))
    var model: [String] = []

    @Flag(name: .long, help: "Print a JSON array, one object per model.")
    var json = false

    func run() throws {
        let paths: [String]
        if model.isEmpty {
            let folder = DefaultModel.folder()
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            paths = names.filter { $0.hasSuffix(".gguf") }.sorted().map { folder + "/" + $0 }
            if paths.isEmpty {
                throw CLIError("no GGUF models in \(folder); run deploy/setup.sh to install them, or pass --model PATH")
            }
        } else {
            paths = model
        }
        let described = paths.map(ModelDescription.init)
        if json {
            try printJSON(described.map(\.json))
            return
        }
        // The first column as wide as the longest file name, and a space.
        let width = max(34, (described.map(\.file.count).max() ?? 0) + 2)
        writeOut(pad("model", width) + pad("architecture", 13) + pad("params", 8) + pad("context", 8) + pad("size", 9)
                 + pad("bos", 8) + pad("chat", 8) + "tensor types\n")
        for d in described {
            guard let info = d.info else {
                writeOut(pad(d.file, width) + "cannot read: \(d.error ?? "unknown error")\n")
                continue
            }
            writeOut(pad(d.file, width) + pad(info.architecture, 13) + pad(Self.millions(info.parameters), 8)
                     + pad(String(info.contextLength), 8) + pad(String(format: "%.0f MB", Double(info.bytes) / 1e6), 9)
                     + pad(info.bos ?? "no", 8) + pad(info.chat, 8) + info.typeSummary + "\n")
            if let e = d.error { writeOut(pad("", width) + "does not load: \(e)\n") }
        }
        let cpu = CPUFeatures.current.names
        writeOut("\nkernels: \(KernelSelection.path.rawValue) (this CPU has: \(cpu.isEmpty ? "no AVX2 or later" : cpu.joined(separator: " ")))\n")
    }

    static func millions(_ n: Int) -> String {
        n >= 1_000_000_000 ? String(format: "%.1fB", Double(n) / 1e9) : String(format: "%.0fM", Double(n) / 1e6)
    }
}

/// What a GGUF file holds and whether Chorus loads it.
struct ModelDescription {
    struct Info {
        var architecture: String
        var parameters: Int
        var types: [(String, Int)]
        var contextLength: Int
        var bytes: Int
        /// The BOS token's text when prompts start with it.
        var bos: String?
        var chat: String
        var typeSummary: String { types.map { "\($0.0) \($0.1)" }.joined(separator: ", ") }
    }

    let path: String
    var file: String { URL(fileURLWithPath: path).lastPathComponent }
    let info: Info?
    /// Why the file does not load (nil when it does).
    let error: String?

    init(path: String) {
        self.path = path
        let gguf: GGUFFile
        do { gguf = try GGUFFile(path: path) } catch {
            info = nil
            self.error = error.description
            return
        }
        let arch = gguf.metadata["general.architecture"]?.stringValue ?? "?"
        var counts: [GGMLType: Int] = [:]
        for t in gguf.tensors { counts[t.type, default: 0] += 1 }
        let types = counts.sorted { ($0.value, $1.key.description) > ($1.value, $0.key.description) }.map { ($0.key.description, $0.value) }
        let loaded = Swift.Result { try LanguageModel(path: path, threads: 1) }
        var bos: String?, chat = "?"
        if case let .success(lm) = loaded {
            if lm.tokenizer.addBOS, let id = lm.tokenizer.bosToken { bos = lm.tokenizer.text(of: id) }
            chat = lm.chatTemplate.format.rawValue
        }
        info = Info(architecture: arch, parameters: gguf.tensors.reduce(0) { $0 + $1.elementCount }, types: types,
                    contextLength: gguf.metadata["\(arch).context_length"]?.intValue ?? 0, bytes: gguf.fileSize, bos: bos, chat: chat)
        if case let .failure(e) = loaded { error = String(describing: e) } else { error = nil }
    }

    var json: [String: Any] {
        var out: [String: Any] = ["path": path, "file": file, "loads": error == nil, "kernels": KernelSelection.path.rawValue]
        if let error { out["error"] = error }
        if let info {
            out["architecture"] = info.architecture
            out["parameters"] = info.parameters
            out["tensor_types"] = Dictionary(uniqueKeysWithValues: info.types)
            out["context_length"] = info.contextLength
            out["size_bytes"] = info.bytes
            out["bos"] = info.bos ?? NSNull()
            out["chat_template"] = info.chat
        }
        return out
    }
}
