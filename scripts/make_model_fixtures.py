#!/usr/bin/env python3
"""Reference outputs of llama.cpp for the model tests, made through
llama-cpp-python (the Python bindings built on the same llama.cpp sources as
the benchmarks).

    scripts/build-llama-bench.sh            # llama.cpp's tools, libllama and the bindings' sources
    python3 scripts/make_model_fixtures.py gemma3 models/gemma-3-270m-q4_k_m.gguf
    python3 scripts/make_model_fixtures.py model FILE.gguf OUT.jsonl   # greedy tokens of one model

    python3 scripts/make_model_fixtures.py qwen NAME models/qwen2.5-coder-0.5b-instruct.gguf

`qwen` writes the same three files into Fixtures/NAME/ for a Qwen2.5 chat model
(ChatML prompts; texts with code, Chinese and Qwen's special tokens).
`logits` writes llama.cpp's logits, teacher-forced along the greedy tokens of
an existing reference file (its first LINES lines), at every position: the
eight best [id, logit] (5 decimals). They hold the numbers, not just the
argmax, so a test can see how closely Chorus computes what llama.cpp does
(for the K-quants: activations quantised as Q8_K, one scale per 256):

    python3 scripts/make_model_fixtures.py logits FILE.gguf REFERENCE.jsonl LINES OUT.jsonl

`gemma3` writes Tests/InferenceTests/Fixtures/gemma3/: tokenizer.jsonl (llama.cpp's
tokens for each text: llama_tokenize(text, add_special=False, parse_special=True)),
reference.jsonl (greedy tokens and margins for each prompt) and perplexity.json
(llama-perplexity over Fixtures/smollm2/perplexity.txt). `model` writes the
greedy references of one model (the synthetic models use it).
"""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
LLAMA = os.path.join(ROOT, ".build-llama")
sys.path.insert(0, os.path.join(LLAMA, "python"))
os.environ.setdefault("LLAMA_CPP_LIB_PATH", os.path.join(LLAMA, "build", "bin"))
FIXTURES = os.path.join(ROOT, "Tests", "InferenceTests", "Fixtures")

import numpy as np  # noqa: E402
import llama_cpp  # noqa: E402


def load(path, n_ctx=1024):
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, logits_all=True, n_threads=2, verbose=False)


def tokenize(model, text):
    return model.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def greedy(model, prompt_ids, steps=64):
    """Greedy tokens after prompt_ids, with each step's margin (best logit minus
    the runner-up) and the first step's five best [id, logit]."""
    eog = {t for t in range(model.n_vocab()) if llama_cpp.llama_vocab_is_eog(model._model.vocab, t)}
    model.reset()
    model.eval(prompt_ids)
    ids, margins, top5 = [], [], None
    for step in range(steps):
        logits = np.array(model.scores[model.n_tokens - 1], dtype=np.float64)
        order = np.argsort(-logits)
        if step == 0:
            top5 = [[int(i), round(float(logits[i]), 4)] for i in order[:5]]
        token = int(order[0])
        ids.append(token)
        margins.append(round(float(logits[order[0]] - logits[order[1]]), 4))
        if token in eog:
            break
        model.eval([token])
    return ids, margins, top5


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print("wrote", os.path.relpath(path, ROOT), len(rows), "lines")


def tokenizer_texts():
    """The SmolLM2 fixture's texts (GSM8K questions and answers, edge cases)
    and more that exercise SentencePiece: special and user-defined tokens,
    runs of spaces and newlines, byte fallback, many scripts."""
    texts = [json.loads(l)["text"] for l in open(os.path.join(FIXTURES, "smollm2", "tokenizer.jsonl"), encoding="utf-8")]
    texts += [
        "<bos>The capital of France is", "<start_of_turn>user\nWhat is 2+3?<end_of_turn>\n<start_of_turn>model\n",
        "<start_of_turn>", "<end_of_turn>", "<eos>", "<pad>", "<unk>", "text<end_of_turn>more<start_of_turn>",
        "a  b   c    d", "trailing space ", " leading", "\n\n\nthree newlines", "tabs\t\tand\tspaces",
        "mixed \t\n whitespace", "    four spaces", "▁already▁escaped", "under_score and-dash", "x" * 300,
        "Ελληνικά κείμενα", "Русский текст и цифры 123", "العربية نص", "עברית", "हिन्दी पाठ", "한국어 문장", "中文句子，标点！",
        "ภาษาไทย", "Tiếng Việt có dấu", "Ümlaut Öl Äpfel ß", "emoji 👩‍👩‍👧‍👦 family 🏳️‍🌈 flag", "math ∑∫√∞ ≤ ≥ ≠",
        "\u0000 nul \u0001 control \u007f del", "zero\u200bwidth\u200bspace", "combining e\u0301 accent", "rare 𝕏 𝔸 𐍈",
        "JSON: {\"a\": [1, 2.5, null], \"b\": \"c\"}", "SELECT * FROM users WHERE id = 42;", "#include <stdio.h>\nint main() {}",
        "<table><tr><td>cell</td></tr></table>", "<h1>Title</h1>\n<p>para</p>", "[INST] hi [/INST]", "<|im_start|>user\nhi<|im_end|>",
        "1,000,000.00 1e-9 0x1F 3/4 ½ ¾", "2024-12-01T14:03:11Z", "C:\\Users\\name\\file.txt", "~/.config/chorus.conf",
        "Hello, World!", "HELLO world HeLLo", "don't DON'T we'll WE'LL", "It's 5 o'clock.", "...", "!!!???", "---===---",
    ]
    return texts


