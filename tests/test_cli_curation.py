"""The curation commands end to end on a real workspace: tasks, snapshots, explain, export."""

from __future__ import annotations

import json

from core import cli
from core.demo import EVAL_FILE, SEED_FILE
from core.selection import ExploreFilter
from core.workspace import Workspace


def _run(capsys, *argv) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_tasks_and_a_rebalanced_snapshot_from_the_command_line(tmp_path, capsys):
    root = str(tmp_path / "ws")
    with Workspace(root) as ws:
        ws.import_paths([SEED_FILE], "seed", fmt="alpaca")
        ws.import_paths([EVAL_FILE], "eval", fmt="prompts")
        n_eval = ws.explore_count(ExploreFilter(datasets=["eval"]))
    report = json.loads(_run(capsys, "tasks", "accuracy", "--method", "embed", "-w", root, "--json"))
    assert report["accuracy"]["n"] > 0 and report["accuracy"]["value"] > report["majority"]["value"]
    out = _run(capsys, "tasks", "classify", "--method", "embed", "--dataset", "eval", "--all", "-w", root)
    assert f"{n_eval} instructions labelled" in out, out

    spec = tmp_path / "spec.yaml"
    spec.write_text("datasets: [seed]\nroles: [seed]\nrebalance: {target: tapir, size: 60, seed: 0}\n"
                    "weights: {default: 1.0, rules: [{when: {tasks: [math]}, weight: 2.0}]}\n", encoding="utf-8")
    out = _run(capsys, "curate", "--spec", str(spec), "--name", "tapir60", "-w", root)
    assert "snapshot tapir60 created: 60 samples" in out, out
    listed = json.loads(_run(capsys, "curate", "list", "--json", "-w", root))
    assert [s["name"] for s in listed["snapshots"]] == ["tapir60"]

    out_file = tmp_path / "sft.jsonl"
    out = _run(capsys, "curate", "export", "tapir60", "--format", "alpaca", "--out", str(out_file), "-w", root)
    records = [json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 60 and {r["weight"] for r in records} == {1.0, 2.0}
    with Workspace(root) as ws:
        member = ws.store._rows("SELECT response_id FROM snapshot_members WHERE snapshot = 'tapir60' LIMIT 1")[0][0]
    why = json.loads(_run(capsys, "curate", "explain", "tapir60", member, "--json", "-w", root))
    assert why["in"] is True
    # Snapshots are immutable: a different spec under the same name is refused with exit code 2.
    spec.write_text("datasets: [seed]\nroles: [seed]\n", encoding="utf-8")
    assert cli.main(["curate", "--spec", str(spec), "--name", "tapir60", "-w", root]) == 2
