import ArgumentParser
import Foundation

/// How every Chorus service starts and how a start fails, in one place: the
/// broker, the gateway and every role worker run their `main` through it.
public enum ServiceBoot {
    /// Names the log and sets its verbosity, turns SIGINT and SIGTERM into a
    /// stop request (`StopSignal`), loads the configuration (`adjust` applies
    /// the command line's options to it), then runs `body`. A
    /// `ValidationError` is the command line's mistake: ArgumentParser prints
    /// it with the usage. Any other error is logged as the service's last line
    /// and ends the process with `exitCode(error)` (1 unless it says otherwise).
    public static func run(_ name: String, verbose: Bool, config: String?,
                           adjust: (inout Configuration) throws -> Void = { _ in },
                           exitCode: (Error) -> Int32 = { _ in 1 },
                           _ body: (Configuration) throws -> Void) throws {
        Log.name = name
        Log.verbose = verbose
        StopSignal.install()
        do {
            var c = try Configuration(path: config)
            try adjust(&c)
            try body(c)
        } catch let e as ValidationError {
            throw e
        } catch let e as ExitCode {
            throw e
        } catch {
            Log.error("\(error)")
            throw ExitCode(exitCode(error))
        }
    }

    /// Starts a listener (an HTTP server on a task of its own) and waits until
    /// it listens. `start` starts it and calls `ready(nil)` once it listens, or
    /// `ready(error)` if it stops first. Throws, naming what it serves, the
    /// address and `fix` (what to set instead), if it failed or did not listen
    /// within `seconds`.
    public static func listen(_ what: String, host: String, port: Int, fix: String, within seconds: Double = 10,
                              start: (_ ready: @escaping @Sendable (Error?) -> Void) -> Void) throws {
        let outcome = ListenOutcome()
        start { outcome.set($0) }
        switch outcome.wait(seconds) {
        case nil:
            throw ListenError(description: "serving \(what) on \(host):\(port) did not start within \(Int(seconds)) s")
        case let .some(error?):
            throw ListenError(description: "cannot serve \(what) on \(host):\(port): \(error); \(fix)")
        case .some(nil):
            return
        }
    }
}

/// A listener that could not start.
public struct ListenError: Error, CustomStringConvertible {
    public let description: String
}

/// The first outcome of a listener's start, waited for by the starting thread.
private final class ListenOutcome: @unchecked Sendable {
    private let condition = NSCondition()
    private var outcome: Error??

    func set(_ error: Error?) {
        condition.lock()
        if outcome == nil { outcome = .some(error) }
        condition.broadcast()
        condition.unlock()
    }

    /// nil: no outcome within `seconds`; .some(nil): listening; .some(error): failed.
    func wait(_ seconds: Double) -> Error?? {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while outcome == nil && condition.wait(until: deadline) {}
        return outcome
    }
}
