#!/usr/bin/env python3
"""The bus through the broker beside raw libzmq, in the same run.

Starts a private broker (ports 6555-6557, journal in a temporary folder) with
N echo workers, then alternates `chorus bench-bus --raw` (DEALER to ROUTER in
one process, over tcp loopback: the anchor) and `chorus bench-bus` through the
broker for several rounds, and prints medians and ratios.

usage: bench-bus.py [--rounds 5] [--workers 2] [--requests 20000]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, ".build", "release")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20000)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="chorus-bench-bus-")
    conf = os.path.join(tmp, "chorus.conf")
    with open(conf, "w") as f:
        f.write("CHORUS_FRONTEND=tcp://127.0.0.1:6555\nCHORUS_BACKEND=tcp://127.0.0.1:6556\n"
                f"CHORUS_EVENTS=tcp://127.0.0.1:6557\nCHORUS_JOURNAL={tmp}/journal.sqlite\nCHORUS_ROLES=echo\n")
    log = open(os.path.join(tmp, "services.log"), "w")
    procs = [subprocess.Popen([os.path.join(BIN, "chorus-broker"), "--config", conf], stdout=log, stderr=log)]
    try:
        time.sleep(0.5)
        procs += [subprocess.Popen([os.path.join(BIN, "chorus-echo"), "--config", conf], stdout=log, stderr=log)
                  for _ in range(a.workers)]
        subprocess.run([os.path.join(BIN, "chorus"), "status", "--config", conf, "--expect", f"echo={a.workers}", "--wait", "30"],
                       check=True, stdout=subprocess.DEVNULL)
        raw, broker = [], []
        for r in range(a.rounds):  # raw and broker alternate
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for mode, out in (("raw", raw), ("broker", broker)):
                cmd = [os.path.join(BIN, "chorus"), "bench-bus", "--config", conf, "--requests", str(a.requests), "--json"]
                if mode == "raw":
                    cmd.append("--raw")
                res = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                out.append(json.loads(res.strip().splitlines()[-1]))
        med = lambda rows, k: statistics.median(x[k] for x in rows)
        print(f"medians of {a.rounds} rounds, {a.requests} requests each, 64-byte payloads, {a.workers} echo workers\n")
        print("| | through the broker | raw libzmq | broker / raw |\n|---|---:|---:|---:|")
        for k, name in (("p50_us", "latency p50, one at a time (us)"), ("p99_us", "latency p99, one at a time (us)"),
                        ("requests_per_second", "throughput, 32 in flight (requests/s)")):
            b, r = med(broker, k), med(raw, k)
            print(f"| {name} | {b:.1f} | {r:.1f} | {b / r:.2f}x |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)

if __name__ == "__main__":
    main()
