// Protocol: the wire protocol of docs/PROTOCOL.md — header frames, envelopes
// and their bodies, jobs and their records, stage payloads and results,
// events, and the typed names that travel as strings (roles, worker states,
// verdicts). It must not open a socket or a file.

import Foundation

/// The wire protocol of docs/PROTOCOL.md: a header frame and a JSON body frame.
public enum BusProtocol {
    public static let version = "CHORUS/1"
    public static let maxHeaderBytes = 64
    /// Default limit of a body; the broker's `max_body_bytes` can change it.
    public static let defaultMaxBodyBytes = 1 << 20
    /// Above this libzmq disconnects the sender (ZMQ_MAXMSGSIZE).
    public static let transportLimitBytes: Int64 = 16 << 20

    /// Roles the broker knows unless configured otherwise.
    public static let defaultRoles = Role.defaults.map(\.rawValue)

    /// Whether `name` is a syntactically valid role name.
    public static func isValidRoleName(_ name: String) -> Bool { isValidRoleName(bytes: name.utf8) }

    /// The same check on the name's bytes: 1 to 32 of a-z, 0-9 and '-', starting with a letter.
    public static func isValidRoleName<Bytes: Collection>(bytes: Bytes) -> Bool where Bytes.Element == UInt8 {
        guard let first = bytes.first, first >= 97 && first <= 122, bytes.count <= 32 else { return false }
        return bytes.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 }
    }
}

public enum Command: String, Sendable, CaseIterable {
    case submit = "SUBMIT"
    case request = "REQUEST"
    case status = "STATUS"
    case result = "RESULT"
    case accepted = "ACCEPTED"
    case partial = "PARTIAL"
    case final = "FINAL"
    case error = "ERROR"
    case ready = "READY"
    case heartbeat = "HEARTBEAT"
    case disconnect = "DISCONNECT"
    case event = "EVENT"
    /// Client to broker: cancel a job, or one of the client's own requests; broker to worker: stop a request.
    case cancel = "CANCEL"

    /// Whether the header must name a role.
    public var takesRole: Bool { self == .request || self == .ready }
}

/// Error codes carried in ERROR bodies.
public enum ErrorCode: String, Codable, Sendable {
    case malformed
    case unsupportedVersion = "unsupported_version"
    case unknownCommand = "unknown_command"
    case unknownRole = "unknown_role"
    case tooLarge = "too_large"
    case noWorker = "no_worker"
    case notFound = "not_found"
    case workerFailed = "worker_failed"
    case badRequest = "bad_request"
    /// The broker holds as many unfinished jobs as it may (CHORUS_MAX_QUEUED_JOBS): try again later.
    case busy
    /// The sender's key may not send this command (CURVE allow-lists).
    case unauthorized
    /// The request was cancelled (its job was).
    case cancelled
    /// An idempotency key sent again with another job, or a request id this
    /// client already has in flight.
    case conflict
    /// The prompt does not fit in the model's context.
    case contextLengthExceeded = "context_length_exceeded"
    case internalError = "internal"
}

/// A message that does not follow the protocol.
public struct ProtocolError: Error, CustomStringConvertible, Equatable, Sendable {
    public let code: ErrorCode
    public let message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// The first frame of every message.
public struct Header: Equatable, Sendable {
    public let command: Command
    public let role: String?

    public init(_ command: Command, role: String? = nil) {
        self.command = command
        self.role = role
    }

    public var frame: Data {
        if role == nil, let cached = Self.roleless[command] { return cached }
        return Data(([BusProtocol.version, command.rawValue] + (role.map { [$0] } ?? [])).joined(separator: " ").utf8)
    }

    /// The frames of the commands that take no role, built once.
    private static let roleless: [Command: Data] = Dictionary(uniqueKeysWithValues: Command.allCases.filter { !$0.takesRole }.map {
        ($0, Data((BusProtocol.version + " " + $0.rawValue).utf8))
    })

    /// The commands' names as bytes, for matching a header without building strings.
    private static let commandBytes: [(Command, [UInt8])] = Command.allCases.map { ($0, Array($0.rawValue.utf8)) }
    private static let versionBytes = Array(BusProtocol.version.utf8)

    /// Parses and validates a header frame.
    public static func parse(_ frame: Data) throws(ProtocolError) -> Header {
        if let header = parseValid(frame) { return header }
        return try parseReportingErrors(frame)
    }

    /// A well-formed header read byte by byte, or nil for anything else (which
    /// `parseReportingErrors` then explains): this runs for every message.
    public static func parseValid(_ frame: Data) -> Header? {
        frame.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> Header? in
            let n = bytes.count, space = UInt8(ascii: " ")
            let v = versionBytes.count
            guard n > v + 1, n <= BusProtocol.maxHeaderBytes, bytes[v] == space else { return nil }
            for i in 0..<v where bytes[i] != versionBytes[i] { return nil }
            var end = v + 1
            while end < n && bytes[end] != space { end += 1 }
            let name = UnsafeRawBufferPointer(rebasing: bytes[(v + 1)..<end])
            guard let command = commandBytes.first(where: { $0.1.elementsEqual(name) })?.0 else { return nil }
            guard command.takesRole else { return end == n ? Header(command) : nil }
            guard end < n else { return nil }
            let role = UnsafeRawBufferPointer(rebasing: bytes[(end + 1)...])
            guard BusProtocol.isValidRoleName(bytes: role) else { return nil }
            return Header(command, role: String(decoding: role, as: UTF8.self))
        }
    }

