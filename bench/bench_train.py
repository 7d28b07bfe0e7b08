"""Training benchmarks (core.train) on this CPU, one torch thread (core.train.sft: on a shared
2-core CPU one thread trained 2-5x faster than two).

The data: alpaca-like pairs of mixed length, 70% short (a few words of instruction, a few of
answer) and 30% long (tens of words, then 60-150 words), the mix where padding costs most.
Three token counts are reported for every run, because "tokens/s" means different things:
- `tokens`: real (non-padding) tokens, prompt and response; what train() and a job's progress
  report, and the count the ratios use;
- `target_tokens`: response tokens, the ones trained on;
- `computed_tokens`: every position the model ran, padding included (rows x width).
Each run's counts are recomputed here from core.train.data and checked against train()'s own
(`agree`).

1. `train_packing`: SFT, packing off vs on, the same examples and config (one epoch a run, so
   both see the same tokens), on `tiny-random` and on a character-level student
   (core.train.scratch). Ratio: packed tokens/s over unpacked.
2. `train_lora_vs_full`: tiny-random, LoRA (r 16, every projection) vs full fine-tuning, the
   same examples and config. Ratio: LoRA tokens/s over full.
In (1) and (2) the two sides run off, on, on, off (two runs each), so a drift of the shared
machine's load falls on both; `runs_tok_per_s` shows each run.
3. `train_job_vs_direct`: a training job (ws.create_training_job, its own process through
   core.jobs.launch, forked by a ready warm server as every job after a first one is (core.warm),
   the model registered by ingest_job) vs core.train.train() called in this
   (warm) process on the same snapshot's Parquet and config, sized to ~`seconds` of training.
   The direct side runs as two halves of the job's steps, one before and one after the job, so
   a change in the shared machine's load falls on both; its wall time is the fixed cost plus the
   job's tokens at the halves' mean speed. Ratio: that over the job's wall time, from launch to
   the model registered (target >= 0.9); `loop_ratio` compares the training loops alone. The
   fixed costs are reported apart:
   wall minus the training loop, the job's extra over the direct call, and a bare fresh process
   that imports torch and transformers and loads tiny-random (`cold_process`).

`python bench/bench_train.py [seconds]`: seconds of training for each side of (3), default 60.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import WORDS, job_start, report  # noqa: E402
from core import jobs  # noqa: E402
from core.curate import create_snapshot  # noqa: E402
from core.train import Example, TrainConfig, examples_from_parquet, resolve_base, train  # noqa: E402
from core.train.data import IGNORE, epoch_batches, tokenize_examples  # noqa: E402
from core.train.scratch import build_char_student  # noqa: E402
from core.workspace import Workspace  # noqa: E402

THREADS = 1
N_EXAMPLES = 120
TINY = dict(base_model="tiny-random", batch_size=8, max_seq_len=512, learning_rate=1e-3, logging_steps=10,
            dtype="float32", seed=0)
# Word counts (instruction, output) of a short and a long record; the char student's are smaller,
# since every character is a token there.
TINY_LENGTHS = {"short": ((3, 8), (1, 10)), "long": ((20, 40), (60, 150))}
CHAR_LENGTHS = {"short": ((2, 5), (1, 3)), "long": ((8, 15), (30, 60))}


def mixed_records(n: int, lengths: dict, seed: int = 0, long_share: float = 0.3) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        (ins_lo, ins_hi), (out_lo, out_hi) = lengths["long" if rng.random() < long_share else "short"]
        out.append({"instruction": " ".join(rng.choices(WORDS, k=rng.randint(ins_lo, ins_hi))) + f" #{i}",
                    "input": "", "output": " ".join(rng.choices(WORDS, k=rng.randint(out_lo, out_hi)))})
    return out


def as_examples(records: list[dict]) -> list[Example]:
    return [Example.from_texts(r["instruction"], r["output"], r["input"] or None) for r in records]


def token_counts(cfg: TrainConfig, examples: list[Example]) -> dict:
    """What one epoch feeds the model, from the same functions train() batches with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base(cfg.base_model), local_files_only=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    tokenized, stats = tokenize_examples(examples, tokenizer, cfg.max_seq_len)
    counts = {"tokens": 0, "target_tokens": 0, "computed_tokens": 0, "rows": 0, "truncated": stats.n_truncated}
    for epoch in range(cfg.epochs):
        for b in epoch_batches(tokenized, cfg.batch_size, cfg.max_seq_len, cfg.packing, pad_id, cfg.seed, epoch):
            counts["tokens"] += b.n_tokens
            counts["target_tokens"] += sum(t != IGNORE for row in b.targets for t in row)
            counts["computed_tokens"] += len(b.input_ids) * len(b.input_ids[0])
            counts["rows"] += len(b.input_ids)
    return counts


