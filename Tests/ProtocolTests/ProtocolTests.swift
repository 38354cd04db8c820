import Foundation
import Journal
import Storage
import Pipeline
import Protocol
import TestKit
import Testing

@Suite("Wire protocol")
struct WireProtocolTests {
    @Test("headers round-trip and are validated")
    func headers() throws {
        for h in [Header(.submit), Header(.request, role: "generator"), Header(.ready, role: "critic"), Header(.heartbeat)] {
            #expect(try Header.parse(h.frame) == h)
        }
        func code(_ text: String) -> ErrorCode? {
            do { _ = try Header.parse(Data(text.utf8)); return nil } catch { return error.code }
        }
        #expect(code("CHORUS/2 STATUS") == .unsupportedVersion)
        #expect(code("MDPC01 STATUS") == .malformed)
        #expect(code("CHORUS/1 FROB") == .unknownCommand)
        #expect(code("CHORUS/1 REQUEST") == .malformed)
        #expect(code("CHORUS/1 REQUEST Bad_Role") == .unknownRole)
        #expect(code("CHORUS/1 STATUS extra") == .malformed)
        #expect(code("CHORUS/1  STATUS") == .malformed)
        #expect(code("") == .malformed)
        #expect(code(String(repeating: "x", count: 65)) == .malformed)
        #expect(throws: ProtocolError.self) { try Header.parse(Data([0xFF, 0xFE, 0x20])) }
    }

