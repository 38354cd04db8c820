import Foundation

/// Everything that can be wrong with a safetensors file, naming the tensor or field.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case file(MappedFileError)
    case tooSmall(size: Int)
    case headerTooLarge(length: UInt64, fileSize: Int)
    case invalidHeader(String)
    case invalidTensor(name: String, reason: String)
    case unsupportedType(name: String, dtype: String)
    case missingTensor(String)
    case wrongShape(name: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case let .file(e): return e.description
        case let .tooSmall(size): return "not a safetensors file: \(size) bytes is too small for a header"
        case let .headerTooLarge(length, size):
            return "safetensors header claims \(length) bytes, but the file has only \(size) bytes"
        case let .invalidHeader(reason): return "invalid safetensors header: \(reason)"
        case let .invalidTensor(name, reason): return "tensor '\(name)': \(reason)"
        case let .unsupportedType(name, dtype): return "tensor '\(name)' has type \(dtype); only F32 is supported"
        case let .missingTensor(name): return "the model has no tensor '\(name)'"
        case let .wrongShape(name, expected, found): return "tensor '\(name)' has shape \(found), expected \(expected)"
        }
    }
}

/// A safetensors file, memory-mapped: an 8-byte little-endian header length,
/// a JSON header naming each tensor's dtype, shape and byte range, then the
/// data. Every range is checked against the file.
public final class SafetensorsFile: @unchecked Sendable {
    public struct Tensor: Sendable, Equatable {
        public let name: String
        public let dtype: String
        public let shape: [Int]
        /// Absolute byte range in the file.
        public let range: Range<Int>
    }

    public let path: String
    public let tensors: [String: Tensor]
    public let metadata: [String: String]
    let mapping: MappedFile

    static let dtypeSizes = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1]

    public init(path: String) throws(SafetensorsError) {
        do { mapping = try MappedFile(path: path) } catch { throw .file(error) }
        self.path = path
        let size = mapping.size
        guard size >= 10 else { throw .tooSmall(size: size) }
        let length = UInt64(littleEndian: mapping.base.loadUnaligned(as: UInt64.self))
        guard length >= 2, length <= UInt64(size - 8), length <= 100 << 20 else { throw .headerTooLarge(length: length, fileSize: size) }
        let header = Data(bytes: mapping.base + 8, count: Int(length))
        guard let object = try? JSONSerialization.jsonObject(with: header), let root = object as? [String: Any] else {
            throw .invalidHeader("not a JSON object")
        }
        let dataStart = 8 + Int(length)
        let dataSize = size - dataStart
        var tensors: [String: Tensor] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in root {
            if name == "__metadata__" {
                for (k, v) in (value as? [String: Any]) ?? [:] { metadata[k] = v as? String ?? "\(v)" }
                continue
            }
            guard let info = value as? [String: Any] else { throw .invalidTensor(name: name, reason: "its entry is not an object") }
            guard let dtype = info["dtype"] as? String else { throw .invalidTensor(name: name, reason: "no dtype") }
            guard let elementSize = Self.dtypeSizes[dtype] else { throw .unsupportedType(name: name, dtype: dtype) }
            guard let rawShape = info["shape"] as? [Any], let offsets = info["data_offsets"] as? [Any], offsets.count == 2 else {
                throw .invalidTensor(name: name, reason: "missing shape or data_offsets")
            }
            var shape: [Int] = []
            var count = 1
            for d in rawShape {
                guard let n = (d as? NSNumber)?.intValue, n >= 0, n <= 1 << 31 else { throw .invalidTensor(name: name, reason: "invalid shape \(rawShape)") }
                let (product, overflow) = count.multipliedReportingOverflow(by: n)
                guard !overflow else { throw .invalidTensor(name: name, reason: "shape \(rawShape) overflows") }
                shape.append(n)
                count = product
            }
            guard let begin = (offsets[0] as? NSNumber)?.intValue, let end = (offsets[1] as? NSNumber)?.intValue,
                  begin >= 0, end >= begin else {
                throw .invalidTensor(name: name, reason: "invalid data_offsets \(offsets)")
            }
            guard end <= dataSize else {
                throw .invalidTensor(name: name, reason: "data ends at byte \(dataStart + end), past the end of the file (\(size) bytes)")
            }
            guard count.multipliedReportingOverflow(by: elementSize) == (end - begin, false) else {
                throw .invalidTensor(name: name, reason: "\(end - begin) bytes of data for shape \(shape) of \(dtype)")
            }
            tensors[name] = Tensor(name: name, dtype: dtype, shape: shape, range: (dataStart + begin)..<(dataStart + end))
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// An F32 tensor of the given shape, as a pointer into the mapping (or a
    /// copy when the file leaves it unaligned), kept alive by `storage`.
    public func floats(_ name: String, shape: [Int]) throws(SafetensorsError) -> (pointer: UnsafePointer<Float>, storage: FloatBuffer?) {
        guard let t = tensors[name] else { throw .missingTensor(name) }
        guard t.dtype == "F32" else { throw .unsupportedType(name: name, dtype: t.dtype) }
        guard t.shape == shape else { throw .wrongShape(name: name, expected: shape, found: t.shape) }
        let raw = mapping.base + t.range.lowerBound
        if Int(bitPattern: raw) % 4 == 0 { return (raw.assumingMemoryBound(to: Float.self), nil) }
        let copy = FloatBuffer(count: t.range.count / 4)
        memcpy(copy.pointer, raw, t.range.count)
        return (UnsafePointer(copy.pointer), copy)
    }
}
