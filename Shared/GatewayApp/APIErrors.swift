import Client
import Foundation
import HTTPTypes
import Hummingbird
import OpenAI
import Protocol

/// What goes wrong, as OpenAI-style errors: the broker's error codes mapped
/// to HTTP statuses, and a body that is not what was asked for described.
enum APIErrors {
    static func apiError(_ error: Error) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as ClientError:
            switch e {
            case .noReply: return APIError(status: 503, message: "\(e)", code: "broker_unavailable")
            case .refused: return APIError(status: 503, message: "the broker refused the gateway: \(e)", code: "broker_refused", retryable: false)
            case let .unexpected(m): return APIError(status: 502, message: m, code: "bad_gateway")
            case let .remote(body):
                let m = body.message
                switch body.code {
                case .notFound: return APIError(status: 404, message: m, code: "not_found")
                case .unknownRole: return APIError(status: 404, message: m, code: "model_not_found", param: "model")
                case .noWorker: return APIError(status: 503, message: m, code: "no_worker")
                case .busy: return APIError(status: 429, message: m, code: "busy")
                case .tooLarge: return APIError(status: 413, message: m, code: "request_too_large")
                case .conflict: return APIError(status: 422, message: m, code: "idempotency_key_reused", retryable: false)
                case .contextLengthExceeded: return APIError(status: 400, message: m, code: "context_length_exceeded", param: "messages")
                case .badRequest, .malformed: return APIError(status: 400, message: m, code: "invalid_request")
                case .workerFailed: return APIError(status: 502, message: m, code: "worker_failed", retryable: false)
                case .cancelled: return APIError(status: 409, message: m, code: "cancelled", retryable: false)
                case .unauthorized: return APIError(status: 503, message: "the broker refused the gateway: \(m)", code: "broker_refused", retryable: false)
                default: return APIError(status: 502, message: m, code: body.code.rawValue)
                }
            }
        default: return APIError(status: 500, message: "\(error)", code: "internal_error")
        }
    }

    static func describe(_ e: DecodingError) -> String {
        switch e {
        case let .keyNotFound(key, _): return "'\(key.stringValue)' is required"
        case let .typeMismatch(_, c), let .valueNotFound(_, c), let .dataCorrupted(c):
            let at = c.codingPath.map(\.stringValue).joined(separator: ".")
            return at.isEmpty ? "not valid JSON" : "'\(at)' is not valid: \(c.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}

func errorResponse(_ e: APIError) -> Response {
    var headers: HTTPFields = [.shouldRetry: e.retryable ? "true" : "false"]
    if e.status == 401 { headers[.wwwAuthenticate] = "Bearer" }
    // Busy (the broker's job or request limits): when to try again.
    if e.status == 429 { headers[.retryAfter] = "1" }
    return json(e.body, status: HTTPResponse.Status(code: e.status), headers: headers)
}
