import CZeroMQ
import Foundation

/// An error from libzmq, with the operation that failed.
public struct BusError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let code: Int32

    public init(_ operation: String, code: Int32 = zmq_errno()) {
        self.operation = operation
        self.code = code
    }

    public var message: String { String(cString: zmq_strerror(code)) }
    public var description: String { "\(operation): \(message)" }

    /// The peer a ROUTER tried to send to is not connected.
    public var isUnreachable: Bool { code == EHOSTUNREACH }
    /// The context was terminated while the call was waiting.
    public var isTerminated: Bool { code == ETERM }
}

/// A ZeroMQ context: one per process. Sockets keep it alive; it is terminated
/// when the last reference goes away.
public final class BusContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init(ioThreads: Int32 = 1) {
        handle = zmq_ctx_new()
        zmq_ctx_set(handle, ZMQ_IO_THREADS, ioThreads)
    }

    /// Makes blocking calls on every socket of this context return `ETERM`.
    public func shutdown() { zmq_ctx_shutdown(handle) }

    deinit { zmq_ctx_term(handle) }

    /// The libzmq version, e.g. "4.3.4".
    public static var libraryVersion: String {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return "\(major).\(minor).\(patch)"
    }

    /// Whether libzmq was built with CURVE security.
    public static var hasCurve: Bool { zmq_has("curve") != 0 }
}

/// The socket types Chorus uses.
public enum SocketType: Sendable {
    case router, dealer, pub, xpub, sub, pair, req, rep

    var raw: Int32 {
        switch self {
        case .router: return ZMQ_ROUTER
        case .dealer: return ZMQ_DEALER
        case .pub: return ZMQ_PUB
        case .xpub: return ZMQ_XPUB
        case .sub: return ZMQ_SUB
        case .pair: return ZMQ_PAIR
        case .req: return ZMQ_REQ
        case .rep: return ZMQ_REP
        }
    }
}

/// A ZeroMQ socket. Not thread-safe: use each socket from one thread at a time.
/// Closed when released (with the linger set, default 0).
public final class BusSocket: @unchecked Sendable {
    public let type: SocketType
    let handle: UnsafeMutableRawPointer
    let context: BusContext
    private var closed = false

    public init(_ context: BusContext, _ type: SocketType) throws(BusError) {
        guard let h = zmq_socket(context.handle, type.raw) else { throw BusError("zmq_socket") }
        self.context = context
        self.type = type
        handle = h
        try setOption(ZMQ_LINGER, Int32(0))
    }

    deinit { close() }

    public func close() {
        if closed { return }
        closed = true
        zmq_close(handle)
    }

    public func bind(_ endpoint: String) throws(BusError) {
        if zmq_bind(handle, endpoint) != 0 { throw BusError("bind \(endpoint)") }
    }

    public func connect(_ endpoint: String) throws(BusError) {
        if zmq_connect(handle, endpoint) != 0 { throw BusError("connect \(endpoint)") }
    }

    public func disconnect(_ endpoint: String) throws(BusError) {
        if zmq_disconnect(handle, endpoint) != 0 { throw BusError("disconnect \(endpoint)") }
    }

