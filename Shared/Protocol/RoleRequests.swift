import Foundation

// What a role's handler answers a request it cannot serve, and how it reads
// a typed request from a payload: shared by the role workers and the
// services whose logic lives in libraries (the memory).

/// A request the handler cannot serve, with a message for the requester and
/// the code its ERROR carries: `bad_request` for a payload that is wrong
/// (sending it again cannot help), `not_found` for something it names that
/// does not exist, `worker_failed` (the default) for anything else.
public struct HandlerError: Error, CustomStringConvertible {
    public let description: String
    public let code: ErrorCode
    public init(_ description: String, code: ErrorCode = .workerFailed) {
        self.description = description
        self.code = code
    }

    /// The ERROR body that reports `error` as the answer to `requestID`.
    public static func body(_ error: Error, requestID: String) -> ErrorBody {
        ErrorBody(requestID: requestID, code: (error as? HandlerError)?.code ?? .workerFailed, message: String(describing: error))
    }
}

/// Decodes a role's typed request from a payload `{"op": ..., ...}`, with
/// errors (`bad_request`) that name what is missing or wrong.
public func decodeOpRequest<Request: Decodable, Op: RawRepresentable & CaseIterable>(
    _ payload: RawJSON, as: Request.Type, ops: Op.Type
) throws -> Request where Op.RawValue == String {
    // The op is read from a scan (nothing built), the request decoded once.
    guard let fields = try? JSONObjectScan(payload.bytes) else {
        throw HandlerError("the payload must be a JSON object with an 'op'", code: .badRequest)
    }
    guard fields.has("op") else { throw HandlerError("the payload needs an 'op'", code: .badRequest) }
    let known = Op.allCases.map(\.rawValue)
    guard let name = fields.string("op"), known.contains(name) else {
        let shown = fields.string("op").map { "'\($0.prefix(64))'" } ?? fields.raw("op").map { String(decoding: $0.prefix(64), as: UTF8.self) } ?? ""
        throw HandlerError("unknown op \(shown) (\(known.joined(separator: ", ")))", code: .badRequest)
    }
    do { return try payload.decode(Request.self) } catch let error as DecodingError {
        throw HandlerError("bad \(name) request: \(readable(error))", code: .badRequest)
    }
}

/// A decoding error as a short sentence naming the field.
public func readable(_ error: DecodingError) -> String {
    func path(_ keys: [CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
    switch error {
    case let .keyNotFound(key, context): return "'\(path(context.codingPath + [key]))' is missing"
    case let .typeMismatch(type, context): return "'\(path(context.codingPath))' must be \(describe(type))"
    case let .valueNotFound(type, context): return "'\(path(context.codingPath))' must be \(describe(type)), not null"
    case let .dataCorrupted(context):
        return context.codingPath.isEmpty ? context.debugDescription : "'\(path(context.codingPath))': \(context.debugDescription)"
    @unknown default: return "\(error)"
    }
}

private func describe(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: return "a string"
    case is Int.Type, is UInt64.Type: return "an integer"
    case is Double.Type, is Float.Type: return "a number"
    case is Bool.Type: return "true or false"
    case is [Double].Type: return "an array of numbers"
    default: return "\(type)".hasPrefix("Array") ? "an array" : "an object"
    }
}
