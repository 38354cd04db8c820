import SIMDSupport

/// An activation vector quantised to 8 bits in blocks of 32, as the integer
/// kernels read it: values widened to Int32 (so each weight block needs only
/// one widening of its own bytes), and per block the scale and the sum of the
/// dequantised values (the Q8_1 form ggml uses for the same purpose), and the
/// sum of each half block for the weight types whose offsets cover 16 values.
public struct QuantizedVector {
    public let values: UnsafeMutablePointer<Int32>
    public let scales: UnsafeMutablePointer<Float>
    public let sums: UnsafeMutablePointer<Float>
    public let halfSums: UnsafeMutablePointer<Float>

    public init(values: UnsafeMutablePointer<Int32>, scales: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>,
                halfSums: UnsafeMutablePointer<Float>) {
        self.values = values
        self.scales = scales
        self.sums = sums
        self.halfSums = halfSums
    }
}

/// Matrix times vector for decoding one token: every weight byte is read once,
/// so these kernels are bound by memory bandwidth and instruction count.
/// Quantised weights are multiplied in integers against the 8-bit quantised
/// activations; f16 and f32 weights against the f32 activations.
public enum MatVec {
    /// Quantises `count` activations (a multiple of 32) into `q`.
    public static func quantize(_ x: UnsafePointer<Float>, count: Int, into q: QuantizedVector) {
        for b in 0..<(count / 32) {
            let lo = loadVec(x + b * 32), hi = loadVec(x + b * 32 + 16)
            let amax = max(max(lo.max(), -lo.min()), max(hi.max(), -hi.min()))
            let d = amax / 127
            let id = Vec(repeating: d > 0 ? 1 / d : 0)
            let qlo = roundToInt(lo * id), qhi = roundToInt(hi * id)
            UnsafeMutableRawPointer(q.values + b * 32).storeBytes(of: qlo, as: SIMD16<Int32>.self)
            UnsafeMutableRawPointer(q.values + b * 32 + 16).storeBytes(of: qhi, as: SIMD16<Int32>.self)
            q.scales[b] = d
            let low = qlo.wrappedSum(), high = qhi.wrappedSum()
            q.sums[b] = d * Float(low &+ high)
            q.halfSums[2 * b] = d * Float(low)
            q.halfSums[2 * b + 1] = d * Float(high)
        }
    }

