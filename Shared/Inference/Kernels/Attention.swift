/// Scaled dot-product attention of one query head over cached keys and values.
public enum Attention {
    /// `out = softmax(q . K[j] * scale for j < length) . V`, where key and value
    /// `j` start at `keys + j * stride` and `values + j * stride`. `headDim` is a
    /// multiple of 16; `scores` holds `length` floats.
    @inline(__always)
    public static func attend(query q: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                              stride: Int, length: Int, headDim: Int, scale: Float,
                              scores: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        if headDim == 64 {
            let q0 = loadVec(q), q1 = loadVec(q + 16), q2 = loadVec(q + 32), q3 = loadVec(q + 48)
            for j in 0..<length {
                let k = keys + j * stride
                var a = q0 * loadVec(k)
                var b = q1 * loadVec(k + 16)
                a.addProduct(q2, loadVec(k + 32))
                b.addProduct(q3, loadVec(k + 48))
                scores[j] = (a + b).sum() * scale
            }
        } else {
            for j in 0..<length {
                scores[j] = MatVec.dotF32(q, keys + j * stride, count: headDim) * scale
            }
        }
        VectorOps.softmax(scores, count: length)
        if headDim == 64 {
            var o0 = Vec(), o1 = Vec(), o2 = Vec(), o3 = Vec()
            for j in 0..<length {
                let v = values + j * stride
                let s = Vec(repeating: scores[j])
                o0.addProduct(s, loadVec(v))
                o1.addProduct(s, loadVec(v + 16))
                o2.addProduct(s, loadVec(v + 32))
                o3.addProduct(s, loadVec(v + 48))
            }
            storeVec(o0, out); storeVec(o1, out + 16); storeVec(o2, out + 32); storeVec(o3, out + 48)
        } else {
            var d = 0
            while d < headDim {
                var o = Vec()
                for j in 0..<length { o.addProduct(Vec(repeating: scores[j]), loadVec(values + j * stride + d)) }
                storeVec(o, out + d)
                d += 16
            }
        }
    }
}
