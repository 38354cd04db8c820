import Foundation

/// A checker that recomputes, exactly, every `a op b = c` a solution writes
/// (CMAT's checker: the answer is validated before it leaves). It finds
/// equations whose left side is plain arithmetic (numbers, + - * / and their
/// usual spellings ×, ÷, x, \times, \div, \cdot, parentheses) and whose right
/// side starts with a number, evaluates the left side in Swift (no code is
/// run), and reports those whose stated result is off by more than rounding.
/// It checks arithmetic only: a right computation of the wrong quantity
/// passes.
public enum ArithmeticChecker {
    /// One wrong computation: as written, and what it comes to.
    public struct Mistake: Sendable, Equatable, CustomStringConvertible {
        public let expression: String
        public let stated: Double
        public let actual: Double
        public var description: String {
            "\(expression) = \(Self.format(stated)) is wrong: \(expression) = \(Self.format(actual))"
        }

        static func format(_ v: Double) -> String {
            if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
            var s = String(format: "%.4f", v)
            while s.hasSuffix("0") { s.removeLast() }
            if s.hasSuffix(".") { s.removeLast() }
            return s
        }
    }

    /// The wrong computations in `text`, in order (at most 20).
    public static func mistakes(in text: String) -> [Mistake] {
        var out: [Mistake] = []
        let normalized = normalize(text)
        for line in normalized.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: "=", omittingEmptySubsequences: false)
            guard parts.count >= 2 else { continue }
            for i in 0..<(parts.count - 1) {
                // Only a real computation (an operator between numbers) is checked,
                // and tested before anything is evaluated.
                guard let expression = trailingExpression(parts[i]), expression.count < 120,
                      expression.contains(where: { "+-*/".contains($0) }), let stated = leadingNumber(parts[i + 1]),
                      let actual = evaluate(expression), actual.isFinite else { continue }
                if !agrees(stated, actual) {
                    out.append(Mistake(expression: expression.trimmingCharacters(in: .whitespaces), stated: stated, actual: actual))
                    if out.count >= 20 { return out }
                }
            }
        }
        return out
    }

    /// Stated and computed results agree exactly, or up to rounding to 0-3 decimal places.
    static func agrees(_ stated: Double, _ actual: Double) -> Bool {
        if abs(stated - actual) <= 1e-6 * max(1, abs(actual)) { return true }
        // Rounded results ("about 3.33", money to the cent).
        for places in [0, 1, 2, 3] {
            let scale = pow(10.0, Double(places))
            if (actual * scale).rounded() / scale == stated { return true }
        }
        return false
    }

    /// The text with LaTeX (fractions too) and typographic operators spelled plainly and
    /// thousands separators and currency signs gone.
    static func normalize(_ text: String) -> String {
        var s = text
        // \frac{a}{b} (and \dfrac, \tfrac) as (a)/(b), innermost first.
        for _ in 0..<4 {
            let next = s.replacingOccurrences(of: #"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}"#, with: "($1)/($2)", options: .regularExpression)
            if next == s { break }
            s = next
        }
        for (from, to) in [("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"), ("−", "-"), ("\\$", ""),
                           ("$", ""), ("\\(", ""), ("\\)", ""), ("\\[", ""), ("\\]", ""), ("\\,", ""), ("\\!", "")] {
            s = s.replacingOccurrences(of: from, with: to)
        }
        // "3 x 4" as multiplication: an x between spaces after a number.
        s = s.replacingOccurrences(of: #"(?<=\d) x (?=\d)"#, with: " * ", options: .regularExpression)
        s = s.replacingOccurrences(of: #"(?<=\d),(?=\d{3})"#, with: "", options: .regularExpression)
        return s
    }

    /// The arithmetic expression that ends `text` (before an `=`): the longest
    /// suffix made of numbers, operators, parentheses and spaces that holds a number.
    static func trailingExpression(_ text: Substring) -> String? {
        let allowed = Set("0123456789.+-*/() ")
        var start = text.endIndex
        while start > text.startIndex {
            let previous = text.index(before: start)
            guard allowed.contains(text[previous]) else { break }
            start = previous
        }
        var expression = String(text[start...]).trimmingCharacters(in: .whitespaces)
        // A leading operator or unmatched parenthesis belongs to text before it.
        while let first = expression.first, "+*/)".contains(first) { expression.removeFirst() }
        expression = expression.trimmingCharacters(in: .whitespaces)
        guard expression.contains(where: \.isNumber) else { return nil }
        return expression
    }

    /// The number `text` starts with (after spaces), if it starts with one.
    static func leadingNumber(_ text: Substring) -> Double? {
        let trimmed = text.drop { $0 == " " }
        var number = ""
        for c in trimmed {
            if c.isNumber || (c == "." && !number.contains(".")) || (c == "-" && number.isEmpty) { number.append(c) } else { break }
        }
        while number.hasSuffix(".") { number.removeLast() }
        return Double(number)
    }

    /// Evaluates + - * / with parentheses and the usual precedence; nil if
    /// the text is not such an expression.
    static func evaluate(_ expression: String) -> Double? {
        var parser = Parser(Array(expression.filter { $0 != " " }))
        guard let value = parser.sum(), parser.atEnd else { return nil }
        return value
    }

    struct Parser {
        let chars: [Character]
        var i = 0
        init(_ chars: [Character]) { self.chars = chars }
        var atEnd: Bool { i == chars.count }

        mutating func sum() -> Double? {
            guard var value = product() else { return nil }
            while i < chars.count, chars[i] == "+" || chars[i] == "-" {
                let op = chars[i]
                i += 1
                guard let rhs = product() else { return nil }
                value = op == "+" ? value + rhs : value - rhs
            }
            return value
        }

        mutating func product() -> Double? {
            guard var value = factor() else { return nil }
            while i < chars.count, chars[i] == "*" || chars[i] == "/" {
                let op = chars[i]
                i += 1
                guard let rhs = factor() else { return nil }
                if op == "/" && rhs == 0 { return nil }
                value = op == "*" ? value * rhs : value / rhs
            }
            return value
        }

        mutating func factor() -> Double? {
            guard i < chars.count else { return nil }
            if chars[i] == "-" {
                i += 1
                return factor().map { -$0 }
            }
            if chars[i] == "(" {
                i += 1
                guard let value = sum(), i < chars.count, chars[i] == ")" else { return nil }
                i += 1
                return value
            }
            var number = ""
            while i < chars.count, chars[i].isNumber || chars[i] == "." {
                number.append(chars[i])
                i += 1
            }
            return Double(number)
        }
    }
}
