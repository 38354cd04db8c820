// chorus-kvindex: the kvindex role — keyed vectors with values searched by
// inner product (Index's HNSW store), and texts embedded with the sentence
// embedder.

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
