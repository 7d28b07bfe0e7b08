"""The `winnow` command, run as real processes against real workspaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, SMALL_PAIRS, write_jsonl

from core.cli import main
from core.workspace import Workspace


def winnow(*args: str, workspace: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = os.environ | {"WINNOW_WORKSPACE": str(workspace)}
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def stats(workspace: Path) -> dict:
    result = winnow("stats", "--json", workspace=workspace)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_init_demo_then_stats_json(tmp_path):
    ws = tmp_path / "demo"
    result = winnow("init", "--demo", workspace=ws)
    assert result.returncode == 0, result.stderr
    assert (ws / "winnow.duckdb").exists()
    data = stats(ws)
    for key in ("instructions", "responses", "documents", "judgments"):
        assert key in data
    by_name = {d["name"]: d for d in data["per_dataset"]}
    assert by_name["seed"]["instructions"] == by_name["seed"]["responses"] >= 150
    assert by_name["eval"]["instructions"] >= 40 and by_name["eval"]["responses"] == 0
    assert by_name["python-docs"]["documents"] > 50
    assert data["instructions"] == by_name["seed"]["instructions"] + by_name["eval"]["instructions"]
    # Building the demo again adds nothing: ids are content hashes.
    assert winnow("init", "--demo", workspace=ws).returncode == 0
    assert stats(ws)["instructions"] == data["instructions"]


def test_import_rejects_bad_file_with_exit_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok", "output": "fine"}\n{"instruction": 5, "output": "x"}\n{oops\n')
    ws = tmp_path / "ws"
    code = main(["import", str(bad), "--dataset", "d", "--workspace", str(ws)])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.jsonl" in err and "line 2" in err and "must be text" in err and "line 3" in err
    assert "broken JSON" in err
    with Workspace(ws) as w:
        assert w.stats()["instructions"] == 0 and w.store.dataset("d") is None

    code = main(["import", str(bad), "--dataset", "d", "--skip-invalid", "--workspace", str(ws)])
    out = capsys.readouterr().out
    assert code == 0 and "1 new" in out and "2 rejected" in out
    with Workspace(ws) as w:
        rejects = w.rejects()
        assert sorted(rejects["line"].tolist()) == [2, 3]


def test_export_then_reimport_round_trip(tmp_path, capsys):
    ws = tmp_path / "ws"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)
    assert main(["import", str(pairs), "-d", "small", "-w", str(ws)]) == 0
    out = tmp_path / "out.jsonl"
    assert main(["export", "--format", "alpaca", "--out", str(out), "-d", "small", "-w", str(ws)]) == 0
    assert f"wrote {len(SMALL_PAIRS)} alpaca records" in capsys.readouterr().out
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["instruction"], r["input"], r["output"], r["task"]) for r in exported] == [
        (r["instruction"], r["input"], r["output"], r["task"]) for r in SMALL_PAIRS]
    assert main(["import", str(out), "-d", "again", "-w", str(ws)]) == 0
    # Filters narrow the export: one task.
    math_out = tmp_path / "math.parquet"
    assert main(["export", "-f", "messages", "-o", str(math_out), "--task", "math", "-w", str(ws)]) == 0
    assert "wrote 2 messages records" in capsys.readouterr().out  # the math pair in both datasets


def test_unknown_format_and_missing_file_are_clear_errors(tmp_path, capsys):
    ws = tmp_path / "ws"
    with pytest.raises(SystemExit) as exc:
        main(["import", "x.jsonl", "-d", "d", "--format", "nope", "-w", str(ws)])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "missing.jsonl"), "-d", "d", "-w", str(ws)]) == 2
    assert "no such file" in capsys.readouterr().err


HOLDER = textwrap.dedent("""
    import sys, time
    from core.workspace import Workspace
    ws = Workspace(sys.argv[1])
    if sys.argv[2] == "owner":
        from core.owner import Owner
        Owner(ws).start()
    print("ready", flush=True)
    time.sleep(120)
""")


def hold_workspace(ws: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws), mode], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_cli_hands_work_to_the_owning_process(tmp_path):
    """While another process (the app) owns the catalog, the CLI goes through its request queue."""
    ws = tmp_path / "ws"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)
    owner = hold_workspace(ws, "owner")
    try:
        result = winnow("import", str(pairs), "--dataset", "queued", workspace=ws)
        assert result.returncode == 0, result.stderr
        assert "handing 'import'" in result.stderr
        assert f"{len(SMALL_PAIRS)} new" in result.stdout
        data = stats(ws)
        assert data["instructions"] == len(SMALL_PAIRS)
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"instruction": ""}\n')
        result = winnow("import", str(bad), "--dataset", "queued", workspace=ws)
        assert result.returncode == 2 and "field 'instruction' is empty" in result.stderr
        assert "Conflicting lock" not in result.stderr
    finally:
        owner.kill()
        owner.wait()
    assert not list((ws / "requests").glob("*.json")), "requests and results are cleaned up"


def test_judges_lists_each_judge_with_its_trust_through_the_owner(tmp_path):
    """`winnow judges` while the app owns the catalog: the trust sentence comes back through the queue."""
    from core import judge as judge_mod

    ws = tmp_path / "ws"
    with Workspace(ws) as w:
        w.import_paths([write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)], "small")
        rids = [r["id"] for r in w.store._dicts("SELECT id FROM responses ORDER BY id")]
        w.record_judgments(judge_mod.judgment_rows("pointwise_5", "jm", rids, ["Score: 4"] * len(rids)))
        w.review(rids[0], "accept")
    owner = hold_workspace(ws, "owner")
    try:
        result = winnow("judges", workspace=ws)
        assert result.returncode == 0, result.stderr
        assert "handing 'judges'" in result.stderr
        assert result.stdout.splitlines() == [
            f"jm · pointwise_5 (pointwise, {len(rids)} judgments)",
            "  Not yet known whether this judge beats chance: 1 label (1 accept, 0 reject); it takes at least 10, "
            "with 3 of each kind — label at least 9 more, 2 accepts and 3 rejects among them."]
        data = json.loads(winnow("judges", "--json", workspace=ws).stdout)
        assert data["judges"][0]["trust"]["status"] == "unknown" and data["judges"][0]["trust"]["more_labels"] == 9
    finally:
        owner.kill()
        owner.wait()


def test_busy_workspace_without_owner_is_a_clear_error(tmp_path):
    ws = tmp_path / "ws"
    holder = hold_workspace(ws, "plain")
    try:
        started = time.time()
        result = winnow("stats", workspace=ws)
        assert result.returncode == 3
        assert "is open in process" in result.stderr and "Conflicting lock" not in result.stderr
        assert time.time() - started < 60
    finally:
        holder.kill()
        holder.wait()


def test_rank_and_categories_commands_report_and_refuse_clearly(tmp_path, capsys):
    """`winnow rank` ranks stored answers by their mean log-prob (a model with no answers: nothing
    ranked, said so); contextual ranking without a judge and a scheme without categories are clear
    errors, not tracebacks."""
    root = tmp_path / "ws"
    Workspace(root).close()
    assert main(["rank", "probabilistic", "--role", "teacher", "--model", "nobody", "--json", "--workspace", str(root)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ranked"] == summary["instructions"] == 0
    assert main(["rank", "contextual", "--role", "teacher", "--model", "nobody", "--workspace", str(root)]) != 0
    assert "name the judge" in capsys.readouterr().err
    assert main(["categories", "assign", "--scheme", "none", "--workspace", str(root)]) != 0
    assert "categor" in capsys.readouterr().err
