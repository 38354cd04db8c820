// SIMDSupport: SIMD helpers shared by the inference kernels and the vector
// index. It must not hold kernels or know any model.
//
// Widening and conversion helpers spelled out lane by lane: the generic stdlib
// conversions are not inlined and make kernels several times slower, while
// these compile to single vpmovzxbd / vpmovsxbd / vcvtdq2ps / vcvtph2ps
// instructions. Everything here is inlinable so that it inlines across
// modules as it did within one.

public typealias Vec = SIMD16<Float>

@inlinable @inline(__always)
public func widen(_ v: SIMD16<UInt8>) -> SIMD16<Int32> {
    SIMD16<Int32>(Int32(v[0]), Int32(v[1]), Int32(v[2]), Int32(v[3]),
                  Int32(v[4]), Int32(v[5]), Int32(v[6]), Int32(v[7]),
                  Int32(v[8]), Int32(v[9]), Int32(v[10]), Int32(v[11]),
                  Int32(v[12]), Int32(v[13]), Int32(v[14]), Int32(v[15]))
}

@inlinable @inline(__always)
public func widen(_ v: SIMD16<Int8>) -> SIMD16<Int32> {
    SIMD16<Int32>(Int32(v[0]), Int32(v[1]), Int32(v[2]), Int32(v[3]),
                  Int32(v[4]), Int32(v[5]), Int32(v[6]), Int32(v[7]),
                  Int32(v[8]), Int32(v[9]), Int32(v[10]), Int32(v[11]),
                  Int32(v[12]), Int32(v[13]), Int32(v[14]), Int32(v[15]))
}

@inlinable @inline(__always)
public func toFloat(_ v: SIMD16<Int32>) -> Vec {
    Vec(Float(v[0]), Float(v[1]), Float(v[2]), Float(v[3]),
        Float(v[4]), Float(v[5]), Float(v[6]), Float(v[7]),
        Float(v[8]), Float(v[9]), Float(v[10]), Float(v[11]),
        Float(v[12]), Float(v[13]), Float(v[14]), Float(v[15]))
}

@inlinable @inline(__always)
public func toFloat(_ v: SIMD16<Float16>) -> Vec {
    Vec(Float(v[0]), Float(v[1]), Float(v[2]), Float(v[3]),
        Float(v[4]), Float(v[5]), Float(v[6]), Float(v[7]),
        Float(v[8]), Float(v[9]), Float(v[10]), Float(v[11]),
        Float(v[12]), Float(v[13]), Float(v[14]), Float(v[15]))
}

/// Each lane rounded to the nearest f16 (ties to even) and back: what
/// llama.cpp's f16 operands hold.
@inlinable @inline(__always)
public func roundedToHalf(_ v: Vec) -> Vec {
    Vec(Float(Float16(v[0])), Float(Float16(v[1])), Float(Float16(v[2])), Float(Float16(v[3])),
        Float(Float16(v[4])), Float(Float16(v[5])), Float(Float16(v[6])), Float(Float16(v[7])),
        Float(Float16(v[8])), Float(Float16(v[9])), Float(Float16(v[10])), Float(Float16(v[11])),
        Float(Float16(v[12])), Float(Float16(v[13])), Float(Float16(v[14])), Float(Float16(v[15])))
}

@inlinable @inline(__always)
public func loadVec(_ p: UnsafePointer<Float>) -> Vec {
    UnsafeRawPointer(p).loadUnaligned(as: Vec.self)
}

@inlinable @inline(__always)
public func storeVec(_ v: Vec, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec.self)
}

/// Two f16 values read with one 32-bit load (a scalar f16 load would add a
/// false dependency on the accumulators).
@inlinable @inline(__always)
public func loadHalfPair(_ p: UnsafeRawPointer) -> SIMD2<Float> {
    let h = unsafeBitCast(p.loadUnaligned(as: UInt32.self), to: SIMD2<Float16>.self)
    return SIMD2<Float>(Float(h[0]), Float(h[1]))
}

@inlinable @inline(__always)
public func loadBytes(_ p: UnsafeRawPointer) -> SIMD16<UInt8> {
    p.loadUnaligned(as: SIMD16<UInt8>.self)
}

@inlinable @inline(__always)
public func loadSignedBytes(_ p: UnsafeRawPointer) -> SIMD16<Int8> {
    p.loadUnaligned(as: SIMD16<Int8>.self)
}

