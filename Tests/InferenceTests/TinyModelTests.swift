import Foundation
import Inference
import Testing

/// A tiny random Llama model written as a GGUF file, checked against a plain
/// double-precision implementation of the same forward pass.
@Suite("Forward pass on a tiny random model")
struct TinyModelTests {
    static let vocab = 40, d = 64, ffn = 96, heads = 4, kvHeads = 2, headDim = 16, layers = 2

    struct Spec {
        var builder: GGUFBuilder
        var types: [String: GGMLType]
    }

    static func makeBuilder(architecture: String = "llama", ropeDim: Int = 16) -> GGUFBuilder {
        var random = TestRandom(77)
        var b = GGUFBuilder()
        b.add("general.architecture", .string(architecture))
        b.add("\(architecture).block_count", .uint32(UInt32(layers)))
        b.add("\(architecture).context_length", .uint32(64))
        b.add("\(architecture).embedding_length", .uint32(UInt32(d)))
        b.add("\(architecture).feed_forward_length", .uint32(UInt32(ffn)))
        b.add("\(architecture).attention.head_count", .uint32(UInt32(heads)))
        b.add("\(architecture).attention.head_count_kv", .uint32(UInt32(kvHeads)))
        b.add("\(architecture).rope.freq_base", .float32(10000))
        b.add("\(architecture).rope.dimension_count", .uint32(UInt32(ropeDim)))
        b.add("\(architecture).attention.layer_norm_rms_epsilon", .float32(1e-5))
        func matrix(_ name: String, rows: Int, columns: Int, _ type: GGMLType) {
            b.addTensor(name, [UInt64(columns), UInt64(rows)], type, randomBlocks(type, count: rows * columns, random: &random))
        }
        func norm(_ name: String) {
            let values = (0..<d).map { _ in 1 + random.float(-0.3...0.3) }
            var bytes: [UInt8] = []
            for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
            b.addTensor(name, [UInt64(d)], .f32, bytes)
        }
        matrix("token_embd.weight", rows: vocab, columns: d, .q8_0)
        for l in 0..<layers {
            norm("blk.\(l).attn_norm.weight")
            matrix("blk.\(l).attn_q.weight", rows: heads * headDim, columns: d, .q4_1)
            matrix("blk.\(l).attn_k.weight", rows: kvHeads * headDim, columns: d, .q4_1)
            matrix("blk.\(l).attn_v.weight", rows: kvHeads * headDim, columns: d, .q8_0)
            matrix("blk.\(l).attn_output.weight", rows: d, columns: heads * headDim, .q4_0)
            norm("blk.\(l).ffn_norm.weight")
            matrix("blk.\(l).ffn_gate.weight", rows: ffn, columns: d, .q4_1)
            matrix("blk.\(l).ffn_up.weight", rows: ffn, columns: d, .f16)
            matrix("blk.\(l).ffn_down.weight", rows: d, columns: ffn, .q4_1)
        }
        norm("output_norm.weight")
        matrix("output.weight", rows: vocab, columns: d, .f16)
        return b
    }

    static let path: String = try! makeBuilder().write()

