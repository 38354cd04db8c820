import CPrefetch
import KernelDispatch
import SIMDSupport
import Foundation

/// A hierarchical navigable small-world graph (Malkov and Yashunin) over
/// unit vectors, searched by inner product, after hnswlib's algorithms:
/// greedy descent through the upper layers, a beam search of width `ef` on
/// the bottom layer, and the neighbour-selection heuristic that keeps a
/// neighbour only if it is closer to the new node than to any neighbour
/// already kept. Elements are numbered from 0 in insertion order; deleted
/// ones stay in the graph for navigation but are never returned.
///
/// Queries walk the graph on 8-bit codes of the vectors (one scale per
/// vector, a quarter of the bytes, so far more of the index stays in cache)
/// and re-rank the `ef` best they found with the exact f32 inner product.
/// Insertion walks the same way and then chooses neighbours (hnswlib's
/// heuristic) on exact distances.
/// Not thread-safe.
public final class HNSWIndex: @unchecked Sendable {
    public let dimension: Int
    /// Links per node on the upper layers; the bottom layer has 2 * m.
    public let m: Int
    public let efConstruction: Int
    public internal(set) var count = 0
    public internal(set) var deletedCount = 0
    /// The node every search starts from, on the top layer.
    public internal(set) var entryPoint: Int32 = -1
    public internal(set) var maxLevel = -1

    var capacity: Int
    var vectors: UnsafeMutablePointer<Float>
    /// 8-bit codes of the vectors (`codeStride` bytes each) and their scales.
    var codes: UnsafeMutablePointer<Int8>
    var scales: UnsafeMutablePointer<Float>
    let codeStride: Int
    /// A query copied and zero-padded to `codeStride` for the 8-bit walk.
    private let padded: UnsafeMutablePointer<Float>
    /// Bottom-layer links: for node i, `links0[i * (m0 + 1)]` is the count, then the ids.
    var links0: UnsafeMutablePointer<Int32>
    /// Upper-layer links of every node in one pool: node i's level l (from 1)
    /// sits at `upperOffset[i] + (l - 1) * (m + 1)`, count first.
    var upperPool: UnsafeMutablePointer<Int32>
    var upperPoolCount = 0
    var upperPoolCapacity: Int
    var upperOffset: [Int] = []
    var levels: [Int8] = []
    var deleted: [Bool] = []
    var random: UInt64
    let levelMultiplier: Double
    private var visited: [UInt32] = []
    private var visitEpoch: UInt32 = 0

    var m0: Int { 2 * m }
    var stride0: Int { m0 + 1 }

    public init(dimension: Int, m: Int = 16, efConstruction: Int = 200, capacity: Int = 1024, seed: UInt64 = 1) {
        precondition(dimension > 0 && m >= 2)
        self.dimension = dimension
        self.m = m
        self.efConstruction = max(efConstruction, m)
        self.capacity = max(capacity, 16)
        vectors = .allocate(capacity: self.capacity * dimension)
        codeStride = (dimension + 63) / 64 * 64
        codes = .allocate(capacity: self.capacity * codeStride)
        scales = .allocate(capacity: self.capacity)
        padded = .allocate(capacity: codeStride)
        padded.initialize(repeating: 0, count: codeStride)
        links0 = .allocate(capacity: self.capacity * (2 * m + 1))
        upperPoolCapacity = 1024
        upperPool = .allocate(capacity: upperPoolCapacity)
        random = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed
        levelMultiplier = 1 / log(Double(m))
    }

    deinit {
        vectors.deallocate()
        codes.deallocate()
        scales.deallocate()
        padded.deallocate()
        links0.deallocate()
        upperPool.deallocate()
    }

    /// The stored vector of element `id`.
    public func vector(_ id: Int32) -> UnsafePointer<Float> { UnsafePointer(vectors + Int(id) * dimension) }

    public func isDeleted(_ id: Int32) -> Bool { deleted[Int(id)] }

    /// Deleted elements are skipped by searches.
    public func markDeleted(_ id: Int32) {
        guard id >= 0, Int(id) < count, !deleted[Int(id)] else { return }
        deleted[Int(id)] = true
        deletedCount += 1
    }

    // MARK: Distances

    /// 1 - (a . b): smaller is closer for unit vectors.
    @inline(__always)
    func distance(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>) -> Float {
        1 - dot(a, b, dimension)
    }

    @inline(__always)
    func distance(_ q: UnsafePointer<Float>, _ id: Int32) -> Float {
        distance(q, UnsafePointer(vectors + Int(id) * dimension))
    }

