"""Import: golden records for every format and file type, and every way input can be bad.

File contents are literals written here, so a reader sees exactly what goes in and what comes out.
Bad input must (a) raise ImportRejected naming the file, the line and the reason, (b) write
nothing, and (c) with skip_invalid import the valid rows and record each bad one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import ingest
from core.ids import content_id
from core.ingest import (
    MAX_FIELD_BYTES,
    CorpusOptions,
    ImportRejected,
    RowError,
    check_text,
    detect_format,
    read_json_array,
    segment_text,
)
from core.store import ExploreFilter
from core.workspace import Workspace

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def put(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def put_parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def counts(ws: Workspace) -> dict:
    """Rows in every table (what stats() reports) and the number of imports recorded."""
    return ws.store.table_counts() | {"imports": len(ws.imports())}


def dump(ws: Workspace, dataset: str) -> list[dict]:
    """Every instruction of a dataset in file order, with its responses, as plain values."""
    page = ws.explore_page(ExploreFilter(datasets=[dataset]), page_size=500)
    out = []
    for iid in page["id"]:
        sample = ws.sample(iid)
        ins = sample["instruction"]
        out.append({
            "instruction": ins["text"],
            "input": ins["input"],
            "system": ins["system"],
            "history": json.loads(ins["history"]) if ins["history"] else None,
            "task": ins["task"],
            "category": ins["category"],
            "line": ins["source_line"],
            "meta": json.loads(ins["meta"]) if ins["meta"] else None,
            "responses": sorted((r["role"], r["text"]) for r in sample["responses"]),
        })
    return out


def texts(ws: Workspace, dataset: str) -> list[str]:
    return ws.explore_page(ExploreFilter(datasets=[dataset]), page_size=500)["instruction"].tolist()


def documents(ws: Workspace) -> list[tuple]:
    return ws.store.cursor().execute(
        "SELECT source_file, source_line, segment, title, text FROM documents ORDER BY source_file, segment"
    ).fetchall()


def row(instruction, output=None, *, input="", system=None, history=None, task=None, category=None,
        line, meta=None, responses=None):
    if responses is None:
        responses = [] if output is None else [("seed", output)]
    return {"instruction": instruction, "input": input, "system": system, "history": history, "task": task,
            "category": category, "line": line, "meta": meta, "responses": sorted(responses)}


def assert_rejected(ws: Workspace, paths: list, must_mention: list[str], **kw) -> str:
    """(a) ImportRejected naming what is wrong, and (b) nothing written, not even a dataset row."""
    before = counts(ws)
    with pytest.raises(ImportRejected) as info:
        ws.import_paths(paths, "bad", **kw)
    message = str(info.value)
    for text in must_mention:
        assert text in message, f"{text!r} not in:\n{message}"
    assert counts(ws) == before
    assert ws.store.dataset("bad") is None
    return message


def rejects(ws: Workspace) -> list[tuple[str, int, str]]:
    frame = ws.rejects()
    return sorted((Path(r.source_file).name, int(r.line), r.reason) for r in frame.itertuples())


# --------------------------------------------------------------------------------------------
# Golden imports: formats
# --------------------------------------------------------------------------------------------


def test_alpaca_jsonl(workspace, tmp_path):
    path = put(tmp_path / "alpaca.jsonl", (
        '{"instruction": "Add 2 and 3.", "input": "", "output": "5", "task": "math"}\n'
        '{"instruction": "Translate to French.", "input": "cat", "output": "chat", "category": "lang", '
        '"source": "web", "score": 4.5}\n'
        '{"instruction": "Say hi.", "output": "Hi!", "task": "  "}\n'
    ))
    summary = workspace.import_paths([path], "alp")
    assert summary.files[0] | {"file": None} == {"file": None, "format": "alpaca", "read": 3, "new": 3,
                                                   "new_responses": 3, "duplicates": 0, "rejected": 0}
    assert dump(workspace, "alp") == [
        row("Add 2 and 3.", "5", task="math", line=1),
        row("Translate to French.", "chat", input="cat", category="lang", line=2,
            meta={"source": "web", "score": 4.5}),
        row("Say hi.", "Hi!", line=3),  # a blank label is no label
    ]
    assert workspace.stats()["per_dataset"][0]["kind"] == "pairs"


@pytest.mark.parametrize("line,expected", [
    ('{"prompt": "Name a colour.", "response": "Blue."}', ("Name a colour.", "", "Blue.")),
    ('{"question": "Capital of Peru?", "answer": "Lima."}', ("Capital of Peru?", "", "Lima.")),
    ('{"instruction": "Finish: once upon", "completion": "a time."}', ("Finish: once upon", "", "a time.")),
    ('{"prompt": "Summarise.", "context": "Long text.", "response": "Short."}', ("Summarise.", "Long text.", "Short.")),
])
def test_alpaca_aliases(workspace, tmp_path, line, expected):
    summary = workspace.import_paths([put(tmp_path / "a.jsonl", line + "\n")], "alias")
    assert summary.files[0]["format"] == "alpaca"
    [got] = dump(workspace, "alias")
    assert (got["instruction"], got["input"], got["responses"]) == (expected[0], expected[1], [("seed", expected[2])])
    assert got["meta"] is None  # the alias fields are used, not left over as metadata


def test_messages_with_system_history_and_prompt_only(workspace, tmp_path):
    path = put(tmp_path / "chat.jsonl", (
        '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, '
        '{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 2+2?"}, '
        '{"role": "assistant", "content": "4"}], "task": "math"}\n'
        '{"messages": [{"role": "user", "content": "Tell me a joke."}]}\n'
        '{"messages": [{"role": "user", "content": "One"}, {"role": "assistant", "content": "1"}, '
        '{"role": "user", "content": "Two"}]}\n'
    ))
    summary = workspace.import_paths([path], "chat")
    assert summary.files[0]["format"] == "messages"
    assert summary.files[0]["new_responses"] == 1
    assert dump(workspace, "chat") == [
        row("What is 2+2?", "4", system="Be brief.", task="math", line=1,
            history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]),
        row("Tell me a joke.", line=2),
        row("Two", line=3, history=[{"role": "user", "content": "One"}, {"role": "assistant", "content": "1"}]),
    ]


def test_sharegpt(workspace, tmp_path):
    path = put(tmp_path / "sg.jsonl", (
        '{"conversations": [{"from": "system", "value": "You are terse."}, {"from": "human", "value": "Q1"}, '
        '{"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]}\n'
        '{"conversations": [{"from": "user", "value": "Only question"}, {"from": "assistant", "value": "Only answer"}]}\n'
    ))
    summary = workspace.import_paths([path], "sg")
    assert summary.files[0]["format"] == "sharegpt"
    assert dump(workspace, "sg") == [
        row("Q2", "A2", system="You are terse.", line=1,
            history=[{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]),
        row("Only question", "Only answer", line=2),
    ]


def test_prompts(workspace, tmp_path):
    path = put(tmp_path / "p.jsonl", (
        '{"instruction": "Write a haiku about rain."}\n'
        '{"prompt": "Name a river.", "task": "geo", "system": "Answer in one word."}\n'
        '{"instruction": "Summarise this.", "input": "Some text."}\n'
    ))
    summary = workspace.import_paths([path], "prompts")
    assert summary.files[0] | {"file": None} == {"file": None, "format": "prompts", "read": 3, "new": 3,
                                                   "new_responses": 0, "duplicates": 0, "rejected": 0}
    assert dump(workspace, "prompts") == [
        row("Write a haiku about rain.", line=1),
        row("Name a river.", task="geo", system="Answer in one word.", line=2),
        row("Summarise this.", input="Some text.", line=3),
    ]
    assert workspace.stats()["per_dataset"][0]["kind"] == "prompts"


def test_preference_string_and_conversational(workspace, tmp_path):
    path = put(tmp_path / "pref.jsonl", (
        '{"prompt": "Pick a colour.", "chosen": "Blue.", "rejected": "I refuse.", "task": "chat"}\n'
        '{"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}, '
        '{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Insult me."}], '
        '"chosen": [{"role": "assistant", "content": "I would rather not."}], '
        '"rejected": [{"role": "assistant", "content": "You fool."}]}\n'
    ))
    summary = workspace.import_paths([path], "pref")
    assert summary.files[0]["format"] == "preference"
    assert summary.files[0]["new_responses"] == 4
    got = dump(workspace, "pref")
    assert got == [
        row("Pick a colour.", task="chat", line=1, responses=[("chosen", "Blue."), ("rejected", "I refuse.")]),
        row("Insult me.", system="Be kind.", line=2,
            history=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
            responses=[("chosen", "I would rather not."), ("rejected", "You fool.")]),
    ]
    stats = workspace.stats()
    assert stats["preference_pairs"] == 2 and stats["per_dataset"][0]["kind"] == "preference"
    # The pair points at the right responses.
    iid = workspace.explore_page(ExploreFilter(datasets=["pref"]))["id"][0]
    sample = workspace.sample(iid)
    text_of = {r["id"]: r["text"] for r in sample["responses"]}
    [pair] = sample["pairs"]
    assert (text_of[pair["chosen_id"]], text_of[pair["rejected_id"]]) == ("Blue.", "I refuse.")


CORPUS = {
    "a.txt": ("Rivers carve valleys over thousands of years, and they carry sand and silt down to the sea.\n"
              "\n"
              "Tiny.\n"
              "\n"
              "The Shared Paragraph appears in two files and must be stored only once.\n"),
    "b.md": ("# Tea\n"
             "\n"
             "Green tea is steamed or pan-fired soon after picking, which stops oxidation.\n"
             "\n"
             "---\n"
             "\n"
             "the shared paragraph   appears in two files\n"
             "and must be stored only once.\n"),
    "c.rst": ("Mountains\n"
              "=========\n"
              "\n"
              "Mountains rise slowly where plates collide, and wear down again under rain and ice.\n"
              "\n"
              "Mountains rise slowly where plates collide, and wear down again under rain and ice.\n"
              "\n"
              "Mountains  rise slowly where plates collide, and wear down again under RAIN and ice.\n"),
    "d.html": ('<html><head><title>T</title><style>p {color: red}</style></head><body><nav>Menu</nav>\n'
               '<p>Glaciers grind rock into fine flour that turns lakes a milky turquoise.</p>\n'
               '<script>var hidden = 1;</script><p>Deserts can be cold &amp; dry as well as hot.</p>'
               '<footer>Footer</footer></body></html>\n'),
    "e.txt": "Too short.\n",
    "ignored.jsonl": '{"instruction": "not a corpus file", "output": "x"}\n',
}
OPTIONS = CorpusOptions(min_chars=20, max_chars=100)


def test_corpus_folder_cleaned_segmented_deduplicated_filtered(workspace, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, content in CORPUS.items():
        put(folder / name, content)
    summary = workspace.import_paths([folder], "docs", corpus=OPTIONS)
    per_file = {Path(f["file"]).name: (f["read"], f["new"], f["duplicates"]) for f in summary.files}
    # read = passages kept + dropped; a repeat across the files of one import is dropped as a
    # duplicate (core.corpus), so "duplicates" (already in the catalog) stays 0 on a first import
    assert per_file == {"a.txt": (2, 2, 0), "b.md": (2, 1, 0), "c.rst": (3, 1, 0), "d.html": (2, 2, 0),
                        "e.txt": (1, 0, 0)}
    assert {Path(f["file"]).name: f["dropped"] for f in summary.files} == {
        "a.txt": 0, "b.md": 1, "c.rst": 2, "d.html": 0, "e.txt": 1}
    got = [(Path(f).name, line, seg, title, text) for f, line, seg, title, text in documents(workspace)]
    # each passage's title is its heading (the file's name before the first heading)
    assert got == [
        ("a.txt", 1, 0, "a", "Rivers carve valleys over thousands of years, and they carry sand and silt "
                             "down to the sea.\n\nTiny."),
        ("a.txt", 5, 1, "a", "The Shared Paragraph appears in two files and must be stored only once."),
        ("b.md", 3, 0, "Tea", "Green tea is steamed or pan-fired soon after picking, which stops oxidation."),
        ("c.rst", 4, 0, "Mountains", "Mountains rise slowly where plates collide, and wear down again under rain and ice."),
        ("d.html", 2, 0, "d", "Glaciers grind rock into fine flour that turns lakes a milky turquoise."),
        ("d.html", 3, 1, "d", "Deserts can be cold & dry as well as hot."),
    ]
    drops = workspace.store.corpus_drop_counts("docs")
    assert sum(drops.values()) == 4 and drops.get("duplicate", 0) >= 2, drops
    stats = workspace.stats()
    assert stats["documents"] == 6 and stats["instructions"] == 0
    assert stats["per_dataset"][0]["kind"] == "corpus"
    # Importing the folder again adds nothing.
    again = workspace.import_paths([folder], "docs", corpus=OPTIONS)
    assert again.n_new == 0 and workspace.stats()["documents"] == 6
    assert workspace.store.corpus_drop_counts("docs") == drops  # and records no drop twice


@pytest.mark.parametrize("name", ["a.txt", "b.md", "c.rst", "d.html"])
def test_corpus_single_files_are_detected_by_suffix(workspace, tmp_path, name):
    summary = workspace.import_paths([put(tmp_path / name, CORPUS[name])], "docs", corpus=OPTIONS)
    assert summary.files[0]["format"] == "corpus"
    assert summary.n_new >= 1
    stored = " ".join(text for *_, text in documents(workspace))
    for junk in ("=====", "---", "<p>", "var hidden", "Menu", "Footer", "color: red", "&amp;"):
        assert junk not in stored


def test_corpus_that_yields_nothing_is_rejected(workspace, tmp_path):
    path = put(tmp_path / "e.txt", CORPUS["e.txt"])
    assert_rejected(workspace, [path], ["no valid record or passage"], corpus=OPTIONS)


def test_corpus_with_invalid_utf8_is_rejected(workspace, tmp_path):
    path = put(tmp_path / "bad.txt", b"A fine first line of text that is long enough.\n\nCaf\xe9 au lait.\n")
    assert_rejected(workspace, [path], [str(path), "line 3", "invalid UTF-8"], corpus=OPTIONS)
    assert_rejected(workspace, [path], [str(path), "line 3"], corpus=OPTIONS, skip_invalid=True)


def test_explicit_format_overrides_detection(workspace, tmp_path):
    path = put(tmp_path / "pairs.jsonl", '{"instruction": "Q?", "output": "A."}\n')
    workspace.import_paths([path], "as_prompts", fmt="prompts")
    [got] = dump(workspace, "as_prompts")
    assert got["responses"] == [] and got["meta"] == {"output": "A."}


def test_role_names_the_imported_responses(workspace, tmp_path):
    path = put(tmp_path / "t.jsonl", '{"instruction": "Q?", "output": "A."}\n')
    workspace.import_paths([path], "d", role="teacher")
    assert dump(workspace, "d")[0]["responses"] == [("teacher", "A.")]
    with pytest.raises(ValueError):
        workspace.import_paths([path], "d", role="Not A Role")
    with pytest.raises(ValueError):
        workspace.import_paths([path], "../escape")


# --------------------------------------------------------------------------------------------
# Golden imports: file types
# --------------------------------------------------------------------------------------------

ALPACA_EXPECTED = [
    row("Add 2 and 3.", "5", task="math", line=None),
    row("Explain, briefly.", "Line one\nline two, with \"quotes\".", input="ctx", line=None),
    row("Ünïcödé ✓", "日本語", line=None),
]


def _with_lines(rows: list[dict], lines: list[int]) -> list[dict]:
    return [r | {"line": n} for r, n in zip(rows, lines, strict=True)]


ALPACA_FILES = {
    "jsonl": ('{"instruction": "Add 2 and 3.", "input": "", "output": "5", "task": "math"}\n'
              '\n'
              '{"instruction": "Explain, briefly.", "input": "ctx", "output": "Line one\\nline two, with \\"quotes\\"."}\r\n'
              '{"instruction": "Ünïcödé ✓", "output": "日本語"}', [1, 3, 4]),
    "json": ('[\n'
             '  {"instruction": "Add 2 and 3.", "input": "", "output": "5", "task": "math"},\n'
             '  {\n'
             '    "instruction": "Explain, briefly.",\n'
             '    "input": "ctx",\n'
             '    "output": "Line one\\nline two, with \\"quotes\\"."\n'
             '  },\n'
             '  {"instruction": "Ünïcödé ✓", "output": "日本語"}\n'
             ']\n', [2, 3, 8]),
    "csv": ('instruction,input,output,task\n'
            'Add 2 and 3.,,5,math\n'
            '"Explain, briefly.",ctx,"Line one\nline two, with ""quotes"".",\n'
            'Ünïcödé ✓,,日本語,\n', [2, 3, 5]),
}


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_alpaca_text_file_types(workspace, tmp_path, suffix):
    content, lines = ALPACA_FILES[suffix]
    summary = workspace.import_paths([put(tmp_path / f"data.{suffix}", content)], "types")
    assert summary.files[0]["format"] == "alpaca" and summary.files[0]["read"] == 3
    assert dump(workspace, "types") == _with_lines(ALPACA_EXPECTED, lines)


def test_alpaca_parquet(workspace, tmp_path):
    path = put_parquet(tmp_path / "data.parquet", {
        "instruction": ["Add 2 and 3.", "Explain, briefly.", "Ünïcödé ✓"],
        "input": ["", "ctx", None],
        "output": ["5", "Line one\nline two, with \"quotes\".", "日本語"],
        "task": ["math", None, None],
    })
    summary = workspace.import_paths([path], "types")
    assert summary.files[0]["format"] == "alpaca"
    assert dump(workspace, "types") == _with_lines(ALPACA_EXPECTED, [1, 2, 3])


def test_messages_parquet_with_nested_turns(workspace, tmp_path):
    path = put_parquet(tmp_path / "chat.parquet", {
        "messages": [
            [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
            [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}],
        ],
    })
    workspace.import_paths([path], "chat")
    assert dump(workspace, "chat") == [row("Q", "A", system="S", line=1), row("Q2", "A2", line=2)]


@pytest.mark.parametrize("name,content", [
    ("bom.jsonl", b'\xef\xbb\xbf{"instruction": "With BOM", "output": "ok"}\n'),
    ("bom.json", b'\xef\xbb\xbf[{"instruction": "With BOM", "output": "ok"}]'),
    ("bom.csv", b'\xef\xbb\xbfinstruction,output\nWith BOM,ok\n'),
])
def test_utf8_bom_imports_fine(workspace, tmp_path, name, content):
    summary = workspace.import_paths([put(tmp_path / name, content)], "bom")
    assert summary.n_new == 1 and summary.n_rejected == 0
    [got] = dump(workspace, "bom")
    assert got["instruction"] == "With BOM" and got["responses"] == [("seed", "ok")] and got["meta"] is None


# --------------------------------------------------------------------------------------------
# Bad rows: (a) rejected with file, line, reason; (b) nothing written; (c) skip_invalid keeps the rest
# --------------------------------------------------------------------------------------------

GOOD1 = '{"instruction": "Good one", "output": "fine"}'
GOOD2 = '{"instruction": "Good two", "output": "fine"}'
BIG = "x" * (MAX_FIELD_BYTES + 1)

BAD_ROWS = {
    # id: (file name, content, [(line, reason fragment)])
    "broken_json": ("d.jsonl", f'{GOOD1}\n{{"instruction": "Broken", "output": \n{GOOD2}\n',
                    [(2, "broken JSON")]),
    "number_instruction": ("d.jsonl", f'{GOOD1}\n{{"instruction": 42, "output": "x"}}\n{GOOD2}\n',
                           [(2, "field 'instruction' must be text, got a number")]),
    "list_output": ("d.jsonl", f'{GOOD1}\n{{"instruction": "Q", "output": ["a", "b"]}}\n{GOOD2}\n',
                    [(2, "field 'output' must be text, got a list")]),
    "missing_instruction": ("d.jsonl", f'{GOOD1}\n{{"output": "orphan"}}\n{GOOD2}\n',
                            [(2, "missing field 'instruction'")]),
    "missing_output": ("d.jsonl", f'{GOOD1}\n{{"instruction": "no answer", "output": null}}\n{GOOD2}\n',
                       [(2, "field 'output' is null")]),
    "empty_instruction": ("d.jsonl", f'{GOOD1}\n{{"instruction": "", "output": "x"}}\n{GOOD2}\n',
                          [(2, "field 'instruction' is empty")]),
    "whitespace_instruction": ("d.jsonl", f'{GOOD1}\n{{"instruction": "  \\t\\n ", "output": "x"}}\n{GOOD2}\n',
                               [(2, "field 'instruction' is empty")]),
    "invalid_utf8_jsonl": ("d.jsonl", f'{GOOD1}\n'.encode() + b'{"instruction": "caf\xe9", "output": "x"}\n'
                           + f'{GOOD2}\n'.encode(), [(2, "invalid UTF-8")]),
    "invalid_utf8_csv": ("d.csv", b"instruction,output\nGood one,fine\ncaf\xe9,x\nGood two,fine\n",
                         [(3, "field 'instruction' contains invalid UTF-8 bytes")]),
    "invalid_utf8_csv_extra_column": (
        "d.csv", b"instruction,output,note\nGood one,fine,ok\nBad note,x,caf\xe9\nGood two,fine,\n",
        [(3, "field 'note' contains invalid UTF-8 bytes")]),
    "invalid_utf8_json_array": ("d.json", f'[{GOOD1},\n'.encode() + b'{"instruction": "caf\xe9", "output": "x"},\n'
                                + f'{GOOD2}]\n'.encode(), [(2, "field 'instruction' contains invalid UTF-8 bytes")]),
    "field_over_1mb": ("d.jsonl", f'{GOOD1}\n{{"instruction": "Q", "output": "{BIG}"}}\n{GOOD2}\n',
                       [(2, "field 'output' is 1.0 MB, over the 1 MB limit")]),
    "field_over_1mb_csv": ("d.csv", f"instruction,output\nGood one,fine\nQ,{BIG}\nGood two,fine\n",
                           [(3, "field 'output' is 1.0 MB, over the 1 MB limit")]),
    "nan_instruction": ("d.jsonl", f'{GOOD1}\n{{"instruction": NaN, "output": "x"}}\n{GOOD2}\n',
                        [(2, "field 'instruction' is NaN")]),
    "nan_extra_field": ("d.jsonl", f'{GOOD1}\n{{"instruction": "Q", "output": "x", "score": NaN}}\n{GOOD2}\n',
                        [(2, "field 'score' is nan")]),
    "infinity_nested": ("d.jsonl", f'{GOOD1}\n{{"instruction": "Q", "output": "x", "m": {{"s": [Infinity]}}}}\n{GOOD2}\n',
                        [(2, "field 'm.s[0]' is inf")]),
    "not_an_object": ("d.jsonl", f'{GOOD1}\n[1, 2]\n{GOOD2}\n', [(2, "expected a JSON object, got a list")]),
    "csv_extra_cells": ("d.csv", "instruction,output\nGood one,fine\nQ,A,surplus\nGood two,fine\n",
                        [(3, "1 more cells than the header's 2 columns")]),
    "messages_bad_role": ("d.jsonl", '{"messages": [{"role": "user", "content": "Good one"}]}\n'
                          '{"messages": [{"role": "robot", "content": "Hi"}]}\n'
                          '{"messages": [{"role": "user", "content": "Good two"}]}\n',
                          [(2, "turn 1 of 'messages' has unknown role 'robot'")]),
    "messages_not_alternating": ("d.jsonl", '{"messages": [{"role": "user", "content": "Good one"}]}\n'
                                 '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n'
                                 '{"messages": [{"role": "user", "content": "Good two"}]}\n',
                                 [(2, "'messages' must alternate user and assistant turns; turn 2 is user")]),
    "preference_identical": ("d.jsonl", '{"prompt": "Good one", "chosen": "a", "rejected": "b"}\n'
                             '{"prompt": "Q", "chosen": "same", "rejected": "same"}\n'
                             '{"prompt": "Good two", "chosen": "a", "rejected": "b"}\n',
                             [(2, "'chosen' and 'rejected' are identical")]),
    "several_bad_rows": ("d.jsonl", f'{GOOD1}\n{{"instruction": 1}}\n{{"output": "x"}}\n{GOOD2}\n{{\n',
                         [(2, "field 'instruction' must be text"), (3, "missing field 'instruction'"),
                          (5, "broken JSON")]),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_rows(workspace, tmp_path, case):
    name, content, problems = BAD_ROWS[case]
    path = put(tmp_path / name, content)
    workspace.import_paths([put(tmp_path / "earlier.jsonl", '{"instruction": "Already here", "output": "x"}\n')],
                           "earlier")
    # (a) rejected, naming the file, each line and its reason; (b) nothing written
    expected = [str(path)] + [f"line {line}: {reason}" for line, reason in problems]
    message = assert_rejected(workspace, [path], expected)
    assert "Nothing was imported" in message
    assert f"{len(problems)} invalid row" in message
    # (c) skip_invalid: the valid rows go in, each bad row is recorded with file, line and reason
    summary = workspace.import_paths([path], "bad", skip_invalid=True)
    assert texts(workspace, "bad") == ["Good one", "Good two"]
    assert summary.n_new == 2 and summary.n_rejected == len(problems)
    got = rejects(workspace)
    assert [(f, line) for f, line, _ in got] == [(name, line) for line, _ in problems]
    for (_, _, reason), (_, fragment) in zip(got, problems, strict=True):
        assert fragment in reason
    stats = workspace.stats()
    assert stats["import_rejects"] == len(problems)
    assert {d["name"]: d["rejected_rows"] for d in stats["per_dataset"]} == {"earlier": 0, "bad": len(problems)}
    assert int(workspace.imports()["n_rejected"][0]) == len(problems)


def test_rejects_keep_an_excerpt_of_the_bad_row(workspace, tmp_path):
    path = put(tmp_path / "d.jsonl", f'{GOOD1}\n{{"instruction": 42, "output": "the answer"}}\n')
    workspace.import_paths([path], "bad", skip_invalid=True)
    excerpt = workspace.rejects()["excerpt"][0]
    assert "42" in excerpt and "the answer" in excerpt


def test_nan_in_parquet(workspace, tmp_path):
    path = put_parquet(tmp_path / "d.parquet", {
        "instruction": ["Good one", "Bad score", "Good two"],
        "output": ["fine", "x", "fine"],
        "score": [1.0, float("nan"), 2.0],
    })
    assert_rejected(workspace, [path], [str(path), "line 2: field 'score' is nan"])
    workspace.import_paths([path], "bad", skip_invalid=True)
    assert texts(workspace, "bad") == ["Good one", "Good two"]
    assert rejects(workspace) == [("d.parquet", 2, "field 'score' is nan")]


def test_null_and_nan_text_in_parquet(workspace, tmp_path):
    path = put_parquet(tmp_path / "d.parquet", {
        "instruction": ["Good one", None, "Good two"],
        "output": [1.5, float("nan"), 2.5],
    })
    message = assert_rejected(workspace, [path], [str(path), "line 1: field 'output' must be text, got a number",
                                                  "line 2: field 'instruction' is null"])
    assert "3 invalid rows" in message


def test_more_than_twenty_bad_rows_are_summarised(workspace, tmp_path):
    lines = [GOOD1] + ['{"instruction": 7, "output": "x"}'] * 25
    path = put(tmp_path / "many.jsonl", "\n".join(lines) + "\n")
    message = assert_rejected(workspace, [path], [str(path), "25 invalid rows", "… and 5 more invalid rows"])
    listed = [n for n in range(1, 30) if f"line {n}: " in message]
    assert listed == list(range(2, 22))
    workspace.import_paths([path], "bad", skip_invalid=True)
    assert len(rejects(workspace)) == 25  # all of them are recorded, not just the 20 shown


# --------------------------------------------------------------------------------------------
# Bad files: rejected whole, even with skip_invalid; nothing written
# --------------------------------------------------------------------------------------------

BAD_FILES = {
    "empty_jsonl": ("e.jsonl", b"", ["is empty"]),
    "blank_jsonl": ("e.jsonl", b"\n  \n\t\n", ["is empty"]),
    "bom_only": ("e.jsonl", b"\xef\xbb\xbf\n", ["is empty"]),
    "empty_csv": ("e.csv", b"", ["is empty"]),
    "header_only_csv": ("e.csv", b"instruction,output\n", ["is empty"]),
    "empty_json_array": ("e.json", b"[ ]\n", ["is empty"]),
    "json_not_array": ("e.json", b'\n{"instruction": "a", "output": "b"}\n', ["line 2: a .json file must hold an array"]),
    "json_broken": ("e.json", b'[{"instruction": "a", "output": "b"},\n {"instruction": "c", "output": \n]\n',
                    ["line 3: broken JSON"]),
    "json_trailing_text": ("e.json", b'[{"instruction": "a", "output": "b"}]\nmore\n',
                           ["line 1: unexpected text after the array"]),
    "no_format_matches": ("e.jsonl", b'{"foo": "a", "bar": "b"}\n{"instruction": "x", "output": "y"}\n',
                          ["cannot tell the format from the fields ['bar', 'foo'] on line 1"]),
    "unsupported_suffix": ("e.xml", b"<rows><row>hi</row></rows>\n", ["unsupported file type '.xml'"]),
    "not_parquet": ("e.parquet", b"this is not parquet", ["not a readable Parquet file"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_rejected_whole(workspace, tmp_path, case):
    name, content, fragments = BAD_FILES[case]
    path = put(tmp_path / name, content)
    assert_rejected(workspace, [path], [str(path)] + fragments)
    assert_rejected(workspace, [path], [str(path)] + fragments, skip_invalid=True)


def test_empty_parquet(workspace, tmp_path):
    path = put_parquet(tmp_path / "e.parquet", {"instruction": pa.array([], pa.string()),
                                                 "output": pa.array([], pa.string())})
    assert_rejected(workspace, [path], [str(path), "is empty"])


def test_unknown_format_name(workspace, tmp_path):
    path = put(tmp_path / "ok.jsonl", f"{GOOD1}\n")
    assert_rejected(workspace, [path], ["unknown format 'alpacca'", "alpaca, messages"], fmt="alpacca")


def test_missing_path(workspace, tmp_path):
    good = put(tmp_path / "ok.jsonl", f"{GOOD1}\n")
    missing = tmp_path / "nowhere.jsonl"
    assert_rejected(workspace, [good, missing], [str(missing), "no such file or folder"])


def test_folder_without_importable_files(workspace, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    put(folder / "notes.xml", "<x/>")
    assert_rejected(workspace, [folder], [str(folder), "holds no importable files"])


def test_one_bad_file_rejects_the_whole_call(workspace, tmp_path):
    good = put(tmp_path / "good.jsonl", f"{GOOD1}\n{GOOD2}\n")
    bad = put(tmp_path / "bad.jsonl", f'{GOOD1}\n{{"instruction": 5, "output": "x"}}\n')
    for order in ([good, bad], [bad, good]):
        message = assert_rejected(workspace, order, [str(bad), "line 2"])
        assert str(good) not in message
    fatal = put(tmp_path / "empty.jsonl", "")
    assert_rejected(workspace, [good, fatal], [str(fatal), "is empty"], skip_invalid=True)


def test_skip_invalid_over_several_files_imports_each_good_row(workspace, tmp_path):
    good = put(tmp_path / "good.jsonl", '{"instruction": "From good", "output": "x"}\n')
    bad = put(tmp_path / "bad.jsonl", f'{GOOD1}\n{{"instruction": 5, "output": "x"}}\n')
    summary = workspace.import_paths([good, bad], "multi", skip_invalid=True)
    assert [f["new"] for f in summary.files] == [1, 1]
    assert sorted(texts(workspace, "multi")) == ["From good", "Good one"]
    assert rejects(workspace) == [("bad.jsonl", 2, "field 'instruction' must be text, got a number (5)")]


def test_check_import_writes_nothing(workspace, tmp_path):
    path = put(tmp_path / "d.jsonl", f"{GOOD1}\n{{}}\n")
    before = counts(workspace)
    [check] = workspace.check_import([path])
    assert (check.format, check.n_read, check.n_valid, check.ok) == ("alpaca", 2, 1, False)
    assert counts(workspace) == before


# --------------------------------------------------------------------------------------------
# Duplicates and datasets
# --------------------------------------------------------------------------------------------


def test_duplicates_within_a_file_and_reimport_add_nothing(workspace, tmp_path):
    path = put(tmp_path / "dup.jsonl", f"{GOOD1}\n{GOOD2}\n{GOOD1}\n")
    first = workspace.import_paths([path], "dup")
    assert first.files[0] | {"file": None} == {"file": None, "format": "alpaca", "read": 3, "new": 2,
                                                 "new_responses": 2, "duplicates": 1, "rejected": 0}
    after_first = counts(workspace)
    assert (after_first["instructions"], after_first["responses"]) == (2, 2)
    again = workspace.import_paths([path], "dup")
    assert again.files[0]["new"] == 0 and again.files[0]["new_responses"] == 0
    assert again.files[0]["duplicates"] == 3
    assert counts(workspace) == after_first | {"imports": after_first["imports"] + 1}
    # The same rows under another file name are duplicates too (ids are content hashes).
    copy = put(tmp_path / "copy.csv", "instruction,output\nGood two,fine\n")
    assert workspace.import_paths([copy], "dup").n_new == 0
    assert counts(workspace)["instructions"] == 2


def test_same_instruction_with_a_new_answer_adds_a_response_only(workspace, tmp_path):
    workspace.import_paths([put(tmp_path / "a.jsonl", f"{GOOD1}\n")], "d")
    summary = workspace.import_paths([put(tmp_path / "b.jsonl", '{"instruction": "Good one", "output": "other"}\n')],
                                     "d")
    assert (summary.n_new, summary.files[0]["new_responses"]) == (0, 1)
    assert dump(workspace, "d")[0]["responses"] == [("seed", "fine"), ("seed", "other")]


def test_same_instruction_in_two_datasets_makes_two_rows(workspace, tmp_path):
    path = put(tmp_path / "a.jsonl", f"{GOOD1}\n")
    workspace.import_paths([path], "one")
    workspace.import_paths([path], "two")
    stats = workspace.stats()
    assert (stats["instructions"], stats["responses"], stats["datasets"]) == (2, 2, 2)
    ids = {ds: workspace.explore_page(ExploreFilter(datasets=[ds]))["id"][0] for ds in ("one", "two")}
    assert ids["one"] != ids["two"]
    assert ids["one"] == content_id(content_id("dataset", "one"), "", "", "Good one", "")


def test_dataset_kind_becomes_mixed(workspace, tmp_path):
    workspace.import_paths([put(tmp_path / "a.jsonl", f"{GOOD1}\n")], "d")
    workspace.import_paths([put(tmp_path / "p.jsonl", '{"instruction": "Only a prompt"}\n')], "d")
    assert workspace.stats()["per_dataset"][0]["kind"] == "mixed"


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,required,expected", [
    ("hello", True, "hello"),
    ("  padded  ", True, "  padded  "),   # kept as written
    (None, False, None),
    ("", False, ""),
    ("x" * MAX_FIELD_BYTES, True, "x" * MAX_FIELD_BYTES),  # exactly 1 MB is allowed
])
def test_check_text_accepts(value, required, expected):
    assert check_text("f", value, required) == expected


@pytest.mark.parametrize("value,required,reason", [
    (None, True, "field 'f' is null"),
    (float("nan"), False, "field 'f' is NaN"),
    (3, False, "field 'f' must be text, got a number (3)"),
    (True, True, "field 'f' must be text, got a boolean (True)"),
    (["a"], True, "field 'f' must be text, got a list (['a'])"),
    ({"a": 1}, True, "field 'f' must be text, got an object"),
    ("", True, "field 'f' is empty"),
    (" \n\t", True, "field 'f' is empty"),
    ("caf\udce9", True, "field 'f' contains invalid UTF-8 bytes"),
    ("x" * (MAX_FIELD_BYTES + 1), True, "over the 1 MB limit"),
    ("é" * (MAX_FIELD_BYTES // 2 + 1), True, "over the 1 MB limit"),  # bytes, not characters, count
])
def test_check_text_refuses(value, required, reason):
    with pytest.raises(RowError) as info:
        check_text("f", value, required)
    assert reason in str(info.value)


@pytest.mark.parametrize("keys,expected", [
    ({"messages": []}, "messages"),
    ({"conversations": []}, "sharegpt"),
    ({"prompt": "", "chosen": "", "rejected": ""}, "preference"),
    ({"instruction": "", "output": ""}, "alpaca"),
    ({"prompt": "", "response": ""}, "alpaca"),
    ({"question": "", "answer": ""}, "alpaca"),
    ({"instruction": "", "completion": ""}, "alpaca"),
    ({"instruction": ""}, "prompts"),
    ({"prompt": "", "input": ""}, "prompts"),
    ({"text": ""}, None),
    ({}, None),
    ({"chosen": ""}, None),
])
def test_detect_format(keys, expected):
    assert detect_format(keys) == expected


def test_segment_text_groups_cuts_and_filters():
    a, c = "A" * 60, "C" * 60
    text = f"{a}\n\nTiny.\n\n\n{c}\n"
    # A and Tiny. do not fit in 64 together, nor Tiny. and C: Tiny. stands alone and is too short.
    assert segment_text(text, CorpusOptions(min_chars=20, max_chars=64)) == [(1, a), (6, c)]
    # With room, paragraphs are grouped (and Tiny. survives inside a group).
    assert segment_text(text, CorpusOptions(min_chars=20, max_chars=200)) == [(1, f"{a}\n\nTiny.\n\n{c}")]
    # Lines of one paragraph are joined with spaces.
    assert segment_text("one line\nand the next line\n", CorpusOptions(min_chars=5, max_chars=100)) == [
        (1, "one line and the next line")]


def test_segment_text_cuts_long_paragraphs_at_sentence_ends():
    para = "First sentence is here. Second sentence is a bit longer than that. Third one closes it out nicely."
    assert segment_text(para, CorpusOptions(min_chars=10, max_chars=50)) == [
        (1, "First sentence is here."),
        (1, "Second sentence is a bit longer than that."),
        (1, "Third one closes it out nicely."),
    ]
    assert all(len(doc) <= 50 for _, doc in segment_text("word " * 100, CorpusOptions(min_chars=10, max_chars=50)))


def test_corpus_options_are_checked():
    with pytest.raises(ValueError):
        CorpusOptions(min_chars=100, max_chars=50)
    with pytest.raises(ValueError):
        CorpusOptions(min_chars=0, max_chars=50)


def test_read_json_array_line_numbers():
    text = ('[\n'
            '  {"a": 1},\n'
            '  {"b":\n'
            '     2},   {"c": 3},\n'
            '\n'
            '  "not an object",\n'
            '  [1,\n'
            '   2]\n'
            ']')
    assert list(read_json_array(text)) == [(2, {"a": 1}), (3, {"b": 2}), (4, {"c": 3}), (6, "not an object"),
                                           (7, [1, 2])]
    assert list(read_json_array("[]")) == []
    assert list(read_json_array("  \n ")) == []
    assert list(read_json_array('[{"a": 1}]')) == [(1, {"a": 1})]


@pytest.mark.parametrize("text,reason", [
    ('{"a": 1}', "line 1: a .json file must hold an array"),
    ('[\n{"a": 1},\n{"a": \n]', "line 4: broken JSON"),
    ('[\n{"a": 1}\n{"b": 2}]', "line 3: broken JSON: expected ',' or ']'"),
    ('[{"a": 1}]\n\n[2]', "line 1: unexpected text after the array"),
])
def test_read_json_array_errors_name_the_line(text, reason):
    with pytest.raises(ImportRejected) as info:
        list(read_json_array(text))
    assert reason in str(info.value)


def test_read_jsonl_line_numbers_skip_blank_lines():
    got = list(ingest.read_jsonl(b'{"a": 1}\n\n   \n{"b": 2}\r\n{bad\n'))
    assert [(n, v) for n, v in got[:2]] == [(1, {"a": 1}), (4, {"b": 2})]
    assert got[2][0] == 5 and isinstance(got[2][1], RowError)


# --------------------------------------------------------------------------------------------
# The bulk path (DuckDB reads large clean JSON Lines files) must give exactly what the
# line-by-line path gives: the same rows, ids, counts, rejections and messages.
# --------------------------------------------------------------------------------------------

BULK_CASES = {
    "clean": '{"instruction": "Add 2 and 3.", "input": "", "output": "5", "task": "math"}\n'
             '{"instruction": "Sum", "input": "1 2", "output": "3", "category": "c", "system": "S"}\n'
             '{"instruction": "Ünïcödé ✓ 日本語 \\ud83d\\ude00", "output": "ok\\nline\\u0000nul"}\n',
    "whitespace_labels": '{"instruction": "  Q  ", "output": "\\tA\\n", "task": "  ", "system": " S ", '
                         '"category": "\\u3000x\\u3000"}\n{"instruction": "Q2", "output": "A", "task": "\\u2003"}\n',
    "duplicates": '{"instruction": "Q", "output": "A"}\n{"instruction": "Q", "output": "A"}\n'
                  '{"instruction": "Q", "output": "B"}\n',
    "prompts": '{"instruction": "P1"}\n{"instruction": "P2", "input": "x", "task": "t"}\n',
    "null_optionals": '{"instruction": "Q", "input": null, "output": "A", "task": null}\n',
    "crlf_no_final_newline": '{"output": "A", "instruction": "Q"}\r\n{"instruction": "Q3", "output": "A"}',
    "blank_line": '{"instruction": "Q", "output": "A"}\n\n{"instruction": "Q3", "output": "A"}\n',
    "missing_output": '{"instruction": "Q", "output": "A"}\n{"instruction": "Q2"}\n',
    "null_output": '{"instruction": "Q", "output": "A"}\n{"instruction": "Q2", "output": null}\n',
    "missing_instruction": '{"instruction": "Q", "output": "A"}\n{"output": "orphan"}\n',
    "blank_output": '{"instruction": "Q", "output": "A"}\n{"instruction": "Q2", "output": "\\u000b\\u001c"}\n',
    "number_output": '{"instruction": "Q", "output": "A"}\n{"instruction": "Q2", "output": 5}\n',
    "number_task": '{"instruction": "Q", "output": "A", "task": 1e400}\n',
    "prompts_then_pairs": '{"instruction": "P1"}\n{"instruction": "Q2", "output": "A"}\n',
    "extra_key": '{"instruction": "Q", "output": "A", "source": "web"}\n',
    "duplicate_key": '{"instruction": "first", "instruction": "last", "output": "A"}\n',
    "broken_json": '{"instruction": "Q", "output": "A"}\n{"instruction": "Q2", "output": \n'
                   '{"instruction": "Q3", "output": "A"}\n',
    "lone_surrogate": '{"instruction": "Q", "output": "A"}\n{"instruction": "Q\\udc80", "output": "A"}\n',
    "over_1mb": '{"instruction": "Q", "output": "A"}\n{"instruction": "Q2", "output": "' + "é" * (MAX_FIELD_BYTES // 2 + 1)
                + '"}\n',
}
BULK_CASES_TAKEN = {"clean", "whitespace_labels", "duplicates", "prompts", "null_optionals", "crlf_no_final_newline"}


def _snapshot(ws: Workspace, dataset: str) -> dict:
    cur = ws.store.cursor()
    dataset_id = content_id("dataset", dataset)
    q = lambda sql: cur.execute(sql, [dataset_id]).fetchall()  # noqa: E731
    return {
        "instructions": q("SELECT * EXCLUDE (created_at) FROM instructions WHERE dataset_id = ? ORDER BY id"),
        "responses": q("SELECT r.* EXCLUDE (created_at) FROM responses r JOIN instructions i ON i.id = r.instruction_id "
                       "WHERE i.dataset_id = ? ORDER BY r.id"),
        "rejects": q("SELECT source_file, line, reason, excerpt FROM import_rejects WHERE dataset_id = ? ORDER BY line"),
        "imports": q("SELECT source_file, file_sha256, format, n_records, n_new, n_new_responses, n_duplicates, "
                     "n_rejected FROM imports WHERE dataset_id = ? ORDER BY created_at"),
        "dataset": q("SELECT name, kind FROM datasets WHERE id = ?"),
    }


def _import_twice(ws: Workspace, path: Path, dataset: str, skip_invalid: bool, bulk_min_bytes: int):
    outcome = []
    for _ in range(2):  # the second time everything is a duplicate
        try:
            summary = ws.import_paths([path], dataset, skip_invalid=skip_invalid, bulk_min_bytes=bulk_min_bytes)
            outcome.append(("ok", summary.files))
        except ImportRejected as exc:
            outcome.append(("rejected", str(exc)))
            break
    return outcome, _snapshot(ws, dataset)


def test_bulk_path_matches_the_line_by_line_path(tmp_path, monkeypatch):
    taken: list[str] = []
    real = ingest.bulk_import_file

    def spy(store, cur, path, *args):
        result = real(store, cur, path, *args)
        if result is not None:
            taken.append(path.stem)
        return result

    monkeypatch.setattr(ingest, "bulk_import_file", spy)
    bulk, rows = Workspace(tmp_path / "bulk"), Workspace(tmp_path / "rows")
    mismatches = []
    try:
        for n, (name, content) in enumerate(BULK_CASES.items()):
            path = put(tmp_path / f"{name}.jsonl", content.encode("utf-8", "surrogatepass"))
            for skip_invalid in (False, True):
                dataset = f"c{n}{'s' if skip_invalid else ''}"
                got = _import_twice(bulk, path, dataset, skip_invalid, bulk_min_bytes=0)
                want = _import_twice(rows, path, dataset, skip_invalid, bulk_min_bytes=1 << 60)
                if got != want:
                    mismatches.append(f"{name} (skip_invalid={skip_invalid}):\n  bulk: {got}\n  rows: {want}")
                if want[0][0][0] == "ok":
                    break  # skip_invalid changes nothing for a file without bad rows
        assert bulk.store.table_counts() == rows.store.table_counts()
    finally:
        bulk.close()
        rows.close()
    assert not mismatches, "\n".join(mismatches)
    # The bulk path really ran for the clean files (else this test compares the slow path with itself).
    assert set(taken) == BULK_CASES_TAKEN
