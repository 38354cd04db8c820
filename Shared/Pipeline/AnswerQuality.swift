import Foundation
import Protocol

/// What collaboration adds, read off finished pipeline jobs: each job of k
/// chains holds, with the same model and seeds, a single generator's answer
/// (chain 1's first), the pipeline's (chain 1's final), the majority of the k
/// generators' answers (MV@k) and the job's vote over the chains' finals
/// (the pipeline with MV@k). Every configuration is scored on the same
/// questions, so each is compared with the single generator question by
/// question (McNemar's exact test), and every stage's effect is counted: how
/// often a refinement turns a right answer wrong and a wrong one right, and
/// what the critic accepts.
public struct AnswerQuality: Sendable {
    public struct Configuration: Sendable {
        public let name: String
        public let right: Int
        public let total: Int
        /// Wilson's 95% interval of the accuracy.
        public let interval: (low: Double, high: Double)
        /// Against the single generator: questions this one gets right and it
        /// wrong (`gained`), and the reverse (`lost`), with McNemar's exact p.
        public let gained: Int
        public let lost: Int
        public let pValue: Double
        public var accuracy: Double { total > 0 ? Double(right) / Double(total) : 0 }
    }

    /// What each refinement round did to the answers it was given, over every chain.
    public struct Flips: Sendable {
        public var rightToWrong = 0
        public var wrongToRight = 0
        public var rightKept = 0
        public var wrongKept = 0
        public var total: Int { rightToWrong + wrongToRight + rightKept + wrongKept }
    }

    /// The critic's verdicts on the refined answers it judged.
    public struct Verdicts: Sendable {
        public var acceptedRight = 0
        public var acceptedWrong = 0
        public var rejectedRight = 0
        public var rejectedWrong = 0
    }

    public let questions: Int
    public let configurations: [Configuration]
    /// Per round (0 first).
    public let flips: [Flips]
    public let verdicts: Verdicts
    /// Chains the verifier ended by agreeing with their answer (refinement
    /// `checked`): how many of those answers were right and wrong.
    public let agreedRight: Int
    public let agreedWrong: Int
    /// Tokens the model stages wrote, and read as prompts (all of them, and
    /// those taken from the workers' caches), per question.
    public let completionTokensPerQuestion: Double
    public let promptTokensPerQuestion: Double
    /// With several chains, each chain's first answer scored alone (right,
    /// per chain). Every chain is a single generator with a seed of its own,
    /// so their mean estimates one generator's accuracy better than chain 1
    /// alone, which one lucky or unlucky run of samples can move by several
    /// points.
    public let singleByChain: [Int]
    /// The job's answer (the pipeline with MV@k) against the mean of its
    /// chains' single answers, question by question: the mean difference in
    /// accuracy (0.037 is 3.7 points) and its 95% interval (paired, normal
    /// approximation). Nil with one chain.
    public let gainOverMeanSingle: (mean: Double, low: Double, high: Double)?

