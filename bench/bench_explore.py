"""The Explore query at 1M samples versus the bare SQL.

Query: filter on two fields (task and a length range) + count + one page of 50, as the Explore
page runs it through `Workspace.explore_view` (fragments, bind values, per-page response counts,
roles and review state; the count runs on a second cursor beside the page and its decorations).
Baseline: the same count and page as hand-written SQL on a raw cursor, one after the other,
without the per-page decorations. Target: p95 ≤ 50 ms and ≤ 1.5× the bare SQL.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import TASKS, p95, report, synthetic_jsonl, timed, without_text_index  # noqa: E402
from core.store import ExploreFilter  # noqa: E402
from core.workspace import Workspace  # noqa: E402


def main(rows: int = 1_000_000, repeats: int = 60, cache: Path = Path("bench/out")) -> None:
    data = synthetic_jsonl(cache / f"alpaca_{rows}.jsonl", rows)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp, without_text_index():
        ws = Workspace(Path(tmp) / "ws")
        ws.import_paths([data], "bench")
        filters = [(rng.choice(TASKS), rng.randint(20, 80)) for _ in range(repeats)]
        pages = [rng.randint(0, 50) for _ in range(repeats)]

        def winnow(k: int) -> None:
            task, lo = filters[k]
            f = ExploreFilter(tasks=[task], min_chars=lo, max_chars=lo + 60)
            ws.explore_view(f, page=pages[k], page_size=50)  # what the Explore page runs: count beside page

        def bare(k: int) -> None:
            task, lo = filters[k]
            ws.store.bench_bare_explore(task, lo, lo + 60, 50, pages[k] * 50)

        winnow(0), bare(0)  # warm both paths once
        ours, base = [], []
        for k in range(repeats):  # interleave so both see the same machine state
            ours += timed(lambda: winnow(k), 1)  # noqa: B023 (called at once)
            base += timed(lambda: bare(k), 1)  # noqa: B023
        ws.close()
    report("explore_query", rows=rows, repeats=repeats,
           winnow_p50_ms=round(statistics.median(ours) * 1000, 1), winnow_p95_ms=round(p95(ours) * 1000, 1),
           bare_p50_ms=round(statistics.median(base) * 1000, 1), bare_p95_ms=round(p95(base) * 1000, 1),
           ratio_p95=round(p95(ours) / p95(base), 2), target_p95_ms=50, target_ratio=1.5)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
