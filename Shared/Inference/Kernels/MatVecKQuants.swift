import SIMDSupport

// Row . activation dot products for Q5_0, Q5_1, the K-quants and BF16. The
// quantised ones multiply weights and 8-bit activations in integers, 16
// lanes at a time, apply each sub-block's integer scale in integers too where
// the type has one, and convert to float once per 32 activations (one
// activation block, one scale `x.scales[k]`). Offsets (mins) are applied
// through the activation sums.
extension MatVec {
    /// Q5_0: `d * (q - 16)` with q of 5 bits (the fifth bits in one word per
    /// block), so block . x = `d * dx * (q . qx) - 16 * d * sum(x)`.
    @inline(__always)
    public static func dotQ5_0(_ row: UnsafeRawPointer, _ x: QuantizedVector, blocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offsets = SIMD2<Float>()
        @inline(__always) func block(_ b: Int) -> (SIMD16<Int32>, Float) {
            let p = row + b * 22
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            let w = widen(loadBytes(p + 6))
            let y = x.values + b * 32
            let i = ((w & 15) | bitsPerLane(qh, offset: 0, to: 4)) &* loadInts(y) &+ ((w &>> 4) | bitsPerLane(qh, offset: 16, to: 4)) &* loadInts(y + 16)
            return (i, loadHalfPair(p)[0])
        }
        var b = 0
        while b + 2 <= blocks {
            let (i0, d0) = block(b), (i1, d1) = block(b + 1)
            acc0.addProduct(toFloat(i0), Vec(repeating: d0 * x.scales[b]))
            acc1.addProduct(toFloat(i1), Vec(repeating: d1 * x.scales[b + 1]))
            offsets.addProduct(SIMD2(d0, d1), SIMD2(x.sums[b], x.sums[b + 1]))
            b += 2
        }
        if b < blocks {
            let (i0, d0) = block(b)
            acc0.addProduct(toFloat(i0), Vec(repeating: d0 * x.scales[b]))
            offsets[0] += d0 * x.sums[b]
        }
        return horizontalSum(acc0 + acc1) - 16 * (offsets[0] + offsets[1])
    }

    /// Q5_1: `d * q + m` with q of 5 bits.
    @inline(__always)
    public static func dotQ5_1(_ row: UnsafeRawPointer, _ x: QuantizedVector, blocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offset: Float = 0
        for b in 0..<blocks {
            let p = row + b * 24
            let dm = loadHalfPair(p)
            let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            let w = widen(loadBytes(p + 8))
            let y = x.values + b * 32
            let i = ((w & 15) | bitsPerLane(qh, offset: 0, to: 4)) &* loadInts(y)
                &+ ((w &>> 4) | bitsPerLane(qh, offset: 16, to: 4)) &* loadInts(y + 16)
            if b & 1 == 0 {
                acc0.addProduct(toFloat(i), Vec(repeating: dm[0] * x.scales[b]))
            } else {
                acc1.addProduct(toFloat(i), Vec(repeating: dm[0] * x.scales[b]))
            }
            offset += dm[1] * x.sums[b]
        }
        return horizontalSum(acc0 + acc1) + offset
    }

    /// Q4_K: eight sub-blocks of 32, `d * sc * q - dmin * m`.
    @inline(__always)
    public static func dotQ4_K(_ row: UnsafeRawPointer, _ x: QuantizedVector, superBlocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offset: Float = 0
        for s in 0..<superBlocks {
            let p = row + s * 144
            let (d, dmin) = KQuants.superScales(p)
            var mins: Float = 0
            for j in 0..<4 {
                let (sc1, m1) = KQuants.scaleMin(2 * j, p + 4), (sc2, m2) = KQuants.scaleMin(2 * j + 1, p + 4)
                let w0 = widen(loadBytes(p + 16 + 32 * j)), w1 = widen(loadBytes(p + 32 + 32 * j))
                let k = s * 8 + 2 * j
                let y = x.values + k * 32
                let lo = (w0 & 15) &* loadInts(y) &+ (w1 & 15) &* loadInts(y + 16)
                let hi = (w0 &>> 4) &* loadInts(y + 32) &+ (w1 &>> 4) &* loadInts(y + 48)
                acc0.addProduct(toFloat(lo), Vec(repeating: d * Float(sc1) * x.scales[k]))
                acc1.addProduct(toFloat(hi), Vec(repeating: d * Float(sc2) * x.scales[k + 1]))
                mins += Float(m1) * x.sums[k] + Float(m2) * x.sums[k + 1]
            }
            offset -= dmin * mins
        }
        return horizontalSum(acc0 + acc1) + offset
    }

