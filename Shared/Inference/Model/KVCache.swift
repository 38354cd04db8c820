/// One sequence's keys and values in f16 (as llama.cpp's default cache
/// keeps them), each KV head of each layer contiguous, position by position:
/// key `pos` of head `h` of layer `l` is `headDim` values at
/// `keys + ((l * kvHeads + h) * capacity + pos) * headDim`. A query reads its
/// head's keys and values as one sequential stream.
public final class KVCache: @unchecked Sendable {
    public let capacity: Int
    /// Tokens in the cache.
    public internal(set) var length = 0
    let layers: Int
    let kvHeads: Int
    let headDim: Int
    let keys: AlignedBuffer<Float16>
    let values: AlignedBuffer<Float16>

    init(config c: ModelConfig, capacity: Int) {
        self.capacity = capacity
        layers = c.blockCount
        kvHeads = c.headCountKV
        headDim = c.headDim
        keys = AlignedBuffer(count: Self.valueCount(config: c, capacity: capacity))
        values = AlignedBuffer(count: Self.valueCount(config: c, capacity: capacity))
    }

    /// Keys (or values) a cache of `capacity` tokens holds.
    static func valueCount(config c: ModelConfig, capacity: Int) -> Int { c.blockCount * capacity * c.kvDim }

    /// Bytes of a cache of `capacity` tokens for `config`, keys and values.
    static func byteCount(config: ModelConfig, capacity: Int) -> Int {
        2 * valueCount(config: config, capacity: capacity) * MemoryLayout<Float16>.stride
    }

    /// Whether this cache has the shape of `config`'s.
    func fits(_ config: ModelConfig) -> Bool {
        layers == config.blockCount && kvHeads == config.headCountKV && headDim == config.headDim
    }

    func keys(layer: Int, head: Int, position: Int) -> UnsafeMutablePointer<Float16> {
        keys.pointer + ((layer * kvHeads + head) * capacity + position) * headDim
    }

    func values(layer: Int, head: Int, position: Int) -> UnsafeMutablePointer<Float16> {
        values.pointer + ((layer * kvHeads + head) * capacity + position) * headDim
    }

    /// Stores a position's key and value (`kvHeads * headDim` floats each, heads
    /// side by side), rounded to f16.
    func store(layer: Int, position: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let toHalves = KernelSelection.table.toHalves
        for h in 0..<kvHeads {
            toHalves(key + h * headDim, keys(layer: layer, head: h, position: position), headDim)
            toHalves(value + h * headDim, values(layer: layer, head: h, position: position), headDim)
        }
    }

    /// Makes this cache hold the first `count` positions of `other` (same shape).
    func copyPrefix(of other: KVCache, count: Int) {
        precondition(other.layers == layers && other.kvHeads == kvHeads && other.headDim == headDim, "caches of different shapes")
        precondition(count <= other.length && count <= capacity, "copying more positions than either cache has")
        for l in 0..<layers {
            for h in 0..<kvHeads {
                keys(layer: l, head: h, position: 0).update(from: other.keys(layer: l, head: h, position: 0), count: count * headDim)
                values(layer: l, head: h, position: 0).update(from: other.values(layer: l, head: h, position: 0), count: count * headDim)
            }
        }
        length = count
    }
}
