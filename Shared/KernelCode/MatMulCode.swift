import Swift
import Kernels
import SIMDSupport

/// Matrix times many activation rows, for prompt processing. Compute-bound, so
/// it is tiled: a block of row tiles (`MatMul.rowTile` weight rows each) is
/// dequantised to f32 once and then applied to every token, 32 tokens at a
/// time, with 12 accumulator registers. Activations are packed first so the 32
/// tokens' values for one column sit side by side: `packed[tile][k][lane]`.
enum MatMulCode {
    /// Packs token tiles `tiles` of `x` (row `t` at `x + t * stride`), padding with zeros.
    static func pack(_ x: UnsafePointer<Float>, stride: Int, tokens: Int, columns: Int,
                            into packed: UnsafeMutablePointer<Float>, tiles: Range<Int>) {
        for tile in tiles {
            let out = packed + tile * MatMul.tokenTile * columns
            let first = tile * MatMul.tokenTile
            let count = min(MatMul.tokenTile, tokens - first)
            for lane in 0..<MatMul.tokenTile {
                if lane < count {
                    let src = x + (first + lane) * stride
                    var k = 0
                    while k < columns {
                        out[k * MatMul.tokenTile + lane] = src[k]
                        k += 1
                    }
                } else {
                    for k in 0..<columns { out[k * MatMul.tokenTile + lane] = 0 }
                }
            }
        }
    }

    /// `y[t * yStride + r] = w[r] . x[t]` for every token and for the row tiles
    /// `tiles` (tile i covers rows `i * MatMul.rowTile ..< (i + 1) * MatMul.rowTile`).
    /// `scratch` holds `scratchCount(columns: w.columns)` floats.
    static func multiply(_ w: WeightMatrix, packed: UnsafePointer<Float>, tokens: Int,
                                into y: UnsafeMutablePointer<Float>, yStride: Int,
                                tiles: Range<Int>, scratch: UnsafeMutablePointer<Float>) {
        let k = w.columns
        let tokenTiles = (tokens + MatMul.tokenTile - 1) / MatMul.tokenTile
        var first = tiles.lowerBound
        while first < tiles.upperBound {
            let end = min(first + MatMul.tilesPerBlock, tiles.upperBound)
            // Dequantise the block's rows, tile after tile, zero-padding the last tile.
            for tile in first..<end {
                let firstRow = tile * MatMul.rowTile, rowCount = min(MatMul.rowTile, w.rows - firstRow)
                let tileScratch = scratch + (tile - first) * MatMul.rowTile * k
                for r in 0..<rowCount {
                    DequantizeCode.row(w.type, w.row(firstRow + r), count: k, into: tileScratch + r * k)
                }
                if rowCount < MatMul.rowTile {
                    (tileScratch + rowCount * k).initialize(repeating: 0, count: (MatMul.rowTile - rowCount) * k)
                }
            }
            for t in 0..<tokenTiles {
                for tile in first..<end {
                    let firstRow = tile * MatMul.rowTile
                    kernel6x32(scratch + (tile - first) * MatMul.rowTile * k, rowStride: k, columns: k, packed + t * MatMul.tokenTile * k,
                               y: y, yStride: yStride, firstRow: firstRow, rowCount: min(MatMul.rowTile, w.rows - firstRow),
                               firstToken: t * MatMul.tokenTile, tokenCount: min(MatMul.tokenTile, tokens - t * MatMul.tokenTile))
                }
            }
            first = end
        }
    }

    /// Six f32 rows (`rowStride` apart) times 32 packed tokens, written to `y`
    /// for the first `rowCount` rows and `tokenCount` tokens. All six rows are read.
    @inline(__always)
    static func kernel6x32(_ w: UnsafePointer<Float>, rowStride: Int, columns k: Int, _ xp: UnsafePointer<Float>,
                           y: UnsafeMutablePointer<Float>, yStride: Int, firstRow: Int, rowCount: Int,
                           firstToken: Int, tokenCount: Int) {
        var a00 = Vec(), a01 = Vec(), a10 = Vec(), a11 = Vec(), a20 = Vec(), a21 = Vec()
        var a30 = Vec(), a31 = Vec(), a40 = Vec(), a41 = Vec(), a50 = Vec(), a51 = Vec()
        let w0 = w, w1 = w + rowStride, w2 = w + 2 * rowStride, w3 = w + 3 * rowStride
        let w4 = w + 4 * rowStride, w5 = w + 5 * rowStride
        var x = xp
        for i in 0..<k {
            let x0 = loadVec(x), x1 = loadVec(x + 16)
            let b0 = Vec(repeating: w0[i])
            a00.addProduct(b0, x0); a01.addProduct(b0, x1)
            let b1 = Vec(repeating: w1[i])
            a10.addProduct(b1, x0); a11.addProduct(b1, x1)
            let b2 = Vec(repeating: w2[i])
            a20.addProduct(b2, x0); a21.addProduct(b2, x1)
            let b3 = Vec(repeating: w3[i])
            a30.addProduct(b3, x0); a31.addProduct(b3, x1)
            let b4 = Vec(repeating: w4[i])
            a40.addProduct(b4, x0); a41.addProduct(b4, x1)
            let b5 = Vec(repeating: w5[i])
            a50.addProduct(b5, x0); a51.addProduct(b5, x1)
            x += 32
        }
        @inline(__always)
        func store(_ lo: Vec, _ hi: Vec, _ r: Int) {
            guard r < rowCount else { return }
            let out = y + firstRow + r
            for lane in 0..<min(16, tokenCount) { out[(firstToken + lane) * yStride] = lo[lane] }
            if tokenCount > 16 {
                for lane in 0..<(tokenCount - 16) { out[(firstToken + 16 + lane) * yStride] = hi[lane] }
            }
        }
        store(a00, a01, 0); store(a10, a11, 1); store(a20, a21, 2)
        store(a30, a31, 3); store(a40, a41, 4); store(a50, a51, 5)
    }
}
