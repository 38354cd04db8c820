import Foundation

/// Reads the texmex vector formats ANN benchmarks use: each record an int32
/// dimension, then that many float32 (`.fvecs`) or int32 (`.ivecs`) values.
public enum Texmex {
    public struct FormatError: Error, CustomStringConvertible {
        public let description: String
    }

    /// All records of a file as one flat array, with the dimension.
    public static func read<T>(_ path: String, as _: T.Type) throws -> (values: [T], dimension: Int, count: Int) {
        guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(description: "cannot read \(path)") }
        guard data.count >= 4 else { throw FormatError(description: "\(path) is empty") }
        let dimension = Int(data.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) })
        let record = 4 + dimension * 4
        guard dimension > 0, data.count % record == 0 else {
            throw FormatError(description: "\(path): \(data.count) bytes is not a whole number of \(dimension)-dimensional records")
        }
        let count = data.count / record
        var values: [T] = []
        values.reserveCapacity(count * dimension)
        data.withUnsafeBytes { raw in
            for r in 0..<count {
                for i in 0..<dimension { values.append(raw.loadUnaligned(fromByteOffset: r * record + 4 + 4 * i, as: T.self)) }
            }
        }
        return (values, dimension, count)
    }
}
