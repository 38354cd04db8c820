#!/usr/bin/env python3
"""Fine-tunes one role's model on what `chorus harvest` exported, and writes
the result as a GGUF file Chorus loads. `chorus train` runs it (with the
virtual environment `deploy/setup.sh --training` makes); it runs as well on
its own, on any machine with the packages of requirements.txt (a GPU one
with --device cuda).

    train.py --base MODEL.gguf --data DIR/sft [--dpo DIR/dpo] --out OUT.gguf
             [--role ROLE] [--steps N] [--dpo-steps N] [--lr LR]
             [--lora-rank R] [--max-length T] [--seed S] [--device cpu|cuda]
             [--work DIR] [--quantize TYPE] [--keep-work] [--check]
             [--progress-json]

--data and --dpo take a folder (then ROLE.jsonl in it, with --role; every
.jsonl file without) or one .jsonl file. The base GGUF is loaded into
transformers (dequantised), trained with TRL: SFT on the positives
(`prompt`/`completion` rows, loss on the completion only), then DPO on the
pairs when --dpo is given (its reference model is the SFT result). LoRA
adapters (--lora-rank, default 16; 0 trains every weight) are merged after
each stage. The result is saved, converted by llama.cpp's
convert_hf_to_gguf.py and quantised by llama-quantize (--quantize, default
Q4_K_M; Q8_0, F16 and BF16 need no llama-quantize). Checkpoints go to --work
(default OUT.work/): a run started again with the same arguments goes on
from the last one, and Ctrl-C (or SIGTERM) saves one before stopping (exit
status 130). The work folder is removed when the model is written, unless
--keep-work. Bad data (no file, an empty file, rows that are not JSON or
lack `prompt` and `completion` (or `chosen` and `rejected`), completions
without an assistant turn) is refused before anything is loaded; --check
does only that. llama.cpp's tools come from LLAMA_CPP_DIR (default
.build-llama, made by deploy/setup.sh --training).

With --progress-json, one JSON object per line on standard output says what
is happening (`chorus train` draws its progress bar from them):
{"event": "data", ...}, {"event": "stage", "stage": "sft", "steps": N,
"start": K}, {"event": "step", "stage", "step", "steps", "loss", "tokens",
"seconds"}, {"event": "stopped", ...}, {"event": "convert"},
{"event": "quantize"}, {"event": "done", "out": PATH, ...}.
"""
import argparse, glob, json, os, shutil, signal, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIRECT_TYPES = {"Q8_0": "q8_0", "F16": "f16", "BF16": "bf16"}  # written by the converter itself
PROGRESS_JSON = False


def emit(event, **fields):
    """A progress event: a JSON line on stdout with --progress-json, else a line on stderr."""
    if PROGRESS_JSON:
        print(json.dumps({"event": event, **fields}), flush=True)
    elif event == "step":
        print(f"train: {fields['stage']} step {fields['step']}/{fields['steps']} loss {fields['loss']:.4f}", file=sys.stderr, flush=True)
    elif event != "data":
        print(f"train: {event} " + " ".join(f"{k}={v}" for k, v in fields.items()), file=sys.stderr, flush=True)