def _speeds(cfg: TrainConfig, examples: list[Example], results: list) -> dict:
    """The runs of one config: speeds in the three token counts over their training loops."""
    counts = token_counts(cfg, examples)
    s = sum(r.train_seconds for r in results)
    n = len(results)
    return {"runs": n, "steps": results[0].steps, "seconds": round(s, 2), "tokens": results[0].tokens,
            "agree": all(r.tokens == counts["tokens"] for r in results), "tok_per_s": round(n * counts["tokens"] / s, 1),
            "runs_tok_per_s": [round(r.tokens_per_s, 1) for r in results],
            "target_tok_per_s": round(n * counts["target_tokens"] / s, 1),
            "computed_tok_per_s": round(n * counts["computed_tokens"] / s, 1),
            "pad_share": round(1 - counts["tokens"] / counts["computed_tokens"], 3),
            "rows": counts["rows"], "truncated": counts["truncated"]}


def paired(a: TrainConfig, b: TrainConfig, examples: list[Example], out: Path) -> tuple[dict, dict]:
    """One epoch each in the order a, b, b, a: on a shared machine the load moves, and this order
    puts a steady drift on both sides alike. Two steps of each first, so no measured run pays
    the lazy imports (peft) and first-call setup."""
    for side, cfg in (("a", a), ("b", b)):
        train(TrainConfig(**cfg.to_dict() | {"max_steps": 2}), examples, out / f"warm-{side}", device="cpu",
              threads=THREADS)
    runs: dict[str, list] = {"a": [], "b": []}
    for k, side in enumerate("abba"):
        runs[side].append(train(a if side == "a" else b, examples, out / f"{side}{k}", device="cpu",
                                threads=THREADS))
    return _speeds(a, examples, runs["a"]), _speeds(b, examples, runs["b"])


def packing(tmp: Path) -> None:
    char = build_char_student(tmp / "char-student", context=512)
    models = {
        "tiny-random": (TINY, as_examples(mixed_records(N_EXAMPLES, TINY_LENGTHS))),
        "char-student": (TINY | {"base_model": str(char), "learning_rate": 3e-3},
                         as_examples(mixed_records(N_EXAMPLES, CHAR_LENGTHS))),
    }
    for name, (base, examples) in models.items():
        off, on = paired(TrainConfig(**base), TrainConfig(**base | {"packing": True}), examples, tmp / name)
        report("train_packing", model=name, examples=len(examples), batch_size=base["batch_size"],
               max_seq_len=base["max_seq_len"], threads=THREADS, packing_off=off, packing_on=on,
               ratio=round(on["tok_per_s"] / off["tok_per_s"], 2), ratio_counts="real (non-pad) tokens/s")


def lora_vs_full(tmp: Path) -> None:
    examples = as_examples(mixed_records(N_EXAMPLES, TINY_LENGTHS, seed=1))
    lora_cfg = TrainConfig(**TINY | {"method": "lora", "lora_r": 16, "lora_alpha": 32})
    full, lora = paired(TrainConfig(**TINY), lora_cfg, examples, tmp / "lora-vs-full")
    report("train_lora_vs_full", model="tiny-random", examples=len(examples), threads=THREADS, full=full, lora=lora,
           ratio=round(lora["tok_per_s"] / full["tok_per_s"], 2))


COLD_START = """
import json, time
t0 = time.perf_counter()
import torch, transformers, core.jobs, core.train.sft
from transformers import AutoModelForCausalLM
from core.train import resolve_base
t1 = time.perf_counter()
AutoModelForCausalLM.from_pretrained(resolve_base("tiny-random"), use_safetensors=True, local_files_only=True)
print(json.dumps({"imports_s": t1 - t0, "model_load_s": time.perf_counter() - t1}))
"""