    public init(_ jobs: [JobRecord]) {
        let scored = jobs.filter { $0.state == .done }
        func right(_ answer: String?, _ job: JobRecord) -> Bool { AnswerExtractor.same(answer, job.spec.answer) }
        let columns = Self.outcomes(scored)
        let single = columns[0].right
        configurations = columns.map { name, outcomes in
            let k = outcomes.filter { $0 }.count
            let (gained, lost) = Self.discordant(from: single, to: outcomes)
            return Configuration(name: name, right: k, total: outcomes.count, interval: Self.wilson(k, outcomes.count),
                                 gained: gained, lost: lost, pValue: Self.mcnemar(gained, lost))
        }
        questions = scored.count
        // Whether each chain's first answer is right, per job, scored once for both figures below.
        let firstRight = scored.map { job in job.firstAnswers.map { right($0, job) } }
        let chains = firstRight.map(\.count).max() ?? 0
        singleByChain = chains > 1 ? (0..<chains).map { c in firstRight.filter { c < $0.count && $0[c] }.count } : []
        gainOverMeanSingle = chains > 1 ? Self.pairedMean(zip(scored, firstRight).map { job, firsts in
            let meanSingle = firsts.isEmpty ? 0 : Double(firsts.filter { $0 }.count) / Double(firsts.count)
            return (right(job.answer, job) ? 1 : 0) - meanSingle
        }) : nil

        var flips: [Flips] = []
        var verdicts = Verdicts()
        var agreedRight = 0, agreedWrong = 0
        for job in scored {
            let byChain = Dictionary(grouping: job.stages.filter { !$0.isMemoryStage }, by: \.chain)
            for (_, stages) in byChain {
                let ordered = stages.sorted { $0.step < $1.step }
                var current = ordered.first { $0.stage == .generate }.map { right($0.extracted, job) }
                for s in ordered {
                    switch s.stage {
                    case .refine:
                        let now = right(s.extracted, job)
                        if let before = current {
                            while flips.count <= s.round { flips.append(Flips()) }
                            switch (before, now) {
                            case (true, false): flips[s.round].rightToWrong += 1
                            case (false, true): flips[s.round].wrongToRight += 1
                            case (true, true): flips[s.round].rightKept += 1
                            case (false, false): flips[s.round].wrongKept += 1
                            }
                        }
                        current = now
                    case .verify where !ordered.contains(where: { $0.step == s.step + 1 }):
                        // Nothing after this verification: it ended the chain by agreeing.
                        if current == true { agreedRight += 1 } else if current == false { agreedWrong += 1 }
                    case .critic:
                        guard let isRight = current, let verdict = s.result?.verdict else { continue }
                        switch (verdict == .accept, isRight) {
                        case (true, true): verdicts.acceptedRight += 1
                        case (true, false): verdicts.acceptedWrong += 1
                        case (false, true): verdicts.rejectedRight += 1
                        case (false, false): verdicts.rejectedWrong += 1
                        }
                    default: break
                    }
                }
            }
        }
        self.flips = flips
        self.verdicts = verdicts
        self.agreedRight = agreedRight
        self.agreedWrong = agreedWrong
        let results = scored.flatMap(\.stages).compactMap(\.result)
        completionTokensPerQuestion = scored.isEmpty ? 0 : Double(results.reduce(0) { $0 + $1.completionTokens }) / Double(scored.count)
        promptTokensPerQuestion = scored.isEmpty ? 0 : Double(results.reduce(0) { $0 + $1.promptTokens }) / Double(scored.count)
    }

    /// Whether each job's answer is right, per configuration, in the jobs'
    /// order: the single generator (chain 1's first answer), the pipeline
    /// (chain 1's final), and with several chains MV@k of the generators and
    /// the pipeline with MV@k (the job's answer).
    public static func outcomes(_ jobs: [JobRecord]) -> [(name: String, right: [Bool])] {
        func right(_ answer: String?, _ job: JobRecord) -> Bool { AnswerExtractor.same(answer, job.spec.answer) }
        let samples = jobs.map(\.spec.samples).max() ?? 1
        var columns: [(name: String, right: [Bool])] = [("single generator", jobs.map { right($0.firstAnswers.first ?? nil, $0) })]
        columns.append(("pipeline (one chain)", jobs.map { right($0.chainAnswers.first ?? nil, $0) }))
        if samples > 1 {
            columns.append(("MV@\(samples) of generators", jobs.map { right(generatorVote($0), $0) }))
            columns.append(("pipeline with MV@\(samples)", jobs.map { right($0.answer, $0) }))
        }
        return columns
    }

    /// MV@k of a job's generators: their first answers voted as the broker
    /// votes, a tie going to the surest generation (`Confidence.mean`).
    public static func generatorVote(_ job: JobRecord) -> String? {
        let generations = Dictionary(job.stages.filter { $0.stage == .generate && $0.chain >= 0 }.map { ($0.chain, $0) }, uniquingKeysWith: { a, _ in a })
        return MajorityVote.winner(job.firstAnswers, confidences: job.firstAnswers.indices.map { generations[$0]?.result?.confidence?.mean })
    }

