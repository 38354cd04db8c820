import Foundation
import Pipeline
import Protocol
import Testing
import OpenAI

@Suite("Chat requests")
struct ChatRequestTests {
    func parse(_ json: String) throws(APIError) -> ChatRequest { try ChatRequest.parse(Data(json.utf8)) }

    @Test("a chat request maps to a job: the last user message, n chains, rounds, seed, no_memory, token limits")
    func jobMapping() throws {
        let r = try parse(#"{"model": "chorus", "n": 3, "seed": 9, "rounds": 1, "no_memory": true, "max_tokens": 40, "unknown": [1],"#
            + #" "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},"#
            + #" {"role": "assistant", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}]}"#)
        let spec = try r.jobSpec()
        #expect(spec.question == "What is 2+2?")
        #expect(spec.samples == 3 && spec.rounds == 1 && spec.seed == 9 && spec.noMemory == true)
        #expect(spec.overrides?["generator"]?.maxTokens == 40 && spec.overrides?["critic"] == nil)
    }

    @Test("bad requests are errors naming the field")
    func errors() throws {
        #expect(throws: APIError.invalid("the body is not valid JSON")) { try parse("{nope") }
        #expect { try parse(#"{"model": "chorus"}"#) } throws: { ($0 as? APIError)?.param == "messages" }
        #expect { try parse(#"{"model": "chorus", "messages": 3}"#) } throws: { ($0 as? APIError)?.param == "messages" }
        #expect { try parse(#"{"model": "chorus", "messages": [{"role": "user", "content": "x"}], "n": 10}"#).jobSpec() } throws: {
            ($0 as? APIError)?.param == "n" && ($0 as? APIError)?.status == 400
        }
        #expect { try parse(#"{"model": "chorus", "messages": [{"role": "system", "content": "x"}]}"#).jobSpec() } throws: {
            ($0 as? APIError)?.param == "messages"
        }
        #expect { try parse(#"{"model": "chorus", "messages": [{"role": "user", "content": "x"}], "temperature": 3}"#).jobSpec() } throws: {
            ($0 as? APIError)?.param == "temperature"
        }
    }

    @Test("role payloads: the verifier works on the last assistant message or 'answer'; the refiner needs a critique")
    func rolePayloads() throws {
        let chat = try parse(#"{"model": "verifier", "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "S"}]}"#)
        let p = try chat.stagePayload(for: .verify)
        #expect(p.question == "Q" && p.answer == "S" && p.stage == .verify)
        #expect { try parse(#"{"model": "verifier", "messages": [{"role": "user", "content": "Q"}]}"#).stagePayload(for: .verify) } throws: {
            ($0 as? APIError)?.param == "answer"
        }
        #expect { try chat.stagePayload(for: .refine) } throws: { ($0 as? APIError)?.param == "critique" }
        #expect(try parse(#"{"model": "generator", "seed": 4, "messages": [{"role": "user", "content": "Q"}]}"#).stagePayload(for: .generate).seed == 4)
    }
}

@Suite("Chat streams of jobs")
struct JobChatStreamTests {
    static func event(_ kind: JobEvent.Kind, _ chain: Int, _ step: Int, text: String? = nil, verdict: Verdict? = nil) -> JobEvent {
        JobEvent(jobID: "j1", kind: kind, chain: chain, step: step, worker: "w", text: text, verdict: verdict)
    }

    static func contents(_ chunks: [JSONValue]) -> [(index: Int, content: String?, reasoning: String?)] {
        chunks.compactMap { c in
            guard case let .array(choices)? = c["choices"], let choice = choices.first, let delta = choice["delta"] else { return nil }
            let index = Int(choice["index"]?.doubleValue ?? -1)
            return (index, delta["content"]?.stringValue, delta["reasoning_content"]?.stringValue)
        }
    }

    @Test("the last round's refinement streams as content, the other stages as reasoning")
    func lastRound() {
        var s = JobChatStream(jobID: "j1", rounds: 1, created: 0)
        var out: [JSONValue] = []
        for e in [Self.event(.stageStarted, 0, 0), Self.event(.partial, 0, 0, text: "draft"), Self.event(.stageDone, 0, 0, text: "draft"),
                  Self.event(.stageStarted, 0, 1), Self.event(.partial, 0, 1, text: "check"),
                  Self.event(.stageStarted, 0, 2), Self.event(.partial, 0, 2, text: "final "), Self.event(.partial, 0, 2, text: "#### 4"),
                  Self.event(.stageStarted, 0, 3), Self.event(.partial, 0, 3, text: "Yes"), Self.event(.stageDone, 0, 3, verdict: .accept)] {
            out += s.translate(e)
        }
        let c = Self.contents(out)
        #expect(c.compactMap(\.content).joined() == "final #### 4")
        let reasoning = c.compactMap(\.reasoning).joined()
        #expect(reasoning.contains("[generate · w]") && reasoning.contains("draft") && reasoning.contains("check") && reasoning.contains("Yes"))
        #expect(!reasoning.contains("final"))
    }

    @Test("a critic accepting an earlier round sends that round's refinement as content at once; memory stages are not chat")
    func earlyAccept() {
        var s = JobChatStream(jobID: "j1", rounds: 3, created: 0)
        var out: [JSONValue] = []
        for e in [Self.event(.stageStarted, -1, 0), Self.event(.partial, -1, 0, text: "memory"),
                  Self.event(.stageStarted, 1, 2), Self.event(.partial, 1, 2, text: "better"), Self.event(.stageDone, 1, 2, text: "better #### 5"),
                  Self.event(.stageDone, 1, 3, verdict: .accept)] {
            out += s.translate(e)
        }
        let c = Self.contents(out)
        #expect(c.filter { $0.content != nil }.map(\.content) == ["better #### 5"])
        #expect(c.allSatisfy { $0.index == 1 })
        #expect(!c.compactMap(\.reasoning).joined().contains("memory"))
    }

    @Test("a stage started again streams only what goes beyond what was sent; a different text follows a blank line")
    func retriedStage() {
        var s = JobChatStream(jobID: "j1", rounds: 1, created: 0)
        var out: [JSONValue] = []
        // The final refinement: "The answer" sent, the worker dies, another repeats it and goes on.
        for e in [Self.event(.stageStarted, 0, 2), Self.event(.partial, 0, 2, text: "The "), Self.event(.partial, 0, 2, text: "answer"),
                  Self.event(.stageStarted, 0, 2), Self.event(.partial, 0, 2, text: "The"), Self.event(.partial, 0, 2, text: " answer"),
                  Self.event(.partial, 0, 2, text: " is"), Self.event(.partial, 0, 2, text: " 4")] {
            out += s.translate(e)
        }
        #expect(Self.contents(out).compactMap(\.content).joined() == "The answer is 4")
        // The verifier: a retry that writes something else comes after a blank line, marked.
        out = []
        for e in [Self.event(.stageStarted, 1, 1), Self.event(.partial, 1, 1, text: "looks right"),
                  Self.event(.stageStarted, 1, 1), Self.event(.partial, 1, 1, text: "looks wrong")] {
            out += s.translate(e)
        }
        let reasoning = Self.contents(out).compactMap(\.reasoning).joined()
        #expect(reasoning.hasSuffix("looks right\n\n[verify, retried]\nlooks wrong"))
        #expect(reasoning.components(separatedBy: "[verify").count == 3)
    }
}
