import SIMDSupport

/// Matrix times vector for float (F32, F16, BF16) weights against f32
/// activations, row by row. (Quantised matrices are multiplied by the
/// integer kernels on their packed copies: `PackedMatrix.multiply`.)
public enum MatVec {
    /// `y[r] = w[r] . x` for `r` in `rows`.
    public static func multiply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        let n = w.columns
        switch w.type {
        case .bf16:
            for r in rows { y[r] = dotBF16(w.row(r), x, count: n) }
        case .f16:
            for r in rows { y[r] = dotF16(w.row(r), x, count: n) }
        case .f32:
            for r in rows { y[r] = dotF32(w.row(r).assumingMemoryBound(to: Float.self), x, count: n) }
        default:
            preconditionFailure("\(w.type) is multiplied through its packed copy")
        }
    }

    @inline(__always)
    public static func dotF16(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
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
    public static func dotF32(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
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
    public static func dotBF16(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
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
