import Swift
import Kernels
import SIMDSupport

/// Converting stored blocks to f32 values, fast.
enum DequantizeCode {
    /// Fast dequantisation of one row of `count` values (a multiple of the block size).
    static func row(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        // One small function per type: in one large one the compiler leaves
        // the standard library's generic loads out of line, and such
        // specialisations, emitted alike in every kernel module, would be
        // merged at link time across instruction sets.
        switch type {
        case .f32: f32(src, count, dst)
        case .f16: f16(src, count, dst)
        case .q8_0: q80(src, count, dst)
        case .q4_0: q40(src, count, dst)
        case .q4_1: q41(src, count, dst)
        case .bf16: bf16(src, count, dst)
        case .q5_0: q50(src, count, dst)
        case .q5_1: q51(src, count, dst)
        case .q2_K: q2K(src, count, dst)
        case .q3_K: q3K(src, count, dst)
        case .q4_K: q4K(src, count, dst)
        case .q5_K: q5K(src, count, dst)
        case .q6_K: q6K(src, count, dst)
        default: fatalError("no dequantisation for " + type.description)
        }
    }

    /// One row of f32 values.
    @inline(never)
    private static func f32(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    }

    /// One row of f16 values.
    @inline(never)
    private static func f16(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 16 <= count {
            storeVec(toFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<Float16>.self)), dst + i)
            i += 16
        }
        while i < count {
            dst[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            i += 1
        }
    }

    /// One row of q8_0 values.
    @inline(never)
    private static func q80(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 32) {
            let block = src + b * 34
            let d = Vec(repeating: loadHalfPair(block)[0])
            storeVec(toFloat(widen(loadSignedBytes(block + 2))) * d, dst + b * 32)
            storeVec(toFloat(widen(loadSignedBytes(block + 18))) * d, dst + b * 32 + 16)
        }
    }

    /// One row of q4_0 values.
    @inline(never)
    private static func q40(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 32) {
            let block = src + b * 18
            let d = Vec(repeating: loadHalfPair(block)[0])
            let q = widen(loadBytes(block + 2))
            let eight = SIMD16<Int32>(repeating: 8)
            storeVec(toFloat((q & 15) &- eight) * d, dst + b * 32)
            storeVec(toFloat((q &>> 4) &- eight) * d, dst + b * 32 + 16)
        }
    }

    /// One row of q4_1 values.
    @inline(never)
    private static func q41(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 32) {
            let block = src + b * 20
            let dm = loadHalfPair(block)
            let d = Vec(repeating: dm[0])
            let m = Vec(repeating: dm[1])
            let q = widen(loadBytes(block + 4))
            storeVec(m.addingProduct(toFloat(q & 15), d), dst + b * 32)
            storeVec(m.addingProduct(toFloat(q &>> 4), d), dst + b * 32 + 16)
        }
    }

    /// One row of bf16 values.
    @inline(never)
    private static func bf16(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 16 <= count { storeVec(bf16ToFloat(src + 2 * i), dst + i); i += 16 }
        while i < count {
            dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
            i += 1
        }
    }

    /// One row of q5_0 values.
    @inline(never)
    private static func q50(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        let sixteen = SIMD16<Int32>(repeating: 16)
        for b in 0..<(count / 32) {
            let block = src + b * 22
            let d = Vec(repeating: loadHalfPair(block)[0])
            let qh = block.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            let q = widen(loadBytes(block + 6))
            storeVec(toFloat(((q & 15) | bitsPerLane(qh, offset: 0, to: 4)) &- sixteen) * d, dst + b * 32)
            storeVec(toFloat(((q &>> 4) | bitsPerLane(qh, offset: 16, to: 4)) &- sixteen) * d, dst + b * 32 + 16)
        }
    }

    /// One row of q5_1 values.
    @inline(never)
    private static func q51(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 32) {
            let block = src + b * 24
            let dm = loadHalfPair(block)
            let d = Vec(repeating: dm[0]), m = Vec(repeating: dm[1])
            let qh = block.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            let q = widen(loadBytes(block + 8))
            storeVec(m.addingProduct(toFloat((q & 15) | bitsPerLane(qh, offset: 0, to: 4)), d), dst + b * 32)
            storeVec(m.addingProduct(toFloat((q &>> 4) | bitsPerLane(qh, offset: 16, to: 4)), d), dst + b * 32 + 16)
        }
    }

    /// One row of q2_K values.
    @inline(never)
    private static func q2K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 256) {
            let block = src + b * 84
            let dm = loadHalfPair(block + 80)
            for n in 0..<2 {
                let q0 = widen(loadBytes(block + 16 + 32 * n)), q1 = widen(loadBytes(block + 32 + 32 * n))
                for s in 0..<4 {
                    let y = dst + b * 256 + n * 128 + s * 32
                    let sc0 = block.load(fromByteOffset: n * 8 + 2 * s, as: UInt8.self)
                    let sc1 = block.load(fromByteOffset: n * 8 + 2 * s + 1, as: UInt8.self)
                    let shift = SIMD16<Int32>(repeating: Int32(2 * s))
                    storeVec(toFloat((q0 &>> shift) & 3) * Vec(repeating: dm[0] * Float(sc0 & 0xF)) - Vec(repeating: dm[1] * Float(sc0 >> 4)), y)
                    storeVec(toFloat((q1 &>> shift) & 3) * Vec(repeating: dm[0] * Float(sc1 & 0xF)) - Vec(repeating: dm[1] * Float(sc1 >> 4)), y + 16)
                }
            }
        }
    }

    /// One row of q3_K values.
    @inline(never)
    private static func q3K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        let four = SIMD16<Int32>(repeating: 4)
        for b in 0..<(count / 256) {
            let block = src + b * 110
            let d = Float(Float16(bitPattern: block.loadUnaligned(fromByteOffset: 108, as: UInt16.self)))
            let scales = KQuants.q3Scales(block + 96)
            let h0 = widen(loadBytes(block)), h1 = widen(loadBytes(block + 16))
            for n in 0..<2 {
                let q0 = widen(loadBytes(block + 32 + 32 * n)), q1 = widen(loadBytes(block + 48 + 32 * n))
                for s in 0..<4 {
                    let y = dst + b * 256 + n * 128 + s * 32
                    let shift = SIMD16<Int32>(repeating: Int32(2 * s)), bit = SIMD16<Int32>(repeating: Int32(4 * n + s))
                    let v0 = ((q0 &>> shift) & 3) &+ (((h0 &>> bit) & 1) &<< 2) &- four
                    let v1 = ((q1 &>> shift) & 3) &+ (((h1 &>> bit) & 1) &<< 2) &- four
                    let g = n * 8 + 2 * s
                    storeVec(toFloat(v0) * Vec(repeating: d * Float(Int(scales[g]) - 32)), y)
                    storeVec(toFloat(v1) * Vec(repeating: d * Float(Int(scales[g + 1]) - 32)), y + 16)
                }
            }
        }
    }

    /// One row of q4_K values.
    @inline(never)
    private static func q4K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 256) {
            let block = src + b * 144
            let (d, dmin) = KQuants.superScales(block)
            for j in 0..<4 {
                let (sc1, m1) = KQuants.scaleMin(2 * j, block + 4), (sc2, m2) = KQuants.scaleMin(2 * j + 1, block + 4)
                let w0 = widen(loadBytes(block + 16 + 32 * j)), w1 = widen(loadBytes(block + 32 + 32 * j))
                let d1 = Vec(repeating: d * Float(sc1)), o1 = Vec(repeating: dmin * Float(m1))
                let d2 = Vec(repeating: d * Float(sc2)), o2 = Vec(repeating: dmin * Float(m2))
                let y = dst + b * 256 + j * 64
                storeVec(toFloat(w0 & 15) * d1 - o1, y)
                storeVec(toFloat(w1 & 15) * d1 - o1, y + 16)
                storeVec(toFloat(w0 &>> 4) * d2 - o2, y + 32)
                storeVec(toFloat(w1 &>> 4) * d2 - o2, y + 48)
            }
        }
    }

    /// One row of q5_K values.
    @inline(never)
    private static func q5K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 256) {
            let block = src + b * 176
            let (d, dmin) = KQuants.superScales(block)
            let h0 = widen(loadBytes(block + 16)), h1 = widen(loadBytes(block + 32))
            for j in 0..<4 {
                let (sc1, m1) = KQuants.scaleMin(2 * j, block + 4), (sc2, m2) = KQuants.scaleMin(2 * j + 1, block + 4)
                let w0 = widen(loadBytes(block + 48 + 32 * j)), w1 = widen(loadBytes(block + 64 + 32 * j))
                let lo = SIMD16<Int32>(repeating: Int32(2 * j)), hi = SIMD16<Int32>(repeating: Int32(2 * j + 1))
                let d1 = Vec(repeating: d * Float(sc1)), o1 = Vec(repeating: dmin * Float(m1))
                let d2 = Vec(repeating: d * Float(sc2)), o2 = Vec(repeating: dmin * Float(m2))
                let y = dst + b * 256 + j * 64
                storeVec(toFloat((w0 & 15) | (((h0 &>> lo) & 1) &<< 4)) * d1 - o1, y)
                storeVec(toFloat((w1 & 15) | (((h1 &>> lo) & 1) &<< 4)) * d1 - o1, y + 16)
                storeVec(toFloat((w0 &>> 4) | (((h0 &>> hi) & 1) &<< 4)) * d2 - o2, y + 32)
                storeVec(toFloat((w1 &>> 4) | (((h1 &>> hi) & 1) &<< 4)) * d2 - o2, y + 48)
            }
        }
    }

    /// One row of q6_K values.
    @inline(never)
    private static func q6K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / 256) {
            let block = src + b * 210
            let d = loadHalfPair(block + 206)[1]
            for n in 0..<2 {
                let y = dst + b * 256 + n * 128
                for g in 0..<8 {
                    let v = Dequantize.q6Group(block, n, g)
                    storeVec(toFloat(v) * Vec(repeating: d * Float(block.load(fromByteOffset: 192 + 8 * n + g, as: Int8.self))), y + 16 * g)
                }
            }
        }
    }
}
