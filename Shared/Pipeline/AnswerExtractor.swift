import Foundation

/// MALT's fixed, deterministic answer extractor for math: the number after
/// `####`, else the last `\boxed{...}` (the number it holds, or the last one
/// in it), else the number after "the answer is", else the last number in the
/// text. Numbers are normalised (no thousands separators, no currency sign, no
/// trailing zeros), so "1,000.00" and "$1000" both give "1000".
public enum AnswerExtractor {
    public static func extract(_ text: String) -> String? {
        if let range = text.range(of: "####", options: .backwards),
           let n = firstNumber(in: text[range.upperBound...]) {
            return n
        }
        if let boxed = lastBoxed(in: text) { return boxed }
        let lower = text.lowercased()
        for marker in ["the answer is", "final answer is", "final answer:", "answer:"] {
            if let range = lower.range(of: marker, options: .backwards) {
                let offset = lower.distance(from: lower.startIndex, to: range.upperBound)
                let rest = text[text.index(text.startIndex, offsetBy: offset)...]
                if let n = firstNumber(in: rest.prefix(80)) { return n }
            }
        }
        return numbers(in: Substring(text)).last
    }

    /// The answer in the last `\boxed{...}` of a text (braces inside it
    /// matched): the number it is, or the last number it holds.
    static func lastBoxed(in text: String) -> String? {
        guard let start = text.range(of: "\\boxed{", options: .backwards) else { return nil }
        var depth = 1
        var end = start.upperBound
        while end < text.endIndex {
            if text[end] == "{" { depth += 1 }
            if text[end] == "}" { depth -= 1; if depth == 0 { break } }
            end = text.index(after: end)
        }
        guard depth == 0 else { return nil }
        let content = String(text[start.upperBound..<end])
            .replacingOccurrences(of: "\\$", with: "").replacingOccurrences(of: "\\,", with: "")
            .replacingOccurrences(of: "\\!", with: "")
        if let whole = normalize(content) { return whole }
        return numbers(in: Substring(content)).last
    }

    /// Whether two extracted answers are the same number.
    public static func same(_ a: String?, _ b: String?) -> Bool {
        guard let a, let b else { return false }
        return normalize(a) == normalize(b)
    }

    /// A number written in any usual way, in canonical form; nil if it is not a number.
    public static func normalize(_ text: String) -> String? {
        var s = text.trimmingCharacters(in: .whitespacesAndNewlines)
        s = s.replacingOccurrences(of: ",", with: "").replacingOccurrences(of: "$", with: "")
        while s.hasSuffix(".") { s.removeLast() }
        guard let value = Double(s), value.isFinite else { return nil }
        if value == value.rounded() && abs(value) < 1e15 { return String(Int64(value)) }
        var out = String(format: "%.6f", value)
        while out.hasSuffix("0") { out.removeLast() }
        if out.hasSuffix(".") { out.removeLast() }
        return out
    }

    static func firstNumber<S: StringProtocol>(in text: S) -> String? {
        numbers(in: Substring(text)).first
    }

    /// Numbers in order of appearance, normalised. A number is an optional
    /// minus sign, digits with optional thousands commas, and an optional decimal part.
    static func numbers(in text: Substring) -> [String] {
        var out: [String] = []
        let chars = Array(text)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            let startsNumber = c.isASCII && c.isNumber
            let negative = c == "-" && i + 1 < chars.count && chars[i + 1].isASCII && chars[i + 1].isNumber
                && (i == 0 || !(chars[i - 1].isLetter || chars[i - 1].isNumber))
            guard startsNumber || negative else { i += 1; continue }
            var token = negative ? "-" : ""
            var j = negative ? i + 1 : i
            var seenDot = false
            while j < chars.count {
                let d = chars[j]
                if d.isASCII && d.isNumber {
                    token.append(d)
                } else if d == "," && j + 1 < chars.count && chars[j + 1].isASCII && chars[j + 1].isNumber && !seenDot {
                    // thousands separator: skip
                } else if d == "." && !seenDot && j + 1 < chars.count && chars[j + 1].isASCII && chars[j + 1].isNumber {
                    seenDot = true
                    token.append(d)
                } else {
                    break
                }
                j += 1
            }
            if let n = normalize(token) { out.append(n) }
            i = j
        }
        return out
    }
}

/// Majority vote over the chains' answers (MALT's MV@k). Missing answers do
/// not vote. A tie goes to the answer of the surest chain when the chains'
/// confidences are given (the mean log-probability of each chain's
/// generation, `Confidence.mean`: a chain the model wrote more surely is more
/// often right), else to the answer given first.
public enum MajorityVote {
    public static func winner(_ answers: [String?], confidences: [Double?] = []) -> String? {
        var counts: [String: Int] = [:]
        var surest: [String: Double] = [:]
        var order: [String] = []
        for (i, a) in answers.enumerated() {
            guard let a, let n = AnswerExtractor.normalize(a) ?? Optional(a) else { continue }
            if counts[n] == nil { order.append(n) }
            counts[n, default: 0] += 1
            if i < confidences.count, let c = confidences[i], c.isFinite { surest[n] = max(surest[n] ?? -.infinity, c) }
        }
        var best: String?
        var bestCount = 0, bestSureness = -Double.infinity
        for a in order {
            let count = counts[a]!, sureness = surest[a] ?? -.infinity
            if count > bestCount || (count == bestCount && sureness > bestSureness) {
                (best, bestCount, bestSureness) = (a, count, sureness)
            }
        }
        return best
    }
}
