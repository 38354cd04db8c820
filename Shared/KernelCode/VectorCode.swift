import Swift
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Kernels
import SIMDSupport

/// Element-wise and reduction kernels on f32 vectors.
enum VectorCode {
    /// `out = x / sqrt(mean(x^2) + eps) * weight`.
    static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count n: Int, epsilon: Float,
                               into out: UnsafeMutablePointer<Float>) {
        var acc = Vec()
        var i = 0
        while i + 16 <= n { let v = loadVec(x + i); acc.addProduct(v, v); i += 16 }
        var sum = horizontalSum(acc)
        while i < n { sum += x[i] * x[i]; i += 1 }
        let scale = 1 / (sum / Float(n) + epsilon).squareRoot()
        let s = Vec(repeating: scale)
        i = 0
        while i + 16 <= n { storeVec(loadVec(x + i) * s * loadVec(weight + i), out + i); i += 16 }
        while i < n { out[i] = x[i] * scale * weight[i]; i += 1 }
    }

    /// `x += y`.
    static func add(_ x: UnsafeMutablePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) {
        var i = 0
        while i + 16 <= n { storeVec(loadVec(x + i) + loadVec(y + i), x + i); i += 16 }
        while i < n { x[i] += y[i]; i += 1 }
    }

    /// `gate = silu(gate) * up`, SwiGLU's gating.
    static func siluMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count n: Int) {
        var i = 0
        let one = Vec(repeating: 1)
        while i + 16 <= n {
            let g = loadVec(gate + i)
            storeVec(g / (one + vectorExp(-g)) * loadVec(up + i), gate + i)
            i += 16
        }
        while i < n { gate[i] = gate[i] / (1 + expf(-gate[i])) * up[i]; i += 1 }
    }

    /// `gate = gelu(gate) * up` with the tanh form of GELU (GeGLU, Gemma's
    /// gating): `0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))`, as llama.cpp
    /// computes it on the CPU: from a table over f16, so `g` rounded to f16
    /// and the GELU rounded to f16 (0 below -10, `g` above 10).
    static func geluTanhMultiply(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count n: Int) {
        let half = Vec(repeating: 0.5), one = Vec(repeating: 1)
        let c = Vec(repeating: 0.797_884_560_802_865_36), a = Vec(repeating: 0.044715)
        let low = Vec(repeating: -10), high = Vec(repeating: 10)
        var i = 0
        while i + 16 <= n {
            let x = loadVec(gate + i)
            let g = roundedToHalf(x)
            let inner = c * g * one.addingProduct(a * g, g)
            var y = roundedToHalf(half * g * (one + vectorTanh(inner)))
            y.replace(with: x, where: x .>= high)
            y.replace(with: Vec(), where: x .<= low)
            storeVec(y * loadVec(up + i), gate + i)
            i += 16
        }
        while i < n {
            let x = gate[i], g = Float(Float16(x))
            let y = x <= -10 ? 0 : x >= 10 ? x : Float(Float16(0.5 * g * (1 + tanhf(0.797_884_560_802_865_36 * g * (1 + 0.044715 * g * g)))))
            gate[i] = y * up[i]
            i += 1
        }
    }

    /// Each value rounded to f16 and back, in place.
    static func roundToHalves(_ x: UnsafeMutablePointer<Float>, count n: Int) {
        var i = 0
        while i + 16 <= n { storeVec(roundedToHalf(loadVec(x + i)), x + i); i += 16 }
        while i < n { x[i] = Float(Float16(x[i])); i += 1 }
    }

    /// `x *= factor`.
    static func scale(_ x: UnsafeMutablePointer<Float>, by factor: Float, count n: Int) {
        let f = Vec(repeating: factor)
        var i = 0
        while i + 16 <= n { storeVec(loadVec(x + i) * f, x + i); i += 16 }
        while i < n { x[i] *= factor; i += 1 }
    }

    /// `x = cap * tanh(x / cap)`: logit soft-capping.
    static func softCap(_ x: UnsafeMutablePointer<Float>, cap: Float, count n: Int) {
        let c = Vec(repeating: cap), inverse = Vec(repeating: 1 / cap)
        var i = 0
        while i + 16 <= n { storeVec(c * vectorTanh(loadVec(x + i) * inverse), x + i); i += 16 }
        while i < n { x[i] = cap * tanhf(x[i] / cap); i += 1 }
    }

    /// Softmax in place over `n` values; returns nothing, the values sum to 1.
    static func softmax(_ x: UnsafeMutablePointer<Float>, count n: Int) {
        var maxValue = -Float.infinity
        var i = 0
        var m = Vec(repeating: -.infinity)
        while i + 16 <= n { m = lanewiseMax(m, loadVec(x + i)); i += 16 }
        maxValue = m.max()
        while i < n { maxValue = max(maxValue, x[i]); i += 1 }
        let mv = Vec(repeating: maxValue)
        var sumV = Vec()
        i = 0
        while i + 16 <= n { let e = vectorExp(loadVec(x + i) - mv); storeVec(e, x + i); sumV += e; i += 16 }
        var sum = horizontalSum(sumV)
        while i < n { let e = expf(x[i] - maxValue); x[i] = e; sum += e; i += 1 }
        let inv = 1 / sum
        let iv = Vec(repeating: inv)
        i = 0
        while i + 16 <= n { storeVec(loadVec(x + i) * iv, x + i); i += 16 }
        while i < n { x[i] *= inv; i += 1 }
    }

    /// `x = (x - mean) / sqrt(variance + eps) * weight + bias` (BERT's LayerNorm).
    static func layerNorm(_ x: UnsafeMutablePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 count n: Int, epsilon: Float) {
        var sum = 0.0, squares = 0.0
        for i in 0..<n {
            let v = Double(x[i])
            sum += v
            squares += v * v
        }
        let mean = sum / Double(n)
        let variance = max(0, squares / Double(n) - mean * mean)
        let scale = Float(1 / (variance + Double(epsilon)).squareRoot())
        let m = Float(mean)
        for i in 0..<n { x[i] = (x[i] - m) * scale * weight[i] + bias[i] }
    }

    /// GELU with the exact error function, `x / 2 * (1 + erf(x / sqrt 2))`, in place.
    /// `count` is a multiple of 16.
    static func gelu(_ x: UnsafeMutablePointer<Float>, count n: Int) {
        var i = 0
        let half = Vec(repeating: 0.5), one = Vec(repeating: 1), invSqrt2 = Vec(repeating: 0.707_106_78)
        while i + 16 <= n {
            let v = loadVec(x + i)
            storeVec(half * v * (one + vectorErf(v * invSqrt2)), x + i)
            i += 16
        }
    }



    /// Rotates pairs `(v[2i], v[2i+1])` of each of `heads` heads by the angles
    /// whose cosines and sines are given (llama.cpp's "normal" RoPE, used for
    /// `llama` models).
    static func ropeNormal(_ v: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, ropeDim: Int,
                                  cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        for h in 0..<heads {
            let p = v + h * headDim
            for i in 0..<(ropeDim / 2) {
                let a = p[2 * i], b = p[2 * i + 1]
                p[2 * i] = a * cos[i] - b * sin[i]
                p[2 * i + 1] = a * sin[i] + b * cos[i]
            }
        }
    }

    /// Rotates pairs `(v[i], v[i + ropeDim/2])` (the "NeoX" RoPE of Qwen2 and others).
    static func ropeNeoX(_ v: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, ropeDim: Int,
                                cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        let half = ropeDim / 2
        for h in 0..<heads {
            let p = v + h * headDim
            for i in 0..<half {
                let a = p[i], b = p[i + half]
                p[i] = a * cos[i] - b * sin[i]
                p[i + half] = a * sin[i] + b * cos[i]
            }
        }
    }
}
