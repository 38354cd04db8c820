import Foundation
import Protocol
import TestKit
import Testing

/// The tests' own machinery: no wait without a deadline, ports kept until used.
@Suite("Test support")
struct TestKitTests {
    @Test("a program's exit status, standard output and error, and the signal that ended it")
    func runToEnd() throws {
        let r = try Program.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"], timeout: 10)
        #expect(r.status == 3 && r.signal == nil && r.stdout == "out\n" && r.stderr == "err\n", "\(r)")
        let merged = try Program.run("/bin/sh", ["-c", "echo one; echo two >&2; echo three"], mergeOutput: true, timeout: 10)
        #expect(merged.stdout == "one\ntwo\nthree\n" && merged.stderr.isEmpty)
        let killed = try Program.run("/bin/sh", ["-c", "kill -9 $$"], timeout: 10)
        #expect(killed.signal == 9 && killed.status == 137)
        let env = try Program.run("/bin/sh", ["-c", "echo \"$CHORUS_TESTKIT_X\"; pwd"], environment: ["CHORUS_TESTKIT_X": "y"], in: "/", timeout: 10)
        #expect(env.stdout == "y\n/\n")
        #expect(throws: TestKitError.self) { try Program.run("/no/such/program", [], timeout: 10) }
    }

    @Test("a program that does not end is killed at its deadline, with its process group, and the error says what it printed")
    func deadline() throws {
        let start = Date()
        do {
            _ = try Program.run("/bin/sh", ["-c", "echo waiting; sleep 60 & sleep 60"], timeout: 1)
            Issue.record("a program that sleeps 60 s returned within its 1 s deadline")
        } catch let e as TestKitError {
            #expect(e.description.contains("did not finish within 1 s") && e.description.contains("waiting"), "\(e)")
        }
        #expect(Date().timeIntervalSince(start) < 10)
    }

    @Test("a program that exits leaving a background child with its output open is not waited for beyond a grace period")
    func backgroundChild() throws {
        let start = Date()
        let r = try Program.run("/bin/sh", ["-c", "sleep 30 & echo started"], timeout: 60)
        #expect(r.status == 0 && r.stdout == "started\n")
        #expect(Date().timeIntervalSince(start) < 10)
        _ = try? Program.run("/usr/bin/pkill", ["-f", "^sleep 30$"], timeout: 10)
    }

    @Test("waiting for a process to exit, or for a condition, has a deadline that names what was awaited")
    func waits() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sleep")
        p.arguments = ["60"]
        try p.run()
        #expect(throws: TestKitError.self) { try p.exitStatus(within: 0.5, "a sleeper") }
        #expect(!p.isRunning, "the process was killed at the deadline")
        let quick = Process()
        quick.executableURL = URL(fileURLWithPath: "/bin/sh")
        quick.arguments = ["-c", "exit 4"]
        try quick.run()
        #expect(try quick.exitStatus(within: 10) == 4)
        do {
            try waitUntil(0.3, "a thing that never happens") { false }
            Issue.record("waitUntil returned for a condition that never held")
        } catch let e as TestKitError {
            #expect(e.description.contains("a thing that never happens"))
        }
        #expect(!eventually(0.2) { false } && eventually(1) { true })
    }

    @Test("a reserved port is kept from other programs until released; a server that reuses addresses can bind it at once")
    func portReservation() throws {
        let reservation = try PortReservation()
        #expect(reservation.port > 0)
        #expect(!canBind(reservation.port, reuse: false), "a plain bind got the reserved port")
        #expect(canBind(reservation.port, reuse: true, listen: true), "a server with SO_REUSEADDR could not listen on it")
        reservation.release()
        #expect(canBind(reservation.port, reuse: false), "the port is free once released")
        let holder = try ListeningSocket()
        #expect(!canBind(holder.port, reuse: true, listen: true), "a second listener got a port that is listened on")
    }

    func canBind(_ port: Int, reuse: Bool, listen doListen: Bool = false) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var one: Int32 = 1
        if reuse { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        return bound && (!doListen || listen(fd, 1) == 0)
    }

    @Test("fake stage results carry a critic's verdict and score")
    func fakes() throws {
        let accept = FakeStage.result("Yes", verdict: .accept)
        #expect(accept.verdict == .accept && accept.score == 1 && FakeStage.result("x").verdict == nil)
        #expect(try FakeStage.json("#### 4")["text"] == .string("#### 4"))
    }
}
