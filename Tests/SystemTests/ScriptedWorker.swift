import Bus
import Foundation
import Protocol
import TestKit

/// A worker whose every move the test decides, speaking the real protocol to
/// a real broker over its backend socket: it registers, heartbeats unless
/// told to fall silent, collects the requests it is given, and answers them
/// (or fails them, or answers late) when the test says so. For the broker's
/// failure paths that a healthy model worker never takes.
final class ScriptedWorker {
    let peer: RawPeer
    let workerID: String
    /// A silent worker sends nothing, as one that hangs or lost its network.
    var silent = false
    /// Requests received and not yet answered, oldest first.
    private(set) var requests: [RequestBody<JSONValue>] = []
    /// Every request id received, in order.
    private(set) var received: [String] = []
    private(set) var disconnected = false
    private var lastBeat = 0.0

    init(_ cluster: Cluster, role: String, id: String, capacity: Int? = nil) throws {
        peer = try RawPeer(cluster.settings.backend)
        workerID = id
        try peer.send(Envelope.frames(.ready, role: role, ReadyBody(workerID: id, host: "scripted", pid: 0, model: "scripted", capacity: capacity)))
        lastBeat = Date().timeIntervalSince1970
    }

    /// Reads what the broker sent and heartbeats when due; never blocks.
    func pump() throws {
        while let frames = try peer.socket.receiveNow() {
            let envelope = try Envelope(frames: frames)
            switch envelope.header.command {
            case .request:
                let body = try envelope.decode(RequestBody<JSONValue>.self)
                requests.append(body)
                received.append(body.requestID)
            case .disconnect: disconnected = true
            default: break
            }
        }
        let now = Date().timeIntervalSince1970
        if !silent && now - lastBeat >= 0.2 {
            try peer.send(Envelope.frames(.heartbeat))
            lastBeat = now
        }
    }

    /// Takes the oldest unanswered request.
    func take() -> RequestBody<JSONValue>? { requests.isEmpty ? nil : requests.removeFirst() }

    func answer(_ requestID: String, _ result: JSONValue) throws {
        try peer.send(Envelope.frames(.final, FinalBody(requestID: requestID, result: result)))
    }

    func fail(_ requestID: String, code: ErrorCode, message: String) throws {
        try peer.send(Envelope.frames(.error, ErrorBody(requestID: requestID, code: code, message: message)))
    }

    /// A well-formed stage result with this text (a critic's carries a verdict).
    static func stageResult(_ text: String, verdict: Verdict? = nil) throws -> JSONValue {
        try FakeStage.json(text, verdict: verdict, prompt: "scripted prompt", model: "scripted")
    }
}

/// Pumps every worker (and `also`) until `condition` holds; false after `timeout` seconds.
@discardableResult
func pump(_ workers: [ScriptedWorker], timeout: Double = 20, also: () throws -> Void = {}, until condition: () throws -> Bool) throws -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        for w in workers { try w.pump() }
        try also()
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.01)
    }
    return false
}
