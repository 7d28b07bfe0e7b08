"""Curation at scale (core.curate).

1. `curate_live_counts`: at 1M samples (instructions, seed responses, one pointwise_10 verdict
   each with 1 in 20 unparsed, one MFD each; made in SQL), the live counts per task after a
   change of δ (MFD > δ) and of a judge minimum, through `curate.counts` (rule fragments, bind
   values, the per-rule drop counts, the value cache checked against the catalog's fingerprint).
   Baseline: the same per-task count as one hand-written statement. `cold_ms` is the first count
   of a spec (or the first after the catalog changed), which computes the values. Target: p95
   well under a second (500 ms).
2. `curate_snapshot`: materialising that spec at 1M samples (members, drops, the Parquet file
   with the full texts), once.
3. `curate_dedup`: exact greedy near-duplicate removal over 100k unit vectors (384-d, 20% near
   copies), blockwise matrix products against the kept vectors. Baseline: the same matrix
   products alone (the BLAS floor of this method), without the bookkeeping.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import p95, report, timed  # noqa: E402
from core import curate  # noqa: E402
from core.workspace import Workspace  # noqa: E402

JUDGE, RUBRIC = "bench-judge", "pointwise_10"


def spec_for(delta: float, min_score: int) -> dict:
    return {"judges": [{"judge": JUDGE, "rubric": RUBRIC, "min": min_score}], "mfd_min": delta}


def live_counts(rows: int = 1_000_000, repeats: int = 40) -> None:
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        ws.store.curate_bench_fill(rows)
        changes = [(float(rng.randint(-6, 6)), rng.randint(2, 9)) for _ in range(repeats)]

        def winnow(k: int) -> int:
            return curate.counts(ws, spec_for(*changes[k])).after

        def bare(k: int) -> int:
            delta, min_score = changes[k]
            return sum(n for _, n in ws.store.curate_bench_bare_count(JUDGE, RUBRIC, min_score, delta))

        cold = timed(lambda: winnow(0), 1)[0]
        agree = all(winnow(k) == bare(k) for k in range(3))
        ours, base = [], []
        for k in range(repeats):  # interleaved, so both see the same machine state
            ours += timed(lambda: winnow(k), 1)  # noqa: B023 (called at once)
            base += timed(lambda: bare(k), 1)  # noqa: B023
        report("curate_live_counts", rows=rows, repeats=repeats, agree=agree, cold_ms=round(cold * 1000, 1),
               winnow_p50_ms=round(statistics.median(ours) * 1000, 1), winnow_p95_ms=round(p95(ours) * 1000, 1),
               bare_p50_ms=round(statistics.median(base) * 1000, 1), bare_p95_ms=round(p95(base) * 1000, 1),
               ratio_p95=round(p95(ours) / p95(base), 2), target_p95_ms=500)

        started = time.perf_counter()
        snap = curate.create_snapshot(ws, spec_for(0.0, 5), "bench", embed=None)
        report("curate_snapshot", rows=rows, members=snap.n_members,
               seconds=round(time.perf_counter() - started, 2),
               parquet_mb=round(snap.parquet_path.stat().st_size / 1e6, 1))
        ws.close()


def clustered_vectors(n: int, dim: int, copies: float, seed: int = 0) -> np.ndarray:
    """Random unit vectors, a `copies` share of them near copies (cosine ~0.98) of earlier ones."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    near = np.sort(rng.choice(np.arange(1, n), size=int(n * copies), replace=False))
    sources = (rng.random(len(near)) * near).astype(np.int64)
    noise = rng.standard_normal((len(near), dim), dtype=np.float32)
    x[near] = x[sources] + 0.2 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def products_only(x: np.ndarray, keep: np.ndarray, block: int, chunk: int) -> None:
    """The matrix products near_duplicates does (each block against the vectors kept before it, and
    against itself), with nothing else."""
    kept = x[keep]
    n_kept_before = np.concatenate([[0], np.cumsum(keep)])
    for start in range(0, len(x), block):
        xb = x[start:start + block]
        upto = int(n_kept_before[start])
        for c in range(0, upto, chunk):
            _ = xb @ kept[c:min(c + chunk, upto)].T
        _ = xb @ xb.T


def dedup(n: int = 100_000, dim: int = 384, threshold: float = 0.95) -> None:
    x = clustered_vectors(n, dim, copies=0.2)
    started = time.perf_counter()
    keep, _, _ = curate.near_duplicates(x, threshold)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    products_only(x, keep, curate.DEDUP_BLOCK, curate.DEDUP_KEPT_CHUNK)
    base = time.perf_counter() - started
    report("curate_dedup", vectors=n, dim=dim, threshold=threshold, kept=int(keep.sum()),
           method=f"exact greedy; blocks of {curate.DEDUP_BLOCK} x kept chunks of {curate.DEDUP_KEPT_CHUNK} "
                  "(float32 BLAS), then in-block resolution",
           seconds=round(ours, 2), products_only_seconds=round(base, 2), ratio=round(ours / base, 2))


def main(rows: int = 1_000_000) -> None:
    live_counts(rows)
    dedup(min(rows, 100_000))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
