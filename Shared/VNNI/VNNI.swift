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
    // Lane-wise on the 32-bit view (no shuffles, so it vectorises on any
    // SIMD unit): the lane's four unsigned bytes of `a` and four signed bytes
    // of `b`, each product exact in 32 bits.
    let av = unsafeBitCast(a, to: SIMD16<UInt32>.self), bv = unsafeBitCast(b, to: SIMD16<Int32>.self)
    let mask = SIMD16<UInt32>(repeating: 0xFF)
    let a0 = SIMD16<Int32>(truncatingIfNeeded: av & mask), a1 = SIMD16<Int32>(truncatingIfNeeded: (av &>> 8) & mask)
    let a2 = SIMD16<Int32>(truncatingIfNeeded: (av &>> 16) & mask), a3 = SIMD16<Int32>(truncatingIfNeeded: av &>> 24)
    let b0 = (bv &<< 24) &>> 24, b1 = (bv &<< 16) &>> 24, b2 = (bv &<< 8) &>> 24, b3 = bv &>> 24
    return acc &+ (a0 &* b0 &+ a1 &* b1) &+ (a2 &* b2 &+ a3 &* b3)
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

/// The vector features (as /proc/cpuinfo names them) of the CPU this build
/// was compiled for; empty for a portable build.
public let buildTargetFeatures: [String] = {
    var names: [String] = []
    #if CHORUS_TARGET_AVX2
    names += ["avx2", "fma", "f16c"]
    #endif
    #if CHORUS_TARGET_AVX512
    names += ["avx512f", "avx512bw", "avx512vl"]
    #endif
    return names
}()
