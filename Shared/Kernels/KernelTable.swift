import SIMDSupport

/// The hot loops of one kernel path: the same Swift source (Shared/KernelCode)
/// compiled once per instruction set, each copy in its own module with its
/// own target CPU (KernelsPortable, KernelsAVX2, KernelsAVXVNNI,
/// KernelsAVX512VNNI), each giving one of these. KernelDispatch chooses one
/// at start from what the CPU has (`KernelSelection`). Every path computes
/// exactly the same results.
public struct KernelTable: Sendable {
    public let path: KernelPath

    public typealias ByteDot = @Sendable (SIMD16<Int32>, SIMD64<UInt8>, SIMD64<Int8>) -> SIMD16<Int32>
    public typealias PackedMultiply = @Sendable (PackedMatrix, ActivationBatch, Range<Int>, UnsafeMutablePointer<Float>, Int, Range<Int>) -> Void
    public typealias Quantize = @Sendable (ActivationBatch, UnsafePointer<Float>, Int, Int) -> Void
    public typealias MatVecMultiply = @Sendable (WeightMatrix, UnsafePointer<Float>, Int, Int, UnsafeMutablePointer<Float>, Int, Range<Int>) -> Void
    public typealias MatMulPack = @Sendable (UnsafePointer<Float>, Int, Int, Int, UnsafeMutablePointer<Float>, Range<Int>) -> Void
    public typealias MatMulMultiply = @Sendable (WeightMatrix, UnsafePointer<Float>, Int, UnsafeMutablePointer<Float>, Int, Range<Int>, UnsafeMutablePointer<Float>) -> Void
    public typealias DequantizeRow = @Sendable (GGMLType, UnsafeRawPointer, Int, UnsafeMutablePointer<Float>) -> Void
    public typealias Attend = @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int, Int, Int, Float,
                                         UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    public typealias AttendGroup = @Sendable (UnsafePointer<Float>, Int, UnsafePointer<Float16>, UnsafePointer<Float16>, Int, Int, Int, Float,
                                              UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    public typealias AttendTile = @Sendable (UnsafePointer<Float>, Int, Int, Int, UnsafePointer<Float16>, UnsafePointer<Float16>, Int, Int, Float,
                                             Int?, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    public typealias Norm = @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, Int, Float, UnsafeMutablePointer<Float>) -> Void
    public typealias LayerNorm = @Sendable (UnsafeMutablePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, Int, Float) -> Void
    public typealias Binary = @Sendable (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int) -> Void
    public typealias Scalar = @Sendable (UnsafeMutablePointer<Float>, Float, Int) -> Void
    public typealias Unary = @Sendable (UnsafeMutablePointer<Float>, Int) -> Void
    public typealias Rope = @Sendable (UnsafeMutablePointer<Float>, Int, Int, Int, UnsafePointer<Float>, UnsafePointer<Float>) -> Void

    /// `acc` plus, in each of 16 lanes, the sum of the four products of the
    /// lane's unsigned bytes of `a` and signed bytes of `b` (`vpdpbusd`); the
    /// small one only for bytes of `a` up to 63 (the packed kernels' building
    /// blocks, here for tests).
    public let byteDot: ByteDot
    public let byteDotSmall: ByteDot
    /// e^x on 16 lanes, as the kernels compute it (for tests).
    public let exp: @Sendable (Vec) -> Vec
    public let packedMultiply: PackedMultiply
    public let quantize: Quantize
    public let matVec: MatVecMultiply
    public let matMulPack: MatMulPack
    public let matMul: MatMulMultiply
    public let dequantizeRow: DequantizeRow
    public let attend: Attend
    public let attendGroup: AttendGroup
    public let attendTile: AttendTile
    public let rmsNorm: Norm
    public let layerNorm: LayerNorm
    public let add: Binary
    public let siluMultiply: Binary
    public let geluTanhMultiply: Binary
    public let scale: Scalar
    public let softCap: Scalar
    public let softmax: Unary
    public let gelu: Unary
    /// Each value rounded to f16 and back.
    public let roundToHalves: Unary
    public let ropeNormal: Rope
    public let ropeNeoX: Rope
    /// The inner product of two f32 vectors, and of an f32 vector with 8-bit
    /// codes (a multiple of 64 of them): the HNSW index's distances.
    public let dotF32: @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Float
    public let dotCodes: @Sendable (UnsafePointer<Float>, UnsafePointer<Int8>, Int) -> Float
    /// Floats rounded to f16 (the KV cache's stores).
    public let toHalves: @Sendable (UnsafePointer<Float>, UnsafeMutablePointer<Float16>, Int) -> Void

    public init(path: KernelPath, byteDot: @escaping ByteDot, byteDotSmall: @escaping ByteDot, exp: @escaping @Sendable (Vec) -> Vec,
                packedMultiply: @escaping PackedMultiply, quantize: @escaping Quantize, matVec: @escaping MatVecMultiply,
                matMulPack: @escaping MatMulPack, matMul: @escaping MatMulMultiply, dequantizeRow: @escaping DequantizeRow,
                attend: @escaping Attend, attendGroup: @escaping AttendGroup, attendTile: @escaping AttendTile,
                rmsNorm: @escaping Norm, layerNorm: @escaping LayerNorm, add: @escaping Binary, siluMultiply: @escaping Binary,
                geluTanhMultiply: @escaping Binary, scale: @escaping Scalar, softCap: @escaping Scalar, softmax: @escaping Unary,
                gelu: @escaping Unary, roundToHalves: @escaping Unary, ropeNormal: @escaping Rope, ropeNeoX: @escaping Rope,
                dotF32: @escaping @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Float,
                dotCodes: @escaping @Sendable (UnsafePointer<Float>, UnsafePointer<Int8>, Int) -> Float,
                toHalves: @escaping @Sendable (UnsafePointer<Float>, UnsafeMutablePointer<Float16>, Int) -> Void) {
        self.path = path
        self.byteDot = byteDot
        self.byteDotSmall = byteDotSmall
        self.exp = exp
        self.packedMultiply = packedMultiply
        self.quantize = quantize
        self.matVec = matVec
        self.matMulPack = matMulPack
        self.matMul = matMul
        self.dequantizeRow = dequantizeRow
        self.attend = attend
        self.attendGroup = attendGroup
        self.attendTile = attendTile
        self.rmsNorm = rmsNorm
        self.layerNorm = layerNorm
        self.add = add
        self.siluMultiply = siluMultiply
        self.geluTanhMultiply = geluTanhMultiply
        self.scale = scale
        self.softCap = softCap
        self.softmax = softmax
        self.gelu = gelu
        self.roundToHalves = roundToHalves
        self.ropeNormal = ropeNormal
        self.ropeNeoX = ropeNeoX
        self.dotF32 = dotF32
        self.dotCodes = dotCodes
        self.toHalves = toHalves
    }
}

/// Matrix times many activation rows, for prompt processing. Compute-bound, so
/// it is tiled: a block of row tiles (`rowTile` weight rows each) is
/// dequantised to f32 once and then applied to every token, 32 tokens at a
/// time, with 12 accumulator registers. Activations are packed first so the 32
/// tokens' values for one column sit side by side: `packed[tile][k][lane]`.
/// (Its entry points are in Inference, which calls the chosen kernels.)
public enum MatMul {
    /// Weight rows dequantised together; the register tile is rowTile x 32 tokens.
    public static let rowTile = 6
    /// Tokens per packed tile.
    public static let tokenTile = 32
    /// Row tiles dequantised together: their f32 rows stay in L2 while every
    /// token tile passes over them, so that the packed activations (which
    /// outgrow L2 for wide matrices and long prompts) are read once per block
    /// of rows instead of once per tile.
    public static let tilesPerBlock = 8

