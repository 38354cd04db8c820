import SIMDSupport

/// Scaled dot-product attention of one query head over cached keys and values.
public enum Attention {
    /// `out = softmax(q . K[j] * scale for j < length) . V`, where key and value
    /// `j` start at `keys + j * stride` and `values + j * stride`. `headDim` is a
    /// multiple of 16; `scores` holds `length` floats.
    @inline(__always)
    public static func attend(query q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                              stride: Int, length: Int, headDim: Int, scale: Float,
                              scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        if headDim == 64 {
            let q0 = loadVec(q), q1 = loadVec(q + 16), q2 = loadVec(q + 32), q3 = loadVec(q + 48)
            for j in 0..<length {
                let k = keys + j * stride
                var a = q0 * loadVec(k)
                var b = q1 * loadVec(k + 16)
                a.addProduct(q2, loadVec(k + 32))
                b.addProduct(q3, loadVec(k + 48))
                scores[j] = horizontalSum(a + b) * scale
            }
        } else {
            for j in 0..<length {
                scores[j] = MatVec.dotF32(q, keys + j * stride, count: headDim) * scale
            }
        }
        VectorOps.softmax(scores, count: length)
        if headDim == 64 {
            var o0 = Vec(), o1 = Vec(), o2 = Vec(), o3 = Vec()
            for j in 0..<length {
                let v = values + j * stride
                let s = Vec(repeating: scores[j])
                o0.addProduct(s, loadVec(v))
                o1.addProduct(s, loadVec(v + 16))
                o2.addProduct(s, loadVec(v + 32))
                o3.addProduct(s, loadVec(v + 48))
            }
            storeVec(o0, out); storeVec(o1, out + 16); storeVec(o2, out + 32); storeVec(o3, out + 48)
        } else {
            var d = 0
            while d < headDim {
                var o = Vec()
                for j in 0..<length { o.addProduct(Vec(repeating: scores[j]), loadVec(values + j * stride + d)) }
                storeVec(o, out + d)
                d += 16
            }
        }
    }
}

extension Attention {
    /// Queries per tile of `attendTile`.
    public static let queryTile = MatMul.tokenTile

    /// Floats of per-thread scratch `attendTile` needs for a cache of `capacity` positions.
    public static func tileScratchCount(capacity: Int, headDim: Int) -> Int {
        queryTile * headDim + MatMul.rowTile * headDim + queryTile * (capacity + MatMul.rowTile)
    }

    /// Causal attention for up to 32 consecutive queries of one head at once,
    /// as two small matrix products: scores = Q . K^T (the tiled kernel, keys
    /// as rows), then out = softmax(scores) . V (four queries by 64 value
    /// dimensions at a time in registers). Query `i` sits at position
    /// `firstPosition + i` and sees the keys from `max(0, position - window + 1)`
    /// (0 without a window) to its own position. `headDim` must be a multiple of 64.
    public static func attendTile(queries q: UnsafePointer<Float>, queryStride: Int, count: Int, firstPosition: Int,
                                  keys allKeys: UnsafePointer<Float>, values allValues: UnsafePointer<Float>, stride: Int,
                                  headDim: Int, scale: Float, window: Int? = nil, scratch: UnsafeMutablePointer<Float>,
                                  into out: UnsafeMutablePointer<Float>, outStride: Int) {
        precondition(headDim % 64 == 0 && count > 0 && count <= queryTile)
        func firstVisible(_ position: Int) -> Int { window.map { max(0, position - $0 + 1) } ?? 0 }
        // Keys before the first query's window are seen by none of the tile.
        let firstKey = firstVisible(firstPosition)
        let keys = allKeys + firstKey * stride, values = allValues + firstKey * stride
        let packed = scratch
        let tail = scratch + queryTile * headDim
        let scores = tail + MatMul.rowTile * headDim
        let keyCount = firstPosition + count - firstKey
        MatMul.pack(q, stride: queryStride, tokens: count, columns: headDim, into: packed, tiles: 0..<1)

        // scores[i * keyCount + j] = q_i . k_(firstKey + j)
        var j = 0
        while j < keyCount {
            let rows = min(MatMul.rowTile, keyCount - j)
            var rowPointer = keys + j * stride
            var rowStride = stride
            if rows < MatMul.rowTile {
                // Copy the last keys into a zero-padded tile: the kernel reads six rows.
                for r in 0..<MatMul.rowTile {
                    for e in 0..<headDim { tail[r * headDim + e] = r < rows ? keys[(j + r) * stride + e] : 0 }
                }
                rowPointer = UnsafePointer(tail)
                rowStride = headDim
            }
            MatMul.kernel6x32(rowPointer, rowStride: rowStride, columns: headDim, packed, y: scores, yStride: keyCount,
                              firstRow: j, rowCount: rows, firstToken: 0, tokenCount: count)
            j += rows
        }
        // Softmax of each query's visible keys; the others get weight 0.
        let s = Vec(repeating: scale)
        for i in 0..<count {
            let row = scores + i * keyCount
            let position = firstPosition + i
            let lo = firstVisible(position) - firstKey, end = position + 1 - firstKey
            var k = lo
            while k + 16 <= end { storeVec(loadVec(row + k) * s, row + k); k += 16 }
            while k < end { row[k] *= scale; k += 1 }
            VectorOps.softmax(row + lo, count: end - lo)
            for z in 0..<lo { row[z] = 0 }
            for z in end..<keyCount { row[z] = 0 }
        }
        // out_i = sum_j p_ij v_j, four queries and 64 value dimensions at a time.
        var i = 0
        while i < count {
            let n = min(4, count - i)
            for chunk in Swift.stride(from: 0, to: headDim, by: 64) {
                weightedValues4(scores + i * keyCount, rowStride: keyCount, rows: n, length: firstPosition + i + n - firstKey,
                                values: values + chunk, stride: stride, into: out + i * outStride + chunk, outStride: outStride)
            }
            i += n
        }
    }

