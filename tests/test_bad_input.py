"""Hostile and broken import files (issue 15): each is rejected naming the file, the line and the
reason, and nothing is written, not even the dataset's row. JSON Lines files are tried through
both import paths: the per-line reader and DuckDB's bulk reader (forced with bulk_min_bytes=0),
which must send any bad file back to the per-line reader for its report."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.ingest import ImportRejected

A = '{"instruction": "Add 2 and 3.", "output": "5"}\n'


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


GOOD_PARQUET = parquet_bytes(pa.table({"instruction": ["Say hi."], "output": ["Hi!"]}))
DEEP = '{"instruction": "x", "output": "y", "meta": ' + "[" * 5000 + "]" * 5000 + "}\n"
good_pq, deep = GOOD_PARQUET, DEEP

# (case, file name, content (text, bytes, or a function making bytes), what the message must name)
CASES = [
    ("broken_line", "a.jsonl", A + '{"instruction": "x", "output": \n' + A, ["line 2"]),
    ("truncated_last_line", "a.jsonl", A + '{"instruction": "Say hi.", "outp', ["line 2"]),
    ("trailing_comma", "a.jsonl", '{"instruction": "x", "output": "y",}\n', ["line 1"]),
    ("single_quotes", "a.jsonl", "{'instruction': 'x', 'output': 'y'}\n", ["line 1"]),
    ("line_is_array", "a.jsonl", A + '["x", "y"]\n', ["line 2"]),
    ("line_is_string", "a.jsonl", A + '"just text"\n', ["line 2"]),
    ("line_is_number", "a.jsonl", A + A + '42\n', ["line 3"]),
    ("line_is_null", "a.jsonl", 'null\n' + A, ["line 1"]),
    ("missing_instruction", "a.jsonl", A + '{"output": "5"}\n', ["line 2"]),
    ("empty_instruction", "a.jsonl", '{"instruction": "", "output": "5"}\n', ["line 1"]),
    ("blank_instruction", "a.jsonl", '{"instruction": "  \\n ", "output": "5"}\n', ["line 1"]),
    ("instruction_number", "a.jsonl", A + '{"instruction": 7, "output": "5"}\n', ["line 2"]),
    ("instruction_list", "a.jsonl", '{"instruction": ["a"], "output": "5"}\n', ["line 1"]),
    ("output_dict", "a.jsonl", '{"instruction": "x", "output": {"a": 1}}\n', ["line 1"]),
    ("output_number", "a.jsonl", A + '{"instruction": "x", "output": 5}\n', ["line 2"]),
    ("input_number", "a.jsonl", '{"instruction": "x", "input": 3, "output": "5"}\n', ["line 1"]),
    ("output_nan", "a.jsonl", '{"instruction": "x", "output": NaN}\n', ["line 1"]),
    ("meta_infinity", "a.jsonl", A + '{"instruction": "x", "output": "y", "score": Infinity}\n', ["line 2"]),
    ("meta_nan_nested", "a.jsonl", '{"instruction": "x", "output": "y", "extra": {"s": [1, NaN]}}\n', ["line 1"]),
    ("invalid_utf8", "a.jsonl", A.encode() + b'{"instruction": "caf\xe9", "output": "y"}\n', ["line 2"]),
    ("invalid_utf8_meta", "a.jsonl", b'{"instruction": "x", "output": "y", "src": "\xff\xfe"}\n', ["line 1"]),
    ("lone_surrogate", "a.jsonl", '{"instruction": "x\\ud800", "output": "y"}\n', ["line 1"]),
    ("huge_field", "a.jsonl", lambda: ('{"instruction": "x", "output": "' + "a" * (100 * 1024 * 1024) + '"}\n').encode(), ["line 1"]),
    ("field_over_1mb", "a.jsonl", A + '{"instruction": "' + "b" * (1024 * 1024 + 10) + '", "output": "y"}\n', ["line 2"]),
    ("deeply_nested", "a.jsonl", deep, ["line 1"]),
    ("empty_file", "a.jsonl", b"", ["a.jsonl"]),
    ("only_blank_lines", "a.jsonl", "\n\n   \n", ["a.jsonl"]),
    ("no_known_keys", "a.jsonl", '{"foo": 1, "bar": "x"}\n', ["line 1"]),
    ("mixed_formats", "a.jsonl", A + '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n', ["line 2"]),
    ("messages_not_list", "m.jsonl", '{"messages": "hello"}\n', ["line 1"]),
    ("message_without_role", "m.jsonl", '{"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}\n', ["line 1"]),
    ("message_unknown_role", "m.jsonl", '{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n', ["line 1"]),
    ("message_content_number", "m.jsonl", '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "yo"}]}\n', ["line 1"]),
    ("messages_empty", "m.jsonl", '{"messages": []}\n', ["line 1"]),
    ("sharegpt_unknown_from", "s.jsonl", '{"conversations": [{"from": "alien", "value": "hi"}, {"from": "gpt", "value": "yo"}]}\n', ["line 1"]),
    ("sharegpt_value_missing", "s.jsonl", '{"conversations": [{"from": "human"}, {"from": "gpt", "value": "yo"}]}\n', ["line 1"]),
    ("preference_no_chosen", "p.jsonl", '{"prompt": "x", "chosen": "a", "rejected": "b"}\n{"prompt": "y", "rejected": "b"}\n', ["line 2"]),
    ("preference_rejected_number", "p.jsonl", '{"prompt": "x", "chosen": "a", "rejected": 3}\n', ["line 1"]),
    ("preference_empty_prompt", "p.jsonl", '{"prompt": "", "chosen": "a", "rejected": "b"}\n', ["line 1"]),
    ("json_not_array", "a.json", '{"instruction": "x", "output": "y"}', ["line 1"]),
    ("json_broken_middle", "a.json", '[\n{"instruction": "x", "output": "y"},\n{"instruction": "x" "output": "y"}\n]', ["line 3"]),
    ("json_text_after", "a.json", '[{"instruction": "x", "output": "y"}]\ntrailing', ["line 1"]),
    ("json_array_of_numbers", "a.json", '[1, 2]', ["line 1"]),
    ("json_empty", "a.json", b"", ["a.json"]),
    ("csv_ragged_more", "a.csv", 'instruction,output\nSay hi.,Hi!\nAdd,5,extra\n', ["line 3"]),
    ("csv_ragged_fewer", "a.csv", 'instruction,output,task\nSay hi.,Hi!,chat\nAdd\n', ["line 3"]),
    ("csv_no_instruction_column", "a.csv", 'question_text,reply\nx,y\n', ["a.csv"]),
    ("csv_unterminated_quote", "a.csv", 'instruction,output\n"Say hi.,Hi!\n', ["a.csv"]),
    ("csv_header_only", "a.csv", 'instruction,output\n', ["a.csv"]),
    ("csv_empty_instruction", "a.csv", 'instruction,output\nSay hi.,Hi!\n,5\n', ["line 3"]),
    ("csv_invalid_utf8", "a.csv", b'instruction,output\nSay hi.,Hi!\ncaf\xe9,x\n', ["line 3"]),
    ("parquet_corrupt_footer", "a.parquet", good_pq[:-12] + b"\x00" * 8 + b"PAR1", ["a.parquet"]),
    ("parquet_truncated", "a.parquet", good_pq[: len(good_pq) // 2], ["a.parquet"]),
    ("parquet_random_bytes", "a.parquet", bytes(range(256)) * 4, ["a.parquet"]),
    ("parquet_instruction_int", "a.parquet", parquet_bytes(pa.table({"instruction": [1, 2], "output": ["a", "b"]})), ["1"]),
    ("parquet_null_instruction", "a.parquet", parquet_bytes(pa.table({"instruction": ["ok", None], "output": ["a", "b"]})), ["2"]),
    ("parquet_nan_meta", "a.parquet", parquet_bytes(pa.table({"instruction": ["ok"], "output": ["a"], "score": [float("nan")]})), ["1"]),
    ("gzip_as_jsonl", "a.jsonl", b"\x1f\x8b\x08\x00" + bytes(200), ["a.jsonl"]),
    ("history_turn_content_dict", "m.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": {"t": 1}}]}\n', ["line 1"]),
    ("conversations_not_list", "s.jsonl", '{"conversations": {"from": "human"}}\n', ["line 1"]),
    ("preference_chosen_list", "p.jsonl", '{"prompt": "x", "chosen": ["a"], "rejected": "b"}\n', ["line 1"]),
    ("csv_text_after_quote", "a.csv", 'instruction,output\n"Say" hi,Hi!\n', ["line 2"]),
    ("key_lone_surrogate", "a.jsonl", '{"instruction": "x", "output": "y", "\\udfff": 1}\n', ["line 1"]),
    ("duplicate_id_field", "a.jsonl", '{"id": "s1", "instruction": "x", "output": "y"}\n{"id": "s1", "instruction": "z", "output": "w"}\n', ["line 2"]),
    ("bom_mid_file", "a.jsonl", A + "\ufeff" + A, ["line 2"]),
    ("nul_byte_line", "a.jsonl", A.encode() + b"\x00\x00\x00\n", ["line 2"]),
]


def counts(ws) -> dict:
    return ws.store.table_counts() | {"imports": len(ws.imports())}


def write_case(tmp_path, name: str, filename: str, content) -> object:
    folder = tmp_path / name
    folder.mkdir()
    path = folder / filename
    data = content() if callable(content) else content
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


def test_there_are_at_least_fifty_distinct_bad_files():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,filename,content,must", CASES, ids=[c[0] for c in CASES])
def test_a_bad_file_is_rejected_with_file_line_and_reason_and_nothing_is_written(workspace, tmp_path, name,
                                                                                  filename, content, must):
    path = write_case(tmp_path, name, filename, content)
    before = counts(workspace)
    bulk_options = [{}, {"bulk_min_bytes": 0}] if filename.endswith(".jsonl") else [{}]
    for options in bulk_options:
        with pytest.raises(ImportRejected) as info:
            workspace.import_paths([path], "bad", **options)
        message = str(info.value)
        assert str(path) in message, message
        for text in must:
            assert text in message, f"{text!r} not in {message!r}"
        assert "Nothing was imported" in message
        assert counts(workspace) == before
        assert workspace.store.dataset("bad") is None


def test_a_bad_file_among_good_ones_rejects_the_whole_import(workspace, tmp_path):
    good = write_case(tmp_path, "good", "good.jsonl", A * 3)
    bad = write_case(tmp_path, "bad", "bad.jsonl", A + '{"instruction": 7, "output": "x"}\n')
    before = counts(workspace)
    with pytest.raises(ImportRejected) as info:
        workspace.import_paths([good, bad], "mixed")
    assert "bad.jsonl: 1 invalid row" in str(info.value) and "good.jsonl" not in str(info.value)
    assert counts(workspace) == before and workspace.store.dataset("mixed") is None


def test_skip_invalid_keeps_the_good_rows_and_records_each_bad_one(workspace, tmp_path):
    path = write_case(tmp_path, "dup", "dup.jsonl", '{"id": 1, "instruction": "a", "output": "b"}\n'
                      '{"id": 1, "instruction": "c", "output": "d"}\n{"instruction": "e\\ud800", "output": "f"}\n')
    summary = workspace.import_paths([path], "partial", skip_invalid=True)
    assert summary.n_new == 1
    reasons = sorted((int(r.line), r.reason) for r in workspace.rejects().itertuples())
    assert reasons == [(2, "duplicate id '1' (first on line 1)"),
                       (3, "field 'instruction' contains a lone surrogate escape (e.g. \\ud800), which is not valid text")]
