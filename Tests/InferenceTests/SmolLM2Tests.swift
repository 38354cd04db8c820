import Foundation
import Inference
import Testing

@Suite("SmolLM2 against llama.cpp", .serialized)
struct SmolLM2Tests {
    let model: LanguageModel
    init() throws { model = try TestSupport.model() }

    @Test("the configuration is read from the file")
    func configuration() {
        let c = model.config
        #expect(c.blockCount == 30 && c.embeddingLength == 576 && c.feedForwardLength == 1536)
        #expect(c.headCount == 9 && c.headCountKV == 3 && c.headDim == 64 && c.ropeDim == 64)
        #expect(c.rope.base == 100_000 && c.rope.style == .normal && abs(c.rmsEpsilon - 1e-5) < 1e-9 && c.contextLength == 8192)
        #expect(c.vocabularySize == 49152 && c.tiedOutput)
    }

    @Test("teacher-forced argmax equals llama.cpp's token wherever the margin is at least 0.5")
    func teacherForcedParity() throws {
        #expect(try expectTeacherForcedParity(model, "smollm2/reference.jsonl") == 510, "the fixture has 510 positions with margin >= 0.5")
    }

    @Test("perplexity on the fixture text is within 1% of llama.cpp's 4.7834")
    func perplexity() throws {
        let text = try String(contentsOf: TestSupport.fixtures.appendingPathComponent("smollm2/perplexity.txt"), encoding: .utf8)
        let tokens = model.tokenizer.encode(text, parseSpecial: false)
        let session = model.makeSession(contextLength: 512, batchSize: 512)
        var chunks = 0
        let ppl = try session.perplexity(tokens: tokens, context: 512) { done, total, _ in
            chunks = total
            #expect(done <= total)
        }
        #expect(chunks == 43)
        #expect(abs(ppl - 4.7834) / 4.7834 < 0.01, "PPL = \(ppl)")
    }

