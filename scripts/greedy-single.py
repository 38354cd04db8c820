#!/usr/bin/env python3
"""Chorus's single agent answering greedily: for each job of a pipeline run
(scripts/answer-quality.py's jobs.jsonl), `chorus run` answers chain 1's
own messages (the generator's system prompt and question) at temperature 0
with the generator's token limit, and the answer is scored as Chorus scores
it. The greedy single answer is the strongest single-agent baseline at small
sizes; compare it with the same run's llama-server greedy anchor (--anchor).
Resumable: answers already in OUT are kept.

    scripts/greedy-single.py var/quality/q05-zen1-all/jobs.jsonl --model models/qwen2.5-coder-0.5b-instruct.gguf
"""
import argparse, importlib.util, json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("answer_quality", os.path.join(HERE, "answer-quality.py"))
aq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(aq)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jobs", help="a pipeline run's jobs.jsonl")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="answers, one JSON line each (default: chorus-greedy.jsonl beside JOBS)")
    a = ap.parse_args()
    if not os.path.isfile(a.jobs):
        sys.exit(f"{a.jobs}: no such file (a run's jobs.jsonl, from scripts/answer-quality.py or chorus eval --out)")
    chorus = os.path.join(aq.BIN, "chorus")
    if not os.access(chorus, os.X_OK):
        sys.exit(f"{chorus} is missing: build first (swift build -c release), or set CHORUS_BIN")
    out_path = a.out or os.path.join(os.path.dirname(os.path.abspath(a.jobs)), "chorus-greedy.jsonl")
    done = {}
    if os.path.exists(out_path):
        for line in open(out_path):
            r = json.loads(line)
            done[r["id"]] = r["right"]
    started = time.time()
    with open(out_path, "a") as out:
        for line in open(a.jobs):
            job = json.loads(line)
            if job.get("state") != "done" or job["id"] in done:
                continue
            gen = next((s for s in job["stages"] if s["chain"] == 0 and s["stage"] == "generate" and "result" in s), None)
            if gen is None:
                continue
            r = gen["result"]
            system = next(m["content"] for m in r["messages"] if m["role"] == "system")
            user = next(m["content"] for m in r["messages"] if m["role"] == "user")
            p = subprocess.run([chorus, "run", "--model", a.model, "--threads", str(a.threads), "--system", system, "--chat", user,
                                "--temperature", "0", "--max-tokens", str(r["sampling"]["max_tokens"]), "--json"],
                               capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"chorus run failed on job {job['id']}: {p.stderr.strip()}")
            text = json.loads(p.stdout).get("text", "")
            ok = aq.is_right(text, job["spec"]["answer"])
            done[job["id"]] = ok
            out.write(json.dumps({"id": job["id"], "right": ok, "answer": aq.extract(text), "text": text}) + "\n")
            out.flush()
            print(f"\r{len(done)} answered, {sum(done.values())} right, {time.time() - started:.0f} s", end="", flush=True)
    print(f"\nChorus greedy, single agent: {sum(done.values())} of {len(done)} right ({out_path})")


if __name__ == "__main__":
    main()
