import SIMDSupport
import VNNI

/// Activations quantised to 8 bits for the integer kernels, one column per
/// token (or per sequence): per 32 values a scale `dx` (`x ≈ dx * q`), the sum
/// of the 32 dequantised values and of each half of them (for the weight
/// offsets, which multiply sums of activations).
public final class ActivationBatch: @unchecked Sendable {
    public let capacity: Int
    public let width: Int
    let bytes: UnsafeMutablePointer<Int8>
    let scales: UnsafeMutablePointer<Float>
    let sums: UnsafeMutablePointer<Float>
    let halfSums: UnsafeMutablePointer<Float>

    /// Room for `capacity` columns of up to `width` values (a multiple of 32).
    public init(capacity: Int, width: Int) {
        self.capacity = max(capacity, 1)
        self.width = (width + 31) / 32 * 32
        let blocks = self.width / 32
        bytes = .allocate(capacity: self.capacity * self.width)
        scales = .allocate(capacity: self.capacity * blocks)
        sums = .allocate(capacity: self.capacity * blocks)
        halfSums = .allocate(capacity: self.capacity * blocks * 2)
        bytes.initialize(repeating: 0, count: self.capacity * self.width)
        scales.initialize(repeating: 0, count: self.capacity * blocks)
        sums.initialize(repeating: 0, count: self.capacity * blocks)
        halfSums.initialize(repeating: 0, count: self.capacity * blocks * 2)
    }

    deinit {
        bytes.deallocate()
        scales.deallocate()
        sums.deallocate()
        halfSums.deallocate()
    }

    /// Quantises `count` values (a multiple of 32) into column `c`: per block
    /// `dx = max |x| / 127` and `q = round(x / dx)`.
    public func quantize(_ x: UnsafePointer<Float>, count: Int, column c: Int) {
        let blocks = width / 32
        let q = bytes + c * width
        for b in 0..<(count / 32) {
            let lo = loadVec(x + b * 32), hi = loadVec(x + b * 32 + 16)
            let amax = horizontalMaxOfMagnitudes(lanewiseMax(absolute(lo), absolute(hi)))
            let d = amax / 127
            let id = Vec(repeating: d > 0 ? 1 / d : 0)
            let qlo = roundToInt(lo * id), qhi = roundToInt(hi * id)
            UnsafeMutableRawPointer(q + b * 32).storeBytes(of: SIMD16<Int8>(truncatingIfNeeded: qlo), as: SIMD16<Int8>.self)
            UnsafeMutableRawPointer(q + b * 32 + 16).storeBytes(of: SIMD16<Int8>(truncatingIfNeeded: qhi), as: SIMD16<Int8>.self)
            let low = qlo.wrappedSum(), high = qhi.wrappedSum()
            scales[c * blocks + b] = d
            sums[c * blocks + b] = d * Float(low &+ high)
            halfSums[2 * (c * blocks + b)] = d * Float(low)
            halfSums[2 * (c * blocks + b) + 1] = d * Float(high)
        }
    }

    /// The 8-bit values of column `c`.
    public func values(_ c: Int) -> UnsafePointer<Int8> { UnsafePointer(bytes + c * width) }
    public func scale(_ c: Int, block b: Int) -> Float { scales[c * (width / 32) + b] }
    /// The sum of block `b`'s dequantised values, and of its half `h` (0 or 1).
    public func sum(_ c: Int, block b: Int) -> Float { sums[c * (width / 32) + b] }
    public func halfSum(_ c: Int, block b: Int, half h: Int) -> Float { halfSums[2 * (c * (width / 32) + b) + h] }
}

extension PackedMatrix {
    /// `y_c[r] = w[r] . x_c` for the rows of groups `groups` (16 rows each; the
    /// last group's padding rows are not written) and the columns `columns` of
    /// `batch`, where `y_c = output + c * stride` for the c-th of those columns.
    /// Each column's result is computed by the same operations in the same
    /// order whatever the other columns are: a token's result never depends on
    /// what it is batched with.
    public func multiply(_ batch: ActivationBatch, columns: Range<Int>, into output: UnsafeMutablePointer<Float>, stride: Int,
                         groups: Range<Int>) {
        switch (format.nibbles, format.subBlocks, format.halfNumbers, format.storedOffsets) {
        case (true, 1, true, false): tiles(NibblesHalfFactor.self, batch, columns, output, stride, groups)
        case (true, 1, true, true): tiles(NibblesHalfStored.self, batch, columns, output, stride, groups)
        case (true, 1, false, true): tiles(NibblesFloatStored.self, batch, columns, output, stride, groups)
        case (false, 1, true, false): tiles(BytesHalfFactor.self, batch, columns, output, stride, groups)
        case (false, 1, true, true): tiles(BytesHalfStored.self, batch, columns, output, stride, groups)
        case (false, 1, false, true): tiles(BytesFloatStored.self, batch, columns, output, stride, groups)
        case (false, 2, false, false): tiles(HalvesFloatFactor.self, batch, columns, output, stride, groups)
        case (false, 2, false, true): tiles(HalvesFloatStored.self, batch, columns, output, stride, groups)
        default: preconditionFailure("no kernel for \(format)")
        }
    }