/// Sum of the 16 lanes as a tree of vector adds. (`.sum()` adds the lanes one
/// after another in a 15-step dependency chain, which costs more than a whole
/// row of a matrix-vector product.)
@inlinable @inline(__always)
public func horizontalSum(_ v: Vec) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

/// The four sums of `a`, `b`, `c` and `d`'s lanes, in one vector: a tree of
/// shuffles and adds shared by the four (each summed in its own fixed order).
@inlinable @inline(__always)
public func horizontalSums(_ a: Vec, _ b: Vec, _ c: Vec, _ d: Vec) -> SIMD4<Float> {
    let ab = SIMD16(lowHalf: a.lowHalf + a.highHalf, highHalf: b.lowHalf + b.highHalf)
    let cd = SIMD16(lowHalf: c.lowHalf + c.highHalf, highHalf: d.lowHalf + d.highHalf)
    let abcd = SIMD16(lowHalf: ab.evenHalf + ab.oddHalf, highHalf: cd.evenHalf + cd.oddHalf)
    let pairs = abcd.evenHalf + abcd.oddHalf
    return pairs.evenHalf + pairs.oddHalf
}

/// The largest lane of `v`, whose lanes are all zero or positive (and not
/// NaN): their bit patterns order as unsigned integers, whose reduction the
/// compiler makes a tree of vpmaxud (the stdlib's float `max()` goes lane by lane).
@inlinable @inline(__always)
public func horizontalMaxOfMagnitudes(_ v: Vec) -> Float {
    Float(bitPattern: unsafeBitCast(v, to: SIMD16<UInt32>.self).max())
}

/// Lane-wise |v|, by clearing the sign bits.
@inlinable @inline(__always)
public func absolute(_ v: Vec) -> Vec {
    unsafeBitCast(unsafeBitCast(v, to: SIMD16<UInt32>.self) & SIMD16(repeating: 0x7FFF_FFFF), to: Vec.self)
}

/// Rounds to the nearest integer (ties to even) for |v| < 2^22: adding
/// 1.5 * 2^23 leaves the integer in the low mantissa bits.
@inlinable @inline(__always)
public func roundToInt(_ v: Vec) -> SIMD16<Int32> {
    let t = v + Vec(repeating: 12_582_912)
    return unsafeBitCast(t, to: SIMD16<Int32>.self) &- SIMD16<Int32>(repeating: 0x4B40_0000)
}

/// Lane-wise maximum as one vmaxps (the stdlib's `pointwiseMax` handles NaN
/// lane by lane in a scalar loop).
@inlinable @inline(__always)
public func lanewiseMax(_ a: Vec, _ b: Vec) -> Vec {
    var m = a
    m.replace(with: b, where: b .> a)
    return m
}

@inlinable @inline(__always)
public func lanewiseMin(_ a: Vec, _ b: Vec) -> Vec {
    var m = a
    m.replace(with: b, where: b .< a)
    return m
}

@inlinable @inline(__always)
public func widen(_ v: SIMD16<UInt16>) -> SIMD16<UInt32> {
    SIMD16<UInt32>(UInt32(v[0]), UInt32(v[1]), UInt32(v[2]), UInt32(v[3]),
                   UInt32(v[4]), UInt32(v[5]), UInt32(v[6]), UInt32(v[7]),
                   UInt32(v[8]), UInt32(v[9]), UInt32(v[10]), UInt32(v[11]),
                   UInt32(v[12]), UInt32(v[13]), UInt32(v[14]), UInt32(v[15]))
}

/// Sixteen bf16 values (the high halves of f32s) as f32.
@inlinable @inline(__always)
public func bf16ToFloat(_ p: UnsafeRawPointer) -> Vec {
    unsafeBitCast(widen(p.loadUnaligned(as: SIMD16<UInt16>.self)) &<< 16, to: Vec.self)
}

/// Bit `lane + offset` of `bits` in each lane, moved to bit position `to`
/// (the fifth bits of Q5_0 and Q5_1, stored as one 32-bit word per block).
@inlinable @inline(__always)
public func bitsPerLane(_ bits: UInt32, offset: UInt32, to position: UInt32) -> SIMD16<Int32> {
    let shifted = SIMD16<UInt32>(repeating: bits) &>> (SIMD16<UInt32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) &+ offset)
    return unsafeBitCast((shifted & 1) &<< position, to: SIMD16<Int32>.self)
}
