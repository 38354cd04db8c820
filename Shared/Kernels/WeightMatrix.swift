#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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

    /// This matrix with its packed copy, for a type the integer kernels take
    /// (`progress`: see `PackedMatrix.init`).
    public func packing(progress: ((Int) -> Void)? = nil) -> WeightMatrix {
        guard packed == nil, let p = PackedMatrix(type: type, rows: rows, columns: columns, source: data, progress: progress) else { return self }
        return WeightMatrix(name: name, type: type, rows: rows, columns: columns, data: data, packed: p)
    }

    /// Bytes the kernels read to multiply by the whole matrix once.
    public var computeBytes: Int { packed?.byteCount ?? rowBytes * rows }
}

/// Bytes owned by a matrix repacked at load, 64-byte aligned. Large ones
/// come from an anonymous mapping aligned to 2 MiB and asked to be backed by
/// huge pages: the kernels stream through them, and with 4 KiB pages every
/// 64 cache lines would cost a TLB miss.
final class AlignedBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    private let mapping: (base: UnsafeMutableRawPointer, size: Int)?

    static let hugePage = 2 << 20

    init(count: Int) {
        let count = max(count, 1)
        if count >= Self.hugePage {
            // Map one huge page more than needed, keep the part that starts on a
            // huge-page boundary and give back the rest. The last partial huge
            // page stays in small pages, so no memory is wasted on it.
            let length = (count + 4095) / 4096 * 4096
            let size = length + Self.hugePage
            let raw = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            guard let raw, raw != MAP_FAILED else { fatalError("out of memory allocating \(count) bytes") }
            let start = Int(bitPattern: raw)
            let aligned = (start + Self.hugePage - 1) / Self.hugePage * Self.hugePage
            let head = aligned - start, tail = size - head - length
            if head > 0 { munmap(raw, head) }
            if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: aligned + length)!, tail) }
            pointer = UnsafeMutableRawPointer(bitPattern: aligned)!
            #if os(Linux)
            _ = madvise(pointer, length, MADV_HUGEPAGE)
            #endif
            mapping = (pointer, length)
        } else {
            pointer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64)
            mapping = nil
        }
    }

    deinit {
        if let mapping { munmap(mapping.base, mapping.size) } else { pointer.deallocate() }
    }
}
