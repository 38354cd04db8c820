import Swift
import Kernels
import SIMDSupport

enum PackedCode {
    /// Quantises `count` values (a multiple of 32) into column `c`: per block
    /// `dx = max |x| / 127` and `q = round(x / dx)`.
    static func quantize(_ batch: ActivationBatch, _ x: UnsafePointer<Float>, count: Int, column c: Int) {
        let width = batch.width, blocks = width / 32
        let q = batch.bytes + c * width
        @inline(__always) func block(_ b: Int, _ d: Float, _ id: Float) {
            let lo = loadVec(x + b * 32), hi = loadVec(x + b * 32 + 16)
            let scale = Vec(repeating: id)
            let qlo = roundToInt(lo * scale), qhi = roundToInt(hi * scale)
            UnsafeMutableRawPointer(q + b * 32).storeBytes(of: SIMD16<Int8>(truncatingIfNeeded: qlo), as: SIMD16<Int8>.self)
            UnsafeMutableRawPointer(q + b * 32 + 16).storeBytes(of: SIMD16<Int8>(truncatingIfNeeded: qhi), as: SIMD16<Int8>.self)
            let low = qlo.wrappedSum(), high = qhi.wrappedSum()
            batch.scales[c * blocks + b] = d
            batch.sums[c * blocks + b] = d * Float(low &+ high)
            batch.halfSums[2 * (c * blocks + b)] = d * Float(low)
            batch.halfSums[2 * (c * blocks + b) + 1] = d * Float(high)
            batch.intSums[c * blocks + b] = low &+ high
            batch.halfIntSums[2 * (c * blocks + b)] = low
            batch.halfIntSums[2 * (c * blocks + b) + 1] = high
        }
        @inline(__always) func magnitude(_ b: Int) -> Float {
            horizontalMaxOfMagnitudes(lanewiseMax(absolute(loadVec(x + b * 32)), absolute(loadVec(x + b * 32 + 16))))
        }
        switch batch.format {
        case .q8_0:
            // As llama.cpp's quantize_row_q8_0: the scale kept in f16, the
            // values from the unrounded one.
            for b in 0..<(count / 32) {
                let amax = magnitude(b)
                block(b, Float(Float16(amax / 127)), amax > 0 ? 127 / amax : 0)
            }
        case .q8_K:
            // As quantize_row_q8_K: one f32 scale per 256 (ggml takes the value of
            // largest magnitude with its sign, which negates both the scale and
            // every value: the same products).
            precondition(count % 256 == 0, "Q8_K activations come in blocks of 256")
            for s in 0..<(count / 256) {
                var amax: Float = 0
                for b in (s * 8)..<(s * 8 + 8) { amax = max(amax, magnitude(b)) }
                let id: Float = amax > 0 ? 127 / amax : 0
                let d: Float = amax > 0 ? 1 / id : 0
                for b in (s * 8)..<(s * 8 + 8) { block(b, d, id) }
            }
        }
    }

