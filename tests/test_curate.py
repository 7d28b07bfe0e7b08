"""Curation snapshots (core.curate): spec validation, rules and their counts, near-duplicate
removal, rebalancing, immutability, diff, why in / why out, export. Real DuckDB workspaces."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from core import curate
from core.curate import SnapshotExists, SpecError
from core.export import ExportError
from core.ids import content_id
from core.store import ExploreFilter
from tests.conftest import write_jsonl

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def import_tasks(ws, tmp_path: Path, sizes: dict[str, int], dataset: str = "pool", role: str = "seed",
                 prefix: str = "") -> list[dict]:
    """Import sizes[task] pairs per task; return their (instruction_id, response_id, task, text) rows."""
    rows = [{"instruction": f"{prefix}{task} question number {i}", "input": "", "output": f"answer {i} for {task}",
             "task": task} for task, n in sizes.items() for i in range(n)]
    ws.import_paths([write_jsonl(tmp_path / f"{dataset}-{role}.jsonl", rows)], dataset, role=role)
    return samples_of(ws, dataset, role)


def samples_of(ws, dataset: str, role: str = "seed") -> list[dict]:
    frame = ws.store.export_pairs(ExploreFilter(datasets=[dataset]), [role], False)
    return frame[["instruction_id", "response_id", "task", "instruction"]].to_dict("records")


def judgment(response_id: str, score: float | None, judge: str = "j", rubric: str = "pointwise_5",
             n: int = 0) -> dict:
    raw = "garbage" if score is None else f"Score: {score}"
    return {"id": content_id("test-judgment", response_id, judge, rubric, str(score), str(n)),
            "target_kind": "response", "target_id": response_id, "judge_model": judge, "rubric": rubric,
            "kind": "pointwise", "score": score, "scale_max": 5, "raw": raw,
            "parse_error": "no score line" if score is None else None, "rationale": None, "round": 0,
            "template_hash": "t", "params": "{}"}


def mfd_row(instruction_id: str, value: float | None, round: int = 0, source: str = "j/pointwise_10") -> dict:
    return {"id": content_id("test-mfd", instruction_id, str(round), source), "instruction_id": instruction_id,
            "round": round, "metric": "mfd", "source": source, "value": value,
            "missing": None if value is not None else "no student answer"}


def member_counts(ws, name: str) -> dict[str, int]:
    table = pq.read_table(curate.snapshot(ws, name).parquet_path)
    tasks = [t or "(none)" for t in table.column("task").to_pylist()]
    return {t: tasks.count(t) for t in set(tasks)}


def no_embed(texts):
    raise AssertionError("this spec does not dedup: nothing should be embedded")


# --------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "key", "value"), [
    ({"mfd_min": "high"}, "mfd_min", "'high'"),
    ({"judges": [{"judge": "m", "rubric": "pointwise_5", "min": "four"}]}, "judges[0].min", "'four'"),
    ({"judges": [{"judge": "m", "rubric": "pointwise_5", "minimum": 4}]}, "judges[0]", "'minimum'"),
    ({"review": "maybe"}, "review", "'maybe'"),
    ({"kind": "dpo"}, "kind", "'dpo'"),
    ({"min_chars": 2.5}, "min_chars", "2.5"),
    ({"min_chars": 100, "max_chars": 10}, "min_chars", "100"),
    ({"mfd_min": 2.0, "mfd_max": 1.0}, "mfd_min", "2.0"),
    ({"colour": "blue"}, "spec", "'colour'"),
    ({"dedup": {"threshold": 1.5}}, "dedup.threshold", "1.5"),
    ({"dedup": {"threshold": 0.9, "judge": "m"}}, "dedup", "'m'"),
    ({"rebalance": {"target": {"math": -1}}}, "rebalance.target.math", "-1"),
    ({"rebalance": {"target": "uniform"}}, "rebalance.target", "'uniform'"),
    ({"rebalance": {"size": 0}}, "rebalance.size", "0"),
    ({"weights": {"rules": [{"when": {"task": ["math"]}, "weight": "heavy"}]}}, "weights.rules[0].weight", "'heavy'"),
    ({"weights": {"rules": [{"when": {"colour": "red"}, "weight": 2}]}}, "weights.rules[0].when", "'colour'"),
    ({"system_tags": {"rules": [{"when": {"role": ["seed"]}, "tag": ""}]}}, "system_tags.rules[0].tag", "''"),
    ({"roles": []}, None, None),  # valid: a prompt-only spec
    ({"roles": [], "judges": [{"judge": "m", "rubric": "r", "min": 1}]}, "judges", "'judge'"),
    ({"kind": "sft", "roles": []}, "roles", "[]"),
    ({"tasks": ["math", 3]}, "tasks", "3"),
])
def test_spec_errors_name_the_key_and_the_bad_value(spec, key, value):
    if key is None:
        assert curate.load_spec(spec).kind == "prompts"
        return
    with pytest.raises(SpecError) as err:
        curate.load_spec(spec)
    assert str(err.value).startswith(key), err.value
    assert value in str(err.value), err.value


def test_spec_loads_from_yaml_json_and_a_file_and_round_trips(tmp_path):
    text = """
    datasets: [seed]
    tasks: math
    review: not_rejected
    judges:
      - {judge: smollm2, rubric: pointwise_5, min: 4}
    mfd_min: 0.5
    difficulty: {round: 1}
    dedup: {threshold: 0.9}
    rebalance: {target: {math: "1/6", open_qa: 0.5}, size: 60, seed: 3}
    weights: {default: 1.0, rules: [{when: {task: [math], mfd_min: 1.0}, weight: 2.0}]}
    system_tags: {rules: [{when: {dataset: [seed]}, tag: "Answer in the style of an AI assistant."}]}
    """
    spec = curate.load_spec(text)
    assert spec.tasks == ("math",) and spec.judges[0].min == 4.0 and spec.difficulty.round == 1
    assert dict(spec.rebalance.target) == {"math": Fraction(1, 6), "open_qa": Fraction(1, 2)}
    assert spec.weights.rules[0].when.tasks == ("math",)
    assert curate.load_spec(spec.to_dict()) == spec
    assert curate.load_spec(spec.to_json()) == spec
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    assert curate.load_spec(path) == spec and curate.load_spec(str(path)) == spec
    with pytest.raises(SpecError, match="does not exist"):
        curate.load_spec(str(tmp_path / "missing.yaml"))


def test_an_unknown_dataset_name_is_an_error_not_an_empty_selection(workspace, tmp_path):
    import_tasks(workspace, tmp_path, {"math": 2})
    with pytest.raises(SpecError, match="datasets: no dataset named 'poool'"):
        curate.counts(workspace, {"datasets": ["poool"]})


# --------------------------------------------------------------------------------------------
# Rules: judges (NULL verdicts), difficulty, review, live counts
# --------------------------------------------------------------------------------------------


def test_judge_filter_drops_and_counts_missing_verdicts_apart(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 6, "open_qa": 4})
    r = [s["response_id"] for s in samples]
    workspace.record_judgments([
        judgment(r[0], 5), judgment(r[1], 4), judgment(r[1], 5, n=1),  # mean 4.5
        judgment(r[2], 3), judgment(r[3], None),                         # unparsed: no verdict, never 0
        judgment(r[4], 2), judgment(r[4], None, n=1),                    # mean of the parsed one: 2
        judgment(r[6], 4), judgment(r[7], 1), judgment(r[7], 5, judge="other"),
    ])  # r[5], r[8], r[9]: never judged by j
    spec = {"judges": [{"judge": "j", "rubric": "pointwise_5", "min": 4}]}
    c = curate.counts(workspace, spec)
    rules = dict(zip(c.rules["rule"], c.rules["dropped"], strict=True))
    assert rules == {"judge j/pointwise_5: no verdict": 4, "judge j/pointwise_5 min 4": 3}
    assert (c.before, c.after) == (10, 3)
    per_task = c.per_task.set_index("task")
    assert per_task.loc["math", "after"] == 2 and per_task.loc["open_qa", "after"] == 1
    snap = curate.create_snapshot(workspace, spec, "judged", embed=no_embed)
    kept = set(pq.read_table(snap.parquet_path).column("response_id").to_pylist())
    assert kept == {r[0], r[1], r[6]}
    out = curate.explain(workspace, "judged", r[3])
    assert out["in"] is False and out["rule"] == "judge j/pointwise_5: no verdict" and out["value"] is None


def test_mfd_filter_reads_the_latest_round_or_the_given_one(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 5})
    ids = [s["instruction_id"] for s in samples]
    workspace.store.curate_insert_difficulty([
        mfd_row(ids[0], 2.0),                       # only round 0
        mfd_row(ids[1], -1.0), mfd_row(ids[1], 3.0, round=1),   # latest round 1: 3.0
        mfd_row(ids[2], 4.0), mfd_row(ids[2], None, round=1),   # latest round has no value: no MFD
        mfd_row(ids[3], 0.5),                        # not above δ = 0.5 (TAPIR keeps MFD > δ)
    ])  # ids[4]: no row
    spec = {"mfd_min": 0.5}
    c = curate.counts(workspace, spec)
    assert dict(zip(c.rules["rule"], c.rules["dropped"], strict=True)) == {"mfd: no value": 2, "mfd_min 0.5": 1}
    curate.create_snapshot(workspace, spec, "hard", embed=no_embed)
    kept = set(pq.read_table(curate.snapshot(workspace, "hard").parquet_path).column("instruction_id").to_pylist())
    assert kept == {ids[0], ids[1]}
    why = curate.explain(workspace, "hard", samples[3]["response_id"])
    assert (why["in"], why["rule"], why["value"]) == (False, "mfd_min 0.5", 0.5)
    # Round 0 asked for explicitly: ids[1] has -1.0 there, ids[2] has 4.0.
    round0 = curate.counts(workspace, {"mfd_min": 0.5, "difficulty": {"round": 0}})
    assert round0.after == 2
    live = curate.explain(workspace, {"mfd_min": 0.5, "difficulty": {"round": 0}}, ids[1])
    assert (live["in"], live["rule"], live["value"]) == (False, "mfd_min 0.5", -1)
    # A source that wrote nothing: every sample lacks a value.
    assert curate.counts(workspace, {"mfd_max": 10, "difficulty": {"mfd_source": "nobody"}}).after == 0


def test_live_counts_equal_the_materialised_snapshot(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 8, "open_qa": 6, "translation": 4})
    workspace.record_judgments([judgment(s["response_id"], float(1 + k % 5)) for k, s in enumerate(samples)])
    workspace.store.curate_insert_difficulty([mfd_row(s["instruction_id"], float(k % 4 - 1))
                                              for k, s in enumerate(samples) if k % 7])
    workspace.review(samples[0]["response_id"], "reject")
    workspace.review(samples[1]["instruction_id"], "reject")
    spec = {"tasks": ["math", "open_qa"], "review": "not_rejected", "min_chars": 10,
            "judges": [{"judge": "j", "rubric": "pointwise_5", "min": 2, "max": 4}], "mfd_min": -1}
    live = curate.counts(workspace, spec)
    snap = curate.create_snapshot(workspace, spec, "same", embed=no_embed)
    after = {r["task"]: r["after"] for r in live.per_task.to_dict("records") if r["after"]}
    assert after == member_counts(workspace, "same")
    assert live.after == snap.n_members > 0
    assert [r["dropped"] for r in snap.stats["rules"]] == live.rules["dropped"].tolist()
    assert sum(live.rules["dropped"]) == live.before - live.after
    # With rebalancing the plan is in the live counts too (exact: no dedup).
    spec["rebalance"] = {"target": {"math": 1, "open_qa": 1}, "size": 9}
    planned = curate.counts(workspace, spec)
    curate.create_snapshot(workspace, spec, "same-rebalanced", embed=no_embed)
    assert {r["task"]: r["planned"] for r in planned.per_task.to_dict("records") if r["planned"]} == \
        member_counts(workspace, "same-rebalanced")


def test_review_modes(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 4})
    workspace.review(samples[0]["response_id"], "accept")
    workspace.review(samples[1]["response_id"], "reject")
    workspace.review(samples[2]["instruction_id"], "reject")
    workspace.review(samples[2]["response_id"], "accept")  # the response's own decision wins
    afters = {mode: curate.counts(workspace, {"review": mode}).after
              for mode in ("any", "accepted", "rejected", "unreviewed", "not_rejected")}
    assert afters == {"any": 4, "accepted": 2, "rejected": 1, "unreviewed": 1, "not_rejected": 3}


# --------------------------------------------------------------------------------------------
# Rebalancing
# --------------------------------------------------------------------------------------------


def test_largest_remainder_plan_is_exact():
    plan = curate.plan_rebalance({"math": 30, "reasoning": 5, "code_generation": 12, "open_qa": 40,
                                  "summarization": 13}, "tapir", 120)
    # Shares present: 1/6, 1/6, 1/12 and 1/4 + 1/4 for the two others (code_debugging is missing),
    # renormalised by 11/12: quotas 21.8, 21.8, 10.9, 32.7, 32.7 -> floors 116; the 4 units left go
    # to the largest remainders (.909, .818, .818, then the .727 tie by name: open_qa).
    assert plan.counts == {"math": 22, "reasoning": 22, "code_generation": 11, "open_qa": 33, "summarization": 32}
    assert plan.missing == ("code_debugging",)
    assert sum(plan.counts.values()) == 120
    even = curate.plan_rebalance({"a": 3, "b": 3, "c": 3}, (("a", Fraction(1)), ("b", Fraction(1)),
                                                             ("c", Fraction(1))), 10)
    assert even.counts == {"a": 4, "b": 3, "c": 3}  # 3.33 each; the one unit left goes to "a" by name
    dropped = curate.plan_rebalance({"a": 5, "z": 5}, (("a", Fraction(1)),), None)
    assert dropped.counts == {"a": 10, "z": 0} and dropped.missing == ()


def test_tapir_rebalancing_gives_exact_task_counts_with_recorded_copies(workspace, tmp_path):
    sizes = {"math": 30, "reasoning": 5, "code_generation": 12, "open_qa": 40, "summarization": 13}
    import_tasks(workspace, tmp_path, sizes)
    spec = {"rebalance": {"target": "tapir", "size": 120, "seed": 7}}
    snap = curate.create_snapshot(workspace, spec, "tapir", embed=no_embed)
    assert member_counts(workspace, "tapir") == {"math": 22, "reasoning": 22, "code_generation": 11,
                                                 "open_qa": 33, "summarization": 32}
    assert snap.n_members == 120 and snap.stats["rebalance"]["missing_tasks"] == ["code_debugging"]
    table = pq.read_table(snap.parquet_path).to_pandas()
    reasoning = table[table["task"] == "reasoning"]
    # 22 from 5: every one 4 times (copies 0-3), 2 of them a fifth time (copy 4).
    assert sorted(reasoning.groupby("response_id").size().tolist()) == [4, 4, 4, 5, 5]
    assert (reasoning["copy"] > 0).sum() == 17 and table["copy"].max() == 4
    math = table[table["task"] == "math"]
    assert math["response_id"].nunique() == 22 and (math["copy"] == 0).all()  # down-sampled, no repeats
    assert table["position"].tolist() == list(range(120))
    assert (table["copy"].diff().fillna(0) >= 0).all()  # originals first, then the repeats
    # Seeded: the same spec gives the same members (so the same name is a no-op) …
    again = curate.create_snapshot(workspace, spec, "tapir", embed=no_embed)
    assert again.created is False and again.content_hash == snap.content_hash
    # … another seed another choice of math samples; a dropped one says why.
    other = curate.create_snapshot(workspace, spec | {"rebalance": {"target": "tapir", "size": 120, "seed": 8}},
                                   "tapir-8", embed=no_embed)
    assert other.content_hash != snap.content_hash
    dropped = [s for s in samples_of(workspace, "pool") if s["task"] == "math"
               and s["response_id"] not in set(math["response_id"])][0]
    why = curate.explain(workspace, "tapir", dropped["response_id"])
    assert (why["in"], why["rule"], why["value"]) == (False, "rebalance tapir", "math: 22 of 30 kept")
    kept_reasoning = reasoning["response_id"].iloc[0]
    why_in = curate.explain(workspace, "tapir", kept_reasoning)
    assert why_in["in"] is True and why_in["copies"] in (4, 5)


# --------------------------------------------------------------------------------------------
# Near-duplicate removal
# --------------------------------------------------------------------------------------------


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_near_duplicates_is_greedy_against_kept_vectors_only():
    e0, e1, e2 = np.eye(3, dtype=np.float32)
    vectors = np.stack([
        e0,
        unit(e0 + 0.15 * e1),   # cos 0.989 with 0: dropped
        e2,
        unit(e0 + 0.45 * e1),   # cos 0.91 with 0 (kept), 0.96 with 1 (dropped): kept at 0.95
        unit(e2 + 0.2 * e0),    # cos 0.98 with 2: dropped
    ])
    for block in (1, 2, 4096):  # across blocks and inside one: the same answer
        keep, dup_of, cosine = curate.near_duplicates(vectors, 0.95, block=block, kept_chunk=2)
        assert keep.tolist() == [True, False, True, True, False]
        assert dup_of.tolist() == [-1, 0, -1, -1, 2]
        assert cosine[1] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-6)


def test_blockwise_near_duplicates_match_the_quadratic_loop():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 16)).astype(np.float32)
    x = centres[rng.integers(0, 40, size=600)] + 0.25 * rng.normal(size=(600, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    expected = []
    for i in range(len(x)):
        expected.append(all(float(x[i] @ x[j]) < 0.9 for j in range(i) if expected[j]))
    keep, _, _ = curate.near_duplicates(x, 0.9, block=64, kept_chunk=50)
    assert 40 <= keep.sum() < 600 and keep.tolist() == expected


def test_snapshot_dedup_on_constructed_vectors_keeps_the_first_or_the_best_scored(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 4})
    texts = [s["instruction"] for s in samples]
    e0, e1, e2 = np.eye(3, dtype=np.float32)
    table = {texts[0]: e0, texts[1]: unit(e0 + 0.1 * e1), texts[2]: e2, texts[3]: unit(e0 + 0.12 * e1)}
    embedded: list[str] = []

    def embed(batch):
        embedded.extend(batch)
        return np.stack([np.pad(table[t], (0, 5)) for t in batch])

    spec = {"dedup": {"threshold": 0.95}}
    assert curate.counts(workspace, spec).not_counted == ("dedup",)
    snap = curate.create_snapshot(workspace, spec, "dedup", embed=embed)
    assert sorted(embedded) == sorted(texts)
    kept = pq.read_table(snap.parquet_path).column("instruction_id").to_pylist()
    assert kept == [samples[0]["instruction_id"], samples[2]["instruction_id"]]
    why = curate.explain(workspace, "dedup", samples[1]["response_id"])
    assert why["rule"] == "dedup threshold 0.95" and why["duplicate_of"] == samples[0]["instruction_id"]
    assert why["value"] == pytest.approx(float(unit(e0 + 0.1 * e1)[0]), abs=1e-3)
    assert snap.stats["dedup"]["dropped_instructions"] == 2
    # Named judge: the best-scored of the near-duplicates stays.
    workspace.record_judgments([judgment(samples[0]["response_id"], 2), judgment(samples[3]["response_id"], 5)])
    best = curate.create_snapshot(workspace, {"dedup": {"threshold": 0.95, "judge": "j", "rubric": "pointwise_5"}},
                                  "dedup-best", embed=embed)
    kept = set(pq.read_table(best.parquet_path).column("instruction_id").to_pylist())
    assert kept == {samples[3]["instruction_id"], samples[2]["instruction_id"]}


def test_dedup_with_real_minilm_drops_a_paraphrase(workspace, tmp_path):
    rows = [{"instruction": "How do I reverse a list in Python?", "output": "Use reversed() or slicing."},
            {"instruction": "Name three primary colours.", "output": "Red, yellow and blue."},
            {"instruction": "What is the way to reverse a Python list?", "output": "lst[::-1]"}]
    workspace.import_paths([write_jsonl(tmp_path / "para.jsonl", rows)], "para")
    snap = curate.create_snapshot(workspace, {"dedup": {"threshold": 0.9}}, "para")  # the workspace's MiniLM
    kept = pq.read_table(snap.parquet_path).column("instruction").to_pylist()
    assert kept == ["How do I reverse a list in Python?", "Name three primary colours."]


# --------------------------------------------------------------------------------------------
# Snapshots: immutability, identical re-create, diff, explain, export
# --------------------------------------------------------------------------------------------


def test_a_snapshot_never_changes_after_creation(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 3, "open_qa": 3})
    workspace.record_judgments([judgment(s["response_id"], 5) for s in samples])
    spec = {"review": "not_rejected", "judges": [{"judge": "j", "rubric": "pointwise_5", "min": 4}]}
    snap = curate.create_snapshot(workspace, spec, "v1", embed=no_embed)
    before_members = curate.snapshot(workspace, "v1").members
    before_file = snap.parquet_path.read_bytes()
    assert snap.n_members == 6 and snap.created
    # Identical content under the same name: a no-op that returns the existing snapshot.
    same = curate.create_snapshot(workspace, spec, "v1", embed=no_embed)
    assert same.created is False and same.content_hash == snap.content_hash
    # Scores and reviews change afterwards …
    workspace.record_judgments([judgment(samples[0]["response_id"], 1, n=9), judgment(samples[0]["response_id"], 1,
                                                                                       n=10)])
    workspace.review(samples[1]["response_id"], "reject")
    assert curate.counts(workspace, spec).after == 4
    # … the snapshot does not.
    assert curate.snapshot(workspace, "v1").members.equals(before_members)
    assert snap.parquet_path.read_bytes() == before_file
    assert curate.explain(workspace, "v1", samples[1]["response_id"])["in"] is True
    live = curate.explain(workspace, spec, samples[1]["response_id"])
    assert (live["in"], live["rule"], live["value"]) == (False, "review not_rejected", "reject")
    # The same name with what the spec now selects is refused.
    with pytest.raises(SnapshotExists, match="immutable"):
        curate.create_snapshot(workspace, spec, "v1", embed=no_embed)
    assert [s["name"] for s in curate.snapshots(workspace)] == ["v1"]
    with pytest.raises(ValueError, match="invalid"):
        curate.create_snapshot(workspace, spec, "../escape", embed=no_embed)


def test_diff_lists_members_only_in_one_and_changed_weights(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 3, "open_qa": 3})
    scores = [5, 4, 3, 5, 2, 4]
    workspace.record_judgments([judgment(s["response_id"], sc) for s, sc in zip(samples, scores, strict=True)])
    curate.create_snapshot(workspace, {"judges": [{"judge": "j", "rubric": "pointwise_5", "min": 4}]}, "a",
                           embed=no_embed)
    curate.create_snapshot(workspace, {"judges": [{"judge": "j", "rubric": "pointwise_5", "min": 3}],
                                       "tasks": ["math"], "weights": {"rules": [
                                           {"when": {"tasks": ["math"]}, "weight": 2.0}]}}, "b", embed=no_embed)
    d = curate.diff(workspace, "a", "b")
    # a: math 0, 1; open_qa 3, 5. b: math 0, 1, 2 (weight 2).
    assert set(d["only_a"]["response_id"]) == {samples[3]["response_id"], samples[5]["response_id"]}
    assert set(d["only_b"]["response_id"]) == {samples[2]["response_id"]}
    assert set(d["changed"]["response_id"]) == {samples[0]["response_id"], samples[1]["response_id"]}
    assert d["changed"]["weight_b"].tolist() == [2.0, 2.0]
    per_task = d["per_task"].set_index("task")
    assert per_task.loc["math"].to_dict() == {"in_a": 2, "in_b": 3, "only_a": 0, "only_b": 1, "changed": 2}
    assert per_task.loc["open_qa"].to_dict() == {"in_a": 2, "in_b": 0, "only_a": 2, "only_b": 0, "changed": 0}
    with pytest.raises(ValueError, match="no snapshot named 'c'"):
        curate.diff(workspace, "a", "c")


def test_explain_names_the_rule_and_value_or_the_weight_tag_and_copies(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 2, "open_qa": 1})
    teacher = import_tasks(workspace, tmp_path, {"math": 2, "open_qa": 1}, role="teacher")
    workspace.record_judgments([judgment(samples[0]["response_id"], 5), judgment(samples[1]["response_id"], 3.2),
                                judgment(samples[2]["response_id"], 4)])
    spec = {"judges": [{"judge": "j", "rubric": "pointwise_5", "min": 4}],
            "weights": {"default": 1.0, "rules": [{"when": {"task": ["math"]}, "weight": 2.0}]},
            "system_tags": {"default": "Answer in the style of an AI assistant."}}
    curate.create_snapshot(workspace, spec, "why", embed=no_embed)
    out = curate.explain(workspace, "why", samples[1]["response_id"])
    assert out == {"instruction_id": samples[1]["instruction_id"], "response_id": samples[1]["response_id"],
                   "source": "snapshot why", "in": False, "rule": "judge j/pointwise_5 min 4", "value": 3.2}
    kept = curate.explain(workspace, "why", samples[0]["response_id"])
    assert kept["in"] is True and kept["weight"] == 2.0 and kept["copies"] == 1
    assert kept["system_tag"] == "Answer in the style of an AI assistant."
    assert curate.explain(workspace, "why", samples[2]["response_id"])["weight"] == 1.0
    role = curate.explain(workspace, "why", teacher[0]["response_id"])
    assert (role["in"], role["rule"], role["value"]) == (False, "roles [seed]", "teacher")
    # An instruction id for an sft spec: each of its responses of the spec's roles.
    assert curate.explain(workspace, "why", samples[0]["instruction_id"])["response_id"] == samples[0]["response_id"]
    live = curate.explain(workspace, spec, samples[0]["response_id"])
    assert live["in"] is True and live["weight"] == 2.0 and live["source"] == "live"
    with pytest.raises(ValueError, match="no instruction or response"):
        curate.explain(workspace, "why", "nope")
    with pytest.raises(ValueError, match="no snapshot named"):
        curate.explain(workspace, "not-a-snapshot", samples[0]["response_id"])


def test_export_sft_with_weights_and_system_tags(workspace, tmp_path):
    import_tasks(workspace, tmp_path, {"math": 2}, dataset="seed")
    import_tasks(workspace, tmp_path, {"open_qa": 1}, dataset="augmented", prefix="web ")
    spec = {"weights": {"rules": [{"when": {"datasets": ["augmented"]}, "weight": 0.5}]},
            "system_tags": {"rules": [
                {"when": {"datasets": ["seed"]}, "tag": "Answer in the style of an AI assistant."},
                {"when": {"datasets": ["augmented"]}, "tag": "Answer with knowledge from web search."}]}}
    curate.create_snapshot(workspace, spec, "humpback", embed=no_embed)
    alpaca = curate.export_snapshot(workspace, "humpback", "alpaca")
    assert alpaca.path == workspace.exports_dir / "humpback.alpaca.jsonl" and alpaca.n_records == 3
    records = [json.loads(line) for line in alpaca.path.read_text(encoding="utf-8").splitlines()]
    assert [r["weight"] for r in records] == [1.0, 1.0, 0.5]
    assert records[0]["system"] == "Answer in the style of an AI assistant."
    assert records[2]["system"] == "Answer with knowledge from web search." and records[2]["output"] == "answer 0 for open_qa"
    messages = curate.export_snapshot(workspace, "humpback", "messages", "parquet")
    rows = pq.read_table(messages.path).to_pylist()
    assert [r["weight"] for r in rows] == [1.0, 1.0, 0.5]
    assert rows[2]["messages"][0] == {"role": "system", "content": "Answer with knowledge from web search."}
    assert rows[2]["messages"][-1]["role"] == "assistant"
    prompts = curate.export_snapshot(workspace, "humpback", "prompts")
    assert prompts.n_records == 3
    with pytest.raises(ExportError, match="kind: preference"):
        curate.export_snapshot(workspace, "humpback", "preference")


def test_prompt_and_preference_snapshots(workspace, tmp_path):
    prefs = [{"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "I refuse.", "task": "chat"},
             {"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": "Rock."}]
    workspace.import_paths([write_jsonl(tmp_path / "prefs.jsonl", prefs)], "prefs")
    import_tasks(workspace, tmp_path, {"math": 2})
    prompts = curate.create_snapshot(workspace, {"roles": []}, "prompts", embed=no_embed)
    assert prompts.spec.kind == "prompts" and prompts.n_members == 4
    assert curate.export_snapshot(workspace, "prompts", "prompts").n_records == 4
    with pytest.raises(ExportError, match="without a response"):
        curate.export_snapshot(workspace, "prompts", "alpaca")
    pref = curate.create_snapshot(workspace, {"kind": "preference", "weights": 3.0}, "pairs", embed=no_embed)
    assert pref.n_members == 2
    result = curate.export_snapshot(workspace, "pairs", "preference")
    records = [json.loads(line) for line in result.path.read_text(encoding="utf-8").splitlines()]
    assert records[0] == {"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "I refuse.", "task": "chat",
                          "weight": 3.0}
    math = samples_of(workspace, "pool")[0]
    why = curate.explain(workspace, "pairs", math["response_id"])
    assert (why["in"], why["rule"]) == (False, "kind preference: has a preference pair")


def test_live_counts_see_new_verdicts_reviews_and_replaced_difficulty(workspace, tmp_path):
    samples = import_tasks(workspace, tmp_path, {"math": 3})
    spec = {"judges": [{"judge": "j", "rubric": "pointwise_5", "min": 4}], "mfd_min": 0}
    workspace.store.curate_insert_difficulty([mfd_row(s["instruction_id"], 1.0) for s in samples])
    assert curate.counts(workspace, spec).after == 0  # no verdicts yet (and the values are now cached)
    workspace.record_judgments([judgment(s["response_id"], 5) for s in samples])
    assert curate.counts(workspace, spec).after == 3
    workspace.store.curate_insert_difficulty([mfd_row(samples[0]["instruction_id"], -2.0)])  # same id: replaced
    assert curate.counts(workspace, spec).after == 2
    workspace.review(samples[1]["response_id"], "reject")
    assert curate.counts(workspace, spec | {"review": "not_rejected"}).after == 1


def test_multi_turn_history_reaches_the_training_file(workspace, tmp_path):
    chat = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "4"}], "task": "math"}]
    workspace.import_paths([write_jsonl(tmp_path / "chat.jsonl", chat)], "chat")
    curate.create_snapshot(workspace, {}, "chat", embed=no_embed)
    rows = [json.loads(line) for line in
            curate.export_snapshot(workspace, "chat", "messages").path.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"messages": chat[0]["messages"], "task": "math", "weight": 1.0}]


def test_a_preference_snapshot_takes_only_the_pairs_its_filter_names(workspace, tmp_path):
    """`pairs: {methods, rounds}`: a Zephyr round trains on its own round's AI-feedback pairs, not on
    every pair its prompts ever had (imported ones, earlier rounds')."""
    from test_pages_preferences import JUDGE, make_pairs

    from core import feedback

    make_pairs(workspace, tmp_path)  # 3 prompts, one AI-feedback pair each, round 0
    assert feedback.binarise(workspace, JUDGE, ["pool_1", "pool_2"], round=1,
                             answer_rounds={"pool_1": 0, "pool_2": 0}).pairs == 3  # the same answers, as round 1
    prefs = [{"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "I refuse."}]
    workspace.import_paths([write_jsonl(tmp_path / "prefs.jsonl", prefs)], "prefs")

    def pairs_of(name: str, spec: dict) -> list[tuple]:
        snap = curate.create_snapshot(workspace, {"kind": "preference"} | spec, name, embed=no_embed)
        rows = pq.read_table(snap.parquet_path, columns=["pair_id"]).column("pair_id").to_pylist()
        found = workspace.store.feedback_pairs(JUDGE)
        rounds = {p["id"]: str(p["round"]) for p in found}
        return sorted((rounds.get(pid, "import"),) for pid in rows), snap.n_instructions

    assert pairs_of("all", {}) == ([("0",)] * 3 + [("1",)] * 3 + [("import",)], 4)
    assert pairs_of("r1", {"pairs": {"methods": ["ai_feedback"], "rounds": [1]}}) == ([("1",)] * 3, 3)
    assert pairs_of("imported", {"pairs": {"methods": ["import"]}}) == ([("import",)], 1)
    live = curate.counts(workspace, {"kind": "preference", "pairs": {"rounds": [1]}})
    assert live.after == 3
    for bad, message in [({"pairs": {"rounds": [-1]}}, "pairs.rounds"), ({"pairs": {"when": 1}}, "pairs"),
                         ({"kind": "sft", "pairs": {"rounds": [1]}}, "only a preference snapshot")]:
        with pytest.raises(SpecError, match=message):
            curate.load_spec({"kind": "preference"} | bad)
    assert "pairs" not in curate.load_spec({"kind": "preference"}).to_dict()  # old specs hash as before
    again = curate.load_spec(curate.load_spec({"kind": "preference", "pairs": {"rounds": [1]}}).to_dict())
    assert again.pairs == curate.PairFilter(methods=(), rounds=(1,))
