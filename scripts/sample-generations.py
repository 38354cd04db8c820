#!/usr/bin/env python3
"""The generator's answers alone, exactly as pipeline jobs would sample them:
a private cluster (a broker and one generator on --model, --threads threads)
answers each GSM8K question --samples times with the seeds `chorus eval
--seed S` gives a pipeline job's chains (question i of the run: job seed S+i,
chain c: JobPlan.stageSeed), without the verifier, refiner and critic. Cheap
data for choosing how chains are voted (scripts/vote-rules.py reads the
output): each line is a job-shaped record with the generate stages only.
Use it on tuning questions only (datasets/gsm8k/README.md).

    scripts/sample-generations.py --model models/qwen2.5-coder-0.5b-instruct.gguf --offset 300 --limit 100 --out var/tune/g301.jsonl
"""
import argparse, concurrent.futures, importlib.util, json, os, subprocess, sys, tempfile, time, shutil, signal

HERE = os.path.dirname(os.path.abspath(__file__))
# The private cluster's config and the generator's sampling, as scripts/answer-quality.py's pipeline jobs have them.
_spec = importlib.util.spec_from_file_location("answer_quality", os.path.join(HERE, "answer-quality.py"))
aq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(aq)
ROOT, BIN, DATASET = aq.ROOT, aq.BIN, aq.DATASET
MASK = (1 << 64) - 1


def stage_seed(seed, chain, step):
    """JobPlan.stageSeed (Shared/Pipeline/JobPlan.swift)."""
    z = (seed + chain * 0x9E3779B97F4A7C15 + step * 0xD1B54A32D192ED03) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--offset", type=int, default=300)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--prompts", default=os.path.join(ROOT, "deploy", "prompts"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.offset < 300:
        sys.exit("this is for tuning: questions 1-300 are for measuring only (use --offset 300 or more)")
    questions = [json.loads(l) for l in open(DATASET)][a.offset:a.offset + a.limit]
    tmp = tempfile.mkdtemp(prefix="chorus-generations-")
    conf = os.path.join(tmp, "chorus.conf")
    with open(conf, "w") as f:
        f.write(aq.private_config(tmp, a.model, a.prompts) + f"GENERATOR_SLOTS={a.slots}\nGENERATOR_THREADS={a.threads}\n"
                + aq.GENERATOR_SAMPLING)
    log = open(a.out + ".services.log", "w")
    procs = [subprocess.Popen([os.path.join(BIN, "chorus-broker"), "--config", conf], stdout=log, stderr=log)]
    started = time.time()
    try:
        time.sleep(0.5)
        procs.append(subprocess.Popen([os.path.join(BIN, "chorus-generator"), "--config", conf], stdout=log, stderr=log))
        subprocess.run([os.path.join(BIN, "chorus"), "status", "--config", conf, "--expect", "generator=1", "--wait", "120"],
                       check=True, stdout=subprocess.DEVNULL)

        def generate(i, chain):
            q = questions[i]
            payload = {"stage": "generate", "question": q["question"], "seed": stage_seed(a.seed + i, chain, 0)}
            out = subprocess.run([os.path.join(BIN, "chorus"), "request", "generator", json.dumps(payload), "--config", conf,
                                  "--timeout", "1200"], check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
            return i, chain, json.loads(out)

        results = {}
        done = 0
        with concurrent.futures.ThreadPoolExecutor(a.slots) as pool, open(a.out, "w") as out:
            futures = [pool.submit(generate, i, c) for i in range(len(questions)) for c in range(a.samples)]
            for fut in concurrent.futures.as_completed(futures):
                i, chain, result = fut.result()
                results.setdefault(i, {})[chain] = result
                if len(results[i]) == a.samples:
                    q = questions[i]
                    answer = q["answer"].split("####")[-1].strip().replace(",", "")
                    out.write(json.dumps({"state": "done", "seed": a.seed + i, "spec": {"question": q["question"], "answer": answer},
                                          "stages": [{"chain": c, "step": 0, "stage": "generate", "result": results[i][c]}
                                                     for c in range(a.samples)]}) + "\n")
                    out.flush()
                    done += 1
                    print(f"{done}/{len(questions)} questions, {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
