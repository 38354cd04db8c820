import Foundation

/// A loaded model ready to serve requests: the decoder (whatever its
/// architecture), its tokenizer and its chat template. Load it once; create a
/// `Session` per conversation.
public final class LanguageModel: @unchecked Sendable {
    public let path: String
    public let file: GGUFFile
    public let decoder: any DecoderModel
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate
    /// Seconds spent loading.
    public let loadSeconds: Double

    public var config: ModelConfig { decoder.config }
    public var threads: Int { decoder.pool.threadCount }

    /// Loads a GGUF model. `threads` sizes the thread pool (default: every core).
    public init(path: String, threads: Int = ThreadPool.availableCores) throws(ModelError) {
        let start = Date()
        if let problem = KernelSelection.problem { throw .kernels(problem.message) }
        guard FileManager.default.fileExists(atPath: path) else { throw .modelNotFound(path: path) }
        self.path = path
        do { file = try GGUFFile(path: path) } catch { throw .gguf(error) }
        decoder = try Architectures.load(file, threads: threads)
        do { tokenizer = try Tokenizer(gguf: file) } catch { throw .tokenizer(error) }
        guard tokenizer.vocabularySize == decoder.config.vocabularySize else {
            throw .invalidConfiguration("the vocabulary has \(tokenizer.vocabularySize) tokens but token_embd.weight has \(decoder.config.vocabularySize) rows")
        }
        let tokenizer = self.tokenizer
        chatTemplate = ChatTemplate(jinja: file.metadata["tokenizer.chat_template"]?.stringValue) { tokenizer.id(of: $0) != nil }
        loadSeconds = Date().timeIntervalSince(start)
    }

    /// A new conversation state with its own KV cache.
    public func makeSession(contextLength: Int? = nil, batchSize: Int = 512) -> Session {
        Session(model: self, state: decoder.makeState(contextLength: contextLength, batchSize: batchSize))
    }

    /// `count` sessions, each with its own KV cache, sharing scratch buffers:
    /// for one thread that runs them one pass at a time (a worker's slots,
    /// decoded together with `GenerationBatch`).
    public func makeSessions(_ count: Int, contextLength: Int? = nil, batchSize: Int = 512) -> [Session] {
        decoder.makeStates(count, contextLength: contextLength, batchSize: batchSize).map { Session(model: self, state: $0) }
    }

    /// Bytes of one session's KV cache with room for `contextLength` tokens (default: the model's).
    public func cacheBytes(contextLength: Int? = nil) -> Int {
        KVCache.byteCount(config: config, capacity: config.contextCapacity(contextLength))
    }

    /// The prompt tokens for a chat: messages rendered with the chat template,
    /// special tokens parsed in the template's text only (never in a message).
    public func chatPrompt(_ messages: [ChatMessage]) -> [Int32] {
        tokenizer.encodePrompt(chatTemplate.renderMarked(messages))
    }
}