    /// The endpoint actually bound (useful after binding to port `*` or `0`).
    public var lastEndpoint: String {
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size)
        return cString(buffer)
    }

    // MARK: Options

    public func setOption(_ option: Int32, _ value: Int32) throws(BusError) {
        var v = value
        if zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) != 0 { throw BusError("setsockopt \(option)") }
    }

    public func setOption(_ option: Int32, _ value: Int64) throws(BusError) {
        var v = value
        if zmq_setsockopt(handle, option, &v, MemoryLayout<Int64>.size) != 0 { throw BusError("setsockopt \(option)") }
    }

    public func setOption(_ option: Int32, _ value: [UInt8]) throws(BusError) {
        let rc = value.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        if rc != 0 { throw BusError("setsockopt \(option)") }
    }

    public func setOption(_ option: Int32, _ value: String) throws(BusError) {
        try setOption(option, Array(value.utf8))
    }

    /// Messages queued per peer before sends block or drop (send and receive).
    public func setHighWaterMark(send: Int32, receive: Int32) throws(BusError) {
        try setOption(ZMQ_SNDHWM, send)
        try setOption(ZMQ_RCVHWM, receive)
    }

    /// How long unsent messages are kept after close, in milliseconds (-1: forever).
    public func setLinger(milliseconds: Int32) throws(BusError) { try setOption(ZMQ_LINGER, milliseconds) }

    /// Peers that send a larger message are disconnected by libzmq.
    public func setMaximumMessageSize(_ bytes: Int64) throws(BusError) { try setOption(ZMQ_MAXMSGSIZE, bytes) }

    /// This socket's identity as seen by a ROUTER peer.
    public func setRoutingID(_ id: [UInt8]) throws(BusError) { try setOption(ZMQ_ROUTING_ID, id) }

    /// A ROUTER fails sends to unknown peers (EHOSTUNREACH) instead of dropping them.
    public func setRouterMandatory(_ on: Bool) throws(BusError) { try setOption(ZMQ_ROUTER_MANDATORY, Int32(on ? 1 : 0)) }

    /// Subscribes a SUB socket to messages whose first frame starts with `prefix`.
    public func subscribe(_ prefix: String) throws(BusError) { try setOption(ZMQ_SUBSCRIBE, prefix) }

    /// An XPUB that passes every subscription to the application, which
    /// decides what to subscribe the sending peer to (`subscribe` and
    /// `unsubscribe` on the XPUB apply to the peer of the last subscription read).
    public func setManualSubscriptions() throws(BusError) { try setOption(ZMQ_XPUB_MANUAL, Int32(1)) }

    /// Withdraws a SUB socket's subscription to `prefix`.
    public func unsubscribe(_ prefix: String) throws(BusError) { try setOption(ZMQ_UNSUBSCRIBE, prefix) }

    /// Makes this socket a CURVE server with the given secret key (Z85, 40 characters).
    public func makeCurveServer(secretKey: String) throws(BusError) {
        try setOption(ZMQ_CURVE_SERVER, Int32(1))
        try setOption(ZMQ_CURVE_SECRETKEY, secretKey)
    }

    /// Makes this socket a CURVE client of the server with `serverKey`.
    public func makeCurveClient(serverKey: String, keys: CurveKeyPair) throws(BusError) {
        try setOption(ZMQ_CURVE_SERVERKEY, serverKey)
        try setOption(ZMQ_CURVE_PUBLICKEY, keys.publicKey)
        try setOption(ZMQ_CURVE_SECRETKEY, keys.secretKey)
    }

    // MARK: Messages

    /// Sends one multipart message. With `wait: false`, returns false instead of
    /// blocking when the message cannot be queued.
    @discardableResult
    public func send(_ frames: [Data], wait: Bool = true) throws(BusError) -> Bool {
        try sendMessage(identity: nil, frames, wait: wait)
    }

    /// Sends `frames` behind a ROUTER's identity frame for the peer `identity`.
    @discardableResult
    public func send(to identity: Data, _ frames: [Data], wait: Bool = true) throws(BusError) -> Bool {
        try sendMessage(identity: identity, frames, wait: wait)
    }

    private func sendMessage(identity: Data?, _ frames: [Data], wait: Bool) throws(BusError) -> Bool {
        precondition(!frames.isEmpty)
        if let identity, !(try sendFrame(identity, more: true, wait: wait, first: true)) { return false }
        for (i, frame) in frames.enumerated() {
            let queued = try sendFrame(frame, more: i < frames.count - 1, wait: wait, first: identity == nil && i == 0)
            if !queued { return false }
        }
        return true
    }

    /// One frame of a message; false when a message's first frame, sent
    /// without waiting, finds no room (later frames always follow the first).
    private func sendFrame(_ frame: Data, more: Bool, wait: Bool, first: Bool) throws(BusError) -> Bool {
        var flags: Int32 = more ? ZMQ_SNDMORE : 0
        if !wait { flags |= ZMQ_DONTWAIT }
        let rc = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
        if rc >= 0 { return true }
        let code = zmq_errno()
        if code == EAGAIN && !wait && first { return false }
        throw BusError("send", code: code)
    }

    /// Receives one multipart message if one is waiting, without blocking.
    public func receiveNow() throws(BusError) -> [Data]? {
        try receiveFrames(firstFlags: ZMQ_DONTWAIT)
    }

    /// Receives one multipart message, waiting at most `timeout` seconds
    /// (nil waits for ever); nil when nothing arrived in time.
    public func receive(timeout: Double? = nil) throws(BusError) -> [Data]? {
        guard let timeout else { return try receiveFrames(firstFlags: 0) }
        // A message already waiting needs no poll.
        if let frames = try receiveFrames(firstFlags: ZMQ_DONTWAIT) { return frames }
        guard try Poller.wait(self, timeout: timeout) else { return nil }
        return try receiveFrames(firstFlags: ZMQ_DONTWAIT)
    }

    private func receiveFrames(firstFlags: Int32) throws(BusError) -> [Data]? {
        var frames: [Data] = []
        frames.reserveCapacity(4)
        while true {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            let flags: Int32 = frames.isEmpty ? firstFlags : 0
            if zmq_msg_recv(&message, handle, flags) < 0 {
                let code = zmq_errno()
                if code == EAGAIN && frames.isEmpty { return nil }
                throw BusError("receive", code: code)
            }
            frames.append(Data(bytes: zmq_msg_data(&message), count: zmq_msg_size(&message)))
            if zmq_msg_more(&message) == 0 { return frames }
        }
    }
}

