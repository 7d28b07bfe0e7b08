"""DPO's cost per optimizer step against SFT's (core.train.dpo vs core.train.sft), on tiny-random,
one torch thread, the same pairs.

A DPO step on B pairs runs the policy forward and backward over 2B sequences (prompt + chosen,
prompt + rejected) and, unless the reference log-probs were computed once before training
(`precompute_ref_log_probs`), the reference forward over the same 2B. Two SFT baselines:
- `sft_both`: SFT on both answers, 2B sequences a step: the same tokens DPO's policy sees, the
  baseline the target is set against (DPO ÷ SFT on the same tokens ≤ 2.1 with the reference
  precomputed);
- `sft_chosen`: SFT on prompt + chosen, B sequences a step (what dSFT on the same prompts costs:
  the extra cost per prompt of a DPO step over a dSFT step).
Step time = the training loop's seconds over its steps (model load, tokenisation and the
reference precompute outside it; the precompute's wall time is reported apart). The sides run
in the order a, b, b, a, so a drift of the shared machine's load falls on both.

`python bench/bench_dpo.py [steps]` (default 12) prints one JSON line per measurement.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import WORDS  # noqa: E402
from core.train import (  # noqa: E402
    Example,
    TrainConfig,
    dpo,  # noqa: E402
    train,
)

BATCH = 4


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))

    return [{"prompt": [{"role": "user", "content": words(5, 20)}],
             "chosen": [{"role": "assistant", "content": words(10, 40)}],
             "rejected": [{"role": "assistant", "content": words(10, 40)}]} for _ in range(n)]


def config(steps: int, batch: int) -> TrainConfig:
    return TrainConfig(base_model="tiny-random", max_steps=steps, batch_size=batch, learning_rate=1e-4,
                       max_seq_len=128, logging_steps=steps, dtype="float32")


def sft_step(pairs: list[dict], steps: int, both: bool) -> dict:
    examples = [Example(tuple(p["prompt"] + p[side]), 1.0) for p in pairs
                for side in (("chosen", "rejected") if both else ("chosen",))]
    with tempfile.TemporaryDirectory() as out:
        result = train(config(steps, 2 * BATCH if both else BATCH), examples, out, device="cpu", threads=1)
    return {"step_s": result.train_seconds / result.steps, "tokens": result.tokens}


def dpo_step(pairs: list[dict], steps: int, precompute: bool) -> dict:
    objective = dpo.parse_objective({"kind": "dpo", "precompute_ref_log_probs": precompute})
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = dpo.train_dpo(config(steps, BATCH), objective, pairs, out, threads=1, device="cpu")
        wall = time.perf_counter() - started
    return {"step_s": result.train_seconds / result.steps, "tokens": result.tokens,
            "outside_loop_s": wall - result.train_seconds}


def compare(name: str, a, b, steps: int, target: float | None = None) -> dict:
    """b's step time over a's, runs in the order a, b, b, a."""
    runs_a, runs_b = [a()], [b()]
    runs_b.append(b())
    runs_a.append(a())
    sa = statistics.mean(r["step_s"] for r in runs_a)
    sb = statistics.mean(r["step_s"] for r in runs_b)
    record = {"bench": name, "steps": steps, "batch_pairs": BATCH, "base_step_s": round(sa, 4),
              "dpo_step_s": round(sb, 4), "ratio": round(sb / sa, 3),
              "runs_step_s": {"base": [round(r["step_s"], 4) for r in runs_a],
                              "dpo": [round(r["step_s"], 4) for r in runs_b]},
              "dpo_outside_loop_s": [round(r["outside_loop_s"], 2) for r in runs_b]}
    if target is not None:
        record["target"] = target
    print(json.dumps(record), flush=True)
    return record


def main(steps: int = 12) -> list[dict]:
    pairs = make_pairs(BATCH * steps)
    out = []
    for precompute in (True, False):
        for both in (False, True):
            name = f"dpo_{'precomputed' if precompute else 'live'}_ref_vs_sft_{'both' if both else 'chosen'}"
            out.append(compare(name, lambda b=both: sft_step(pairs, steps, b),
                               lambda p=precompute: dpo_step(pairs, steps, p), steps,
                               target=2.1 if precompute and both else None))  # the issue: "on the same tokens"
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