    @Test("greedy generation stops on <|im_end|> and includes it")
    func generationStopsAtEndOfTurn() throws {
        let session = model.makeSession(contextLength: 1024)
        let prompt = model.chatPrompt([.user("What is 2+3? Answer with just the number.")])
        var streamed = ""
        let result = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 64, sampling: .greedy)) { piece in
            streamed += piece
            return true
        }
        #expect(result.stopReason == .endOfGeneration)
        #expect(result.tokens.last == 2)
        #expect(streamed == result.text)
        #expect(result.text.contains("5"))
        #expect(result.decodeSteps == result.tokens.count - 1)
        #expect(result.promptTokensPerSecond > 0 && result.decodeTokensPerSecond > 0)
    }

    @Test("a token limit, a stop string and cancellation each end generation")
    func stopConditions() throws {
        let session = model.makeSession(contextLength: 1024)
        let prompt = model.chatPrompt([.user("Count from 1 to 20, separated by commas.")])
        let limited = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 5, sampling: .greedy))
        #expect(limited.tokens.count == 5 && limited.stopReason == .maxTokens)

        let full = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 60, sampling: .greedy))
        #expect(full.text.contains("5"), "\(full.text)")
        var streamed = ""
        let stopped = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 60, sampling: .greedy, stopStrings: ["5"])) {
            streamed += $0
            return true
        }
        #expect(stopped.stopReason == .stopString)
        #expect(!stopped.text.contains("5") && full.text.hasPrefix(stopped.text))
        #expect(streamed == stopped.text, "streamed text never includes the stop string")

        var pieces = 0
        let cancelled = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 60, sampling: .greedy)) { _ in
            pieces += 1
            return pieces < 3
        }
        #expect(cancelled.stopReason == .cancelled && pieces == 3)
        // The second request reused the cached prompt.
        #expect(full.reusedPromptTokens == prompt.count - 1)
    }

    @Test("the same seed gives the same text; sampling settings are honoured")
    func reproducibleSampling() throws {
        let session = model.makeSession(contextLength: 1024)
        let prompt = model.chatPrompt([.user("Write a short poem about the sea.")])
        let p = SamplingParameters(temperature: 1.0, topK: 40, topP: 0.95, minP: 0.05, seed: 1234)
        let a = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 24, sampling: p))
        let b = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 24, sampling: p))
        var q = p
        q.seed = 99
        let c = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 24, sampling: q))
        #expect(a.tokens == b.tokens && a.seed == 1234)
        #expect(a.tokens != c.tokens)
        #expect(b.reusedPromptTokens == prompt.count - 1, "the second request reused the cached prompt")
        // A fresh session gives the same tokens as one that reused its cache,
        // also after an unrelated request left other tokens in the cache.
        let fresh = try model.makeSession(contextLength: 1024).generate(GenerationRequest(prompt: prompt, maxTokens: 24, sampling: p))
        _ = try session.generate(GenerationRequest(prompt: model.chatPrompt([.user("Something else entirely.")]), maxTokens: 8, sampling: p))
        let afterOther = try session.generate(GenerationRequest(prompt: prompt, maxTokens: 24, sampling: p))
        #expect(fresh.tokens == a.tokens && afterOther.tokens == a.tokens)
    }

    @Test("bad requests get clear errors and leave the session usable")
    func badRequests() throws {
        let session = model.makeSession(contextLength: 32)
        #expect(throws: InferenceError.emptyPrompt) { try session.generate(GenerationRequest(prompt: [])) }
        #expect(throws: InferenceError.invalidToken(49152, vocabularySize: 49152)) {
            try session.generate(GenerationRequest(prompt: [1, 49152]))
        }
        #expect(throws: InferenceError.invalidToken(-1, vocabularySize: 49152)) { try session.score(prompt: [1], continuation: [-1]) }
        #expect(throws: InferenceError.promptTooLong(tokens: 40, context: 32)) {
            try session.generate(GenerationRequest(prompt: [Int32](repeating: 100, count: 40)))
        }
        #expect(throws: InferenceError.self) {
            try session.generate(GenerationRequest(prompt: [1, 2], sampling: SamplingParameters(temperature: -2)))
        }
        // Generation that reaches the end of the context stops cleanly.
        let result = try session.generate(GenerationRequest(prompt: [Int32](repeating: 100, count: 28), maxTokens: 100,
                                                            sampling: .greedy, stopAtEndOfGeneration: false))
        #expect(result.stopReason == .contextFull && result.tokens.count == 5)
        let ok = try session.generate(GenerationRequest(prompt: model.chatPrompt([.user("Hi")]).suffix(8).map { $0 }, maxTokens: 3, sampling: .greedy))
        #expect(ok.tokens.count >= 1)
    }

    @Test("concurrent sessions on one model give the same results as sequential ones")
    func concurrentSessions() async throws {
        let prompts = ["What is the capital of France?", "Name a primary color.", "What is 7 times 6?"].map { model.chatPrompt([.user($0)]) }
        let sequential = try prompts.map { p in
            try model.makeSession(contextLength: 256).generate(GenerationRequest(prompt: p, maxTokens: 12, sampling: .greedy)).tokens
        }
        let lm = model
        let concurrent = try await withThrowingTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, p) in prompts.enumerated() {
                group.addTask {
                    (i, try lm.makeSession(contextLength: 256).generate(GenerationRequest(prompt: p, maxTokens: 12, sampling: .greedy)).tokens)
                }
            }
            var out = [[Int32]](repeating: [], count: prompts.count)
            for try await (i, t) in group { out[i] = t }
            return out
        }
        #expect(concurrent == sequential)
    }

    @Test("sessions decoded together generate exactly what each generates alone; bad batches are refused")
    func batchedSessions() throws {
        let prompts = ["What is the capital of France?", "Name a primary color.", "What is 7 times 6?", "Say hello."]
            .map { model.chatPrompt([.user($0)]) }
        let steps = 10
        let alone = try prompts.map { p in
            try model.makeSession(contextLength: 128).generate(GenerationRequest(prompt: p, maxTokens: steps + 1, sampling: .greedy,
                                                                                stopAtEndOfGeneration: false)).tokens
        }
        let sessions = prompts.map { _ in model.makeSession(contextLength: 128) }
        var next = try zip(sessions, prompts).map { session, prompt in Sampler.argmax(try session.prepare(prompt).logits) }
        var together = next.map { [$0] }
        let batch = model.makeBatch(sequences: 4, contextLength: 128)
        for _ in 0..<steps {
            let logits = try model.decode(Array(zip(sessions, next)), batch: batch)
            next = logits.map { Sampler.argmax($0) }
            for i in 0..<next.count { together[i].append(next[i]) }
        }
        #expect(together == alone)
        #expect(zip(sessions, prompts).allSatisfy { $0.cachedTokens.count == $1.count + steps })

        // Refused, each with a reason, and nothing appended.
        let s = sessions[0], before = s.cachedTokens
        #expect(throws: InferenceError.invalidParameter("a session appears twice in one batch")) {
            try model.decode([(s, 1), (s, 2)], batch: batch)
        }
        #expect(throws: InferenceError.invalidToken(49152, vocabularySize: 49152)) { try model.decode([(s, 49152)], batch: batch) }
        #expect(throws: InferenceError.self) { try model.decode(Array(repeating: (s, Int32(1)), count: 5), batch: batch) }
        let long = model.makeSession(contextLength: 256)
        _ = try long.prepare([1, 2, 3])
        #expect(throws: InferenceError.self) { try model.decode([(long, 1)], batch: batch) }
        let full = model.makeSession(contextLength: 4)
        _ = try full.evaluate([1, 2, 3, 4])
        #expect(throws: InferenceError.promptTooLong(tokens: 5, context: 4)) { try model.decode([(full, 1)], batch: batch) }
        let other = try LanguageModel(path: model.path, threads: 1).makeSession(contextLength: 128)
        _ = try other.prepare([1, 2, 3])
        #expect(throws: InferenceError.invalidParameter("a session of another model is in the batch")) {
            try model.decode([(s, 1), (other, 1)], batch: batch)
        }
        #expect(s.cachedTokens == before)
        #expect(try model.decode([], batch: batch).isEmpty)
    }

    @Test("continuous batching: generations that join and leave at different steps produce exactly what each produces alone")
    func continuousBatching() throws {
        // Mixed prompt lengths, seeds, temperatures, stop strings and lengths.
        let questions = ["What is 7 times 6?", "Name three primary colors and say why they are called primary.", "Say hello.",
                         "Write one sentence about the sea.", "What is the capital of France? Answer in one word.", "Count from one to five."]
        let requests = questions.enumerated().map { i, q in
            GenerationRequest(prompt: model.chatPrompt([.user(q)]), maxTokens: [12, 30, 6, 24, 18, 40][i],
                              sampling: i % 3 == 0 ? .greedy : SamplingParameters(temperature: 0.8, topK: 40, topP: 0.95, seed: UInt64(11 + i)),
                              stopStrings: i == 5 ? ["four"] : [])
        }
        let alone = try requests.map { try model.makeSession(contextLength: 256).generate($0) }

        let sessions = model.makeSessions(4, contextLength: 256)
        let batch = GenerationBatch(model: model, capacity: 4, contextLength: 256)
        var texts = Array(repeating: "", count: requests.count)
        var results: [Int: GenerationResult] = [:]
        var waiting = Array(requests.indices)
        var slotOf: [ObjectIdentifier: Int] = [:]
        var free = sessions
        var steps = 0
        while results.count < requests.count {
            // One joins every other step while a slot is free.
            if steps % 2 == 0, let i = waiting.first, let session = free.popLast() {
                waiting.removeFirst()
                let g = try Generation(session: session, request: requests[i]) { texts[i] += $0; return true }
                if g.isFinished { results[i] = g.result; free.append(session) } else {
                    try batch.add(g)
                    slotOf[ObjectIdentifier(g)] = i
                }
            }
            for g in try batch.step() {
                let i = slotOf[ObjectIdentifier(g)]!
                results[i] = g.result
                free.append(g.session)
            }
            steps += 1
        }
        for i in requests.indices {
            #expect(results[i]!.tokens == alone[i].tokens, "request \(i)")
            #expect(results[i]!.text == alone[i].text && texts[i] == alone[i].text, "request \(i)")
            #expect(results[i]!.stopReason == alone[i].stopReason, "request \(i)")
        }
        #expect(Set(alone.map(\.tokens)).count == requests.count, "the requests differ")

        // A slot keeps its cache: a request that shares a prefix with the last one there reuses it, with the same result.
        let again = try Generation(session: sessions[0], request: GenerationRequest(prompt: sessions[0].cachedTokens.prefix(8) + [1, 2], maxTokens: 1, sampling: .greedy))
        #expect(again.result.reusedPromptTokens == 8)
        #expect(throws: InferenceError.self) {
            try batch.add(try Generation(session: model.makeSession(contextLength: 512), request: GenerationRequest(prompt: [1, 2], maxTokens: 4)))
        }
        // A prefix copied from another session's cache is what evaluating it would give: the same tokens.
        let donor = sessions[1], copier = model.makeSession(contextLength: 256)
        let shared = donor.promptModePrefix
        #expect(shared > 8)
        try copier.copyPrefix(of: donor, count: shared)
        let request = GenerationRequest(prompt: Array(donor.cachedTokens.prefix(shared)) + [28, 29, 30], maxTokens: 12,
                                        sampling: SamplingParameters(temperature: 0.7, seed: 5))
        let copied = try copier.generate(request), fresh = try model.makeSession(contextLength: 256).generate(request)
        #expect(copied.reusedPromptTokens == shared && copied.tokens == fresh.tokens)
        #expect(throws: InferenceError.self) { try copier.copyPrefix(of: donor, count: donor.promptModePrefix + 1) }
    }
}
