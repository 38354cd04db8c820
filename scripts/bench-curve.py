#!/usr/bin/env python3
"""The broker's throughput and latency with CURVE and ZAP allow-lists on,
against off, in the same run: each round starts a broker and two echo
workers both ways (alternating which goes first) and runs
`chorus bench-bus` through them. Prints the medians as a BENCHMARKS.md table.

Usage: scripts/bench-curve.py [--rounds 5] [--requests 10000] [--bin .build/release]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_round(binaries, secure, requests, work, port):
    conf = os.path.join(work, f"{'on' if secure else 'off'}.conf")
    lines = [f"CHORUS_FRONTEND=tcp://127.0.0.1:{port}", f"CHORUS_BACKEND=tcp://127.0.0.1:{port + 1}",
             f"CHORUS_EVENTS=tcp://127.0.0.1:{port + 2}", f"CHORUS_JOURNAL={work}/journal-{port}.sqlite",
             "CHORUS_METRICS=off", "CHORUS_ROLES=echo"]
    if secure:
        lines += [f"CHORUS_CURVE_SECRET_KEY_FILE={work}/broker.key", f"CHORUS_CURVE_SERVER_KEY_FILE={work}/broker.pub",
                  f"CHORUS_CLIENT_KEYS={work}/clients", f"CHORUS_WORKER_KEYS={work}/workers",
                  f"CHORUS_CLIENT_KEY_FILE={work}/client.key", f"CHORUS_WORKER_KEY_FILE={work}/worker.key"]
    open(conf, "w").write("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    procs = [subprocess.Popen([f"{binaries}/chorus-broker", "--config", conf], stderr=subprocess.DEVNULL, env=env)]
    try:
        time.sleep(0.5)
        procs += [subprocess.Popen([f"{binaries}/chorus-echo", "--config", conf], stderr=subprocess.DEVNULL, env=env) for _ in range(2)]
        subprocess.run([f"{binaries}/chorus", "status", "--config", conf, "--expect", "echo=2", "--wait", "20"],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        out = subprocess.run([f"{binaries}/chorus", "bench-bus", "--config", conf, "--requests", str(requests), "--json"],
                             check=True, capture_output=True, text=True, env=env).stdout
        return json.loads(out)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build/release"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="chorus-bench-curve-")
    for d in ("clients", "workers"):
        os.makedirs(os.path.join(work, d))
    for name in ("broker", "client", "worker"):
        subprocess.run([f"{args.bin}/chorus", "keygen", "--out", os.path.join(work, name)], check=True, stdout=subprocess.DEVNULL)
    os.rename(os.path.join(work, "client.pub"), os.path.join(work, "clients", "client.pub"))
    os.rename(os.path.join(work, "worker.pub"), os.path.join(work, "workers", "worker.pub"))
    results = {False: [], True: []}
    for r in range(args.rounds):
        for secure in ((False, True) if r % 2 == 0 else (True, False)):
            res = run_round(args.bin, secure, args.requests, work, 17100 + 10 * r + (5 if secure else 0))
            results[secure].append(res)
            print(f"round {r + 1} {'on ' if secure else 'off'}: {json.dumps(res)}", file=sys.stderr)
    def med(secure, key):
        return statistics.median(x[key] for x in results[secure])
    keys = ["p50_us", "p99_us", "requests_per_second"]
    print(f"| figure | CURVE + ZAP off | CURVE + ZAP on | on / off |")
    print(f"|---|---|---|---|")
    for k in keys:
        off, on = med(False, k), med(True, k)
        print(f"| {k} | {off:.1f} | {on:.1f} | {on / off if off else float('nan'):.2f}x |")


if __name__ == "__main__":
    main()