    /// `y_c[r] = w[r] . x_c` for the rows of groups `groups` (16 rows each; the
    /// last group's padding rows are not written) and the columns `columns` of
    /// `batch`, where `y_c = output + c * stride` for the c-th of those columns.
    /// Each column's result is computed by the same operations in the same
    /// order whatever the other columns are: a token's result never depends on
    /// what it is batched with.
    static func multiply(_ m: PackedMatrix, _ batch: ActivationBatch, columns: Range<Int>, into output: UnsafeMutablePointer<Float>, stride: Int,
                         groups: Range<Int>) {
        // Q8_0's quants take all 8 bits (the others at most 6): a kernel of its own.
        if m.type == .q8_0 { return tiles(WideBytesHalfFactor.self, m, batch, columns, output, stride, groups) }
        if m.format.kScales {
            // Integer sums over 256 values, which need one activation scale per 256 (Q8_K's).
            precondition(batch.format == .q8_K, "Q4_K multiplies activations quantised as Q8_K")
            return tiles(NibblesKScales.self, m, batch, columns, output, stride, groups)
        }
        if m.format.sixBits {
            precondition(batch.format == .q8_K, "Q6_K multiplies activations quantised as Q8_K")
            return tiles(NibblesSixBits.self, m, batch, columns, output, stride, groups)
        }
        switch (m.format.nibbles, m.format.subBlocks, m.format.halfNumbers, m.format.storedOffsets) {
        case (true, 1, true, false): tiles(NibblesHalfFactor.self, m, batch, columns, output, stride, groups)
        case (true, 1, true, true): tiles(NibblesHalfStored.self, m, batch, columns, output, stride, groups)
        case (true, 1, false, true): tiles(NibblesFloatStored.self, m, batch, columns, output, stride, groups)
        case (false, 1, true, false): tiles(BytesHalfFactor.self, m, batch, columns, output, stride, groups)
        case (false, 1, true, true): tiles(BytesHalfStored.self, m, batch, columns, output, stride, groups)
        case (false, 1, false, true): tiles(BytesFloatStored.self, m, batch, columns, output, stride, groups)
        case (false, 2, false, false): tiles(HalvesFloatFactor.self, m, batch, columns, output, stride, groups)
        case (false, 2, false, true): tiles(HalvesFloatStored.self, m, batch, columns, output, stride, groups)
        default: preconditionFailure("no kernel for \(m.format)")
        }
    }

    /// The columns in tiles of 8, then 4, 2 and 1.
    @inline(__always)
    private static func tiles<F: PackedTraits>(_ f: F.Type, _ m: PackedMatrix, _ batch: ActivationBatch, _ columns: Range<Int>,
                                        _ output: UnsafeMutablePointer<Float>, _ stride: Int, _ groups: Range<Int>) {
        var c = columns.lowerBound
        while c < columns.upperBound {
            let left = columns.upperBound - c, first = c - columns.lowerBound
            #if CHORUS_KERNELS_AVX512VNNI
            // 16 rows per register.
            if left >= 8 {
                kernel(F.self, Tile8.self, m, batch, c, output + first * stride, stride, groups); c += 8
            } else if left >= 4 {
                kernel(F.self, Tile4.self, m, batch, c, output + first * stride, stride, groups); c += 4
            } else if left >= 2 {
                kernel(F.self, Tile2.self, m, batch, c, output + first * stride, stride, groups); c += 2
            } else {
                kernel(F.self, Tile1.self, m, batch, c, output + first * stride, stride, groups); c += 1
            }
            #else
            // 8 rows per register (16 registers of 256 bits, or of 128).
            // Q4_K and Q6_K over a decoding batch of up to 8 columns: two tiles of 4
            // (measured faster there; for prompts, tiles of 8).
            if left >= 8 && (columns.count > 8 || !(F.kScales || F.sixBits)) {
                kernel8(F.self, Tile8.self, m, batch, c, output + first * stride, stride, groups); c += 8
            } else if left >= 4 {
                kernel8(F.self, Tile4.self, m, batch, c, output + first * stride, stride, groups); c += 4
            } else if left >= 2 {
                kernel8(F.self, Tile2.self, m, batch, c, output + first * stride, stride, groups); c += 2
            } else {
                kernel8(F.self, Tile1.self, m, batch, c, output + first * stride, stride, groups); c += 1
            }
            #endif
        }
    }

