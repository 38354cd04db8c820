import Foundation
import Inference
import Testing

@Suite("GGUF reader")
struct GGUFReaderTests {
    /// A small valid file with every metadata type and two tensors.
    static func sampleBuilder(version: UInt32 = 3) -> GGUFBuilder {
        var b = GGUFBuilder()
        b.version = version
        b.add("general.architecture", .string("llama"))
        b.add("test.u8", .uint8(200))
        b.add("test.i8", .int8(-5))
        b.add("test.u16", .uint16(60000))
        b.add("test.i16", .int16(-30000))
        b.add("test.u32", .uint32(4_000_000_000))
        b.add("test.i32", .int32(-2_000_000_000))
        b.add("test.u64", .uint64(1 << 40))
        b.add("test.i64", .int64(-(1 << 40)))
        b.add("test.f32", .float32(1.5))
        b.add("test.f64", .float64(-2.25))
        b.add("test.bool", .bool(true))
        b.add("test.string", .string("héllo ✓"))
        b.add("test.array.strings", .array(.string, [.string("a"), .string(""), .string("ccc")]))
        b.add("test.array.ints", .array(.int32, [.int32(1), .int32(-2), .int32(3)]))
        b.add("test.array.nested", .array(.array, [.array(.uint8, [.uint8(1), .uint8(2)]), .array(.uint8, [])]))
        var random = TestRandom(1)
        b.addTensor("weights", [64, 3], .q4_1, randomBlocks(.q4_1, count: 192, random: &random))
        b.addTensor("norm", [64], .f32, randomBlocks(.f32, count: 64, random: &random))
        return b
    }

    func open(_ bytes: [UInt8]) -> Result<GGUFFile, GGUFError> {
        do {
            let path = try writeTemporary(bytes)
            return .success(try GGUFFile(path: path))
        } catch let e as GGUFError {
            return .failure(e)
        } catch {
            Issue.record("unexpected error \(error)")
            return .failure(.missingKey("?"))
        }
    }

    func expectError(_ bytes: [UInt8], _ check: (GGUFError) -> Bool, _ what: String,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        switch open(bytes) {
        case .success: Issue.record("\(what): the file was accepted", sourceLocation: sourceLocation)
        case let .failure(e): #expect(check(e), "\(what): got \(e)", sourceLocation: sourceLocation)
        }
    }

