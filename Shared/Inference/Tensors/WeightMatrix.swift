/// A matrix of weights: `rows` rows of `columns` values each, stored row
/// after row in `type`'s block layout. Most stay in place in the model file;
/// a few types are converted once at load into a layout the kernels read
/// faster (`storage` then owns the bytes).
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: GGMLType
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    public let rowBytes: Int
    /// The memory behind `data` when it is not the file's.
    let storage: AnyObject?

    public init(name: String, type: GGMLType, rows: Int, columns: Int, data: UnsafeRawPointer) {
        self.init(name: name, type: type, rows: rows, columns: columns, data: data, storage: nil)
    }

    init(name: String, type: GGMLType, rows: Int, columns: Int, data: UnsafeRawPointer, storage: AnyObject?) {
        self.name = name
        self.type = type
        self.rows = rows
        self.columns = columns
        self.data = data
        self.rowBytes = type.byteCount(values: columns) ?? 0
        self.storage = storage
    }

    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }

    /// This matrix as the kernels compute with it. Q5_0 becomes Q8_0: the
    /// same values (`d * (q - 16)` fits an 8-bit `q`), 12 more bytes per
    /// block, but no fifth bits to gather, so one-token decoding streams it at
    /// memory speed instead of being bound by instructions.
    public func forComputing() -> WeightMatrix {
        guard type == .q5_0 else { return self }
        let blocks = rows * columns / 32
        let buffer = AlignedBytes(count: blocks * 34)
        Repack.q5_0ToQ8_0(data, blocks: blocks, into: buffer.pointer)
        return WeightMatrix(name: name, type: .q8_0, rows: rows, columns: columns, data: UnsafeRawPointer(buffer.pointer), storage: buffer)
    }
}

/// Bytes owned by a weight matrix converted at load, 64-byte aligned.
final class AlignedBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer

    init(count: Int) {
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
    }

    deinit { pointer.deallocate() }
}