    /// 1 - (q . x) with x read from its 8-bit code: close to `distance`, a
    /// quarter of the memory traffic. `q` is padded to `codeStride`.
    @inline(__always)
    func approximateDistance(_ q: UnsafePointer<Float>, _ id: Int32) -> Float {
        1 - scales[Int(id)] * dotCodes(q, UnsafePointer(codes + Int(id) * codeStride), codeStride)
    }

    /// The inner product of `query` with element `id` as a search's walk sees
    /// it, from the 8-bit code (within sqrt(dimension) * max|x_i| / 254 of the exact one).
    public func approximateScore(_ query: UnsafePointer<Float>, _ id: Int32) -> Float {
        1 - approximateDistance(pad(query), id)
    }

    /// `q` in the padded buffer (its tail stays zero), valid until the next call.
    func pad(_ q: UnsafePointer<Float>) -> UnsafePointer<Float> {
        padded.update(from: q, count: dimension)
        return UnsafePointer(padded)
    }

    /// Writes element `id`'s code: x / s rounded, s = max |x_i| / 127.
    func encode(_ id: Int) {
        let v = vectors + id * dimension, c = codes + id * codeStride
        var largest: Float = 0
        for i in 0..<dimension { largest = max(largest, abs(v[i])) }
        let scale = largest > 0 ? largest / 127 : 1
        for i in 0..<dimension { c[i] = Int8((v[i] / scale).rounded()) }
        for i in dimension..<codeStride { c[i] = 0 }
        scales[id] = scale
    }

    /// Recomputes every code (after loading a snapshot).
    func encodeAll() {
        for i in 0..<count { encode(i) }
    }

    @inline(__always)
    func prefetchCode(_ id: Int32) {
        let p = UnsafeRawPointer(codes + Int(id) * codeStride)
        var offset = 0
        while offset < codeStride {
            chorus_prefetch(p + offset)
            offset += 64
        }
    }

    // MARK: Insertion

