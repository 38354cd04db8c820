// Index: vectors searched by inner product — the HNSW graph, its snapshots,
// and the durable keyed store (SQLite through Storage) that the kvindex
// service serves; Texmex reads the standard benchmark sets. It must not know
// roles, jobs or what the vectors stand for.