    /// Floats needed to pack `tokens` rows of `columns` activations.
    public static func packedCount(tokens: Int, columns: Int) -> Int {
        (tokens + tokenTile - 1) / tokenTile * tokenTile * columns
    }

    /// Floats of scratch `multiply` needs for rows of `columns` values.
    public static func scratchCount(columns: Int) -> Int { tilesPerBlock * rowTile * columns }

    public static func tileCount(rows: Int) -> Int { (rows + rowTile - 1) / rowTile }
}

/// Scaled dot-product attention. The decoders' KV caches hold f16 keys and
/// values (as llama.cpp keeps them): half the bytes of f32 to read per
/// query, which is what attention costs when many sequences decode together.
/// The sentence embedder attends over f32 ones. (Its entry points are in
/// Inference, which calls the chosen kernels.)
public enum Attention {
    /// Query heads `attendGroup` takes at once.
    public static let groupLimit = 4
    /// Queries per tile of `attendTile`.
    public static let queryTile = MatMul.tokenTile

    /// Floats of per-thread scratch `attendTile` (and `attendGroup`) need for a
    /// cache of `capacity` positions.
    public static func tileScratchCount(capacity: Int, headDim: Int) -> Int {
        queryTile * headDim + MatMul.rowTile * headDim + max(queryTile * (capacity + MatMul.rowTile), groupLimit * capacity)
    }
}

/// Matrix times vector for float (F32, F16, BF16) weights against f32
/// activations, row by row. (Quantised matrices are multiplied by the
/// integer kernels on their packed copies: `PackedMatrix.multiply`.) Its
/// entry points are in Inference, which calls the chosen kernels.
public enum MatVec {}

/// Element-wise and reduction kernels on f32 vectors (entry points in
/// Inference, which calls the chosen kernels).
public enum VectorOps {}
