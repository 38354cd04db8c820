import ArgumentParser

@main
struct KVIndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chorus-kvindex",
        abstract: "The Chorus KV-retrieval index: an HNSW index over unit vectors, as a role service.",
        subcommands: [Serve.self, IndexBench.self],
        defaultSubcommand: Serve.self
    )
}
