import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a program run to its end printed, and how it ended.
public struct ProgramResult: Sendable {
    /// The exit status, or 128 + the signal that ended it.
    public var status: Int32
    /// The signal that ended the program, if one did.
    public var signal: Int32?
    /// Standard output (with `mergeOutput`, standard error too, interleaved as written).
    public var stdout: String
    public var stderr: String
    /// Everything it printed: standard output, then standard error.
    public var output: String { stdout + stderr }
}

/// A failure of the tests' own machinery, saying what it was waiting for.
public struct TestKitError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs programs to their end, never longer than a deadline.
public enum Program {
    /// Runs `executable` with `arguments` and waits for it to exit and close
    /// its output, for at most `timeout` seconds; past that its whole process
    /// group is killed and `TestKitError` says what did not finish and what
    /// it had printed. Standard input is /dev/null.
    ///
    /// Spawned and reaped with posix_spawn and waitpid (Foundation's Process
    /// can miss its own child's exit among those of processes it starts). The
    /// program leads its own process group; its background children (which
    /// redirect their own output) may outlive it.
    ///
    /// - environment: variables set on top of this process's environment;
    ///   `clearChorusVariables` first removes every inherited CHORUS_ one.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                           clearChorusVariables: Bool = false, in directory: String? = nil,
                           mergeOutput: Bool = false, timeout: Double = 300) throws -> ProgramResult {
        var env = ProcessInfo.processInfo.environment
        if clearChorusVariables { for key in env.keys where key.hasPrefix("CHORUS_") { env[key] = nil } }
        for (k, v) in environment { env[k] = v }

        var out: [Int32] = [0, 0], err: [Int32] = [0, 0]
        guard pipe(&out) == 0 else { throw TestKitError("pipe: \(String(cString: strerror(errno)))") }
        if !mergeOutput {
            guard pipe(&err) == 0 else { close(out[0]); close(out[1]); throw TestKitError("pipe: \(String(cString: strerror(errno)))") }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, mergeOutput ? out[1] : err[1], 2)
        for fd in mergeOutput ? [out[0], out[1]] : [out[0], out[1], err[0], err[1]] {
            posix_spawn_file_actions_addclose(&actions, fd)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)

        // In another folder: through a shell that changes to it first (glibc's
        // posix_spawn_file_actions_addchdir_np is not visible to Swift).
        let command = directory.map { ["/bin/sh", "-c", "cd -- \"$0\" && exec \"$@\"", $0, executable] + arguments }
            ?? [executable] + arguments
        let argv = command.map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        // A bare name is looked up on PATH, as a shell would.
        let rc = command[0].contains("/")
            ? posix_spawn(&pid, command[0], &actions, &attributes, argv, envp)
            : posix_spawnp(&pid, command[0], &actions, &attributes, argv, envp)
        close(out[1])
        if !mergeOutput { close(err[1]) }
        guard rc == 0 else {
            close(out[0])
            if !mergeOutput { close(err[0]) }
            throw TestKitError("cannot run \(executable): \(String(cString: strerror(rc)))")
        }

        let deadline = Date().addingTimeInterval(timeout)
        var readers = [OutputReader(fd: out[0])] + (mergeOutput ? [] : [OutputReader(fd: err[0])])
        var exitStatus: Int32?
        var exitedAt: Date?
        // Read until both streams close, the program has exited and left them
        // open to a background child for 2 s, or the deadline.
        while readers.contains(where: { !$0.closed }) {
            if exitStatus == nil, let s = reap(pid, block: false) { exitStatus = s; exitedAt = Date() }
            if let exitedAt, Date().timeIntervalSince(exitedAt) > 2 { break }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { break }
            var fds = readers.filter { !$0.closed }.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            let n = poll(&fds, nfds_t(fds.count), Int32(min(left, 0.2) * 1000))
            if n < 0 && errno != EINTR { break }
            for i in readers.indices where !readers[i].closed { readers[i].readAvailable() }
        }
        while exitStatus == nil && Date() < deadline {
            if let s = reap(pid, block: false) { exitStatus = s } else { usleep(10_000) }
        }
        for r in readers where !r.closed { close(r.fd) }
        let stdout = String(decoding: readers[0].data, as: UTF8.self)
        let stderr = mergeOutput ? "" : String(decoding: readers[1].data, as: UTF8.self)
        guard let status = exitStatus else {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            _ = reap(pid, block: true)
            let command = ([executable] + arguments).joined(separator: " ")
            throw TestKitError("\(command) did not finish within \(Int(timeout)) s and was killed; it printed:\n"
                               + String((stdout + stderr).suffix(4000)))
        }
        let signal: Int32? = (status & 0x7f) == 0 ? nil : status & 0x7f
        return ProgramResult(status: signal.map { 128 + $0 } ?? (status >> 8) & 0xff, signal: signal, stdout: stdout, stderr: stderr)
    }

    /// waitpid's raw status for `pid` once it has exited, or nil while it runs.
    private static func reap(_ pid: pid_t, block: Bool) -> Int32? {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, block ? 0 : WNOHANG)
            if r == pid { return status }
            if r < 0 && errno == EINTR { continue }
            return r < 0 ? 0 : nil
        }
    }

    /// One output stream of a program, read as it comes.
    private struct OutputReader {
        let fd: Int32
        var data = Data()
        var closed = false

        init(fd: Int32) {
            self.fd = fd
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }

        mutating func readAvailable() {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n > 0 { data.append(contentsOf: buffer[0..<n]); continue }
                if n == 0 { close(fd); closed = true }
                else if errno == EINTR { continue }
                else if errno != EAGAIN && errno != EWOULDBLOCK { close(fd); closed = true }
                return
            }
        }
    }
}

