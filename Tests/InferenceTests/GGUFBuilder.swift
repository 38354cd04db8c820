import Foundation
import Inference

/// Writes GGUF files byte by byte, so tests can make valid files and break them
/// in precise ways.
struct GGUFBuilder {
    struct Tensor {
        var name: String
        var dimensions: [UInt64]
        var rawType: UInt32
        var data: [UInt8]
        /// Overrides the offset written in the tensor info (to point it anywhere).
        var offsetOverride: UInt64?
    }

    var magic: [UInt8] = Array("GGUF".utf8)
    var version: UInt32 = 3
    var metadata: [(String, GGUFValue)] = []
    var tensors: [Tensor] = []
    var alignment = 32

    mutating func add(_ key: String, _ value: GGUFValue) { metadata.append((key, value)) }

    mutating func addTensor(_ name: String, _ dims: [UInt64], _ type: GGMLType, _ data: [UInt8]) {
        tensors.append(Tensor(name: name, dimensions: dims, rawType: type.rawValue, data: data))
    }

    /// The file's bytes, and the offset at which the data section starts.
    func build() -> (bytes: [UInt8], dataOffset: Int) {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func value(_ v: GGUFValue) {
            switch v {
            case let .uint8(x): out.append(x)
            case let .int8(x): out.append(UInt8(bitPattern: x))
            case let .uint16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .int16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .uint32(x): u32(x)
            case let .int32(x): u32(UInt32(bitPattern: x))
            case let .uint64(x): u64(x)
            case let .int64(x): u64(UInt64(bitPattern: x))
            case let .float32(x): u32(x.bitPattern)
            case let .float64(x): u64(x.bitPattern)
            case let .bool(x): out.append(x ? 1 : 0)
            case let .string(s): string(s)
            case let .array(type, values):
                u32(type.rawValue)
                u64(UInt64(values.count))
                for e in values { value(e) }
            }
        }
        out.append(contentsOf: magic)
        u32(version)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (k, v) in metadata {
            string(k)
            u32(v.type.rawValue)
            value(v)
        }
        var offsets: [UInt64] = []
        var next: UInt64 = 0
        for t in tensors {
            offsets.append(next)
            next += UInt64((t.data.count + alignment - 1) / alignment * alignment)
        }
        for (t, offset) in zip(tensors, offsets) {
            string(t.name)
            u32(UInt32(t.dimensions.count))
            for d in t.dimensions { u64(d) }
            u32(t.rawType)
            u64(t.offsetOverride ?? offset)
        }
        while out.count % alignment != 0 { out.append(0) }
        let dataOffset = out.count
        for (t, offset) in zip(tensors, offsets) {
            while UInt64(out.count - dataOffset) < offset { out.append(0) }
            out.append(contentsOf: t.data)
        }
        return (out, dataOffset)
    }

    func write() throws -> String {
        let url = TestSupport.temporaryFile("model.gguf")
        try Data(build().bytes).write(to: url)
        return url.path
    }
}

/// Writes bytes to a temporary file and returns its path.
func writeTemporary(_ bytes: [UInt8], name: String = "file.gguf") throws -> String {
    let url = TestSupport.temporaryFile(name)
    try Data(bytes).write(to: url)
    return url.path
}
