#!/usr/bin/env python3
"""Many sequences decoded together: Chorus beside llama-batched-bench on the
same GGUF, same machine, same run.

For each thread count and each round, runs `chorus bench --parallel` and
`llama-batched-bench -c 4096 -npp 128 -ntg 64 -npl ...` one after the other
(so both see the same background noise), and reports per sequence count B
the median aggregate decode speed (llama.cpp's S_TG) over rounds and the
median of the per-round ratios Chorus / llama.cpp. Prints a Markdown table
(and JSON with --json).

usage: scripts/bench-parallel.py [--rounds 3] [--threads 1 2]
         [--sequences 1 2 4 8 16] [--model PATH] [--llama-bin DIR] [--kernels PATH]
llama-batched-bench comes from scripts/build-llama-bench.sh unless
--llama-bin is given. --kernels runs Chorus with those kernels
(CHORUS_KERNELS: avx2, avx-vnni, ...).
"""
import argparse, json, os, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def chorus(binary, model, threads, counts, pp, tg, repetitions, kernels=None):
    env = dict(os.environ, CHORUS_KERNELS=kernels) if kernels else None
    out = subprocess.run([binary, "bench", "--model", model, "--threads", str(threads), "--parallel", ",".join(map(str, counts)),
                          "--prompt-tokens", str(pp), "--gen-tokens", str(tg), "--repetitions", str(repetitions), "--json"],
                         check=True, capture_output=True, text=True, env=env)
    return {r["sequences"]: r["decode_tokens_per_second"] for r in json.loads(out.stdout)["parallel"]}

def llama(binary, model, threads, counts, pp, tg):
    out = subprocess.run([binary, "-m", model, "-t", str(threads), "-c", "4096", "-npp", str(pp), "-ntg", str(tg),
                          "-npl", ",".join(map(str, counts)), "--output-format", "jsonl"],
                         check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in (out.stdout + out.stderr).splitlines() if line.startswith("{") and "speed_tg" in line]
    return {r["pl"]: r["speed_tg"] for r in rows}

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sequences", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=3, help="chorus rounds per invocation (median); llama-batched-bench runs each once")
    ap.add_argument("--llama-bin")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--chorus", default=os.path.join(ROOT, ".build", "release", "chorus"))
    ap.add_argument("--kernels", help="CHORUS_KERNELS for Chorus (default: the best this CPU runs)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    bin_dir = a.llama_bin or subprocess.run([os.path.join(ROOT, "scripts", "build-llama-bench.sh")], check=True,
                                            capture_output=True, text=True).stdout.strip()
    lb = os.path.join(bin_dir, "llama-batched-bench")
    results = []
    for t in a.threads:
        c = {b: [] for b in a.sequences}
        l = {b: [] for b in a.sequences}
        for r in range(a.rounds):
            cr = chorus(a.chorus, a.model, t, a.sequences, a.prompt_tokens, a.gen_tokens, a.repetitions, a.kernels)
            lr = llama(lb, a.model, t, a.sequences, a.prompt_tokens, a.gen_tokens)
            for b in a.sequences:
                c[b].append(cr[b]); l[b].append(lr[b])
            print(f"threads {t} round {r + 1}: " + ", ".join(f"B={b} chorus {cr[b]:.1f} llama.cpp {lr[b]:.1f}" for b in a.sequences),
                  file=sys.stderr)
        m = statistics.median
        for b in a.sequences:
            results.append({"threads": t, "sequences": b, "rounds": a.rounds, "chorus": m(c[b]), "llama": m(l[b]),
                            "ratio": m([x / y for x, y in zip(c[b], l[b])])})
    if a.json:
        print(json.dumps(results, indent=2))
        return
    print("| threads | B | Chorus tok/s | llama.cpp S_TG tok/s | ratio (median of per-round ratios) |")
    print("|--------:|--:|-------------:|---------------------:|------:|")
    for r in results:
        print(f"| {r['threads']} | {r['sequences']} | {r['chorus']:.1f} | {r['llama']:.1f} | {r['ratio']:.2f}x |")

if __name__ == "__main__":
    main()