    /// Q5_K: as Q4_K with a fifth bit per value.
    @inline(__always)
    public static func dotQ5_K(_ row: UnsafeRawPointer, _ x: QuantizedVector, superBlocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offset: Float = 0
        for s in 0..<superBlocks {
            let p = row + s * 176
            let (d, dmin) = KQuants.superScales(p)
            let h0 = widen(loadBytes(p + 16)), h1 = widen(loadBytes(p + 32))
            var mins: Float = 0
            for j in 0..<4 {
                let (sc1, m1) = KQuants.scaleMin(2 * j, p + 4), (sc2, m2) = KQuants.scaleMin(2 * j + 1, p + 4)
                let w0 = widen(loadBytes(p + 48 + 32 * j)), w1 = widen(loadBytes(p + 64 + 32 * j))
                let lo = SIMD16<Int32>(repeating: Int32(2 * j)), hi = SIMD16<Int32>(repeating: Int32(2 * j + 1))
                let k = s * 8 + 2 * j
                let y = x.values + k * 32
                let a = ((w0 & 15) | (((h0 &>> lo) & 1) &<< 4)) &* loadInts(y)
                    &+ ((w1 & 15) | (((h1 &>> lo) & 1) &<< 4)) &* loadInts(y + 16)
                let b = ((w0 &>> 4) | (((h0 &>> hi) & 1) &<< 4)) &* loadInts(y + 32)
                    &+ ((w1 &>> 4) | (((h1 &>> hi) & 1) &<< 4)) &* loadInts(y + 48)
                acc0.addProduct(toFloat(a), Vec(repeating: d * Float(sc1) * x.scales[k]))
                acc1.addProduct(toFloat(b), Vec(repeating: d * Float(sc2) * x.scales[k + 1]))
                mins += Float(m1) * x.sums[k] + Float(m2) * x.sums[k + 1]
            }
            offset -= dmin * mins
        }
        return horizontalSum(acc0 + acc1) + offset
    }

    /// Q6_K: sixteen groups of 16, `d * sc * (q - 32)`, the i8 scales applied in integers.
    @inline(__always)
    public static func dotQ6_K(_ row: UnsafeRawPointer, _ x: QuantizedVector, superBlocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        for s in 0..<superBlocks {
            let p = row + s * 210
            let d = loadHalfPair(p + 206)[1]
            for n in 0..<2 {
                let sc = p + 192 + 8 * n
                for pair in 0..<4 {
                    let k = s * 8 + n * 4 + pair
                    let y = x.values + k * 32
                    let g = 2 * pair
                    let i = (Dequantize.q6Group(p, n, g) &* loadInts(y)) &* SIMD16<Int32>(repeating: Int32(sc.load(fromByteOffset: g, as: Int8.self)))
                        &+ (Dequantize.q6Group(p, n, g + 1) &* loadInts(y + 16))
                        &* SIMD16<Int32>(repeating: Int32(sc.load(fromByteOffset: g + 1, as: Int8.self)))
                    if pair & 1 == 0 {
                        acc0.addProduct(toFloat(i), Vec(repeating: d * x.scales[k]))
                    } else {
                        acc1.addProduct(toFloat(i), Vec(repeating: d * x.scales[k]))
                    }
                }
            }
        }
        return horizontalSum(acc0 + acc1)
    }

