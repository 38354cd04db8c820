// The integer dot product the packed kernels are built on, in the way this
// module's instruction set does it best (the -D flag of its target in
// Package.swift chooses; the instructions themselves are in ByteDot). Every
// way gives exactly the same result.
#if CHORUS_KERNELS_AVX2 || CHORUS_KERNELS_AVXVNNI || CHORUS_KERNELS_AVX512VNNI
import ByteDot
#endif

/// `acc` plus, in each of the 16 lanes, the sum of the four products of the
/// lane's unsigned bytes of `a` and signed bytes of `b` (`vpdpbusd`), for
/// bytes of `a` of at most 63 (the 2- to 6-bit quants).
@inline(__always)
func dotSmall(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> {
    #if CHORUS_KERNELS_AVX2
    return dotAVX2Small(acc, a, b)
    #else
    return dotWide(acc, a, b)
    #endif
}

/// `dotSmall` for any unsigned bytes of `a` (Q8_0's quants, offset by 128).
@inline(__always)
func dotWide(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> {
    #if CHORUS_KERNELS_AVX512VNNI
    return dotAVX512VNNI(acc, a, b)
    #elseif CHORUS_KERNELS_AVXVNNI
    return dotAVXVNNI(acc, a, b)
    #elseif CHORUS_KERNELS_AVX2
    return dotAVX2Wide(acc, a, b)
    #else
    // Plain Swift, lane-wise on the 32-bit view (no shuffles, so it
    // vectorises on any SIMD unit): the lane's four unsigned bytes of `a` and
    // four signed bytes of `b`, each product exact in 32 bits.
    let av = unsafeBitCast(a, to: SIMD16<UInt32>.self), bv = unsafeBitCast(b, to: SIMD16<Int32>.self)
    let mask = SIMD16<UInt32>(repeating: 0xFF)
    let a0 = SIMD16<Int32>(truncatingIfNeeded: av & mask), a1 = SIMD16<Int32>(truncatingIfNeeded: (av &>> 8) & mask)
    let a2 = SIMD16<Int32>(truncatingIfNeeded: (av &>> 16) & mask), a3 = SIMD16<Int32>(truncatingIfNeeded: av &>> 24)
    let b0 = (bv &<< 24) &>> 24, b1 = (bv &<< 16) &>> 24, b2 = (bv &<< 8) &>> 24, b3 = bv &>> 24
    return acc &+ (a0 &* b0 &+ a1 &* b1) &+ (a2 &* b2 &+ a3 &* b3)
    #endif
}

/// `dotSmall` on 8 lanes.
@inline(__always)
func dot8Small(_ acc: SIMD8<Int32>, _ a: SIMD32<UInt8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
    #if CHORUS_KERNELS_AVX2
    return dot8AVX2Small(acc, a, b)
    #else
    return dot8Wide(acc, a, b)
    #endif
}

/// `dotWide` on 8 lanes.
@inline(__always)
func dot8Wide(_ acc: SIMD8<Int32>, _ a: SIMD32<UInt8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
    #if CHORUS_KERNELS_AVX512VNNI || CHORUS_KERNELS_AVXVNNI
    return dot8AVXVNNI(acc, a, b)
    #elseif CHORUS_KERNELS_AVX2
    return dot8AVX2Wide(acc, a, b)
    #else
    let av = unsafeBitCast(a, to: SIMD8<UInt32>.self), bv = unsafeBitCast(b, to: SIMD8<Int32>.self)
    let mask = SIMD8<UInt32>(repeating: 0xFF)
    let a0 = SIMD8<Int32>(truncatingIfNeeded: av & mask), a1 = SIMD8<Int32>(truncatingIfNeeded: (av &>> 8) & mask)
    let a2 = SIMD8<Int32>(truncatingIfNeeded: (av &>> 16) & mask), a3 = SIMD8<Int32>(truncatingIfNeeded: av &>> 24)
    let b0 = (bv &<< 24) &>> 24, b1 = (bv &<< 16) &>> 24, b2 = (bv &<< 8) &>> 24, b3 = bv &>> 24
    return acc &+ (a0 &* b0 &+ a1 &* b1) &+ (a2 &* b2 &+ a3 &* b3)
    #endif
}

/// A per-lane multiplier (-128...127) as `nibbleDot8` and `pairDot8` take it:
/// on AVX2 in both 16-bit halves of the lane, for `vpmaddwd`.
@inline(__always)
func dotFactor8(_ scale: SIMD8<Int32>) -> SIMD8<Int32> {
    #if CHORUS_KERNELS_AVX2
    return (scale & SIMD8<Int32>(repeating: 0xFFFF)) | (scale &<< 16)
    #else
    return scale
    #endif
}

/// `acc` plus, per lane, the dot products of four pairs whose bytes of `a`
/// are at most 15 (nibbles), times `factor` (from `dotFactor8`) when
/// `scaled`. The same integers on every path.
@inline(__always)
func nibbleDot8(_ acc: SIMD8<Int32>, _ a0: SIMD32<UInt8>, _ b0: SIMD32<Int8>, _ a1: SIMD32<UInt8>, _ b1: SIMD32<Int8>,
                _ a2: SIMD32<UInt8>, _ b2: SIMD32<Int8>, _ a3: SIMD32<UInt8>, _ b3: SIMD32<Int8>,
                factor: SIMD8<Int32>, scaled: Bool) -> SIMD8<Int32> {
    #if CHORUS_KERNELS_AVX2
    return dot8AVX2Nibbles(acc, a0, b0, a1, b1, a2, b2, a3, b3, factor: factor)
    #else
    if scaled { return acc &+ dot8Wide(dot8Wide(dot8Wide(dot8Wide(SIMD8<Int32>(), a0, b0), a1, b1), a2, b2), a3, b3) &* factor }
    return dot8Wide(dot8Wide(dot8Wide(dot8Wide(acc, a0, b0), a1, b1), a2, b2), a3, b3)
    #endif
}

/// `acc` plus, per lane, the dot products of two pairs whose bytes of `a` are
/// at most 63 (6-bit quants) times `factor` (from `dotFactor8`). The same
/// integers on every path.
@inline(__always)
func pairDot8(_ acc: SIMD8<Int32>, _ a0: SIMD32<UInt8>, _ b0: SIMD32<Int8>, _ a1: SIMD32<UInt8>, _ b1: SIMD32<Int8>,
              factor: SIMD8<Int32>) -> SIMD8<Int32> {
    #if CHORUS_KERNELS_AVX2
    return dot8AVX2Pairs(acc, a0, b0, a1, b1, factor: factor)
    #else
    return acc &+ dot8Wide(dot8Wide(SIMD8<Int32>(), a0, b0), a1, b1) &* factor
    #endif
}

/// Whether this module multiplies Q8_0's quants as signed values (less 128)
/// with `dot8Centered`, rather than with `dot8Wide`.
#if CHORUS_KERNELS_AVX2
let centeredWideDot = true
#else
let centeredWideDot = false
#endif

/// `acc` plus, in each of the 8 lanes, the sum of the four products of the
/// lane's bytes of `a` less 128 (as signed values) and signed bytes of `b`
/// (in -127...127): `vpsignb`, `vpmaddubsw` and `vpmaddwd`, as ggml's AVX2
/// kernels multiply Q8_0 by Q8_0.
@inline(__always)
func dot8Centered(_ acc: SIMD8<Int32>, _ a: SIMD32<UInt8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
    let (signs, magnitudes) = centered8(a)
    return dot8Signed(acc, magnitudes, signs, b)
}

/// Q8_0 weights (offset by 128) as signed values and their magnitudes, for
/// `dot8Signed`.
@inline(__always)
func centered8(_ a: SIMD32<UInt8>) -> (signs: SIMD32<Int8>, magnitudes: SIMD32<UInt8>) {
    #if CHORUS_KERNELS_AVX2
    return centered8AVX2(a)
    #else
    var signs = SIMD32<Int8>(), magnitudes = SIMD32<UInt8>()
    for i in 0..<32 {
        let v = Int16(a[i]) - 128
        signs[i] = Int8(v)
        magnitudes[i] = UInt8(abs(v))
    }
    return (signs, magnitudes)
    #endif
}

/// `dot8Centered` of the weights `centered8` split.
@inline(__always)
func dot8Signed(_ acc: SIMD8<Int32>, _ magnitudes: SIMD32<UInt8>, _ signs: SIMD32<Int8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
    #if CHORUS_KERNELS_AVX2
    return dot8AVX2Signed(acc, magnitudes, signs, b)
    #else
    var sum = acc
    for lane in 0..<8 {
        for k in 0..<4 { sum[lane] &+= Int32(signs[4 * lane + k]) * Int32(b[4 * lane + k]) }
    }
    return sum
    #endif
}
