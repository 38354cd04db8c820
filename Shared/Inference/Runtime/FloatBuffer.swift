#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A zero-filled f32 buffer.
public typealias FloatBuffer = AlignedBuffer<Float>

/// A zero-filled buffer of plain values (f32, f16), 64-byte aligned, owned by its creator. Large
/// buffers come from an anonymous mapping, so pages cost memory only once
/// they are written (a KV cache sized for the full context stays small
/// until a long conversation fills it).
public final class AlignedBuffer<Element: BitwiseCopyable>: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Element>
    public let count: Int
    private let mappedBytes: Int

    public init(count: Int) {
        self.count = max(count, 1)
        let bytes = self.count * MemoryLayout<Element>.size
        if bytes >= 1 << 20 {
            let size = (bytes + 4095) & ~4095
            let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            guard let p, p != MAP_FAILED else { fatalError("out of memory allocating \(bytes) bytes") }
            pointer = p.bindMemory(to: Element.self, capacity: self.count)
            mappedBytes = size
        } else {
            var raw: UnsafeMutableRawPointer?
            guard posix_memalign(&raw, 64, bytes) == 0, let raw else { fatalError("out of memory allocating \(bytes) bytes") }
            memset(raw, 0, bytes)
            pointer = raw.bindMemory(to: Element.self, capacity: self.count)
            mappedBytes = 0
        }
    }

    deinit {
        if mappedBytes > 0 { munmap(pointer, mappedBytes) } else { free(pointer) }
    }

    public subscript(i: Int) -> Element {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
}
