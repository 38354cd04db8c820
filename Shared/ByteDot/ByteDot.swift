// ByteDot: the x86 integer dot-product intrinsics, named with -parse-stdlib
// (which slows a module down, so they live here alone and are emitted into the
// kernel modules that call them). It must not hold anything but those
// intrinsics.

// The x86 instructions the integer kernels are built on, as LLVM intrinsics
// named through the Builtin module (hence -parse-stdlib, for this module
// alone: it makes the compiler optimise a module less well). Every function
// is emitted only into the kernel module that calls it, compiled there for
// that module's instruction set; this module itself is compiled for the
// baseline and holds no code. On other architectures it is empty.
import Swift

#if arch(x86_64)

/// `acc` plus, in each of the 16 lanes, the sum of the four products of the
/// lane's unsigned bytes of `a` and signed bytes of `b`: AVX-512 VNNI's
/// `vpdpbusd` on 512 bits.
@_alwaysEmitIntoClient @inline(__always)
public func dotAVX512VNNI(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> {
    let av = unsafeBitCast(a, to: SIMD16<Int32>.self), bv = unsafeBitCast(b, to: SIMD16<Int32>.self)
    return unsafeBitCast(Builtin.int_x86_avx512_vpdpbusd_512(acc._storage._value, av._storage._value, bv._storage._value),
                         to: SIMD16<Int32>.self)
}

/// The same with AVX-VNNI: two VEX-encoded 256-bit `vpdpbusd`.
@_alwaysEmitIntoClient @inline(__always)
public func dotAVXVNNI(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> {
    let (c0, c1) = unsafeBitCast(acc, to: (SIMD8<Int32>, SIMD8<Int32>).self)
    let (a0, a1) = unsafeBitCast(a, to: (SIMD8<Int32>, SIMD8<Int32>).self), (b0, b1) = unsafeBitCast(b, to: (SIMD8<Int32>, SIMD8<Int32>).self)
    let r0 = Builtin.int_x86_avx512_vpdpbusd_256(c0._storage._value, a0._storage._value, b0._storage._value)
    let r1 = Builtin.int_x86_avx512_vpdpbusd_256(c1._storage._value, a1._storage._value, b1._storage._value)
    return unsafeBitCast((r0, r1), to: SIMD16<Int32>.self)
}

/// The same with AVX2, for bytes of `a` of at most 63: `vpmaddubsw` (pairs
/// of products added in 16 bits, which such bytes cannot saturate) and
/// `vpmaddwd` (pairs of those added in 32 bits).
@_alwaysEmitIntoClient @inline(__always)
public func dotAVX2Small(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> {
    let ones = SIMD16<Int16>(repeating: 1)._storage._value
    let (a0, a1) = unsafeBitCast(a, to: (SIMD32<UInt8>, SIMD32<UInt8>).self), (b0, b1) = unsafeBitCast(b, to: (SIMD32<Int8>, SIMD32<Int8>).self)
    let s0 = Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(a0._storage._value, b0._storage._value), ones)
    let s1 = Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(a1._storage._value, b1._storage._value), ones)
    return acc &+ unsafeBitCast((s0, s1), to: SIMD16<Int32>.self)
}

/// The same with AVX2 for any bytes of `a`: each byte as 16 * high nibble +
/// low nibble, the high products weighted by 16 in `vpmaddwd`.
@_alwaysEmitIntoClient @inline(__always)
public func dotAVX2Wide(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> {
    // (On 32-bit lanes: operations on vectors of 64 bytes are not inlined.)
    let mask = SIMD16<UInt32>(repeating: 0x0F0F_0F0F), av = unsafeBitCast(a, to: SIMD16<UInt32>.self)
    let low = unsafeBitCast(av & mask, to: SIMD64<UInt8>.self)
    let high = unsafeBitCast((av &>> 4) & mask, to: SIMD64<UInt8>.self)
    let ones = SIMD16<Int16>(repeating: 1)._storage._value, sixteens = SIMD16<Int16>(repeating: 16)._storage._value
    let (l0, l1) = unsafeBitCast(low, to: (SIMD32<UInt8>, SIMD32<UInt8>).self), (h0, h1) = unsafeBitCast(high, to: (SIMD32<UInt8>, SIMD32<UInt8>).self)
    let (b0, b1) = unsafeBitCast(b, to: (SIMD32<Int8>, SIMD32<Int8>).self)
    let s0 = unsafeBitCast(Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(l0._storage._value, b0._storage._value), ones), to: SIMD8<Int32>.self)
        &+ unsafeBitCast(Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(h0._storage._value, b0._storage._value), sixteens), to: SIMD8<Int32>.self)
    let s1 = unsafeBitCast(Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(l1._storage._value, b1._storage._value), ones), to: SIMD8<Int32>.self)
        &+ unsafeBitCast(Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(h1._storage._value, b1._storage._value), sixteens), to: SIMD8<Int32>.self)
    return acc &+ unsafeBitCast((s0, s1), to: SIMD16<Int32>.self)
}

