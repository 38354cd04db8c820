#!/usr/bin/env python3
"""Fine-tunes one role's model on what `chorus harvest` exported, and writes
the result as a GGUF file Chorus loads.

    train.py --base MODEL.gguf --data DIR/sft [--dpo DIR/dpo] --out OUT.gguf
             [--steps N] [--lr LR] [--lora-rank R] [--max-length T] [--seed S]
             [--device cpu|cuda] [--work DIR] [--quantize TYPE]

The base GGUF is loaded into transformers (dequantised), trained with TRL
(SFT on the positives, `prompt`/`completion` rows, loss on the completion
only; then DPO on the pairs when --dpo is given), with LoRA adapters merged
back at the end (--lora-rank 0: every weight), saved, converted by
llama.cpp's convert_hf_to_gguf.py to f16 and quantised by llama-quantize
(--quantize, default Q4_K_M). Checkpoints go to --work (default OUT.work/):
a run started again with the same --work goes on from the last one, and
Ctrl-C saves one before stopping. Bad data (no file, an empty file, rows
without `prompt` and `completion`, or without an assistant turn) is refused
before anything is loaded. Needs llama.cpp's tools: LLAMA_CPP_DIR (default
.build-llama, made by scripts/build-llama-bench.sh).
"""
import argparse, glob, json, os, signal, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fail(message):
    print(f"train: {message}", file=sys.stderr)
    sys.exit(2)


def read_rows(folder, kind):
    """Every row of the .jsonl files in `folder`, checked for `kind` ("sft" or "dpo")."""
    if not os.path.isdir(folder):
        fail(f"{folder} is not a folder (give the sft/ or dpo/ folder chorus harvest wrote)")
    files = sorted(glob.glob(os.path.join(folder, "*.jsonl")))
    if not files:
        fail(f"{folder} holds no .jsonl file")
    rows = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    fail(f"{path}:{n}: not JSON ({e.msg})")
                keys = ("prompt", "completion") if kind == "sft" else ("prompt", "chosen", "rejected")
                missing = [k for k in keys if not isinstance(row.get(k), list) or not row[k]]
                if missing:
                    fail(f"{path}:{n}: no {', '.join(missing)} (rows need {', '.join(keys)} as lists of chat turns)")
                for k in keys[1:]:
                    if not any(isinstance(t, dict) and t.get("role") == "assistant" and isinstance(t.get("content"), str) for t in row[k]):
                        fail(f"{path}:{n}: `{k}` has no assistant turn")
                if not all(isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str) for t in row["prompt"]):
                    fail(f"{path}:{n}: `prompt` turns need a role and a content")
                rows.append({k: row[k] for k in keys})
    if not rows:
        fail(f"the .jsonl files in {folder} are empty")
    return rows


def load_base(path, device):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, name = os.path.split(os.path.abspath(path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A GGUF loads as a "quantised" model, which the Trainer refuses: the same
    # weights in a plain model built from its configuration.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    return model.to(device), tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the role's model, a GGUF file")
    ap.add_argument("--data", required=True, help="chorus harvest's sft/ folder")
    ap.add_argument("--dpo", help="chorus harvest's dpo/ folder (DPO after SFT)")
    ap.add_argument("--out", required=True, help="the trained model, a GGUF file")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--lora-rank", type=int, default=16, help="0 trains every weight")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", help="checkpoints and intermediate files (default OUT.work)")
    ap.add_argument("--quantize", default="Q4_K_M", help="llama-quantize type for the result, or f16 to keep it")
    a = ap.parse_args()
    if not os.path.isfile(a.base):
        fail(f"no model at {a.base}")
    if a.steps < 1 or a.lr <= 0 or a.lora_rank < 0 or a.max_length < 16:
        fail("--steps, --lr and --max-length must be positive, --lora-rank at least 0")
    sft_rows = read_rows(a.data, "sft")
    dpo_rows = read_rows(a.dpo, "dpo") if a.dpo else None
    llama = os.environ.get("LLAMA_CPP_DIR", os.path.join(ROOT, ".build-llama"))
    convert = os.path.join(llama, "src", "convert_hf_to_gguf.py")
    quantize = os.path.join(llama, "build", "bin", "llama-quantize")
    if not os.path.isfile(convert) or (a.quantize != "f16" and not os.path.isfile(quantize)):
        fail(f"llama.cpp's convert_hf_to_gguf.py and llama-quantize are needed in {llama} (scripts/build-llama-bench.sh)")
    work = a.work or a.out + ".work"
    os.makedirs(work, exist_ok=True)
    print(f"train: {len(sft_rows)} SFT rows" + (f", {len(dpo_rows)} DPO pairs" if dpo_rows else ""), file=sys.stderr)

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
    model, tokenizer = load_base(a.base, a.device)
    if a.lora_rank > 0:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))

    class StopOnSignal(TrainerCallback):
        """Ctrl-C (or SIGTERM) ends the step, saves a checkpoint and stops."""
        stop = False

        def on_step_end(self, args, state, control, **kwargs):
            if StopOnSignal.stop:
                control.should_save = True
                control.should_training_stop = True

    def on_signal(signum, frame):
        if StopOnSignal.stop:
            raise KeyboardInterrupt
        StopOnSignal.stop = True
        print("\ntrain: stopping after this step and saving a checkpoint (again to stop at once)", file=sys.stderr)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def run(trainer_type, config_type, rows, stage):
        out = os.path.join(work, stage)
        resume = bool(glob.glob(os.path.join(out, "checkpoint-*")))
        config = config_type(output_dir=out, max_steps=a.steps, per_device_train_batch_size=1, learning_rate=a.lr,
                             seed=a.seed, logging_steps=1, save_steps=max(1, a.steps // 10), save_total_limit=2,
                             report_to=[], max_length=a.max_length, use_cpu=a.device == "cpu")
        trainer = trainer_type(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                               callbacks=[StopOnSignal()])
        trainer.train(resume_from_checkpoint=resume or None)
        if StopOnSignal.stop:
            print(f"train: stopped; run the same command again to go on from {out}", file=sys.stderr)
            sys.exit(130)
        return trainer.model

    model = run(SFTTrainer, SFTConfig, sft_rows, "sft")
    if dpo_rows:
        model = run(DPOTrainer, DPOConfig, dpo_rows, "dpo")
    if a.lora_rank > 0:
        model = model.merge_and_unload()
    hf = os.path.join(work, "hf")
    model.save_pretrained(hf, safe_serialization=True)
    tokenizer.save_pretrained(hf)
    f16 = a.out if a.quantize == "f16" else os.path.join(work, "model-f16.gguf")
    subprocess.run([sys.executable, convert, hf, "--outtype", "f16", "--outfile", f16], check=True)
    if a.quantize != "f16":
        subprocess.run([quantize, f16, a.out, a.quantize], check=True, stdout=subprocess.DEVNULL)
    print(a.out)


if __name__ == "__main__":
    main()
