import Swift
import Kernels
import SIMDSupport

/// Matrix times vector for float (F32, F16, BF16) weights against f32
/// activations, row by row. (Quantised matrices are multiplied by the
/// integer kernels on their packed copies: `PackedMatrix.multiply`.)
enum MatVecCode {
    /// `y[c * yStride + r] = w[r] . x[c * stride ...]` for `r` in `rows` and
    /// `c` in `0 ..< columns`: each weight row is read once for every four
    /// activation columns. A column's result is the same whatever the number
    /// of columns beside it.
    static func multiply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, stride: Int, columns: Int,
                                into y: UnsafeMutablePointer<Float>, yStride: Int, rows: Range<Int>) {
        let n = w.columns
        switch w.type {
        case .bf16:
            for r in rows {
                let row = w.row(r)
                dots(n, columns, x, stride, y + r, yStride, load: { bf16ToFloat(row + 2 * $0) },
                     scalar: { Float(bitPattern: UInt32(row.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) << 16) })
            }
        case .f16:
            for r in rows {
                let row = w.row(r)
                dots(n, columns, x, stride, y + r, yStride,
                     load: { toFloat(row.loadUnaligned(fromByteOffset: 2 * $0, as: SIMD16<Float16>.self)) },
                     scalar: { Float(Float16(bitPattern: row.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) })
            }
        case .f32:
            for r in rows {
                let row = w.row(r).assumingMemoryBound(to: Float.self)
                dots(n, columns, x, stride, y + r, yStride, load: { loadVec(row + $0) }, scalar: { row[$0] })
            }
        default:
            preconditionFailure("\(w.type) is multiplied through its packed copy")
        }
    }

    /// One weight row (16 values from `load(i)`, one from `scalar(i)`) dotted
    /// with `columns` activation columns, four at a time. Every column sums in
    /// the same order: alternate 16-value chunks into two accumulators, a last
    /// chunk into the first, the values past the last chunk one by one.
    @inline(__always)
    static func dots(_ n: Int, _ columns: Int, _ x: UnsafePointer<Float>, _ stride: Int,
                     _ y: UnsafeMutablePointer<Float>, _ yStride: Int,
                     load: (Int) -> Vec, scalar: (Int) -> Float) {
        var c = 0
        while c + 4 <= columns {
            let x0 = x + c * stride, x1 = x0 + stride, x2 = x1 + stride, x3 = x2 + stride
            var a0 = Vec(), b0 = Vec(), a1 = Vec(), b1 = Vec(), a2 = Vec(), b2 = Vec(), a3 = Vec(), b3 = Vec()
            var i = 0
            while i + 32 <= n {
                let w0 = load(i), w1 = load(i + 16)
                a0.addProduct(w0, loadVec(x0 + i)); b0.addProduct(w1, loadVec(x0 + i + 16))
                a1.addProduct(w0, loadVec(x1 + i)); b1.addProduct(w1, loadVec(x1 + i + 16))
                a2.addProduct(w0, loadVec(x2 + i)); b2.addProduct(w1, loadVec(x2 + i + 16))
                a3.addProduct(w0, loadVec(x3 + i)); b3.addProduct(w1, loadVec(x3 + i + 16))
                i += 32
            }
            if i + 16 <= n {
                let w0 = load(i)
                a0.addProduct(w0, loadVec(x0 + i)); a1.addProduct(w0, loadVec(x1 + i))
                a2.addProduct(w0, loadVec(x2 + i)); a3.addProduct(w0, loadVec(x3 + i))
                i += 16
            }
            var t0: Float = 0, t1: Float = 0, t2: Float = 0, t3: Float = 0
            while i < n {
                let w = scalar(i)
                t0 += w * x0[i]; t1 += w * x1[i]; t2 += w * x2[i]; t3 += w * x3[i]
                i += 1
            }
            y[c * yStride] = horizontalSum(a0 + b0) + t0
            y[(c + 1) * yStride] = horizontalSum(a1 + b1) + t1
            y[(c + 2) * yStride] = horizontalSum(a2 + b2) + t2
            y[(c + 3) * yStride] = horizontalSum(a3 + b3) + t3
            c += 4
        }
        while c < columns {
            let x0 = x + c * stride
            var a0 = Vec(), b0 = Vec()
            var i = 0
            while i + 32 <= n {
                a0.addProduct(load(i), loadVec(x0 + i)); b0.addProduct(load(i + 16), loadVec(x0 + i + 16))
                i += 32
            }
            if i + 16 <= n {
                a0.addProduct(load(i), loadVec(x0 + i))
                i += 16
            }
            var t0: Float = 0
            while i < n {
                t0 += scalar(i) * x0[i]
                i += 1
            }
            y[c * yStride] = horizontalSum(a0 + b0) + t0
            c += 1
        }
    }

    @inline(__always)
    static func dotF16(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        var acc = Vec()
        var i = 0
        while i + 16 <= count {
            acc.addProduct(toFloat(row.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<Float16>.self)), loadVec(x + i))
            i += 16
        }
        var tail: Float = 0
        while i < count {
            tail += Float(Float16(bitPattern: row.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) * x[i]
            i += 1
        }
        return horizontalSum(acc) + tail
    }

    @inline(__always)
    static func dotF32(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var i = 0
        while i + 32 <= count {
            acc0.addProduct(loadVec(a + i), loadVec(b + i))
            acc1.addProduct(loadVec(a + i + 16), loadVec(b + i + 16))
            i += 32
        }
        if i + 16 <= count {
            acc0.addProduct(loadVec(a + i), loadVec(b + i))
            i += 16
        }
        var tail: Float = 0
        while i < count {
            tail += a[i] * b[i]
            i += 1
        }
        return horizontalSum(acc0 + acc1) + tail
    }

    /// BF16 weights against f32 activations.
    @inline(__always)
    static func dotBF16(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var i = 0
        while i + 32 <= count {
            acc0.addProduct(bf16ToFloat(row + 2 * i), loadVec(x + i))
            acc1.addProduct(bf16ToFloat(row + 2 * i + 32), loadVec(x + i + 16))
            i += 32
        }
        if i + 16 <= count {
            acc0.addProduct(bf16ToFloat(row + 2 * i), loadVec(x + i))
            i += 16
        }
        var tail: Float = 0
        while i < count {
            tail += Float(bitPattern: UInt32(row.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) * x[i]
            i += 1
        }
        return horizontalSum(acc0 + acc1) + tail
    }
}
