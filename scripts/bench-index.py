#!/usr/bin/env python3
"""The kvindex's HNSW index beside hnswlib, in the same run.

Alternates hnswlib's baseline script and `chorus-kvindex bench` on the same
texmex files for several rounds and prints the medians: build inserts per
second, and recall@10 and queries per second at each ef, with Chorus/hnswlib
ratios.

usage: bench-index.py DATADIR --baseline PATH/hnswlib_baseline.py [--rounds 3] [--ef 16,32,64,128,256]
"""
import argparse, json, os, re, statistics, subprocess, sys

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("datadir")
    ap.add_argument("--baseline", required=True, help="hnswlib_baseline.py")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--chorus", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "chorus-kvindex"))
    a = ap.parse_args()
    efs = [int(x) for x in a.ef.split(",")]
    h = {"build": [], **{e: {"recall": [], "qps": []} for e in efs}}
    c = {"build": [], **{e: {"recall": [], "qps": []} for e in efs}}
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}: hnswlib", file=sys.stderr, flush=True)
        out = subprocess.run([sys.executable, a.baseline, a.datadir, "--ef", a.ef], check=True, capture_output=True, text=True).stdout
        h["build"].append(float(re.search(r"\(([\d.]+) inserts/s", out).group(1)))
        for m in re.finditer(r"ef=\s*(\d+) recall@10=([\d.]+) qps=([\d.]+)", out):
            e = int(m.group(1)); h[e]["recall"].append(float(m.group(2))); h[e]["qps"].append(float(m.group(3)))
        print(f"round {r + 1}/{a.rounds}: chorus", file=sys.stderr, flush=True)
        out = subprocess.run([a.chorus, "bench", a.datadir, "--ef", a.ef, "--json"], check=True, capture_output=True, text=True).stdout
        j = json.loads(out.strip().splitlines()[-1])
        c["build"].append(j["inserts_per_second"])
        for row in j["curve"]:
            c[row["ef"]]["recall"].append(row["recall_at_10"]); c[row["ef"]]["qps"].append(row["qps"])
    med = statistics.median
    print(f"medians of {a.rounds} rounds\n")
    print("| | Chorus | hnswlib | ratio |\n|---|---:|---:|---:|")
    print(f"| build, inserts/s | {med(c['build']):.0f} | {med(h['build']):.0f} | {med(c['build']) / med(h['build']):.2f}x |")
    print("\n| ef | Chorus recall@10 | Chorus qps | hnswlib recall@10 | hnswlib qps | qps ratio |\n|---:|---:|---:|---:|---:|---:|")
    for e in efs:
        cq, hq = med(c[e]["qps"]), med(h[e]["qps"])
        print(f"| {e} | {med(c[e]['recall']):.4f} | {cq:.0f} | {med(h[e]['recall']):.4f} | {hq:.0f} | {cq / hq:.2f}x |")

if __name__ == "__main__":
    main()