    private func grow() {
        let newCapacity = capacity * 2
        let v = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * dimension)
        v.update(from: vectors, count: count * dimension)
        vectors.deallocate()
        vectors = v
        let l = UnsafeMutablePointer<Int32>.allocate(capacity: newCapacity * stride0)
        l.update(from: links0, count: count * stride0)
        links0.deallocate()
        links0 = l
        let c = UnsafeMutablePointer<Int8>.allocate(capacity: newCapacity * codeStride)
        c.update(from: codes, count: count * codeStride)
        codes.deallocate()
        codes = c
        let s = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity)
        s.update(from: scales, count: count)
        scales.deallocate()
        scales = s
        capacity = newCapacity
    }

    private func randomLevel() -> Int {
        // SplitMix64 step, then a uniform in (0, 1].
        random &+= 0x9E37_79B9_7F4A_7C15
        var z = random
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let u = (Double(z >> 11) + 1) / Double(1 << 53)
        return min(Int(-log(u) * levelMultiplier), 30)
    }

    /// Adds a vector (of `dimension` floats) and returns its id.
    @discardableResult
    public func add(_ vector: UnsafePointer<Float>) -> Int32 {
        if count == capacity { grow() }
        let id = Int32(count)
        (vectors + count * dimension).update(from: vector, count: dimension)
        encode(count)
        links0[count * stride0] = 0
        let level = randomLevel()
        levels.append(Int8(level))
        upperOffset.append(reserveUpperLinks(level))
        deleted.append(false)
        visited.append(0)
        count += 1

        if entryPoint < 0 {
            entryPoint = id
            maxLevel = level
            return id
        }
        let q = self.vector(id)
        var current = entryPoint
        var currentDistance = distance(q, current)
        if level < maxLevel {
            for l in stride(from: maxLevel, to: level, by: -1) {
                greedy(q, &current, &currentDistance, level: l)
            }
        }
        // The beam walks on the 8-bit codes, like a query; what it found is
        // re-ranked exactly, so neighbour selection sees exact distances.
        let walk = pad(q)
        for l in stride(from: min(level, maxLevel), through: 0, by: -1) {
            let walked = searchLayer(walk, entry: current, entryDistance: approximateDistance(walk, current), ef: efConstruction,
                                     level: l, skipDeleted: false, approximate: true)
            let candidates = walked.map { Candidate(distance: distance(q, $0.id), id: $0.id) }.sorted()
            let selected = selectNeighbors(candidates, max: m)
            setLinks(id, level: l, selected.map(\.id))
            for n in selected { connect(n.id, to: id, distance: n.distance, level: l) }
            if let best = candidates.first {
                current = best.id
                currentDistance = best.distance
            }
        }
        if level > maxLevel {
            maxLevel = level
            entryPoint = id
        }
        return id
    }

    // MARK: Links

    @inline(__always)
    func neighbors(_ id: Int32, level: Int) -> UnsafeBufferPointer<Int32> {
        if level == 0 {
            let p = links0 + Int(id) * stride0
            return UnsafeBufferPointer(start: p + 1, count: Int(p[0]))
        }
        let p = upperPool + upperOffset[Int(id)] + (level - 1) * (m + 1)
        return UnsafeBufferPointer(start: p + 1, count: Int(p[0]))
    }

    /// Room for a node's upper-layer links (none at level 0); returns its offset.
    func reserveUpperLinks(_ level: Int) -> Int {
        guard level > 0 else { return -1 }
        let need = level * (m + 1)
        if upperPoolCount + need > upperPoolCapacity {
            var newCapacity = upperPoolCapacity * 2
            while upperPoolCount + need > newCapacity { newCapacity *= 2 }
            let pool = UnsafeMutablePointer<Int32>.allocate(capacity: newCapacity)
            pool.update(from: upperPool, count: upperPoolCount)
            upperPool.deallocate()
            upperPool = pool
            upperPoolCapacity = newCapacity
        }
        let offset = upperPoolCount
        for l in 0..<level { upperPool[offset + l * (m + 1)] = 0 }
        upperPoolCount += need
        return offset
    }

    func setLinks(_ id: Int32, level: Int, _ ids: [Int32]) {
        if level == 0 {
            let p = links0 + Int(id) * stride0
            p[0] = Int32(ids.count)
            for (i, n) in ids.enumerated() { p[1 + i] = n }
        } else {
            let p = upperPool + upperOffset[Int(id)] + (level - 1) * (m + 1)
            p[0] = Int32(ids.count)
            for (i, n) in ids.enumerated() { p[1 + i] = n }
        }
    }

    /// Adds `new` to `node`'s links, pruning them with the heuristic when full.
    private func connect(_ node: Int32, to new: Int32, distance newDistance: Float, level: Int) {
        let limit = level == 0 ? m0 : m
        let current = Array(neighbors(node, level: level))
        if current.count < limit {
            setLinks(node, level: level, current + [new])
            return
        }
        let base = self.vector(node)
        var candidates = current.map { Candidate(distance: distance(base, $0), id: $0) }
        candidates.append(Candidate(distance: newDistance, id: new))
        candidates.sort()
        setLinks(node, level: level, selectNeighbors(candidates, max: limit).map(\.id))
    }

    /// hnswlib's heuristic: walk the candidates from the closest, keeping one
    /// only if it is closer to the base than to every one already kept.
    /// `candidates` are sorted by distance.
    func selectNeighbors(_ candidates: [Candidate], max limit: Int) -> [Candidate] {
        if candidates.count <= limit { return candidates }
        var kept: [Candidate] = []
        kept.reserveCapacity(limit)
        for c in candidates {
            let v = self.vector(c.id)
            var good = true
            for k in kept where distance(v, self.vector(k.id)) < c.distance {
                good = false
                break
            }
            if good {
                kept.append(c)
                if kept.count == limit { break }
            }
        }
        return kept
    }

    // MARK: Search

    struct Candidate: Comparable {
        var distance: Float
        var id: Int32
        static func < (a: Candidate, b: Candidate) -> Bool { a.distance < b.distance || (a.distance == b.distance && a.id < b.id) }
    }

    private func greedy(_ q: UnsafePointer<Float>, _ current: inout Int32, _ currentDistance: inout Float, level: Int) {
        var changed = true
        while changed {
            changed = false
            for n in neighbors(current, level: level) {
                let d = distance(q, n)
                if d < currentDistance {
                    currentDistance = d
                    current = n
                    changed = true
                }
            }
        }
    }

    func resetVisited() {
        visited = [UInt32](repeating: 0, count: count)
        visitEpoch = 0
    }

    private func nextVisitEpoch() -> UInt32 {
        visitEpoch &+= 1
        if visitEpoch == 0 {
            for i in visited.indices { visited[i] = 0 }
            visitEpoch = 1
        }
        return visitEpoch
    }

    /// Beam search on one layer; returns up to `ef` results sorted by distance.
    /// With `approximate`, distances come from the 8-bit codes and `q` must be
    /// padded to `codeStride`.
    func searchLayer(_ q: UnsafePointer<Float>, entry: Int32, entryDistance: Float, ef: Int, level: Int,
                     skipDeleted: Bool, approximate: Bool = false, accept: ((Int32) -> Bool)? = nil) -> [Candidate] {
        let epoch = nextVisitEpoch()
        var candidates = MinHeap()
        var results = MaxHeap()
        func admissible(_ id: Int32) -> Bool {
            (!skipDeleted || !deleted[Int(id)]) && (accept?(id) ?? true)
        }
        visited[Int(entry)] = epoch
        candidates.push(Candidate(distance: entryDistance, id: entry))
        if admissible(entry) { results.push(Candidate(distance: entryDistance, id: entry)) }
        var bound = admissible(entry) ? entryDistance : Float.infinity
        while let c = candidates.pop() {
            if c.distance > bound && results.count >= ef { break }
            visited.withUnsafeMutableBufferPointer { seen in
                let links = neighbors(c.id, level: level)
                if approximate {
                    // Ask for every unvisited neighbour's code before reading the first.
                    for n in links where seen[Int(n)] != epoch { prefetchCode(n) }
                }
                for n in links where seen[Int(n)] != epoch {
                    seen[Int(n)] = epoch
                    let d = approximate ? approximateDistance(q, n) : distance(q, n)
                    if results.count < ef || d < bound {
                        candidates.push(Candidate(distance: d, id: n))
                        if admissible(n) {
                            results.push(Candidate(distance: d, id: n))
                            if results.count > ef { _ = results.pop() }
                            bound = results.top?.distance ?? .infinity
                        }
                    }
                }
            }
        }
        return results.sortedAscending()
    }

    /// The `k` stored vectors with the largest inner product with `query`, best
    /// first, as (id, inner product). `ef` (at least k) trades speed for recall;
    /// `accept` filters which ids may be returned.
    public func search(_ query: UnsafePointer<Float>, k: Int, ef: Int, accept: ((Int32) -> Bool)? = nil) -> [(id: Int32, score: Float)] {
        guard entryPoint >= 0, k > 0 else { return [] }
        var current = entryPoint
        var currentDistance = distance(query, current)
        if maxLevel > 0 {
            for l in stride(from: maxLevel, to: 0, by: -1) { greedy(query, &current, &currentDistance, level: l) }
        }
        let walk = pad(query)
        let found = searchLayer(walk, entry: current, entryDistance: approximateDistance(walk, current), ef: max(ef, k),
                                level: 0, skipDeleted: deletedCount > 0, approximate: true, accept: accept)
        // Re-rank what the walk found with the exact vectors.
        let exact = found.map { Candidate(distance: distance(query, $0.id), id: $0.id) }.sorted()
        return exact.prefix(k).map { ($0.id, 1 - $0.distance) }
    }

    /// The exact top `k` by scanning every vector (for checking recall).
    public func exactSearch(_ query: UnsafePointer<Float>, k: Int, accept: ((Int32) -> Bool)? = nil) -> [(id: Int32, score: Float)] {
        var heap = MaxHeap()
        for i in 0..<count where !deleted[i] && (accept?(Int32(i)) ?? true) {
            let d = distance(query, Int32(i))
            if heap.count < k || d < heap.top!.distance {
                heap.push(Candidate(distance: d, id: Int32(i)))
                if heap.count > k { _ = heap.pop() }
            }
        }
        return heap.sortedAscending().map { ($0.id, 1 - $0.distance) }
    }
}

