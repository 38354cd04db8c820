import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An HTTP/1.1 client that sends exactly the bytes it is given (paths that
/// other clients would clean up, any Host or Origin header), for tests of
/// what a server does with hostile requests. One request per connection.
public struct RawHTTP: Sendable {
    public struct Response: CustomStringConvertible, Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: String
        public var description: String { "\(status) \(body.prefix(300))" }
        public func header(_ name: String) -> String? { headers[name.lowercased()] }
    }

    public let host: String
    public let port: Int

    public init(host: String = "127.0.0.1", port: Int) {
        self.host = host
        self.port = port
    }

    /// Sends `method path` with `headers` (Host defaults to host:port,
    /// Content-Length is added for a body) and reads the answer until the
    /// server closes, or for at most `timeout` seconds (what came by then, for
    /// a stream that stays open).
    public func send(_ method: String, _ path: String, headers: [(String, String)] = [], body: Data = Data(),
                     timeout: Double = 10) throws -> Response {
        var lines = ["\(method) \(path) HTTP/1.1"]
        if !headers.contains(where: { $0.0.lowercased() == "host" }) { lines.append("Host: \(host):\(port)") }
        for (k, v) in headers { lines.append("\(k): \(v)") }
        if !body.isEmpty || method == "POST" { lines.append("Content-Length: \(body.count)") }
        lines.append("Connection: close")
        let request = Data((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8) + body
        return try exchange(request, timeout: timeout)
    }

    /// Sends `bytes` as they are and parses what comes back.
    public func exchange(_ bytes: Data, timeout: Double = 10) throws -> Response {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestKitError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { throw TestKitError("connect to \(host):\(port): \(String(cString: strerror(errno)))") }
        var sent = 0
        try bytes.withUnsafeBytes { raw in
            while sent < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    // A server may answer (413, say) and close before reading everything.
                    if errno == EPIPE || errno == ECONNRESET { return }
                    throw TestKitError("send: \(String(cString: strerror(errno)))")
                }
                sent += n
            }
        }
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, Int32(max(1, min(200, deadline.timeIntervalSinceNow * 1000))))
            if ready <= 0 { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            received.append(contentsOf: buffer[0..<n])
        }
        return try Self.parse(received)
    }

    static func parse(_ data: Data) throws -> Response {
        guard let split = data.range(of: Data("\r\n\r\n".utf8)) else {
            throw TestKitError("no HTTP response head in \(data.count) bytes: \(String(decoding: data.prefix(200), as: UTF8.self))")
        }
        let head = String(decoding: data[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw TestKitError("bad status line: \(head[0])") }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(data[split.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { body = dechunk(body) }
        return Response(status: status, headers: headers, body: String(decoding: body, as: UTF8.self))
    }

    /// The payload of a chunked body (as much as arrived).
    static func dechunk(_ data: Data) -> Data {
        var out = Data(), rest = data[...]
        while let lineEnd = rest.range(of: Data("\r\n".utf8)) {
            guard let size = Int(String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";")[0], radix: 16),
                  size > 0 else { break }
            let start = lineEnd.upperBound
            let end = rest.index(start, offsetBy: size, limitedBy: rest.endIndex) ?? rest.endIndex
            out.append(rest[start..<end])
            guard end < rest.endIndex else { break }
            rest = rest[min(rest.endIndex, rest.index(end, offsetBy: 2, limitedBy: rest.endIndex) ?? rest.endIndex)...]
        }
        return out
    }
}