    @Test("the byte-level header reader accepts exactly what the reporting parser accepts")
    func headerFastPath() throws {
        var texts = ["CHORUS/1 STATUS", "CHORUS/1 REQUEST echo", "CHORUS/1 READY a-1", "CHORUS/1 REQUEST", "CHORUS/1 REQUEST ",
                     "CHORUS/1 STATUS ", "CHORUS/1 FINAL x", "CHORUS/1 REQUEST 1abc", "CHORUS/1 REQUEST Echo", "CHORUS/1 REQUEST a b",
                     "CHORUS/1 REQUEST " + String(repeating: "a", count: 32), "CHORUS/1 REQUEST " + String(repeating: "a", count: 33),
                     "CHORUS/1", "CHORUS/1 ", "CHORUS/10 STATUS", "CHORUS/1 STATU", "CHORUS/1 STATUSX", " CHORUS/1 STATUS",
                     "chorus/1 STATUS", "CHORUS/1\tSTATUS", "CHORUS/1 REQUEST é"]
        texts += Command.allCases.flatMap { ["CHORUS/1 \($0.rawValue)", "CHORUS/1 \($0.rawValue) generator"] }
        var random = SystemRandomNumberGenerator()
        for _ in 0..<2000 { // mutations of valid headers
            var bytes = Array(texts[Int.random(in: 0..<texts.count, using: &random)].utf8)
            if !bytes.isEmpty { bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...127, using: &random) }
            texts.append(String(decoding: bytes, as: UTF8.self))
        }
        for text in texts {
            let frame = Data(text.utf8)
            let fast = Header.parseValid(frame), slow = try? Header.parseReportingErrors(frame)
            #expect(fast == slow, "\(text)")
        }
    }

    @Test("envelopes check frame count, body size and JSON")
    func envelopes() throws {
        let ok = Envelope.frames(.result, JobIDBody(jobID: "j1"))
        #expect(try Envelope(frames: ok).decode(JobIDBody.self).jobID == "j1")
        func code(_ frames: [Data], limit: Int = 1024) -> ErrorCode? {
            do { _ = try Envelope(frames: frames, maxBodyBytes: limit); return nil } catch { return error.code }
        }
        #expect(code([ok[0]]) == .malformed)
        #expect(code(ok + [Data()]) == .malformed)
        #expect(code([ok[0], Data("[1,2]".utf8)]) == .malformed)
        #expect(code([ok[0], Data("not json".utf8)]) == .malformed)
        #expect(code([ok[0], Data(repeating: 32, count: 2000)]) == .tooLarge)
        let wrong = try Envelope(frames: [Header(.result).frame, Data(#"{"job_id": 5}"#.utf8)])
        #expect(throws: ProtocolError(.malformed, "RESULT body has a wrong type at 'job_id'")) { try wrong.decode(JobIDBody.self) }
        let missing = try Envelope(frames: [Header(.result).frame, Data("{}".utf8)])
        #expect(throws: ProtocolError(.malformed, "RESULT body lacks 'job_id'")) { try missing.decode(JobIDBody.self) }
    }

    @Test("JSON values keep 64-bit integers exact and compare numbers by value")
    func jsonValues() throws {
        let record = SamplingRecord(temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, repetitionPenalty: 1.1, maxTokens: 64,
                                    seed: 15385114842503277396)
        let value = try JSONValue(encoding: record)
        #expect(try value.decode(as: SamplingRecord.self) == record)
        #expect(try JSONValue(encoding: Int64.min).decode(as: Int64.self) == Int64.min)
        #expect(try JSONValue(encoding: UInt64.max).decode(as: UInt64.self) == UInt64.max)
        #expect(try JSONValue(encoding: 0.25) == .number(0.25))
        #expect(try JSONValue(encoding: 3) == .number(3) && JSONValue.number(3) == .integer(3))
        #expect(JSONValue.integer(3) != .unsigned(UInt64.max) && JSONValue.integer(3) != .string("3"))
    }

    @Test("the body scan accepts exactly the JSON objects and reads routing fields")
    func bodyScan() throws {
        let ok = #"{"request_id": "a\"b", "timeout": 2.5e1, "payload": {"x": [1, -0.5, true, null, "\u00e9"]}, "n": null}"#
        let scan = try JSONObjectScan(Data(ok.utf8))
        #expect(scan.string("request_id") == "a\"b" && scan.number("timeout") == 25)
        #expect(scan.kind("payload") == .object && scan.kind("n") == .null && !scan.has("result"))
        #expect(scan.raw("payload").map { String(decoding: $0, as: UTF8.self) } == #"{"x": [1, -0.5, true, null, "\u00e9"]}"#)
        #expect(try JSONObjectScan(Data(" { } ".utf8)).count == 0)
        #expect(try JSONObjectScan(Data(#"{"é": "ü"}"#.utf8)).string("é") == "ü")
        let bad = ["", "[]", "{", "{}}", #"{"a"}"#, #"{"a": }"#, #"{"a": 01}"#, #"{"a": 1.}"#, #"{"a": -}"#, #"{"a": tru}"#,
                   #"{"a": "x\q"}"#, "{\"a\": \"\u{01}\"}", #"{"a": [1,]}"#, #"{"a": 1,}"#, #"{a: 1}"#, #"{"a": "\u12"}"#,
                   #"{"a": 1} x"#, #"{"a": NaN}"#]
        for text in bad {
            #expect(throws: JSONObjectScan.Invalid.self, "\(text)") { try JSONObjectScan(Data(text.utf8)) }
        }
        #expect(throws: JSONObjectScan.Invalid.self) { try JSONObjectScan(Data([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D])) }
        // Deep nesting is refused, not a stack overflow.
        let deep = "{\"a\": " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        #expect(throws: JSONObjectScan.Invalid.self) { try JSONObjectScan(Data(deep.utf8)) }
        let fine = "{\"a\": " + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + "}"
        #expect(try JSONObjectScan(Data(fine.utf8)).kind("a") == .array)
        // An envelope reads its routing fields from the scan, with the same errors as decoding.
        let e = try Envelope(frames: [Header(.request, role: "echo").frame, Data(#"{"request_id": 5, "payload": 1}"#.utf8)])
        #expect(throws: ProtocolError(.malformed, "REQUEST body has a wrong type at 'request_id'")) { try e.requiredString("request_id") }
        #expect(throws: ProtocolError(.malformed, "REQUEST body lacks 'timeout'")) { try e.require("timeout") }
        #expect(try e.optionalNumber("timeout") == nil)
    }

    @Test("job specs have defaults and limits")
    func jobSpecs() throws {
        let spec = try JSONDecoder().decode(JobSpec.self, from: Data(#"{"question": "What is 1+1?"}"#.utf8))
        #expect(spec.samples == 1 && spec.rounds == 2 && spec.seed == nil)
        #expect(throws: Never.self) { try spec.validate() }
        #expect(throws: ProtocolError.self) { try JobSpec(question: "  ").validate() }
        #expect(throws: ProtocolError.self) { try JobSpec(question: "q", samples: 0).validate() }
        #expect(throws: ProtocolError.self) { try JobSpec(question: "q", rounds: 9).validate() }
        #expect(throws: ProtocolError.self) { try JobSpec(question: String(repeating: "x", count: 40_000)).validate() }
        #expect(throws: ProtocolError.self) {
            try JobSpec(question: "q", overrides: ["generator": SamplingOverride(temperature: -1)]).validate()
        }
        #expect(BusProtocol.isValidRoleName("kv-index2") && !BusProtocol.isValidRoleName("2x") && !BusProtocol.isValidRoleName(""))
    }
}

@Suite("Pipeline")
struct PipelineTests {
    @Test("the answer extractor follows MALT's order: ####, the last \\boxed{}, 'the answer is', last number")
    func extractor() {
        #expect(AnswerExtractor.extract("so \\boxed{30 + 90 + 3} = 123, in all \\(\\boxed{123}\\). Then 7.") == "123")
        #expect(AnswerExtractor.extract("\\boxed{\\$1,250.50}") == "1250.5")
        #expect(AnswerExtractor.extract("\\boxed{\\frac{1}{2}} and \\boxed{") == "2", "an unclosed box is not an answer: the last number")
        #expect(AnswerExtractor.extract("\\boxed{12}\n#### 13") == "13", "#### comes first")
        #expect(AnswerExtractor.extract("so 3 + 4 = 7\n#### 7") == "7")
        #expect(AnswerExtractor.extract("#### 1,250.00 dollars") == "1250")
        #expect(AnswerExtractor.extract("The answer is $18. Later 99 appears.") == "18")
        #expect(AnswerExtractor.extract("She has 5 apples, then 12.") == "12")
        #expect(AnswerExtractor.extract("The loss is -3 points") == "-3")
        #expect(AnswerExtractor.extract("ratio 0.25") == "0.25")
        #expect(AnswerExtractor.extract("no numbers here") == nil)
        #expect(AnswerExtractor.extract("step-2 gives 10") == "10")
        #expect(AnswerExtractor.same("18", "18.0") && !AnswerExtractor.same("18", "19") && !AnswerExtractor.same(nil, "1"))
    }

    @Test("majority vote, first answer wins ties, missing answers do not vote")
    func vote() {
        #expect(MajorityVote.winner(["3", "4", "4"]) == "4")
        #expect(MajorityVote.winner(["3", "4"]) == "3")
        #expect(MajorityVote.winner([nil, "5", nil]) == "5")
        #expect(MajorityVote.winner(["2.0", "2", "7"]) == "2")
        #expect(MajorityVote.winner([nil, nil]) == nil)
    }

    @Test("with the chains' confidences, a tie goes to the surest chain's answer; a majority stays a majority")
    func confidentVote() {
        #expect(MajorityVote.winner(["3", "4", "5"], confidences: [-0.4, -0.2, -0.3]) == "4")
        #expect(MajorityVote.winner(["3", "4", "4"], confidences: [-0.1, -0.5, -0.6]) == "4")
        // Ties among two-vote answers go by each answer's surest chain.
        #expect(MajorityVote.winner(["3", "4", "4", "3"], confidences: [-0.5, -0.45, -0.9, -0.6]) == "4")
        // A missing answer does not vote, however sure; a chain without a confidence is the least sure.
        #expect(MajorityVote.winner([nil, "4", "5"], confidences: [-0.01, -0.5, -0.3]) == "5")
        #expect(MajorityVote.winner(["4", "5"], confidences: [nil, -0.9]) == "5")
        #expect(MajorityVote.winner(["4", "5"], confidences: [nil, nil]) == "4")
        #expect(MajorityVote.winner(["4", "5"], confidences: [-0.2, .nan]) == "4")
    }

    @Test("a text's confidence: the mean log-probability, the least sure stretch of 16 tokens, and the last 16")
    func confidence() throws {
        #expect(Confidence(logProbabilities: []) == nil)
        #expect(Confidence(logProbabilities: [-1, .nan]) == nil && Confidence(logProbabilities: [-.infinity]) == nil)
        let short = try #require(Confidence(logProbabilities: [-1, -3]))
        #expect(short.mean == -2 && short.lowestWindow == -2 && short.tail == -2)
        // 40 tokens: sure but for a stretch of 8 at -2 (tokens 10-17), and -0.5 for the last 16.
        var p = [Float](repeating: -0.1, count: 40)
        for i in 10..<18 { p[i] = -2 }
        for i in 24..<40 { p[i] = -0.5 }
        let c = try #require(Confidence(logProbabilities: p))
        #expect(abs(c.mean - (16 * -0.1 + 8 * -2 + 16 * -0.5) / 40) < 1e-6)
        #expect(abs(c.lowestWindow - (8 * -2 + 6 * -0.1 + 2 * -0.5) / 16) < 1e-6)  // tokens 10-25
        #expect(abs(c.tail - -0.5) < 1e-6)
        // On the wire it is optional: a result without it reads as before.
        let json = try JSONEncoder().encode(c)
        #expect(String(decoding: json, as: UTF8.self).contains("lowest_window"))
        #expect(try JSONDecoder().decode(Confidence.self, from: json) == c)
    }

    func record(_ chain: Int, _ step: Int, text: String, verdict: Verdict? = nil) -> StageRecord {
        let (kind, round) = JobPlan.stage(at: step)
        let result = FakeStage.result(text, verdict: verdict, score: verdict.map { $0 == .accept ? 0.9 : 0.1 })
        return StageRecord(chain: chain, step: step, round: round, stage: kind, role: kind.role, attempt: 1, worker: "w",
                           payload: StagePayload(stage: kind, question: "q", seed: 0), result: result,
                           extracted: kind == .generate || kind == .refine ? AnswerExtractor.extract(text) : nil,
                           queuedSeconds: 0, seconds: 0, finishedAt: 0)
    }

    @Test("answer quality: the four configurations from one set of jobs, Wilson intervals, McNemar's exact test, refinement flips and the critic's verdicts")
    func answerQuality() throws {
        // Truth 4. Chain 0: 3 -> 4 (wrong to right), accepted; chain 1: 4 -> 5 (right to wrong), rejected; chain 2: 4 -> 4, accepted.
        func chain(_ c: Int, _ first: String, _ refined: String, _ verdict: Verdict) -> [StageRecord] {
            [record(c, 0, text: "#### \(first)"), record(c, 1, text: "check"), record(c, 2, text: "#### \(refined)"),
             record(c, 3, text: verdict == .accept ? "Yes" : "No", verdict: verdict)]
        }
        var spec = JobSpec(question: "q", samples: 3, rounds: 1, seed: 1)
        spec.answer = "4"
        let job = JobRecord(id: "j", spec: spec, seed: 1, state: .done, answer: "4", chainAnswers: ["4", "5", "4"], firstAnswers: ["3", "4", "4"],
                            error: nil, createdAt: 0, finishedAt: 1, stages: chain(0, "3", "4", .accept) + chain(1, "4", "5", .reject) + chain(2, "4", "4", .accept))
        let q = AnswerQuality([job])
        #expect(q.questions == 1 && q.configurations.map(\.name) == ["single generator", "pipeline (one chain)", "MV@3 of generators", "pipeline with MV@3"])
        #expect(q.configurations.map(\.right) == [0, 1, 1, 1])
        #expect(q.configurations[1].gained == 1 && q.configurations[1].lost == 0)
        let f = try #require(q.flips.first)
        #expect(f.wrongToRight == 1 && f.rightToWrong == 1 && f.rightKept == 1 && f.wrongKept == 0)
        #expect(q.verdicts.acceptedRight == 2 && q.verdicts.rejectedWrong == 1 && q.verdicts.acceptedWrong == 0 && q.verdicts.rejectedRight == 0)
        // Each chain's first answer alone (3, 4, 4 against 4): 0, 1, 1; the job's answer (right) against their mean 2/3.
        #expect(q.singleByChain == [0, 1, 1])
        let gain = try #require(q.gainOverMeanSingle)
        #expect(abs(gain.mean - 1.0 / 3) < 1e-12 && gain.low == gain.mean && gain.high == gain.mean)
        // Paired differences 1, 0, 0, -1, 1: mean 0.2, sample variance 0.7, half width 1.96 * sqrt(0.7 / 5).
        let paired = try #require(AnswerQuality.pairedMean([1, 0, 0, -1, 1]))
        #expect(abs(paired.mean - 0.2) < 1e-12 && abs(paired.high - (0.2 + 1.96 * (0.7 / 5).squareRoot())) < 1e-12)
        #expect(AnswerQuality.pairedMean([]) == nil)
        // Known values: Wilson 50/100 = [0.404, 0.596]; McNemar b = 10, c = 2: 2 * (1 + 12 + 66) / 4096.
        let w = AnswerQuality.wilson(50, 100)
        #expect(abs(w.low - 0.4038) < 0.001 && abs(w.high - 0.5962) < 0.001, "\(w)")
        #expect(abs(AnswerQuality.mcnemar(10, 2) - 158.0 / 4096) < 1e-9 && AnswerQuality.mcnemar(0, 0) == 1 && AnswerQuality.mcnemar(5, 5) == 1)

        // Two evaluations compared question by question: paired by question and seed, whatever their order.
        func simple(_ question: String, seed: UInt64, truth: String, first: String, final: String) -> JobRecord {
            var s = JobSpec(question: question, samples: 1, rounds: 1, seed: seed)
            s.answer = truth
            return JobRecord(id: question, spec: s, seed: seed, state: .done, answer: final, chainAnswers: [final], firstAnswers: [first],
                             error: nil, createdAt: 0, finishedAt: 1, stages: [])
        }
        let before = [simple("a", seed: 1, truth: "1", first: "1", final: "1"), simple("b", seed: 2, truth: "2", first: "0", final: "0"),
                      simple("c", seed: 3, truth: "3", first: "0", final: "3"), simple("only before", seed: 4, truth: "4", first: "4", final: "4")]
        let after = [simple("c", seed: 3, truth: "3", first: "3", final: "0"), simple("b", seed: 2, truth: "2", first: "2", final: "2"),
                     simple("a", seed: 1, truth: "1", first: "1", final: "1"), simple("a", seed: 9, truth: "1", first: "0", final: "0")]
        // One chain per job: no per-chain counts and no gain over their mean (the report leaves both out, its JSON null).
        let oneChain = AnswerQuality(before)
        #expect(oneChain.singleByChain.isEmpty && oneChain.gainOverMeanSingle == nil)
        let comparison = AnswerComparison(before: before, after: after)
        #expect(comparison.questions == 3 && comparison.unmatched == 2)
        let single = try #require(comparison.rows.first), pipeline = try #require(comparison.rows.last)
        #expect(single.name == "single generator" && single.before == 1 && single.after == 3 && single.gained == 2 && single.lost == 0)
        #expect(pipeline.before == 2 && pipeline.after == 2 && pipeline.gained == 1 && pipeline.lost == 1 && pipeline.pValue == 1)
    }

    @Test("generate, verify, refine, critic; another round only when the critic rejects")
    func plan() throws {
        let plan = JobPlan(spec: JobSpec(question: "q", samples: 1, rounds: 2, noMemory: true), seed: 7)
        var done: [StageKey: StageRecord] = [:]
        func next() -> [JobPlan.Pending] {
            if case let .run(p) = plan.decide(finished: done) { return p }
            return []
        }
        #expect(next().map(\.payload.stage) == [.generate])
        done[StageKey(chain: 0, step: 0)] = record(0, 0, text: "#### 5")
        #expect(next().first?.payload.stage == .verify && next().first?.payload.answer == "#### 5")
        done[StageKey(chain: 0, step: 1)] = record(0, 1, text: "Wrong, should be 6")
        let refine = try #require(next().first, "no refinement planned after a critique")
        #expect(refine.payload.stage == .refine && refine.payload.critique == "Wrong, should be 6")
        done[StageKey(chain: 0, step: 2)] = record(0, 2, text: "#### 6")
        #expect(next().first?.payload.stage == .critic && next().first?.payload.answer == "#### 6")
        done[StageKey(chain: 0, step: 3)] = record(0, 3, text: "No", verdict: .reject)
        #expect(next().first?.step == 4 && next().first?.payload.stage == .verify)
        done[StageKey(chain: 0, step: 4)] = record(0, 4, text: "ok")
        done[StageKey(chain: 0, step: 5)] = record(0, 5, text: "no number")
        done[StageKey(chain: 0, step: 6)] = record(0, 6, text: "No", verdict: .reject)
        // Rounds are used up; a refinement without a number keeps the previous answer.
        #expect(plan.decide(finished: done) == .done(answer: "6", chainAnswers: ["6"], firstAnswers: ["5"]))

        var accepted: [StageKey: StageRecord] = [:]
        for (step, text) in [(0, "#### 1"), (1, "fine"), (2, "#### 2")] { accepted[StageKey(chain: 0, step: step)] = record(0, step, text: text) }
        accepted[StageKey(chain: 0, step: 3)] = record(0, 3, text: "Yes", verdict: .accept)
        #expect(plan.decide(finished: accepted) == .done(answer: "2", chainAnswers: ["2"], firstAnswers: ["1"]))
    }

    @Test("chains run in parallel with distinct, reproducible seeds, and are majority-voted")
    func chains() {
        let plan = JobPlan(spec: JobSpec(question: "q", samples: 3, rounds: 1, noMemory: true), seed: 42)
        guard case let .run(first) = plan.decide(finished: [:]) else { Issue.record("expected stages"); return }
        #expect(first.map(\.chain) == [0, 1, 2])
        #expect(Set(first.map(\.payload.seed)).count == 3)
        #expect(JobPlan(spec: plan.spec, seed: 42).stageSeed(chain: 1, step: 2) == plan.stageSeed(chain: 1, step: 2))
        var done: [StageKey: StageRecord] = [:]
        for (chain, answer) in [(0, "4"), (1, "5"), (2, "5")] {
            done[StageKey(chain: chain, step: 0)] = record(chain, 0, text: "#### \(answer)")
            done[StageKey(chain: chain, step: 1)] = record(chain, 1, text: "ok")
            done[StageKey(chain: chain, step: 2)] = record(chain, 2, text: "#### \(answer)")
            done[StageKey(chain: chain, step: 3)] = record(chain, 3, text: "Yes", verdict: .accept)
        }
        #expect(plan.decide(finished: done) == .done(answer: "5", chainAnswers: ["4", "5", "5"], firstAnswers: ["4", "5", "5"]))

        // Three different answers: the chain whose generator was surest wins (chain 2), not the first.
        for (chain, answer, sureness) in [(0, "4", -0.6), (1, "5", -0.5), (2, "6", -0.2)] {
            var generated = record(chain, 0, text: "#### \(answer)")
            generated.result?.confidence = Confidence(mean: sureness, lowestWindow: sureness * 3, tail: -0.1)
            done[StageKey(chain: chain, step: 0)] = generated
            done[StageKey(chain: chain, step: 2)] = record(chain, 2, text: "#### \(answer)")
        }
        #expect(plan.decide(finished: done) == .done(answer: "6", chainAnswers: ["4", "5", "6"], firstAnswers: ["4", "5", "6"]))
    }
}

extension PipelineTests {
    @Test("the arithmetic checker recomputes every a op b = c exactly and names the wrong ones")
    func arithmeticChecker() {
        let solution = """
        She has 3 boxes of 12 eggs: 3 * 12 = 36 eggs.
        She sells 36 - 5 = 30 of them.
        At $2 each: 30 \\times 2 = $60, and (60 + 4) / 2 = 32.
        Total: 1,200 + 300 = 1,500. Tip: 10 x 3 = 30. Share: 10 / 3 = 3.33.
        Half of it: 7 ÷ 2 = 3.5, and 2.5 × 4 = 11.
        Morning: \\frac{2}{3} \\times 60 = 40, evening: \\dfrac{1}{4} \\cdot 20 = 6.
        """
        let mistakes = ArithmeticChecker.mistakes(in: solution)
        #expect(mistakes.map(\.expression) == ["36 - 5", "2.5 * 4", "(1)/(4) * 20"], "\(mistakes)")
        #expect(mistakes.first.map(\.description) == "36 - 5 = 30 is wrong: 36 - 5 = 31")
        // Not arithmetic, or nothing to check: no finding and no crash.
        for text in ["x = 5", "The answer = 42", "= 3", "3 =", "1 / 0 = 5", "((((", String(repeating: "1+", count: 10_000) + "1 = 2",
                     "#### 7", "\\boxed{12}", "2 = 2 = 2", "-4 + 1 = -3", "9 = 3 * 3"] {
            #expect(ArithmeticChecker.mistakes(in: text).isEmpty, "\(text)")
        }
        #expect(ArithmeticChecker.mistakes(in: "5 + 5 = 11\n4 * 4 = 15").count == 2)
    }

    @Test("refine: checked ends an undisputed chain after verification and refines a disputed one with the checker's findings")
    func checkedRefinement() throws {
        let plan = JobPlan(spec: JobSpec(question: "q", samples: 1, rounds: 2, noMemory: true, refine: .checked), seed: 7)
        var done: [StageKey: StageRecord] = [:]
        done[StageKey(chain: 0, step: 0)] = record(0, 0, text: "2 + 3 = 5\n\\boxed{5}")
        done[StageKey(chain: 0, step: 1)] = record(0, 1, text: "All steps correct. \\boxed{5}")
        #expect(plan.decide(finished: done) == .done(answer: "5", chainAnswers: ["5"], firstAnswers: ["5"]))

        // The verifier agrees but a computation is wrong: refined, the finding in the critique.
        done[StageKey(chain: 0, step: 0)] = record(0, 0, text: "2 + 3 = 6\n\\boxed{6}")
        done[StageKey(chain: 0, step: 1)] = record(0, 1, text: "Correct. \\boxed{6}")
        guard case let .run(stages) = plan.decide(finished: done), let refine = stages.first else { Issue.record("no refinement"); return }
        #expect(refine.payload.stage == .refine && refine.payload.critique?.contains("2 + 3 = 6 is wrong: 2 + 3 = 5") == true)

        // The verifier reaches another answer: refined with its critique alone.
        done[StageKey(chain: 0, step: 0)] = record(0, 0, text: "\\boxed{5}")
        done[StageKey(chain: 0, step: 1)] = record(0, 1, text: "Step 2 is wrong. \\boxed{7}")
        guard case let .run(again) = plan.decide(finished: done), let second = again.first else { Issue.record("no refinement"); return }
        #expect(second.payload.stage == .refine && second.payload.critique == "Step 2 is wrong. \\boxed{7}")

        // The default is MALT's: always refined.
        let always = JobPlan(spec: JobSpec(question: "q", samples: 1, rounds: 1, noMemory: true), seed: 7)
        done[StageKey(chain: 0, step: 1)] = record(0, 1, text: "Correct. \\boxed{5}")
        guard case let .run(malt) = always.decide(finished: done) else { Issue.record("no refinement"); return }
        #expect(malt.first?.payload.stage == .refine)
        let decoded = try JSONDecoder().decode(JobSpec.self, from: Data(#"{"question":"q","refine":"checked"}"#.utf8))
        #expect(decoded.refine == .checked)
        #expect(throws: (any Error).self) { try JSONDecoder().decode(JobSpec.self, from: Data(#"{"question":"q","refine":"sometimes"}"#.utf8)) }
    }

    @Test("with memory: retrieve first, examples to the generator and reflections to the refiner, remember last")
    func memoryStages() {
        let plan = JobPlan(spec: JobSpec(question: "What is 6 times 7?", samples: 1, rounds: 1), seed: 1, jobID: "j9")
        var done: [StageKey: StageRecord] = [:]
        guard case let .run(first) = plan.decide(finished: done), let retrieve = first.first else { Issue.record("no stage"); return }
        #expect(first.count == 1 && retrieve.payload.stage == .retrieve && retrieve.role == .memory && retrieve.chain == -1)
        #expect(retrieve.payload.memory == .retrieve(question: "What is 6 times 7?"))
        var r = record(0, 0, text: "")
        r.chain = -1; r.step = 0; r.stage = .retrieve; r.result = nil
        r.memory = MemoryOutcome(retrieved: MemoryRetrieval(examples: ["Problem: 6*6\nSolution:\n#### 36"], reflections: ["Check it."],
                                                             recalled: ["ep-1", "rf-2"]))
        done[JobPlan.retrieveKey] = r
        guard case let .run(second) = plan.decide(finished: done) else { Issue.record("no stage"); return }
        #expect(second.first?.payload.stage == .generate && second.first?.payload.examples == ["Problem: 6*6\nSolution:\n#### 36"])
        done[StageKey(chain: 0, step: 0)] = record(0, 0, text: "#### 42")
        done[StageKey(chain: 0, step: 1)] = record(0, 1, text: "ok")
        guard case let .run(third) = plan.decide(finished: done) else { Issue.record("no stage"); return }
        #expect(third.first?.payload.stage == .refine && third.first?.payload.reflections == ["Check it."])
        done[StageKey(chain: 0, step: 2)] = record(0, 2, text: "#### 42")
        done[StageKey(chain: 0, step: 3)] = record(0, 3, text: "Yes", verdict: .accept)
        guard case let .run(last) = plan.decide(finished: done), let remember = last.first else { Issue.record("no stage"); return }
        #expect(remember.payload.stage == .remember && remember.payload.memory?.op == .storeEpisode)
        #expect(remember.payload.memory?.episode == Episode(jobID: "j9", question: "What is 6 times 7?", solution: "#### 42", answer: "42",
                                                           firstAnswer: "42", accepted: true, score: 0.9))
        var m = record(0, 0, text: "")
        m.chain = -1; m.step = 1; m.stage = .remember
        done[JobPlan.rememberKey] = m
        #expect(plan.decide(finished: done) == .done(answer: "42", chainAnswers: ["42"], firstAnswers: ["42"]))
    }
}

@Suite("Submit bodies")
struct SubmitBodyTests {
    @Test("an idempotency key travels as idempotency_key and is 1 to 128 bytes")
    func idempotencyKey() throws {
        let body = SubmitBody(job: JobSpec(question: "q"), idempotencyKey: "k-1")
        let json = String(decoding: try JSONEncoder().encode(body), as: UTF8.self)
        #expect(json.contains("\"idempotency_key\":\"k-1\""))
        #expect(try JSONDecoder().decode(SubmitBody.self, from: Data(json.utf8)).idempotencyKey == "k-1")
        #expect(throws: ProtocolError.self) { try SubmitBody(job: JobSpec(question: "q"), idempotencyKey: "").validate() }
        #expect(throws: ProtocolError.self) {
            try SubmitBody(job: JobSpec(question: "q"), idempotencyKey: String(repeating: "k", count: 129)).validate()
        }
        #expect(throws: ProtocolError.self) { try SubmitBody(job: JobSpec(question: " "), idempotencyKey: "k").validate() }
        try SubmitBody(job: JobSpec(question: "q")).validate()
    }
}

@Suite("Job journal")
struct JournalTests {
    @Test("jobs and stages survive reopening; a stage is stored once")
    func journal() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString).sqlite").path
        let spec = JobSpec(question: "What is 2+2?", samples: 1, rounds: 1, seed: 9)
        let stage = StageRecord(chain: 0, step: 0, round: 0, stage: .generate, role: .generator, attempt: 1, worker: "w1",
                                payload: StagePayload(stage: .generate, question: spec.question, seed: 1),
                                result: FakeStage.result("#### 4", seed: 1),
                                extracted: "4", queuedSeconds: 0, seconds: 0.3, finishedAt: 100)
        do {
            let j = try JobJournal(path: path)
            try j.insertJob(id: "j1", spec: spec, seed: UInt64.max, createdAt: 1)
            #expect(try j.insertStage(jobID: "j1", stage))
            var again = stage
            again.attempt = 2
            again.worker = "w2"
            #expect(try j.insertStage(jobID: "j1", again) == false, "a second result for the same stage is ignored")
            #expect(throws: DatabaseError.self) { try j.insertJob(id: "j1", spec: spec, seed: 1, createdAt: 2) }
        }
        let reopened = try JobJournal(path: path)
        let unfinished = try reopened.unfinishedJobs()
        try #require(unfinished.count == 1, "\(unfinished.count) unfinished jobs after reopening, not 1")
        #expect(unfinished[0].seed == UInt64.max && unfinished[0].spec == spec)
        #expect(unfinished[0].stages == [stage])
        try reopened.finishJob(id: "j1", state: .done, answer: "4", chainAnswers: ["4"], firstAnswers: ["4"], error: nil, finishedAt: 5)
        #expect(try reopened.unfinishedJobs().isEmpty)
        let done = try #require(try reopened.job(id: "j1"))
        #expect(done.state == .done && done.answer == "4" && done.chainAnswers == ["4"] && done.finishedAt == 5)
        #expect(try reopened.job(id: "nope") == nil)
        #expect(try reopened.stageCount(jobID: "j1") == 1)
    }

    @Test("a journal of schema 2 is brought up to date (its jobs the local client's); one of a newer schema is refused, unchanged")
    func journalSchema() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString).sqlite").path
        do {
            let old = try Database.durable(path: path)
            try old.execute("""
                CREATE TABLE jobs (id TEXT PRIMARY KEY, spec TEXT NOT NULL, seed TEXT NOT NULL, state TEXT NOT NULL, answer TEXT,
                                   chain_answers TEXT, first_answers TEXT, error TEXT, created_at REAL NOT NULL, finished_at REAL);
                CREATE TABLE stages (job_id TEXT NOT NULL REFERENCES jobs(id), chain INTEGER NOT NULL, step INTEGER NOT NULL,
                                     record TEXT NOT NULL, finished_at REAL NOT NULL, PRIMARY KEY (job_id, chain, step));
                CREATE TABLE submissions (key TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id));
                INSERT INTO jobs (id, spec, seed, state, created_at) VALUES ('j-old', '{"question":"q","samples":1,"rounds":1}', '7', 'running', 1);
                PRAGMA user_version = 2;
                """)
        }
        let journal = try JobJournal(path: path)
        let job = try #require(try journal.job(id: "j-old"))
        #expect(job.owner == nil && TenantScope.everyTenant.sees(job.owner, client: JobOwner.localClient))
        #expect(!TenantScope.everyTenant.sees(job.owner, client: "client:someone"))
        try journal.insertJob(id: "j-new", spec: JobSpec(question: "q2"), seed: 1, createdAt: 2, owner: JobOwner(client: "client:a", tenant: "t"),
                              idempotencyKey: "k")
        #expect(try journal.job(id: "j-new")?.owner == JobOwner(client: "client:a", tenant: "t"))
        #expect(try Database(path: path).prepare("PRAGMA user_version").rows().first?.first as? Int64 == Int64(JobJournal.schemaVersion))
        // Newer than this Chorus: refused with the versions, and left as it was.
        try Database(path: path).execute("PRAGMA user_version = 99")
        do {
            _ = try JobJournal(path: path)
            Issue.record("a journal of schema 99 was opened")
        } catch let e as DatabaseError {
            #expect(e.message.contains("schema version 99, newer than this Chorus's \(JobJournal.schemaVersion)"), "\(e)")
        }
        #expect(try Database(path: path).prepare("PRAGMA user_version").rows().first?.first as? Int64 == 99)
    }

    @Test("prune removes jobs finished before a time, with their stages, and never a running one")
    func prune() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString).sqlite").path
        let j = try JobJournal(path: path)
        let spec = JobSpec(question: "q", seed: 1)
        let stage = StageRecord(chain: 0, step: 0, round: 0, stage: .generate, role: .generator, attempt: 1, worker: "w",
                                payload: StagePayload(stage: .generate, question: "q", seed: 1), extracted: nil, queuedSeconds: 0,
                                seconds: 0, finishedAt: 1)
        for (id, finished) in [("old-done", 10.0), ("old-failed", 20.0), ("new-done", 500.0), ("running", nil)] as [(String, Double?)] {
            try j.insertJob(id: id, spec: spec, seed: 1, createdAt: 1)
            try j.insertStage(jobID: id, stage)
            if let finished {
                try j.finishJob(id: id, state: id.hasSuffix("failed") ? .failed : .done, answer: nil, chainAnswers: [], firstAnswers: [],
                                error: nil, finishedAt: finished)
            }
        }
        #expect(try j.prune(finishedBefore: 100, dryRun: true) == (2, 2))
        #expect(try j.job(id: "old-done") != nil, "a dry run removes nothing")
        #expect(try j.prune(finishedBefore: 100) == (2, 2))
        #expect(try j.job(id: "old-done") == nil && j.job(id: "old-failed") == nil && j.stageCount(jobID: "old-done") == 0)
        #expect(try j.job(id: "new-done") != nil && j.unfinishedJobs().map(\.id) == ["running"])
        #expect(try j.prune(finishedBefore: 1e12) == (1, 1), "a running job is never removed")
        #expect(try j.unfinishedJobs().map(\.id) == ["running"] && j.stageCount(jobID: "running") == 1)
    }
}
