import Foundation

public enum EmbedderError: Error, CustomStringConvertible {
    case notFound(String)
    case weights(SafetensorsError)
    case vocabulary(WordPieceError)
    case configuration(String)

    public var description: String {
        switch self {
        case let .notFound(path): return "no embedding model at \(path); run deploy/setup.sh to install all-MiniLM-L6-v2"
        case let .weights(e): return e.description
        case let .vocabulary(e): return e.description
        case let .configuration(m): return "invalid embedding model configuration: \(m)"
        }
    }
}

/// A BERT encoder for sentence embeddings (all-MiniLM-L6-v2): word, position
/// and token-type embeddings, post-norm transformer layers with GELU, then
/// mean pooling over the tokens and L2 normalisation, as sentence-transformers
/// computes them. Weights are F32, read in place from `model.safetensors`.
public final class SentenceEmbedder: @unchecked Sendable {
    public struct Config: Sendable, Codable {
        public var hiddenSize = 384
        public var layers = 6
        public var heads = 12
        public var intermediateSize = 1536
        public var maxPositions = 512
        public var vocabularySize = 30522
        public var layerNormEpsilon: Float = 1e-12
        /// Inputs are truncated to this many word pieces, [CLS] and [SEP] included.
        public var maxSequenceLength = 256
    }

    struct Linear {
        let weight: WeightMatrix
        let bias: UnsafePointer<Float>
    }

    struct Norm {
        let weight: UnsafePointer<Float>
        let bias: UnsafePointer<Float>
    }

    struct Layer {
        let query: Linear, key: Linear, value: Linear, output: Linear
        let attentionNorm: Norm
        let intermediate: Linear, down: Linear
        let outputNorm: Norm
    }

    public let config: Config
    public let tokenizer: WordPieceTokenizer
    public let directory: String
    let file: SafetensorsFile
    let wordEmbeddings: UnsafePointer<Float>
    let positionEmbeddings: UnsafePointer<Float>
    let typeEmbeddings: UnsafePointer<Float>
    let embeddingNorm: Norm
    let layers: [Layer]
    let pool: ThreadPool
    private var storage: [FloatBuffer] = []
    private let lock = NSLock()

    public var dimension: Int { config.hiddenSize }

