import Bus
import Foundation
import ServiceKit

/// Who may use the bus when CURVE is on: the public keys in the client and
/// worker folders (`CHORUS_CLIENT_KEYS`, `CHORUS_WORKER_KEYS`). It answers the
/// ZAP handshakes of the three sockets (clients on the frontend and the
/// events socket, workers on the backend) and checks the user id ZAP gave on
/// every message. The folders are read again at most once a second, so a key
/// added or removed takes effect without a restart.
final class Gatekeeper {
    enum Domain: String { case frontend, backend, events }

    let clientFolder: String
    let workerFolder: String
    private(set) var clients: AccessList
    private(set) var workers: AccessList
    private var loadedAt: Double
    /// Refused keys already logged (each once), bounded.
    private var logged: Set<String> = []
    private let warnings = RateLimitedLog()
    private(set) var refusals = 0

    init(clientFolder: String, workerFolder: String) throws {
        self.clientFolder = clientFolder
        self.workerFolder = workerFolder
        clients = try AccessList(folder: clientFolder)
        workers = try AccessList(folder: workerFolder)
        loadedAt = Date().timeIntervalSince1970
        Log.info("CURVE with allow-lists: \(clients.members.count) client key(s) in \(clientFolder), \(workers.members.count) worker key(s) in \(workerFolder)")
    }

    /// Reads the folders again if a second has passed; a folder that has
    /// become unreadable keeps its last list (and says so).
    func refresh(now: Double = Date().timeIntervalSince1970) {
        guard now - loadedAt >= 1 else { return }
        loadedAt = now
        for (folder, isClient) in [(clientFolder, true), (workerFolder, false)] {
            do {
                let list = try AccessList(folder: folder)
                if isClient { clients = list } else { workers = list }
            } catch {
                warnings.warning("keeping the last key list: \(error)")
            }
        }
    }

    /// The ZAP decision for a handshake.
    func decide(_ request: ZAPRequest) -> ZAPDecision {
        refresh()
        guard request.mechanism == "CURVE", !request.publicKey.isEmpty else {
            return refuse(request, "only CURVE is accepted")
        }
        switch Domain(rawValue: request.domain) {
        case .frontend, .events:
            if let m = clients.member(forKey: request.publicKey) { return .allow(userID: "client:" + m.name) }
            return refuse(request, "not in CHORUS_CLIENT_KEYS (\(clientFolder))")
        case .backend:
            if let m = workers.member(forKey: request.publicKey) { return .allow(userID: "worker:" + m.name) }
            return refuse(request, "not in CHORUS_WORKER_KEYS (\(workerFolder))")
        case nil:
            return refuse(request, "unknown ZAP domain '\(request.domain)'")
        }
    }

    private func refuse(_ request: ZAPRequest, _ why: String) -> ZAPDecision {
        refusals += 1
        let fingerprint = CurveKeyPair.fingerprint(request.publicKey)
        let id = request.domain + " " + request.publicKey
        if !logged.contains(id) {
            if logged.count < 10_000 { logged.insert(id) }
            warnings.warning("refused a \(request.domain) connection from \(request.address): key \(fingerprint)... \(why)")
        }
        return .deny(reason: why)
    }

    /// Whether a client message's sender (by its ZAP user id) is a listed client.
    func isClient(_ userID: String?) -> Bool {
        guard let userID, userID.hasPrefix("client:") else { return false }
        return clients.members[String(userID.dropFirst(7))] != nil
    }

    /// The listed worker a backend message's sender is, if any.
    func worker(_ userID: String?) -> AccessList.Member? {
        guard let userID, userID.hasPrefix("worker:") else { return nil }
        return workers.members[String(userID.dropFirst(7))]
    }

    func warn(_ message: @autoclosure () -> String) { warnings.warning(message()) }
}
