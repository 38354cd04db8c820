import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Protocol
import ServiceKit

func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
    let encoder = JSONCoding.encoder()
    let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
    var h = headers
    h[.contentType] = "application/json"
    return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// A server-sent event stream; a client that leaves ends it quietly.
func sse(headers: HTTPFields = [:], _ write: @escaping @Sendable (inout SSEWriter) async throws -> Void) -> Response {
    var h = headers
    h[.contentType] = "text/event-stream"
    h[.cacheControl] = "no-cache"
    return Response(status: .ok, headers: h, body: ResponseBody { writer in
        var w = SSEWriter(writer: writer)
        do { try await write(&w) } catch {
            Log.debug("an event stream ended early: \(error)")
            return
        }
        try await w.writer.finish(nil)
    })
}

/// The elements of `stream`, with a `nil` each time `interval` passes (a
/// keep-alive for the stream's reader), ending when `stream` ends or the
/// reader leaves. Without an interval, the elements alone.
func pinging<T: Sendable>(_ stream: AsyncStream<T>, every interval: Duration?) -> AsyncStream<T?> {
    let (out, feed) = AsyncStream<T?>.makeStream()
    let task = Task {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await element in stream { feed.yield(element) }
            }
            if let interval {
                group.addTask {
                    while (try? await Task.sleep(for: interval)) != nil { feed.yield(nil) }
                }
            }
            await group.next()
            group.cancelAll()
        }
        feed.finish()
    }
    feed.onTermination = { _ in task.cancel() }
    return out
}

struct SSEWriter {
    var writer: any ResponseBodyWriter
    mutating func write(_ text: String) async throws { try await writer.write(ByteBuffer(string: text)) }
}

final class IteratorBox<I: AsyncIteratorProtocol>: @unchecked Sendable {
    var iterator: I
    init(_ iterator: I) { self.iterator = iterator }
    func next() async -> I.Element? { try? await iterator.next() }
}

extension HTTPField.Name {
    static let chorusJob = HTTPField.Name("X-Chorus-Job")!
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let shouldRetry = HTTPField.Name("x-should-retry")!
}