    /// Loads `model.safetensors`, `vocab.txt` and (if present) `config.json` from `directory`.
    public init(directory: String, threads: Int = ThreadPool.availableCores) throws(EmbedderError) {
        self.directory = directory
        let weightsPath = directory + "/model.safetensors"
        guard FileManager.default.fileExists(atPath: weightsPath) else { throw .notFound(directory) }
        var c = Config()
        if let data = FileManager.default.contents(atPath: directory + "/config.json"),
           let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            c.hiddenSize = json["hidden_size"] as? Int ?? c.hiddenSize
            c.layers = json["num_hidden_layers"] as? Int ?? c.layers
            c.heads = json["num_attention_heads"] as? Int ?? c.heads
            c.intermediateSize = json["intermediate_size"] as? Int ?? c.intermediateSize
            c.maxPositions = json["max_position_embeddings"] as? Int ?? c.maxPositions
            c.vocabularySize = json["vocab_size"] as? Int ?? c.vocabularySize
            c.layerNormEpsilon = Float(json["layer_norm_eps"] as? Double ?? Double(c.layerNormEpsilon))
            if let act = json["hidden_act"] as? String, act != "gelu" { throw .configuration("activation '\(act)' is not supported (gelu)") }
        }
        guard c.heads > 0, c.hiddenSize % c.heads == 0, (c.hiddenSize / c.heads) % 16 == 0, c.hiddenSize % 32 == 0,
              c.intermediateSize % 32 == 0, c.maxSequenceLength <= c.maxPositions else {
            throw .configuration("hidden size \(c.hiddenSize) with \(c.heads) heads and FFN \(c.intermediateSize) is not supported")
        }
        config = c
        do { tokenizer = try WordPieceTokenizer(vocabularyPath: directory + "/vocab.txt") } catch { throw .vocabulary(error) }
        let weights: SafetensorsFile
        do { weights = try SafetensorsFile(path: weightsPath) } catch { throw .weights(error) }
        var kept: [FloatBuffer] = []
        let h = c.hiddenSize
        func floats(_ name: String, _ shape: [Int]) throws(EmbedderError) -> UnsafePointer<Float> {
            do {
                let (p, s) = try weights.floats(name, shape: shape)
                if let s { kept.append(s) }
                return p
            } catch { throw .weights(error) }
        }
        func linear(_ name: String, out: Int, in input: Int) throws(EmbedderError) -> Linear {
            let w = try floats(name + ".weight", [out, input])
            return Linear(weight: WeightMatrix(name: name, type: .f32, rows: out, columns: input, data: UnsafeRawPointer(w)),
                          bias: try floats(name + ".bias", [out]))
        }
        func norm(_ name: String) throws(EmbedderError) -> Norm {
            Norm(weight: try floats(name + ".weight", [h]), bias: try floats(name + ".bias", [h]))
        }
        wordEmbeddings = try floats("embeddings.word_embeddings.weight", [c.vocabularySize, h])
        positionEmbeddings = try floats("embeddings.position_embeddings.weight", [c.maxPositions, h])
        typeEmbeddings = try floats("embeddings.token_type_embeddings.weight", [2, h])
        embeddingNorm = try norm("embeddings.LayerNorm")
        var layers: [Layer] = []
        for i in 0..<c.layers {
            let p = "encoder.layer.\(i)."
            layers.append(Layer(
                query: try linear(p + "attention.self.query", out: h, in: h),
                key: try linear(p + "attention.self.key", out: h, in: h),
                value: try linear(p + "attention.self.value", out: h, in: h),
                output: try linear(p + "attention.output.dense", out: h, in: h),
                attentionNorm: try norm(p + "attention.output.LayerNorm"),
                intermediate: try linear(p + "intermediate.dense", out: c.intermediateSize, in: h),
                down: try linear(p + "output.dense", out: h, in: c.intermediateSize),
                outputNorm: try norm(p + "output.LayerNorm")))
        }
        self.layers = layers
        storage = kept
        file = weights
        pool = ThreadPool(threadCount: threads)
        if tokenizer.vocabulary.count != c.vocabularySize {
            throw .configuration("vocab.txt has \(tokenizer.vocabulary.count) tokens, the model \(c.vocabularySize)")
        }
    }

    /// The model's word pieces for `text` ([CLS] ... [SEP], truncated).
    public func tokenize(_ text: String) -> [Int32] {
        tokenizer.encode(text, maxLength: config.maxSequenceLength)
    }

    /// One unit-length embedding per text. Texts are processed together, so
    /// the weights are applied to many tokens at once.
    public func embed(_ texts: [String]) -> [[Float]] {
        if texts.isEmpty { return [] }
        var out: [[Float]] = []
        // Batches of about 512 tokens.
        var batch: [[Int32]] = []
        var tokens = 0
        for text in texts {
            let ids = tokenize(text)
            if tokens + ids.count > 512 && !batch.isEmpty {
                out += encode(batch)
                batch.removeAll()
                tokens = 0
            }
            batch.append(ids)
            tokens += ids.count
        }
        out += encode(batch)
        return out
    }

    public func embed(_ text: String) -> [Float] { embed([text])[0] }

    /// Runs the encoder over several token sequences in one pass.
    func encode(_ sequences: [[Int32]]) -> [[Float]] {
        lock.lock()
        defer { lock.unlock() }
        let c = config
        let h = c.hiddenSize
        let n = sequences.reduce(0) { $0 + $1.count }
        let starts = sequences.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        let x = FloatBuffer(count: n * h)
        let q = FloatBuffer(count: n * h), k = FloatBuffer(count: n * h), v = FloatBuffer(count: n * h)
        let attended = FloatBuffer(count: n * h), projected = FloatBuffer(count: n * h)
        let inner = FloatBuffer(count: n * c.intermediateSize)
        let packed = FloatBuffer(count: MatMul.packedCount(tokens: n, columns: max(h, c.intermediateSize)))
        let tiles = (0..<pool.threadCount).map { _ in FloatBuffer(count: MatMul.scratchCount(columns: max(h, c.intermediateSize))) }
        let longest = sequences.map(\.count).max() ?? 1
        let scores = (0..<pool.threadCount).map { _ in FloatBuffer(count: longest) }

        // Embeddings: word + position + token type 0, then LayerNorm.
        for (s, ids) in sequences.enumerated() {
            for (pos, id) in ids.enumerated() {
                let row = x.pointer + (starts[s] + pos) * h
                let word = wordEmbeddings + Int(id) * h, position = positionEmbeddings + pos * h
                for e in 0..<h { row[e] = word[e] + position[e] + typeEmbeddings[e] }
                layerNorm(row, embeddingNorm)
            }
        }
        for layer in layers {
            // Self-attention over each sequence's own tokens.
            linear(x.pointer, columns: h, tokens: n, [(layer.query, q.pointer), (layer.key, k.pointer), (layer.value, v.pointer)],
                   packed: packed, tiles: tiles)
            let headDim = h / c.heads
            let scale = 1 / Float(headDim).squareRoot()
            let units = n * c.heads
            pool.run { thread, threads in
                var u = thread
                while u < units {
                    let t = u / c.heads, head = u % c.heads
                    let s = starts.lastIndex { $0 <= t }!
                    let first = starts[s], count = starts[s + 1] - first
                    Attention.attend(query: q.pointer + t * h + head * headDim,
                                     keys: k.pointer + first * h + head * headDim, values: v.pointer + first * h + head * headDim,
                                     stride: h, length: count, headDim: headDim, scale: scale, scores: scores[thread].pointer,
                                     into: attended.pointer + t * h + head * headDim)
                    u += threads
                }
            }
            linear(attended.pointer, columns: h, tokens: n, [(layer.output, projected.pointer)], packed: packed, tiles: tiles)
            pool.parallelFor(n) { range in
                for t in range {
                    VectorOps.add(x.pointer + t * h, projected.pointer + t * h, count: h)
                    self.layerNorm(x.pointer + t * h, layer.attentionNorm)
                }
            }
            // Feed-forward with GELU.
            linear(x.pointer, columns: h, tokens: n, [(layer.intermediate, inner.pointer)], packed: packed, tiles: tiles)
            pool.parallelFor(n * c.intermediateSize / 16) { range in
                for i in range { VectorOps.gelu(inner.pointer + i * 16, count: 16) }
            }
            linear(inner.pointer, columns: c.intermediateSize, tokens: n, [(layer.down, projected.pointer)], packed: packed, tiles: tiles)
            pool.parallelFor(n) { range in
                for t in range {
                    VectorOps.add(x.pointer + t * h, projected.pointer + t * h, count: h)
                    self.layerNorm(x.pointer + t * h, layer.outputNorm)
                }
            }
        }
        // Mean pooling and L2 normalisation.
        return sequences.indices.map { s in
            var mean = [Double](repeating: 0, count: h)
            for t in starts[s]..<starts[s + 1] {
                for e in 0..<h { mean[e] += Double(x.pointer[t * h + e]) }
            }
            let count = Double(starts[s + 1] - starts[s])
            var norm = 0.0
            for e in 0..<h { mean[e] /= count; norm += mean[e] * mean[e] }
            let scale = 1 / max(norm.squareRoot(), 1e-12)
            return mean.map { Float($0 * scale) }
        }
    }

    /// `y = W x + b` for every token, for each (layer, output) pair sharing the input.
    private func linear(_ input: UnsafeMutablePointer<Float>, columns: Int, tokens n: Int,
                        _ outputs: [(Linear, UnsafeMutablePointer<Float>)], packed: FloatBuffer, tiles: [FloatBuffer]) {
        let tokenTiles = (n + MatMul.tokenTile - 1) / MatMul.tokenTile
        pool.parallelFor(tokenTiles) { range in
            MatMul.pack(input, stride: columns, tokens: n, columns: columns, into: packed.pointer, tiles: range)
        }
        let total = outputs.reduce(0) { $0 + MatMul.tileCount(rows: $1.0.weight.rows) }
        pool.run { thread, threads in
            let mine = ThreadPool.split(total, part: thread, of: threads)
            var first = 0
            for (l, y) in outputs {
                let count = MatMul.tileCount(rows: l.weight.rows)
                let lo = max(mine.lowerBound - first, 0), hi = min(mine.upperBound - first, count)
                if lo < hi {
                    MatMul.multiply(l.weight, packed: packed.pointer, tokens: n, into: y, yStride: l.weight.rows,
                                    tiles: lo..<hi, scratch: tiles[thread].pointer)
                }
                first += count
            }
        }
        for (l, y) in outputs {
            let rows = l.weight.rows
            pool.parallelFor(n) { range in
                for t in range { VectorOps.add(y + t * rows, l.bias, count: rows) }
            }
        }
    }

    private func layerNorm(_ x: UnsafeMutablePointer<Float>, _ norm: Norm) {
        VectorOps.layerNorm(x, weight: norm.weight, bias: norm.bias, count: config.hiddenSize, epsilon: config.layerNormEpsilon)
    }
}
