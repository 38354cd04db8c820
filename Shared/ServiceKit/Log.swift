import Foundation

/// Timestamped lines on standard error, which the deploy scripts send to var/log.
public enum Log {
    nonisolated(unsafe) public static var name = "chorus"
    nonisolated(unsafe) public static var verbose = false

    public static func info(_ message: @autoclosure () -> String) { write("info", message()) }
    public static func warning(_ message: @autoclosure () -> String) { write("warn", message()) }
    public static func error(_ message: @autoclosure () -> String) { write("error", message()) }
    public static func debug(_ message: @autoclosure () -> String) { if verbose { write("debug", message()) } }

    private static func write(_ level: String, _ message: String) {
        let now = Date()
        let stamp = ISO8601DateFormatter.string(from: now, timeZone: TimeZone(identifier: "UTC")!,
                                                formatOptions: [.withInternetDateTime, .withFractionalSeconds])
        FileHandle.standardError.write(Data("\(stamp) \(name)[\(getpid())] \(level): \(message)\n".utf8))
    }
}

/// Turns SIGINT and SIGTERM into a flag that service loops poll.
public enum StopSignal {
    nonisolated(unsafe) private static var requested: sig_atomic_t = 0
    nonisolated(unsafe) private static var count: sig_atomic_t = 0

    public static func install() {
        let handler: @convention(c) (Int32) -> Void = { _ in
            StopSignal.requested = 1
            StopSignal.count += 1
            if StopSignal.count >= 3 { _exit(130) }
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        signal(SIGPIPE, SIG_IGN)
        // A parent may have started us with these signals blocked (the mask is inherited).
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    public static var isRequested: Bool { requested != 0 }

    /// Forgets a request that was answered (a command line that asked what to do).
    public static func reset() {
        requested = 0
        count = 0
    }
}
