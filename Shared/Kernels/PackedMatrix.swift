import SIMDSupport

/// A quantised weight matrix repacked at load for the integer kernels (as
/// llama.cpp's repack does): rows in groups of 16, so that one AVX-512
/// register holds the same four weights of 16 rows and one `dotBytes`
/// (`vpdpbusd`) multiplies them by four broadcast activation bytes, giving
/// each row its own lane. Every type becomes unsigned quants `q` with a scale
/// `s` and an offset `o` per sub-block, `w = s * q + o`, exactly the values
/// ggml dequantises to.
///
/// Layout, group after group, each group's 32-value blocks in order; one
/// group-block is
/// - quants: nibbles (4-bit types, 4 chunks of 64 bytes: byte `4r + j` of
///   chunk `c` holds `q[r][8c + j]` in its low and `q[r][8c + 4 + j]` in its
///   high nibble) or bytes (8 chunks of 64 bytes: byte `4r + j` of chunk `c` is
///   `q[r][4c + j]`);
/// - scales: per sub-block of 32 (16 values, one per row) or 16 (32 values:
///   the 16 rows' first halves, then their second halves), f16 where the
///   source's scales are f16 (exact), f32 otherwise;
/// - offsets, laid out as the scales, unless they are a fixed multiple of the
///   scale (`o = factor * s`, as for Q4_0's `-8 d`);
/// - or, for Q4_K, the file's own 6-bit scale and min of each row's sub-block
///   (16 bytes each), with each row's f16 `d` and `dmin` per 256 values kept
///   after all the groups (`superScales`): `s = d * scale`, `o = -(dmin * min)`,
///   computed by the kernels as ggml computes them, in a quarter of the bytes
///   of f32 scales and offsets;
/// - or, for Q6_K, the low 4 bits of each quant as nibbles, then their high 2
///   bits (2 chunks of 64 bytes: bits `2k, 2k + 1` of byte `4r + j` of chunk
///   `P` belong to the nibble register `4P + k`, registers taken as the
///   nibbles' chunks' low then high halves), then the file's signed 8-bit
///   scale of each row's two sub-blocks (16 bytes each), with each row's f16
///   `d` per 256 values in `superScales`: `s = d * scale`, `o = -32 s`;
///   0.81 bytes a weight instead of 1.25.
public struct PackedMatrix: @unchecked Sendable {
    /// The file's type of the matrix.
    public let type: GGMLType
    public let rows: Int
    public let columns: Int
    public let groups: Int
    public let blocks: Int
    package let format: PackedFormat
    package let data: UnsafeRawPointer
    /// Q4_K and Q6_K: for group `g` and super-block `s` (256 values), 16 f16 `d`
    /// then 16 f16 `dmin` (Q4_K; one per row) at `superScales + (g * superBlocks + s) * 64`.
    package let superScales: UnsafeRawPointer
    package var superBlocks: Int { blocks / 8 }
    private let storage: AlignedBytes

    /// The types this layout takes (the quantised ones).
    public static func packs(_ type: GGMLType) -> Bool { PackedFormat(type) != nil }

    /// Bytes of the packed matrix.
    public var byteCount: Int { groups * blocks * format.blockBytes + (format.superScaled ? groups * (blocks / 8) * 64 : 0) }

    /// Repacks `rows` rows of `columns` values of `type` stored at `source`,
    /// telling `progress` now and then how many bytes of `source` it has read
    /// (and will not read again).
    public init?(type: GGMLType, rows: Int, columns: Int, source: UnsafeRawPointer, progress: ((Int) -> Void)? = nil) {
        guard let format = PackedFormat(type), columns % 32 == 0, columns % type.blockSize == 0 else { return nil }
        self.type = type
        self.format = format
        self.rows = rows
        self.columns = columns
        groups = (rows + 15) / 16
        blocks = columns / 32
        let main = groups * blocks * format.blockBytes
        let bytes = main + (format.superScaled ? groups * (blocks / 8) * 64 : 0)
        storage = AlignedBytes(count: bytes)
        storage.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        data = UnsafeRawPointer(storage.pointer)
        superScales = data + main
        let rowBytes = type.byteCount(values: columns)!
        var unpacked = UnpackedBlock()
        for r in 0..<rows {
            let g = r / 16, lane = r % 16
            for b in 0..<blocks {
                unpacked.read(type, source + r * rowBytes, block: b)
                write(unpacked, group: g, lane: lane, block: b)
            }
            if let progress, (r + 1) % 1024 == 0 { progress((r + 1) * rowBytes) }
        }
    }

