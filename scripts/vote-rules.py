#!/usr/bin/env python3
"""Scores other ways of choosing a job's answer from its chains, on jobs that
scripts/answer-quality.py has already run (its jobs.jsonl), without running a
model: the plain majority of the chains' final answers (what the broker does)
against majorities that drop or down-weight chains by a signal (cut off at
the token limit, a wrong computation found by the arithmetic checker, the
verifier's agreement, pooled generator and verifier answers, ties to the
shortest solution, ties to or votes weighted by the generator's confidence:
the log-probabilities of its tokens, `confidence` in a stage's result). Also prints how often each signal marks a right or a
wrong generation. Use it on tuning questions only (datasets/gsm8k/README.md).

    scripts/vote-rules.py var/tune/d331/jobs.jsonl [more jobs.jsonl ...]
"""
import collections, importlib.util, json, math, os, re, sys, warnings

# eval() below warns about text like "2 (3)" (read as a call); such a line is skipped.
warnings.filterwarnings("ignore", category=SyntaxWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("answer_quality", os.path.join(HERE, "answer-quality.py"))
aq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(aq)


def _plain(s):
    """LaTeX and typography to plain arithmetic, as Shared/Pipeline/ArithmeticChecker.swift reads it."""
    for _ in range(4):
        s = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", s)
    for a, b in [("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("÷", "/"), ("\\$", ""), ("$", ""),
                 ("\\(", ""), ("\\)", ""), ("\\[", ""), ("\\]", ""), ("\\,", "")]:
        s = s.replace(a, b)
    s = re.sub(r"(?<=\d) x (?=\d)", " * ", s)
    return re.sub(r"(?<=\d),(?=\d{3})", "", s)


def mistakes(text):
    """How many `a op b = c` computations in `text` are wrong (a close port of the Swift checker)."""
    n = 0
    for line in _plain(text).split("\n"):
        parts = line.split("=")
        for i in range(len(parts) - 1):
            m = re.search(r"[0-9.+\-*/() ]+$", parts[i])
            if not m or len(m.group(0)) > 200:
                continue
            e = m.group(0).strip().lstrip("+*/)").strip()
            if not re.search(r"\d", e) or not re.search(r"[+\-*/]", e) or not re.fullmatch(r"[0-9.+\-*/() ]+", e):
                continue
            if "**" in e or "//" in e:  # a power or floor division is not the text's arithmetic (and 9**9**9 never ends)
                continue
            stated = re.match(r"\s*(-?\d+(?:\.\d+)?)", parts[i + 1])
            if not stated:
                continue
            try:
                value = eval(e, {"__builtins__": {}})  # digits, operators and parentheses only (checked above)
            except Exception:
                continue
            c = float(stated.group(1))
            if not (abs(c - value) <= 1e-6 * max(1, abs(value)) or any(round(value, p) == c for p in range(4))):
                n += 1
    return n


def vote(weights, order):
    """The answer with the most weight; a tie goes to the first in `order`."""
    if not weights:
        return None
    best = max(weights.values())
    return next(a for a in order if weights.get(a) == best)


def chains_of(job):
    by_chain = collections.defaultdict(list)
    for s in sorted(job["stages"], key=lambda s: (s["chain"], s["step"])):
        if "result" in s and s["chain"] >= 0:
            by_chain[s["chain"]].append(s)
    out = {}
    for c, stages in by_chain.items():
        d = dict(first=None, final=None, verifier=[], agreed=None, cut=False, tokens=0, text="", confidence=None)
        for s in stages:
            r = s["result"]
            text = r.get("text", "")
            answer = aq.extract(text)
            if s["stage"] == "generate" or (s["stage"] == "refine" and answer is not None):
                if s["stage"] == "generate":
                    d["first"] = answer
                    d["confidence"] = r.get("confidence")
                d["final"], d["text"] = answer, text
                d["cut"] = r.get("stop_reason") != "end_of_generation"
                d["tokens"] = r.get("completion_tokens", 0)
            elif s["stage"] == "verify":
                d["verifier"].append(answer)
                d["agreed"] = answer == d["final"]
        d["mistakes"] = mistakes(d["text"])
        out[c] = d
    return [out[c] for c in sorted(out)]


def rules(chains):
    finals = [d["final"] for d in chains if d["final"] is not None]

    def majority(keep):
        kept = [d["final"] for d in chains if d["final"] is not None and keep(d)] or finals
        return vote(collections.Counter(kept), kept)

    def weighted(weight):
        w = collections.Counter()
        for d in chains:
            if d["final"] is not None:
                w[d["final"]] += weight(d)
        return vote(w, finals)

    pooled = collections.Counter()
    for d in chains:
        for a in [d["first"]] + d["verifier"][:1]:
            if a is not None:
                pooled[a] += 1
    def sure(d, key):
        return (d["confidence"] or {}).get(key, -1e9)

    def ties_to(key):
        return vote(collections.Counter(finals),
                    [d["final"] for d in sorted(chains, key=lambda d: -sure(d, key)) if d["final"] is not None])

    def weighted_by(key, alpha):
        return weighted(lambda d: math.exp(alpha * max(sure(d, key), -20)))

    return {
        "plain majority (the broker's)": majority(lambda d: True),
        "ties to the surest generator (mean)": ties_to("mean"),
        "ties to the surest generator (lowest window)": ties_to("lowest_window"),
        "ties to the surest generator (tail)": ties_to("tail"),
        "weighted exp(2 mean)": weighted_by("mean", 2),
        "weighted exp(5 mean)": weighted_by("mean", 5),
        "weighted exp(10 mean)": weighted_by("mean", 10),
        "weighted exp(2 lowest window)": weighted_by("lowest_window", 2),
        "weighted exp(5 lowest window)": weighted_by("lowest_window", 5),
        "weighted exp(5 tail)": weighted_by("tail", 5),
        "drop the least sure chain (mean)": majority(lambda d: sure(d, "mean") > min(sure(e, "mean") for e in chains)),
        "drop cut-off chains": majority(lambda d: not d["cut"]),
        "drop cut-off and checker-flagged": majority(lambda d: not d["cut"] and d["mistakes"] == 0),
        "weights 0.25 cut-off, 0.5 flagged": weighted(lambda d: (0.25 if d["cut"] else 1) * (0.5 if d["mistakes"] else 1)),
        "verifier-agreed chains count twice": weighted(lambda d: 2 if d["agreed"] else 1),
        "pool generator and verifier answers": vote(pooled, finals + [a for a in pooled if a not in finals]),
        "ties to the shortest solution": vote(collections.Counter(finals),
                                              [d["final"] for d in sorted(chains, key=lambda d: d["tokens"]) if d["final"] is not None]),
    }


def main(paths):
    if not paths or paths[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if paths else 2
    right = collections.Counter()
    signals = collections.defaultdict(lambda: [0, 0])
    questions = oracle = split = split_with_right = 0
    sureness = collections.defaultdict(list)  # key -> [(value, right)]
    within = collections.defaultdict(lambda: [0, 0, 0.0])  # key -> [questions, surest right, expected by chance]
    for path in paths:
        with open(path) as f:
            for line in f:
                job = json.loads(line)
                if job.get("state") != "done":
                    continue
                questions += 1
                truth = aq.normalize(job["spec"]["answer"])
                chains = chains_of(job)
                finals = [d["final"] for d in chains]
                oracle += truth in finals or truth in [d["first"] for d in chains]
                counts = collections.Counter(a for a in finals if a is not None)
                if not counts or counts.most_common(1)[0][1] < 2:
                    split += 1
                    split_with_right += truth in finals
                for name, answer in rules(chains).items():
                    right[name] += answer == truth
                # Within a question: where its generations disagree on rightness, is the surest one right?
                firsts = [(d["first"] == truth, d["confidence"]) for d in chains if d["confidence"]]
                if len(firsts) > 1 and 0 < sum(ok for ok, _ in firsts) < len(firsts):
                    for key in firsts[0][1]:
                        surest = max(firsts, key=lambda f: f[1][key])
                        within[key][0] += 1
                        within[key][1] += surest[0]
                        within[key][2] += sum(ok for ok, _ in firsts) / len(firsts)
                for s in job["stages"]:
                    if s["stage"] != "generate" or "result" not in s:
                        continue
                    r = s["result"]
                    a = aq.extract(r["text"])
                    for key, value in (r.get("confidence") or {}).items():
                        sureness[key].append((value, a == truth))
                    marks = {"every generation": True, "cut off at the token limit": r.get("stop_reason") != "end_of_generation",
                             "a wrong computation (checker)": mistakes(r["text"]) > 0, "no answer": a is None,
                             "a non-integer answer": a is not None and bool(re.search(r"[./]", a)),
                             "a negative answer": a is not None and a.startswith("-")}
                    for k, v in marks.items():
                        if v:
                            signals[k][0] += 1
                            signals[k][1] += a == truth
    print(f"{questions} questions; at least one chain right in {oracle}; no two chains agree in {split} "
          f"(a right chain among them in {split_with_right})")
    print("\nanswers right, by rule:")
    for name, n in right.items():
        print(f"  {name:40s} {n:4d}")
    for key, pairs in sureness.items():
        # How well the generator's confidence separates right from wrong generations:
        # the chance a right one is surer than a wrong one (AUROC), and accuracy by quartile.
        rights = [v for v, ok in pairs if ok]
        wrongs = [v for v, ok in pairs if not ok]
        auroc = sum((r > w) + 0.5 * (r == w) for r in rights for w in wrongs) / max(1, len(rights) * len(wrongs))
        ordered = sorted(pairs, key=lambda p: p[0])
        quarters = [ordered[i * len(ordered) // 4:(i + 1) * len(ordered) // 4] for i in range(4)]
        print(f"confidence {key}: AUROC {auroc:.2f}; right by quartile, least to most sure: "
              + ", ".join(f"{sum(ok for _, ok in q)}/{len(q)}" for q in quarters))
    for key, (n, ok, chance) in within.items():
        print(f"confidence {key}, within a question (generations right and wrong in {n}): the surest one right in {ok} "
              f"(a random one: {chance:.1f})")
    print("\ngenerations, by signal:")
    for k, (n, ok) in signals.items():
        print(f"  {k:32s} {n:5d}, right {ok:4d} ({100 * ok / max(n, 1):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
