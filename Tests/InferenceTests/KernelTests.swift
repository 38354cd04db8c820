import Foundation
import Inference
import SIMDSupport
import Kernels
import TestKit
import Testing

@Suite("Dequantisation and SIMD kernels")
struct KernelTests {
    @Test("dequantisation matches gguf.quants on random blocks", arguments: paths)
    func dequantMatchesGGUFPackage(path: KernelPath) throws {
        let k = try kernels(path)
        let data = try Data(contentsOf: TestSupport.fixtures.appendingPathComponent("quants/dequant.json"))
        let root = try JSONRead.object(data, "quants/dequant.json")
        let cases = try JSONRead.value(root, "cases", as: [[String: Any]].self)
        #expect(cases.count == 13)
        for c in cases {
            let name = try JSONRead.value(c, "type", as: String.self)
            let type = try #require(GGMLType.allCases.first { $0.description == name }, "unknown type \(name)")
            let count = try JSONRead.value(c, "count", as: Int.self)
            let hex = try JSONRead.value(c, "hex", as: String.self)
            var bytes: [UInt8] = []
            var i = hex.startIndex
            while i < hex.endIndex {
                let j = hex.index(i, offsetBy: 2)
                bytes.append(try #require(UInt8(hex[i..<j], radix: 16), "\(name): '\(hex[i..<j])' is not hex"))
                i = j
            }
            let expected = try JSONRead.doubles(c, "values").map(Float.init)
            try #require(type.byteCount(values: count) == bytes.count && expected.count == count,
                         "\(name): \(bytes.count) bytes and \(expected.count) values for \(count) values")
            var reference = [Float](repeating: 0, count: count)
            var fast = [Float](repeating: 0, count: count)
            bytes.withUnsafeBytes { raw in
                Dequantize.reference(type, raw.baseAddress!, count: count, into: &reference)
                k.dequantizeRow(type, raw.baseAddress!, count: count, into: &fast)
            }
            expectClose(reference, expected, absolute: 1e-6, relative: 1e-6, "\(name) reference")
            expectClose(fast, expected, absolute: 1e-6, relative: 1e-6, "\(name) SIMD")
        }
    }

    /// Every kernel path this build has and this CPU runs (the portable one always).
    static let paths = KernelSelection.available().map(\.path)

    func kernels(_ path: KernelPath) throws -> PathKernels {
        PathKernels(table: try #require(KernelSelection.compiled.first { $0.path == path }))
    }

    static let types: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]
    static let quantizedTypes = types.filter(PackedMatrix.packs)
    static let floatTypes: [GGMLType] = [.f32, .f16, .bf16]

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

