import SIMDSupport

/// The packed scales of the K-quant super-blocks (256 values each), as ggml
/// lays them out (ggml-common.h):
///
/// | type | bytes, in order | sub-blocks |
/// |---|---|---|
/// | Q2_K | scales[16] (4-bit scale, 4-bit min), qs[64], f16 d, f16 dmin | 16 of 16 |
/// | Q3_K | hmask[32], qs[64], scales[12] (6-bit, biased by 32), f16 d | 16 of 16 |
/// | Q4_K | f16 d, f16 dmin, scales[12] (6-bit scale and min), qs[128] | 8 of 32 |
/// | Q5_K | f16 d, f16 dmin, scales[12], qh[32], qs[128] | 8 of 32 |
/// | Q6_K | ql[128], qh[64], scales[16] (i8), f16 d | 16 of 16 |
public enum KQuants {
    /// `d` and `dmin` of a Q4_K or Q5_K block (its first four bytes).
    @inlinable @inline(__always)
    public static func superScales(_ block: UnsafeRawPointer) -> (Float, Float) {
        let dm = loadHalfPair(block)
        return (dm[0], dm[1])
    }

    /// Scale and min of sub-block `j` (0..<8) from the 12 packed bytes of a
    /// Q4_K or Q5_K block (`get_scale_min_k4`).
    @inlinable @inline(__always)
    public static func scaleMin(_ j: Int, _ q: UnsafeRawPointer) -> (UInt8, UInt8) {
        @inline(__always) func byte(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 { return (byte(j) & 63, byte(j + 4) & 63) }
        return ((byte(j + 4) & 0xF) | ((byte(j - 4) >> 6) << 4), (byte(j + 4) >> 4) | ((byte(j) >> 6) << 4))
    }

    /// The 16 six-bit scales (0...63, still biased by 32) from the 12 packed bytes of a Q3_K block.
    @inlinable @inline(__always)
    public static func q3Scales(_ q: UnsafeRawPointer) -> SIMD16<UInt8> {
        let kmask1: UInt32 = 0x0303_0303, kmask2: UInt32 = 0x0f0f_0f0f
        let a0 = q.loadUnaligned(as: UInt32.self), a1 = q.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        let tmp = q.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        let words = SIMD4<UInt32>((a0 & kmask2) | (((tmp >> 0) & kmask1) << 4),
                                  (a1 & kmask2) | (((tmp >> 2) & kmask1) << 4),
                                  ((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4),
                                  ((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4))
        return unsafeBitCast(words, to: SIMD16<UInt8>.self)
    }
}