    /// `out[r] = sum_j p[r][j] * v_j` for up to four rows of weights, over 64 value dimensions.
    @inline(__always)
    static func weightedValues4(_ p: UnsafePointer<Float>, rowStride: Int, rows: Int, length: Int,
                                values: UnsafePointer<Float>, stride: Int,
                                into out: UnsafeMutablePointer<Float>, outStride: Int) {
        let p0 = p, p1 = p + min(1, rows - 1) * rowStride, p2 = p + min(2, rows - 1) * rowStride, p3 = p + min(3, rows - 1) * rowStride
        var a00 = Vec(), a01 = Vec(), a02 = Vec(), a03 = Vec()
        var a10 = Vec(), a11 = Vec(), a12 = Vec(), a13 = Vec()
        var a20 = Vec(), a21 = Vec(), a22 = Vec(), a23 = Vec()
        var a30 = Vec(), a31 = Vec(), a32 = Vec(), a33 = Vec()
        for j in 0..<length {
            let v = values + j * stride
            let v0 = loadVec(v), v1 = loadVec(v + 16), v2 = loadVec(v + 32), v3 = loadVec(v + 48)
            let b0 = Vec(repeating: p0[j])
            a00.addProduct(b0, v0); a01.addProduct(b0, v1); a02.addProduct(b0, v2); a03.addProduct(b0, v3)
            let b1 = Vec(repeating: p1[j])
            a10.addProduct(b1, v0); a11.addProduct(b1, v1); a12.addProduct(b1, v2); a13.addProduct(b1, v3)
            let b2 = Vec(repeating: p2[j])
            a20.addProduct(b2, v0); a21.addProduct(b2, v1); a22.addProduct(b2, v2); a23.addProduct(b2, v3)
            let b3 = Vec(repeating: p3[j])
            a30.addProduct(b3, v0); a31.addProduct(b3, v1); a32.addProduct(b3, v2); a33.addProduct(b3, v3)
        }
        @inline(__always)
        func store(_ r: Int, _ x0: Vec, _ x1: Vec, _ x2: Vec, _ x3: Vec) {
            guard r < rows else { return }
            let o = out + r * outStride
            storeVec(x0, o); storeVec(x1, o + 16); storeVec(x2, o + 32); storeVec(x3, o + 48)
        }
        store(0, a00, a01, a02, a03); store(1, a10, a11, a12, a13)
        store(2, a20, a21, a22, a23); store(3, a30, a31, a32, a33)
    }
}
