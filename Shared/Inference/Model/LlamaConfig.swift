/// Errors loading a model.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case gguf(GGUFError)
    case tokenizer(TokenizerError)
    case unsupportedArchitecture(String)
    case invalidConfiguration(String)
    case missingTensor(String)
    case wrongShape(tensor: String, expected: [Int], found: [Int])
    case unsupportedTensorType(tensor: String, type: GGMLType)
    case modelNotFound(path: String)

    public var description: String {
        switch self {
        case let .gguf(e): return e.description
        case let .tokenizer(e): return e.description
        case let .unsupportedArchitecture(a):
            return "architecture '\(a)' is not supported (Chorus runs Llama-family models, general.architecture = llama)"
        case let .invalidConfiguration(reason): return "invalid model configuration: \(reason)"
        case let .missingTensor(name): return "the model has no tensor '\(name)'"
        case let .wrongShape(tensor, expected, found):
            return "tensor '\(tensor)' has shape \(found), expected \(expected)"
        case let .unsupportedTensorType(tensor, type):
            let supported = GGMLType.allCases.filter(\.isComputable).map(\.description).joined(separator: ", ")
            return "tensor '\(tensor)' has type \(type), which Chorus cannot compute with yet (supported: \(supported))"
        case let .modelNotFound(path):
            return "no model at \(path); run deploy/setup.sh to install the default model, or pass --model PATH"
        }
    }
}

/// How RoPE pairs the dimensions of a head.
public enum RopeStyle: String, Sendable, Codable {
    /// Adjacent pairs (x[2i], x[2i+1]), what llama.cpp uses for `llama` files.
    case normal
    /// Halves (x[i], x[i + d/2]).
    case neox
}

/// Hyperparameters of a Llama-family decoder, read entirely from GGUF metadata.
public struct LlamaConfig: Sendable, Equatable, Codable {
    public var architecture: String
    public var blockCount: Int
    public var embeddingLength: Int
    public var feedForwardLength: Int
    public var headCount: Int
    public var headCountKV: Int
    public var headDim: Int
    public var ropeDim: Int
    public var ropeBase: Float
    /// Positions are divided by this (linear RoPE scaling); 1 means none.
    public var ropeScale: Float
    public var ropeStyle: RopeStyle
    public var rmsEpsilon: Float
    public var contextLength: Int
    public var vocabularySize: Int
    public var tiedOutput: Bool

    public var queryDim: Int { headCount * headDim }
    public var kvDim: Int { headCountKV * headDim }

    public init(gguf: GGUFFile) throws(ModelError) {
        do {
            let arch = try gguf.string("general.architecture")
            guard arch == "llama" else { throw ModelError.unsupportedArchitecture(arch) }
            architecture = arch
            blockCount = try gguf.int("\(arch).block_count")
            embeddingLength = try gguf.int("\(arch).embedding_length")
            feedForwardLength = try gguf.int("\(arch).feed_forward_length")
            headCount = try gguf.int("\(arch).attention.head_count")
            headCountKV = gguf.metadata["\(arch).attention.head_count_kv"]?.intValue ?? headCount
            headDim = gguf.metadata["\(arch).attention.key_length"]?.intValue ?? (headCount > 0 ? embeddingLength / headCount : 0)
            ropeDim = gguf.metadata["\(arch).rope.dimension_count"]?.intValue ?? headDim
            ropeBase = Float(gguf.metadata["\(arch).rope.freq_base"]?.doubleValue ?? 10_000)
            ropeStyle = .normal
            rmsEpsilon = Float(gguf.metadata["\(arch).attention.layer_norm_rms_epsilon"]?.doubleValue ?? 1e-5)
            contextLength = gguf.metadata["\(arch).context_length"]?.intValue ?? 2048
            ropeScale = 1
            if let type = gguf.metadata["\(arch).rope.scaling.type"]?.stringValue, type != "none" {
                guard type == "linear", let factor = gguf.metadata["\(arch).rope.scaling.factor"]?.doubleValue, factor > 0 else {
                    throw ModelError.invalidConfiguration("RoPE scaling '\(type)' is not supported (only linear)")
                }
                ropeScale = Float(factor)
            }
            guard let embedding = gguf.tensorInfo("token_embd.weight"), embedding.dimensions.count == 2 else {
                throw ModelError.missingTensor("token_embd.weight")
            }
            vocabularySize = embedding.dimensions[1]
            tiedOutput = gguf.tensorInfo("output.weight") == nil
        } catch let e as ModelError {
            throw e
        } catch let e as GGUFError {
            throw .gguf(e)
        } catch {
            throw .invalidConfiguration("\(error)")
        }
        try validate()
    }

    func validate() throws(ModelError) {
        func check(_ ok: Bool, _ reason: String) throws(ModelError) {
            if !ok { throw .invalidConfiguration(reason) }
        }
        try check(blockCount > 0 && blockCount <= 1024, "block_count is \(blockCount)")
        try check(embeddingLength > 0 && embeddingLength % 32 == 0, "embedding_length \(embeddingLength) is not a positive multiple of 32")
        try check(feedForwardLength > 0 && feedForwardLength % 32 == 0, "feed_forward_length \(feedForwardLength) is not a positive multiple of 32")
        try check(headCount > 0 && headCountKV > 0 && headCount % headCountKV == 0,
                  "head_count \(headCount) is not a multiple of head_count_kv \(headCountKV)")
        try check(headDim > 0 && headDim % 16 == 0, "head dimension \(headDim) is not a positive multiple of 16")
        try check(ropeDim > 0 && ropeDim <= headDim && ropeDim % 2 == 0, "rope.dimension_count \(ropeDim) does not fit head dimension \(headDim)")
        try check(ropeBase > 0, "rope.freq_base is \(ropeBase)")
        try check(rmsEpsilon > 0, "layer_norm_rms_epsilon is \(rmsEpsilon)")
        try check(contextLength > 0, "context_length is \(contextLength)")
        try check(vocabularySize > 0, "the vocabulary is empty")
    }
}