// The same on 256 bits (8 lanes), for kernels that keep 8 rows per register.

/// AVX-VNNI's `vpdpbusd` on 256 bits.
@_alwaysEmitIntoClient @inline(__always)
public func dot8AVXVNNI(_ acc: SIMD8<Int32>, _ a: SIMD32<UInt8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
    let av = unsafeBitCast(a, to: SIMD8<Int32>.self), bv = unsafeBitCast(b, to: SIMD8<Int32>.self)
    return unsafeBitCast(Builtin.int_x86_avx512_vpdpbusd_256(acc._storage._value, av._storage._value, bv._storage._value),
                         to: SIMD8<Int32>.self)
}

/// AVX2, for bytes of `a` of at most 63.
@_alwaysEmitIntoClient @inline(__always)
public func dot8AVX2Small(_ acc: SIMD8<Int32>, _ a: SIMD32<UInt8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
    let ones = SIMD16<Int16>(repeating: 1)._storage._value
    let s = Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(a._storage._value, b._storage._value), ones)
    return acc &+ unsafeBitCast(s, to: SIMD8<Int32>.self)
}

/// AVX2, for four pairs whose bytes of `a` are at most 15 (nibbles): `acc`
/// plus, per lane, `factor`'s two 16-bit halves times the sums of the four
/// pairs' products, which add up in 16 bits without saturating (at most
/// 4 * 2 * 15 * 127): four `vpmaddubsw`, three `vpaddw` and one `vpmaddwd`
/// instead of four of each.
@_alwaysEmitIntoClient @inline(__always)
public func dot8AVX2Nibbles(_ acc: SIMD8<Int32>, _ a0: SIMD32<UInt8>, _ b0: SIMD32<Int8>, _ a1: SIMD32<UInt8>, _ b1: SIMD32<Int8>,
                            _ a2: SIMD32<UInt8>, _ b2: SIMD32<Int8>, _ a3: SIMD32<UInt8>, _ b3: SIMD32<Int8>,
                            factor: SIMD8<Int32>) -> SIMD8<Int32> {
    let p0 = Builtin.int_x86_avx2_pmadd_ub_sw(a0._storage._value, b0._storage._value)
    let p1 = Builtin.int_x86_avx2_pmadd_ub_sw(a1._storage._value, b1._storage._value)
    let p2 = Builtin.int_x86_avx2_pmadd_ub_sw(a2._storage._value, b2._storage._value)
    let p3 = Builtin.int_x86_avx2_pmadd_ub_sw(a3._storage._value, b3._storage._value)
    let sum = Builtin.add_Vec16xInt16(Builtin.add_Vec16xInt16(p0, p1), Builtin.add_Vec16xInt16(p2, p3))
    let f = unsafeBitCast(factor, to: SIMD16<Int16>.self)._storage._value
    return acc &+ unsafeBitCast(Builtin.int_x86_avx2_pmadd_wd(sum, f), to: SIMD8<Int32>.self)
}