    /// The bytes of group `g`'s block `b`.
    @inline(__always)
    func groupBlock(_ g: Int, _ b: Int) -> UnsafeRawPointer { data + (g * blocks + b) * format.blockBytes }

    private func write(_ u: UnpackedBlock, group g: Int, lane r: Int, block b: Int) {
        let out = UnsafeMutableRawPointer(mutating: groupBlock(g, b))
        if format.nibbles {
            for c in 0..<4 {
                for j in 0..<4 {
                    out.storeBytes(of: (u.q[8 * c + j] & 15) | ((u.q[8 * c + 4 + j] & 15) << 4), toByteOffset: 64 * c + 4 * r + j, as: UInt8.self)
                }
            }
            if format.sixBits {
                // Register i (chunk i / 2, its low or high nibbles) holds values 8 (i / 2) + 4 (i % 2) + j.
                for i in 0..<8 {
                    for j in 0..<4 {
                        let offset = format.quantBytes + 64 * (i / 4) + 4 * r + j
                        let bits = (u.q[8 * (i / 2) + 4 * (i % 2) + j] >> 4) << UInt8(2 * (i % 4))
                        out.storeBytes(of: out.load(fromByteOffset: offset, as: UInt8.self) | bits, toByteOffset: offset, as: UInt8.self)
                    }
                }
                out.storeBytes(of: u.sixScales.0, toByteOffset: format.quantBytes + 128 + r, as: Int8.self)
                out.storeBytes(of: u.sixScales.1, toByteOffset: format.quantBytes + 144 + r, as: Int8.self)
                let sup = UnsafeMutableRawPointer(mutating: superScales) + (g * superBlocks + b / 8) * 64
                sup.storeBytes(of: u.kD, toByteOffset: 2 * r, as: UInt16.self)
                return
            }
        } else {
            for c in 0..<8 {
                for j in 0..<4 { out.storeBytes(of: u.q[4 * c + j], toByteOffset: 64 * c + 4 * r + j, as: UInt8.self) }
            }
        }
        if format.kScales {
            out.storeBytes(of: u.kScale, toByteOffset: format.quantBytes + r, as: UInt8.self)
            out.storeBytes(of: u.kMin, toByteOffset: format.quantBytes + 16 + r, as: UInt8.self)
            let sup = UnsafeMutableRawPointer(mutating: superScales) + (g * superBlocks + b / 8) * 64
            sup.storeBytes(of: u.kD, toByteOffset: 2 * r, as: UInt16.self)
            sup.storeBytes(of: u.kDmin, toByteOffset: 32 + 2 * r, as: UInt16.self)
            return
        }
        for half in 0..<format.subBlocks {
            let index = half * 16 + r
            format.storeNumber(u.scale[half], at: out + format.quantBytes, index: index)
            if format.storedOffsets { format.storeNumber(u.offset[half], at: out + format.quantBytes + format.scalesBytes, index: index) }
        }
    }

