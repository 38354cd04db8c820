/// Matrix times vector for decoding one token: every weight byte is read once,
/// so these kernels are bound by memory bandwidth. Activations stay in f32.
public enum MatVec {
    /// Sums of each block of 32 activations, which Q4_0 and Q4_1 rows need for
    /// their offsets (`d * q + m` summed against x is `d * (q . x) + m * sum(x)`).
    public static func blockSums(_ x: UnsafePointer<Float>, count: Int, into sums: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 32) {
            sums[b] = (loadVec(x + b * 32) + loadVec(x + b * 32 + 16)).sum()
        }
    }

    /// `y[r] = w[r] . x` for `r` in `rows`. `sums` must hold `blockSums(x)`.
    public static func multiply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, sums: UnsafePointer<Float>,
                                into y: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        let n = w.columns
        switch w.type {
        case .q4_1:
            for r in rows { y[r] = dotQ4_1(w.row(r), x, sums, blocks: n / 32) }
        case .q4_0:
            for r in rows { y[r] = dotQ4_0(w.row(r), x, sums, blocks: n / 32) }
        case .q8_0:
            for r in rows { y[r] = dotQ8_0(w.row(r), x, blocks: n / 32) }
        case .f16:
            for r in rows { y[r] = dotF16(w.row(r), x, count: n) }
        case .f32:
            for r in rows { y[r] = dotF32(w.row(r).assumingMemoryBound(to: Float.self), x, count: n) }
        default:
            fatalError("no kernel for \(w.type)")
        }
    }

    @inline(__always)
    public static func dotQ4_1(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ sums: UnsafePointer<Float>, blocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offset0: Float = 0, offset1: Float = 0
        var b = 0
        while b + 2 <= blocks {
            let p0 = row + b * 20
            let dm0 = loadHalfPair(p0)
            let q0 = widen(loadBytes(p0 + 4))
            var t0 = toFloat(q0 & 15) * loadVec(x + b * 32)
            t0.addProduct(toFloat(q0 &>> 4), loadVec(x + b * 32 + 16))
            acc0.addProduct(t0, Vec(repeating: dm0[0]))
            offset0 += dm0[1] * sums[b]

            let p1 = p0 + 20
            let dm1 = loadHalfPair(p1)
            let q1 = widen(loadBytes(p1 + 4))
            var t1 = toFloat(q1 & 15) * loadVec(x + b * 32 + 32)
            t1.addProduct(toFloat(q1 &>> 4), loadVec(x + b * 32 + 48))
            acc1.addProduct(t1, Vec(repeating: dm1[0]))
            offset1 += dm1[1] * sums[b + 1]
            b += 2
        }
        if b < blocks {
            let p0 = row + b * 20
            let dm0 = loadHalfPair(p0)
            let q0 = widen(loadBytes(p0 + 4))
            var t0 = toFloat(q0 & 15) * loadVec(x + b * 32)
            t0.addProduct(toFloat(q0 &>> 4), loadVec(x + b * 32 + 16))
            acc0.addProduct(t0, Vec(repeating: dm0[0]))
            offset0 += dm0[1] * sums[b]
        }
        return (acc0 + acc1).sum() + offset0 + offset1
    }

    @inline(__always)
    public static func dotQ4_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ sums: UnsafePointer<Float>, blocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offset: Float = 0
        for b in 0..<blocks {
            let p = row + b * 18
            let d = loadHalfPair(p)[0]
            let q = widen(loadBytes(p + 2))
            var t = toFloat(q & 15) * loadVec(x + b * 32)
            t.addProduct(toFloat(q &>> 4), loadVec(x + b * 32 + 16))
            if b & 1 == 0 { acc0.addProduct(t, Vec(repeating: d)) } else { acc1.addProduct(t, Vec(repeating: d)) }
            offset -= 8 * d * sums[b]
        }
        return (acc0 + acc1).sum() + offset
    }

    @inline(__always)
    public static func dotQ8_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var b = 0
        while b + 2 <= blocks {
            let p0 = row + b * 34
            let d0 = loadHalfPair(p0)[0]
            var t0 = toFloat(widen(loadSignedBytes(p0 + 2))) * loadVec(x + b * 32)
            t0.addProduct(toFloat(widen(loadSignedBytes(p0 + 18))), loadVec(x + b * 32 + 16))
            acc0.addProduct(t0, Vec(repeating: d0))
            let p1 = p0 + 34
            let d1 = loadHalfPair(p1)[0]
            var t1 = toFloat(widen(loadSignedBytes(p1 + 2))) * loadVec(x + b * 32 + 32)
            t1.addProduct(toFloat(widen(loadSignedBytes(p1 + 18))), loadVec(x + b * 32 + 48))
            acc1.addProduct(t1, Vec(repeating: d1))
            b += 2
        }
        if b < blocks {
            let p0 = row + b * 34
            let d0 = loadHalfPair(p0)[0]
            var t0 = toFloat(widen(loadSignedBytes(p0 + 2))) * loadVec(x + b * 32)
            t0.addProduct(toFloat(widen(loadSignedBytes(p0 + 18))), loadVec(x + b * 32 + 16))
            acc0.addProduct(t0, Vec(repeating: d0))
        }
        return (acc0 + acc1).sum()
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
        return acc.sum() + tail
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
        return (acc0 + acc1).sum() + tail
    }
}