    /// The columns in tiles of 8, then 4, 2 and 1.
    @inline(__always)
    private func tiles<F: PackedTraits>(_ f: F.Type, _ batch: ActivationBatch, _ columns: Range<Int>,
                                        _ output: UnsafeMutablePointer<Float>, _ stride: Int, _ groups: Range<Int>) {
        var c = columns.lowerBound
        while c < columns.upperBound {
            let left = columns.upperBound - c, first = c - columns.lowerBound
            if left >= 8 {
                kernel(F.self, Tile8.self, batch, c, output + first * stride, stride, groups); c += 8
            } else if left >= 4 {
                kernel(F.self, Tile4.self, batch, c, output + first * stride, stride, groups); c += 4
            } else if left >= 2 {
                kernel(F.self, Tile2.self, batch, c, output + first * stride, stride, groups); c += 2
            } else {
                kernel(F.self, Tile1.self, batch, c, output + first * stride, stride, groups); c += 1
            }
        }
    }

    /// `T.count` columns from `firstColumn`, every group of `groups`.
    @inline(__always)
    private func kernel<F: PackedTraits, T: ColumnTile>(_ f: F.Type, _ t: T.Type, _ batch: ActivationBatch, _ firstColumn: Int,
                                                        _ output: UnsafeMutablePointer<Float>, _ stride: Int, _ groups: Range<Int>) {
        let mask = SIMD16<UInt32>(repeating: 0x0F0F_0F0F)
        let factor = Vec(repeating: format.offsetFactor)
        let blockBytes = format.blockBytes, quantBytes = format.quantBytes, scalesBytes = format.scalesBytes
        let width = batch.width, blocksPerColumn = batch.width / 32
        let x0 = batch.bytes + firstColumn * width
        let dx0 = batch.scales + firstColumn * blocksPerColumn
        let sum0 = batch.sums + firstColumn * blocksPerColumn
        let half0 = batch.halfSums + 2 * firstColumn * blocksPerColumn
        withUnsafeTemporaryAllocation(of: Vec.self, capacity: T.count) { acc in
            for g in groups {
                for c in 0..<T.count { acc[c] = Vec() }
                var p = data + g * blocks * blockBytes
                for b in 0..<blocks {
                    // The 32 weights of 16 rows as 8 registers of 4 unsigned bytes per row.
                    var w = (SIMD64<UInt8>(), SIMD64<UInt8>(), SIMD64<UInt8>(), SIMD64<UInt8>(),
                             SIMD64<UInt8>(), SIMD64<UInt8>(), SIMD64<UInt8>(), SIMD64<UInt8>())
                    if F.nibbles {
                        @inline(__always) func split(_ c: Int) -> (SIMD64<UInt8>, SIMD64<UInt8>) {
                            let v = p.loadUnaligned(fromByteOffset: 64 * c, as: SIMD16<UInt32>.self)
                            return (unsafeBitCast(v & mask, to: SIMD64<UInt8>.self), unsafeBitCast((v &>> 4) & mask, to: SIMD64<UInt8>.self))
                        }
                        (w.0, w.1) = split(0); (w.2, w.3) = split(1); (w.4, w.5) = split(2); (w.6, w.7) = split(3)
                    } else {
                        @inline(__always) func load(_ c: Int) -> SIMD64<UInt8> { p.loadUnaligned(fromByteOffset: 64 * c, as: SIMD64<UInt8>.self) }
                        w = (load(0), load(1), load(2), load(3), load(4), load(5), load(6), load(7))
                    }
                    @inline(__always) func numbers(_ offset: Int) -> Vec {
                        F.halfNumbers ? toFloat((p + offset).loadUnaligned(as: SIMD16<Float16>.self)) : loadVec((p + offset).assumingMemoryBound(to: Float.self))
                    }
                    let s0 = numbers(quantBytes)
                    let s1 = F.subBlocks == 2 ? numbers(quantBytes + 64) : s0
                    let o0 = F.storedOffsets ? numbers(quantBytes + scalesBytes) : s0 * factor
                    let o1 = F.subBlocks == 2 ? (F.storedOffsets ? numbers(quantBytes + scalesBytes + 64) : s1 * factor) : o0
                    for c in 0..<T.count {
                        let x = UnsafeRawPointer(x0 + c * width + b * 32)
                        @inline(__always) func bx(_ k: Int) -> SIMD64<Int8> {
                            unsafeBitCast(SIMD16<UInt32>(repeating: x.loadUnaligned(fromByteOffset: k, as: UInt32.self)), to: SIMD64<Int8>.self)
                        }
                        // Register i holds values 4i ..< 4i + 4 of every row (in both layouts).
                        // Two chains of products (integer sums are exact in any order):
                        // one sum for the block, or one per 16-value sub-block.
                        var a: SIMD16<Int32>, b2: SIMD16<Int32>
                        if F.subBlocks == 1 {
                            a = dotBytes(dotBytes(SIMD16<Int32>(), w.0, bx(0)), w.2, bx(8))
                            b2 = dotBytes(dotBytes(SIMD16<Int32>(), w.1, bx(4)), w.3, bx(12))
                            a = dotBytes(dotBytes(a, w.4, bx(16)), w.6, bx(24))
                            b2 = dotBytes(dotBytes(b2, w.5, bx(20)), w.7, bx(28))
                        } else {
                            a = dotBytes(dotBytes(SIMD16<Int32>(), w.0, bx(0)), w.1, bx(4))
                            b2 = dotBytes(dotBytes(SIMD16<Int32>(), w.4, bx(16)), w.5, bx(20))
                            a = dotBytes(dotBytes(a, w.2, bx(8)), w.3, bx(12))
                            b2 = dotBytes(dotBytes(b2, w.6, bx(24)), w.7, bx(28))
                        }
                        let dx = Vec(repeating: dx0[c * blocksPerColumn + b])
                        var sum = acc[c]
                        if F.subBlocks == 1 {
                            sum.addProduct(toFloat(a &+ b2), s0 * dx)
                            sum.addProduct(o0, Vec(repeating: sum0[c * blocksPerColumn + b]))
                        } else {
                            sum.addProduct(toFloat(a), s0 * dx)
                            sum.addProduct(toFloat(b2), s1 * dx)
                            sum.addProduct(o0, Vec(repeating: half0[2 * (c * blocksPerColumn + b)]))
                            sum.addProduct(o1, Vec(repeating: half0[2 * (c * blocksPerColumn + b) + 1]))
                        }
                        acc[c] = sum
                    }
                    p += blockBytes
                }
                let n = min(16, rows - g * 16)
                for c in 0..<T.count {
                    let y = output + c * stride + g * 16
                    if n == 16 { storeVec(acc[c], y) } else { for r in 0..<n { y[r] = acc[c][r] } }
                }
            }
        }
    }
}