    /// Q2_K: sixteen groups of 16 two-bit values, `d * (sc & 15) * q - dmin * (sc >> 4)`.
    @inline(__always)
    public static func dotQ2_K(_ row: UnsafeRawPointer, _ x: QuantizedVector, superBlocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offset: Float = 0
        for s in 0..<superBlocks {
            let p = row + s * 84
            let dm = loadHalfPair(p + 80)
            var mins: Float = 0
            for n in 0..<2 {
                let q0 = widen(loadBytes(p + 16 + 32 * n)), q1 = widen(loadBytes(p + 32 + 32 * n))
                for j in 0..<4 {
                    let k = s * 8 + n * 4 + j
                    let y = x.values + k * 32
                    let sc0 = p.load(fromByteOffset: n * 8 + 2 * j, as: UInt8.self)
                    let sc1 = p.load(fromByteOffset: n * 8 + 2 * j + 1, as: UInt8.self)
                    let shift = SIMD16<Int32>(repeating: Int32(2 * j))
                    let i = (((q0 &>> shift) & 3) &* loadInts(y)) &* SIMD16<Int32>(repeating: Int32(sc0 & 15))
                        &+ (((q1 &>> shift) & 3) &* loadInts(y + 16)) &* SIMD16<Int32>(repeating: Int32(sc1 & 15))
                    if j & 1 == 0 {
                        acc0.addProduct(toFloat(i), Vec(repeating: dm[0] * x.scales[k]))
                    } else {
                        acc1.addProduct(toFloat(i), Vec(repeating: dm[0] * x.scales[k]))
                    }
                    mins += Float(sc0 >> 4) * x.halfSums[2 * k] + Float(sc1 >> 4) * x.halfSums[2 * k + 1]
                }
            }
            offset -= dm[1] * mins
        }
        return horizontalSum(acc0 + acc1) + offset
    }

    /// Q3_K: sixteen groups of 16 three-bit values (two low bits, a high bit
    /// that is set for non-negative values), `d * (sc - 32) * q`.
    @inline(__always)
    public static func dotQ3_K(_ row: UnsafeRawPointer, _ x: QuantizedVector, superBlocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        let four = SIMD16<Int32>(repeating: 4)
        for s in 0..<superBlocks {
            let p = row + s * 110
            let d = Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: 108, as: UInt16.self)))
            let scales = KQuants.q3Scales(p + 96)
            let h0 = widen(loadBytes(p)), h1 = widen(loadBytes(p + 16))
            for n in 0..<2 {
                let q0 = widen(loadBytes(p + 32 + 32 * n)), q1 = widen(loadBytes(p + 48 + 32 * n))
                for j in 0..<4 {
                    let k = s * 8 + n * 4 + j
                    let y = x.values + k * 32
                    let shift = SIMD16<Int32>(repeating: Int32(2 * j)), bit = SIMD16<Int32>(repeating: Int32(4 * n + j))
                    let v0 = ((q0 &>> shift) & 3) &+ (((h0 &>> bit) & 1) &<< 2) &- four
                    let v1 = ((q1 &>> shift) & 3) &+ (((h1 &>> bit) & 1) &<< 2) &- four
                    let g = n * 8 + 2 * j
                    let i = (v0 &* loadInts(y)) &* SIMD16<Int32>(repeating: Int32(scales[g]) - 32)
                        &+ (v1 &* loadInts(y + 16)) &* SIMD16<Int32>(repeating: Int32(scales[g + 1]) - 32)
                    if j & 1 == 0 {
                        acc0.addProduct(toFloat(i), Vec(repeating: d * x.scales[k]))
                    } else {
                        acc1.addProduct(toFloat(i), Vec(repeating: d * x.scales[k]))
                    }
                }
            }
        }
        return horizontalSum(acc0 + acc1)
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