    /// The forward pass written as plainly as possible, in double precision:
    /// logits for every position of `tokens`. Where `eightBit(position)` holds,
    /// activations entering a quantised weight matrix are first rounded to
    /// 8 bits exactly as the one-token kernels round them.
    static func referenceLogits(_ file: GGUFFile, _ tokens: [Int], ropeDim: Int = 16,
                                eightBit: (Int) -> Bool = { _ in false }) -> [[Double]] {
        struct Matrix {
            var rows: [[Double]]
            var quantized: Bool
        }
        func matrix(_ name: String) -> Matrix {
            let info = file.tensorInfo(name)!
            let rows = info.rowCount, cols = info.rowLength
            var row = [Float](repeating: 0, count: cols)
            let rowBytes = info.type.byteCount(values: cols)!
            let rowValues = (0..<rows).map { r in
                Dequantize.reference(info.type, file.data(of: info) + r * rowBytes, count: cols, into: &row)
                return row.map(Double.init)
            }
            return Matrix(rows: rowValues, quantized: [.q4_0, .q4_1, .q8_0].contains(info.type))
        }
        func vector(_ name: String) -> [Double] { matrix(name).rows[0] }
        func mul(_ w: Matrix, _ x: [Double], _ position: Int) -> [Double] {
            var input = x
            if w.quantized && eightBit(position) {
                let q = QuantizedVectorBuffer(capacity: x.count)
                MatVec.quantize(x.map(Float.init), count: x.count, into: q.vector)
                input = (0..<x.count).map { Double(Float(q.vector.values[$0]) * q.vector.scales[$0 / 32]) }
            }
            return w.rows.map { row in zip(row, input).reduce(0) { $0 + $1.0 * $1.1 } }
        }
        func rmsNorm(_ x: [Double], _ w: [Double]) -> [Double] {
            let s = 1 / (x.reduce(0) { $0 + $1 * $1 } / Double(x.count) + 1e-5).squareRoot()
            return zip(x, w).map { $0 * s * $1 }
        }
        func rope(_ v: inout [Double], position: Int, heads: Int) {
            for h in 0..<heads {
                for i in 0..<(ropeDim / 2) {
                    let theta = Double(position) * pow(10000, -2 * Double(i) / Double(ropeDim))
                    let a = v[h * headDim + 2 * i], b = v[h * headDim + 2 * i + 1]
                    v[h * headDim + 2 * i] = a * cos(theta) - b * sin(theta)
                    v[h * headDim + 2 * i + 1] = a * sin(theta) + b * cos(theta)
                }
            }
        }
        let embedding = matrix("token_embd.weight").rows
        var xs = tokens.map { embedding[$0] }
        var keys = [[[Double]]](repeating: [], count: layers), values = keys
        for l in 0..<layers {
            let p = "blk.\(l)."
            let wq = matrix(p + "attn_q.weight"), wk = matrix(p + "attn_k.weight"), wv = matrix(p + "attn_v.weight")
            let wo = matrix(p + "attn_output.weight"), wg = matrix(p + "ffn_gate.weight"), wu = matrix(p + "ffn_up.weight")
            let wd = matrix(p + "ffn_down.weight")
            let an = vector(p + "attn_norm.weight"), fn = vector(p + "ffn_norm.weight")
            for (pos, x) in xs.enumerated() {
                let h = rmsNorm(x, an)
                var q = mul(wq, h, pos), k = mul(wk, h, pos)
                rope(&q, position: pos, heads: heads)
                rope(&k, position: pos, heads: kvHeads)
                keys[l].append(k)
                values[l].append(mul(wv, h, pos))
                var attended = [Double](repeating: 0, count: heads * headDim)
                for head in 0..<heads {
                    let g = head / (heads / kvHeads)
                    var scores = (0...pos).map { j in
                        (0..<headDim).reduce(0.0) { $0 + q[head * headDim + $1] * keys[l][j][g * headDim + $1] } / Double(headDim).squareRoot()
                    }
                    let m = scores.max()!
                    scores = scores.map { exp($0 - m) }
                    let total = scores.reduce(0, +)
                    for j in 0...pos {
                        for e in 0..<headDim { attended[head * headDim + e] += scores[j] / total * values[l][j][g * headDim + e] }
                    }
                }
                var y = zip(x, mul(wo, attended, pos)).map { $0 + $1 }
                let h2 = rmsNorm(y, fn)
                let gate = mul(wg, h2, pos), up = mul(wu, h2, pos)
                let act = zip(gate, up).map { $0 / (1 + exp(-$0)) * $1 }
                y = zip(y, mul(wd, act, pos)).map { $0 + $1 }
                xs[pos] = y
            }
        }
        let output = matrix("output.weight"), norm = vector("output_norm.weight")
        return xs.enumerated().map { mul(output, rmsNorm($1, norm), $0) }
    }

    static let tokens = [3, 17, 0, 39, 22, 5, 5, 11, 30, 1, 2, 8, 19, 25, 7, 33, 14, 6, 9, 21, 38, 4, 12, 27, 16, 10, 35, 31, 13, 29, 18, 24, 26, 36, 15]

    func expectMatches(_ got: [[Float]], _ expected: [[Double]], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(got.count == expected.count, sourceLocation: sourceLocation)
        for (i, (g, e)) in zip(got, expected).enumerated() {
            expectClose(g, e.map { Float($0) }, absolute: 2e-3, relative: 2e-3, "\(what), position \(i)", sourceLocation: sourceLocation)
        }
    }