    /// Parses a header the slow way, saying what is wrong with it.
    public static func parseReportingErrors(_ frame: Data) throws(ProtocolError) -> Header {
        guard frame.count <= BusProtocol.maxHeaderBytes else {
            throw ProtocolError(.malformed, "header frame of \(frame.count) bytes (at most \(BusProtocol.maxHeaderBytes))")
        }
        guard let text = String(data: frame, encoding: .ascii), !text.isEmpty else {
            throw ProtocolError(.malformed, "header frame is not ASCII text")
        }
        let parts = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, parts.count <= 3, !parts.contains(where: \.isEmpty) else {
            throw ProtocolError(.malformed, "header '\(text)' is not 'CHORUS/1 COMMAND [role]'")
        }
        guard parts[0] == BusProtocol.version else {
            if parts[0].hasPrefix("CHORUS/") {
                throw ProtocolError(.unsupportedVersion, "protocol version '\(parts[0])' is not supported (this peer speaks \(BusProtocol.version))")
            }
            throw ProtocolError(.malformed, "header '\(text)' does not start with \(BusProtocol.version)")
        }
        guard let command = Command(rawValue: parts[1]) else {
            throw ProtocolError(.unknownCommand, "unknown command '\(parts[1])'")
        }
        if command.takesRole {
            guard parts.count == 3 else { throw ProtocolError(.malformed, "\(command.rawValue) needs a role in its header") }
            guard BusProtocol.isValidRoleName(parts[2]) else {
                throw ProtocolError(.unknownRole, "'\(parts[2])' is not a valid role name")
            }
            return Header(command, role: parts[2])
        }
        guard parts.count == 2 else { throw ProtocolError(.malformed, "\(command.rawValue) takes no role") }
        return Header(command)
    }
}

/// A validated message: its header and its body (a JSON object).
public struct Envelope: Sendable {
    public let header: Header
    public let body: Data
    /// Where the body's top-level fields are (received envelopes only).
    public let fields: JSONObjectScan?

    public init(header: Header, body: Data) {
        self.header = header
        self.body = body
        fields = nil
    }

    /// Validates frames received from a peer (identity frames already removed).
    public init(frames: [Data], maxBodyBytes: Int = BusProtocol.defaultMaxBodyBytes) throws(ProtocolError) {
        try self.init(frames: frames[...], maxBodyBytes: maxBodyBytes)
    }

    /// Validates the frames after a ROUTER's identity frame, without copying them out.
    public init(frames: ArraySlice<Data>, maxBodyBytes: Int = BusProtocol.defaultMaxBodyBytes) throws(ProtocolError) {
        guard frames.count == 2 else {
            throw ProtocolError(.malformed, "expected 2 frames (header, body), got \(frames.count)")
        }
        header = try Header.parse(frames[frames.startIndex])
        let body = frames[frames.startIndex + 1]
        guard body.count <= maxBodyBytes else {
            throw ProtocolError(.tooLarge, "body of \(body.count) bytes is over the limit of \(maxBodyBytes) bytes")
        }
        // Every body is checked in full (one pass, nothing built); routing
        // fields are then read from the scan, the rest decoded only where needed.
        do { fields = try JSONObjectScan(body) } catch {
            throw ProtocolError(.malformed, "body is not a JSON object: \(error)")
        }
        self.body = body
    }

    /// A string field the command needs.
    public func requiredString(_ key: String) throws(ProtocolError) -> String {
        try require(key)
        guard let s = fields?.string(key) else { throw wrongType(key) }
        return s
    }

    /// A number field the command may have.
    public func optionalNumber(_ key: String) throws(ProtocolError) -> Double? {
        guard let f = fields, f.has(key), f.kind(key) != .null else { return nil }
        guard let d = f.number(key) else { throw wrongType(key) }
        return d
    }

    /// Checks the body has `key` (any value).
    public func require(_ key: String) throws(ProtocolError) {
        guard fields?.has(key) == true else { throw ProtocolError(.malformed, "\(header.command.rawValue) body lacks '\(key)'") }
    }

    func wrongType(_ key: String) -> ProtocolError {
        ProtocolError(.malformed, "\(header.command.rawValue) body has a wrong type at '\(key)'")
    }

    /// Decodes the body as `T`, or explains which field is wrong.
    public func decode<T: Decodable>(_ type: T.Type) throws(ProtocolError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: body)
        } catch let DecodingError.keyNotFound(key, _) {
            throw ProtocolError(.malformed, "\(header.command.rawValue) body lacks '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, context) {
            throw ProtocolError(.malformed, "\(header.command.rawValue) body has a wrong type at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'")
        } catch let DecodingError.valueNotFound(_, context) {
            throw ProtocolError(.malformed, "\(header.command.rawValue) body has null at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'")
        } catch {
            throw ProtocolError(.malformed, "\(header.command.rawValue) body is invalid: \(error)")
        }
    }

    /// The frames of a message with `body` encoded as JSON.
    public static func frames<T: Encodable>(_ command: Command, role: String? = nil, _ body: T) -> [Data] {
        let encoder = JSONCoding.encoder()
        let data = (try? encoder.encode(body)) ?? Data("{}".utf8)
        return [Header(command, role: role).frame, data]
    }

    /// The frames of a message with an empty body.
    public static func frames(_ command: Command, role: String? = nil) -> [Data] {
        [Header(command, role: role).frame, Data("{}".utf8)]
    }
}