    @Test("activation quantisation: 8-bit values, per-block scale, sums of blocks and halves", arguments: paths)
    func quantizeActivations(path: KernelPath) throws {
        let k = try kernels(path)
        var random = TestRandom(11)
        let x = random.floats(96, -3...3) + [Float](repeating: 0, count: 32)
        let batch = ActivationBatch(capacity: 2, width: 128)
        k.quantize(batch, x, count: 128, column: 1)
        let q = batch.values(1)
        for b in 0..<4 {
            let block = x[(b * 32)..<(b * 32 + 32)]
            let amax = block.map(abs).max()!
            let d = batch.scale(1, block: b)
            // As llama.cpp's Q8_0: the scale rounded to f16, the values from 127 / amax.
            #expect(d == Float(Float16(amax / 127)))
            var sum: Float = 0, low: Float = 0
            for i in 0..<32 {
                let v = q[b * 32 + i]
                #expect(abs(Int(v)) <= 127)
                if amax > 0 { #expect(Int(v) == Int((x[b * 32 + i] * (127 / amax)).rounded(.toNearestOrEven))) }
                sum += Float(v)
                if i < 16 { low += Float(v) }
                if amax > 0 { #expect(abs(Float(v) * d - x[b * 32 + i]) <= d / 2 + 1e-3 * d * 127) }
            }
            #expect(abs(batch.sum(1, block: b) - sum * d) < 1e-4 && abs(batch.halfSum(1, block: b, half: 0) - low * d) < 1e-4)
        }
        #expect(batch.scale(1, block: 3) == 0 && batch.sum(1, block: 3) == 0, "an all-zero block quantises to zeros")
    }

    /// quantize_row_q8_K_ref, as written in ggml: the value of largest
    /// magnitude with its sign, iscale = -127 / max, nearest_int (ties to even),
    /// d = 1 / iscale.
    static func ggmlQ8K(_ x: [Float]) -> (d: Float, q: [Int8]) {
        var amax: Float = 0, maxValue: Float = 0
        for v in x where abs(v) > amax { amax = abs(v); maxValue = v }
        if amax == 0 { return (0, [Int8](repeating: 0, count: x.count)) }
        let iscale = -127 / maxValue
        return (1 / iscale, x.map { Int8(min(127, Int(($0 * iscale).rounded(.toNearestOrEven)))) })
    }

    @Test("K-quants' activations are quantised as llama.cpp's Q8_K: one scale per 256 values, the same products as ggml's", arguments: paths)
    func quantizeSuperBlocks(path: KernelPath) throws {
        let k = try kernels(path)
        var random = TestRandom(12)
        // A block with its largest value positive, one with it negative, one all zero,
        // and one with a lone spike (every other value then rounds to few levels).
        var x = random.floats(256, -3...3) + random.floats(256, -3...3) + [Float](repeating: 0, count: 256) + random.floats(256, -0.01...0.01)
        let positive = x[0..<256].map(abs).max()!, negative = x[256..<512].map(abs).max()!
        if let i = x[0..<256].firstIndex(where: { abs($0) == positive }) { x[i] = positive }
        if let i = x[256..<512].firstIndex(where: { abs($0) == negative }) { x[i] = -negative }
        x[800] = 40
        let batch = ActivationBatch(capacity: 2, width: 1024, format: .q8_K)
        k.quantize(batch, x, count: 1024, column: 1)
        let q = batch.values(1)
        for s in 0..<4 {
            let (d, expected) = Self.ggmlQ8K(Array(x[(s * 256)..<(s * 256 + 256)]))
            for b in (s * 8)..<(s * 8 + 8) {
                #expect(batch.scale(1, block: b) == abs(d), "super-block \(s): one scale for its 8 blocks")
                var sum: Int32 = 0
                for i in 0..<32 {
                    let j = b * 32 + i, mine = q[j], theirs = expected[j - s * 256]
                    // ggml's sign convention may negate both scale and value: the products are the same.
                    #expect(Float(mine) * batch.scale(1, block: b) == Float(theirs) * d, "value \(j)")
                    sum += Int32(mine)
                }
                #expect(batch.integerSum(1, block: b) == sum)
            }
        }
        #expect(batch.scale(1, block: 16) == 0, "an all-zero super-block quantises to zeros")
        #expect(ActivationFormat(pairedWith: .q4_K) == .q8_K && ActivationFormat(pairedWith: .q6_K) == .q8_K
                    && ActivationFormat(pairedWith: .q4_0) == .q8_0 && ActivationFormat(pairedWith: .q5_1) == .q8_0)
    }

    @Test("packed matrices hold exactly ggml's values, and the integer kernel matches the scalar reference", arguments: quantizedTypes, paths)
    func packed(type: GGMLType, path: KernelPath) throws {
        let k = try kernels(path)
        var random = TestRandom(UInt64(type.rawValue) + 7)
        // Row counts that are and are not multiples of the 16-row groups.
        for (rows, columns) in type.blockSize == 256 ? [(5, 256), (17, 512), (48, 1536)] : [(5, 32), (17, 96), (64, 576), (3, 1536)] {
            let blocks = randomBlocks(type, count: rows * columns, random: &random)
            let batch = ActivationBatch(capacity: 11, width: columns, format: ActivationFormat(pairedWith: type))
            let xs = (0..<11).map { _ in random.floats(columns, -2...2) }
            for (c, x) in xs.enumerated() { k.quantize(batch, x, count: columns, column: c) }
            try blocks.withUnsafeBytes { raw in
                let packed = try #require(PackedMatrix(type: type, rows: rows, columns: columns, source: raw.baseAddress!))
                var row = [Float](repeating: 0, count: columns), expected = row
                let rowBytes = type.byteCount(values: columns)!
                for r in 0..<rows {
                    packed.dequantizeRow(r, into: &row)
                    Dequantize.reference(type, raw.baseAddress! + r * rowBytes, count: columns, into: &expected)
                    #expect(row == expected, "\(type) row \(r) of \(rows)x\(columns)")
                }
                // All 11 columns at once (tiles of 8, 2 and 1), with a stride wider than the rows.
                let stride = rows + 3
                var y = [Float](repeating: .nan, count: 11 * stride)
                k.multiply(packed, batch, columns: 0..<11, into: &y, stride: stride, groups: 0..<packed.groups)
                for c in 0..<11 {
                    // The reference multiplies by exactly the 8-bit activations.
                    let q = batch.values(c)
                    let quantizedX = (0..<columns).map { Float(q[$0]) * batch.scale(c, block: $0 / 32) }
                    let reference = referenceMatVec(type, blocks, rows: rows, columns: columns, quantizedX)
                    expectClose(Array(y[(c * stride)..<(c * stride + rows)]), reference, absolute: 2e-4, relative: 1e-4,
                                "\(type) \(rows)x\(columns) column \(c)")
                    for r in rows..<stride { #expect(y[c * stride + r].isNaN, "wrote past the rows") }
                    // And the 8-bit activations stay within their rounding of the exact
                    // product: each activation is off by at most half its block's step
                    // (and, for Q8_0's f16 scale, by up to 127 of the scale's rounding).
                    let exact = referenceMatVec(type, blocks, rows: rows, columns: columns, xs[c])
                    for r in 0..<rows {
                        Dequantize.reference(type, raw.baseAddress! + r * rowBytes, count: columns, into: &expected)
                        var bound: Float = 1e-3
                        for k in 0..<columns { bound += abs(expected[k]) * batch.scale(c, block: k / 32) * (0.5 + 127.0 / 2048) }
                        #expect(abs(y[c * stride + r] - exact[r]) <= bound * 1.001, "\(type) row \(r): \(y[c * stride + r]) vs \(exact[r])")
                    }
                }
                // A column gives the same bits alone, in any tile, and on any split of the groups.
                var alone = [Float](repeating: 0, count: rows)
                for c in [0, 5, 10] {
                    k.multiply(packed, batch, columns: c..<(c + 1), into: &alone, stride: rows, groups: 0..<packed.groups)
                    #expect(alone == Array(y[(c * stride)..<(c * stride + rows)]), "\(type) column \(c) alone")
                }
                if packed.groups > 1 {
                    var split = [Float](repeating: 0, count: 4 * stride)
                    k.multiply(packed, batch, columns: 3..<7, into: &split, stride: stride, groups: 0..<1)
                    k.multiply(packed, batch, columns: 3..<7, into: &split, stride: stride, groups: 1..<packed.groups)
                    for c in 0..<4 {
                        #expect(Array(split[(c * stride)..<(c * stride + rows)]) == Array(y[((3 + c) * stride)..<((3 + c) * stride + rows)]),
                                "\(type) groups split")
                    }
                }
            }
        }
    }

    @Test("every path quantises activations and runs the packed kernel exactly as the portable path does, for every type and tile",
          arguments: quantizedTypes)
    func packedPathsAgree(type: GGMLType) throws {
        var random = TestRandom(UInt64(type.rawValue) + 101)
        let rows = 40, columns = type.blockSize == 256 ? 512 : 96
        let blocks = randomBlocks(type, count: rows * columns, random: &random)
        let xs = (0..<15).map { _ in random.floats(columns, -3...3) }
        let portable = try kernels(.portable)
        let batch = ActivationBatch(capacity: 15, width: columns, format: ActivationFormat(pairedWith: type))
        for (c, x) in xs.enumerated() { portable.quantize(batch, x, count: columns, column: c) }
        try blocks.withUnsafeBytes { raw in
            let packed = try #require(PackedMatrix(type: type, rows: rows, columns: columns, source: raw.baseAddress!))
            var expected = [Float](repeating: .nan, count: 15 * rows)
            portable.multiply(packed, batch, columns: 0..<15, into: &expected, stride: rows, groups: 0..<packed.groups)
            for path in Self.paths where path != .portable {
                let k = try kernels(path)
                let own = ActivationBatch(capacity: 15, width: columns, format: batch.format)
                for (c, x) in xs.enumerated() {
                    k.quantize(own, x, count: columns, column: c)
                    let same = (0..<columns).allSatisfy { own.values(c)[$0] == batch.values(c)[$0] }
                        && (0..<(columns / 32)).allSatisfy { b in
                            own.scale(c, block: b) == batch.scale(c, block: b) && own.sum(c, block: b) == batch.sum(c, block: b)
                                && own.halfSum(c, block: b, half: 1) == batch.halfSum(c, block: b, half: 1)
                                && own.integerSum(c, block: b) == batch.integerSum(c, block: b)
                        }
                    #expect(same, "\(path) quantises column \(c) differently")
                }
                var y = [Float](repeating: .nan, count: 15 * rows)
                k.multiply(packed, batch, columns: 0..<15, into: &y, stride: rows, groups: 0..<packed.groups)
                #expect(y == expected, "\(type) on \(path): \(zip(y, expected).filter { $0 != $1 }.count) of \(y.count) differ")
            }
        }
    }

    @Test("every path's byte dot products and the widened-product reductions the kernels use agree with scalar arithmetic",
          arguments: paths)
    func integerReductions(path: KernelPath) throws {
        let k = try kernels(path)
        // The toolchain turns a hand-written tree reduction of a widened u8 x i8
        // product into vpdpbusd and drops part of the sum; the kernels only use
        // dotBytes (the instruction itself) and .wrappedSum(), checked here on
        // random bytes over their whole range.
        var random = TestRandom(21)
        for _ in 0..<200 {
            let a = (0..<64).map { _ in random.byte() }, b = (0..<64).map { _ in Int8(bitPattern: random.byte()) }
            let acc = SIMD16<Int32>((0..<16).map { _ in Int32(random.int(-100_000..<100_000)) })
            var va = SIMD64<UInt8>(), vb = SIMD64<Int8>()
            for i in 0..<64 { va[i] = a[i]; vb[i] = b[i] }
            // Any bytes (Q8_0's quants), and bytes of at most 63 (the other types'),
            // against activations in -127...127 (what quantisation makes).
            vb.replace(with: SIMD64<Int8>(repeating: -127), where: vb .== -128)
            let small = va & SIMD64<UInt8>(repeating: 63)
            let wide = k.byteDot(acc, va, vb), narrow = k.byteDotSmall(acc, small, vb)
            for lane in 0..<16 {
                var expected = acc[lane], expectedSmall = acc[lane]
                for i in 0..<4 {
                    expected += Int32(va[4 * lane + i]) * Int32(vb[4 * lane + i])
                    expectedSmall += Int32(small[4 * lane + i]) * Int32(vb[4 * lane + i])
                }
                #expect(wide[lane] == expected, "\(path) lane \(lane)")
                #expect(narrow[lane] == expectedSmall, "\(path) lane \(lane), small bytes")
            }
            // The pattern itself, reduced with .wrappedSum() as the activation sums are.
            let x = SIMD16<UInt8>(a[0..<16]), y = SIMD16<Int8>(b[0..<16])
            var scalar: Int32 = 0
            for k in 0..<16 { scalar += Int32(a[k]) * Int32(b[k]) }
            #expect((widen(x) &* widen(y)).wrappedSum() == scalar)
        }
        // The extremes, where 16-bit intermediate sums would saturate.
        for (a, b) in [(UInt8(255), Int8(-127)), (255, 127), (63, 127), (63, -127)] {
            let got = a > 63 ? k.byteDot(SIMD16<Int32>(), SIMD64(repeating: a), SIMD64(repeating: b))
                : k.byteDotSmall(SIMD16<Int32>(), SIMD64(repeating: a), SIMD64(repeating: b))
            #expect(got == SIMD16<Int32>(repeating: 4 * Int32(a) * Int32(b)), "\(path): \(a) x \(b)")
        }
    }

    @Test("float matrix-vector kernels match the scalar reference", arguments: floatTypes, paths)
    func matVec(type: GGMLType, path: KernelPath) throws {
        let k = try kernels(path)
        var random = TestRandom(UInt64(type.rawValue) + 7)
        for (rows, columns) in [(5, 32), (17, 96), (64, 576), (3, 1536), (2, 40)] {
            let blocks = randomBlocks(type, count: rows * columns, random: &random)
            let x = random.floats(columns, -2...2)
            let expected = referenceMatVec(type, blocks, rows: rows, columns: columns, x)
            var y = [Float](repeating: .nan, count: rows)
            blocks.withUnsafeBytes { raw in
                let w = WeightMatrix(name: "w", type: type, rows: rows, columns: columns, data: raw.baseAddress!)
                k.matVec(w, x, into: &y, rows: 0..<rows)
            }
            expectClose(y, expected, absolute: 2e-4, relative: 1e-4, "\(type) \(rows)x\(columns)")
            // Several activation columns at once: each column gets the bits it gets alone.
            for n in [2, 4, 5, 9] {
                let xs = random.floats(n * columns, -2...2)
                var many = [Float](repeating: .nan, count: n * (rows + 1))
                var single = [Float](repeating: .nan, count: rows)
                blocks.withUnsafeBytes { raw in
                    let w = WeightMatrix(name: "w", type: type, rows: rows, columns: columns, data: raw.baseAddress!)
                    k.matVec(w, xs, stride: columns, columns: n, into: &many, yStride: rows + 1, rows: 0..<rows)
                    for c in 0..<n {
                        Array(xs[(c * columns)..<((c + 1) * columns)]).withUnsafeBufferPointer {
                            k.matVec(w, $0.baseAddress!, into: &single, rows: 0..<rows)
                        }
                        #expect(Array(many[(c * (rows + 1))..<(c * (rows + 1) + rows)]) == single, "\(type) column \(c) of \(n)")
                        #expect(many[c * (rows + 1) + rows].isNaN, "wrote past the rows")
                    }
                }
            }
        }
    }

    @Test("tiled matrix multiplication matches the scalar reference", arguments: floatTypes, paths)
    func matMul(type: GGMLType, path: KernelPath) throws {
        let k = try kernels(path)
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
                k.pack(x, stride: columns, tokens: tokens, columns: columns, into: &packed, tiles: 0..<tokenTiles)
                k.matMul(w, packed: packed, tokens: tokens, into: &y, yStride: stride,
                                tiles: 0..<MatMul.tileCount(rows: rows), scratch: &scratch)
            }
            var got: [Float] = []
            for t in 0..<tokens { got += y[(t * stride)..<(t * stride + rows)] }
            expectClose(got, expected, absolute: 2e-4, relative: 1e-4, "\(type) \(rows)x\(columns) x \(tokens) tokens")
            for t in 0..<tokens { for r in rows..<stride { #expect(y[t * stride + r].isNaN, "wrote outside the output rows") } }
        }
    }

    @Test("vectorised exp is accurate to a few ulps", arguments: paths)
    func fastExp(path: KernelPath) throws {
        let k = try kernels(path)
        var random = TestRandom(3)
        var worst: Float = 0
        for _ in 0..<2000 {
            let x = Vec((0..<16).map { _ in random.float(-80...80) })
            let y = k.table.exp(x)
            for i in 0..<16 {
                let e = Float(Foundation.exp(Double(x[i])))
                worst = max(worst, abs(y[i] - e) / e)
            }
        }
        #expect(worst < 5e-7, "worst relative error \(worst)")
        let edge = k.table.exp(Vec(repeating: -Float.infinity))
        #expect(edge[0] >= 0 && edge[0] < 1e-37)
        #expect(k.table.exp(Vec(repeating: 0))[5] == 1)
    }

    @Test("softmax, RMSNorm, SwiGLU and RoPE match scalar code", arguments: paths)
    func vectorOps(path: KernelPath) throws {
        let k = try kernels(path)
        var random = TestRandom(4)
        for n in [1, 15, 16, 33, 576] {
            let x = random.floats(n, -10...10)
            var s = x
            k.softmax(&s, count: n)
            let m = x.max()!
            let e = x.map { Foundation.exp(Double($0 - m)) }
            let total = e.reduce(0, +)
            expectClose(s, e.map { Float($0 / total) }, absolute: 1e-6, relative: 1e-5, "softmax \(n)")

            let w = random.floats(n)
            var out = [Float](repeating: 0, count: n)
            k.rmsNorm(x, weight: w, count: n, epsilon: 1e-5, into: &out)
            let rms = (x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n) + 1e-5).squareRoot()
            expectClose(out, (0..<n).map { Float(Double(x[$0]) / rms) * w[$0] }, absolute: 1e-5, relative: 1e-5, "rmsnorm \(n)")

            var g = x
            let up = random.floats(n)
            k.siluMultiply(&g, up, count: n)
            expectClose(g, (0..<n).map { x[$0] / (1 + Foundation.exp(-x[$0])) * up[$0] }, absolute: 1e-5, relative: 1e-5, "silu \(n)")
        }
        // RoPE: rotating by angle a then by -a is the identity, and pair (1, 0) goes to (cos, sin).
        var v = random.floats(2 * 64)
        let original = v
        let angles = (0..<16).map { Float($0) * 0.37 }
        let c = angles.map { cosf($0) }, s = angles.map { sinf($0) }, ns = s.map { -$0 }
        k.ropeNormal(&v, heads: 2, headDim: 64, ropeDim: 32, cos: c, sin: s)
        #expect(Array(v[32..<64]) == Array(original[32..<64]), "dimensions past ropeDim are untouched")
        k.ropeNormal(&v, heads: 2, headDim: 64, ropeDim: 32, cos: c, sin: ns)
        expectClose(v, original, absolute: 1e-5, "rope round trip")
        var unit = [Float](repeating: 0, count: 64)
        unit[6] = 1
        k.ropeNormal(&unit, heads: 1, headDim: 64, ropeDim: 64, cos: c + c, sin: s + s)
        #expect(abs(unit[6] - c[3]) < 1e-6 && abs(unit[7] - s[3]) < 1e-6)
    }

