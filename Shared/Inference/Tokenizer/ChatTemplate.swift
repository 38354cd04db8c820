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
        renderMarked(messages, addGenerationPrompt: addGenerationPrompt).text
    }

    /// Renders `messages` as `render` does, marking where each message's
    /// content lies in the text: only the template's own text may hold
    /// special tokens (`Tokenizer.encodePrompt(_: RenderedChat)`).
    public func renderMarked(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> RenderedChat {
        var chat = RenderedChat()
        switch format {
        case .chatML:
            if let system = defaultSystemPrompt, messages.first?.role != "system" {
                chat.template("<|im_start|>system\n")
                chat.content(system)
                chat.template("<|im_end|>\n")
            }
            for m in messages {
                chat.template("<|im_start|>\(Self.role(m.role))\n")
                chat.content(m.content)
                chat.template("<|im_end|>\n")
            }
            if addGenerationPrompt { chat.template("<|im_start|>assistant\n") }
        case .llama3:
            for m in messages {
                chat.template("<|start_header_id|>\(Self.role(m.role))<|end_header_id|>\n\n")
                chat.content(Self.trim(m.content))
                chat.template("<|eot_id|>")
            }
            if addGenerationPrompt { chat.template("<|start_header_id|>assistant<|end_header_id|>\n\n") }
        case .gemma:
            var system = ""
            for m in messages {
                if m.role == "system" {
                    system += Self.trim(m.content)
                    continue
                }
                let role = m.role == "assistant" ? "model" : Self.role(m.role)
                chat.template("<start_of_turn>\(role)\n")
                if !system.isEmpty && role != "model" {
                    chat.content(system)
                    chat.template("\n\n")
                    system = ""
                }
                chat.content(Self.trim(m.content))
                chat.template("<end_of_turn>\n")
            }
            if addGenerationPrompt { chat.template("<start_of_turn>model\n") }
        case .plain:
            let parts = messages.map { Self.trim($0.content) }.filter { !$0.isEmpty }
            for (i, part) in parts.enumerated() {
                if i > 0 { chat.template("\n\n") }
                chat.content(part)
            }
            if addGenerationPrompt && !parts.isEmpty { chat.template("\n\n") }
        }
        return chat
    }

    /// A role as the template writes it: only letters, digits, '_' and '-'
    /// (a role is never text that could hold a special token).
    static func role(_ role: String) -> String {
        String(role.unicodeScalars.filter { CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "-" }.prefix(32).map(Character.init))
    }

    static func trim(_ s: String) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// A chat rendered by its template: the text, and the byte ranges of the
/// messages' contents in it.
public struct RenderedChat: Sendable, Equatable {
    public private(set) var text = ""
    public private(set) var contents: [Range<Int>] = []
    private var length = 0

    public init() {}

    mutating func template(_ part: String) {
        text += part
        length += part.utf8.count
    }

    mutating func content(_ part: String) {
        text += part
        let n = part.utf8.count
        if n > 0 { contents.append(length..<(length + n)) }
        length += n
    }
}
