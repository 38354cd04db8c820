import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP port kept for one use: bound (with SO_REUSEADDR, not
/// listening) from the kernel's free ports, so no other program gets it
/// while a test starts the server meant for it; a server binding it with
/// SO_REUSEADDR, as ZeroMQ and the gateway do, still can. Released when
/// `release()` is called or the reservation goes away.
public final class PortReservation {
    public let port: Int
    private var fd: Int32

    public init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestKitError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        do { port = try bindLoopback(fd, port: 0) } catch { close(fd); throw error }
    }

    /// Lets the port go (call once the server that uses it is listening).
    public func release() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    deinit { release() }
}

/// A socket listening on a loopback port, standing for another program that
/// holds it; closed when it goes away.
public final class ListeningSocket {
    public let port: Int
    private let fd: Int32

    public init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestKitError("socket: \(String(cString: strerror(errno)))") }
        do {
            port = try bindLoopback(fd, port: 0)
            guard listen(fd, 1) == 0 else { throw TestKitError("listen on 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }
}

/// Binds `fd` to 127.0.0.1:`port` (0: the kernel's choice) and returns the port bound.
private func bindLoopback(_ fd: Int32, port: Int) throws -> Int {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw TestKitError("bind 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: address.sin_port))
}
