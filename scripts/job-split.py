#!/usr/bin/env python3
"""Where a job's time goes, from the jobs `chorus eval --out FILE.jsonl` wrote.

For each finished single-chain job: the wall time from acceptance to the end,
split into queueing (a stage waiting for a free worker), each model stage's
time as its worker measured it (prompt processing + generation), the rest of
its round trip as the broker measured it (messages over the bus, prompt
building and tokenizing in the worker), the memory stages' whole round trips
(memory service, kvindex and embedding), and the broker's own time between
stages (journal writes, planning). Prints the means.

usage: job-split.py FILE.jsonl
"""
import collections, json, statistics, sys

def main():
    jobs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    jobs = [j for j in jobs if j["state"] == "done" and j["spec"].get("samples", 1) == 1]
    parts = collections.defaultdict(list)
    for j in jobs:
        wall = j["finished_at"] - j["created_at"]
        spent = collections.Counter()
        for s in j["stages"]:
            r = s["result"]
            spent["queueing"] += s["queued_seconds"]
            if s["role"] == "memory":
                spent[f"{s['stage']} (memory and kvindex, round trip)"] += s["seconds"]
                continue
            model = r["prompt_seconds"] + r["generation_seconds"]
            spent[f"{s['stage']} (model)"] += model
            spent["bus and worker overhead"] += s["seconds"] - model
        spent["broker between stages"] = wall - sum(spent.values())
        for k, v in spent.items():
            parts[k].append(v)
        parts["job (wall)"].append(wall)
    n = len(jobs)
    order = ["queueing", "retrieve (memory and kvindex, round trip)", "generate (model)", "verify (model)", "refine (model)",
             "critic (model)", "remember (memory and kvindex, round trip)", "bus and worker overhead", "broker between stages",
             "job (wall)"]
    wall = statistics.mean(parts["job (wall)"])
    print(f"{n} jobs\n\n| part | mean seconds per job | share |\n|---|---:|---:|")
    for k in order + sorted(set(parts) - set(order)):
        if k in parts:
            m = sum(parts[k]) / n
            print(f"| {k} | {m:.3f} | {100 * m / wall:.1f}% |")

if __name__ == "__main__":
    main()