    /// `y[r] = w[r] . x` for `r` in `rows`. `q` must hold `quantize(x)` when `w` is quantised.
    public static func multiply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, quantized q: QuantizedVector,
                                into y: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        let n = w.columns
        switch w.type {
        case .q4_1:
            for r in rows { y[r] = dotQ4_1(w.row(r), q, blocks: n / 32) }
        case .q4_0:
            for r in rows { y[r] = dotQ4_0(w.row(r), q, blocks: n / 32) }
        case .q8_0:
            for r in rows { y[r] = dotQ8_0(w.row(r), q, blocks: n / 32) }
        case .q5_0:
            for r in rows { y[r] = dotQ5_0(w.row(r), q, blocks: n / 32) }
        case .q5_1:
            for r in rows { y[r] = dotQ5_1(w.row(r), q, blocks: n / 32) }
        case .q2_K:
            for r in rows { y[r] = dotQ2_K(w.row(r), q, superBlocks: n / 256) }
        case .q3_K:
            for r in rows { y[r] = dotQ3_K(w.row(r), q, superBlocks: n / 256) }
        case .q4_K:
            for r in rows { y[r] = dotQ4_K(w.row(r), q, superBlocks: n / 256) }
        case .q5_K:
            for r in rows { y[r] = dotQ5_K(w.row(r), q, superBlocks: n / 256) }
        case .q6_K:
            for r in rows { y[r] = dotQ6_K(w.row(r), q, superBlocks: n / 256) }
        case .bf16:
            for r in rows { y[r] = dotBF16(w.row(r), x, count: n) }
        case .f16:
            for r in rows { y[r] = dotF16(w.row(r), x, count: n) }
        case .f32:
            for r in rows { y[r] = dotF32(w.row(r).assumingMemoryBound(to: Float.self), x, count: n) }
        default:
            fatalError("no kernel for \(w.type)")
        }
    }

    /// `y[r] = w[r] . x` in f32 throughout: each row is dequantised into
    /// `scratch` (`w.columns` floats) and multiplied with the f32 activations.
    public static func multiplyExact(_ w: WeightMatrix, _ x: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                                     into y: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        for r in rows {
            Dequantize.row(w.type, w.row(r), count: w.columns, into: scratch)
            y[r] = dotF32(scratch, x, count: w.columns)
        }
    }

    @inline(__always)
    static func loadInts(_ p: UnsafePointer<Int32>) -> SIMD16<Int32> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Int32>.self)
    }

    /// Q4_1 block: `d * q + m`, so block . x = `d * dx * (q . qx) + m * sum(x)`.
    @inline(__always)
    public static func dotQ4_1(_ row: UnsafeRawPointer, _ x: QuantizedVector, blocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offsets = SIMD2<Float>()
        var b = 0
        while b + 2 <= blocks {
            let p0 = row + b * 20, p1 = p0 + 20
            let dm0 = loadHalfPair(p0), dm1 = loadHalfPair(p1)
            let w0 = widen(loadBytes(p0 + 4)), w1 = widen(loadBytes(p1 + 4))
            let y = x.values + b * 32
            let i0 = (w0 & 15) &* loadInts(y) &+ (w0 &>> 4) &* loadInts(y + 16)
            let i1 = (w1 & 15) &* loadInts(y + 32) &+ (w1 &>> 4) &* loadInts(y + 48)
            acc0.addProduct(toFloat(i0), Vec(repeating: dm0[0] * x.scales[b]))
            acc1.addProduct(toFloat(i1), Vec(repeating: dm1[0] * x.scales[b + 1]))
            offsets.addProduct(SIMD2(dm0[1], dm1[1]), SIMD2(x.sums[b], x.sums[b + 1]))
            b += 2
        }
        if b < blocks {
            let p0 = row + b * 20
            let dm0 = loadHalfPair(p0)
            let w0 = widen(loadBytes(p0 + 4))
            let y = x.values + b * 32
            let i0 = (w0 & 15) &* loadInts(y) &+ (w0 &>> 4) &* loadInts(y + 16)
            acc0.addProduct(toFloat(i0), Vec(repeating: dm0[0] * x.scales[b]))
            offsets[0] += dm0[1] * x.sums[b]
        }
        return horizontalSum(acc0 + acc1) + offsets[0] + offsets[1]
    }

    /// Q4_0 block: `d * (q - 8)`, so block . x = `d * dx * (q . qx) - 8 * d * sum(x)`.
    @inline(__always)
    public static func dotQ4_0(_ row: UnsafeRawPointer, _ x: QuantizedVector, blocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var offset: Float = 0
        for b in 0..<blocks {
            let p = row + b * 18
            let d = loadHalfPair(p)[0]
            let w = widen(loadBytes(p + 2))
            let y = x.values + b * 32
            let i = (w & 15) &* loadInts(y) &+ (w &>> 4) &* loadInts(y + 16)
            if b & 1 == 0 {
                acc0.addProduct(toFloat(i), Vec(repeating: d * x.scales[b]))
            } else {
                acc1.addProduct(toFloat(i), Vec(repeating: d * x.scales[b]))
            }
            offset -= 8 * d * x.sums[b]
        }
        return horizontalSum(acc0 + acc1) + offset
    }

    /// Q8_0 block: `d * q`, so block . x = `d * dx * (q . qx)`.
    @inline(__always)
    public static func dotQ8_0(_ row: UnsafeRawPointer, _ x: QuantizedVector, blocks: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var b = 0
        while b + 2 <= blocks {
            let p0 = row + b * 34, p1 = p0 + 34
            let y = x.values + b * 32
            let i0 = widen(loadSignedBytes(p0 + 2)) &* loadInts(y) &+ widen(loadSignedBytes(p0 + 18)) &* loadInts(y + 16)
            let i1 = widen(loadSignedBytes(p1 + 2)) &* loadInts(y + 32) &+ widen(loadSignedBytes(p1 + 18)) &* loadInts(y + 48)
            acc0.addProduct(toFloat(i0), Vec(repeating: loadHalfPair(p0)[0] * x.scales[b]))
            acc1.addProduct(toFloat(i1), Vec(repeating: loadHalfPair(p1)[0] * x.scales[b + 1]))
            b += 2
        }
        if b < blocks {
            let p0 = row + b * 34
            let y = x.values + b * 32
            let i0 = widen(loadSignedBytes(p0 + 2)) &* loadInts(y) &+ widen(loadSignedBytes(p0 + 18)) &* loadInts(y + 16)
            acc0.addProduct(toFloat(i0), Vec(repeating: loadHalfPair(p0)[0] * x.scales[b]))
        }
        return horizontalSum(acc0 + acc1)
    }

    @inline(__always)
    public static func dotF16(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        var acc = Vec()
        var i = 0
        while i + 16 <= count {
            acc.addProduct(toFloat(row.loadUnaligned(fromByteOffset: 2 * i, as: SIMD16<Float16>.self)), loadVec(x + i))
            i += 16
        }
        var tail: Float = 0
        while i < count {
            tail += Float(Float16(bitPattern: row.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) * x[i]
            i += 1
        }
        return horizontalSum(acc) + tail
    }

    @inline(__always)
    public static func dotF32(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var i = 0
        while i + 32 <= count {
            acc0.addProduct(loadVec(a + i), loadVec(b + i))
            acc1.addProduct(loadVec(a + i + 16), loadVec(b + i + 16))
            i += 32
        }
        if i + 16 <= count {
            acc0.addProduct(loadVec(a + i), loadVec(b + i))
            i += 16
        }
        var tail: Float = 0
        while i < count {
            tail += a[i] * b[i]
            i += 1
        }
        return horizontalSum(acc0 + acc1) + tail
    }
}

/// Owns the memory of a `QuantizedVector` for up to `capacity` activations.
public final class QuantizedVectorBuffer: @unchecked Sendable {
    public let capacity: Int
    public let vector: QuantizedVector

    public init(capacity: Int) {
        self.capacity = (capacity + 31) / 32 * 32
        let blocks = self.capacity / 32
        vector = QuantizedVector(values: .allocate(capacity: self.capacity), scales: .allocate(capacity: blocks),
                                 sums: .allocate(capacity: blocks), halfSums: .allocate(capacity: 2 * blocks))
        vector.values.initialize(repeating: 0, count: self.capacity)
        vector.scales.initialize(repeating: 0, count: blocks)
        vector.sums.initialize(repeating: 0, count: blocks)
        vector.halfSums.initialize(repeating: 0, count: 2 * blocks)
    }

    deinit {
        vector.values.deallocate()
        vector.scales.deallocate()
        vector.sums.deallocate()
        vector.halfSums.deallocate()
    }
}