    /// softmax(q . K * scale) . V in double precision; with `halfWeights`, the
    /// softmax's weights rounded to f16 (as llama.cpp multiplies them by f16 values).
    func referenceAttention(_ q: ArraySlice<Float>, _ keys: [Float], _ values: [Float], stride: Int, length: Int, scale: Float,
                            halfWeights: Bool = false) -> [Float] {
        let q = Array(q), headDim = q.count
        var raw = (0..<length).map { j in (0..<headDim).reduce(0.0) { $0 + Double(q[$1]) * Double(keys[j * stride + $1]) } * Double(scale) }
        let m = raw.max()!
        raw = raw.map { Foundation.exp($0 - m) }
        let total = raw.reduce(0, +)
        let p = raw.map { halfWeights ? Double(Float16(Float($0 / total))) : $0 / total }
        return (0..<headDim).map { d in Float((0..<length).reduce(0.0) { $0 + p[$1] * Double(values[$1 * stride + d]) }) }
    }

    @Test("attention over f32 and f16 caches matches a naive implementation; a query's result is independent of its group",
          arguments: [16, 32, 64, 128, 256], paths)
    func attention(headDim: Int, path: KernelPath) throws {
        let k = try kernels(path)
        var random = TestRandom(UInt64(5 + headDim))
        let stride = headDim * 3 + 16
        for length in [1, 3, 4, 7, 100] {
            let keys = random.floats(length * stride), values = random.floats(length * stride)
            let scale = 1 / Float(headDim).squareRoot()
            // f32, one query.
            let q = random.floats(4 * headDim)
            var scores = [Float](repeating: 0, count: 4 * length)
            var out = [Float](repeating: .nan, count: 4 * headDim)
            k.attend(query: q, keys: keys, values: values, stride: stride, length: length, headDim: headDim,
                             scale: scale, scores: &scores, into: &out)
            expectClose(Array(out[0..<headDim]), referenceAttention(q[0..<headDim], keys, values, stride: stride, length: length, scale: scale),
                        absolute: 1e-5, relative: 1e-4, "f32 attention, head \(headDim), length \(length)")
            // f16, groups of one to four queries over the same keys and values.
            let halfKeys = keys.map { Float16($0) }, halfValues = values.map { Float16($0) }
            let roundedKeys = halfKeys.map { Float($0) }, roundedValues = halfValues.map { Float($0) }
            var alone: [[Float]] = []
            for count in 1...Attention.groupLimit {
                out = [Float](repeating: .nan, count: 4 * headDim + 1)
                k.attendGroup(queries: q, count: count, keys: halfKeys, values: halfValues, stride: stride, length: length,
                                      headDim: headDim, scale: scale, scores: &scores, into: &out)
                #expect(out[count * headDim].isNaN, "wrote past the group")
                for i in 0..<count {
                    let got = Array(out[(i * headDim)..<((i + 1) * headDim)])
                    let expected = referenceAttention(q[(i * headDim)..<((i + 1) * headDim)], roundedKeys, roundedValues,
                                                      stride: stride, length: length, scale: scale, halfWeights: true)
                    // A weight within float rounding of an f16 rounding boundary may go either way: 2^-11 of it.
                    expectClose(got, expected, absolute: 1e-4, relative: 1e-4, "f16 group of \(count), query \(i), head \(headDim), length \(length)")
                    if count == 1 { alone.append(got) }
                }
                if count == Attention.groupLimit {
                    // Each query alone (count 1 on its own pointer) gives the same bits as in the group.
                    for i in 0..<count {
                        var single = [Float](repeating: .nan, count: headDim)
                        q.withUnsafeBufferPointer { qp in
                            k.attendGroup(queries: qp.baseAddress! + i * headDim, count: 1, keys: halfKeys, values: halfValues,
                                                  stride: stride, length: length, headDim: headDim, scale: scale, scores: &scores, into: &single)
                        }
                        #expect(single == Array(out[(i * headDim)..<((i + 1) * headDim)]), "query \(i) depends on its group")
                    }
                }
            }
        }
    }