    @Test("a whole batch, token by token, and in uneven chunks all match the reference", arguments: [1, 2])
    func matchesReference(threads: Int) throws {
        let file = try GGUFFile(path: Self.path)
        let model = try LlamaModel(file: file, threads: threads)
        #expect(model.config.headCount == 4 && model.config.headCountKV == 2 && model.config.ropeDim == 16 && !model.config.tiedOutput)
        let expected = Self.referenceLogits(file, Self.tokens)
        let ids = Self.tokens.map(Int32.init)

        // The whole sequence in one batch (tiled kernels), logits for every position.
        let state = model.makeState(contextLength: 64, batchSize: 64)
        ids.withUnsafeBufferPointer { model.forward($0, state: state, logitRows: 0..<ids.count) }
        expectMatches((0..<ids.count).map { Array(state.logits(row: $0)) }, expected, "one batch")

        // One token at a time (matrix-vector kernels, 8-bit activations).
        let eightBit = Self.referenceLogits(file, Self.tokens, eightBit: { _ in true })
        let single = model.makeState(contextLength: 64, batchSize: 64)
        var rows: [[Float]] = []
        for t in ids {
            [t].withUnsafeBufferPointer { model.forward($0, state: single, logitRows: 0..<1, mode: .decode) }
            rows.append(Array(single.logits(row: 0)))
        }
        expectMatches(rows, eightBit, "token by token")

        // Uneven chunks, some below and some above the tiling threshold.
        let sizes = [2, 1, 5, 9, 18]
        #expect(model.tiledThreshold == 3)
        let mixed = Self.referenceLogits(file, Self.tokens, eightBit: { $0 < 3 })
        let chunked = model.makeState(contextLength: 64, batchSize: 64)
        rows = []
        var start = 0
        for size in sizes {
            let end = min(start + size, ids.count)
            Array(ids[start..<end]).withUnsafeBufferPointer {
                model.forward($0, state: chunked, logitRows: 0..<(end - start), mode: .decode)
            }
            for r in 0..<(end - start) { rows.append(Array(chunked.logits(row: r))) }
            start = end
        }
        expectMatches(rows, mixed, "uneven chunks")
        #expect(chunked.length == ids.count)

        // In prompt mode every token's result is the same bit for bit however the
        // sequence is batched (the last row's logits as well).
        var batched: [[Float]] = []
        for sizes in [[ids.count], [1, 1, 2, 31], [7, 28], [3, 3, 3, 26]] {
            let state = model.makeState(contextLength: 64, batchSize: 64)
            var start = 0
            for size in sizes {
                Array(ids[start..<(start + size)]).withUnsafeBufferPointer { model.forward($0, state: state, logitRows: (size - 1)..<size) }
                start += size
            }
            batched.append(Array(state.logits(row: 0)))
        }
        for b in batched.dropFirst() { #expect(b == batched[0], "prompt-mode logits depend on batching") }
        expectMatches([batched[0]], [expected.last!], "last row of prompt mode")
    }

    @Test("unsupported architectures, missing tensors, wrong shapes and types are named")
    func modelErrors() throws {
        func load(_ b: GGUFBuilder) throws -> LlamaModel { try LlamaModel(file: try GGUFFile(path: try b.write()), threads: 1) }

        #expect(throws: ModelError.unsupportedArchitecture("qwen2")) { try load(Self.makeBuilder(architecture: "qwen2")) }

        var b = Self.makeBuilder()
        b.tensors.removeAll { $0.name == "blk.1.ffn_up.weight" }
        #expect(throws: ModelError.missingTensor("blk.1.ffn_up.weight")) { try load(b) }

        b = Self.makeBuilder()
        let i = b.tensors.firstIndex { $0.name == "blk.0.attn_k.weight" }!
        b.tensors[i].dimensions = [64, 16]
        b.tensors[i].data = Array(b.tensors[i].data.prefix(16 * 2 * 20))
        #expect(throws: ModelError.wrongShape(tensor: "blk.0.attn_k.weight", expected: [64, 32], found: [64, 16])) { try load(b) }

        b = Self.makeBuilder()
        let j = b.tensors.firstIndex { $0.name == "blk.0.attn_q.weight" }!
        b.tensors[j].rawType = GGMLType.q5_0.rawValue
        b.tensors[j].data = [UInt8](repeating: 0, count: 64 * 2 * 22)
        #expect(throws: ModelError.unsupportedTensorType(tensor: "blk.0.attn_q.weight", type: .q5_0)) { try load(b) }

        b = Self.makeBuilder(ropeDim: 18)
        #expect(throws: ModelError.self) { try load(b) }

        b = Self.makeBuilder()
        b.metadata.removeAll { $0.0 == "llama.embedding_length" }
        #expect(throws: ModelError.gguf(.missingKey("llama.embedding_length"))) { try load(b) }

        // A model without a tokenizer cannot be used as a language model.
        #expect(throws: ModelError.self) { try LanguageModel(path: Self.path, threads: 1) }
        #expect(throws: ModelError.modelNotFound(path: "/no/such/model.gguf")) { try LanguageModel(path: "/no/such/model.gguf") }
    }
}
