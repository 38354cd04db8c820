import SIMDSupport

/// Converting stored blocks to f32 values.
public enum Dequantize {
    /// Plain scalar dequantisation of `count` values, written to follow ggml's
    /// reference code line by line. Kernels are tested against it.
    public static func reference(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        precondition(type.isComputable && count % type.blockSize == 0)
        switch type {
        case .f32:
            for i in 0..<count { dst[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f16:
            for i in 0..<count { dst[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .q8_0:
            for b in 0..<(count / 32) {
                let block = src + b * 34
                let d = Float(Float16(bitPattern: block.loadUnaligned(as: UInt16.self)))
                for j in 0..<32 {
                    dst[b * 32 + j] = d * Float(block.load(fromByteOffset: 2 + j, as: Int8.self))
                }
            }
        case .q4_0:
            for b in 0..<(count / 32) {
                let block = src + b * 18
                let d = Float(Float16(bitPattern: block.loadUnaligned(as: UInt16.self)))
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                    dst[b * 32 + j] = d * Float(Int(byte & 0x0F) - 8)
                    dst[b * 32 + j + 16] = d * Float(Int(byte >> 4) - 8)
                }
            }
        case .q4_1:
            for b in 0..<(count / 32) {
                let block = src + b * 20
                let d = Float(Float16(bitPattern: block.loadUnaligned(as: UInt16.self)))
                let m = Float(Float16(bitPattern: block.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 4 + j, as: UInt8.self)
                    dst[b * 32 + j] = d * Float(byte & 0x0F) + m
                    dst[b * 32 + j + 16] = d * Float(byte >> 4) + m
                }
            }
        case .bf16:
            for i in 0..<count {
                dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
            }
        case .q5_0:
            for b in 0..<(count / 32) {
                let block = src + b * 22
                let d = Float(Float16(bitPattern: block.loadUnaligned(as: UInt16.self)))
                let qh = block.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 6 + j, as: UInt8.self)
                    let h0 = UInt8(truncatingIfNeeded: ((qh >> UInt32(j)) << 4) & 0x10)
                    let h1 = UInt8(truncatingIfNeeded: (qh >> UInt32(j + 12)) & 0x10)
                    dst[b * 32 + j] = d * Float(Int((byte & 0x0F) | h0) - 16)
                    dst[b * 32 + j + 16] = d * Float(Int((byte >> 4) | h1) - 16)
                }
            }
        case .q5_1:
            for b in 0..<(count / 32) {
                let block = src + b * 24
                let d = Float(Float16(bitPattern: block.loadUnaligned(as: UInt16.self)))
                let m = Float(Float16(bitPattern: block.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                let qh = block.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 8 + j, as: UInt8.self)
                    let h0 = UInt8(truncatingIfNeeded: ((qh >> UInt32(j)) << 4) & 0x10)
                    let h1 = UInt8(truncatingIfNeeded: (qh >> UInt32(j + 12)) & 0x10)
                    dst[b * 32 + j] = d * Float((byte & 0x0F) | h0) + m
                    dst[b * 32 + j + 16] = d * Float((byte >> 4) | h1) + m
                }
            }
        case .q2_K:
            for b in 0..<(count / 256) {
                let block = src + b * 84
                let scales = block, qs = block + 16
                let dm = block.loadUnaligned(fromByteOffset: 80, as: UInt32.self)
                let d = Float(Float16(bitPattern: UInt16(truncatingIfNeeded: dm)))
                let dmin = Float(Float16(bitPattern: UInt16(truncatingIfNeeded: dm >> 16)))
                var y = dst + b * 256
                var group = 0
                for n in stride(from: 0, to: 256, by: 128) {
                    let q = qs + n / 4
                    for shift in stride(from: 0, to: 8, by: 2) {
                        for half in 0..<2 {
                            let sc = scales.load(fromByteOffset: group, as: UInt8.self)
                            group += 1
                            let dl = d * Float(sc & 0xF), ml = dmin * Float(sc >> 4)
                            for l in 0..<16 {
                                let v = (q.load(fromByteOffset: l + 16 * half, as: UInt8.self) >> UInt8(shift)) & 3
                                y[l] = dl * Float(v) - ml
                            }
                            y += 16
                        }
                    }
                }
            }
        case .q3_K:
            for b in 0..<(count / 256) {
                let block = src + b * 110
                let hmask = block, qs = block + 32
                let scales = KQuants.q3Scales(block + 96)
                let d = Float(Float16(bitPattern: block.loadUnaligned(fromByteOffset: 108, as: UInt16.self)))
                var y = dst + b * 256
                var group = 0
                var m: UInt8 = 1
                for n in stride(from: 0, to: 256, by: 128) {
                    let q = qs + n / 4
                    for shift in stride(from: 0, to: 8, by: 2) {
                        for half in 0..<2 {
                            let dl = d * Float(Int(scales[group]) - 32)
                            group += 1
                            for l in 0..<16 {
                                let low = Int((q.load(fromByteOffset: l + 16 * half, as: UInt8.self) >> UInt8(shift)) & 3)
                                let high = hmask.load(fromByteOffset: l + 16 * half, as: UInt8.self) & m != 0 ? 0 : 4
                                y[l] = dl * Float(low - high)
                            }
                            y += 16
                        }
                        m <<= 1
                    }
                }
            }
        case .q4_K:
            for b in 0..<(count / 256) {
                let block = src + b * 144
                let (d, dmin) = KQuants.superScales(block)
                let q = block + 16
                for j in 0..<4 {
                    let (sc1, m1) = KQuants.scaleMin(2 * j, block + 4), (sc2, m2) = KQuants.scaleMin(2 * j + 1, block + 4)
                    let y = dst + b * 256 + j * 64
                    for l in 0..<32 {
                        let byte = q.load(fromByteOffset: j * 32 + l, as: UInt8.self)
                        y[l] = d * Float(sc1) * Float(byte & 0xF) - dmin * Float(m1)
                        y[l + 32] = d * Float(sc2) * Float(byte >> 4) - dmin * Float(m2)
                    }
                }
            }
        case .q5_K:
            for b in 0..<(count / 256) {
                let block = src + b * 176
                let (d, dmin) = KQuants.superScales(block)
                let qh = block + 16, ql = block + 48
                for j in 0..<4 {
                    let (sc1, m1) = KQuants.scaleMin(2 * j, block + 4), (sc2, m2) = KQuants.scaleMin(2 * j + 1, block + 4)
                    let u1 = UInt8(1) << UInt8(2 * j), u2 = UInt8(2) << UInt8(2 * j)
                    let y = dst + b * 256 + j * 64
                    for l in 0..<32 {
                        let byte = ql.load(fromByteOffset: j * 32 + l, as: UInt8.self)
                        let h = qh.load(fromByteOffset: l, as: UInt8.self)
                        y[l] = d * Float(sc1) * Float((byte & 0xF) + (h & u1 != 0 ? 16 : 0)) - dmin * Float(m1)
                        y[l + 32] = d * Float(sc2) * Float((byte >> 4) + (h & u2 != 0 ? 16 : 0)) - dmin * Float(m2)
                    }
                }
            }
        case .q6_K:
            for b in 0..<(count / 256) {
                let block = src + b * 210
                let d = Float(Float16(bitPattern: block.loadUnaligned(fromByteOffset: 208, as: UInt16.self)))
                for n in 0..<2 {
                    let ql = block + n * 64, qh = block + 128 + n * 32, sc = block + 192 + n * 8
                    let y = dst + b * 256 + n * 128
                    for l in 0..<32 {
                        let lo0 = ql.load(fromByteOffset: l, as: UInt8.self), lo1 = ql.load(fromByteOffset: l + 32, as: UInt8.self)
                        let h = qh.load(fromByteOffset: l, as: UInt8.self)
                        let q1 = Int((lo0 & 0xF) | ((h & 3) << 4)) - 32
                        let q2 = Int((lo1 & 0xF) | (((h >> 2) & 3) << 4)) - 32
                        let q3 = Int((lo0 >> 4) | (((h >> 4) & 3) << 4)) - 32
                        let q4 = Int((lo1 >> 4) | (((h >> 6) & 3) << 4)) - 32
                        let s = l / 16
                        y[l] = d * Float(sc.load(fromByteOffset: s, as: Int8.self)) * Float(q1)
                        y[l + 32] = d * Float(sc.load(fromByteOffset: s + 2, as: Int8.self)) * Float(q2)
                        y[l + 64] = d * Float(sc.load(fromByteOffset: s + 4, as: Int8.self)) * Float(q3)
                        y[l + 96] = d * Float(sc.load(fromByteOffset: s + 6, as: Int8.self)) * Float(q4)
                    }
                }
            }
        default:
            fatalError("no dequantisation for \(type)")
        }
    }

    /// Group `g` (0..<8, 16 values) of half `n` of a Q6_K block, as signed values -32 ... 31.
    @inlinable @inline(__always)
    public static func q6Group(_ block: UnsafeRawPointer, _ n: Int, _ g: Int) -> SIMD16<Int32> {
        // Groups 0-3 take the low nibbles of ql[0..<64], groups 4-7 the high
        // ones; group g takes bits 2 * (g / 2) of qh[(g & 1) * 16 ..< +16].
        let lowBytes = widen(loadBytes(block + 64 * n + 16 * (g & 3)))
        let nibble = g < 4 ? (lowBytes & 15) : (lowBytes &>> 4)
        let high = widen(loadBytes(block + 128 + 32 * n + 16 * (g & 1)))
        let two = (high &>> SIMD16<Int32>(repeating: Int32(2 * (g / 2)))) & 3
        return (nibble | (two &<< 4)) &- SIMD16<Int32>(repeating: 32)
    }
}
