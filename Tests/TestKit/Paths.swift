import Foundation

/// Where the tests find the repository, the built programs and the models.
public enum Paths {
    /// The repository's root folder.
    public static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static func inRepository(_ relativePath: String) -> URL { repositoryRoot.appendingPathComponent(relativePath) }

    /// The folder holding the built executables: $CHORUS_BIN, else the one
    /// beside the test bundle, else .build/release.
    public static var binaries: URL {
        if let p = environment("CHORUS_BIN") { return URL(fileURLWithPath: p) }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            if FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("chorus-broker").path) { return dir }
            dir = dir.deletingLastPathComponent()
        }
        return repositoryRoot.appendingPathComponent(".build/release")
    }

    /// A built executable, such as `chorus` or `chorus-broker`.
    public static func binary(_ name: String) -> String { binaries.appendingPathComponent(name).path }

    static func environment(_ key: String) -> String? {
        guard let value = ProcessInfo.processInfo.environment[key], !value.isEmpty else { return nil }
        return value
    }
}

/// The models deploy/setup.sh installs into models/, each overridable by an
/// environment variable.
public enum Models {
    /// SmolLM2-135M-Instruct Q4_1 ($CHORUS_MODEL).
    public static var smolLM2: String {
        Paths.environment("CHORUS_MODEL") ?? Paths.inRepository("models/SmolLM2-135M-Instruct.Q4_1.gguf").path
    }

    /// Gemma-3-270M Q4_K_M ($CHORUS_GEMMA_MODEL).
    public static var gemma: String {
        Paths.environment("CHORUS_GEMMA_MODEL") ?? Paths.inRepository("models/gemma-3-270m-q4_k_m.gguf").path
    }

    /// Qwen2.5-Coder-0.5B-Instruct ($CHORUS_QWEN05_MODEL).
    public static var qwen05: String {
        Paths.environment("CHORUS_QWEN05_MODEL") ?? Paths.inRepository("models/qwen2.5-coder-0.5b-instruct.gguf").path
    }

    /// Qwen2.5-Coder-1.5B-Instruct Q4_K_M ($CHORUS_QWEN15_MODEL).
    public static var qwen15: String {
        Paths.environment("CHORUS_QWEN15_MODEL") ?? Paths.inRepository("models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf").path
    }

    /// The all-MiniLM-L6-v2 folder ($EMBEDDER_MODEL).
    public static var embedder: String {
        Paths.environment("EMBEDDER_MODEL") ?? Paths.inRepository("models/all-minilm-l6-v2").path
    }

    /// `path` if it exists, else an error saying how to install it.
    public static func require(_ path: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else {
            throw TestKitError("the model \(path) is not installed; run deploy/setup.sh first (it installs the models)")
        }
        return path
    }
}

/// Reading JSON in tests without force casts: a value of the wrong type is
/// an error naming the key and what was there.
public enum JSONRead {
    public static func object(_ data: Data, _ what: @autoclosure () -> String = "the text") throws -> [String: Any] {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TestKitError("\(what()) is not a JSON object: \(String(decoding: data.prefix(300), as: UTF8.self))")
        }
        return object
    }

    public static func object(_ text: String, _ what: @autoclosure () -> String = "the text") throws -> [String: Any] {
        try object(Data(text.utf8), what())
    }

    public static func array(_ text: String, _ what: @autoclosure () -> String = "the text") throws -> [[String: Any]] {
        guard let array = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [[String: Any]] else {
            throw TestKitError("\(what()) is not a JSON array of objects: \(text.prefix(300))")
        }
        return array
    }

    /// `object[key]` as a `T`.
    public static func value<T>(_ object: [String: Any], _ key: String, as type: T.Type = T.self) throws -> T {
        guard let value = object[key] as? T else {
            throw TestKitError("'\(key)' is \(object[key].map { "\($0)" } ?? "missing"), not a \(T.self)")
        }
        return value
    }

    /// `object[key]` as an array of integers (JSON numbers).
    public static func ints(_ object: [String: Any], _ key: String) throws -> [Int] {
        try value(object, key, as: [NSNumber].self).map(\.intValue)
    }

    public static func int32s(_ object: [String: Any], _ key: String) throws -> [Int32] {
        try value(object, key, as: [NSNumber].self).map(\.int32Value)
    }

    public static func doubles(_ object: [String: Any], _ key: String) throws -> [Double] {
        try value(object, key, as: [NSNumber].self).map(\.doubleValue)
    }

    /// Each line of a JSON-lines file, as an object.
    public static func lines(_ url: URL) throws -> [[String: Any]] {
        let text = try String(contentsOf: url, encoding: .utf8)
        return try text.split(separator: "\n").enumerated().map { i, line in
            try object(String(line), "\(url.lastPathComponent):\(i + 1)")
        }
    }
}
