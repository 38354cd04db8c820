import Foundation

/// A role: the name workers register under and the broker routes requests by
/// (docs/PROTOCOL.md). The broker routes any configured name (`CHORUS_ROLES`),
/// so a role is a checked name rather than a closed list; Chorus's own roles
/// are the constants below, and code names them through these, never as text.
/// On the wire it is its name, a JSON string.
public struct Role: RawRepresentable, Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public let rawValue: String

    /// Any name (validity is the broker's check: `isValidName`).
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ name: String) { self.init(rawValue: name) }

    public static let generator = Role("generator")
    public static let verifier = Role("verifier")
    public static let refiner = Role("refiner")
    public static let critic = Role("critic")
    public static let memory = Role("memory")
    public static let kvindex = Role("kvindex")
    public static let echo = Role("echo")

    /// The three roles of MALT's pipeline and tree, in the order they work.
    public static let malt: [Role] = [.generator, .verifier, .refiner]
    /// The roles that run a language model.
    public static let models: [Role] = malt + [.critic]
    /// The roles the broker knows unless configured otherwise.
    public static let defaults: [Role] = models + [.memory, .kvindex, .echo]

    /// 1 to 32 of a-z, 0-9 and '-', starting with a letter.
    public var isValidName: Bool { BusProtocol.isValidRoleName(rawValue) }

    public var description: String { rawValue }
    /// The prefix of the role's settings: GENERATOR_MODEL, GENERATOR_SLOTS.
    public var settingsPrefix: String { rawValue.uppercased().replacingOccurrences(of: "-", with: "_") }

    public static func < (a: Role, b: Role) -> Bool { a.rawValue < b.rawValue }

    public init(from decoder: Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// What the broker says a worker is doing: `idle` with no request in
/// flight, `busy` with at least one.
public enum WorkerState: String, Codable, Sendable, CaseIterable {
    case idle, busy
}

/// The critic's judgement of a chain's answer.
public enum Verdict: String, Codable, Sendable, CaseIterable {
    case accept, reject

    /// From the probability of accepting: accept from 0.5 up.
    public init(score: Double) { self = score >= 0.5 ? .accept : .reject }
}

/// The memory's stages (retrieve before the chains, remember after) belong
/// to no chain: the wire and the journal give them this chain number, and
/// code asks `isMemoryStage` rather than comparing it.
public enum MemoryStage {
    public static let chain = -1
    /// Their steps: retrieval first, storage last.
    public static let retrieveStep = 0
    public static let rememberStep = 1
}

extension JobEvent {
    /// Whether the event is about one of the memory's stages.
    public var isMemoryStage: Bool { chain == MemoryStage.chain }
}

extension StageRecord {
    /// Whether the record is one of the memory's stages.
    public var isMemoryStage: Bool { chain == MemoryStage.chain }
}
