import Foundation
import Inference
import TestKit
import Testing

@Suite("Sentence embeddings (all-MiniLM-L6-v2)", .serialized)
struct EmbeddingTests {
    static var modelDirectory: String { Models.embedder }

    /// Loaded once; a test that needs it fails (the others run on) when it is not installed.
    static let loaded = Result { () throws -> SentenceEmbedder in
        do { return try SentenceEmbedder(directory: modelDirectory) } catch {
            throw TestKitError("cannot load the embedder \(modelDirectory): \(error). Run deploy/setup.sh first (it installs the models)")
        }
    }
    var embedder: SentenceEmbedder { get throws { try Self.loaded.get() } }

    func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) { dot += Double(x) * Double(y); na += Double(x * x); nb += Double(y * y) }
        return dot / (na.squareRoot() * nb.squareRoot())
    }

    @Test("word pieces are exact and every embedding has cosine at least 0.9999 with sentence-transformers'")
    func fixture() throws {
        let embedder = try self.embedder
        let lines = try TestSupport.jsonLines("minilm/embeddings.jsonl")
        #expect(lines.count == 48)
        let texts = try lines.map { try JSONRead.value($0, "text", as: String.self) }
        let batched = embedder.embed(texts)
        for (i, line) in lines.enumerated() {
            let expectedIDs = try JSONRead.int32s(line, "input_ids")
            let expected = try JSONRead.doubles(line, "embedding").map(Float.init)
            #expect(embedder.tokenize(texts[i]) == expectedIDs, "\(texts[i].prefix(60).debugDescription)")
            #expect(cosine(batched[i], expected) >= 0.9999, "\(texts[i].prefix(60).debugDescription)")
            let norm = batched[i].reduce(0) { $0 + Double($1 * $1) }.squareRoot()
            #expect(abs(norm - 1) < 1e-4)
        }
        // One at a time gives the same vectors as together.
        for i in [0, 40, 43, 47] {
            #expect(cosine(embedder.embed(texts[i]), batched[i]) > 0.999999)
        }
    }

    @Test("similar sentences are closer than unrelated ones")
    func similarity() throws {
        let embedder = try self.embedder
        let v = embedder.embed(["The cat sat on the mat.", "A feline rested upon the rug.", "Stock prices fell sharply today."])
        #expect(cosine(v[0], v[1]) > cosine(v[0], v[2]) + 0.2)
    }

    @Test("WordPiece: accents, CJK, punctuation, unknown characters, truncation")
    func wordPiece() throws {
        let t = try embedder.tokenizer
        #expect(t.encode("") == [101, 102])
        #expect(t.encode("Hello, World!") == [101, 7592, 1010, 2088, 999, 102])
        #expect(t.encode("naïve café 日本語 🙂") == [101, 15743, 7668, 1864, 1876, 1950, 100, 102])
        #expect(t.encode(String(repeating: "word ", count: 1000)).count == 256)
        #expect(t.encode(String(repeating: "word ", count: 1000), maxLength: 10).count == 10)
        // NUL, U+FFFD and a zero-width space are dropped before splitting, as BERT's text cleaning does.
        #expect(t.encode("a\u{0}b\u{FFFD}c\u{200B}") == t.encode("abc") && t.encode("abc").count == 3)
        #expect(t.encode(String(repeating: "x", count: 150)) == [101, 100, 102], "words over 100 characters are [UNK]")
    }

    @Test("corrupt or truncated safetensors files give errors naming what is wrong")
    func badSafetensors() throws {
        let real = try Data(contentsOf: URL(fileURLWithPath: Self.modelDirectory + "/model.safetensors"))
        func load(_ bytes: [UInt8]) -> SafetensorsError? {
            guard let path = try? writeTemporary(bytes, name: "w.safetensors") else { return nil }
            do { _ = try SafetensorsFile(path: path); return nil } catch { return error }
        }
        #expect(load([1, 2, 3]) == .tooSmall(size: 3))
        var huge = [UInt8](repeating: 0, count: 16)
        huge[0] = 0xFF; huge[1] = 0xFF
        #expect(load(huge) == .headerTooLarge(length: 0xFFFF, fileSize: 16))
        func file(_ header: String, data: Int = 0) -> [UInt8] {
            var out: [UInt8] = []
            withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
            return out + Array(header.utf8) + [UInt8](repeating: 0, count: data)
        }
        #expect(load(file("not json")) == .invalidHeader("not a JSON object"))
        let short = #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#
        let start = 8 + short.utf8.count
        #expect(load(file(short, data: 8))
                == .invalidTensor(name: "w", reason: "data ends at byte \(start + 16), past the end of the file (\(start + 8) bytes)"))
        #expect(load(file(#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}"#, data: 16))
                == .invalidTensor(name: "w", reason: "16 bytes of data for shape [3] of F32"))
        #expect(load(file(#"{"w": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 16]}}"#, data: 16)) == .unsupportedType(name: "w", dtype: "Q9"))
        #expect(load(file(#"{"w": {"shape": [4], "data_offsets": [0, 16]}}"#, data: 16)) == .invalidTensor(name: "w", reason: "no dtype"))
        let ok = try SafetensorsFile(path: try writeTemporary(file(#"{"w": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]}}"#, data: 16)))
        #expect(throws: SafetensorsError.unsupportedType(name: "w", dtype: "I32")) { try ok.floats("w", shape: [4]) }
        #expect(throws: SafetensorsError.missingTensor("v")) { try ok.floats("v", shape: [4]) }
        // The real file cut short.
        for cut in [8, 5000, 11_000, real.count / 2] {
            #expect(load(Array(real.prefix(cut))) != nil, "cut at \(cut)")
        }
        // A model folder without weights.
        #expect(throws: EmbedderError.self) { try SentenceEmbedder(directory: "/no/such/folder") }
    }
}
