/// A matrix of weights: `rows` rows of `columns` values each, stored row
/// after row in `type`'s block layout, in place in the model file. A
/// quantised matrix is also repacked at load (`packed`) for the integer
/// kernels, which then compute with it; the file's copy is only read again to
/// look up a row.
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: GGMLType
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    public let rowBytes: Int
    /// The rows in groups of 16 for the integer kernels (quantised types).
    public let packed: PackedMatrix?

    public init(name: String, type: GGMLType, rows: Int, columns: Int, data: UnsafeRawPointer, packed: PackedMatrix? = nil) {
        self.name = name
        self.type = type
        self.rows = rows
        self.columns = columns
        self.data = data
        self.rowBytes = type.byteCount(values: columns) ?? 0
        self.packed = packed
    }

    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }

    /// This matrix with its packed copy, for a type the integer kernels take.
    public func packing() -> WeightMatrix {
        guard packed == nil, let p = PackedMatrix(type: type, rows: rows, columns: columns, source: data) else { return self }
        return WeightMatrix(name: name, type: type, rows: rows, columns: columns, data: data, packed: p)
    }

    /// Bytes the kernels read to multiply by the whole matrix once.
    public var computeBytes: Int { packed?.byteCount ?? rowBytes * rows }
}

/// Bytes owned by a matrix repacked at load, 64-byte aligned.
final class AlignedBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer

    init(count: Int) {
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
    }

    deinit { pointer.deallocate() }
}