    /// `T.count` columns from `firstColumn`, every group of `groups`.
    @inline(__always)
    private static func kernel<F: PackedTraits, T: ColumnTile>(_ f: F.Type, _ t: T.Type, _ m: PackedMatrix, _ batch: ActivationBatch, _ firstColumn: Int,
                                                        _ output: UnsafeMutablePointer<Float>, _ stride: Int, _ groups: Range<Int>) {
        let mask = SIMD16<UInt32>(repeating: 0x0F0F_0F0F)
        let factor = Vec(repeating: m.format.offsetFactor)
        let blockBytes = m.format.blockBytes, quantBytes = m.format.quantBytes, scalesBytes = m.format.scalesBytes, blocks = m.blocks, rows = m.rows
        let superBlocks = m.superBlocks
        let width = batch.width, blocksPerColumn = batch.width / 32
        let x0 = batch.bytes + firstColumn * width
        let dx0 = batch.scales + firstColumn * blocksPerColumn
        let sum0 = batch.sums + firstColumn * blocksPerColumn
        let half0 = batch.halfSums + 2 * firstColumn * blocksPerColumn
        let intSum0 = batch.intSums + firstColumn * blocksPerColumn
        let halfIntSum0 = batch.halfIntSums + 2 * firstColumn * blocksPerColumn
        withUnsafeTemporaryAllocation(of: Vec.self, capacity: T.count) { acc in
          // Q4_K: as in kernel8, integer sums over each 256 values.
          withUnsafeTemporaryAllocation(of: SIMD16<Int32>.self, capacity: 2 * T.count) { ints in
            for g in groups {
                for c in 0..<T.count { acc[c] = Vec() }
                for i in 0..<(2 * T.count) { ints[i] = SIMD16<Int32>() }
                var p = m.data + g * blocks * blockBytes
                var superD = Vec(), superMin = Vec()
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
                        if F.sixBits {
                            // Q6_K: each register's high 2 bits from its 2-bit field of the plane.
                            let bits = SIMD16<UInt32>(repeating: 0x3030_3030)
                            @inline(__always) func high(_ r: SIMD64<UInt8>, _ v: SIMD16<UInt32>) -> SIMD64<UInt8> {
                                unsafeBitCast(unsafeBitCast(r, to: SIMD16<UInt32>.self) | (v & bits), to: SIMD64<UInt8>.self)
                            }
                            let p0 = (p + quantBytes).loadUnaligned(as: SIMD16<UInt32>.self)
                            let p1 = (p + quantBytes + 64).loadUnaligned(as: SIMD16<UInt32>.self)
                            w.0 = high(w.0, p0 &<< 4); w.1 = high(w.1, p0 &<< 2); w.2 = high(w.2, p0); w.3 = high(w.3, p0 &>> 2)
                            w.4 = high(w.4, p1 &<< 4); w.5 = high(w.5, p1 &<< 2); w.6 = high(w.6, p1); w.7 = high(w.7, p1 &>> 2)
                        }
                    } else {
                        @inline(__always) func load(_ c: Int) -> SIMD64<UInt8> { p.loadUnaligned(fromByteOffset: 64 * c, as: SIMD64<UInt8>.self) }
                        w = (load(0), load(1), load(2), load(3), load(4), load(5), load(6), load(7))
                    }
                    @inline(__always) func numbers(_ offset: Int) -> Vec {
                        F.halfNumbers ? toFloat((p + offset).loadUnaligned(as: SIMD16<Float16>.self)) : loadVec((p + offset).assumingMemoryBound(to: Float.self))
                    }
                    // Q4_K and Q6_K: the rows' d (and Q4_K's dmin), every 8 blocks.
                    if (F.kScales || F.sixBits) && b % 8 == 0 {
                        let sup = m.superScales + (g * superBlocks + b / 8) * 64
                        superD = toFloat(sup.loadUnaligned(as: SIMD16<Float16>.self))
                        if F.kScales { superMin = toFloat((sup + 32).loadUnaligned(as: SIMD16<Float16>.self)) }
                    }
                    let six0 = F.sixBits ? widen((p + quantBytes + 128).loadUnaligned(as: SIMD16<Int8>.self)) : SIMD16<Int32>()
                    let six1 = F.sixBits ? widen((p + quantBytes + 144).loadUnaligned(as: SIMD16<Int8>.self)) : SIMD16<Int32>()
                    let kFactor = F.kScales ? widen(loadBytes(p + quantBytes)) : SIMD16<Int32>()
                    let kMin = F.kScales ? widen(loadBytes(p + quantBytes + 16)) : SIMD16<Int32>()
                    let s0 = F.kScales || F.sixBits ? Vec() : numbers(quantBytes)
                    let s1 = F.subBlocks == 2 && !F.sixBits ? numbers(quantBytes + 64) : s0
                    let o0 = F.kScales || F.sixBits ? Vec() : F.storedOffsets ? numbers(quantBytes + scalesBytes) : s0 * factor
                    let o1 = F.subBlocks == 2 ? (F.storedOffsets ? numbers(quantBytes + scalesBytes + 64) : s1 * factor) : o0
                    @inline(__always) func dotBytes(_ acc: SIMD16<Int32>, _ a: SIMD64<UInt8>, _ b: SIMD64<Int8>) -> SIMD16<Int32> {
                        F.wide ? dotWide(acc, a, b) : dotSmall(acc, a, b)
                    }
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
                        if F.sixBits {
                            // Q6_K: the sub-blocks' products times their scales, and the scales
                            // times the halves' activation sums for the quants' offset of 32,
                            // as integers over 256 values.
                            let h = 2 * (c * blocksPerColumn + b)
                            ints[2 * c] &+= a &* six0 &+ b2 &* six1
                            ints[2 * c + 1] &+= six0 &* SIMD16<Int32>(repeating: halfIntSum0[h]) &+ six1 &* SIMD16<Int32>(repeating: halfIntSum0[h + 1])
                            if b % 8 == 7 {
                                sum.addProduct(toFloat(ints[2 * c] &- (ints[2 * c + 1] &<< 5)), superD * dx)
                                ints[2 * c] = SIMD16<Int32>()
                                ints[2 * c + 1] = SIMD16<Int32>()
                            }
                        } else if F.kScales {
                            ints[2 * c] &+= (a &+ b2) &* kFactor
                            ints[2 * c + 1] &+= kMin &* SIMD16<Int32>(repeating: intSum0[c * blocksPerColumn + b])
                            if b % 8 == 7 {
                                sum.addProduct(toFloat(ints[2 * c]), superD * dx)
                                sum.addProduct(toFloat(ints[2 * c + 1]), -(superMin * dx))
                                ints[2 * c] = SIMD16<Int32>()
                                ints[2 * c + 1] = SIMD16<Int32>()
                            }
                        } else if F.subBlocks == 1 {
                            if F.wide {
                                // Q8_0: the signed quants' products, as integers (ggml's way).
                                sum.addProduct(toFloat(a &+ b2 &- SIMD16<Int32>(repeating: 128 &* intSum0[c * blocksPerColumn + b])), s0 * dx)
                            } else {
                                sum.addProduct(toFloat(a &+ b2), s0 * dx)
                                sum.addProduct(o0, Vec(repeating: sum0[c * blocksPerColumn + b]))
                            }
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

    /// `kernel` for registers of 8 rows: each group's rows in two halves of
    /// 8, the weights loaded again (from L1) for each column rather than held
    /// in registers across the tile. Per row, the same operations in the same
    /// order as `kernel`, so the results are the same bits.
    @inline(__always)
    private static func kernel8<F: PackedTraits, T: ColumnTile>(_ f: F.Type, _ t: T.Type, _ m: PackedMatrix, _ batch: ActivationBatch,
                                                                _ firstColumn: Int, _ output: UnsafeMutablePointer<Float>, _ stride: Int,
                                                                _ groups: Range<Int>) {
        let mask = SIMD8<UInt32>(repeating: 0x0F0F_0F0F)
        let factor = SIMD8<Float>(repeating: m.format.offsetFactor)
        let blockBytes = m.format.blockBytes, quantBytes = m.format.quantBytes, scalesBytes = m.format.scalesBytes, blocks = m.blocks, rows = m.rows
        let superBlocks = m.superBlocks
        let width = batch.width, blocksPerColumn = batch.width / 32
        let x0 = batch.bytes + firstColumn * width
        let dx0 = batch.scales + firstColumn * blocksPerColumn
        let sum0 = batch.sums + firstColumn * blocksPerColumn
        let half0 = batch.halfSums + 2 * firstColumn * blocksPerColumn
        let intSum0 = batch.intSums + firstColumn * blocksPerColumn
        let halfIntSum0 = batch.halfIntSums + 2 * firstColumn * blocksPerColumn
        @inline(__always) func dot(_ acc: SIMD8<Int32>, _ a: SIMD32<UInt8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
            F.wide ? dot8Wide(acc, a, b) : dot8Small(acc, a, b)
        }
        // Per column and half: acc[2 * c + h].
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 2 * T.count) { acc in
          // Q4_K: per column, the sub-blocks' dot products times their scales and
          // the activations' sums times their mins, summed as integers over each
          // 256 values (whose activations share one scale, Q8_K's) as ggml does:
          // ints[4 * c + 2 * h] and ints[4 * c + 2 * h + 1].
          withUnsafeTemporaryAllocation(of: SIMD8<Int32>.self, capacity: 4 * T.count) { ints in
            for g in groups {
                let halves = rows - g * 16 > 8 ? 2 : 1
                for i in 0..<(2 * T.count) { acc[i] = SIMD8<Float>() }
                for i in 0..<(4 * T.count) { ints[i] = SIMD8<Int32>() }
                var p = m.data + g * blocks * blockBytes
                var superD0 = SIMD8<Float>(), superMin0 = SIMD8<Float>(), superD1 = SIMD8<Float>(), superMin1 = SIMD8<Float>()
                // Block by block, both halves of each (the group's bytes read once, in order).
                for b in 0..<blocks {
                    for h in 0..<halves {
                        // Eight values (this half's rows) of the sub-block's numbers at `offset`.
                        @inline(__always) func numbers(_ offset: Int) -> SIMD8<Float> {
                            F.halfNumbers ? float8((p + offset + 16 * h).loadUnaligned(as: SIMD8<Float16>.self))
                                : (p + offset + 32 * h).loadUnaligned(as: SIMD8<Float>.self)
                        }
                        // Q4_K and Q6_K: this half's rows' d (and Q4_K's dmin), every 8 blocks.
                        if (F.kScales || F.sixBits) && b % 8 == 0 {
                            let sup = m.superScales + (g * superBlocks + b / 8) * 64 + 16 * h
                            let d = float8(sup.loadUnaligned(as: SIMD8<Float16>.self))
                            let dmin = F.kScales ? float8((sup + 32).loadUnaligned(as: SIMD8<Float16>.self)) : SIMD8<Float>()
                            if h == 0 { superD0 = d; superMin0 = dmin } else { superD1 = d; superMin1 = dmin }
                        }
                        let superD = h == 0 ? superD0 : superD1, superMin = h == 0 ? superMin0 : superMin1
                        let s0 = F.kScales || F.sixBits ? SIMD8<Float>() : numbers(quantBytes)
                        let s1 = F.subBlocks == 2 && !F.sixBits ? numbers(quantBytes + 64) : s0
                        let o0 = F.kScales || F.sixBits ? SIMD8<Float>() : F.storedOffsets ? numbers(quantBytes + scalesBytes) : s0 * factor
                        let o1 = F.subBlocks == 2 ? (F.storedOffsets ? numbers(quantBytes + scalesBytes + 64) : s1 * factor) : o0
                        let q = p + 32 * h
                        let kFactor = dotFactor8(F.kScales ? int8(bytes: p + quantBytes + 8 * h) : SIMD8<Int32>(repeating: 1))
                        let kMin = F.kScales ? int8(bytes: p + quantBytes + 16 + 8 * h) : SIMD8<Int32>()
                        // Q6_K: the two sub-blocks' signed scales.
                        let six0 = F.sixBits ? int8(signedBytes: p + quantBytes + 128 + 8 * h) : SIMD8<Int32>()
                        let six1 = F.sixBits ? int8(signedBytes: p + quantBytes + 144 + 8 * h) : SIMD8<Int32>()
                        let sixFactor0 = dotFactor8(six0), sixFactor1 = dotFactor8(six1)
                        // Q8_0 on AVX2 over several columns: each chunk of weights made signed
                        // once, then met by every column (ints[c]).
                        if F.wide && centeredWideDot && T.count > 1 {
                            for c in 0..<T.count { ints[c] = SIMD8<Int32>() }
                            for k in 0..<8 {
                                let (signs, magnitudes) = centered8(q.loadUnaligned(fromByteOffset: 128 * (k / 2) + 64 * (k % 2), as: SIMD32<UInt8>.self))
                                let offset = 8 * (k / 2) + 4 * (k % 2)
                                for c in 0..<T.count {
                                    let word = UnsafeRawPointer(x0 + c * width + b * 32).loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                                    ints[c] = dot8Signed(ints[c], magnitudes, signs, unsafeBitCast(SIMD8<UInt32>(repeating: word), to: SIMD32<Int8>.self))
                                }
                            }
                        }
                        for c in 0..<T.count {
                            let x = UnsafeRawPointer(x0 + c * width + b * 32)
                            @inline(__always) func bx(_ k: Int) -> SIMD32<Int8> {
                                unsafeBitCast(SIMD8<UInt32>(repeating: x.loadUnaligned(fromByteOffset: k, as: UInt32.self)), to: SIMD32<Int8>.self)
                            }
                            // Register i holds values 4i ..< 4i + 4 of this half's rows.
                            var a = SIMD8<Int32>(), b2 = SIMD8<Int32>()
                            if F.wide && centeredWideDot {
                                // Q8_0 as ggml's AVX2 kernels take it: the quants less 128 (signed),
                                // their products summed: exactly what the other paths get by taking
                                // 128 times the activations' sum from the stored bytes' products.
                                if T.count > 1 { a = ints[c] } else {
                                for k in 0..<4 {
                                    a = dot8Centered(a, q.loadUnaligned(fromByteOffset: 128 * k, as: SIMD32<UInt8>.self), bx(8 * k))
                                    b2 = dot8Centered(b2, q.loadUnaligned(fromByteOffset: 128 * k + 64, as: SIMD32<UInt8>.self), bx(8 * k + 4))
                                }
                                }
                            } else if F.nibbles {
                                @inline(__always) func nibbles(_ k: Int) -> (SIMD32<UInt8>, SIMD32<UInt8>) {
                                    let v = q.loadUnaligned(fromByteOffset: 64 * k, as: SIMD8<UInt32>.self)
                                    return (unsafeBitCast(v & mask, to: SIMD32<UInt8>.self), unsafeBitCast((v &>> 4) & mask, to: SIMD32<UInt8>.self))
                                }
                                var (l0, u0) = nibbles(0), (l1, u1) = nibbles(1), (l2, u2) = nibbles(2), (l3, u3) = nibbles(3)
                                if F.sixBits {
                                    // Q6_K: each register's high 2 bits from its field of the plane;
                                    // the sub-blocks are values 0-15 (l0 u0 l1 u1) and 16-31.
                                    let bits = SIMD8<UInt32>(repeating: 0x3030_3030)
                                    @inline(__always) func high(_ r: SIMD32<UInt8>, _ v: SIMD8<UInt32>) -> SIMD32<UInt8> {
                                        unsafeBitCast(unsafeBitCast(r, to: SIMD8<UInt32>.self) | (v & bits), to: SIMD32<UInt8>.self)
                                    }
                                    let p0 = (q + quantBytes).loadUnaligned(as: SIMD8<UInt32>.self)
                                    let p1 = (q + quantBytes + 64).loadUnaligned(as: SIMD8<UInt32>.self)
                                    l0 = high(l0, p0 &<< 4); u0 = high(u0, p0 &<< 2); l1 = high(l1, p0); u1 = high(u1, p0 &>> 2)
                                    l2 = high(l2, p1 &<< 4); u2 = high(u2, p1 &<< 2); l3 = high(l3, p1); u3 = high(u3, p1 &>> 2)
                                    a = pairDot8(pairDot8(a, l0, bx(0), u0, bx(4), factor: sixFactor0), l1, bx(8), u1, bx(12), factor: sixFactor0)
                                    b2 = pairDot8(pairDot8(b2, l2, bx(16), u2, bx(20), factor: sixFactor1), l3, bx(24), u3, bx(28), factor: sixFactor1)
                                } else {
                                    a = nibbleDot8(a, l0, bx(0), l1, bx(8), l2, bx(16), l3, bx(24), factor: kFactor, scaled: F.kScales)
                                    b2 = nibbleDot8(b2, u0, bx(4), u1, bx(12), u2, bx(20), u3, bx(28), factor: kFactor, scaled: F.kScales)
                                }
                            } else if F.subBlocks == 1 {
                                for k in 0..<4 {
                                    a = dot(a, q.loadUnaligned(fromByteOffset: 128 * k, as: SIMD32<UInt8>.self), bx(8 * k))
                                    b2 = dot(b2, q.loadUnaligned(fromByteOffset: 128 * k + 64, as: SIMD32<UInt8>.self), bx(8 * k + 4))
                                }
                            } else {
                                for k in 0..<4 {
                                    a = dot(a, q.loadUnaligned(fromByteOffset: 64 * k, as: SIMD32<UInt8>.self), bx(4 * k))
                                    b2 = dot(b2, q.loadUnaligned(fromByteOffset: 256 + 64 * k, as: SIMD32<UInt8>.self), bx(16 + 4 * k))
                                }
                            }
                            let dx = SIMD8<Float>(repeating: dx0[c * blocksPerColumn + b])
                            var sum = acc[2 * c + h]
                            if F.sixBits {
                                let i = 4 * c + 2 * h, hs = 2 * (c * blocksPerColumn + b)
                                ints[i] &+= a &+ b2
                                ints[i + 1] &+= six0 &* SIMD8<Int32>(repeating: halfIntSum0[hs]) &+ six1 &* SIMD8<Int32>(repeating: halfIntSum0[hs + 1])
                                if b % 8 == 7 {
                                    sum.addProduct(float8(ints[i] &- (ints[i + 1] &<< 5)), superD * dx)
                                    ints[i] = SIMD8<Int32>()
                                    ints[i + 1] = SIMD8<Int32>()
                                }
                            } else if F.kScales {
                                let i = 4 * c + 2 * h
                                ints[i] &+= a &+ b2
                                ints[i + 1] &+= kMin &* SIMD8<Int32>(repeating: intSum0[c * blocksPerColumn + b])
                                if b % 8 == 7 {
                                    sum.addProduct(float8(ints[i]), superD * dx)
                                    sum.addProduct(float8(ints[i + 1]), -(superMin * dx))
                                    ints[i] = SIMD8<Int32>()
                                    ints[i + 1] = SIMD8<Int32>()
                                }
                            } else if F.subBlocks == 1 {
                                if F.wide {
                                    // Q8_0: the signed quants' products, as integers (ggml's way).
                                    let signed = centeredWideDot ? a &+ b2 : a &+ b2 &- SIMD8<Int32>(repeating: 128 &* intSum0[c * blocksPerColumn + b])
                                    sum.addProduct(float8(signed), s0 * dx)
                                } else {
                                    sum.addProduct(float8(a &+ b2), s0 * dx)
                                    sum.addProduct(o0, SIMD8<Float>(repeating: sum0[c * blocksPerColumn + b]))
                                }
                            } else {
                                sum.addProduct(float8(a), s0 * dx)
                                sum.addProduct(float8(b2), s1 * dx)
                                sum.addProduct(o0, SIMD8<Float>(repeating: half0[2 * (c * blocksPerColumn + b)]))
                                sum.addProduct(o1, SIMD8<Float>(repeating: half0[2 * (c * blocksPerColumn + b) + 1]))
                            }
                            acc[2 * c + h] = sum
                        }
                    }
                    p += blockBytes
                }
                for h in 0..<halves {
                    let n = min(8, rows - g * 16 - 8 * h)
                    for c in 0..<T.count {
                        let y = output + c * stride + g * 16 + 8 * h
                        if n == 8 { UnsafeMutableRawPointer(y).storeBytes(of: acc[2 * c + h], as: SIMD8<Float>.self) } else {
                            for r in 0..<n { y[r] = acc[2 * c + h][r] }
                        }
                    }
                }
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
    /// Quants that take all 8 bits (Q8_0's), not at most 6.
    static var wide: Bool { get }
    /// Q4_K's own scales and mins, with `d` and `dmin` per 256 values apart.
    static var kScales: Bool { get }
    /// Q6_K's nibbles and high bits, signed scales, `d` per 256 values apart.
    static var sixBits: Bool { get }
}

extension PackedTraits {
    static var wide: Bool { false }
    static var kScales: Bool { false }
    static var sixBits: Bool { false }
}

enum NibblesHalfFactor: PackedTraits { static let nibbles = true, subBlocks = 1, halfNumbers = true, storedOffsets = false }
enum NibblesHalfStored: PackedTraits { static let nibbles = true, subBlocks = 1, halfNumbers = true, storedOffsets = true }
enum NibblesFloatStored: PackedTraits { static let nibbles = true, subBlocks = 1, halfNumbers = false, storedOffsets = true }
enum BytesHalfFactor: PackedTraits { static let nibbles = false, subBlocks = 1, halfNumbers = true, storedOffsets = false }
enum BytesHalfStored: PackedTraits { static let nibbles = false, subBlocks = 1, halfNumbers = true, storedOffsets = true }
enum BytesFloatStored: PackedTraits { static let nibbles = false, subBlocks = 1, halfNumbers = false, storedOffsets = true }
enum HalvesFloatFactor: PackedTraits { static let nibbles = false, subBlocks = 2, halfNumbers = false, storedOffsets = false }
enum NibblesKScales: PackedTraits {
    static let nibbles = true, subBlocks = 1, halfNumbers = false, storedOffsets = true, kScales = true
}
enum NibblesSixBits: PackedTraits {
    static let nibbles = true, subBlocks = 2, halfNumbers = false, storedOffsets = false, sixBits = true
}
enum WideBytesHalfFactor: PackedTraits {
    static let nibbles = false, subBlocks = 1, halfNumbers = true, storedOffsets = false, wide = true
}
enum HalvesFloatStored: PackedTraits { static let nibbles = false, subBlocks = 2, halfNumbers = false, storedOffsets = true }

/// How many columns a kernel instance takes at once.
protocol ColumnTile { static var count: Int { get } }
enum Tile1: ColumnTile { static let count = 1 }
enum Tile2: ColumnTile { static let count = 2 }
enum Tile3: ColumnTile { static let count = 3 }
enum Tile4: ColumnTile { static let count = 4 }
enum Tile8: ColumnTile { static let count = 8 }

/// Eight 32-bit integers as floats, lane by lane (one `vcvtdq2ps`).
@inline(__always)
func float8(_ v: SIMD8<Int32>) -> SIMD8<Float> {
    SIMD8<Float>(Float(v[0]), Float(v[1]), Float(v[2]), Float(v[3]), Float(v[4]), Float(v[5]), Float(v[6]), Float(v[7]))
}

/// Eight halves as floats, lane by lane (one `vcvtph2ps` where the CPU has F16C).
@inline(__always)
func float8(_ v: SIMD8<Float16>) -> SIMD8<Float> {
    SIMD8<Float>(Float(v[0]), Float(v[1]), Float(v[2]), Float(v[3]), Float(v[4]), Float(v[5]), Float(v[6]), Float(v[7]))
}

/// Eight signed bytes widened to 32 bits (one `vpmovsxbd`).
@inline(__always)
func int8(signedBytes p: UnsafeRawPointer) -> SIMD8<Int32> {
    let v = p.loadUnaligned(as: SIMD8<Int8>.self)
    return SIMD8<Int32>(Int32(v[0]), Int32(v[1]), Int32(v[2]), Int32(v[3]), Int32(v[4]), Int32(v[5]), Int32(v[6]), Int32(v[7]))
}

/// Eight unsigned bytes widened to 32 bits (one `vpmovzxbd`).
@inline(__always)
func int8(bytes p: UnsafeRawPointer) -> SIMD8<Int32> {
    let v = p.loadUnaligned(as: SIMD8<UInt8>.self)
    return SIMD8<Int32>(Int32(v[0]), Int32(v[1]), Int32(v[2]), Int32(v[3]), Int32(v[4]), Int32(v[5]), Int32(v[6]), Int32(v[7]))
}
