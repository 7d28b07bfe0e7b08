"""Export: round trips through real files, reviewer edits and rejections, and failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core import export as export_mod
from core.export import ExportError
from core.store import ExploreFilter
from core.workspace import Workspace

SYSTEM = {"role": "system", "content": "Be kind."}

ALPACA = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5", "task": "math"},
    {"instruction": "Summarise.", "input": "The cat sat on the mat.", "output": "A cat sat.", "task": "summarization"},
    {"instruction": "Greet me.", "input": "", "output": "Hi.", "system": "You are terse."},
    {"instruction": "Unicode ✓ 日本語", "input": "", "output": "ok ✓\nsecond line"},
]
MESSAGES = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "4"}], "task": "math"},
    {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
]
PREF_STRINGS = [
    {"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "I refuse.", "task": "chat"},
    {"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": "Rock."},
]
PREF_CHAT = [
    {"prompt": [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Insult me."}],
     "chosen": [{"role": "assistant", "content": "I would rather not."}],
     "rejected": [{"role": "assistant", "content": "You fool."}]},
    {"prompt": [SYSTEM, {"role": "user", "content": "Say yes."}],
     "chosen": [{"role": "assistant", "content": "Yes."}],
     "rejected": [{"role": "assistant", "content": "No."}]},
]
SOURCES = {"alpaca": ALPACA, "messages": MESSAGES, "pref_strings": PREF_STRINGS, "pref_chat": PREF_CHAT}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_back(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def seeded(ws: Workspace, tmp_path: Path, source: str, dataset: str = "orig") -> Workspace:
    ws.import_paths([write_jsonl(tmp_path / f"{source}.jsonl", SOURCES[source])], dataset)
    return ws


def ids_by_text(ws: Workspace) -> dict[str, str]:
    page = ws.explore_page(ExploreFilter(), page_size=500)
    return dict(zip(page["instruction"], page["id"], strict=True))


def response_id(ws: Workspace, instruction: str, role: str = "seed") -> str:
    sample = ws.sample(ids_by_text(ws)[instruction])
    return next(r["id"] for r in sample["responses"] if r["role"] == role)


def only(dataset: str) -> ExploreFilter:
    return ExploreFilter(datasets=[dataset])


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------

ROUND_TRIPS = [
    ("alpaca", "alpaca"), ("messages", "alpaca"), ("messages", "messages"), ("prompts", "alpaca"),
    ("prompts", "messages"), ("preference", "pref_strings"), ("preference", "pref_chat"),
]


LOSSLESS = {("alpaca", "alpaca"), ("messages", "messages"), ("preference", "pref_strings"),
            ("preference", "pref_chat")}


@pytest.mark.parametrize("file_type", ["jsonl", "parquet"])
@pytest.mark.parametrize("fmt,source", ROUND_TRIPS)
def test_round_trip_is_stable(workspace, tmp_path, fmt, source, file_type):
    seeded(workspace, tmp_path, source)
    first = workspace.export(fmt, tmp_path / f"first.{file_type}", selection=only("orig"))
    assert first.n_records == len(SOURCES[source])
    workspace.import_paths([first.path], "copy")
    second = workspace.export(fmt, tmp_path / f"second.{file_type}", selection=only("copy"))
    assert read_back(second.path) == read_back(first.path)
    assert second.n_records == first.n_records
    # Where the format holds everything the source had, the export goes back into the original
    # dataset as pure duplicates (same content ids). Messages and prompts fold an alpaca input into
    # the user turn, and prompts drop earlier turns, so those make new instructions.
    if (fmt, source) in LOSSLESS:
        before = workspace.store.table_counts()
        summary = workspace.import_paths([first.path], "orig")
        assert (summary.n_new, summary.files[0]["new_responses"]) == (0, 0)
        assert workspace.store.table_counts() == before


def test_alpaca_reimport_gives_the_original_triples(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    result = workspace.export("alpaca", tmp_path / "out.jsonl")
    exported = read_back(result.path)
    assert exported == [
        {"instruction": "Add 2 and 3.", "input": "", "output": "5", "task": "math"},
        {"instruction": "Summarise.", "input": "The cat sat on the mat.", "output": "A cat sat.", "task": "summarization"},
        {"instruction": "Greet me.", "input": "", "output": "Hi.", "system": "You are terse."},
        {"instruction": "Unicode ✓ 日本語", "input": "", "output": "ok ✓\nsecond line"},
    ]
    workspace.import_paths([result.path], "copy")
    copy = workspace.export_records("alpaca", only("copy"))
    triples = lambda rows: [(r["instruction"], r["input"], r["output"], r.get("task")) for r in rows]  # noqa: E731
    assert triples(copy) == triples(ALPACA)


def test_messages_keep_system_and_history(workspace, tmp_path):
    seeded(workspace, tmp_path, "messages")
    assert read_back(workspace.export("messages", tmp_path / "m.jsonl").path) == MESSAGES
    assert read_back(workspace.export("messages", tmp_path / "m.parquet").path) == [
        MESSAGES[0], MESSAGES[1] | {"task": None}]


def test_messages_from_alpaca_fold_system_and_input(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    records = workspace.export_records("messages")
    assert records[1] == {"messages": [{"role": "user", "content": "Summarise.\n\nThe cat sat on the mat."},
                                       {"role": "assistant", "content": "A cat sat."}], "task": "summarization"}
    assert records[2] == {"messages": [{"role": "system", "content": "You are terse."},
                                       {"role": "user", "content": "Greet me."},
                                       {"role": "assistant", "content": "Hi."}]}


@pytest.mark.parametrize("source", ["pref_strings", "pref_chat"])
def test_preference_keeps_chosen_and_rejected(workspace, tmp_path, source):
    seeded(workspace, tmp_path, source)
    assert read_back(workspace.export("preference", tmp_path / "p.jsonl").path) == SOURCES[source]


def test_preference_export_of_mixed_forms_uses_one_form(workspace, tmp_path):
    """One dataset with and without system prompts: every record takes the conversational form, so the
    file has one type per column (Parquet demands it; TRL and `datasets` expect it)."""
    seeded(workspace, tmp_path, "pref_strings")
    seeded(workspace, tmp_path, "pref_chat")
    for out in (tmp_path / "p.parquet", tmp_path / "p.jsonl"):
        records = read_back(workspace.export("preference", out).path)
        assert len(records) == 4
        assert all(isinstance(r[k], list) for r in records for k in ("prompt", "chosen", "rejected"))
        by_last_turn = {r["prompt"][-1]["content"]: r for r in records}
        assert by_last_turn["Pick a colour."]["prompt"] == [{"role": "user", "content": "Pick a colour."}]
        assert by_last_turn["Pick a colour."]["chosen"] == [{"role": "assistant", "content": "Blue."}]
        assert by_last_turn["Insult me."]["rejected"] == [{"role": "assistant", "content": "You fool."}]


def test_prompts_export(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    assert workspace.export_records("prompts") == [
        {"instruction": "Add 2 and 3.", "input": "", "task": "math"},
        {"instruction": "Summarise.", "input": "The cat sat on the mat.", "task": "summarization"},
        {"instruction": "Greet me.", "input": "", "system": "You are terse."},
        {"instruction": "Unicode ✓ 日本語", "input": ""},
    ]


def test_roles_choose_which_responses_are_exported(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    teacher = write_jsonl(tmp_path / "teacher.jsonl", [{"instruction": "Add 2 and 3.", "output": "2 + 3 = 5."}])
    workspace.import_paths([teacher], "orig", role="teacher")
    assert [r["output"] for r in workspace.export_records("alpaca", roles=["teacher"])] == ["2 + 3 = 5."]
    both = workspace.export_records("alpaca", roles=["seed", "teacher"])
    assert [r["output"] for r in both if r["instruction"] == "Add 2 and 3."] == ["5", "2 + 3 = 5."]
    assert len(workspace.export_records("alpaca")) == 4  # seed is the default


def test_selection_limits_the_export(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    records = workspace.export_records("alpaca", ExploreFilter(tasks=["math", "summarization"]))
    assert [r["instruction"] for r in records] == ["Add 2 and 3.", "Summarise."]


# --------------------------------------------------------------------------------------------
# Human review
# --------------------------------------------------------------------------------------------


def test_reviewer_edits_replace_the_exported_text(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    rid = response_id(workspace, "Add 2 and 3.")
    workspace.review(rid, edited_text="Five.")
    workspace.review(rid, edited_text="2 + 3 = 5.")  # the latest edit wins
    workspace.review(rid, note="checked")            # a note alone keeps the edit
    outputs = [r["output"] for r in workspace.export_records("alpaca")]
    assert outputs == ["2 + 3 = 5.", "A cat sat.", "Hi.", "ok ✓\nsecond line"]
    assert workspace.export_records("messages")[0]["messages"][-1] == {"role": "assistant", "content": "2 + 3 = 5."}
    # the stored response is untouched: edits are reviews, not rewrites
    sample = workspace.sample(ids_by_text(workspace)["Add 2 and 3."])
    assert sample["responses"][0]["text"] == "5"


def test_reviewer_edits_replace_preference_texts(workspace, tmp_path):
    seeded(workspace, tmp_path, "pref_strings")
    workspace.review(response_id(workspace, "Pick a colour.", "chosen"), edited_text="Blue, clearly.")
    workspace.review(response_id(workspace, "Name a fruit.", "rejected"), edited_text="A stone.")
    assert workspace.export_records("preference") == [
        {"prompt": "Pick a colour.", "chosen": "Blue, clearly.", "rejected": "I refuse.", "task": "chat"},
        {"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": "A stone."},
    ]


@pytest.mark.parametrize("fmt", ["alpaca", "messages"])
def test_exclude_rejected_drops_rejected_samples(workspace, tmp_path, fmt):
    seeded(workspace, tmp_path, "alpaca")
    ids = ids_by_text(workspace)
    workspace.review(response_id(workspace, "Add 2 and 3."), "reject")                    # the response
    workspace.review(ids["Summarise."], "reject", target_kind="instruction")            # the instruction
    workspace.review(ids["Greet me."], "reject", target_kind="instruction")
    workspace.review(ids["Greet me."], "accept", target_kind="instruction")              # changed their mind
    kept = workspace.export_records(fmt, exclude_rejected=True)
    assert len(kept) == 2
    assert "Greet me." in json.dumps(kept) and "Unicode" in json.dumps(kept, ensure_ascii=False)
    assert len(workspace.export_records(fmt)) == 4


def test_exclude_rejected_drops_rejected_prompts(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    workspace.review(ids_by_text(workspace)["Summarise."], "reject", target_kind="instruction")
    kept = [r["instruction"] for r in workspace.export_records("prompts", exclude_rejected=True)]
    assert kept == ["Add 2 and 3.", "Greet me.", "Unicode ✓ 日本語"]
    assert len(workspace.export_records("prompts")) == 4


def test_exclude_rejected_drops_rejected_preference_pairs(workspace, tmp_path):
    seeded(workspace, tmp_path, "pref_strings")
    workspace.review(ids_by_text(workspace)["Pick a colour."], "reject", target_kind="instruction")
    kept = workspace.export_records("preference", exclude_rejected=True)
    assert [r["prompt"] for r in kept] == ["Name a fruit."]
    workspace.review(response_id(workspace, "Name a fruit.", "chosen"), "reject")
    assert workspace.export_records("preference", exclude_rejected=True) == []
    assert len(workspace.export_records("preference")) == 2


# --------------------------------------------------------------------------------------------
# Failures write nothing; success replaces the file in one step
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,selection,roles", [
    ("alpaca", ExploreFilter(datasets=["nope"]), None),
    ("alpaca", None, ["teacher"]),
    ("preference", None, None),        # the dataset holds no pairs
    ("prompts", ExploreFilter(search="no such text"), None),
])
def test_empty_selection_raises_and_writes_nothing(workspace, tmp_path, fmt, selection, roles):
    seeded(workspace, tmp_path, "alpaca")
    out = tmp_path / "exports" / "out.jsonl"
    with pytest.raises(ExportError, match="no records"):
        workspace.export(fmt, out, selection=selection, roles=roles)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_unknown_format_or_file_type_raises_and_writes_nothing(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    with pytest.raises(ExportError, match="unknown export format 'csv'"):
        workspace.export("csv", tmp_path / "out" / "x.csv")
    with pytest.raises(ExportError, match="unknown file type 'xml'"):
        workspace.export("alpaca", tmp_path / "out" / "x.xml", file_type="xml")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_default_path_and_atomic_replace(workspace, tmp_path):
    seeded(workspace, tmp_path, "alpaca")
    result = workspace.export("alpaca")
    assert result.path == workspace.exports_dir / "alpaca.jsonl"
    assert [p.name for p in workspace.exports_dir.iterdir()] == ["alpaca.jsonl"]  # no leftover .tmp
    result.path.write_text("stale\n")
    workspace.export("alpaca", result.path, selection=ExploreFilter(tasks=["math"]))
    assert read_back(result.path) == [ALPACA[0]]
    assert [p.name for p in workspace.exports_dir.iterdir()] == ["alpaca.jsonl"]
    parquet = workspace.export("alpaca", file_type="parquet")
    assert parquet.path.name == "alpaca.parquet" and len(read_back(parquet.path)) == 4
    assert sorted(p.name for p in workspace.exports_dir.iterdir()) == ["alpaca.jsonl", "alpaca.parquet"]


@pytest.mark.parametrize("file_type", ["jsonl", "parquet"])
def test_a_failed_write_leaves_the_old_file_and_no_tmp(tmp_path, file_type):
    out = tmp_path / f"out.{file_type}"
    out.write_text("previous export\n")
    bad = [{"instruction": "fine", "output": "ok"}, {"instruction": object(), "output": "not serialisable"}]
    with pytest.raises(Exception):  # noqa: B017 - whatever the writer raises, the file must be intact
        export_mod.write_records(bad, out, file_type)
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
