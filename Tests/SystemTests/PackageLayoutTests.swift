import Foundation
import TestKit
import Testing

/// Package.swift says what each module may use: scripts/check-imports.py
/// holds it to the imports of the module's files, both ways, and each library
/// says in its header what it owns and must not know.
@Suite("package layout")
struct PackageLayoutTests {
    @Test("every target's declared dependencies equal what its files import; every library has its header")
    func dependenciesEqualImports() throws {
        let r = try Program.pythonScript("check-imports.py", [], timeout: 120)
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("equal their imports"), "\(r.output)")
    }

    @Test("check-imports.py names an undeclared import with its file, an unused dependency, and a library without its header")
    func findsDrift() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("chorus-layout-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let sources = root.appendingPathComponent("Sources/App")
        try FileManager.default.createDirectory(at: sources, withIntermediateDirectories: true)
        // An import inside a comment does not count; `@testable` and `import struct` do.
        try """
            import Foundation
            @testable import Journal
            import struct Bus.Socket
            // import Unused
            /* import Hidden */
            """.write(to: sources.appendingPathComponent("main.swift"), atomically: true, encoding: .utf8)
        let package = #"""
            {"targets": [{"name": "App", "type": "executable", "path": "Sources/App", "exclude": [],
                          "dependencies": [{"byName": ["Journal", null]}, {"product": ["ArgumentParser", "swift-argument-parser", null, null]}]},
                         {"name": "Bus", "type": "regular", "path": "Sources/Bus", "dependencies": []},
                         {"name": "Lib", "type": "regular", "path": "Shared/Lib", "dependencies": []},
                         {"name": "CZeroMQ", "type": "system", "path": "Sources/CZeroMQ"}]}
            """#
        // A library under Shared/ without its header paragraph.
        let library = root.appendingPathComponent("Shared/Lib")
        try FileManager.default.createDirectory(at: library, withIntermediateDirectories: true)
        try "import Foundation\n".write(to: library.appendingPathComponent("Lib.swift"), atomically: true, encoding: .utf8)
        let json = root.appendingPathComponent("package.json")
        try package.write(to: json, atomically: true, encoding: .utf8)
        let r = try Program.pythonScript("check-imports.py", ["--package-json", json.path, "--root", root.path])
        #expect(r.status == 1, "\(r.output)")
        #expect(r.output.contains("App: imports Bus (a target of this package) without declaring it, in Sources/App/main.swift"), "\(r.output)")
        #expect(r.output.contains("App: declares ArgumentParser but none of its files imports it"), "\(r.output)")
        #expect(!r.output.contains("Unused") && !r.output.contains("Hidden") && !r.output.contains("imports Journal"), "\(r.output)")
        #expect(r.output.contains("Lib: has no header (a Shared/Lib/Lib.swift opening with '// Lib: '"), "\(r.output)")
        #expect(r.output.contains("3 difference(s)"), "\(r.output)")

        try "not json".write(to: json, atomically: true, encoding: .utf8)
        let bad = try Program.pythonScript("check-imports.py", ["--package-json", json.path, "--root", root.path])
        #expect(bad.status == 2 && bad.output.contains("cannot read the package"), "\(bad.output)")
    }
}
