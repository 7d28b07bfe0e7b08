"""`make bench`: every benchmark, one JSON line each, then BENCHMARKS.md (each figure, its
same-run baseline ratio, the target, the machine). Pass a row count to run smaller."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (  # noqa: E402
    bench_curate,
    bench_dpo,
    bench_explore,
    bench_generate,
    bench_import,
    bench_search,
    bench_train,
)
from bench.common import RESULTS, machine, write_markdown  # noqa: E402

REPORT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

if __name__ == "__main__":
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    bench_import.main(rows)
    bench_explore.main(rows)
    bench_search.main(rows)
    bench_curate.main(rows)
    bench_generate.hf_batched_vs_loop()
    bench_generate.generate_job_vs_direct()
    bench_train.main()
    RESULTS.extend(bench_dpo.main())  # it prints its own records
    write_markdown(REPORT, RESULTS, machine(), "make bench" + (f" ({rows:,} rows)" if rows != 1_000_000 else ""))
    print(f"wrote {REPORT}", flush=True)
