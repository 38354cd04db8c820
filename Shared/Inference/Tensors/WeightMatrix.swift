/// A matrix of weights in place in the model file: `rows` rows of `columns`
/// values each, stored row after row in `type`'s block layout.
public struct WeightMatrix: @unchecked Sendable {
    public let name: String
    public let type: GGMLType
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    public let rowBytes: Int

    public init(name: String, type: GGMLType, rows: Int, columns: Int, data: UnsafeRawPointer) {
        self.name = name
        self.type = type
        self.rows = rows
        self.columns = columns
        self.data = data
        self.rowBytes = type.byteCount(values: columns) ?? 0
    }

    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }
}
