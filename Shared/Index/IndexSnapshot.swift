import Foundation

/// Saving and loading an HNSW graph as one binary file: a header, then the
/// vectors, levels, links and deletion flags as stored in memory, so loading is
/// a few large reads instead of rebuilding the graph.
extension HNSWIndex {
    static let magic: UInt32 = 0x4E57_4843 // "CHWN"
    static let formatVersion: UInt32 = 1

    public struct SnapshotError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Writes the graph to `path` atomically (a temporary file, fsync, rename).
    public func save(to path: String, userData: Data = Data()) throws {
        var out = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        u32(Self.magic); u32(Self.formatVersion)
        u64(UInt64(dimension)); u64(UInt64(m)); u64(UInt64(efConstruction)); u64(UInt64(count))
        u64(UInt64(bitPattern: Int64(entryPoint))); u64(UInt64(bitPattern: Int64(maxLevel))); u64(random)
        u64(UInt64(upperPoolCount)); u64(UInt64(userData.count))
        out.append(Data(bytes: vectors, count: count * dimension * 4))
        out.append(Data(bytes: links0, count: count * stride0 * 4))
        levels.withUnsafeBytes { out.append(contentsOf: $0) }
        upperOffset.map { Int64($0) }.withUnsafeBytes { out.append(contentsOf: $0) }
        out.append(Data(bytes: upperPool, count: upperPoolCount * 4))
        deleted.map { $0 ? UInt8(1) : 0 }.withUnsafeBytes { out.append(contentsOf: $0) }
        out.append(userData)
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: out) else {
            throw SnapshotError(description: "cannot write \(temporary)")
        }
        let fd = open(temporary, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        guard rename(temporary, path) == 0 else { throw SnapshotError(description: "cannot rename \(temporary) to \(path)") }
    }

    /// Loads a graph written by `save`, with its user data; checks every size.
    public static func load(from path: String) throws -> (HNSWIndex, Data) {
        guard let data = FileManager.default.contents(atPath: path) else { throw SnapshotError(description: "cannot read \(path)") }
        var offset = 0
        func take(_ n: Int) throws -> Data {
            guard n >= 0, offset + n <= data.count else {
                throw SnapshotError(description: "\(path) is truncated at byte \(offset) (needs \(n) more bytes, has \(data.count - offset))")
            }
            defer { offset += n }
            return data.subdata(in: offset..<(offset + n))
        }
        func u32() throws -> UInt32 { UInt32(littleEndian: try take(4).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }) }
        func u64() throws -> UInt64 { UInt64(littleEndian: try take(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }) }
        guard try u32() == magic else { throw SnapshotError(description: "\(path) is not an index snapshot") }
        let version = try u32()
        guard version == formatVersion else { throw SnapshotError(description: "\(path) has snapshot version \(version), expected \(formatVersion)") }
        let dimension = Int(try u64()), m = Int(try u64()), efc = Int(try u64()), count = Int(try u64())
        let entry = Int32(truncatingIfNeeded: Int64(bitPattern: try u64())), maxLevel = Int(Int64(bitPattern: try u64()))
        let random = try u64()
        let poolCount = Int(try u64()), userCount = Int(try u64())
        guard dimension > 0, dimension <= 65536, m >= 2, m <= 1024, count >= 0, count < 1 << 31, poolCount >= 0, userCount >= 0 else {
            throw SnapshotError(description: "\(path) has an invalid header")
        }
        let index = HNSWIndex(dimension: dimension, m: m, efConstruction: efc, capacity: max(count, 16), seed: random)
        index.random = random
        let vectorBytes = try take(count * dimension * 4)
        vectorBytes.withUnsafeBytes { if $0.count > 0 { _ = memcpy(index.vectors, $0.baseAddress!, $0.count) } }
        let linkBytes = try take(count * index.stride0 * 4)
        linkBytes.withUnsafeBytes { if $0.count > 0 { _ = memcpy(index.links0, $0.baseAddress!, $0.count) } }
        index.levels = Array(try take(count)).map { Int8(bitPattern: $0) }
        let offsets = try take(count * 8)
        index.upperOffset = offsets.withUnsafeBytes { raw in (0..<count).map { Int(raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) } }
        _ = index.reserveUpperLinks(0)
        if poolCount > index.upperPoolCapacity {
            index.upperPool.deallocate()
            index.upperPool = .allocate(capacity: poolCount)
            index.upperPoolCapacity = poolCount
        }
        let pool = try take(poolCount * 4)
        pool.withUnsafeBytes { if $0.count > 0 { _ = memcpy(index.upperPool, $0.baseAddress!, $0.count) } }
        index.upperPoolCount = poolCount
        index.deleted = Array(try take(count)).map { $0 != 0 }
        let user = try take(userCount)
        // Every link and offset must point inside the graph.
        for i in 0..<count {
            let level = Int(index.levels[i])
            let links = index.links0 + i * index.stride0
            guard level >= 0, links[0] >= 0, Int(links[0]) <= index.m0,
                  (1...Int(links[0])).allSatisfy({ links[$0] >= 0 && Int(links[$0]) < count }) || links[0] == 0,
                  level == 0 || (index.upperOffset[i] >= 0 && index.upperOffset[i] + level * (m + 1) <= poolCount) else {
                throw SnapshotError(description: "\(path) is corrupt at node \(i)")
            }
        }
        index.count = count
        index.encodeAll()
        index.deletedCount = index.deleted.filter { $0 }.count
        index.entryPoint = count > 0 ? entry : -1
        index.maxLevel = count > 0 ? maxLevel : -1
        index.resetVisited()
        return (index, user)
    }
}
