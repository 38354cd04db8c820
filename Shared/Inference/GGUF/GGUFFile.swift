/// A tensor described in a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions, fastest-varying first: `[576, 49152]` is 49152 rows of 576 values.
    public let dimensions: [Int]
    public let type: GGMLType
    /// Offset from the start of the data section.
    public let offset: Int
    public let elementCount: Int
    public let byteCount: Int

    /// Values in one row (the first dimension).
    public var rowLength: Int { dimensions.first ?? 1 }
    /// Number of rows (the product of the other dimensions).
    public var rowCount: Int { elementCount / max(rowLength, 1) }
}

/// A GGUF model file (versions 2 and 3), memory-mapped. Every size and offset
/// is checked against the file before it is used; tensor data stays in the
/// mapping.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    /// Metadata in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute offset of the data section.
    public let dataOffset: Int
    let mapping: MappedFile
    private let tensorIndex: [String: Int]

    static let maxArrayNesting = 4
    static let maxDimensions: UInt32 = 4

    public convenience init(path: String) throws(GGUFError) {
        let mapping: MappedFile
        do { mapping = try MappedFile(path: path) } catch { throw .file(error) }
        try self.init(mapping: mapping)
    }

    public init(mapping: MappedFile) throws(GGUFError) {
        self.mapping = mapping
        self.path = mapping.path
        var reader = ByteReader(base: mapping.base, size: mapping.size)

        let magic = try reader.bytes(4, reading: "the magic number")
        guard magic == Array("GGUF".utf8) else { throw .badMagic(found: magic) }
        let version = try reader.u32(reading: "the version")
        guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
        self.version = version
        let tensorCount = try reader.u64(reading: "the tensor count")
        let metadataCount = try reader.u64(reading: "the metadata count")
        // Each metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes;
        // each tensor info at least 8 + 4 + 4 + 8.
        guard metadataCount <= UInt64(mapping.size / 13) else { throw .countTooLarge(what: "the metadata count", count: metadataCount) }
        guard tensorCount <= UInt64(mapping.size / 24) else { throw .countTooLarge(what: "the tensor count", count: tensorCount) }

        var keys: [String] = []
        var metadata: [String: GGUFValue] = [:]
        for index in 0..<Int(metadataCount) {
            let keyBytes = try reader.stringBytes(reading: "metadata key #\(index)")
            guard let key = String(validating: keyBytes, as: UTF8.self), !key.isEmpty else {
                throw .invalidKey(index: index, reason: keyBytes.isEmpty ? "it is empty" : "it is not valid UTF-8")
            }
            guard metadata[key] == nil else { throw .duplicateKey(key) }
            let rawType = try reader.u32(reading: "the type of '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else { throw .invalidValueType(key: key, rawType: rawType) }
            metadata[key] = try reader.value(of: type, key: key, depth: 0)
            keys.append(key)
        }
        self.metadataKeys = keys
        self.metadata = metadata

        var alignment = 32
        if let value = metadata["general.alignment"] {
            guard let a = value.intValue, a > 0, a <= 65536, a & (a - 1) == 0 else {
                throw .invalidAlignment(UInt64(clamping: value.intValue ?? -1))
            }
            alignment = a
        }
        self.alignment = alignment

        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        var rawOffsets: [UInt64] = []
        for i in 0..<Int(tensorCount) {
            let nameBytes = try reader.stringBytes(reading: "the name of tensor #\(i)")
            guard let name = String(validating: nameBytes, as: UTF8.self), !name.isEmpty else { throw .invalidTensorName(index: i) }
            guard index[name] == nil else { throw .duplicateTensor(name) }
            let dimCount = try reader.u32(reading: "the dimension count of '\(name)'")
            guard dimCount >= 1, dimCount <= Self.maxDimensions else { throw .tooManyDimensions(tensor: name, count: dimCount) }
            var rawDims: [UInt64] = []
            for d in 0..<Int(dimCount) { rawDims.append(try reader.u64(reading: "dimension \(d) of '\(name)'")) }
            let rawType = try reader.u32(reading: "the type of '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else { throw .unknownTensorType(tensor: name, rawType: rawType) }
            let offset = try reader.u64(reading: "the data offset of '\(name)'")

            var elements = 1
            for dim in rawDims {
                guard dim >= 1, dim <= UInt64(Int32.max) else { throw .invalidDimensions(tensor: name, dimensions: rawDims) }
                let (product, overflow) = elements.multipliedReportingOverflow(by: Int(dim))
                guard !overflow, product <= mapping.size * 64 else { throw .invalidDimensions(tensor: name, dimensions: rawDims) }
                elements = product
            }
            let dims = rawDims.map { Int($0) }
            guard dims[0] % type.blockSize == 0, let bytes = type.byteCount(values: elements) else {
                throw .rowNotWholeBlocks(tensor: name, type: type, rowLength: dims[0])
            }
            guard offset % UInt64(alignment) == 0 else { throw .misalignedTensor(tensor: name, offset: offset, alignment: alignment) }
            index[name] = infos.count
            rawOffsets.append(offset)
            infos.append(GGUFTensorInfo(name: name, dimensions: dims, type: type, offset: Int(clamping: offset),
                                        elementCount: elements, byteCount: bytes))
        }

        // The data section starts at the next multiple of the alignment.
        let headerEnd = reader.position
        let dataOffset = (headerEnd + alignment - 1) / alignment * alignment
        if !infos.isEmpty && dataOffset > mapping.size {
            throw .truncated(reading: "the data section", offset: headerEnd, needed: dataOffset - headerEnd, fileSize: mapping.size)
        }
        for (info, raw) in zip(infos, rawOffsets) {
            let start = UInt64(dataOffset).addingReportingOverflow(raw)
            guard !start.overflow, start.partialValue <= UInt64(mapping.size),
                  UInt64(info.byteCount) <= UInt64(mapping.size) - start.partialValue else {
                throw .tensorOutOfBounds(tensor: info.name, start: start.overflow ? .max : start.partialValue,
                                         byteCount: info.byteCount, fileSize: mapping.size)
            }
        }
        self.dataOffset = dataOffset
        self.tensors = infos
        self.tensorIndex = index
    }

    public var fileSize: Int { mapping.size }

    /// Gives back the mapped pages of a tensor that is no longer read from the file.
    public func discard(_ info: GGUFTensorInfo) { mapping.discard(offset: dataOffset + info.offset, length: info.byteCount) }

    /// Gives back the mapped pages wholly inside `bytes` of a tensor's data.
    public func discard(_ info: GGUFTensorInfo, bytes: Range<Int>) {
        let bytes = bytes.clamped(to: 0..<info.byteCount)
        mapping.discard(offset: dataOffset + info.offset + bytes.lowerBound, length: bytes.count)
    }

    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// Pointer to a tensor's bytes inside the mapping (valid while this file is alive).
    public func data(of tensor: GGUFTensorInfo) -> UnsafeRawPointer {
        mapping.base + dataOffset + tensor.offset
    }

    // MARK: Typed metadata access

    public func value(_ key: String) throws(GGUFError) -> GGUFValue {
        guard let v = metadata[key] else { throw .missingKey(key) }
        return v
    }

    public func int(_ key: String) throws(GGUFError) -> Int {
        let v = try value(key)
        guard let i = v.intValue else { throw .wrongValueType(key: key, expected: "an integer", found: v.type) }
        return i
    }

    public func double(_ key: String) throws(GGUFError) -> Double {
        let v = try value(key)
        guard let d = v.doubleValue else { throw .wrongValueType(key: key, expected: "a number", found: v.type) }
        return d
    }

    public func string(_ key: String) throws(GGUFError) -> String {
        let v = try value(key)
        guard let s = v.stringValue else { throw .wrongValueType(key: key, expected: "a string", found: v.type) }
        return s
    }

    public func bool(_ key: String) throws(GGUFError) -> Bool {
        let v = try value(key)
        guard let b = v.boolValue else { throw .wrongValueType(key: key, expected: "a bool", found: v.type) }
        return b
    }

    public func stringArray(_ key: String) throws(GGUFError) -> [String] {
        let v = try value(key)
        guard case let .array(type, values) = v, type == .string else {
            throw .wrongValueType(key: key, expected: "an array of strings", found: v.type)
        }
        return values.map { $0.stringValue ?? "" }
    }

    public func floatArray(_ key: String) throws(GGUFError) -> [Float] {
        let v = try value(key)
        guard case let .array(_, values) = v else { throw .wrongValueType(key: key, expected: "an array of numbers", found: v.type) }
        var out: [Float] = []
        out.reserveCapacity(values.count)
        for element in values {
            guard let x = element.doubleValue else { throw .wrongValueType(key: key, expected: "an array of numbers", found: .array) }
            out.append(Float(x))
        }
        return out
    }

    public func intArray(_ key: String) throws(GGUFError) -> [Int] {
        let v = try value(key)
        guard case let .array(_, values) = v else { throw .wrongValueType(key: key, expected: "an array of integers", found: v.type) }
        var out: [Int] = []
        out.reserveCapacity(values.count)
        for element in values {
            guard let i = element.intValue else { throw .wrongValueType(key: key, expected: "an array of integers", found: .array) }
            out.append(i)
        }
        return out
    }
}

/// Bounds-checked little-endian reads from the mapped header.
struct ByteReader {
    let base: UnsafeRawPointer
    let size: Int
    var position = 0

    init(base: UnsafeRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    mutating func need(_ count: Int, reading what: @autoclosure () -> String) throws(GGUFError) {
        if count < 0 || count > size - position {
            throw .truncated(reading: what(), offset: position, needed: count, fileSize: size)
        }
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, reading what: @autoclosure () -> String) throws(GGUFError) -> T {
        try need(MemoryLayout<T>.size, reading: what())
        let v = base.loadUnaligned(fromByteOffset: position, as: T.self)
        position += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func u32(reading what: @autoclosure () -> String) throws(GGUFError) -> UInt32 {
        try load(UInt32.self, reading: what())
    }

    mutating func u64(reading what: @autoclosure () -> String) throws(GGUFError) -> UInt64 {
        try load(UInt64.self, reading: what())
    }

    mutating func bytes(_ count: Int, reading what: @autoclosure () -> String) throws(GGUFError) -> [UInt8] {
        try need(count, reading: what())
        let buffer = UnsafeRawBufferPointer(start: base + position, count: count)
        position += count
        return Array(buffer)
    }

    mutating func stringBytes(reading what: @autoclosure () -> String) throws(GGUFError) -> UnsafeRawBufferPointer {
        let length = try u64(reading: "the length of \(what())")
        guard length <= UInt64(size - position) else {
            throw .truncated(reading: what(), offset: position, needed: Int(clamping: length), fileSize: size)
        }
        let buffer = UnsafeRawBufferPointer(start: base + position, count: Int(length))
        position += Int(length)
        return buffer
    }

    mutating func string(reading what: @autoclosure () -> String) throws(GGUFError) -> String {
        let bytes = try stringBytes(reading: what())
        return String(decoding: bytes, as: UTF8.self)
    }

    mutating func value(of type: GGUFValueType, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
        let what = "the value of '\(key)'"
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, reading: what))
        case .int8: return .int8(try load(Int8.self, reading: what))
        case .uint16: return .uint16(try load(UInt16.self, reading: what))
        case .int16: return .int16(try load(Int16.self, reading: what))
        case .uint32: return .uint32(try load(UInt32.self, reading: what))
        case .int32: return .int32(try load(Int32.self, reading: what))
        case .uint64: return .uint64(try load(UInt64.self, reading: what))
        case .int64: return .int64(try load(Int64.self, reading: what))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, reading: what)))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, reading: what)))
        case .bool:
            let b = try load(UInt8.self, reading: what)
            return .bool(b != 0)
        case .string: return .string(try string(reading: what))
        case .array:
            guard depth < GGUFFile.maxArrayNesting else { throw .nestingTooDeep(key: key) }
            let rawElement = try u32(reading: "the element type of '\(key)'")
            guard let elementType = GGUFValueType(rawValue: rawElement) else { throw .invalidValueType(key: key, rawType: rawElement) }
            let count = try u64(reading: "the length of '\(key)'")
            // Strings take at least 8 bytes, arrays at least 12: a count that cannot fit is corrupt.
            let minimum = elementType.fixedSize ?? (elementType == .string ? 8 : 12)
            guard count <= UInt64((size - position) / minimum) else {
                throw .truncated(reading: "the \(count) elements of '\(key)'", offset: position,
                                 needed: Int(clamping: count.multipliedReportingOverflow(by: UInt64(minimum)).partialValue), fileSize: size)
            }
            var values: [GGUFValue] = []
            values.reserveCapacity(Int(count))
            for _ in 0..<Int(count) {
                values.append(try value(of: elementType, key: key, depth: depth + 1))
            }
            return .array(elementType, values)
        }
    }
}
