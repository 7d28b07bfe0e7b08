"""Shared helpers for the benchmarks: synthetic data and timing. Results are ratios against a
baseline measured in the same run, printed as one JSON line per benchmark."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def without_text_index():
    """Imports build no search index inside: its background build (about 85 s at 1M rows, two
    threads) would share the CPU with what the benchmark times. bench_search measures it."""
    from core import text_index

    min_rows, text_index.MIN_ROWS = text_index.MIN_ROWS, 2**62
    try:
        yield
    finally:
        text_index.MIN_ROWS = min_rows


@contextlib.contextmanager
def job_start(warm_start: bool):
    """Local jobs launched inside are forked by a ready warm server (core.warm), or started cold."""
    import os

    from core import warm

    saved = os.environ.get(warm.ENV_SWITCH)
    os.environ[warm.ENV_SWITCH] = "1" if warm_start else "0"
    if warm_start:  # the environment core.jobs.launch gives a job
        assert warm.ensure_server(os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(warm.ENV_SWITCH)
        else:
            os.environ[warm.ENV_SWITCH] = saved


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)


RESULTS: list[dict] = []  # every report of this process, for BENCHMARKS.md (bench/run.py)


def report(name: str, **fields) -> None:
    record = {"bench": name, **fields}
    RESULTS.append(record)
    print(json.dumps(record), flush=True)


def machine() -> dict:
    """What the figures were measured on."""
    import os
    import platform

    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["gpu"] = None
    try:
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


# Field names that hold a benchmark's ratio against its same-run baseline, and its target.
RATIO_KEYS = ("ratio_p95", "ratio", "speedup", "ratio_real_tokens_per_s", "vs_bare_p95", "vs_read_json")
TARGET_KEYS = ("target", "target_ratio", "target_s")


def _figure(record: dict) -> tuple[str, str, str]:
    ratio = next((f"{k} = {record[k]}" for k in RATIO_KEYS if k in record), "")
    target = next((f"{k} = {record[k]}" for k in TARGET_KEYS if k in record), "")
    rest = ", ".join(f"{k} = {v}" for k, v in record.items()
                     if k != "bench" and k not in RATIO_KEYS and k not in TARGET_KEYS
                     and not isinstance(v, (dict, list)))
    return ratio, target, rest


def write_markdown(path, records: list[dict], info: dict, command: str, notes: dict[str, str] | None = None) -> None:
    """BENCHMARKS.md: one row per figure, its ratio against the baseline measured in the same run,
    the target where there is one, and the machine; then `notes` (by benchmark name) on the
    benchmarks of this run that have one: what a figure means, what stands in a target's way."""
    from datetime import datetime, timezone

    lines = ["# Benchmarks", "",
             f"Written by `{command}` on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Every ratio is "
             "against a baseline measured in the same run, on the same machine; rerun to refresh.", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ("" if info.get("gpu") else " (CPU only)"),
             "", "| benchmark | ratio | target | figures |", "|---|---|---|---|"]
    for record in records:
        ratio, target, rest = _figure(record)
        lines.append(f"| {record['bench']} | {ratio} | {target} | {rest} |")
    ran = {record["bench"] for record in records}
    noted = [(name, text) for name, text in (notes or {}).items() if name in ran or name == "gpu"]
    if noted:
        lines += ["", "## Notes", ""] + [f"- **{name}**: {text}" for name, text in noted]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