extension Process {
    /// Waits for this process to exit, for at most `seconds`; past that it is
    /// killed with SIGKILL and `TestKitError` names `what` was expected.
    /// Returns its termination status (never read from a running process).
    @discardableResult
    public func exitStatus(within seconds: Double, _ what: @autoclosure () -> String = "the process") throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if isRunning {
            kill(processIdentifier, SIGKILL)
            while isRunning { Thread.sleep(forTimeInterval: 0.02) }
            throw TestKitError("\(what()) (pid \(processIdentifier)) did not exit within \(Int(seconds)) s and was killed")
        }
        return terminationStatus
    }
}

/// Waits until `condition` holds, checking every 0.1 s, for at most
/// `seconds`; then throws `TestKitError` saying what it was waiting for.
public func waitUntil(_ seconds: Double, _ what: @autoclosure () -> String, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        if try condition() { return }
        if Date() >= deadline { throw TestKitError("waited \(seconds) s for \(what())") }
        Thread.sleep(forTimeInterval: 0.1)
    }
}

/// Whether `condition` comes to hold within `seconds` (checked every 0.1 s).
public func eventually(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        Thread.sleep(forTimeInterval: 0.1)
    }
    return condition()
}

extension Program {
    /// Runs the built `chorus` command line to its end (see `run`).
    public static func chorus(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 300) throws -> ProgramResult {
        try run(Paths.binary("chorus"), arguments, environment: environment, timeout: timeout)
    }
}

extension Program {
    /// Runs one of the repository's Python scripts (`scripts/NAME`) with
    /// python3, from outside the repository (whose datasets/ folder would
    /// shadow the `datasets` package); a missing package is named with the fix.
    public static func pythonScript(_ name: String, _ arguments: [String], timeout: Double = 300) throws -> ProgramResult {
        var result = try run("python3", [Paths.inRepository("scripts/\(name)").path] + arguments, in: "/", mergeOutput: true, timeout: timeout)
        if result.status != 0, let range = result.stdout.range(of: "No module named '") {
            let module = result.stdout[range.upperBound...].prefix { $0 != "'" }
            result.stdout = "the \(module) Python package is missing; run deploy/setup.sh\n" + result.stdout
        }
        return result
    }

    /// scripts/check-exports.py on a harvest folder: TRL's columns and shapes,
    /// loaded with `datasets`; with `expectRows`, every file must have rows.
    public static func checkExports(_ directory: String, expectRows: Bool = false) throws -> ProgramResult {
        try pythonScript("check-exports.py", [directory] + (expectRows ? ["--expect-rows"] : []))
    }
}
