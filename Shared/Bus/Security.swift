import CZeroMQ
import Foundation

// CURVE authentication: a ZAP handler (ZeroMQ RFC 27) that decides which
// client keys a CURVE server admits, the user id it gives them (readable on
// every message they send), and a monitor that tells a client its key was
// refused.

extension BusSocket {
    /// The ZAP domain this server socket's connections are authenticated in.
    public func setZAPDomain(_ domain: String) throws(BusError) { try setOption(ZMQ_ZAP_DOMAIN, domain) }

    /// Receives one multipart message if one is waiting, with the user id the
    /// ZAP handler gave its sender (nil without CURVE and ZAP).
    public func receiveNowWithUserID() throws(BusError) -> (frames: [Data], userID: String?)? {
        var frames: [Data] = []
        var userID: String?
        frames.reserveCapacity(4)
        while true {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            if zmq_msg_recv(&message, handle, frames.isEmpty ? ZMQ_DONTWAIT : 0) < 0 {
                let code = zmq_errno()
                if code == EAGAIN && frames.isEmpty { return nil }
                throw BusError("receive", code: code)
            }
            if userID == nil, let p = zmq_msg_gets(&message, "User-Id") { userID = String(cString: p) }
            frames.append(Data(bytes: zmq_msg_data(&message), count: zmq_msg_size(&message)))
            if zmq_msg_more(&message) == 0 { return (frames, userID) }
        }
    }

    /// Makes this socket a CURVE client of the server with `serverKey`, and
    /// watches its handshakes (call before connecting).
    public func makeMonitoredCurveClient(serverKey: String, keys: CurveKeyPair) throws(BusError) -> AuthMonitor {
        try makeCurveClient(serverKey: serverKey, keys: keys)
        return try monitorHandshakes()
    }

    /// Watches this (client) socket's handshakes: `AuthMonitor.refusal` then
    /// says whether the server refused its key. Call before connecting.
    public func monitorHandshakes() throws(BusError) -> AuthMonitor {
        let endpoint = "inproc://monitor-\(UUID().uuidString)"
        let events = ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
            | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
        if zmq_socket_monitor(handle, endpoint, Int32(events)) != 0 { throw BusError("zmq_socket_monitor") }
        let pair = try BusSocket(context, .pair)
        try pair.connect(endpoint)
        return AuthMonitor(socket: pair)
    }
}

/// What a client socket's handshakes came to (see `BusSocket.monitorHandshakes`).
public final class AuthMonitor: @unchecked Sendable {
    let socket: BusSocket
    /// The last handshake's failure, if the last one failed.
    public private(set) var refusal: String?
    /// Whether a handshake has succeeded since the last failure.
    public private(set) var authenticated = false

    init(socket: BusSocket) { self.socket = socket }

    /// Reads the events that have arrived; returns the current refusal.
    @discardableResult
    public func update() -> String? {
        while let frames = try? socket.receiveNow(), let first = frames.first, first.count >= 6 {
            let event = first.withUnsafeBytes { UInt16(littleEndian: $0.loadUnaligned(as: UInt16.self)) }
            let value = first.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 2, as: UInt32.self)) }
            switch Int32(event) {
            case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
                refusal = nil
                authenticated = true
            case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
                refusal = "the broker refused this key (status \(value))"
                authenticated = false
            case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                refusal = "the CURVE handshake with the broker failed (is CHORUS_CURVE_SERVER_KEY the broker's public key?)"
                authenticated = false
            default: break
            }
        }
        return refusal
    }
}

/// One ZAP request: a peer asking to be admitted.
public struct ZAPRequest: Sendable {
    public let domain: String
    public let address: String
    public let mechanism: String
    /// The peer's CURVE public key, Z85-encoded (empty for other mechanisms).
    public let publicKey: String
}

public enum ZAPDecision: Sendable, Equatable {
    /// Admit the peer; its messages carry `userID`.
    case allow(userID: String)
    case deny(reason: String)
}

/// The ZAP handler of a context: bound at `inproc://zeromq.zap.01` before the
/// context's CURVE servers accept connections, it answers each handshake
/// with the decision of `decide`. Poll `socket` and call `handlePending`.
public final class ZAPHandler {
    public let socket: BusSocket

    public init(_ context: BusContext) throws(BusError) {
        socket = try BusSocket(context, .router)
        try socket.bind("inproc://zeromq.zap.01")
    }

    /// Answers every waiting request; returns how many it answered.
    @discardableResult
    public func handlePending(_ decide: (ZAPRequest) -> ZAPDecision) throws(BusError) -> Int {
        var handled = 0
        while let frames = try socket.receiveNow() {
            handled += 1
            // identity, empty delimiter, version, request id, domain, address,
            // routing id, mechanism, credentials...
            guard frames.count >= 8, frames[1].isEmpty else { continue }
            let text = { (i: Int) in String(decoding: frames[i], as: UTF8.self) }
            let version = text(2), requestID = frames[3]
            var status = "400", statusText = "unsupported ZAP version", userID = ""
            if version == "1.0" {
                let key = frames.count > 8 && frames[8].count == 32 ? z85Encode(frames[8]) : ""
                switch decide(ZAPRequest(domain: text(4), address: text(5), mechanism: text(7), publicKey: key)) {
                case let .allow(id): (status, statusText, userID) = ("200", "OK", id)
                case let .deny(reason): (status, statusText) = ("400", reason)
                }
            }
            try socket.send(to: frames[0], [Data(), Data("1.0".utf8), requestID, Data(status.utf8), Data(statusText.utf8),
                                            Data(userID.utf8), Data()])
        }
        return handled
    }
}

/// Z85 encoding of 32 bytes (a CURVE key).
public func z85Encode(_ bytes: Data) -> String {
    var out = [CChar](repeating: 0, count: bytes.count * 5 / 4 + 1)
    let ok = bytes.withUnsafeBytes { raw in
        zmq_z85_encode(&out, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), raw.count) != nil
    }
    return ok ? cString(out) : ""
}

/// Whether `text` is a 40-character Z85 key.
public func isZ85Key(_ text: String) -> Bool {
    guard text.utf8.count == 40 else { return false }
    var decoded = [UInt8](repeating: 0, count: 32)
    return zmq_z85_decode(&decoded, text) != nil
}

extension CurveKeyPair {
    /// The pair of a secret key (its public key derived from it).
    public init(secretKey: String) throws(BusError) {
        self.init(publicKey: try CurveKeyPair.publicKey(forSecret: secretKey), secretKey: secretKey)
    }

    /// A short fingerprint of a public key, for logs: its first 8 characters.
    public static func fingerprint(_ publicKey: String) -> String { String(publicKey.prefix(8)) }
}
