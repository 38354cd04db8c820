import SIMDSupport

/// How activations are quantised for a weight type: as llama.cpp pairs them
/// (each type's `vec_dot_type`), so that a product is computed from the same
/// 8-bit numbers as there.
public enum ActivationFormat: Sendable, CaseIterable {
    /// Q8_0 (and Q8_1): per 32 values, `d = amax / 127` rounded to f16 and
    /// `q = round(x * 127 / amax)`; for the 32-value types.
    case q8_0
    /// Q8_K: one scale per 256 values, `q = round(x * 127 / amax)` (ties to
    /// even) and `d = 1 / (127 / amax)` in f32; for the K-quants.
    case q8_K

    /// The format llama.cpp multiplies a matrix of `type` with.
    public init(pairedWith type: GGMLType) {
        switch type {
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: self = .q8_K
        default: self = .q8_0
        }
    }

    /// Values sharing one scale.
    public var scaleBlock: Int { self == .q8_K ? 256 : 32 }
}

/// Activations quantised to 8 bits for the integer kernels, one column per
/// token (or per sequence): per 32 values a scale `dx` (`x ≈ dx * q`; in the
/// Q8_K format the 8 blocks of 256 values share theirs), the sum of the 32
/// dequantised values and of each half of them (for the weight offsets, which
/// multiply sums of activations), and the sum of the 32 8-bit values
/// themselves.
public final class ActivationBatch: @unchecked Sendable {
    public let capacity: Int
    public let width: Int
    public let format: ActivationFormat
    package let bytes: UnsafeMutablePointer<Int8>
    package let scales: UnsafeMutablePointer<Float>
    package let sums: UnsafeMutablePointer<Float>
    package let halfSums: UnsafeMutablePointer<Float>
    package let intSums: UnsafeMutablePointer<Int32>
    /// The sums of each half's 8-bit values (16 of them).
    package let halfIntSums: UnsafeMutablePointer<Int32>

    /// Room for `capacity` columns of up to `width` values (rounded up to a
    /// multiple of the format's scale block).
    public init(capacity: Int, width: Int, format: ActivationFormat = .q8_0) {
        self.capacity = max(capacity, 1)
        self.format = format
        self.width = (width + format.scaleBlock - 1) / format.scaleBlock * format.scaleBlock
        let blocks = self.width / 32
        bytes = .allocate(capacity: self.capacity * self.width)
        scales = .allocate(capacity: self.capacity * blocks)
        sums = .allocate(capacity: self.capacity * blocks)
        halfSums = .allocate(capacity: self.capacity * blocks * 2)
        intSums = .allocate(capacity: self.capacity * blocks)
        halfIntSums = .allocate(capacity: self.capacity * blocks * 2)
        bytes.initialize(repeating: 0, count: self.capacity * self.width)
        scales.initialize(repeating: 0, count: self.capacity * blocks)
        sums.initialize(repeating: 0, count: self.capacity * blocks)
        halfSums.initialize(repeating: 0, count: self.capacity * blocks * 2)
        intSums.initialize(repeating: 0, count: self.capacity * blocks)
        halfIntSums.initialize(repeating: 0, count: self.capacity * blocks * 2)
    }

    deinit {
        bytes.deallocate()
        scales.deallocate()
        sums.deallocate()
        halfSums.deallocate()
        intSums.deallocate()
        halfIntSums.deallocate()
    }

    /// The 8-bit values of column `c`.
    public func values(_ c: Int) -> UnsafePointer<Int8> { UnsafePointer(bytes + c * width) }
    public func scale(_ c: Int, block b: Int) -> Float { scales[c * (width / 32) + b] }
    /// The sum of block `b`'s dequantised values, and of its half `h` (0 or 1).
    public func sum(_ c: Int, block b: Int) -> Float { sums[c * (width / 32) + b] }
    public func halfSum(_ c: Int, block b: Int, half h: Int) -> Float { halfSums[2 * (c * (width / 32) + b) + h] }
    /// The sum of block `b`'s 8-bit values.
    public func integerSum(_ c: Int, block b: Int) -> Int32 { intSums[c * (width / 32) + b] }
    /// The sum of the 8-bit values of block `b`'s half `h`.
    public func integerHalfSum(_ c: Int, block b: Int, half h: Int) -> Int32 { halfIntSums[2 * (c * (width / 32) + b) + h] }
}
