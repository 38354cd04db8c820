#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file. Model weights are used in place
/// from the mapping and never copied into the heap, so several processes that
/// load the same model share its pages.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int

    public init(path: String) throws(MappedFileError) {
        self.path = path
        let fd = open(path, O_RDONLY)
        if fd < 0 { throw .cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) != 0 { throw .cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        if (info.st_mode & S_IFMT) != S_IFREG { throw .cannotOpen(path: path, reason: "not a regular file") }
        let size = Int(info.st_size)
        if size == 0 { throw .empty(path: path) }
        guard let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapping != MAP_FAILED else {
            throw .cannotMap(path: path, reason: String(cString: strerror(errno)))
        }
        self.base = UnsafeRawPointer(mapping)
        self.size = size
    }

    /// Asks the kernel to read the mapping ahead, which speeds up the first pass over the weights.
    public func adviseSequential() {
        _ = madvise(UnsafeMutableRawPointer(mutating: base), size, MADV_WILLNEED)
    }

    /// Gives back the pages wholly inside `offset ..< offset + length`: a tensor
    /// converted at load is not read again (the kernel rereads the file should
    /// anything touch them).
    public func discard(offset: Int, length: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (offset + page - 1) / page * page, end = (offset + length) / page * page
        guard start < end, end <= size else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), size)
    }
}

public enum MappedFileError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case cannotMap(path: String, reason: String)
    case empty(path: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "cannot open \(path): \(reason)"
        case let .cannotMap(path, reason): return "cannot memory-map \(path): \(reason)"
        case let .empty(path): return "\(path) is empty"
        }
    }
}
