import Foundation
import Pipeline

/// A question of a GSM8K-format dataset and its final number.
struct DatasetItem {
    let question: String
    let answer: String
}

/// Reads a JSON-lines file whose records have string fields `question` and
/// `answer` (the answer ending in its final number, as GSM8K's `#### n`).
func loadDataset(_ path: String) throws -> [DatasetItem] {
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
        throw CLIError("cannot read \(path)")
    }
    var items: [DatasetItem] = []
    for (i, line) in text.split(separator: "\n").enumerated() where !line.trimmingCharacters(in: .whitespaces).isEmpty {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let q = object["question"] as? String, let a = object["answer"] as? String else {
            throw CLIError("\(path):\(i + 1): expected an object with string fields \"question\" and \"answer\"")
        }
        guard let truth = AnswerExtractor.extract(a) else {
            throw CLIError("\(path):\(i + 1): the answer has no final number")
        }
        items.append(DatasetItem(question: q, answer: truth))
    }
    return items
}
