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

/// The ChatML format (`<|im_start|>role\ncontent<|im_end|>\n`) that SmolLM2 and
/// many other models use, with the system prompt the model's template inserts
/// when a conversation has none.
public struct ChatTemplate: Sendable, Equatable {
    public var defaultSystemPrompt: String?

    public init(defaultSystemPrompt: String? = nil) {
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    /// Reads the default system prompt from a ChatML Jinja template such as
    /// SmolLM2's, which writes a fixed system turn when the first message is not
    /// a system one.
    public init(jinja: String?) {
        guard let jinja, jinja.contains("!= 'system'") || jinja.contains("!= \"system\""),
              let start = jinja.range(of: "<|im_start|>system\n"),
              let end = jinja.range(of: "<|im_end|>", range: start.upperBound..<jinja.endIndex) else {
            self.init(defaultSystemPrompt: nil)
            return
        }
        self.init(defaultSystemPrompt: String(jinja[start.upperBound..<end.lowerBound]))
    }

    /// Renders `messages`; with `addGenerationPrompt`, ends with the opening of
    /// an assistant turn for the model to complete.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var text = ""
        if let system = defaultSystemPrompt, messages.first?.role != "system" {
            text += "<|im_start|>system\n\(system)<|im_end|>\n"
        }
        for m in messages {
            text += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n"
        }
        if addGenerationPrompt { text += "<|im_start|>assistant\n" }
        return text
    }
}
