// The one AVX-512 VNNI instruction the integer kernels are built on, as an
// LLVM intrinsic. This module is compiled with -parse-stdlib so that it can
// name the intrinsic through the Builtin module; everything else stays in the
// other modules. Without -D CHORUS_VNNI (a portable build, or a CPU without
// VNNI) the same function is plain Swift with exactly the same results.
import Swift

/// `acc` plus, in each of the 16 lanes, the sum of the four products of the
/// lane's unsigned bytes of `a` and signed bytes of `b` (`vpdpbusd`).
@inlinable @inline(__always)
public func dotBytes(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> {
    #if CHORUS_VNNI
    let av = unsafeBitCast(a, to: SIMD16<Int32>.self), bv = unsafeBitCast(b, to: SIMD16<Int32>.self)
    return unsafeBitCast(Builtin.int_x86_avx512_vpdpbusd_512(acc._storage._value, av._storage._value, bv._storage._value),
                         to: SIMD16<Int32>.self)
    #else
    var out = acc
    for lane in 0..<16 {
        var s: Int32 = 0
        for k in 0..<4 { s &+= Int32(a[4 * lane + k]) &* Int32(b[4 * lane + k]) }
        out[lane] &+= s
    }
    return out
    #endif
}

/// Whether `dotBytes` is the VNNI instruction in this build.
public let dotBytesUsesVNNI: Bool = {
    #if CHORUS_VNNI
    return true
    #else
    return false
    #endif
}()
