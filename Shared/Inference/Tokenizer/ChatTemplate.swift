import Foundation

/// One message of a conversation.
public struct ChatMessage: Sendable, Equatable, Codable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    public static func system(_ text: String) -> ChatMessage { ChatMessage(role: "system", content: text) }
    public static func user(_ text: String) -> ChatMessage { ChatMessage(role: "user", content: text) }
    public static func assistant(_ text: String) -> ChatMessage { ChatMessage(role: "assistant", content: text) }
}

/// How a model's turns are written, recognised from the file's
/// `tokenizer.chat_template` as llama.cpp recognises its built-in templates
/// (or from the vocabulary's turn tokens when the template is one Chorus does
/// not know). A model without a template is a base model: its prompt is the
/// messages' plain text, for it to continue.
public struct ChatTemplate: Sendable, Equatable {
    public enum Format: String, Sendable, Equatable, Codable {
        /// `<|im_start|>role\ncontent<|im_end|>\n` (SmolLM2, Qwen).
        case chatML = "chatml"
        /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` (Llama 3).
        case llama3
        /// `<start_of_turn>role\ncontent<end_of_turn>\n`, "model" for the
        /// assistant, the system prompt put in the first user turn (Gemma).
        case gemma
        /// The messages' text, separated by blank lines (base models).
        case plain
    }

    public var format: Format
    /// ChatML: the system prompt the model's template writes when a conversation has none.
    public var defaultSystemPrompt: String?

    public init(format: Format = .chatML, defaultSystemPrompt: String? = nil) {
        self.format = format
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    /// The format of a Jinja template; without one, `.plain`. `vocabulary`
    /// (token texts) decides for a template in none of the known formats.
    public init(jinja: String?, vocabulary: (String) -> Bool = { _ in false }) {
        guard let jinja else {
            self.init(format: .plain)
            return
        }
        if jinja.contains("<|im_start|>") {
            self.init(format: .chatML, defaultSystemPrompt: Self.chatMLDefaultSystem(jinja))
        } else if jinja.contains("<|start_header_id|>") {
            self.init(format: .llama3)
        } else if jinja.contains("<start_of_turn>") {
            self.init(format: .gemma)
        } else if vocabulary("<|im_start|>") {
            self.init(format: .chatML)
        } else if vocabulary("<|start_header_id|>") {
            self.init(format: .llama3)
        } else if vocabulary("<start_of_turn>") {
            self.init(format: .gemma)
        } else {
            self.init(format: .plain)
        }
    }

    /// The fixed system turn a ChatML template such as SmolLM2's writes when the
    /// first message is not a system one.
    static func chatMLDefaultSystem(_ jinja: String) -> String? {
        guard jinja.contains("!= 'system'") || jinja.contains("!= \"system\""),
              let start = jinja.range(of: "<|im_start|>system\n"),
              let end = jinja.range(of: "<|im_end|>", range: start.upperBound..<jinja.endIndex) else { return nil }
        return String(jinja[start.upperBound..<end.lowerBound])
    }

    /// Renders `messages`; with `addGenerationPrompt`, ends with the opening of
    /// an assistant turn for the model to complete. (The beginning-of-sequence
    /// token is the tokenizer's to add.)
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var text = ""
        switch format {
        case .chatML:
            if let system = defaultSystemPrompt, messages.first?.role != "system" {
                text += "<|im_start|>system\n\(system)<|im_end|>\n"
            }
            for m in messages { text += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { text += "<|im_start|>assistant\n" }
        case .llama3:
            for m in messages { text += "<|start_header_id|>\(m.role)<|end_header_id|>\n\n\(Self.trim(m.content))<|eot_id|>" }
            if addGenerationPrompt { text += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        case .gemma:
            var system = ""
            for m in messages {
                if m.role == "system" {
                    system += Self.trim(m.content)
                    continue
                }
                let role = m.role == "assistant" ? "model" : m.role
                text += "<start_of_turn>\(role)\n"
                if !system.isEmpty && role != "model" {
                    text += system + "\n\n"
                    system = ""
                }
                text += Self.trim(m.content) + "<end_of_turn>\n"
            }
            if addGenerationPrompt { text += "<start_of_turn>model\n" }
        case .plain:
            text = messages.map { Self.trim($0.content) }.filter { !$0.isEmpty }.joined(separator: "\n\n")
            if addGenerationPrompt && !text.isEmpty { text += "\n\n" }
        }
        return text
    }

    static func trim(_ s: String) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }
}
