import SIMDSupport

/// Activations quantised to 8 bits for the integer kernels, one column per
/// token (or per sequence): per 32 values a scale `dx` (`x ≈ dx * q`), the sum
/// of the 32 dequantised values and of each half of them (for the weight
/// offsets, which multiply sums of activations), and the sum of the 32 8-bit
/// values themselves.
public final class ActivationBatch: @unchecked Sendable {
    public let capacity: Int
    public let width: Int
    package let bytes: UnsafeMutablePointer<Int8>
    package let scales: UnsafeMutablePointer<Float>
    package let sums: UnsafeMutablePointer<Float>
    package let halfSums: UnsafeMutablePointer<Float>
    package let intSums: UnsafeMutablePointer<Int32>

    /// Room for `capacity` columns of up to `width` values (a multiple of 32).
    public init(capacity: Int, width: Int) {
        self.capacity = max(capacity, 1)
        self.width = (width + 31) / 32 * 32
        let blocks = self.width / 32
        bytes = .allocate(capacity: self.capacity * self.width)
        scales = .allocate(capacity: self.capacity * blocks)
        sums = .allocate(capacity: self.capacity * blocks)
        halfSums = .allocate(capacity: self.capacity * blocks * 2)
        intSums = .allocate(capacity: self.capacity * blocks)
        bytes.initialize(repeating: 0, count: self.capacity * self.width)
        scales.initialize(repeating: 0, count: self.capacity * blocks)
        sums.initialize(repeating: 0, count: self.capacity * blocks)
        halfSums.initialize(repeating: 0, count: self.capacity * blocks * 2)
        intSums.initialize(repeating: 0, count: self.capacity * blocks)
    }

    deinit {
        bytes.deallocate()
        scales.deallocate()
        sums.deallocate()
        halfSums.deallocate()
        intSums.deallocate()
    }

    /// The 8-bit values of column `c`.
    public func values(_ c: Int) -> UnsafePointer<Int8> { UnsafePointer(bytes + c * width) }
    public func scale(_ c: Int, block b: Int) -> Float { scales[c * (width / 32) + b] }
    /// The sum of block `b`'s dequantised values, and of its half `h` (0 or 1).
    public func sum(_ c: Int, block b: Int) -> Float { sums[c * (width / 32) + b] }
    public func halfSum(_ c: Int, block b: Int, half h: Int) -> Float { halfSums[2 * (c * (width / 32) + b) + h] }
    /// The sum of block `b`'s 8-bit values.
    public func integerSum(_ c: Int, block b: Int) -> Int32 { intSums[c * (width / 32) + b] }
}
