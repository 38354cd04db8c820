/// Everything that can be wrong with a GGUF file. Each message names what is
/// wrong (which key, which tensor, which type) and where.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    case file(MappedFileError)
    case badMagic(found: [UInt8])
    case unsupportedVersion(UInt32)
    case truncated(reading: String, offset: Int, needed: Int, fileSize: Int)
    case invalidKey(index: Int, reason: String)
    case duplicateKey(String)
    case invalidValueType(key: String, rawType: UInt32)
    case countTooLarge(what: String, count: UInt64)
    case nestingTooDeep(key: String)
    case invalidAlignment(UInt64)
    case duplicateTensor(String)
    case invalidTensorName(index: Int)
    case tooManyDimensions(tensor: String, count: UInt32)
    case invalidDimensions(tensor: String, dimensions: [UInt64])
    case unknownTensorType(tensor: String, rawType: UInt32)
    case rowNotWholeBlocks(tensor: String, type: GGMLType, rowLength: Int)
    case misalignedTensor(tensor: String, offset: UInt64, alignment: Int)
    case tensorOutOfBounds(tensor: String, start: UInt64, byteCount: Int, fileSize: Int)
    case missingKey(String)
    case wrongValueType(key: String, expected: String, found: GGUFValueType)
    case missingTensor(String)

    public var description: String {
        switch self {
        case let .file(error):
            return error.description
        case let .badMagic(found):
            let shown = found.map { b in (32..<127).contains(b) ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16) }
            return "not a GGUF file: it starts with \"\(shown.joined())\" instead of \"GGUF\""
        case let .unsupportedVersion(v):
            if v == 1 { return "GGUF version 1 is not supported (only versions 2 and 3); convert the model again with a current llama.cpp" }
            if v.byteSwapped == 2 || v.byteSwapped == 3 { return "this GGUF file is big-endian, which is not supported" }
            return "unsupported GGUF version \(v) (supported: 2 and 3)"
        case let .truncated(reading, offset, needed, fileSize):
            return "file is truncated: reading \(reading) at byte \(offset) needs \(needed) bytes, but the file has only \(fileSize) bytes"
        case let .invalidKey(index, reason):
            return "metadata key #\(index) is invalid: \(reason)"
        case let .duplicateKey(key):
            return "metadata key '\(key)' appears twice"
        case let .invalidValueType(key, raw):
            return "metadata key '\(key)' has unknown value type \(raw)"
        case let .countTooLarge(what, count):
            return "\(what) claims \(count) entries, more than the file can hold"
        case let .nestingTooDeep(key):
            return "metadata key '\(key)' nests arrays too deeply"
        case let .invalidAlignment(value):
            return "general.alignment is \(value); it must be a power of two between 1 and 65536"
        case let .duplicateTensor(name):
            return "tensor '\(name)' appears twice"
        case let .invalidTensorName(index):
            return "tensor #\(index) has an invalid name"
        case let .tooManyDimensions(tensor, count):
            return "tensor '\(tensor)' has \(count) dimensions (at most 4 are allowed)"
        case let .invalidDimensions(tensor, dims):
            return "tensor '\(tensor)' has invalid dimensions \(dims)"
        case let .unknownTensorType(tensor, raw):
            return "tensor '\(tensor)' has unknown ggml type \(raw)"
        case let .rowNotWholeBlocks(tensor, type, rowLength):
            return "tensor '\(tensor)' of type \(type) has rows of \(rowLength) values, not a multiple of the block size \(type.blockSize)"
        case let .misalignedTensor(tensor, offset, alignment):
            return "tensor '\(tensor)' starts at data offset \(offset), which is not a multiple of the alignment \(alignment)"
        case let .tensorOutOfBounds(tensor, start, byteCount, fileSize):
            return "tensor '\(tensor)' needs \(byteCount) bytes from byte \(start), past the end of the file (\(fileSize) bytes)"
        case let .missingKey(key):
            return "the model has no metadata key '\(key)'"
        case let .wrongValueType(key, expected, found):
            return "metadata key '\(key)' is a \(found), expected \(expected)"
        case let .missingTensor(name):
            return "the model has no tensor '\(name)'"
        }
    }
}