def fail(message, status=2):
    if PROGRESS_JSON:
        print(json.dumps({"event": "error", "message": message}), flush=True)
    print(f"train: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def data_files(path, role):
    """The .jsonl files `path` names: itself, ROLE.jsonl in it, or every .jsonl in it."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        fail(f"{path}: no such file or folder (give the sft/ or dpo/ folder chorus harvest wrote, or one .jsonl file)")
    if role:
        file = os.path.join(path, role + ".jsonl")
        if not os.path.isfile(file):
            fail(f"{path} holds no {role}.jsonl (chorus harvest writes one file per role)")
        return [file]
    files = sorted(glob.glob(os.path.join(path, "*.jsonl")))
    if not files:
        fail(f"{path} holds no .jsonl file")
    return files


def turns_ok(turns):
    return isinstance(turns, list) and turns and all(
        isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str) for t in turns)


def read_rows(path, kind, role):
    """Every row of the data `path` names, checked for `kind` ("sft" or "dpo")."""
    keys = ("prompt", "completion") if kind == "sft" else ("prompt", "chosen", "rejected")
    rows = []
    for file in data_files(path, role):
        try:
            f = open(file, encoding="utf-8")
        except OSError as e:
            fail(f"{file}: cannot read it ({e.strerror})")
        with f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    fail(f"{file}:{n}: not a JSON line ({e})")
                if not isinstance(row, dict):
                    fail(f"{file}:{n}: not a JSON object")
                missing = [k for k in keys if k not in row]
                if missing:
                    fail(f"{file}:{n}: no {', '.join(missing)} column ({kind.upper()} rows have {', '.join(keys)}, "
                         f"each a list of chat turns; this row has {', '.join(sorted(row)) or 'none'})")
                for k in keys:
                    if not turns_ok(row[k]):
                        fail(f"{file}:{n}: `{k}` is not a non-empty list of {{\"role\", \"content\"}} turns")
                for k in keys[1:]:
                    if not any(t["role"] == "assistant" for t in row[k]):
                        fail(f"{file}:{n}: `{k}` has no assistant turn (it is what the model learns to write)")
                if row["prompt"][-1]["role"] == "assistant":
                    fail(f"{file}:{n}: `prompt` ends with an assistant turn; the answer belongs in `{keys[1]}`")
                rows.append({k: row[k] for k in keys})
    if not rows:
        fail(f"{path}: no rows (the file is empty: the harvest found no {'positive' if kind == 'sft' else 'pair'} for this role)")
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
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the role's model, a GGUF file")
    ap.add_argument("--data", required=True, help="chorus harvest's sft/ folder, or one .jsonl file")
    ap.add_argument("--dpo", help="chorus harvest's dpo/ folder, or one .jsonl file (DPO after SFT)")
    ap.add_argument("--out", required=True, help="the trained model, a GGUF file")
    ap.add_argument("--role", help="read ROLE.jsonl from the --data and --dpo folders")
    ap.add_argument("--steps", type=int, default=100, help="SFT optimiser steps (default 100)")
    ap.add_argument("--dpo-steps", type=int, help="DPO optimiser steps (default: --steps)")
    ap.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4; use about 1e-5 with --lora-rank 0)")
    ap.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (default 16); 0 trains every weight")
    ap.add_argument("--max-length", type=int, default=1024, help="tokens per example, longer ones are cut (default 1024)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps")
    ap.add_argument("--work", help="checkpoints and intermediate files (default OUT.work)")
    ap.add_argument("--quantize", default="Q4_K_M", help="type of the result: Q4_K_M (default), Q8_0, F16, BF16, "
                                                         "or any type llama-quantize knows")
    ap.add_argument("--keep-work", action="store_true", help="keep the work folder (checkpoints, the f16 GGUF)")
    ap.add_argument("--check", action="store_true", help="only check the data, print its rows as JSON, and exit")
    ap.add_argument("--progress-json", action="store_true", help="progress as JSON lines on stdout")
    return ap.parse_args()


def native_bf16(torch, device):
    """Whether to train in bfloat16 (mixed precision): only where the
    hardware has it. TRL turns it on by default, and a CPU without AVX-512
    BF16 or AMX then multiplies bfloat16 matrices in a slow generic loop on
    one core (a 0.5B model's step went from about 35 s to over 10 minutes on
    an AVX2 CPU); float32 uses the fast BLAS on every core."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(bool(check()) for check in checks if check is not None)
    return False


def main():
    global PROGRESS_JSON
    a = parse_args()
    PROGRESS_JSON = a.progress_json
    a.quantize = a.quantize.upper()
    if a.steps < 1 or (a.dpo_steps is not None and a.dpo_steps < 1) or a.lr <= 0 or a.lora_rank < 0 or a.max_length < 16:
        fail("--steps and --dpo-steps must be at least 1, --lr positive, --lora-rank at least 0, --max-length at least 16")
    sft_rows = read_rows(a.data, "sft", a.role)
    dpo_rows = read_rows(a.dpo, "dpo", a.role) if a.dpo else []
    emit("data", sft=len(sft_rows), dpo=len(dpo_rows))
    if a.check:
        return
    if not os.path.isfile(a.base):
        fail(f"no model at {a.base}")
    llama = os.environ.get("LLAMA_CPP_DIR", os.path.join(ROOT, ".build-llama"))
    convert = os.path.join(llama, "src", "convert_hf_to_gguf.py")
    quantize = os.path.join(llama, "build", "bin", "llama-quantize")
    if not os.path.isfile(convert):
        fail(f"llama.cpp's convert_hf_to_gguf.py is needed in {llama}/src (deploy/setup.sh --training puts it there)")
    if a.quantize not in DIRECT_TYPES and not os.path.isfile(quantize):
        fail(f"llama-quantize is needed in {llama}/build/bin for --quantize {a.quantize} (deploy/setup.sh --training builds it), "
             f"or use --quantize Q8_0")
    work = a.work or a.out + ".work"
    os.makedirs(work, exist_ok=True)
    # A work folder belongs to one set of arguments: going on from another
    # run's checkpoints would mix two trainings.
    settings = {k: getattr(a, k) for k in ("base", "data", "dpo", "role", "steps", "dpo_steps", "lr", "lora_rank", "max_length", "seed")}
    settings["base"] = os.path.abspath(a.base)
    marker = os.path.join(work, "arguments.json")
    if os.path.exists(marker):
        with open(marker) as f:
            before = json.load(f)
        if before != settings:
            changed = ", ".join(k for k in settings if before.get(k) != settings[k])
            fail(f"{work} holds a run with other arguments ({changed}); run it with those, or remove the folder to start anew")
    else:
        with open(marker, "w") as f:
            json.dump(settings, f, indent=1)

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
    torch.manual_seed(a.seed)
    started = time.time()
    model, tokenizer = load_base(a.base, a.device)
    bf16 = native_bf16(torch, a.device)
    emit("loaded", seconds=round(time.time() - started, 1), parameters=sum(p.numel() for p in model.parameters()),
         precision="bf16 mixed" if bf16 else "fp32")

    stopping = {"asked": False}

    def on_signal(signum, frame):
        if stopping["asked"]:
            raise KeyboardInterrupt
        stopping["asked"] = True
        print("\ntrain: stopping after this step and saving a checkpoint (again to stop at once)", file=sys.stderr, flush=True)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    class Report(TrainerCallback):
        """Each step's loss and tokens as an event; Ctrl-C saves a checkpoint and stops."""

        def __init__(self, stage, steps):
            self.stage, self.steps, self.t0, self.losses = stage, steps, time.time(), []

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.time()
            emit("stage", stage=self.stage, steps=self.steps, start=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])
                emit("step", stage=self.stage, step=state.global_step, steps=self.steps, loss=float(logs["loss"]),
                     tokens=int(state.num_input_tokens_seen or 0), seconds=round(time.time() - self.t0, 2))

        def on_step_end(self, args, state, control, **kwargs):
            if stopping["asked"]:
                control.should_save = True
                control.should_training_stop = True

    def lora(m):
        if a.lora_rank == 0:
            return m
        from peft import LoraConfig, get_peft_model
        return get_peft_model(m, LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank, target_modules="all-linear",
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))

    stats = {}

    def last_checkpoint(folder):
        """The newest whole checkpoint: one killed while it was written lacks
        trainer_state.json (the Trainer writes it last) and is passed over."""
        found = []
        for path in glob.glob(os.path.join(folder, "checkpoint-*")):
            tail = path.rsplit("-", 1)[-1]
            if tail.isdigit() and os.path.isfile(os.path.join(path, "trainer_state.json")):
                found.append((int(tail), path))
        return max(found)[1] if found else None

    def run(trainer_type, config_type, rows, stage, steps, m):
        out = os.path.join(work, stage)
        resume = last_checkpoint(out)
        config = config_type(output_dir=out, max_steps=steps, per_device_train_batch_size=1, learning_rate=a.lr,
                             seed=a.seed, logging_steps=1, save_steps=max(1, steps // 10), save_total_limit=2,
                             report_to=[], max_length=a.max_length, use_cpu=a.device == "cpu",
                             include_num_input_tokens_seen=True, disable_tqdm=True, log_level="warning",
                             bf16=bf16, fp16=False)
        report = Report(stage, steps)
        extra = {}
        if trainer_type is DPOTrainer and a.lora_rank == 0:
            # Every weight trains: the reference is a frozen copy of the model
            # as SFT left it (with LoRA it is the model without its adapters).
            import copy
            extra["ref_model"] = copy.deepcopy(m).eval().requires_grad_(False)
        trainer = trainer_type(model=lora(m), args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                               callbacks=[report], **extra)
        t0 = time.time()
        trainer.train(resume_from_checkpoint=resume)
        if stopping["asked"]:
            emit("stopped", stage=stage, step=trainer.state.global_step, work=work)
            print(f"train: stopped at {stage} step {trainer.state.global_step}; run the same command again to go on from {out}",
                  file=sys.stderr, flush=True)
            sys.exit(130)
        stats[stage] = {"rows": len(rows), "steps": steps, "seconds": round(time.time() - t0, 1),
                        "first_loss": report.losses[0] if report.losses else None,
                        "last_loss": report.losses[-1] if report.losses else None,
                        "tokens": int(trainer.state.num_input_tokens_seen or 0), "resumed": resume is not None}
        result = trainer.model
        return result.merge_and_unload() if a.lora_rank > 0 else result

    model = run(SFTTrainer, SFTConfig, sft_rows, "sft", a.steps, model)
    if dpo_rows:
        model = run(DPOTrainer, DPOConfig, dpo_rows, "dpo", a.dpo_steps or a.steps, model)

    emit("convert")
    hf = os.path.join(work, "hf")
    model.save_pretrained(hf, safe_serialization=True)
    tokenizer.save_pretrained(hf)
    direct = DIRECT_TYPES.get(a.quantize)
    converted = a.out + ".partial" if direct else os.path.join(work, "model-f16.gguf")
    done = subprocess.run([sys.executable, convert, hf, "--outtype", direct or "f16", "--outfile", converted],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        fail(f"convert_hf_to_gguf.py failed (status {done.returncode}):\n{done.stderr[-3000:]}", 1)
    if not direct:
        emit("quantize", type=a.quantize)
        done = subprocess.run([quantize, converted, a.out + ".partial", a.quantize], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            fail(f"llama-quantize failed (status {done.returncode}):\n{done.stderr[-3000:]}", 1)
    os.replace(a.out + ".partial", a.out)
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    emit("done", out=os.path.abspath(a.out), seconds=round(time.time() - started, 1), stages=stats, quantize=a.quantize,
         precision="bf16 mixed" if bf16 else "fp32",
         lora_rank=a.lora_rank, lr=a.lr, seed=a.seed, max_length=a.max_length, device=a.device)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        import traceback
        traceback.print_exc()
        fail(f"{type(e).__name__}: {e}", 1)
