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
        default:
            fatalError("no dequantisation for \(type)")
        }
    }

    /// Fast dequantisation of one row of `count` values (a multiple of the block size).
    @inline(__always)
    public static func row(_ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
        case .f16:
            var i = 0
            while i + 16 <= count {
                storeVec(toFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<Float16>.self)), dst + i)
                i += 16
            }
            while i < count {
                dst[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                i += 1
            }
        case .q8_0:
            for b in 0..<(count / 32) {
                let block = src + b * 34
                let d = Vec(repeating: loadHalfPair(block)[0])
                storeVec(toFloat(widen(loadSignedBytes(block + 2))) * d, dst + b * 32)
                storeVec(toFloat(widen(loadSignedBytes(block + 18))) * d, dst + b * 32 + 16)
            }
        case .q4_0:
            for b in 0..<(count / 32) {
                let block = src + b * 18
                let d = Vec(repeating: loadHalfPair(block)[0])
                let q = widen(loadBytes(block + 2))
                let eight = SIMD16<Int32>(repeating: 8)
                storeVec(toFloat((q & 15) &- eight) * d, dst + b * 32)
                storeVec(toFloat((q &>> 4) &- eight) * d, dst + b * 32 + 16)
            }
        case .q4_1:
            for b in 0..<(count / 32) {
                let block = src + b * 20
                let dm = loadHalfPair(block)
                let d = Vec(repeating: dm[0])
                let m = Vec(repeating: dm[1])
                let q = widen(loadBytes(block + 4))
                storeVec(m.addingProduct(toFloat(q & 15), d), dst + b * 32)
                storeVec(m.addingProduct(toFloat(q &>> 4), d), dst + b * 32 + 16)
            }
        default:
            fatalError("no dequantisation for \(type)")
        }
    }
}
