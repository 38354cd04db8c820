import Swift
import SIMDSupport

/// The HNSW index's distances.
enum IndexCode {
    /// Inner product of two float vectors.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        typealias V = SIMD16<Float>
        var s0 = V(), s1 = V(), s2 = V(), s3 = V()
        var i = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 64 <= n {
            s0.addProduct(ra.loadUnaligned(fromByteOffset: 4 * i, as: V.self), rb.loadUnaligned(fromByteOffset: 4 * i, as: V.self))
            s1.addProduct(ra.loadUnaligned(fromByteOffset: 4 * i + 64, as: V.self), rb.loadUnaligned(fromByteOffset: 4 * i + 64, as: V.self))
            s2.addProduct(ra.loadUnaligned(fromByteOffset: 4 * i + 128, as: V.self), rb.loadUnaligned(fromByteOffset: 4 * i + 128, as: V.self))
            s3.addProduct(ra.loadUnaligned(fromByteOffset: 4 * i + 192, as: V.self), rb.loadUnaligned(fromByteOffset: 4 * i + 192, as: V.self))
            i += 64
        }
        while i + 16 <= n {
            s0.addProduct(ra.loadUnaligned(fromByteOffset: 4 * i, as: V.self), rb.loadUnaligned(fromByteOffset: 4 * i, as: V.self))
            i += 16
        }
        var total = horizontalSum((s0 + s1) + (s2 + s3))
        while i < n {
            total += a[i] * b[i]
            i += 1
        }
        return total
    }

    /// Inner product of a float vector with 8-bit codes; `n` is a multiple of 64.
    @inline(__always)
    static func dotCodes(_ q: UnsafePointer<Float>, _ c: UnsafePointer<Int8>, _ n: Int) -> Float {
        typealias V = SIMD16<Float>
        var s0 = V(), s1 = V(), s2 = V(), s3 = V()
        let rq = UnsafeRawPointer(q), rc = UnsafeRawPointer(c)
        var i = 0
        while i < n {
            s0.addProduct(rq.loadUnaligned(fromByteOffset: 4 * i, as: V.self), toFloat(widen(loadSignedBytes(rc + i))))
            s1.addProduct(rq.loadUnaligned(fromByteOffset: 4 * i + 64, as: V.self), toFloat(widen(loadSignedBytes(rc + i + 16))))
            s2.addProduct(rq.loadUnaligned(fromByteOffset: 4 * i + 128, as: V.self), toFloat(widen(loadSignedBytes(rc + i + 32))))
            s3.addProduct(rq.loadUnaligned(fromByteOffset: 4 * i + 192, as: V.self), toFloat(widen(loadSignedBytes(rc + i + 48))))
            i += 64
        }
        return horizontalSum((s0 + s1) + (s2 + s3))
    }
}

/// The KV cache's stores.
enum HalfCode {
    /// `count` floats rounded to f16.
    static func toHalves(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float16>, _ count: Int) {
        for i in 0..<count { out[i] = Float16(x[i]) }
    }
}
