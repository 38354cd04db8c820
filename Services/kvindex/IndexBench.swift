import ArgumentParser
import Foundation
import Index

struct IndexBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Build an index from texmex files and measure recall@10 and queries per second over ef.",
        discussion: """
            Reads base.fvecs, query.fvecs and groundtruth.ivecs from DATADIR (as written by an \
            ANN benchmark-set generator), builds the HNSW index single-threaded (M=16, \
            ef_construction=200 by default, as hnswlib's baseline), then searches every query \
            one at a time for each ef and prints recall@10 and queries per second.
            """
    )

    @Argument(help: "Folder with base.fvecs, query.fvecs and groundtruth.ivecs.")
    var datadir: String

    @Option(help: ArgumentHelp("Comma-separated ef values.", valueName: "list"))
    var ef: String = "16,32,64,128,256"

    @Option(help: "Links per node (M).")
    var m: Int = 16

    @Option(help: "Beam width while building.")
    var efConstruction: Int = 200

    @Option(help: ArgumentHelp("Use only the first N base vectors (recall is then against the exact search).", valueName: "n"))
    var limit: Int?

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let (base, dim, n0) = try Texmex.read(datadir + "/base.fvecs", as: Float.self)
        let (queries, qdim, nq) = try Texmex.read(datadir + "/query.fvecs", as: Float.self)
        let (truth, tk, _) = try Texmex.read(datadir + "/groundtruth.ivecs", as: Int32.self)
        guard qdim == dim else { throw ValidationError("queries have dimension \(qdim), base \(dim)") }
        let n = min(limit ?? n0, n0)
        let index = HNSWIndex(dimension: dim, m: m, efConstruction: efConstruction, capacity: n)
        let start = Date()
        base.withUnsafeBufferPointer { b in
            for i in 0..<n {
                index.add(b.baseAddress! + i * dim)
                if !json && (i + 1) % 10000 == 0 {
                    FileHandle.standardError.write(Data("\rbuilding: \(i + 1)/\(n)".utf8))
                }
            }
        }
        let build = Date().timeIntervalSince(start)
        if !json { FileHandle.standardError.write(Data("\n".utf8)) }
        // Ground truth: the file's, or the exact search over the subset.
        var gt: [[Int32]] = []
        queries.withUnsafeBufferPointer { q in
            for i in 0..<nq {
                if n == n0 { gt.append(Array(truth[(i * tk)..<(i * tk + 10)])) }
                else { gt.append(index.exactSearch(q.baseAddress! + i * dim, k: 10).map(\.id)) }
            }
        }
        var rows: [[String: Any]] = []
        if !json { print(String(format: "chorus build: %d vectors in %.1f s (%.0f inserts/s, 1 thread)", n, build, Double(n) / build)) }
        for e in ef.split(separator: ",").compactMap({ Int($0) }) {
            var hits = 0
            let t = Date()
            queries.withUnsafeBufferPointer { q in
                for i in 0..<nq {
                    let found = index.search(q.baseAddress! + i * dim, k: 10, ef: e)
                    let want = Set(gt[i])
                    hits += found.filter { want.contains($0.id) }.count
                }
            }
            let dt = Date().timeIntervalSince(t)
            let recall = Double(hits) / Double(nq * 10)
            rows.append(["ef": e, "recall_at_10": recall, "qps": Double(nq) / dt])
            if !json { print(String(format: "ef=%4d recall@10=%.4f qps=%.0f", e, recall, Double(nq) / dt)) }
        }
        if json {
            let obj: [String: Any] = ["vectors": n, "dimension": dim, "build_seconds": build, "inserts_per_second": Double(n) / build, "curve": rows]
            print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
        }
    }
}
