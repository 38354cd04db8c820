import Foundation
import Inference
import SIMDSupport
import Testing

@Suite("Dequantisation and SIMD kernels")
struct KernelTests {
    @Test("dequantisation matches gguf.quants on random blocks")
    func dequantMatchesGGUFPackage() throws {
        let data = try Data(contentsOf: TestSupport.fixtures.appendingPathComponent("quants/dequant.json"))
        let root = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let cases = root["cases"] as! [[String: Any]]
        #expect(cases.count == 13)
        for c in cases {
            let name = c["type"] as! String
            let type = try #require(GGMLType.allCases.first { $0.description == name }, "unknown type \(name)")
            let count = c["count"] as! Int
            let hex = c["hex"] as! String
            var bytes: [UInt8] = []
            var i = hex.startIndex
            while i < hex.endIndex {
                let j = hex.index(i, offsetBy: 2)
                bytes.append(UInt8(hex[i..<j], radix: 16)!)
                i = j
            }
            let expected = (c["values"] as! [NSNumber]).map { $0.floatValue }
            var reference = [Float](repeating: 0, count: count)
            var fast = [Float](repeating: 0, count: count)
            bytes.withUnsafeBytes { raw in
                Dequantize.reference(type, raw.baseAddress!, count: count, into: &reference)
                Dequantize.row(type, raw.baseAddress!, count: count, into: &fast)
            }
            expectClose(reference, expected, absolute: 1e-6, relative: 1e-6, "\(name) reference")
            expectClose(fast, expected, absolute: 1e-6, relative: 1e-6, "\(name) SIMD")
        }
    }

