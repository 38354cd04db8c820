#!/usr/bin/env python3
"""The bus through the broker beside raw libzmq, in the same run.

Starts a private broker (ports 6555-6557, journal in a temporary folder) with
N echo workers, then alternates `chorus bench-bus --raw` (DEALER to ROUTER in
one process, over tcp loopback: the anchor) and `chorus bench-bus` through the
broker for several rounds, and prints medians and ratios.

In the same rounds it measures what libzmq allows on this machine with no
Chorus in the way (scripts/bus-floor.c, built here with cc): the same raw echo
written in C, a minimal relay in C (forwarding frames between a client ROUTER
and a worker ROUTER, checking nothing) with 2 echo workers in C, and the cost
of waking a thread (eventfd ping-pong). Skip it with --no-floor.

usage: bench-bus.py [--rounds 5] [--workers 2] [--requests 20000] [--no-floor]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.environ.get("CHORUS_BIN") or os.path.join(ROOT, ".build", "release")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--no-floor", action="store_true", help="skip the C measurements of scripts/bus-floor.c")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="chorus-bench-bus-")
    floor = None
    if not a.no_floor:
        floor = os.path.join(tmp, "bus-floor")
        subprocess.run(["cc", "-O2", "-o", floor, os.path.join(ROOT, "scripts", "bus-floor.c"), "-lzmq", "-lpthread"], check=True)
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
        if floor:
            procs.append(subprocess.Popen([floor, "relay", "tcp://127.0.0.1:6565", "tcp://127.0.0.1:6566"], stdout=log, stderr=log))
            time.sleep(0.3)
            procs += [subprocess.Popen([floor, "worker", "tcp://127.0.0.1:6566"], stdout=log, stderr=log) for _ in range(a.workers)]
            time.sleep(0.3)
        n = str(a.requests)
        modes = [("raw", [os.path.join(BIN, "chorus"), "bench-bus", "--config", conf, "--requests", n, "--json", "--raw"]),
                 ("broker", [os.path.join(BIN, "chorus"), "bench-bus", "--config", conf, "--requests", n, "--json"])]
        if floor:
            modes += [("c-raw", [floor, "raw", n]), ("c-relay", [floor, "client", "tcp://127.0.0.1:6565", n]),
                      ("wakeup", [floor, "wakeup"])]
        rows = {mode: [] for mode, _ in modes}
        for r in range(a.rounds):  # the measurements alternate within each round
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
            for mode, cmd in modes:
                res = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
                rows[mode].append(json.loads(res.strip().splitlines()[-1]))
        med = lambda mode, k: statistics.median(x[k] for x in rows[mode])
        print(f"medians of {a.rounds} rounds, {a.requests} requests each, 64-byte payloads, {a.workers} echo workers\n")
        names = (("p50_us", "latency p50, one at a time (us)"), ("p99_us", "latency p99, one at a time (us)"),
                 ("requests_per_second", "throughput, 32 in flight (requests/s)"))
        print("| | through the broker | raw libzmq | broker / raw |\n|---|---:|---:|---:|")
        for k, name in names:
            b, r = med("broker", k), med("raw", k)
            print(f"| {name} | {b:.1f} | {r:.1f} | {b / r:.2f}x |")
        if floor:
            print("\nThe same, written in C against libzmq, with nothing checked (scripts/bus-floor.c):\n")
            print("| | minimal relay in C | raw libzmq in C | relay / raw |\n|---|---:|---:|---:|")
            for k, name in names:
                b, r = med("c-relay", k), med("c-raw", k)
                print(f"| {name} | {b:.1f} | {r:.1f} | {b / r:.2f}x |")
            print(f"\nwaking a thread on another core and back (eventfd ping-pong): {med('wakeup', 'round_trip_us'):.1f} us")
        print("\nraw rounds:", json.dumps(rows), file=sys.stderr)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)

if __name__ == "__main__":
    main()