/// What a packed format's kernel specialises on.
protocol PackedTraits {
    static var nibbles: Bool { get }
    static var subBlocks: Int { get }
    static var halfNumbers: Bool { get }
    static var storedOffsets: Bool { get }
}

enum NibblesHalfFactor: PackedTraits { static let nibbles = true, subBlocks = 1, halfNumbers = true, storedOffsets = false }
enum NibblesHalfStored: PackedTraits { static let nibbles = true, subBlocks = 1, halfNumbers = true, storedOffsets = true }
enum NibblesFloatStored: PackedTraits { static let nibbles = true, subBlocks = 1, halfNumbers = false, storedOffsets = true }
enum BytesHalfFactor: PackedTraits { static let nibbles = false, subBlocks = 1, halfNumbers = true, storedOffsets = false }
enum BytesHalfStored: PackedTraits { static let nibbles = false, subBlocks = 1, halfNumbers = true, storedOffsets = true }
enum BytesFloatStored: PackedTraits { static let nibbles = false, subBlocks = 1, halfNumbers = false, storedOffsets = true }
enum HalvesFloatFactor: PackedTraits { static let nibbles = false, subBlocks = 2, halfNumbers = false, storedOffsets = false }
enum HalvesFloatStored: PackedTraits { static let nibbles = false, subBlocks = 2, halfNumbers = false, storedOffsets = true }

/// How many columns a kernel instance takes at once.
protocol ColumnTile { static var count: Int { get } }
enum Tile1: ColumnTile { static let count = 1 }
enum Tile2: ColumnTile { static let count = 2 }
enum Tile3: ColumnTile { static let count = 3 }
enum Tile4: ColumnTile { static let count = 4 }
enum Tile8: ColumnTile { static let count = 8 }
