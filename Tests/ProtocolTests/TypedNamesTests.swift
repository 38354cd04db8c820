import Foundation
import Protocol
import TestKit
import Testing

/// Roles, worker states and verdicts are types in Chorus and strings on the
/// wire: what a peer from before sends still reads, and what is sent is the same.
@Suite("typed names on the wire")
struct TypedNamesTests {
    @Test("a STATUS body and a critic's result read and write their names as strings; an unknown verdict or state is an error")
    func wireNames() throws {
        let body = #"{"workers":[{"worker_id":"w1","role":"critic","state":"busy","host":"h","pid":1,"model":"m","served":2,"idle_seconds":0}],"queues":{"critic":1},"jobs_in_flight":[],"roles":["critic","custom-role"],"uptime_seconds":3}"#
        let status = try JSONDecoder().decode(StatusBody.self, from: Data(body.utf8))
        #expect(status.workers[0].role == .critic && status.workers[0].state == .busy)
        let again = String(decoding: try JSONEncoder().encode(status.workers[0]), as: UTF8.self)
        #expect(again.contains(#""role":"critic""#) && again.contains(#""state":"busy""#), "\(again)")
        // A role the broker was configured with but Chorus has no constant for.
        #expect(try JSONDecoder().decode(Role.self, from: Data(#""custom-role""#.utf8)) == Role("custom-role"))
        #expect(Role("custom-role").isValidName && !Role("Bad Role").isValidName && Role("custom-role").settingsPrefix == "CUSTOM_ROLE")
        #expect(BusProtocol.defaultRoles == ["generator", "verifier", "refiner", "critic", "memory", "kvindex", "echo"])
        #expect(StageKind.allCases.compactMap { StageKind(modelRole: $0.role) } == [.generate, .verify, .refine, .critic])

        let result = FakeStage.result("Yes", verdict: .accept)
        let text = String(decoding: try JSONEncoder().encode(result), as: UTF8.self)
        #expect(text.contains(#""verdict":"accept""#), "\(text)")
        let forged = text.replacingOccurrences(of: #""verdict":"accept""#, with: #""verdict":"maybe""#)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(StageResult.self, from: Data(forged.utf8)) }
        let badState = body.replacingOccurrences(of: #""state":"busy""#, with: #""state":"asleep""#)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(StatusBody.self, from: Data(badState.utf8)) }
        #expect(Verdict(score: 0.5) == .accept && Verdict(score: 0.49) == .reject)
    }
}
