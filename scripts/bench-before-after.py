#!/usr/bin/env python3
"""The bus and the gateway, two builds in the same run: `scripts/bench-bus.py`
and `scripts/bench-gateway.py` (one round each per call) for the build in
--before and the one in --after, alternating which goes first from round to
round, then medians per build and after / before.

    scripts/bench-before-after.py --before OLD/.build/release --after .build/release [--rounds 3]

Each folder must hold every chorus executable of its build (chorus,
chorus-broker, chorus-gateway, chorus-echo and the model workers).
"""
import argparse, json, os, statistics, subprocess, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def run(script, binaries, args):
    env = dict(os.environ, CHORUS_BIN=binaries)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script)] + args, env=env, capture_output=True, text=True, timeout=3600)
    raw = [l for l in p.stderr.splitlines() if l.startswith("raw rounds:")]
    if p.returncode != 0 or not raw:
        sys.exit(f"{script} with {binaries} failed:\n{p.stdout}\n{p.stderr}")
    return json.loads(raw[-1][len("raw rounds:"):])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bus-requests", type=int, default=10000)
    ap.add_argument("--gateway-requests", type=int, default=3000)
    ap.add_argument("--jobs", type=int, default=12)
    a = ap.parse_args()
    samples = {"before": {}, "after": {}}

    def keep(build, prefix, rows):
        for mode, values in rows.items():
            for v in values:
                for k, x in v.items():
                    samples[build].setdefault(f"{prefix}.{mode}.{k}", []).append(x)

    for r in range(a.rounds):
        order = [("before", a.before), ("after", a.after)]
        if r % 2:
            order.reverse()
        for build, binaries in order:
            print(f"round {r + 1}/{a.rounds}: {build}", file=sys.stderr, flush=True)
            keep(build, "bus", run("bench-bus.py", binaries, ["--rounds", "1", "--no-floor", "--requests", str(a.bus_requests)]))
            keep(build, "gateway", run("bench-gateway.py", binaries, ["--rounds", "1", "--requests", str(a.gateway_requests),
                                                                     "--jobs", str(a.jobs), "--job-clients", "4"]))
    names = [("bus.broker.p50_us", "bus: latency p50, one at a time (us)"),
             ("bus.broker.requests_per_second", "bus: throughput, 32 in flight (requests/s)"),
             ("gateway.http_one.mean_us", "gateway: echo latency, one at a time (us)"),
             ("gateway.http_stream.requests_per_second", "gateway: echo, 64 streaming clients (requests/s)"),
             ("gateway.http_plain.requests_per_second", "gateway: echo, 64 clients not streaming (requests/s)"),
             ("gateway.http_jobs.jobs_per_second", "gateway: real jobs, streaming chat completions (jobs/s)"),
             ("gateway.cli_jobs.jobs_per_second", "CLI: real jobs, chorus solve (jobs/s)")]
    print(f"medians of {a.rounds} rounds per build, alternating\n")
    print("| | before | after | after / before |\n|---|---:|---:|---:|")
    for key, name in names:
        if key not in samples["before"] or key not in samples["after"]:
            continue
        b, f = statistics.median(samples["before"][key]), statistics.median(samples["after"][key])
        print(f"| {name} | {b:.1f} | {f:.1f} | {f / b:.3f}x |")
    print("\nraw:", json.dumps(samples), file=sys.stderr)


if __name__ == "__main__":
    main()
