import SIMDSupport

/// Conversions of stored blocks into other block types, made once at load.
public enum Repack {
    /// Q5_0 blocks (f16 d, 32 fifth bits, 16 bytes of nibbles; `d * (q - 16)`)
    /// as Q8_0 blocks (f16 d, 32 signed bytes; `d * q`) of exactly the same values.
    public static func q5_0ToQ8_0(_ src: UnsafeRawPointer, blocks: Int, into dst: UnsafeMutableRawPointer) {
        let sixteen = SIMD16<Int32>(repeating: 16)
        for b in 0..<blocks {
            let p = src + b * 22, out = dst + b * 34
            out.storeBytes(of: p.loadUnaligned(as: UInt16.self), as: UInt16.self)
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            let w = widen(loadBytes(p + 6))
            let lo = ((w & 15) | bitsPerLane(qh, offset: 0, to: 4)) &- sixteen
            let hi = ((w &>> 4) | bitsPerLane(qh, offset: 16, to: 4)) &- sixteen
            for i in 0..<16 {
                out.storeBytes(of: Int8(truncatingIfNeeded: lo[i]), toByteOffset: 2 + i, as: Int8.self)
                out.storeBytes(of: Int8(truncatingIfNeeded: hi[i]), toByteOffset: 18 + i, as: Int8.self)
            }
        }
    }
}
