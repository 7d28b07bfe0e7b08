"""BENCHMARKS.md as `make bench` writes it (bench/common.write_markdown): figures, ratios,
targets, the machine, and the notes of the benchmarks that ran."""

from __future__ import annotations

from bench.common import write_markdown


def test_the_report_has_a_row_per_figure_and_only_the_notes_of_what_ran(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    records = [{"bench": "import_jsonl", "ratio": 0.25, "target_ratio": 0.5, "rows": 1000, "winnow_s": 1.5},
               {"bench": "explore_query", "ratio_p95": 1.2, "target_ratio": 1.5, "bare_p95_ms": 9.0}]
    notes = {"import_jsonl": "missed: why", "search_common_phrase": "not run here", "gpu": "none lent"}
    write_markdown(report, records, {"cpus": 2, "gpu": None}, "make bench", notes)
    text = report.read_text(encoding="utf-8")
    assert "| import_jsonl | ratio = 0.25 | target_ratio = 0.5 | rows = 1000, winnow_s = 1.5 |" in text
    assert "| explore_query | ratio_p95 = 1.2 | target_ratio = 1.5 | bare_p95_ms = 9.0 |" in text
    assert "Machine: cpus 2, gpu None (CPU only)" in text
    assert "- **import_jsonl**: missed: why" in text and "- **gpu**: none lent" in text
    assert "search_common_phrase" not in text  # a note on a benchmark that did not run is left out


def test_a_report_without_notes_has_no_notes_section(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    write_markdown(report, [{"bench": "x", "speedup": 2.0}], {"gpu": "H200"}, "make bench")
    text = report.read_text(encoding="utf-8")
    assert "| x | speedup = 2.0 |  |  |" in text and "## Notes" not in text and "(CPU only)" not in text
