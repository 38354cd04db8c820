#!/usr/bin/env python3
"""The HTTP gateway beside the bus it fronts, in the same run.

Starts a private broker (ports 6655-6657, journal in a temporary folder),
echo workers and chorus-gateway (127.0.0.1:6680, with an API key), and for
several rounds alternates:

  echo: the same 64-byte requests to the echo role (no model: what the
  gateway itself costs) through `chorus bench-bus` (the bus client; latency
  one at a time, throughput with as many in flight as HTTP clients) and
  through POST /v1/chat/completions, model "echo", with h2load (Debian's
  nghttp2-client; HTTP/1.1, keep-alive): one client for latency, then many
  concurrent streaming clients (stream: true) and as many non-streaming.

  jobs (--jobs): real jobs (SmolLM2 generator, verifier, refiner, critic; one
  round, no memory, 32 tokens a stage) through `chorus solve`, C processes at
  a time, beside the same jobs as streaming chat completions from h2load
  with C clients.

usage: bench-gateway.py [--rounds 5] [--requests 5000] [--clients 64]
                        [--jobs 16] [--job-clients 4]
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.environ.get("CHORUS_BIN") or os.path.join(ROOT, ".build", "release")
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
GATEWAY = "127.0.0.1:6680"


def h2load(key, body_file, clients, requests):
    out = subprocess.run(["h2load", "--h1", "-c", str(clients), "-n", str(requests), "-d", body_file,
                          "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {key}",
                          f"http://{GATEWAY}/v1/chat/completions"], capture_output=True, text=True, timeout=3600).stdout
    rate = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))
    ok = int(re.search(r"(\d+) succeeded", out).group(1))
    status2xx = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
    if ok != requests or status2xx != requests:
        sys.exit(f"h2load: {ok} of {requests} succeeded, {status2xx} 2xx:\n{out}")
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    unit = {"us": 1, "ms": 1e3, "s": 1e6}
    mean_us = float(m.group(5)) * unit[m.group(6)]
    return {"requests_per_second": rate, "mean_us": mean_us}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--echo-workers", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=16, help="jobs per round and path (0: no job measurements)")
    ap.add_argument("--job-clients", type=int, default=4)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="chorus-bench-gateway-")
    conf = os.path.join(tmp, "chorus.conf")
    keys = os.path.join(tmp, "api-keys")
    key = subprocess.run([os.path.join(BIN, "chorus"), "apikey", "--file", keys], check=True, capture_output=True, text=True).stdout.strip()
    model = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    with open(conf, "w") as f:
        f.write(f"CHORUS_FRONTEND=tcp://127.0.0.1:6655\nCHORUS_BACKEND=tcp://127.0.0.1:6656\nCHORUS_EVENTS=tcp://127.0.0.1:6657\n"
                f"CHORUS_JOURNAL={tmp}/journal.sqlite\nCHORUS_METRICS=off\nCHORUS_GATEWAY={GATEWAY}\nCHORUS_API_KEYS={keys}\n"
                f"CHORUS_MODEL={model}\nCHORUS_PROMPTS={ROOT}/deploy/prompts\n"
                "GENERATOR_MAX_TOKENS=32\nVERIFIER_MAX_TOKENS=32\nREFINER_MAX_TOKENS=32\n"
                "GENERATOR_CONTEXT=1024\nVERIFIER_CONTEXT=1024\nREFINER_CONTEXT=1024\nCRITIC_CONTEXT=1024\n")
    log = open(os.path.join(tmp, "services.log"), "w")
    procs = [subprocess.Popen([os.path.join(BIN, "chorus-broker"), "--config", conf], stdout=log, stderr=log)]
    chorus = os.path.join(BIN, "chorus")
    try:
        time.sleep(0.5)
        roles = ["echo"] * a.echo_workers + (["generator", "verifier", "refiner", "critic"] if a.jobs else [])
        procs += [subprocess.Popen([os.path.join(BIN, f"chorus-{r}"), "--config", conf], stdout=log, stderr=log) for r in roles]
        expect = f"echo={a.echo_workers}" + (",generator=1,verifier=1,refiner=1,critic=1" if a.jobs else "")
        subprocess.run([chorus, "status", "--config", conf, "--expect", expect, "--wait", "60"], check=True, stdout=subprocess.DEVNULL)
        procs.append(subprocess.Popen([os.path.join(BIN, "chorus-gateway"), "--config", conf], stdout=log, stderr=log))
        time.sleep(1)
        echo_body = os.path.join(tmp, "echo.json")
        stream_body = os.path.join(tmp, "echo-stream.json")
        job_body = os.path.join(tmp, "job-stream.json")
        message = [{"role": "user", "content": "x" * 40}]  # a 64-byte payload on the bus, as bench-bus sends
        json.dump({"model": "echo", "messages": message}, open(echo_body, "w"))
        json.dump({"model": "echo", "messages": message, "stream": True}, open(stream_body, "w"))
        json.dump({"model": "chorus", "messages": [{"role": "user", "content": QUESTION}], "stream": True, "seed": 1,
                   "rounds": 1, "no_memory": True}, open(job_body, "w"))
        h2load(key, echo_body, 4, 200)  # warm up
        rows = {k: [] for k in ["bus", "bus_wide", "http_one", "http_stream", "http_plain", "cli_jobs", "http_jobs"]}
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, flush=True)
            n = str(a.requests)
            rows["bus"].append(json.loads(subprocess.run([chorus, "bench-bus", "--config", conf, "--requests", n, "--json"],
                                                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
            rows["bus_wide"].append(json.loads(subprocess.run([chorus, "bench-bus", "--config", conf, "--requests", "200",
                                                               "--throughput-requests", n, "--window", str(a.clients), "--json"],
                                                              check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
            rows["http_one"].append(h2load(key, echo_body, 1, a.requests))
            rows["http_stream"].append(h2load(key, stream_body, a.clients, a.requests))
            rows["http_plain"].append(h2load(key, echo_body, a.clients, a.requests))
            if a.jobs:
                def solve(_):
                    t = time.time()
                    subprocess.run([chorus, "solve", QUESTION, "--config", conf, "--seed", "1", "--rounds", "1", "--no-memory"],
                                   check=True, capture_output=True)
                    return time.time() - t
                t = time.time()
                with ThreadPoolExecutor(a.job_clients) as pool:
                    latencies = list(pool.map(solve, range(a.jobs)))
                rows["cli_jobs"].append({"jobs_per_second": a.jobs / (time.time() - t), "mean_us": 1e6 * statistics.mean(latencies)})
                h = h2load(key, job_body, a.job_clients, a.jobs)
                rows["http_jobs"].append({"jobs_per_second": h["requests_per_second"], "mean_us": h["mean_us"]})
        med = lambda k, f: statistics.median(x[f] for x in rows[k])
        print(f"medians of {a.rounds} rounds; {a.requests} echo requests per measurement, {a.echo_workers} echo workers\n")
        print("| echo role, 64-byte payload | through the gateway (HTTP) | bus client | gateway / bus |\n|---|---:|---:|---:|")
        one, bus = med("http_one", "mean_us"), med("bus", "p50_us")
        print(f"| latency, one at a time (us; HTTP mean, bus p50) | {one:.1f} | {bus:.1f} | {one / bus:.2f}x (+{one - bus:.0f} us) |")
        wide = med("bus_wide", "requests_per_second")
        for k, name in (("http_stream", "streaming"), ("http_plain", "not streaming")):
            v = med(k, "requests_per_second")
            print(f"| throughput, {a.clients} clients {name} vs {a.clients} in flight (requests/s) | {v:.0f} | {wide:.0f} | {v / wide:.2f}x |")
        if a.jobs:
            print(f"\n| {a.jobs} jobs, {a.job_clients} at a time | gateway, streaming | chorus solve | gateway / CLI |\n|---|---:|---:|---:|")
            g, c = med("http_jobs", "jobs_per_second"), med("cli_jobs", "jobs_per_second")
            print(f"| jobs per second | {g:.2f} | {c:.2f} | {g / c:.2f}x |")
            g, c = med("http_jobs", "mean_us") / 1e6, med("cli_jobs", "mean_us") / 1e6
            print(f"| mean time per job (s) | {g:.2f} | {c:.2f} | {g / c:.2f}x |")
        print("\nraw rounds:", json.dumps(rows), file=sys.stderr)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=15)


if __name__ == "__main__":
    main()