    /// The mean of paired differences and its 95% interval (normal
    /// approximation: mean +- 1.96 standard errors); nil without any.
    public static func pairedMean(_ differences: [Double]) -> (mean: Double, low: Double, high: Double)? {
        guard !differences.isEmpty else { return nil }
        let n = Double(differences.count), mean = differences.reduce(0, +) / n
        let variance = differences.count > 1 ? differences.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1) : 0
        let half = 1.96 * (variance / n).squareRoot()
        return (mean, mean - half, mean + half)
    }

    /// McNemar's discordant pairs between two outcomes of the same questions:
    /// right in `other` and wrong in `base` (`gained`), and the reverse (`lost`).
    public static func discordant(from base: [Bool], to other: [Bool]) -> (gained: Int, lost: Int) {
        (zip(base, other).filter { !$0 && $1 }.count, zip(base, other).filter { $0 && !$1 }.count)
    }

    /// Wilson's score interval for k successes in n trials (z = 1.96: 95%).
    public static func wilson(_ k: Int, _ n: Int, z: Double = 1.96) -> (low: Double, high: Double) {
        guard n > 0 else { return (0, 1) }
        let p = Double(k) / Double(n), nn = Double(n), z2 = z * z
        let centre = (p + z2 / (2 * nn)) / (1 + z2 / nn)
        let half = z * ((p * (1 - p) / nn + z2 / (4 * nn * nn)).squareRoot()) / (1 + z2 / nn)
        return (max(0, centre - half), min(1, centre + half))
    }

    /// McNemar's exact two-sided p-value for b and c discordant pairs: twice
    /// the binomial(b + c, 1/2) probability of min(b, c) or fewer, at most 1.
    public static func mcnemar(_ b: Int, _ c: Int) -> Double {
        let n = b + c
        guard n > 0 else { return 1 }
        var tail = 0.0
        // log C(n, i) summed in log space, to stay finite for large n.
        for i in 0...min(b, c) {
            tail += exp(lgamma(Double(n + 1)) - lgamma(Double(i + 1)) - lgamma(Double(n - i + 1)) - Double(n) * log(2.0))
        }
        return min(1, 2 * tail)
    }
}

/// Two evaluations of the same questions with the same seeds (a base team
/// and a trained one, say), compared question by question for every
/// configuration: right before and after, questions gained and lost, and
/// McNemar's exact test. Jobs are paired by question and seed; finished jobs
/// of either side without a partner are counted as unmatched and left out.
public struct AnswerComparison: Sendable {
    public struct Row: Sendable {
        public let name: String
        public let before: Int
        public let after: Int
        public let total: Int
        public let gained: Int
        public let lost: Int
        public let pValue: Double
        public var intervalBefore: (low: Double, high: Double) { AnswerQuality.wilson(before, total) }
        public var intervalAfter: (low: Double, high: Double) { AnswerQuality.wilson(after, total) }
    }

    public let questions: Int
    public let unmatched: Int
    public let rows: [Row]

    public init(before: [JobRecord], after: [JobRecord]) {
        struct Key: Hashable { let question: String; let seed: UInt64 }
        let done = { (jobs: [JobRecord]) in jobs.filter { $0.state == .done } }
        let afterByKey = Dictionary(done(after).map { (Key(question: $0.spec.question, seed: $0.seed), $0) }, uniquingKeysWith: { a, _ in a })
        var pairedBefore: [JobRecord] = [], pairedAfter: [JobRecord] = []
        var seen = Set<Key>()
        for job in done(before) {
            let key = Key(question: job.spec.question, seed: job.seed)
            guard let partner = afterByKey[key], seen.insert(key).inserted else { continue }
            pairedBefore.append(job)
            pairedAfter.append(partner)
        }
        questions = pairedBefore.count
        unmatched = done(before).count + done(after).count - 2 * pairedBefore.count
        let a = AnswerQuality.outcomes(pairedBefore), b = AnswerQuality.outcomes(pairedAfter)
        rows = zip(a, b).filter { $0.name == $1.name }.map { x, y in
            let (gained, lost) = AnswerQuality.discordant(from: x.right, to: y.right)
            return Row(name: x.name, before: x.right.filter { $0 }.count, after: y.right.filter { $0 }.count, total: x.right.count,
                       gained: gained, lost: lost, pValue: AnswerQuality.mcnemar(gained, lost))
        }
    }
}