    /// The values of row `r`, exactly as ggml dequantises them.
    public func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let g = r / 16, lane = r % 16
        for b in 0..<blocks {
            let p = groupBlock(g, b)
            for k in 0..<32 {
                let q: UInt8
                if format.nibbles {
                    let byte = p.load(fromByteOffset: 64 * ((k % 32) / 8) + 4 * lane + k % 4, as: UInt8.self)
                    let nibble = (k % 8) < 4 ? byte & 15 : byte >> 4
                    if format.sixBits {
                        let i = 2 * (k / 8) + (k % 8) / 4
                        let plane = p.load(fromByteOffset: format.quantBytes + 64 * (i / 4) + 4 * lane + k % 4, as: UInt8.self)
                        q = nibble | (((plane >> UInt8(2 * (i % 4))) & 3) << 4)
                    } else {
                        q = nibble
                    }
                } else {
                    q = p.load(fromByteOffset: 64 * (k / 4) + 4 * lane + k % 4, as: UInt8.self)
                }
                let half = format.subBlocks == 2 ? k / 16 : 0
                let s: Float, o: Float
                if format.sixBits {
                    let sup = superScales + (g * superBlocks + b / 8) * 64
                    let d = Float(Float16(bitPattern: sup.loadUnaligned(fromByteOffset: 2 * lane, as: UInt16.self)))
                    s = d * Float(p.load(fromByteOffset: format.quantBytes + 128 + 16 * half + lane, as: Int8.self))
                    o = format.offsetFactor * s
                } else if format.kScales {
                    let sup = superScales + (g * superBlocks + b / 8) * 64
                    let d = Float(Float16(bitPattern: sup.loadUnaligned(fromByteOffset: 2 * lane, as: UInt16.self)))
                    let dmin = Float(Float16(bitPattern: sup.loadUnaligned(fromByteOffset: 32 + 2 * lane, as: UInt16.self)))
                    s = d * Float(p.load(fromByteOffset: format.quantBytes + lane, as: UInt8.self))
                    o = -(dmin * Float(p.load(fromByteOffset: format.quantBytes + 16 + lane, as: UInt8.self)))
                } else {
                    s = format.loadNumber(p + format.quantBytes, index: half * 16 + lane)
                    o = format.storedOffsets ? format.loadNumber(p + format.quantBytes + format.scalesBytes, index: half * 16 + lane)
                        : format.offsetFactor * s
                }
                out[b * 32 + k] = s * Float(q) + o
            }
        }
    }
}

/// How one packed type lays out its group-blocks.
package struct PackedFormat: Equatable {
    /// Two 4-bit quants per byte, or one quant per byte.
    package let nibbles: Bool
    /// Scales (and offsets) per 32 values (1) or per 16 (2).
    package let subBlocks: Int
    /// Scales and offsets stored as f16 (exact for the types whose own are f16), else f32.
    package let halfNumbers: Bool
    /// Offsets stored beside the scales, or `offsetFactor` times the scale.
    package let storedOffsets: Bool
    package let offsetFactor: Float
    /// Q4_K's own scales and mins (bytes) with `d` and `dmin` per 256 values
    /// apart, instead of f32 scales and offsets.
    package let kScales: Bool
    /// Q6_K: nibbles and a plane of high 2-bit parts, signed 8-bit scales, `d`
    /// per 256 values apart.
    package let sixBits: Bool
    /// `d` (and `dmin`) per 256 values in the matrix's `superScales`.
    package var superScaled: Bool { kScales || sixBits }

    init?(_ type: GGMLType) {
        switch type {
        case .q4_0: self.init(nibbles: true, subBlocks: 1, halfNumbers: true, storedOffsets: false, offsetFactor: -8)
        case .q4_1: self.init(nibbles: true, subBlocks: 1, halfNumbers: true, storedOffsets: true, offsetFactor: 0)
        case .q4_K: self.init(nibbles: true, subBlocks: 1, halfNumbers: false, storedOffsets: true, offsetFactor: 0, kScales: true)
        case .q8_0: self.init(nibbles: false, subBlocks: 1, halfNumbers: true, storedOffsets: false, offsetFactor: -128)
        case .q5_0: self.init(nibbles: false, subBlocks: 1, halfNumbers: true, storedOffsets: false, offsetFactor: -16)
        case .q5_1: self.init(nibbles: false, subBlocks: 1, halfNumbers: true, storedOffsets: true, offsetFactor: 0)
        case .q5_K: self.init(nibbles: false, subBlocks: 1, halfNumbers: false, storedOffsets: true, offsetFactor: 0)
        case .q6_K: self.init(nibbles: true, subBlocks: 2, halfNumbers: false, storedOffsets: false, offsetFactor: -32, sixBits: true)
        case .q3_K: self.init(nibbles: false, subBlocks: 2, halfNumbers: false, storedOffsets: false, offsetFactor: -4)
        case .q2_K: self.init(nibbles: false, subBlocks: 2, halfNumbers: false, storedOffsets: true, offsetFactor: 0)
        default: return nil
        }
    }

    init(nibbles: Bool, subBlocks: Int, halfNumbers: Bool, storedOffsets: Bool, offsetFactor: Float, kScales: Bool = false,
         sixBits: Bool = false) {
        self.kScales = kScales
        self.sixBits = sixBits
        self.nibbles = nibbles
        self.subBlocks = subBlocks
        self.halfNumbers = halfNumbers
        self.storedOffsets = storedOffsets
        self.offsetFactor = offsetFactor
    }

    package var quantBytes: Int { nibbles ? 256 : 512 }
    package var scalesBytes: Int { 16 * subBlocks * (halfNumbers ? 2 : 4) }
    package var blockBytes: Int {
        sixBits ? quantBytes + 128 + 32 : kScales ? quantBytes + 32 : quantBytes + scalesBytes * (storedOffsets ? 2 : 1)
    }

    func storeNumber(_ v: Float, at p: UnsafeMutableRawPointer, index: Int) {
        if halfNumbers { p.storeBytes(of: Float16(v), toByteOffset: 2 * index, as: Float16.self) } else {
            p.storeBytes(of: v, toByteOffset: 4 * index, as: Float.self)
        }
    }

    func loadNumber(_ p: UnsafeRawPointer, index: Int) -> Float {
        halfNumbers ? Float(p.loadUnaligned(fromByteOffset: 2 * index, as: Float16.self))
            : p.loadUnaligned(fromByteOffset: 4 * index, as: Float.self)
    }
}

