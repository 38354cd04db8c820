#!/usr/bin/env python3
"""What collaboration adds, measured: a private cluster (broker and one worker
per model role, every role on --model, no memory) answers GSM8K questions as
pipeline jobs of --samples chains with fixed seeds; `chorus eval` scores, from
the same jobs, a single generator, the pipeline, MV@k of the generators and
the pipeline with MV@k (95% intervals, McNemar against single, refinement
flips, the critic's verdicts). With --anchor, llama.cpp's llama-server
(scripts/build-llama-bench.sh builds it) answers the same questions with the
same model and the generator's own messages (taken from the jobs), as the
single-agent anchor: once with the generator's sampling and seeds, once greedy.

    scripts/answer-quality.py --model models/qwen2.5-coder-0.5b-instruct.gguf --offset 0 --limit 100 --out var/quality-0.5b [--anchor]

GSM8K's test file is split once: questions 1-300 (offset 0, limit up to 300)
measure; 301-1319 tune prompts, harvest trees and train (datasets/gsm8k/README.md).
Writes OUT/jobs.jsonl, OUT/report.json, OUT/report.txt (and OUT/anchor.json).
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BIN = os.environ.get("CHORUS_BIN") or os.path.join(ROOT, ".build", "release")
LLAMA = os.path.join(ROOT, ".build-llama", "build", "bin")
DATASET = os.path.join(ROOT, "datasets", "gsm8k", "test.jsonl")


# The generator's sampling of deploy/chorus.conf (the other roles' follow in main).
GENERATOR_SAMPLING = "GENERATOR_TEMPERATURE=0.7\nGENERATOR_MAX_TOKENS=400\n"


def private_config(tmp, model, prompts):
    """The start of a private cluster's config: its sockets and journal in tmp, no metrics, every role on model."""
    return (f"CHORUS_FRONTEND=ipc://{tmp}/front\nCHORUS_BACKEND=ipc://{tmp}/back\nCHORUS_EVENTS=ipc://{tmp}/events\n"
            f"CHORUS_JOURNAL={tmp}/journal.sqlite\nCHORUS_METRICS=off\nCHORUS_MODEL={os.path.abspath(model)}\n"
            f"CHORUS_PROMPTS={os.path.abspath(prompts)}\nCHORUS_QUEUE_TIMEOUT=600\n")


def extract(text):
    """The answer extractor of Chorus (Shared/Pipeline/AnswerExtractor.swift), in Python."""
    def numbers(s):
        return [normalize(m) for m in re.findall(r"-?\$?\d[\d,]*(?:\.\d+)?", s) if normalize(m) is not None]
    i = text.rfind("####")
    if i >= 0:
        n = numbers(text[i + 4:])
        if n:
            return n[0]
    b = text.rfind("\\boxed{")
    if b >= 0:
        depth, j = 1, b + 7
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            content = text[b + 7:j - 1].replace("\\$", "").replace("\\,", "").replace("\\!", "")
            whole = normalize(content)
            if whole is not None:
                return whole
            n = numbers(content)
            if n:
                return n[-1]
    lower = text.lower()
    for marker in ["the answer is", "final answer is", "final answer:", "answer:"]:
        j = lower.rfind(marker)
        if j >= 0:
            n = numbers(text[j + len(marker):j + len(marker) + 80])
            if n:
                return n[0]
    n = numbers(text)
    return n[-1] if n else None


def normalize(s):
    s = s.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return ("%.6f" % v).rstrip("0").rstrip(".")


