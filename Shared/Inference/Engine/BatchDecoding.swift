/// Decoding several conversations together: one forward pass gives each
/// session its next token's logits, and every weight is read once for all
/// of them.
extension LanguageModel {
    /// Scratch for decoding up to `sequences` sessions together, each with a
    /// context of at most `contextLength` tokens (default: the model's).
    public func makeBatch(sequences: Int, contextLength: Int? = nil) -> DecoderBatch {
        decoder.makeBatch(sequences: sequences, contextLength: contextLength)
    }

    /// Appends `steps[i].token` to `steps[i].session` for every `i` in one
    /// pass, in decode mode, and returns each session's next-token logits (in
    /// `batch`, valid until its next use): the same bit for bit as
    /// `session.evaluate([token], mode: .decode)` would give.
    public func decode(_ steps: [(session: Session, token: Int32)], batch: DecoderBatch) throws(InferenceError) -> [UnsafeBufferPointer<Float>] {
        if steps.isEmpty { return [] }
        guard steps.count <= batch.capacity else {
            throw .invalidParameter("\(steps.count) sessions for a batch of \(batch.capacity); make a larger batch")
        }
        var seen = Set<ObjectIdentifier>()
        for (session, token) in steps {
            guard session.model === self else { throw .invalidParameter("a session of another model is in the batch") }
            guard seen.insert(ObjectIdentifier(session)).inserted else {
                throw .invalidParameter("a session appears twice in one batch")
            }
            guard session.state.length < session.state.capacity else {
                throw .promptTooLong(tokens: session.state.length + 1, context: session.state.capacity)
            }
            guard session.state.capacity <= batch.contextCapacity else {
                throw .invalidParameter("a session's context (\(session.state.capacity) tokens) is longer than the batch's (\(batch.contextCapacity))")
            }
            try session.validate([token])
        }
        decoder.decode(steps.map(\.token), states: steps.map(\.session.state), batch: batch)
        for (session, token) in steps { session.appendDecoded(token) }
        return steps.indices.map { batch.logits(row: $0) }
    }
}