    static let types: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]

    /// Reference dot product of every row with `x`, in double precision.
    func referenceMatVec(_ type: GGMLType, _ blocks: [UInt8], rows: Int, columns: Int, _ x: [Float]) -> [Float] {
        var row = [Float](repeating: 0, count: columns)
        let rowBytes = type.byteCount(values: columns)!
        return (0..<rows).map { r in
            blocks.withUnsafeBytes { Dequantize.reference(type, $0.baseAddress! + r * rowBytes, count: columns, into: &row) }
            var sum = 0.0
            for k in 0..<columns { sum += Double(row[k]) * Double(x[k]) }
            return Float(sum)
        }
    }

    @Test("activation quantisation: 8-bit values, per-block scale and sum")
    func quantizeActivations() {
        var random = TestRandom(11)
        let x = random.floats(96, -3...3) + [Float](repeating: 0, count: 32)
        let q = QuantizedVectorBuffer(capacity: 128)
        MatVec.quantize(x, count: 128, into: q.vector)
        for b in 0..<4 {
            let block = x[(b * 32)..<(b * 32 + 32)]
            let amax = block.map(abs).max()!
            #expect(q.vector.scales[b] == amax / 127)
            var sum: Float = 0
            for i in 0..<32 {
                let v = q.vector.values[b * 32 + i]
                #expect(abs(v) <= 127)
                sum += Float(v)
                if amax > 0 { #expect(abs(Float(v) * q.vector.scales[b] - x[b * 32 + i]) <= q.vector.scales[b] / 2 + 1e-6) }
            }
            #expect(abs(q.vector.sums[b] - sum * q.vector.scales[b]) < 1e-4)
        }
        #expect(q.vector.scales[3] == 0 && q.vector.sums[3] == 0, "an all-zero block quantises to zeros")
    }

    @Test("matrix-vector kernels match the scalar reference", arguments: types)
    func matVec(type: GGMLType) {
        var random = TestRandom(UInt64(type.rawValue) + 7)
        for (rows, columns) in type.blockSize == 256 ? [(5, 256), (17, 512), (33, 1536)] : [(5, 32), (17, 96), (64, 576), (3, 1536)] {
            let blocks = randomBlocks(type, count: rows * columns, random: &random)
            let x = random.floats(columns, -2...2)
            let q = QuantizedVectorBuffer(capacity: columns)
            MatVec.quantize(x, count: columns, into: q.vector)
            // Quantised weights are multiplied by the 8-bit activations: the
            // reference uses exactly those activations.
            let quantizedX = (0..<columns).map { Float(q.vector.values[$0]) * q.vector.scales[$0 / 32] }
            let isQuantized = ![.f32, .f16, .bf16].contains(type)
            let expected = referenceMatVec(type, blocks, rows: rows, columns: columns, isQuantized ? quantizedX : x)
            var y = [Float](repeating: .nan, count: rows)
            blocks.withUnsafeBytes { raw in
                let w = WeightMatrix(name: "w", type: type, rows: rows, columns: columns, data: raw.baseAddress!)
                MatVec.multiply(w, x, quantized: q.vector, into: &y, rows: 0..<rows)
            }
            expectClose(y, expected, absolute: 2e-4, relative: 1e-4, "\(type) \(rows)x\(columns)")
            // And the 8-bit activations stay close to the exact product.
            let exact = referenceMatVec(type, blocks, rows: rows, columns: columns, x)
            let scale = exact.map(abs).max()!
            for r in 0..<rows { #expect(abs(y[r] - exact[r]) <= 0.02 * scale + 1e-3, "\(type) row \(r): \(y[r]) vs \(exact[r])") }
        }
    }

    @Test("tiled matrix multiplication matches the scalar reference", arguments: types)
    func matMul(type: GGMLType) {
        var random = TestRandom(UInt64(type.rawValue) + 100)
        let shapes = type.blockSize == 256 ? [(6, 256, 1), (13, 256, 5), (7, 512, 33), (12, 768, 70)]
            : [(6, 32, 1), (13, 64, 5), (30, 96, 32), (7, 64, 33), (12, 576, 70)]
        for (rows, columns, tokens) in shapes {
            let blocks = randomBlocks(type, count: rows * columns, random: &random)
            let x = random.floats(tokens * columns, -2...2)
            var expected: [Float] = []
            for t in 0..<tokens {
                expected += referenceMatVec(type, blocks, rows: rows, columns: columns, Array(x[(t * columns)..<((t + 1) * columns)]))
            }
            // Output rows are `rows + 3` apart to check the stride is honoured.
            let stride = rows + 3
            var y = [Float](repeating: .nan, count: tokens * stride)
            var packed = [Float](repeating: .nan, count: MatMul.packedCount(tokens: tokens, columns: columns))
            var scratch = [Float](repeating: .nan, count: MatMul.scratchCount(columns: columns))
            let tokenTiles = (tokens + MatMul.tokenTile - 1) / MatMul.tokenTile
            blocks.withUnsafeBytes { raw in
                let w = WeightMatrix(name: "w", type: type, rows: rows, columns: columns, data: raw.baseAddress!)
                MatMul.pack(x, stride: columns, tokens: tokens, columns: columns, into: &packed, tiles: 0..<tokenTiles)
                MatMul.multiply(w, packed: packed, tokens: tokens, into: &y, yStride: stride,
                                tiles: 0..<MatMul.tileCount(rows: rows), scratch: &scratch)
            }
            var got: [Float] = []
            for t in 0..<tokens { got += y[(t * stride)..<(t * stride + rows)] }
            expectClose(got, expected, absolute: 2e-4, relative: 1e-4, "\(type) \(rows)x\(columns) x \(tokens) tokens")
            for t in 0..<tokens { for r in rows..<stride { #expect(y[t * stride + r].isNaN, "wrote outside the output rows") } }
        }
    }

    @Test("Q5_0 matrices become Q8_0 at load with exactly the same values")
    func q5_0AsQ8_0() {
        var random = TestRandom(55)
        let rows = 7, columns = 640
        let blocks = randomBlocks(.q5_0, count: rows * columns, random: &random)
        var original = [Float](repeating: 0, count: rows * columns), converted = original
        blocks.withUnsafeBytes { raw in
            let w = WeightMatrix(name: "w", type: .q5_0, rows: rows, columns: columns, data: raw.baseAddress!)
            let q8 = w.forComputing()
            #expect(q8.type == .q8_0 && q8.rows == rows && q8.columns == columns && q8.rowBytes == columns / 32 * 34)
            Dequantize.reference(.q5_0, raw.baseAddress!, count: rows * columns, into: &original)
            Dequantize.reference(.q8_0, q8.data, count: rows * columns, into: &converted)
        }
        #expect(original == converted)
        // Other types are used in place.
        let q4 = randomBlocks(.q4_K, count: 256, random: &random)
        q4.withUnsafeBytes { raw in
            let w = WeightMatrix(name: "w", type: .q4_K, rows: 1, columns: 256, data: raw.baseAddress!).forComputing()
            #expect(w.type == .q4_K && w.data == raw.baseAddress!)
        }
    }

    @Test("vectorised exp is accurate to a few ulps")
    func fastExp() {
        var random = TestRandom(3)
        var worst: Float = 0
        for _ in 0..<2000 {
            let x = Vec((0..<16).map { _ in random.float(-80...80) })
            let y = VectorOps.exp(x)
            for i in 0..<16 {
                let e = Float(Foundation.exp(Double(x[i])))
                worst = max(worst, abs(y[i] - e) / e)
            }
        }
        #expect(worst < 5e-7, "worst relative error \(worst)")
        let edge = VectorOps.exp(Vec(repeating: -Float.infinity))
        #expect(edge[0] >= 0 && edge[0] < 1e-37)
        #expect(VectorOps.exp(Vec(repeating: 0))[5] == 1)
    }

    @Test("softmax, RMSNorm, SwiGLU and RoPE match scalar code")
    func vectorOps() {
        var random = TestRandom(4)
        for n in [1, 15, 16, 33, 576] {
            let x = random.floats(n, -10...10)
            var s = x
            VectorOps.softmax(&s, count: n)
            let m = x.max()!
            let e = x.map { Foundation.exp(Double($0 - m)) }
            let total = e.reduce(0, +)
            expectClose(s, e.map { Float($0 / total) }, absolute: 1e-6, relative: 1e-5, "softmax \(n)")

            let w = random.floats(n)
            var out = [Float](repeating: 0, count: n)
            VectorOps.rmsNorm(x, weight: w, count: n, epsilon: 1e-5, into: &out)
            let rms = (x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n) + 1e-5).squareRoot()
            expectClose(out, (0..<n).map { Float(Double(x[$0]) / rms) * w[$0] }, absolute: 1e-5, relative: 1e-5, "rmsnorm \(n)")

            var g = x
            let up = random.floats(n)
            VectorOps.siluMultiply(&g, up, count: n)
            expectClose(g, (0..<n).map { x[$0] / (1 + Foundation.exp(-x[$0])) * up[$0] }, absolute: 1e-5, relative: 1e-5, "silu \(n)")
        }
        // RoPE: rotating by angle a then by -a is the identity, and pair (1, 0) goes to (cos, sin).
        var v = random.floats(2 * 64)
        let original = v
        let angles = (0..<16).map { Float($0) * 0.37 }
        let c = angles.map { cosf($0) }, s = angles.map { sinf($0) }, ns = s.map { -$0 }
        VectorOps.ropeNormal(&v, heads: 2, headDim: 64, ropeDim: 32, cos: c, sin: s)
        #expect(Array(v[32..<64]) == Array(original[32..<64]), "dimensions past ropeDim are untouched")
        VectorOps.ropeNormal(&v, heads: 2, headDim: 64, ropeDim: 32, cos: c, sin: ns)
        expectClose(v, original, absolute: 1e-5, "rope round trip")
        var unit = [Float](repeating: 0, count: 64)
        unit[6] = 1
        VectorOps.ropeNormal(&unit, heads: 1, headDim: 64, ropeDim: 64, cos: c + c, sin: s + s)
        #expect(abs(unit[6] - c[3]) < 1e-6 && abs(unit[7] - s[3]) < 1e-6)
    }

    @Test("attention matches a naive implementation", arguments: [64, 32])
    func attention(headDim: Int) {
        var random = TestRandom(5)
        let stride = headDim * 3
        for length in [1, 7, 100] {
            let q = random.floats(headDim)
            let keys = random.floats(length * stride)
            let values = random.floats(length * stride)
            var scores = [Float](repeating: 0, count: length)
            var out = [Float](repeating: 0, count: headDim)
            let scale = 1 / Float(headDim).squareRoot()
            Attention.attend(query: q, keys: keys, values: values, stride: stride, length: length, headDim: headDim,
                             scale: scale, scores: &scores, into: &out)
            var raw = (0..<length).map { j in (0..<headDim).reduce(0.0) { $0 + Double(q[$1] * keys[j * stride + $1]) } * Double(scale) }
            let m = raw.max()!
            raw = raw.map { Foundation.exp($0 - m) }
            let total = raw.reduce(0, +)
            let expected = (0..<headDim).map { d in Float((0..<length).reduce(0.0) { $0 + raw[$1] / total * Double(values[$1 * stride + d]) }) }
            expectClose(out, expected, absolute: 1e-5, relative: 1e-4, "attention length \(length)")
        }
    }

    @Test("tiled causal attention matches one query at a time")
    func attentionTile() {
        var random = TestRandom(6)
        let headDim = 64, stride = 192, queryStride = 576
        for (first, count) in [(0, 1), (0, 32), (7, 5), (40, 32), (3, 17)] {
            let keyCount = first + count
            let keys = random.floats(keyCount * stride), values = random.floats(keyCount * stride)
            let queries = random.floats(count * queryStride)
            var scratch = [Float](repeating: .nan, count: Attention.tileScratchCount(capacity: keyCount, headDim: headDim))
            var out = [Float](repeating: .nan, count: count * queryStride)
            Attention.attendTile(queries: queries, queryStride: queryStride, count: count, firstPosition: first,
                                 keys: keys, values: values, stride: stride, headDim: headDim, scale: 0.125,
                                 scratch: &scratch, into: &out, outStride: queryStride)
            for i in 0..<count {
                var scores = [Float](repeating: 0, count: keyCount)
                var expected = [Float](repeating: 0, count: headDim)
                Array(queries[(i * queryStride)..<(i * queryStride + headDim)]).withUnsafeBufferPointer { q in
                    Attention.attend(query: q.baseAddress!, keys: keys, values: values, stride: stride, length: first + i + 1,
                                     headDim: headDim, scale: 0.125, scores: &scores, into: &expected)
                }
                expectClose(Array(out[(i * queryStride)..<(i * queryStride + headDim)]), expected, absolute: 1e-5, relative: 1e-4,
                            "tile from \(first), query \(i)")
                #expect(out[i * queryStride + headDim].isNaN, "wrote past the head")
            }
        }
    }

    @Test("the thread pool runs every part exactly once and splits ranges evenly")
    func threadPool() {
        let pool = ThreadPool(threadCount: 3)
        #expect(pool.threadCount == 3)
        for count in [1, 2, 3, 10, 1001] {
            var hits = [Int](repeating: 0, count: count)
            hits.withUnsafeMutableBufferPointer { h in
                let base = h.baseAddress!
                pool.parallelFor(count) { range in for i in range { base[i] += 1 } }
            }
            #expect(hits.allSatisfy { $0 == 1 }, "count \(count)")
        }
        var covered = 0
        for part in 0..<4 { covered += ThreadPool.split(10, part: part, of: 4).count }
        #expect(covered == 10)
        #expect(ThreadPool.split(10, part: 0, of: 4) == 0..<3 && ThreadPool.split(10, part: 3, of: 4) == 8..<10)
    }
}
