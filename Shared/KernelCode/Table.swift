// This module's kernels as a table: the same source is compiled once per
// instruction set (the modules KernelsPortable, KernelsAVX2, KernelsAVXVNNI
// and KernelsAVX512VNNI share this folder), and KernelDispatch picks the
// table of the best one the CPU runs.
import Swift
import Kernels

#if CHORUS_KERNELS_AVX512VNNI
let path = KernelPath.avx512VNNI
#elseif CHORUS_KERNELS_AVXVNNI
let path = KernelPath.avxVNNI
#elseif CHORUS_KERNELS_AVX2
let path = KernelPath.avx2
#else
let path = KernelPath.portable
#endif

/// The kernels compiled in this module.
public let kernels = KernelTable(
    path: path,
    byteDot: { dotWide($0, $1, $2) },
    byteDotSmall: { dotSmall($0, $1, $2) },
    exp: { vectorExp($0) },
    packedMultiply: { PackedCode.multiply($0, $1, columns: $2, into: $3, stride: $4, groups: $5) },
    quantize: { PackedCode.quantize($0, $1, count: $2, column: $3) },
    matVec: { MatVecCode.multiply($0, $1, stride: $2, columns: $3, into: $4, yStride: $5, rows: $6) },
    matMulPack: { MatMulCode.pack($0, stride: $1, tokens: $2, columns: $3, into: $4, tiles: $5) },
    matMul: { MatMulCode.multiply($0, packed: $1, tokens: $2, into: $3, yStride: $4, tiles: $5, scratch: $6) },
    dequantizeRow: { DequantizeCode.row($0, $1, count: $2, into: $3) },
    attend: { AttentionCode.attend(query: $0, keys: $1, values: $2, stride: $3, length: $4, headDim: $5, scale: $6, scores: $7, into: $8) },
    attendGroup: {
        AttentionCode.attendGroup(queries: $0, count: $1, keys: $2, values: $3, stride: $4, length: $5, headDim: $6, scale: $7,
                                  scores: $8, into: $9)
    },
    attendTile: {
        AttentionCode.attendTile(queries: $0, queryStride: $1, count: $2, firstPosition: $3, keys: $4, values: $5, stride: $6,
                                 headDim: $7, scale: $8, window: $9, scratch: $10, into: $11, outStride: $12)
    },
    rmsNorm: { VectorCode.rmsNorm($0, weight: $1, count: $2, epsilon: $3, into: $4) },
    layerNorm: { VectorCode.layerNorm($0, weight: $1, bias: $2, count: $3, epsilon: $4) },
    add: { VectorCode.add($0, $1, count: $2) },
    siluMultiply: { VectorCode.siluMultiply($0, $1, count: $2) },
    geluTanhMultiply: { VectorCode.geluTanhMultiply($0, $1, count: $2) },
    scale: { VectorCode.scale($0, by: $1, count: $2) },
    softCap: { VectorCode.softCap($0, cap: $1, count: $2) },
    softmax: { VectorCode.softmax($0, count: $1) },
    gelu: { VectorCode.gelu($0, count: $1) },
    roundToHalves: { VectorCode.roundToHalves($0, count: $1) },
    ropeNormal: { VectorCode.ropeNormal($0, heads: $1, headDim: $2, ropeDim: $3, cos: $4, sin: $5) },
    ropeNeoX: { VectorCode.ropeNeoX($0, heads: $1, headDim: $2, ropeDim: $3, cos: $4, sin: $5) },
    dotF32: { IndexCode.dot($0, $1, $2) },
    dotCodes: { IndexCode.dotCodes($0, $1, $2) },
    toHalves: { HalfCode.toHalves($0, $1, $2) }
)