def is_right(text, truth):
    """Whether a solution's extracted answer is the reference answer (`#### n`), as Chorus scores it."""
    answer = extract(text)
    return answer is not None and answer == normalize(truth)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--refine", choices=["always", "checked"], default="checked")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--prompts", default=os.path.join(ROOT, "deploy", "prompts"))
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", action="store_true",
                    help="keep OUT/jobs.jsonl's finished jobs and run only the questions not among them (a run stopped partway continues; same options)")
    ap.add_argument("--anchor", nargs="?", const="sampled,greedy", default=None,
                    help="also llama-server, single agent, same model and messages: sampled (the generator's sampling and seeds), greedy, or both (the default)")
    ap.add_argument("--extra", action="append", default=[], help="KEY=VALUE added to the cluster's config")
    a = ap.parse_args()
    if a.offset < 300 and a.offset + a.limit > 300:
        sys.exit("questions past 300 are the tuning split; measure within 1-300, or tune from 301 on")
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="chorus-quality-")
    conf = os.path.join(tmp, "chorus.conf")
    model = os.path.abspath(a.model)
    with open(conf, "w") as f:
        f.write(private_config(tmp, model, a.prompts))
        for role in ["GENERATOR", "VERIFIER", "REFINER", "CRITIC"]:
            f.write(f"{role}_SLOTS={a.slots}\n{role}_THREADS=1\n")
        f.write(GENERATOR_SAMPLING + "VERIFIER_TEMPERATURE=0\nVERIFIER_MAX_TOKENS=320\n"
                "VERIFIER_REPEAT_PENALTY=1.1\nREFINER_TEMPERATURE=0\nREFINER_MAX_TOKENS=400\nREFINER_REPEAT_PENALTY=1.1\n")
        for kv in a.extra:
            f.write(kv + "\n")
    log = open(os.path.join(a.out, "services.log"), "w")
    procs = [subprocess.Popen([os.path.join(BIN, "chorus-broker"), "--config", conf], stdout=log, stderr=log)]
    try:
        time.sleep(0.5)
        for role in ["generator", "verifier", "refiner", "critic"]:
            procs.append(subprocess.Popen([os.path.join(BIN, f"chorus-{role}"), "--config", conf], stdout=log, stderr=log))
        subprocess.run([os.path.join(BIN, "chorus"), "status", "--config", conf, "--expect",
                        "generator=1,verifier=1,refiner=1,critic=1", "--wait", "120"], check=True, stdout=subprocess.DEVNULL)
        jobs = os.path.join(a.out, "jobs.jsonl")
        args = [os.path.join(BIN, "chorus"), "eval", "--dataset", DATASET, "--offset", str(a.offset), "--limit", str(a.limit),
                "--samples", str(a.samples), "--rounds", str(a.rounds), "--seed", str(a.seed), "--no-memory",
                "--concurrency", str(a.concurrency), "--refine", a.refine, "--out", jobs, "--config", conf]
        if a.resume:
            args.append("--resume")
        started = time.time()
        args += ["--report-json", os.path.join(a.out, "report.json")]
        text = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True).stdout
        with open(os.path.join(a.out, "report.txt"), "w") as f:
            f.write(f"model {os.path.basename(model)}; questions {a.offset + 1}-{a.offset + a.limit}; samples {a.samples}, rounds {a.rounds}, "
                    f"seed {a.seed}; refine {a.refine}; memory off; {time.time() - started:.0f} s\n\n" + text)
        print(text)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)
    if a.anchor:
        anchor(a, model, os.path.join(a.out, "jobs.jsonl"))
    shutil.rmtree(tmp, ignore_errors=True)


def anchor(a, model, jobs_path):
    """llama-server, one request per question: the generator's own messages
    and sampling (from chain 1's generate stage), its answer extracted as
    Chorus extracts it."""
    port = 18081
    server = subprocess.Popen([os.path.join(LLAMA, "llama-server"), "-m", model, "--port", str(port), "-c", "2048", "-t", "2",
                               "-np", "1", "--no-webui"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except Exception:
                time.sleep(0.5)
        results = {mode: run_anchor(port, jobs_path, greedy=mode == "greedy") for mode in a.anchor.split(",") if mode in ("sampled", "greedy")}
        with open(os.path.join(a.out, "anchor.json"), "w") as f:
            json.dump(results, f, indent=1)
        print("llama-server, single agent:", results)
    finally:
        server.terminate()
        server.wait(timeout=20)


def run_anchor(port, jobs_path, greedy):
    """One pass over the questions: with the generator's sampling (its seed
    too), or greedy (temperature 0), the single agent at its best."""
    right = total = tokens = 0
    outcomes = []
    started = time.time()
    for line in open(jobs_path):
        job = json.loads(line)
        stage = next((s for s in job["stages"] if s["chain"] == 0 and s["stage"] == "generate"), None)
        if stage is None or "result" not in stage:
            continue
        r = stage["result"]
        body = {"messages": r["messages"], "temperature": r["sampling"]["temperature"], "top_k": r["sampling"]["top_k"],
                "top_p": r["sampling"]["top_p"], "min_p": r["sampling"]["min_p"], "max_tokens": r["sampling"]["max_tokens"],
                "seed": r["sampling"]["seed"] % (2 ** 31)}
        if greedy:
            body["temperature"] = 0
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(req, timeout=600).read())
        text = reply["choices"][0]["message"]["content"]
        tokens += reply.get("usage", {}).get("completion_tokens", 0)
        total += 1
        ok = is_right(text, job["spec"]["answer"])
        right += ok
        outcomes.append({"id": job["id"], "right": ok})
    return {"questions": total, "right": right, "accuracy": right / total if total else 0, "seconds": time.time() - started,
            "completion_tokens_per_question": tokens / total if total else 0, "temperature": 0 if greedy else "the generator's", "per_question": outcomes}


if __name__ == "__main__":
    main()
