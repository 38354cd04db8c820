// Transcendental functions on 16 lanes, for the kernels (in each kernel
// module, so that they are compiled for its instruction set).
import Swift
import SIMDSupport

/// e^x for 16 lanes (Cephes' polynomial after range reduction; about 1 ulp).
@inline(__always)
func vectorExp(_ x: Vec) -> Vec {
    let clamped = lanewiseMin(lanewiseMax(x, Vec(repeating: -87.3)), Vec(repeating: 88.3))
    // Adding 1.5 * 2^23 rounds to an integer and leaves it in the low mantissa bits.
    let magic = Vec(repeating: 12_582_912)
    let t = magic.addingProduct(clamped, Vec(repeating: 1.442_695_04))
    let n = t - magic
    var r = clamped.addingProduct(n, Vec(repeating: -0.693_359_375))
    r = r.addingProduct(n, Vec(repeating: 2.121_944_4e-4))
    var p = Vec(repeating: 1.987_569_15e-4)
    p = Vec(repeating: 1.398_199_95e-3).addingProduct(p, r)
    p = Vec(repeating: 8.333_451_9e-3).addingProduct(p, r)
    p = Vec(repeating: 4.166_579_6e-2).addingProduct(p, r)
    p = Vec(repeating: 1.666_666_55e-1).addingProduct(p, r)
    p = Vec(repeating: 5.000_000_1e-1).addingProduct(p, r)
    let e = (r + Vec(repeating: 1)).addingProduct(p, r * r)
    // 2^n built directly in the exponent field.
    let bits = unsafeBitCast(t, to: SIMD16<UInt32>.self) &+ SIMD16<UInt32>(repeating: 127)
    let scale = unsafeBitCast(bits &<< 23, to: Vec.self)
    return e * scale
}

/// tanh for 16 lanes, as `1 - 2 / (e^(2x) + 1)` (exact at the ends: the exponential saturates).
@inline(__always)
func vectorTanh(_ x: Vec) -> Vec {
    let one = Vec(repeating: 1)
    return one - Vec(repeating: 2) / (vectorExp(x + x) + one)
}

/// erf for 16 lanes (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7).
@inline(__always)
func vectorErf(_ x: Vec) -> Vec {
    let sign = Vec(repeating: 1).replacing(with: Vec(repeating: -1), where: x .< 0)
    let a = x * sign
    let t = Vec(repeating: 1) / Vec(repeating: 1).addingProduct(Vec(repeating: 0.327_591_1), a)
    var p = Vec(repeating: 1.061_405_429)
    p = Vec(repeating: -1.453_152_027).addingProduct(p, t)
    p = Vec(repeating: 1.421_413_741).addingProduct(p, t)
    p = Vec(repeating: -0.284_496_736).addingProduct(p, t)
    p = Vec(repeating: 0.254_829_592).addingProduct(p, t)
    p = p * t
    return sign * (Vec(repeating: 1) - p * vectorExp(-(a * a)))
}