def cold_start() -> dict:
    """What a fresh process pays before training: interpreter start, torch and transformers
    imports, the first from_pretrained (transformers builds the model classes lazily)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", COLD_START], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - start
    inner = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "imports_s": round(inner["imports_s"], 2),
            "model_load_s": round(inner["model_load_s"], 2)}


def direct_run(cfg: TrainConfig, parquet: Path, out: Path) -> dict:
    """core.train.train() in this process, from the snapshot's Parquet file, like the job's runner."""
    start = time.perf_counter()
    examples = examples_from_parquet(parquet)
    parquet_s = time.perf_counter() - start
    result = train(cfg, examples, out, device="cpu", threads=THREADS)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "loop_s": result.train_seconds, "tokens": result.tokens, "parquet_read_s": parquet_s,
            "load_s": result.load_seconds, "save_s": wall - parquet_s - result.load_seconds - result.train_seconds}


def job_vs_direct(tmp: Path, seconds: float) -> None:
    ws = Workspace(tmp / "ws")
    try:
        data = tmp / "mixed.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in mixed_records(N_EXAMPLES, TINY_LENGTHS, seed=2)))
        ws.import_paths([data], "bench")
        snap = create_snapshot(ws, {"kind": "sft", "roles": ["seed"]}, "bench")
        probe = train(TrainConfig(**TINY | {"max_steps": 10}), examples_from_parquet(snap.parquet_path),
                      tmp / "probe", device="cpu", threads=THREADS)
        half = max(5, round(seconds * probe.steps_per_s / 2))
        cfg = TINY | {"max_steps": 2 * half}

        # Direct, job, direct: the direct side runs as two halves around the job, so a change of
        # the shared machine's load during the bench falls on both sides alike.
        first = direct_run(TrainConfig(**cfg | {"max_steps": half}), snap.parquet_path, tmp / "direct-1")
        job_id = ws.create_training_job("bench-job", "bench", cfg, threads=THREADS)
        with job_start(warm_start=True):  # forked by a warm server, as every job after a first one is
            start = time.perf_counter()
            code = jobs.launch(ws.job_dir(job_id)).wait()
            process_s = time.perf_counter() - start
        registered = ws.ingest_job(job_id)["registered"]
        job_s = time.perf_counter() - start
        assert code == 0 and registered == "bench-job", ws.job_log(job_id)
        done = json.loads((ws.root / "models" / "bench-job" / "model" / "train_result.json").read_text())
        second = direct_run(TrainConfig(**cfg | {"max_steps": half}), snap.parquet_path, tmp / "direct-2")
    finally:
        ws.close()
    cold = cold_start()
    halves = (first, second)
    direct_tok_s = sum(h["tokens"] for h in halves) / sum(h["loop_s"] for h in halves)
    direct_fixed = sum(h["wall_s"] - h["loop_s"] for h in halves) / 2
    # What one direct call of the job's size takes at the direct side's mean speed.
    direct_s = direct_fixed + done["tokens"] / direct_tok_s
    job_fixed = job_s - done["train_seconds"]
    report("train_job_vs_direct", model="tiny-random", examples=N_EXAMPLES, steps=2 * half, threads=THREADS,
           direct={"wall_s": round(direct_s, 2), "fixed_s": round(direct_fixed, 2),
                   "parquet_read_s": round(first["parquet_read_s"], 3), "load_s": round(first["load_s"], 2),
                   "save_s": round(first["save_s"], 2), "tok_per_s": round(direct_tok_s, 1),
                   "halves_tok_per_s": [round(h["tokens"] / h["loop_s"], 1) for h in halves],
                   "wall_tok_per_s": round(done["tokens"] / direct_s, 1)},
           job={"wall_s": round(job_s, 2), "process_s": round(process_s, 2), "register_s": round(job_s - process_s, 3),
                "train_loop_s": round(done["train_seconds"], 2), "fixed_s": round(job_fixed, 2),
                "load_s": round(done["load_seconds"], 2), "tok_per_s": round(done["tokens_per_s"], 1),
                "wall_tok_per_s": round(done["tokens"] / job_s, 1)},
           job_adds_s=round(job_fixed - direct_fixed, 2), cold_process=cold, ratio=round(direct_s / job_s, 3),
           loop_ratio=round(done["tokens_per_s"] / direct_tok_s, 3), target_ratio=0.9)


def main(seconds: float = 60.0) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        packing(Path(tmp))
        lora_vs_full(Path(tmp))
        job_vs_direct(Path(tmp), seconds)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)