    @Test("reads every metadata type, versions 2 and 3", arguments: [UInt32(2), 3])
    func readsEverything(version: UInt32) throws {
        let file = try open(Self.sampleBuilder(version: version).build().bytes).get()
        #expect(file.version == version)
        #expect(file.metadata["test.u8"] == .uint8(200))
        #expect(file.metadata["test.i8"] == .int8(-5))
        #expect(file.metadata["test.u16"] == .uint16(60000))
        #expect(file.metadata["test.i16"] == .int16(-30000))
        #expect(file.metadata["test.u32"] == .uint32(4_000_000_000))
        #expect(file.metadata["test.i32"] == .int32(-2_000_000_000))
        #expect(file.metadata["test.u64"] == .uint64(1 << 40))
        #expect(file.metadata["test.i64"] == .int64(-(1 << 40)))
        #expect(file.metadata["test.f32"] == .float32(1.5))
        #expect(file.metadata["test.f64"] == .float64(-2.25))
        #expect(file.metadata["test.bool"] == .bool(true))
        #expect(try file.string("test.string") == "héllo ✓")
        #expect(try file.stringArray("test.array.strings") == ["a", "", "ccc"])
        #expect(try file.intArray("test.array.ints") == [1, -2, 3])
        #expect(file.metadata["test.array.nested"] == .array(.array, [.array(.uint8, [.uint8(1), .uint8(2)]), .array(.uint8, [])]))
        #expect(file.metadataKeys.first == "general.architecture")
        #expect(file.tensors.count == 2)
        let w = try #require(file.tensorInfo("weights"))
        #expect(w.dimensions == [64, 3] && w.type == .q4_1 && w.byteCount == 3 * 2 * 20 && w.rowCount == 3)
        #expect(file.dataOffset % 32 == 0)
        #expect(throws: GGUFError.wrongValueType(key: "test.string", expected: "an integer", found: .string)) {
            try file.int("test.string")
        }
        #expect(throws: GGUFError.missingKey("nope")) { try file.int("nope") }
    }

    @Test("tensor data is read in place from the mapping")
    func tensorDataInPlace() throws {
        let (bytes, dataOffset) = Self.sampleBuilder().build()
        let file = try open(bytes).get()
        let norm = try #require(file.tensorInfo("norm"))
        let p = file.data(of: norm)
        for i in 0..<64 {
            let expected = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: dataOffset + norm.offset + 4 * i, as: Float.self) }
            #expect(p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) == expected)
        }
    }

    @Test("a file truncated anywhere gives an error, never a crash")
    func truncatedAnywhere() {
        let (bytes, dataOffset) = Self.sampleBuilder().build()
        // Every cut inside the header, and several inside the data.
        var cuts = Array(0..<dataOffset)
        cuts += [dataOffset + 1, dataOffset + 100, bytes.count - 1]
        for cut in cuts {
            let result = open(Array(bytes[..<cut]))
            guard case let .failure(error) = result else {
                Issue.record("file cut at \(cut) of \(bytes.count) bytes was accepted")
                continue
            }
            let message = error.description
            #expect(!message.isEmpty)
            if cut == 0 {
                #expect(message.contains("empty"))
            } else if cut > 4 && cut < dataOffset - 32 {
                #expect(message.contains("truncated") || message.contains("more than the file can hold"), "cut \(cut): \(message)")
            }
        }
    }

    @Test("bad magic names what was found")
    func badMagic() {
        var b = Self.sampleBuilder()
        b.magic = Array("GGML".utf8)
        expectError(b.build().bytes, { $0 == .badMagic(found: Array("GGML".utf8)) }, "bad magic")
        expectError(Array("not a model at all, just text".utf8), { $0.description.contains("not a GGUF file") }, "text file")
    }

    @Test("unsupported versions are refused", arguments: [UInt32(1), 4, 0x0300_0000, 99])
    func badVersion(version: UInt32) {
        var b = Self.sampleBuilder()
        b.version = version
        expectError(b.build().bytes, { $0 == .unsupportedVersion(version) }, "version \(version)")
        if version == 0x0300_0000 {
            #expect(GGUFError.unsupportedVersion(version).description.contains("big-endian"))
        }
    }

    @Test("a tensor pointing past the end of the file")
    func tensorPastEnd() {
        var b = Self.sampleBuilder()
        b.tensors[1].offsetOverride = 1 << 20
        expectError(b.build().bytes, {
            if case let .tensorOutOfBounds(name, _, _, _) = $0 { return name == "norm" }
            return false
        }, "tensor past end")
        // An offset so large that adding it to the data offset overflows.
        b.tensors[1].offsetOverride = UInt64.max - 31
        expectError(b.build().bytes, { if case .tensorOutOfBounds = $0 { return true } else { return false } }, "overflowing offset")
        // The data of the last tensor cut short by one byte.
        let bytes = Self.sampleBuilder().build().bytes
        expectError(Array(bytes.dropLast()), { if case .tensorOutOfBounds(tensor: "norm", _, _, _) = $0 { return true } else { return false } },
                    "last tensor short by one byte")
    }

    @Test("an unknown tensor type is named")
    func unknownTensorType() {
        var b = Self.sampleBuilder()
        b.tensors[0].rawType = 4 // removed from ggml long ago
        expectError(b.build().bytes, { $0 == .unknownTensorType(tensor: "weights", rawType: 4) }, "type 4")
        b.tensors[0].rawType = 1234
        expectError(b.build().bytes, { $0 == .unknownTensorType(tensor: "weights", rawType: 1234) }, "type 1234")
        #expect(GGUFError.unknownTensorType(tensor: "weights", rawType: 1234).description.contains("weights"))
    }

    @Test("bad dimensions, misaligned offsets and partial blocks are refused")
    func badTensorInfo() {
        var b = Self.sampleBuilder()
        b.tensors[0].dimensions = [64, 0]
        expectError(b.build().bytes, { if case .invalidDimensions(tensor: "weights", _) = $0 { return true } else { return false } }, "zero dimension")
        b = Self.sampleBuilder()
        b.tensors[0].dimensions = [1, 1, 1, 1, 1]
        expectError(b.build().bytes, { $0 == .tooManyDimensions(tensor: "weights", count: 5) }, "five dimensions")
        b = Self.sampleBuilder()
        b.tensors[0].dimensions = [UInt64(1) << 40, UInt64(1) << 40]
        expectError(b.build().bytes, { if case .invalidDimensions = $0 { return true } else { return false } }, "huge dimensions")
        b = Self.sampleBuilder()
        b.tensors[0].dimensions = [48, 4]
        expectError(b.build().bytes, { if case .rowNotWholeBlocks(tensor: "weights", type: .q4_1, rowLength: 48) = $0 { return true } else { return false } },
                    "row of 48 Q4_1 values")
        b = Self.sampleBuilder()
        b.tensors[1].offsetOverride = 8
        expectError(b.build().bytes, { $0 == .misalignedTensor(tensor: "norm", offset: 8, alignment: 32) }, "misaligned")
    }

    @Test("corrupt metadata: unknown value type, duplicate key, absurd lengths, bad alignment")
    func corruptMetadata() {
        var bytes = Self.sampleBuilder().build().bytes
        // The type of the first key sits right after its name.
        let typeOffset = 4 + 4 + 8 + 8 + 8 + "general.architecture".utf8.count
        bytes[typeOffset] = 77
        expectError(bytes, { $0 == .invalidValueType(key: "general.architecture", rawType: 77) }, "value type 77")

        var b = Self.sampleBuilder()
        b.add("test.u8", .uint8(1))
        expectError(b.build().bytes, { $0 == .duplicateKey("test.u8") }, "duplicate key")

        bytes = Self.sampleBuilder().build().bytes
        // Make the first key's length enormous.
        for i in 0..<8 { bytes[24 + i] = 0xFF }
        expectError(bytes, { $0.description.contains("truncated") }, "huge string length")

        b = Self.sampleBuilder()
        b.metadata = [("big", .array(.uint64, []))]
        var raw = b.build().bytes
        // Array count at: header 24 + key (8 + 3) + type 4 + element type 4.
        let countOffset = 24 + 8 + 3 + 4 + 4
        for i in 0..<8 { raw[countOffset + i] = 0xFF }
        raw[countOffset + 7] = 0x0F
        expectError(raw, { $0.description.contains("truncated") }, "huge array count")

        b = Self.sampleBuilder()
        b.add("general.alignment", .uint32(24))
        expectError(b.build().bytes, { $0 == .invalidAlignment(24) }, "alignment 24")

        b = Self.sampleBuilder()
        var nested: GGUFValue = .array(.uint8, [])
        for _ in 0..<8 { nested = .array(.array, [nested]) }
        b.add("deep", nested)
        expectError(b.build().bytes, { $0 == .nestingTooDeep(key: "deep") }, "deep nesting")

        var counts = Self.sampleBuilder().build().bytes
        for i in 0..<8 { counts[16 + i] = 0xFF } // metadata count
        expectError(counts, { if case .countTooLarge = $0 { return true } else { return false } }, "huge metadata count")
    }

    @Test("honours general.alignment")
    func customAlignment() throws {
        var b = Self.sampleBuilder()
        b.alignment = 64
        b.add("general.alignment", .uint32(64))
        let file = try open(b.build().bytes).get()
        #expect(file.alignment == 64 && file.dataOffset % 64 == 0)
        #expect(file.tensors.allSatisfy { $0.offset % 64 == 0 })
    }

    @Test("a missing or unreadable file gives a clear error")
    func missingFile() {
        #expect(throws: GGUFError.file(.cannotOpen(path: "/nonexistent/model.gguf", reason: "No such file or directory"))) {
            try GGUFFile(path: "/nonexistent/model.gguf")
        }
        #expect(throws: GGUFError.self) { try GGUFFile(path: FileManager.default.temporaryDirectory.path) }
    }

    @Test("the SmolLM2 file: metadata and tensors")
    func realModel() throws {
        let file = try GGUFFile(path: try TestSupport.requireModelFile())
        #expect(file.version == 3)
        #expect(try file.string("general.architecture") == "llama")
        #expect(try file.int("llama.block_count") == 30)
        #expect(try file.int("llama.embedding_length") == 576)
        #expect(try file.stringArray("tokenizer.ggml.tokens").count == 49152)
        #expect(try file.stringArray("tokenizer.ggml.merges").count == 48900)
        #expect(file.tensors.count == 272)
        #expect(file.tensorInfo("token_embd.weight")?.type == .q8_0)
        #expect(file.tensorInfo("blk.0.ffn_down.weight")?.dimensions == [1536, 576])
        #expect(file.tensorInfo("blk.29.attn_q.weight")?.type == .q4_1)
        #expect(file.tensorInfo("output.weight") == nil)
    }

    @Test("the SmolLM2 file truncated at several points")
    func realModelTruncated() throws {
        let full = try Data(contentsOf: URL(fileURLWithPath: try TestSupport.requireModelFile()))
        let file = try GGUFFile(path: try TestSupport.requireModelFile())
        // Inside the header, inside the vocabulary, inside the tensor infos, and in the data.
        let cuts = [3, 10, 30, 1000, 200_000, 1_000_000, file.dataOffset - 10, file.dataOffset + 1000, full.count / 2, full.count - 1]
        for cut in cuts {
            let path = try writeTemporary(Array(full.prefix(cut)), name: "cut.gguf")
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect(throws: GGUFError.self, "cut at \(cut)") { try GGUFFile(path: path) }
            #expect(throws: ModelError.self, "cut at \(cut)") { try LanguageModel(path: path, threads: 1) }
        }
    }
}
