import Foundation
import SIMDSupport

/// How fast this machine streams memory into the cores: the limit of
/// one-token decoding, which reads every weight once per token.
public enum MemoryBandwidth {
    /// Read bandwidth in GB/s: `threads` threads each sum their share of a
    /// `bytes` buffer (far larger than the caches), the median of `rounds`
    /// passes after one warm-up pass.
    public static func read(bytes: Int, threads: Int, rounds: Int = 5) -> Double {
        let count = max(bytes / 4 / 64 * 64, 64)
        let buffer = FloatBuffer(count: count)
        for i in stride(from: 0, to: count, by: 1024) { buffer.pointer[i] = Float(i & 7) } // every page resident
        let pool = ThreadPool(threadCount: threads)
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: max(threads, 1) * 16)
        defer { sums.deallocate() }
        var seconds: [Double] = []
        for round in 0...rounds {
            let start = Date()
            pool.run { thread, n in
                let part = ThreadPool.split(count / 64, part: thread, of: n)
                sums[thread * 16] = sum(buffer.pointer + part.lowerBound * 64, blocks: part.count)
            }
            if round > 0 { seconds.append(Date().timeIntervalSince(start)) }
        }
        seconds.sort()
        return Double(count * 4) / seconds[seconds.count / 2] / 1e9
    }

    /// The sum of `blocks` blocks of 64 floats (four independent vector accumulators).
    static func sum(_ p: UnsafePointer<Float>, blocks: Int) -> Float {
        var a = Vec(), b = Vec(), c = Vec(), d = Vec()
        var q = p
        for _ in 0..<blocks {
            a += loadVec(q); b += loadVec(q + 16); c += loadVec(q + 32); d += loadVec(q + 48)
            q += 64
        }
        return horizontalSum(a + b + c + d)
    }
}
