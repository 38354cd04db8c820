import Foundation
import Inference
import Protocol
import RoleWorker
import Testing

@Suite("Role prompt templates")
struct PromptTemplateTests {
    static let promptsFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("deploy/prompts")

    func payload(_ stage: StageKind = .refine, question: String = "What is 2 + 3?", answer: String? = "2 + 3 = 6\n#### 6",
                 critique: String? = "The sum is wrong.", examples: [String]? = nil, reflections: [String]? = nil) -> StagePayload {
        StagePayload(stage: stage, question: question, answer: answer, critique: critique, examples: examples,
                     reflections: reflections, seed: 1)
    }

    @Test("sections, comments and every placeholder render into system and user messages")
    func rendering() throws {
        let template = try PromptTemplate.parse("""
            # a comment line, dropped
            [system]
            You check {question}.

            [user]
            # comments inside a section are dropped too
            {examples}{reflections}Q: {question}
            A: {answer}
            C: {critique}
            """)
        #expect(template.system == "You check {question}.")
        let plain = template.messages(for: payload())
        #expect(plain == [.system("You check What is 2 + 3?."),
                          .user("Q: What is 2 + 3?\nA: 2 + 3 = 6\n#### 6\nC: The sum is wrong.")])
        let full = template.messages(for: payload(examples: ["Problem: 1 + 1\nSolution:\n#### 2", "Problem: 2 + 2\nSolution:\n#### 4"],
                                                  reflections: ["Check the sum.", "Re-read the question."]))
        #expect(full[1].content == """
            Here are solved problems similar to this one:

            Problem: 1 + 1
            Solution:
            #### 2

            Problem: 2 + 2
            Solution:
            #### 4

            Now solve this one.

            Lessons from earlier mistakes on similar problems:
            - Check the sum.
            - Re-read the question.

            Q: What is 2 + 3?
            A: 2 + 3 = 6
            #### 6
            C: The sum is wrong.
            """)
        // Missing optional inputs become empty text; a template without [system] has one message.
        let userOnly = try PromptTemplate.parse("[user]\n{question} / {answer} / {critique}")
        #expect(userOnly.system == nil)
        #expect(userOnly.messages(for: payload(.generate, answer: nil, critique: nil)) == [.user("What is 2 + 3? /  / ")])
    }

    @Test("text a value brings in is not expanded again; braces that are no placeholder stay")
    func noSecondExpansion() throws {
        let template = try PromptTemplate.parse("[user]\nQ: {question}\nA: {answer}\nC: {critique}\nSet {x | x > 0} and {}")
        let messages = template.messages(for: payload(question: "Is {answer} or {critique} the {question}?", answer: "{critique}",
                                                      critique: "{answer}"))
        #expect(messages == [.user("Q: Is {answer} or {critique} the {question}?\nA: {critique}\nC: {answer}\nSet {x | x > 0} and {}")])
    }

    @Test("malformed templates are refused with the reason")
    func malformed() {
        func reason(_ text: String) -> String? {
            do { _ = try PromptTemplate.parse(text, path: "p.txt"); return nil } catch { return "\(error)" }
        }
        #expect(reason("[system]\nonly a system prompt") == "prompt file p.txt: no [user] section")
        #expect(reason("[user]\n   \n") == "prompt file p.txt: no [user] section")
        #expect(reason("hello\n[user]\nx") == "prompt file p.txt: text before the first [system] or [user] section")
        #expect(reason("[user]\na\n[user]\nb") == "prompt file p.txt: [user] appears twice")
        #expect(reason("[user]\n{question} {answr}")?.hasPrefix("prompt file p.txt: unknown placeholder {answr} (known: {answer}") == true)
        #expect(throws: PromptTemplate.Error.unreadable("/no/such/prompt.txt")) { try PromptTemplate.load("/no/such/prompt.txt") }
    }

    @Test("the shipped role prompts parse and use their stage's inputs")
    func shippedPrompts() throws {
        let uses: [String: [String]] = ["generator": ["{question}", "{examples}"], "verifier": ["{question}", "{answer}"],
                                        "refiner": ["{question}", "{answer}", "{critique}", "{reflections}"],
                                        "critic": ["{question}", "{answer}"]]
        for (role, placeholders) in uses {
            let path = Self.promptsFolder.appendingPathComponent("\(role).txt").path
            let template = try PromptTemplate.load(path)
            let text = (template.system ?? "") + template.user
            for p in placeholders { #expect(text.contains(p), "\(role).txt uses \(p)") }
            let user = try #require(template.messages(for: payload(question: "QUESTION-TEXT")).last)
            #expect(user.role == "user" && user.content.contains("QUESTION-TEXT"))
        }
    }
}

@Suite("Where generation stops: the answer line")
struct AnswerLineTests {
    @Test("the end of the first complete '#### <number>' line, in characters")
    func answerLine() {
        let end = StageHandler.answerLineEnd
        #expect(end("3 + 5 = 8\n#### 8\nand then more") == 16)
        #expect(end("#### 8\n") == 6)
        #expect(end("#### 8") == nil, "the line is not complete yet")
        #expect(end("no marker at all\n") == nil)
        #expect(end("#### eight\n") == nil, "no number on the line")
        #expect(end("####\n#### 12\nrest") == 12, "a '####' line without a number is skipped")
        #expect(end("Étape: 2 × 3 = 6 ✓\n#### 6\n") == 25, "characters, not bytes")
        #expect(end("#### 1\n#### 2\n") == 6, "the first one counts")
        let text = "Step 1\n#### 42 dollars\nTrailing text"
        #expect(end(text).map { String(text.prefix($0)) } == "Step 1\n#### 42 dollars")
    }
}