PROMPTS = [
    "<bos>The capital of France is",
    "<bos>Once upon a time, in a small village by the mountains,",
    "<bos>def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<bos>Q: If a train travels 60 miles per hour for 3 hours, how far does it go?\nA:",
    "<bos>Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four. How many eggs are left?",
    "<bos><start_of_turn>user\nWhat is 2+3?<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n",
    "<bos>The three primary colors are",
    "<bos>In 1969, the first humans walked on",
    "<bos>Translate to French: The weather is nice today.\nFrench:",
    "<bos>A list of prime numbers: 2, 3, 5, 7,",
    "<bos>Photosynthesis is the process by which",
    "<bos>import numpy as np\n\ndef softmax(x):\n",
    "<bos>Le petit prince a dit :",
]


QWEN_TEXTS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|fim_prefix|>def f(x):<|fim_suffix|>    return y<|fim_middle|>",
    "<|repo_name|>chorus<|file_sep|>main.swift", "text<|im_end|>more<|im_start|>", "<tool_call>{\"name\": \"f\"}</tool_call>",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "func greet(_ name: String) -> String {\n\treturn \"Hello, \\(name)!\"\n}",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }", "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3;",
    "    indented  \t mixed\n\n\n  lines", "x = [1, 2, 3]; y = {k: v for k, v in zip(x, x)}",
    "今天天气很好，我们去公园散步吧。", "机器学习是人工智能的一个分支。", "混合 English 和中文 123 个字", "日本語とカタカナ、ひらがな。",
    "한국어 문장입니다.", "数学：∑_{i=1}^{n} i = n(n+1)/2", "价格是￥1,234.56元", "emoji 🤖🚀 和 中文",
    "12345678901234567890", "3.14159 2.71828 1e-10 0xFF", "   leading spaces", "trailing spaces   ", "a\u00a0non-breaking space",
]

QWEN_PROMPTS = [
    "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a careful math tutor.<|im_end|>\n<|im_start|>user\nJanet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' market?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a Python function that reverses a string.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\n用中文介绍一下你自己。<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nA train travels 60 miles per hour for 3 hours. How far does it go? End with #### and the number.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nExplain recursion in one paragraph.<|im_end|>\n<|im_start|>assistant\n",
    "The capital of France is",
    "def quicksort(arr):\n",
    "Once upon a time, in a small village by the mountains,",
    "<|im_start|>user\nList three prime numbers.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat does SQL stand for?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nIf x + 7 = 12, what is x?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nTranslate to French: The weather is nice today.<|im_end|>\n<|im_start|>assistant\n",
    "import numpy as np\n\ndef softmax(x):\n",
]


def qwen(name, path):
    out = os.path.join(FIXTURES, name)
    os.makedirs(out, exist_ok=True)
    model = load(path)
    texts = [json.loads(l)["text"] for l in open(os.path.join(FIXTURES, "smollm2", "tokenizer.jsonl"), encoding="utf-8")] + QWEN_TEXTS
    write_jsonl(os.path.join(out, "tokenizer.jsonl"), [{"text": t, "ids": tokenize(model, t)} for t in texts])
    write_jsonl(os.path.join(out, "reference.jsonl"), references(model, QWEN_PROMPTS))
    result = perplexity(path, os.path.join(FIXTURES, "smollm2", "perplexity.txt"))
    with open(os.path.join(out, "perplexity.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("perplexity", result)


def references(model, prompts, steps=64):
    rows = []
    for p in prompts:
        ids = tokenize(model, p)
        g, margins, top5 = greedy(model, ids, steps)
        rows.append({"prompt": p, "prompt_ids": ids, "greedy_ids": g, "margins": margins, "top5_first": top5})
    return rows


def perplexity(path, text_path, context=512):
    tool = os.path.join(LLAMA, "build", "bin", "llama-perplexity")
    out = subprocess.run([tool, "-m", path, "-f", text_path, "-c", str(context), "-b", str(context), "-t", "2"],
                         capture_output=True, text=True, check=True)
    log = out.stdout + out.stderr
    ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
    chunks = int(re.search(r"calculating perplexity over (\d+) chunks", log).group(1))
    return {"perplexity": ppl, "chunks": chunks, "context": context, "text": os.path.relpath(text_path, FIXTURES),
            "command": "llama-perplexity -m MODEL -f TEXT -c %d -b %d" % (context, context)}


def gemma3(path):
    out = os.path.join(FIXTURES, "gemma3")
    os.makedirs(out, exist_ok=True)
    model = load(path)
    write_jsonl(os.path.join(out, "tokenizer.jsonl"), [{"text": t, "ids": tokenize(model, t)} for t in tokenizer_texts()])
    write_jsonl(os.path.join(out, "reference.jsonl"), references(model, PROMPTS))
    result = perplexity(path, os.path.join(FIXTURES, "smollm2", "perplexity.txt"))
    with open(os.path.join(out, "perplexity.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("perplexity", result)


def logits(path, reference, lines, out):
    model = load(path)
    rows = []
    for line in open(reference, encoding="utf-8").readlines()[:lines]:
        r = json.loads(line)
        ids = r["prompt_ids"] + r["greedy_ids"]
        model.reset()
        model.eval(ids)
        first = len(r["prompt_ids"]) - 1
        top = []
        for pos in range(first, len(ids) - 1):
            row = np.array(model.scores[pos], dtype=np.float64)
            order = np.argsort(-row)[:8]
            top.append([[int(i), round(float(row[i]), 5)] for i in order])
        rows.append({"prompt_ids": r["prompt_ids"], "greedy_ids": r["greedy_ids"], "top8": top})
    write_jsonl(out, rows)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gemma3":
        gemma3(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "qwen":
        qwen(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "logits":
        logits(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) == 4 and sys.argv[1] == "model":
        write_jsonl(sys.argv[3], references(load(sys.argv[2]), PROMPTS))
    else:
        sys.exit(__doc__)
