import Foundation
import Testing

/// The shell scripts users run: each one parses, and the deploy scripts explain
/// themselves with --help without starting anything.
@Suite("deploy and benchmark scripts")
struct ScriptTests {
    func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.currentDirectoryURL = Cluster.repositoryRoot
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func scripts(_ folder: String) throws -> [String] {
        let dir = Cluster.repositoryRoot.appendingPathComponent(folder)
        return try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sh") }.sorted()
            .map { dir.appendingPathComponent($0).path }
    }

    @Test("every shell script parses (bash -n)")
    func parse() throws {
        let all = try scripts("deploy") + scripts("scripts") + [Cluster.repositoryRoot.appendingPathComponent(".ci/run").path]
        #expect(all.count >= 8)
        for path in all {
            let r = try run("/bin/bash", ["-n", path])
            #expect(r.status == 0, "\(path): \(r.output)")
        }
    }

    @Test("deploy scripts print their help")
    func help() throws {
        for name in ["setup.sh", "up.sh", "down.sh", "demo.sh", "status.sh", "scale.sh", "logs.sh"] {
            let path = Cluster.repositoryRoot.appendingPathComponent("deploy/\(name)").path
            let r = try run(path, ["--help"])
            #expect(r.status == 0 && r.output.count > 20, "\(name) --help: \(r.status) \(r.output)")
        }
    }
}
