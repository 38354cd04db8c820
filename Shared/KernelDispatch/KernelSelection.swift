import Foundation
import Kernels
import KernelsPortable
#if canImport(KernelsAVX2)
import KernelsAVX2
#endif
#if canImport(KernelsAVXVNNI)
import KernelsAVXVNNI
#endif
#if canImport(KernelsAVX512VNNI)
import KernelsAVX512VNNI
#endif

/// Which kernels run: the fastest path this build has and this CPU runs,
/// chosen once at start, or the one CHORUS_KERNELS names (a slower one, for
/// tests and comparisons). One build runs on any x86-64 (and arm64, where
/// only the portable path is compiled).
public enum KernelSelection {
    /// The environment variable that forces a path.
    public static let variable = "CHORUS_KERNELS"

    /// Every path compiled into this build, slowest first.
    public static let compiled: [KernelTable] = {
        var tables = [KernelsPortable.kernels]
        #if canImport(KernelsAVX2)
        tables.append(KernelsAVX2.kernels)
        #endif
        #if canImport(KernelsAVXVNNI)
        tables.append(KernelsAVXVNNI.kernels)
        #endif
        #if canImport(KernelsAVX512VNNI)
        tables.append(KernelsAVX512VNNI.kernels)
        #endif
        return tables
    }()

    /// The compiled paths `cpu` runs, slowest first.
    public static func available(on cpu: CPUFeatures = .current) -> [KernelTable] {
        compiled.filter { $0.path.runs(on: cpu) }
    }

    /// The kernels to use on `cpu` given `environment`, or why the variable
    /// cannot be followed.
    public static func choose(cpu: CPUFeatures, environment: [String: String]) -> Result<KernelTable, Problem> {
        let runnable = compiled.filter { $0.path.runs(on: cpu) }
        guard let wanted = environment[variable]?.trimmingCharacters(in: .whitespaces).lowercased(), !wanted.isEmpty, wanted != "auto" else {
            return .success(runnable.last!)
        }
        guard let path = KernelPath(rawValue: wanted) else {
            return .failure(Problem(message: "\(variable)=\(wanted) is not a kernel path; use one of: auto, "
                + KernelPath.allCases.map(\.rawValue).joined(separator: ", ")))
        }
        guard let table = compiled.first(where: { $0.path == path }) else {
            return .failure(Problem(message: "\(variable)=\(wanted): this build has no \(wanted) kernels (it has: "
                + compiled.map(\.path.rawValue).joined(separator: ", ") + ")"))
        }
        guard path.runs(on: cpu) else {
            let missing = path.requires.filter { !cpu.has($0) }
            return .failure(Problem(message: "\(variable)=\(wanted) asks for kernels this CPU cannot run (it lacks "
                + missing.joined(separator: ", ") + "); it runs: " + runnable.map(\.path.rawValue).joined(separator: ", ")))
        }
        return .success(table)
    }

    /// Why CHORUS_KERNELS cannot be followed.
    public struct Problem: Error, Sendable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    private static let choice = choose(cpu: .current, environment: ProcessInfo.processInfo.environment)

    /// The kernels every model in this process uses (the best this CPU runs
    /// when CHORUS_KERNELS cannot be followed: loading a model then fails
    /// with `problem`, so nothing computes with them unasked).
    public static let table: KernelTable = {
        switch choice {
        case let .success(table): return table
        case .failure: return available().last!
        }
    }()

    /// The path in use.
    public static var path: KernelPath { table.path }

    /// Why CHORUS_KERNELS cannot be followed, if it cannot.
    public static var problem: Problem? {
        if case let .failure(problem) = choice { return problem }
        return nil
    }
}
