import ArgumentParser
import Client
import Foundation
import Protocol

struct MemoryGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Search, inspect, forget and export the agents' long-term memory.",
        discussion: "These go through the broker to the memory service (deploy/up.sh starts one).",
        subcommands: [MemorySearch.self, MemoryStats.self, MemoryForget.self, MemoryExport.self]
    )
}

/// Sends one request to the memory role; its result as any JSON.
func memoryRequest(_ bus: BusOptions, _ request: MemoryRequest) throws -> JSONValue {
    try memoryRequest(bus, request, as: JSONValue.self)
}

/// Sends one request to the memory role; its result as `Result`.
func memoryRequest<Result: Decodable & Sendable>(_ bus: BusOptions, _ request: MemoryRequest, as: Result.Type) throws -> Result {
    do {
        return try bus.brokerClient().client.blocking {
            try await $0.request(role: Role.memory.rawValue, payload: request, as: Result.self, queueTimeout: 30, timeout: 120)
        }
    } catch let ClientError.remote(e) where e.code == .noWorker {
        throw CLIError("no memory service is running; start one with deploy/scale.sh memory 1")
    } catch let ClientError.unexpected(m) {
        throw CLIError("unexpected reply from the memory service to \(request.op.rawValue): \(m)")
    } catch {
        throw CLIError("\(error)")
    }
}

func prettyJSON(_ value: JSONValue) throws -> String {
    try JSONCoding.string(value, pretty: true)
}

struct MemorySearch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search", abstract: "The memories most similar to a text, with their retention.")

    @Argument(help: "The text to look for.")
    var text: String

    @Option(help: ArgumentHelp("How many.", valueName: "n"))
    var k: Int = 5

    @Option(help: ArgumentHelp("Search this memory namespace (default: the shared one; `chorus eval` runs use their own).",
                               valueName: "name"))
    var namespace: String?

    @OptionGroup var bus: BusOptions

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { throw ValidationError("the text is empty") }
        if k < 1 || k > 100 { throw ValidationError("--k must be between 1 and 100") }
    }

    func run() throws {
        if json { writeOut(try prettyJSON(try memoryRequest(bus, .search(text: text, k: k, namespace: namespace))) + "\n"); return }
        let items = try memoryRequest(bus, .search(text: text, k: k, namespace: namespace), as: [MemoryHit].self)
        guard !items.isEmpty else { writeOut("no memories\n"); return }
        for item in items {
            writeOut(String(format: "%.3f  ", item.similarity) + pad(item.kind, 10) + String(format: " retention %.3f  ", item.retention)
                     + item.id + "\n")
            writeOut("       " + String(item.text.prefix(110)) + (item.text.count > 110 ? "…" : "") + "\n")
            if let lesson = item.content["lesson"]?.stringValue { writeOut("       lesson: \(lesson)\n") }
        }
    }
}

struct MemoryStats: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Counts of episodes and reflections, and mean retention.")

    @OptionGroup var bus: BusOptions

    func run() throws {
        writeOut(try prettyJSON(try memoryRequest(bus, .stats)) + "\n")
    }
}

struct MemoryForget: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forget", abstract: "Forget every memory whose retention is below R now.")

    @Option(help: ArgumentHelp("Retention threshold, between 0 and 1.", valueName: "R"))
    var below: Double

    @OptionGroup var bus: BusOptions

    func validate() throws {
        if !(below >= 0 && below <= 1) { throw ValidationError("--below must be between 0 and 1") }
    }

    func run() throws {
        let result = try memoryRequest(bus, .forget(below: below), as: MemoryForgot.self)
        writeOut("forgot \(result.forgotten) memories\n")
    }
}

struct MemoryExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export", abstract: "Write every memory as one JSON line to a file.")

    @Option(help: ArgumentHelp("The JSON-lines file to write.", valueName: "path"))
    var out: String

    @OptionGroup var bus: BusOptions

    func run() throws {
        let items = try memoryRequest(bus, .export, as: [JSONValue].self)
        do { try JSONLines.write(items, to: URL(fileURLWithPath: out)) } catch { throw CLIError("cannot write \(out): \(error)") }
        writeOut("wrote \(items.count) memories to \(out)\n")
    }
}
