#!/usr/bin/env python3
"""Checks a `chorus harvest` folder the way a trainer will read it: every
export loads with the `datasets` package (load_dataset("json", ...)) and has
TRL's columns, each message a {role, content} with the roles TRL expects.

Usage: check-exports.py DIR [--expect-rows]  (--expect-rows: every file must
have at least one row). Prints one line per file; exits 1 on the first problem.
"""
import json
import os
import sys

# Run from anywhere: the repository's own datasets/ folder must not shadow the package.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))]
from datasets import load_dataset  # noqa: E402

ROLES = {"system", "user", "assistant"}


def fail(message):
    print(f"check-exports: {message}", file=sys.stderr)
    sys.exit(1)


def messages(value, where, last_role=None):
    if not isinstance(value, list) or not value:
        fail(f"{where}: expected a non-empty list of messages, got {value!r:.80}")
    for m in value:
        if set(m) != {"role", "content"} or m["role"] not in ROLES or not isinstance(m["content"], str):
            fail(f"{where}: not a {{role, content}} message: {m!r:.80}")
    if last_role and value[-1]["role"] != last_role:
        fail(f"{where}: the last message should be the {last_role}'s")


def load(path, columns, expect_rows):
    if os.path.getsize(path) == 0:
        if expect_rows:
            fail(f"{path}: empty")
        print(f"{path}: 0 rows")
        return []
    ds = load_dataset("json", data_files=path, split="train")
    if set(ds.column_names) != set(columns):
        fail(f"{path}: columns {sorted(ds.column_names)}, expected {sorted(columns)}")
    if expect_rows and len(ds) == 0:
        fail(f"{path}: no rows")
    print(f"{path}: {len(ds)} rows, columns {', '.join(sorted(ds.column_names))}")
    return ds


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        fail("usage: check-exports.py DIR [--expect-rows]")
    root, expect = args[0], "--expect-rows" in sys.argv
    trees = load(os.path.join(root, "trees.jsonl"),
                 ["index", "question", "ground_truth", "job_id", "branching", "seed", "nodes", "mean_leaf_reward"], True)
    node_fields = {"id", "parent", "role", "model", "prompt", "output", "answer", "reward", "value", "positive"}
    for t in trees:
        n = t["branching"]
        if len(t["nodes"]) != n + n * n + n * n * n:
            fail(f"tree {t['index']}: {len(t['nodes'])} nodes, expected {n + n * n + n ** 3}")
        for node in t["nodes"]:
            if set(node) != node_fields:
                fail(f"tree {t['index']} node {node.get('id')}: fields {sorted(node)}")
            messages(node["prompt"], f"tree {t['index']} node {node['id']} prompt", "user")
            if node["positive"] != (node["value"] > 0.5):
                fail(f"tree {t['index']} node {node['id']}: positive does not match its value")
    for role in ("generator", "verifier", "refiner"):
        for i, row in enumerate(load(os.path.join(root, "sft", f"{role}.jsonl"), ["prompt", "completion"], expect)):
            messages(row["prompt"], f"sft/{role} row {i} prompt", "user")
            messages(row["completion"], f"sft/{role} row {i} completion", "assistant")
    for role in ("verifier", "refiner"):
        for i, row in enumerate(load(os.path.join(root, "dpo", f"{role}.jsonl"), ["prompt", "chosen", "rejected"], expect)):
            messages(row["prompt"], f"dpo/{role} row {i} prompt", "user")
            messages(row["chosen"], f"dpo/{role} row {i} chosen", "assistant")
            messages(row["rejected"], f"dpo/{role} row {i} rejected", "assistant")
    with open(os.path.join(root, "summary.json")) as f:
        summary = json.load(f)
    if set(summary) != {"questions", "nodes", "positives", "pairs", "mean_leaf_reward", "models"}:
        fail(f"summary.json: keys {sorted(summary)}")
    if summary["questions"] != len(trees):
        fail(f"summary.json: {summary['questions']} questions, trees.jsonl has {len(trees)}")
    print("exports load with datasets and have TRL's columns")


if __name__ == "__main__":
    main()
