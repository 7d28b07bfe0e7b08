"""Shared helpers for the benchmarks: synthetic data and timing. Results are ratios against a
baseline measured in the same run, printed as one JSON line per benchmark."""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path

import orjson

TASKS = ["math", "reasoning", "code_generation", "open_qa", "summarization", "translation", "rewriting"]
WORDS = ("the a model data answer question learn value system large small quick brown fox jumps over lazy "
         "dog python list string error table index query round judge score teacher student").split()


def synthetic_jsonl(path: Path, rows: int, seed: int = 0) -> Path:
    """Alpaca records with a task label; instruction 5–30 words, output 10–80 words."""
    if path.exists() and path.stat().st_size > 0:
        return path
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for i in range(rows):
            record = {
                "instruction": " ".join(rng.choices(WORDS, k=rng.randint(5, 30))) + f" #{i}",
                "input": "",
                "output": " ".join(rng.choices(WORDS, k=rng.randint(10, 80))),
                "task": rng.choice(TASKS),
            }
            fh.write(orjson.dumps(record) + b"\n")
    return path


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)


def report(name: str, **fields) -> None:
    print(json.dumps({"bench": name, **fields}), flush=True)