/// One 32-value block of a row as unsigned quants, and the scale and offset of
/// each sub-block (one of 32, or two of 16): `w = scale * q + offset`.
struct UnpackedBlock {
    var q = [UInt8](repeating: 0, count: 32)
    var scale: [Float] = [0, 0]
    var offset: [Float] = [0, 0]
    /// Q4_K and Q5_K: the sub-block's 6-bit scale and min and the super-block's f16 d and dmin (bits).
    var kScale: UInt8 = 0, kMin: UInt8 = 0, kD: UInt16 = 0, kDmin: UInt16 = 0
    /// Q6_K: the two sub-blocks' signed scales (with `kD`).
    var sixScales: (Int8, Int8) = (0, 0)

    /// Reads block `b` (values `32 b ..< 32 b + 32`) of a row of `type`.
    mutating func read(_ type: GGMLType, _ row: UnsafeRawPointer, block b: Int) {
        func half(_ p: UnsafeRawPointer, _ offset: Int = 0) -> Float { Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))) }
        func byte(_ p: UnsafeRawPointer, _ i: Int) -> UInt8 { p.load(fromByteOffset: i, as: UInt8.self) }
        switch type {
        case .q4_0, .q4_1:
            let size = type == .q4_0 ? 18 : 20, first = type == .q4_0 ? 2 : 4
            let p = row + b * size
            for j in 0..<16 { q[j] = byte(p, first + j) & 15; q[j + 16] = byte(p, first + j) >> 4 }
            scale[0] = half(p)
            offset[0] = type == .q4_0 ? -8 * scale[0] : half(p, 2)
        case .q8_0:
            let p = row + b * 34
            for j in 0..<32 { q[j] = UInt8(Int(p.load(fromByteOffset: 2 + j, as: Int8.self)) + 128) }
            scale[0] = half(p)
            offset[0] = -128 * scale[0]
        case .q5_0, .q5_1:
            let size = type == .q5_0 ? 22 : 24, first = type == .q5_0 ? 2 : 4
            let p = row + b * size
            let qh = p.loadUnaligned(fromByteOffset: first, as: UInt32.self)
            for j in 0..<16 {
                q[j] = (byte(p, first + 4 + j) & 15) | UInt8(truncatingIfNeeded: ((qh >> UInt32(j)) & 1) << 4)
                q[j + 16] = (byte(p, first + 4 + j) >> 4) | UInt8(truncatingIfNeeded: ((qh >> UInt32(j + 16)) & 1) << 4)
            }
            scale[0] = half(p)
            offset[0] = type == .q5_0 ? -16 * scale[0] : half(p, 2)
        case .q4_K, .q5_K:
            // Sub-block b % 8 of super-block b / 8.
            let size = type == .q4_K ? 144 : 176
            let p = row + (b / 8) * size
            let sub = b % 8, chunk = sub / 2, high = sub % 2 == 1
            let (d, dmin) = KQuants.superScales(p)
            let (sc, m) = KQuants.scaleMin(sub, p + 4)
            let qs = p + (type == .q4_K ? 16 : 48) + 32 * chunk
            for l in 0..<32 {
                let nibble = high ? byte(qs, l) >> 4 : byte(qs, l) & 15
                if type == .q5_K {
                    let bit = (byte(p + 16, l) >> UInt8(sub)) & 1
                    q[l] = nibble | (bit << 4)
                } else {
                    q[l] = nibble
                }
            }
            scale[0] = d * Float(sc)
            offset[0] = -(dmin * Float(m))
            kScale = sc
            kMin = m
            kD = p.loadUnaligned(as: UInt16.self)
            kDmin = p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        case .q6_K:
            // Two 16-value groups of half n = (b % 8) / 4 of super-block b / 8.
            let p = row + (b / 8) * 210
            let d = half(p, 208)
            let n = (b % 8) / 4, pair = b % 4
            for h in 0..<2 {
                let g = 2 * pair + h
                let v = Dequantize.q6Group(p, n, g)
                for l in 0..<16 { q[16 * h + l] = UInt8(v[l] + 32) }
                scale[h] = d * Float(p.load(fromByteOffset: 192 + 8 * n + g, as: Int8.self))
                offset[h] = -32 * scale[h]
            }
            sixScales = (p.load(fromByteOffset: 192 + 8 * n + 2 * pair, as: Int8.self), p.load(fromByteOffset: 192 + 8 * n + 2 * pair + 1, as: Int8.self))
            kD = p.loadUnaligned(fromByteOffset: 208, as: UInt16.self)
        case .q3_K:
            let p = row + (b / 8) * 110
            let d = half(p, 108)
            let scales = KQuants.q3Scales(p + 96)
            let n = (b % 8) / 4, shift = b % 4
            for h in 0..<2 {
                for l in 0..<16 {
                    let low = (byte(p + 32 + 32 * n, 16 * h + l) >> UInt8(2 * shift)) & 3
                    let hbit = (byte(p, 16 * h + l) >> UInt8(4 * n + shift)) & 1
                    q[16 * h + l] = low | (hbit << 2)
                }
                scale[h] = d * Float(Int(scales[n * 8 + 2 * shift + h]) - 32)
                offset[h] = -4 * scale[h]
            }
        case .q2_K:
            let p = row + (b / 8) * 84
            let d = half(p, 80), dmin = half(p, 82)
            let n = (b % 8) / 4, shift = b % 4
            for h in 0..<2 {
                let sc = byte(p, n * 8 + 2 * shift + h)
                for l in 0..<16 { q[16 * h + l] = (byte(p + 16 + 32 * n, 16 * h + l) >> UInt8(2 * shift)) & 3 }
                scale[h] = d * Float(sc & 15)
                offset[h] = -(dmin * Float(sc >> 4))
            }
        default:
            preconditionFailure("\(type) is not packed")
        }
        if PackedFormat(type)!.subBlocks == 1 {
            scale[1] = scale[0]
            offset[1] = offset[0]
        }
    }
}