    @Test("tiled causal attention matches one query at a time", arguments: paths)
    func attentionTile(path: KernelPath) throws {
        let k = try kernels(path)
        var random = TestRandom(6)
        let headDim = 64, stride = 64, queryStride = 576
        for (first, count) in [(0, 1), (0, 32), (7, 5), (40, 32), (3, 17)] {
            let keyCount = first + count
            let keys = random.floats(keyCount * stride).map { Float16($0) }, values = random.floats(keyCount * stride).map { Float16($0) }
            let queries = random.floats(count * queryStride)
            var scratch = [Float](repeating: .nan, count: Attention.tileScratchCount(capacity: keyCount, headDim: headDim))
            var out = [Float](repeating: .nan, count: count * queryStride)
            k.attendTile(queries: queries, queryStride: queryStride, count: count, firstPosition: first,
                                 keys: keys, values: values, stride: stride, headDim: headDim, scale: 0.125,
                                 scratch: &scratch, into: &out, outStride: queryStride)
            for i in 0..<count {
                var scores = [Float](repeating: 0, count: keyCount)
                var expected = [Float](repeating: 0, count: headDim)
                Array(queries[(i * queryStride)..<(i * queryStride + headDim)]).withUnsafeBufferPointer { q in
                    k.attendGroup(queries: q.baseAddress!, count: 1, keys: keys, values: values, stride: stride,
                                          length: first + i + 1, headDim: headDim, scale: 0.125, scores: &scores, into: &expected)
                }
                // The weights are rounded to f16 after sums in another order: one may round the other way.
                expectClose(Array(out[(i * queryStride)..<(i * queryStride + headDim)]), expected, absolute: 1e-4, relative: 1e-4,
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

/// One path's kernels, called as the model code calls the chosen ones.
struct PathKernels {
    let table: KernelTable

    func byteDot(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> { table.byteDot(acc, a, b) }
    func byteDotSmall(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> { table.byteDotSmall(acc, a, b) }
    func dequantizeRow(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        table.dequantizeRow(type, src, count, dst)
    }
    func quantize(_ batch: ActivationBatch, _ x: UnsafePointer<Float>, count: Int, column: Int) { table.quantize(batch, x, count, column) }
    func multiply(_ m: PackedMatrix, _ batch: ActivationBatch, columns: Range<Int>, into output: UnsafeMutablePointer<Float>, stride: Int,
                  groups: Range<Int>) {
        table.packedMultiply(m, batch, columns, output, stride, groups)
    }
    func matVec(_ w: WeightMatrix, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        table.matVec(w, x, w.columns, 1, y, 0, rows)
    }
    func matVec(_ w: WeightMatrix, _ x: UnsafePointer<Float>, stride: Int, columns: Int, into y: UnsafeMutablePointer<Float>, yStride: Int,
                rows: Range<Int>) {
        table.matVec(w, x, stride, columns, y, yStride, rows)
    }
    func pack(_ x: UnsafePointer<Float>, stride: Int, tokens: Int, columns: Int, into packed: UnsafeMutablePointer<Float>, tiles: Range<Int>) {
        table.matMulPack(x, stride, tokens, columns, packed, tiles)
    }
    func matMul(_ w: WeightMatrix, packed: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>, yStride: Int,
                tiles: Range<Int>, scratch: UnsafeMutablePointer<Float>) {
        table.matMul(w, packed, tokens, y, yStride, tiles, scratch)
    }
    func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) { table.softmax(x, count) }
    func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int, epsilon: Float, into out: UnsafeMutablePointer<Float>) {
        table.rmsNorm(x, weight, count, epsilon, out)
    }
    func siluMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) { table.siluMultiply(gate, up, count) }
    func geluTanhMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) { table.geluTanhMultiply(gate, up, count) }
    func ropeNormal(_ v: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, ropeDim: Int, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        table.ropeNormal(v, heads, headDim, ropeDim, cos, sin)
    }
    func attend(query q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, stride: Int, length: Int,
                headDim: Int, scale: Float, scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        table.attend(q, keys, values, stride, length, headDim, scale, scores, out)
    }
    func attendGroup(queries q: UnsafePointer<Float>, count: Int, keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>, stride: Int,
                     length: Int, headDim: Int, scale: Float, scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        table.attendGroup(q, count, keys, values, stride, length, headDim, scale, scores, out)
    }
    func attendTile(queries q: UnsafePointer<Float>, queryStride: Int, count: Int, firstPosition: Int, keys: UnsafePointer<Float16>,
                    values: UnsafePointer<Float16>, stride: Int, headDim: Int, scale: Float, window: Int? = nil,
                    scratch: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>, outStride: Int) {
        table.attendTile(q, queryStride, count, firstPosition, keys, values, stride, headDim, scale, window, scratch, out, outStride)
    }
}
