import Foundation
import Testing

/// Two hosts as two network namespaces (scripts/test-across-hosts.sh): needs
/// root and iproute2, as CI has; elsewhere the test is skipped.
@Suite("Across hosts", .serialized)
struct AcrossHostsTests {
    static var canMakeHosts: Bool {
        getuid() == 0 && ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test("broker on one host, workers and client on another, over tcp with CURVE and allow-lists: a job with memory completes; unlisted worker keys, client keys used by workers and unlisted clients are refused",
          .enabled(if: canMakeHosts, "needs root and iproute2 (ip netns)"))
    func acrossHosts() throws {
        let script = Cluster.repositoryRoot.appendingPathComponent("scripts/test-across-hosts.sh").path
        let (status, output) = try ScriptTests().run(script, [Cluster.binaries.path])
        #expect(status == 0 && output.contains("across-hosts: passed"), "\(output)")
    }
}
