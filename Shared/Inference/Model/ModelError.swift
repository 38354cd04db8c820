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
    /// CHORUS_KERNELS names kernels this build or CPU does not have.
    case kernels(String)

    public var description: String {
        switch self {
        case let .gguf(e): return e.description
        case let .tokenizer(e): return e.description
        case let .unsupportedArchitecture(a):
            return "architecture '\(a)' is not supported (general.architecture must be one of: \(Architectures.names.joined(separator: ", ")))"
        case let .invalidConfiguration(reason): return "invalid model configuration: \(reason)"
        case let .missingTensor(name): return "the model has no tensor '\(name)'"
        case let .wrongShape(tensor, expected, found):
            return "tensor '\(tensor)' has shape \(found), expected \(expected)"
        case let .unsupportedTensorType(tensor, type):
            let supported = GGMLType.allCases.filter(\.isComputable).map(\.description).joined(separator: ", ")
            return "tensor '\(tensor)' has type \(type), which Chorus cannot compute with yet (supported: \(supported))"
        case let .modelNotFound(path):
            return "no model at \(path); run deploy/setup.sh to install the default model, or pass --model PATH"
        case let .kernels(reason): return reason
        }
    }
}
