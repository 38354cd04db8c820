#!/usr/bin/env python3
"""Chorus beside llama.cpp on the same GGUF, same machine, same run.

For each thread count, alternates `chorus bench` and `llama-bench` for
--rounds rounds (so both see the same background noise), each invocation
measuring prompt processing of 512 tokens and generation of 128 tokens with
3 repetitions, and reports the median over rounds and the ratio
Chorus / llama.cpp. Prints a Markdown table (and JSON with --json).

usage: scripts/bench-inference.py [--rounds 5] [--threads 1 2]
         [--llama-bench PATH] [--model PATH] [--kernels PATH]
llama-bench comes from scripts/build-llama-bench.sh unless --llama-bench is given.
--kernels runs Chorus with those kernels (CHORUS_KERNELS: avx2, avx-vnni, ...);
the table says which ran.
"""
import argparse, json, os, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def chorus(binary, model, threads, pp, tg, kernels):
    env = dict(os.environ, CHORUS_KERNELS=kernels) if kernels else None
    out = subprocess.run([binary, "bench", "--model", model, "--threads", str(threads), "--prompt-tokens", str(pp),
                          "--gen-tokens", str(tg), "--repetitions", "3", "--json"], check=True, capture_output=True, text=True, env=env)
    d = json.loads(out.stdout)
    return d["prompt_tokens_per_second"], d["decode_tokens_per_second"], d.get("kernels", "?")

def llama(binary, model, threads, pp, tg):
    out = subprocess.run([binary, "-m", model, "-t", str(threads), "-p", str(pp), "-n", str(tg), "-r", "3", "-o", "json"],
                         check=True, capture_output=True, text=True)
    rows = json.loads(out.stdout)
    ppv = next(r["avg_ts"] for r in rows if r["n_prompt"] == pp and r["n_gen"] == 0)
    tgv = next(r["avg_ts"] for r in rows if r["n_gen"] == tg and r["n_prompt"] == 0)
    return ppv, tgv

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--llama-bench")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--chorus", default=os.path.join(ROOT, ".build", "release", "chorus"))
    ap.add_argument("--kernels", help="CHORUS_KERNELS for Chorus (default: the best this CPU runs)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    lb = a.llama_bench or os.path.join(subprocess.run([os.path.join(ROOT, "scripts", "build-llama-bench.sh")], check=True,
                                                      capture_output=True, text=True).stdout.strip(), "llama-bench")
    results = []
    for t in a.threads:
        c_pp, c_tg, l_pp, l_tg = [], [], [], []
        for r in range(a.rounds):
            cp, ct, kernels = chorus(a.chorus, a.model, t, a.prompt_tokens, a.gen_tokens, a.kernels)
            lp, lt = llama(lb, a.model, t, a.prompt_tokens, a.gen_tokens)
            c_pp.append(cp); c_tg.append(ct); l_pp.append(lp); l_tg.append(lt)
            print(f"threads {t} round {r + 1}: chorus pp {cp:.1f} tg {ct:.1f} | llama.cpp pp {lp:.1f} tg {lt:.1f}", file=sys.stderr)
        m = statistics.median
        results.append({"threads": t, "rounds": a.rounds, "kernels": kernels,
                        "chorus_pp": m(c_pp), "llama_pp": m(l_pp), "pp_ratio": m([x / y for x, y in zip(c_pp, l_pp)]),
                        "chorus_tg": m(c_tg), "llama_tg": m(l_tg), "tg_ratio": m([x / y for x, y in zip(c_tg, l_tg)])})
    if a.json:
        print(json.dumps(results, indent=2))
        return
    pp, tg = a.prompt_tokens, a.gen_tokens
    print(f"| threads | kernels | test | Chorus tok/s | llama.cpp tok/s | ratio (median of per-round ratios) |")
    print(f"|--------:|---------|------|-------------:|----------------:|------:|")
    for r in results:
        print(f"| {r['threads']} | {r['kernels']} | pp{pp} | {r['chorus_pp']:.1f} | {r['llama_pp']:.1f} | {r['pp_ratio']:.2f}x |")
        print(f"| {r['threads']} | {r['kernels']} | tg{tg} | {r['chorus_tg']:.1f} | {r['llama_tg']:.1f} | {r['tg_ratio']:.2f}x |")

if __name__ == "__main__":
    main()
