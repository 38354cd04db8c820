import ArgumentParser
import Foundation
import Inference

struct BenchMemory: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-memory",
        abstract: "Measure memory read bandwidth, the limit of one-token decoding.",
        discussion: """
            Each thread sums its share of a buffer far larger than the caches; the median of \
            --rounds passes is reported in GB/s (10^9 bytes per second). Decoding one token reads \
            every weight once, so this bounds single-sequence decode speed: tokens per second at \
            most bandwidth / weight bytes per token (chorus bench reports both).
            """
    )

    @Option(name: .long, help: ArgumentHelp("Buffer size.", valueName: "MB"))
    var megabytes = 1024

    @Option(name: .long, parsing: .upToNextOption, help: ArgumentHelp("Thread counts to measure.", valueName: "n"))
    var threads: [Int] = [1, 2]

    @Option(name: .long, help: ArgumentHelp("Measured passes (median reported).", valueName: "r"))
    var rounds = 5

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if megabytes < 64 || megabytes > 16384 { throw ValidationError("--megabytes must be between 64 and 16384") }
        if threads.isEmpty || threads.contains(where: { $0 < 1 || $0 > 256 }) { throw ValidationError("--threads takes counts from 1 to 256") }
        if rounds < 1 { throw ValidationError("--rounds must be at least 1") }
    }

    func run() throws {
        var results: [[String: Any]] = []
        for t in threads {
            let gbs = MemoryBandwidth.read(bytes: megabytes << 20, threads: t, rounds: rounds)
            results.append(["threads": t, "read_gb_per_second": round(gbs, 2)])
            if !json { writeOut(String(format: "read bandwidth, %d thread%@: %.2f GB/s\n", t, t == 1 ? "" : "s", gbs)) }
        }
        if json { try printJSON(["megabytes": megabytes, "rounds": rounds, "results": results]) }
    }
}
