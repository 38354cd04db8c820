import Foundation
import Inference
import Protocol

/// A role's prompt, read from `deploy/prompts/<role>.txt` for every request, so
/// it can be edited without rebuilding or restarting anything.
///
/// Format: `[system]` and `[user]` sections (the system one optional); lines
/// starting with `#` are comments. Placeholders: `{question}`, `{answer}`,
/// `{critique}`, `{examples}`, `{reflections}`; the last two become a short
/// block when the job has any and nothing otherwise.
public struct PromptTemplate: Sendable, Equatable {
    public var system: String?
    public var user: String

    public static let placeholders: Set<String> = ["question", "answer", "critique", "examples", "reflections"]

    public enum Error: Swift.Error, CustomStringConvertible, Equatable {
        case unreadable(String)
        case invalid(path: String, reason: String)
        public var description: String {
            switch self {
            case let .unreadable(path): return "cannot read prompt file \(path)"
            case let .invalid(path, reason): return "prompt file \(path): \(reason)"
            }
        }
    }

    public static func load(_ path: String) throws -> PromptTemplate {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw Error.unreadable(path)
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String = "prompt") throws -> PromptTemplate {
        var sections: [String: [String]] = [:]
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("#") { continue }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed == "[system]" || trimmed == "[user]" {
                current = String(trimmed.dropFirst().dropLast())
                if sections[current!] != nil { throw Error.invalid(path: path, reason: "\(trimmed) appears twice") }
                sections[current!] = []
                continue
            }
            guard let section = current else {
                if trimmed.isEmpty { continue }
                throw Error.invalid(path: path, reason: "text before the first [system] or [user] section")
            }
            sections[section]!.append(line)
        }
        func body(_ name: String) -> String? {
            sections[name].map { $0.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        guard let user = body("user"), !user.isEmpty else { throw Error.invalid(path: path, reason: "no [user] section") }
        let template = PromptTemplate(system: body("system").flatMap { $0.isEmpty ? nil : $0 }, user: user)
        for name in template.usedPlaceholders where !placeholders.contains(name) {
            throw Error.invalid(path: path, reason: "unknown placeholder {\(name)} (known: \(placeholders.sorted().map { "{\($0)}" }.joined(separator: ", ")))")
        }
        return template
    }

    var usedPlaceholders: [String] {
        var names: [String] = []
        for text in [system ?? "", user] {
            var rest = Substring(text)
            while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
                let name = String(rest[rest.index(after: open)..<close])
                if !name.isEmpty && name.allSatisfy({ $0.isLetter || $0 == "_" }) { names.append(name) }
                rest = rest[rest.index(after: close)...]
            }
        }
        return names
    }

    /// The chat messages for a stage.
    public func messages(for p: StagePayload) -> [ChatMessage] {
        let examples = (p.examples ?? []).isEmpty ? "" :
            "Here are solved problems similar to this one:\n\n" + p.examples!.joined(separator: "\n\n") + "\n\nNow solve this one.\n\n"
        let reflections = (p.reflections ?? []).isEmpty ? "" :
            "Lessons from earlier mistakes on similar problems:\n" + p.reflections!.map { "- " + $0 }.joined(separator: "\n") + "\n\n"
        let values = ["question": p.question, "answer": p.answer ?? "", "critique": p.critique ?? "",
                      "examples": examples, "reflections": reflections]
        // One pass over the template: text that a value brings in (a question
        // that mentions "{answer}", say) is never expanded itself.
        func fill(_ text: String) -> String {
            var out = ""
            var rest = Substring(text)
            while let open = rest.firstIndex(of: "{") {
                out += rest[..<open]
                if let close = rest[open...].firstIndex(of: "}"), let value = values[String(rest[rest.index(after: open)..<close])] {
                    out += value
                    rest = rest[rest.index(after: close)...]
                } else {
                    out.append("{")
                    rest = rest[rest.index(after: open)...]
                }
            }
            return out + rest
        }
        var messages: [ChatMessage] = []
        if let system { messages.append(.system(fill(system))) }
        messages.append(.user(fill(user)))
        return messages
    }
}
