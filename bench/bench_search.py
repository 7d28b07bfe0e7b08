"""Explore's text search at 1M samples: the trigram index (core/text_index.py) versus the ILIKE scan.

Query: a search + count + one page of 50, as the Explore page runs it through `Workspace`. Three
kinds of search: a number as it appears in one instruction ("#123456": a handful of matches),
the same with "search responses too", and a three-word phrase taken from a random response
(searched in responses too). The synthetic texts are drawn from 32 words, so every trigram of
such a phrase is in most rows: there the index mostly declines (more than text_index.candidate_limit) and the
scan runs, which `answered_by_index` shows; real text, with a real vocabulary, is far more
selective. Baseline: the same
calls with the index switched off (today's ILIKE scan), interleaved in the same run; the results
of every call are asserted equal. Also reported: the index's build time and size. Target: p50
≤ 1.0x of the scan (faster).
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import p95, report, synthetic_jsonl, timed  # noqa: E402
from core import text_index  # noqa: E402
from core.store import ExploreFilter  # noqa: E402
from core.workspace import Workspace  # noqa: E402


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(rows: int = 1_000_000, repeats: int = 20, cache: Path = Path("bench/out")) -> None:
    data = synthetic_jsonl(cache / f"alpaca_{rows}.jsonl", rows)
    rng = random.Random(2)
    with tempfile.TemporaryDirectory() as tmp:
        min_rows = text_index.MIN_ROWS
        text_index.MIN_ROWS = 2**62  # import without the index, to time its build on its own
        ws = Workspace(Path(tmp) / "ws")
        ws.import_paths([data], "bench")
        text_index.MIN_ROWS = min_rows
        start = time.perf_counter()
        text_index.update(ws.store, threads=2)
        build_s = time.perf_counter() - start
        size_mb = folder_bytes(ws.store.text_index_folder) / 1e6

        picks = [rng.randrange(rows) for _ in range(repeats)]
        phrases = []
        for rowid in picks:  # three consecutive words of a random response
            text = ws.store._rows("SELECT text FROM responses WHERE rowid = ?", [rowid])[0][0].split()
            k = rng.randrange(max(1, len(text) - 2))
            phrases.append(" ".join(text[k:k + 3]))
        kinds = {
            "instruction_number": [ExploreFilter(search=f"#{rowid}") for rowid in picks],
            "number_with_responses": [ExploreFilter(search=f"#{rowid}", search_responses=True) for rowid in picks],
            "common_phrase": [ExploreFilter(search=p.upper(), search_responses=True) for p in phrases],
        }

        def run(f: ExploreFilter) -> tuple[int, list[str]]:
            return ws.explore_count(f), ws.explore_page(f, page_size=50)["id"].tolist()

        def scan(f: ExploreFilter) -> tuple[int, list[str]]:
            text_index.HAVE_TANTIVY = False
            try:
                return run(f)
            finally:
                text_index.HAVE_TANTIVY = True

        results = {}
        for kind, filters in kinds.items():
            run(filters[0]), scan(filters[0])  # warm both paths once
            ours, base, answered = [], [], 0
            for k, f in enumerate(filters):  # interleaved, so both see the same machine state;
                got, want = {}, {}  # and each goes first half the time (the second finds warmer caches)
                first, second = ((ours, got, run), (base, want, scan)) if k % 2 == 0 else ((base, want, scan), (ours, got, run))
                for times, out, call in (first, second):
                    times += timed(lambda: out.setdefault("r", call(f)), 1)  # noqa: B023 (called at once)
                answered += ws.store.text_search_rows(f.search, f.search_responses) is not None  # memoised now
                assert got["r"] == want["r"], (f.search, got["r"][0], want["r"][0])
            results[kind] = (ours, base, answered)
        ws.close()
    for kind, (ours, base, answered) in results.items():
        report(f"search_{kind}", rows=rows, repeats=repeats, answered_by_index=answered,
               index_p50_ms=round(statistics.median(ours) * 1000, 1), index_p95_ms=round(p95(ours) * 1000, 1),
               ilike_p50_ms=round(statistics.median(base) * 1000, 1), ilike_p95_ms=round(p95(base) * 1000, 1),
               ratio=round(statistics.median(ours) / statistics.median(base), 3), target_ratio=1.0,
               build_s=round(build_s, 1), index_mb=round(size_mb, 1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
