"""`make bench`: every benchmark, one JSON line each. Pass a row count to run smaller."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_curate, bench_explore, bench_generate, bench_import, bench_train  # noqa: E402

if __name__ == "__main__":
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    bench_import.main(rows)
    bench_explore.main(rows)
    bench_curate.main(rows)
    bench_generate.hf_batched_vs_loop()
    bench_generate.generate_job_vs_direct()
    bench_train.main()