/// The kernels of the CPU this runs on (see KernelSelection).
private let kernels = KernelSelection.table

/// Inner product of two float vectors.
@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float { kernels.dotF32(a, b, n) }

/// Inner product of a float vector with 8-bit codes; `n` is a multiple of 64.
@inline(__always)
func dotCodes(_ q: UnsafePointer<Float>, _ c: UnsafePointer<Int8>, _ n: Int) -> Float { kernels.dotCodes(q, c, n) }

/// Which of two candidates a heap keeps nearer its top.
protocol HeapOrder {
    static func before(_ a: HNSWIndex.Candidate, _ b: HNSWIndex.Candidate) -> Bool
}

/// Closest on top.
enum ClosestFirst: HeapOrder {
    @inline(__always) static func before(_ a: HNSWIndex.Candidate, _ b: HNSWIndex.Candidate) -> Bool { a < b }
}

/// Farthest on top.
enum FarthestFirst: HeapOrder {
    @inline(__always) static func before(_ a: HNSWIndex.Candidate, _ b: HNSWIndex.Candidate) -> Bool { b < a }
}

/// A binary heap of candidates in `Order`.
struct CandidateHeap<Order: HeapOrder> {
    private var items: [HNSWIndex.Candidate] = []
    var count: Int { items.count }
    var top: HNSWIndex.Candidate? { items.first }

    mutating func push(_ c: HNSWIndex.Candidate) {
        items.append(c)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !Order.before(items[i], items[parent]) { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> HNSWIndex.Candidate? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var best = i
                if l < items.count && Order.before(items[l], items[best]) { best = l }
                if r < items.count && Order.before(items[r], items[best]) { best = r }
                if best == i { break }
                items.swapAt(i, best)
                i = best
            }
        }
        return first
    }

    func sortedAscending() -> [HNSWIndex.Candidate] { items.sorted() }
}

typealias MinHeap = CandidateHeap<ClosestFirst>
typealias MaxHeap = CandidateHeap<FarthestFirst>