/// AVX2, for any bytes of `a` (16 * high nibble + low nibble).
@_alwaysEmitIntoClient @inline(__always)
public func dot8AVX2Wide(_ acc: SIMD8<Int32>, _ a: SIMD32<UInt8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
    let mask = SIMD8<UInt32>(repeating: 0x0F0F_0F0F)
    let av = unsafeBitCast(a, to: SIMD8<UInt32>.self)
    let low = unsafeBitCast(av & mask, to: SIMD32<UInt8>.self), high = unsafeBitCast((av &>> 4) & mask, to: SIMD32<UInt8>.self)
    let ones = SIMD16<Int16>(repeating: 1)._storage._value, sixteens = SIMD16<Int16>(repeating: 16)._storage._value
    let l = Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(low._storage._value, b._storage._value), ones)
    let h = Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(high._storage._value, b._storage._value), sixteens)
    return acc &+ unsafeBitCast(l, to: SIMD8<Int32>.self) &+ unsafeBitCast(h, to: SIMD8<Int32>.self)
}

/// AVX2: the bytes of `a` less 128 as signed values, and their magnitudes
/// (`vpxor`, `vpsignb`): what `dot8AVX2Signed` takes for one chunk of Q8_0
/// weights, worked out once for every column it meets.
@_alwaysEmitIntoClient @inline(__always)
public func centered8AVX2(_ a: SIMD32<UInt8>) -> (signs: SIMD32<Int8>, magnitudes: SIMD32<UInt8>) {
    let q = unsafeBitCast(unsafeBitCast(a, to: SIMD8<UInt32>.self) ^ SIMD8<UInt32>(repeating: 0x8080_8080), to: SIMD32<Int8>.self)
    let m = Builtin.int_x86_avx2_psign_b(q._storage._value, q._storage._value)
    return (q, unsafeBitCast(m, to: SIMD32<UInt8>.self))
}

/// AVX2: `acc` plus, per lane, the four products of the lane's weights from
/// `centered8AVX2` (the stored bytes less 128, -128...127) and signed bytes of
/// `b` (-127...127): the sign moved onto `b` (`vpsignb`) so that `vpmaddubsw`
/// sees magnitudes of at most 128, whose pairs of products cannot saturate;
/// then `vpmaddwd`.
@_alwaysEmitIntoClient @inline(__always)
public func dot8AVX2Signed(_ acc: SIMD8<Int32>, _ magnitudes: SIMD32<UInt8>, _ signs: SIMD32<Int8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
    let signed = Builtin.int_x86_avx2_psign_b(b._storage._value, signs._storage._value)
    let ones = SIMD16<Int16>(repeating: 1)._storage._value
    let s = Builtin.int_x86_avx2_pmadd_wd(Builtin.int_x86_avx2_pmadd_ub_sw(magnitudes._storage._value, signed), ones)
    return acc &+ unsafeBitCast(s, to: SIMD8<Int32>.self)
}

/// AVX2, for two pairs whose bytes of `a` are at most 63 (6-bit quants):
/// `acc` plus, per lane, `factor`'s 16-bit halves times the two pairs'
/// products, added in 16 bits first (at most 2 * 2 * 63 * 127).
@_alwaysEmitIntoClient @inline(__always)
public func dot8AVX2Pairs(_ acc: SIMD8<Int32>, _ a0: SIMD32<UInt8>, _ b0: SIMD32<Int8>, _ a1: SIMD32<UInt8>, _ b1: SIMD32<Int8>,
                          factor: SIMD8<Int32>) -> SIMD8<Int32> {
    let p0 = Builtin.int_x86_avx2_pmadd_ub_sw(a0._storage._value, b0._storage._value)
    let p1 = Builtin.int_x86_avx2_pmadd_ub_sw(a1._storage._value, b1._storage._value)
    let f = unsafeBitCast(factor, to: SIMD16<Int16>.self)._storage._value
    return acc &+ unsafeBitCast(Builtin.int_x86_avx2_pmadd_wd(Builtin.add_Vec16xInt16(p0, p1), f), to: SIMD8<Int32>.self)
}

#endif