/// A CURVE key pair, Z85-encoded.
public struct CurveKeyPair: Sendable, Equatable, Codable {
    public let publicKey: String
    public let secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    public static func generate() throws(BusError) -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        if zmq_curve_keypair(&pub, &sec) != 0 { throw BusError("zmq_curve_keypair") }
        return CurveKeyPair(publicKey: cString(pub), secretKey: cString(sec))
    }

    /// The public key that belongs to a secret key.
    public static func publicKey(forSecret secret: String) throws(BusError) -> String {
        var pub = [CChar](repeating: 0, count: 41)
        if zmq_curve_public(&pub, secret) != 0 { throw BusError("zmq_curve_public") }
        return cString(pub)
    }
}

/// Waits for input on several sockets.
public struct Poller {
    private var sockets: [BusSocket] = []
    private var items: [zmq_pollitem_t] = []

    public init() {}

    public mutating func add(_ socket: BusSocket) {
        precondition(sockets.count < 64, "a poller takes at most 64 sockets")
        sockets.append(socket)
        items.append(zmq_pollitem_t(socket: socket.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0))
    }

    /// Adds a file descriptor (a pipe's reading end, say) to wait on beside
    /// the sockets; it counts in the order of `add` calls like a socket.
    public mutating func add(fileDescriptor fd: Int32) {
        precondition(items.count < 64, "a poller takes at most 64 items")
        items.append(zmq_pollitem_t(socket: nil, fd: fd, events: Int16(ZMQ_POLLIN), revents: 0))
    }

    /// The sockets a poll found ready, by the order they were added.
    public struct Ready: Sendable {
        let mask: UInt64
        public func contains(_ index: Int) -> Bool { index >= 0 && index < 64 && mask & (1 << UInt64(index)) != 0 }
        public var isEmpty: Bool { mask == 0 }
        public static let none = Ready(mask: 0)
    }

    /// The sockets that have a message waiting, after at most `timeout`
    /// seconds (nil waits for ever); empty on timeout.
    public mutating func poll(timeout: Double?) throws(BusError) -> Ready {
        let ms: Int = timeout.map { max(0, Int(($0 * 1000).rounded(.up))) } ?? -1
        let count = Int32(items.count)
        let rc = items.withUnsafeMutableBufferPointer { zmq_poll($0.baseAddress, count, ms) }
        if rc < 0 {
            if zmq_errno() == EINTR { return .none } // a signal: nothing arrived
            throw BusError("poll")
        }
        var mask: UInt64 = 0
        for i in items.indices where items[i].revents & Int16(ZMQ_POLLIN) != 0 { mask |= 1 << UInt64(i) }
        return Ready(mask: mask)
    }

    /// Whether `socket` has a message within `timeout` seconds.
    public static func wait(_ socket: BusSocket, timeout: Double) throws(BusError) -> Bool {
        var item = zmq_pollitem_t(socket: socket.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        let ms = max(0, Int((timeout * 1000).rounded(.up)))
        if zmq_poll(&item, 1, ms) < 0 {
            // A signal (Ctrl-C, say) interrupted the wait: nothing arrived; the caller looks at its stop flag.
            if zmq_errno() == EINTR { return false }
            throw BusError("poll")
        }
        return item.revents & Int16(ZMQ_POLLIN) != 0
    }
}

/// The text before the first NUL of a C buffer.
func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
