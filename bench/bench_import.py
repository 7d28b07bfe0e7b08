"""Import of a 1M-row JSON Lines file versus DuckDB's own read_json on the same file.

Baseline: `CREATE TABLE t AS SELECT * FROM read_json(file)` into a fresh DuckDB file on disk.
Winnow: `Workspace.import_paths` into a fresh workspace (validation, content-hash ids, dedup,
lineage, two tables and one index, one transaction). Target: ratio of rows/s ≥ 0.5.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report, synthetic_jsonl, without_text_index  # noqa: E402
from core.store import Store  # noqa: E402
from core.workspace import Workspace  # noqa: E402


def main(rows: int = 1_000_000, cache: Path = Path("bench/out")) -> None:
    data = synthetic_jsonl(cache / f"alpaca_{rows}.jsonl", rows)
    with tempfile.TemporaryDirectory() as tmp, without_text_index():
        baseline_store = Store(Path(tmp) / "baseline.duckdb")
        start = time.perf_counter()
        baseline_store.bench_read_json(data)
        baseline_s = time.perf_counter() - start
        baseline_store.close()

        ws = Workspace(Path(tmp) / "ws")
        start = time.perf_counter()
        summary = ws.import_paths([data], "bench")
        winnow_s = time.perf_counter() - start
        assert summary.n_new == rows, summary
        start = time.perf_counter()
        ws.import_paths([data], "bench")
        reimport_s = time.perf_counter() - start
        ws.close()
    report("import_jsonl", rows=rows, winnow_rows_per_s=round(rows / winnow_s),
           duckdb_read_json_rows_per_s=round(rows / baseline_s), ratio=round(baseline_s / winnow_s, 3),
           target_ratio=0.5, winnow_s=round(winnow_s, 2), duckdb_s=round(baseline_s, 2),
           reimport_s=round(reimport_s, 2))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
