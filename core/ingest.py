"""Files and folders → instructions, responses, preference pairs and documents.

Import is two steps so that bad input never leaves half a file behind:

1. `check_file` reads and validates a file and writes nothing. Every record is parsed by a pure
   function for its format; a bad record becomes a `RowError` (file, line, reason).
2. `write_checks` writes the valid records of checked files, in the caller's transaction.

By default a file with any bad record is rejected whole (`ImportRejected`); with
`skip_invalid` the good records are imported and each bad one is stored in `import_rejects`.
Ids are content hashes, so importing the same file twice adds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from core import corpus
from core.corpus import CorpusOptions, normalise_for_dedup
from core.ids import content_id

FORMATS = ("alpaca", "messages", "sharegpt", "prompts", "preference", "corpus")
RECORD_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
CORPUS_SUFFIXES = {".txt", ".md", ".rst", ".html", ".htm"}
DATASET_KIND = {
    "alpaca": "pairs",
    "messages": "pairs",
    "sharegpt": "pairs",
    "prompts": "prompts",
    "preference": "preference",
    "corpus": "corpus",
}
MAX_FIELD_BYTES = 1024 * 1024
MAX_REPORTED_ERRORS = 20
EXCERPT_CHARS = 200
WRITE_CHUNK_ROWS = 100_000

# Field names each format accepts, first name preferred.
INSTRUCTION_KEYS = ("instruction", "prompt", "question")
INPUT_KEYS = ("input", "context")
OUTPUT_KEYS = ("output", "response", "answer", "completion")
OPTIONAL_TEXT_KEYS = ("task", "category", "system")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "system": "system"}
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not valid UTF-8 (surrogateescape)
# Any other surrogate code point: a JSON "\ud800" escape with no pair, which no UTF-8 text can hold.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class ImportRejected(ValueError):
    """Input failed validation; nothing was written. The message lists file, line and reason."""


class RowError(ValueError):
    """One record is invalid; the message is the reason shown to the user."""


@dataclass
class Rejected:
    line: int | None
    reason: str
    excerpt: str = ""


@dataclass
class Record:
    """One valid sample, normalised from any format."""

    line: int
    instruction: str
    input: str = ""
    system: str | None = None
    history: list[dict] | None = None
    task: str | None = None
    category: str | None = None
    responses: list[tuple[str, str]] = field(default_factory=list)  # (role, text)
    is_pair: bool = False  # responses are (chosen, rejected)
    meta: dict | None = None


@dataclass
class Document:
    line: int
    segment: int
    text: str
    title: str | None


@dataclass
class FileCheck:
    """The outcome of reading and validating one file. Nothing has been written yet."""

    path: Path
    format: str
    sha256: str
    records: list[Record] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    drops: list[corpus.Drop] = field(default_factory=list)  # corpus passages the filters dropped, with why
    rejected: list[Rejected] = field(default_factory=list)
    fatal: str | None = None  # the file as a whole is unreadable (empty, not JSON, unknown format)
    n_read: int = 0  # records or passages seen, valid, dropped or not

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.rejected

    @property
    def n_valid(self) -> int:
        return len(self.records) + len(self.documents)

    def problems(self, limit: int = MAX_REPORTED_ERRORS) -> list[str]:
        if self.fatal:
            return [self.fatal]
        lines = [f"line {r.line}: {r.reason}" if r.line else r.reason for r in self.rejected[:limit]]
        if len(self.rejected) > limit:
            lines.append(f"… and {len(self.rejected) - limit} more invalid rows")
        return lines


@dataclass
class ImportSummary:
    dataset: str
    files: list[dict]

    @property
    def n_new(self) -> int:
        return sum(f["new"] for f in self.files)

    @property
    def n_rejected(self) -> int:
        return sum(f["rejected"] for f in self.files)


# --------------------------------------------------------------------------------------------
# Field validation: pure functions over one record
# --------------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return kind.get(type(value), type(value).__name__)


def check_text(name: str, value: Any, required: bool) -> str | None:
    """Validate one text field; return it, or None when optional and absent. Raise RowError."""
    if value is None:
        if required:
            raise RowError(f"field '{name}' is null")
        return None
    if isinstance(value, float) and math.isnan(value):
        raise RowError(f"field '{name}' is NaN")
    if not isinstance(value, str):
        raise RowError(f"field '{name}' must be text, got {_describe(value)} ({str(value)[:40]})")
    if len(value) * 4 > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES // 4:
        size = len(value.encode("utf-8", "surrogateescape"))
        if size > MAX_FIELD_BYTES:
            raise RowError(f"field '{name}' is {size / 1024 / 1024:.1f} MB, over the 1 MB limit")
    if _SURROGATE.search(value):
        raise RowError(f"field '{name}' contains invalid UTF-8 bytes")
    if _LONE_SURROGATE.search(value):
        raise RowError(f"field '{name}' contains a lone surrogate escape (e.g. \\ud800), which is not valid text")
    if required and not value.strip():
        raise RowError(f"field '{name}' is empty")
    return value


def _pick(rec: dict, keys: tuple[str, ...], required: bool) -> tuple[str, str | None]:
    """The first of `keys` present in `rec`, validated as text."""
    for key in keys:
        if key in rec:
            return key, check_text(key, rec[key], required)
    if required:
        raise RowError(f"missing field '{keys[0]}'")
    return keys[0], None


def _check_key(key: Any) -> None:
    if isinstance(key, str) and _SURROGATE.search(key):
        raise RowError("a field name contains invalid UTF-8 bytes")
    if isinstance(key, str) and _LONE_SURROGATE.search(key):
        raise RowError("a field name contains a lone surrogate escape, which is not valid text")


def _check_no_nan(value: Any, path: str) -> None:
    """Metadata must be storable: no NaN or infinity, no invalid UTF-8, no text over 1 MB."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise RowError(f"field '{path}' is {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_key(k)
            _check_no_nan(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_no_nan(v, f"{path}[{i}]")
    elif isinstance(value, str):
        check_text(path, value, required=False)


def _common(rec: dict, used: set[str]) -> dict:
    """Optional task/category/system labels, and everything else as metadata."""
    out = {}
    for key in OPTIONAL_TEXT_KEYS:
        if key in rec:
            value = check_text(key, rec[key], required=False)
            out[key] = value.strip() if value and value.strip() else None
            used.add(key)
    meta = {k: v for k, v in rec.items() if k not in used}
    for k, v in meta.items():
        _check_key(k)
        _check_no_nan(v, k)
    out["meta"] = meta or None
    return out


def _chat_turns(turns: Any, name: str, role_key: str, text_key: str, role_map: dict | None) -> list[dict]:
    if not isinstance(turns, list):
        raise RowError(f"field '{name}' must be a list of turns, got {_describe(turns)}")
    if not turns:
        raise RowError(f"field '{name}' is empty")
    out = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise RowError(f"turn {i} of '{name}' must be an object, got {_describe(turn)}")
        role = turn.get(role_key)
        if role_map is not None:
            role = role_map.get(role)
        if role not in ("system", "user", "assistant"):
            raise RowError(f"turn {i} of '{name}' has unknown role {turn.get(role_key)!r}")
        content = check_text(f"{name}[{i}].{text_key}", turn.get(text_key), required=True)
        out.append({"role": role, "content": content})
    return out


def _record_from_turns(line: int, turns: list[dict], name: str, role: str, common: dict) -> Record:
    """Split a conversation into system, history, the last user turn and its answer."""
    system = None
    if turns[0]["role"] == "system":
        system, turns = turns[0]["content"], turns[1:]
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn["role"] != expected:
            raise RowError(f"'{name}' must alternate user and assistant turns; turn {i + 1} is {turn['role']}")
    if not turns:
        raise RowError(f"'{name}' has no user turn")
    if turns[-1]["role"] == "assistant":
        history, question, answer = turns[:-2], turns[-2], turns[-1]["content"]
        responses = [(role, answer)]
    else:
        history, question, responses = turns[:-1], turns[-1], []
    return Record(
        line=line,
        instruction=question["content"],
        system=common.get("system") or system,
        history=history or None,
        task=common.get("task"),
        category=common.get("category"),
        responses=responses,
        meta=common["meta"],
    )


def parse_alpaca(rec: dict, line: int, role: str = "seed") -> Record:
    used: set[str] = set()
    key, instruction = _pick(rec, INSTRUCTION_KEYS, required=True)
    used.add(key)
    key, input_text = _pick(rec, INPUT_KEYS, required=False)
    used.add(key)
    key, output = _pick(rec, OUTPUT_KEYS, required=True)
    used.add(key)
    common = _common(rec, used)
    return Record(line=line, instruction=instruction, input=input_text or "", system=common.get("system"),
                  task=common.get("task"), category=common.get("category"),
                  responses=[(role, output)], meta=common["meta"])


def parse_prompts(rec: dict, line: int, role: str = "seed") -> Record:
    used: set[str] = set()
    key, instruction = _pick(rec, INSTRUCTION_KEYS, required=True)
    used.add(key)
    key, input_text = _pick(rec, INPUT_KEYS, required=False)
    used.add(key)
    common = _common(rec, used)
    return Record(line=line, instruction=instruction, input=input_text or "", system=common.get("system"),
                  task=common.get("task"), category=common.get("category"), meta=common["meta"])


def parse_messages(rec: dict, line: int, role: str = "seed") -> Record:
    if "messages" not in rec:
        raise RowError("missing field 'messages'")
    turns = _chat_turns(rec["messages"], "messages", "role", "content", None)
    return _record_from_turns(line, turns, "messages", role, _common(rec, {"messages"}))


def parse_sharegpt(rec: dict, line: int, role: str = "seed") -> Record:
    if "conversations" not in rec:
        raise RowError("missing field 'conversations'")
    turns = _chat_turns(rec["conversations"], "conversations", "from", "value", SHAREGPT_ROLES)
    return _record_from_turns(line, turns, "conversations", role, _common(rec, {"conversations"}))


def _preference_answer(rec: dict, name: str) -> str:
    if name not in rec:
        raise RowError(f"missing field '{name}'")
    value = rec[name]
    if isinstance(value, list):  # TRL conversational form: [{"role": "assistant", "content": ...}]
        turns = _chat_turns(value, name, "role", "content", None)
        if turns[-1]["role"] != "assistant":
            raise RowError(f"the last turn of '{name}' must be the assistant's")
        return turns[-1]["content"]
    return check_text(name, value, required=True)


def parse_preference(rec: dict, line: int, role: str = "seed") -> Record:
    prompt_key = next((k for k in INSTRUCTION_KEYS if k in rec), "prompt")
    if isinstance(rec.get(prompt_key), list):
        turns = _chat_turns(rec[prompt_key], prompt_key, "role", "content", None)
        if turns[-1]["role"] != "user":
            raise RowError(f"the last turn of '{prompt_key}' must be the user's")
        record = _record_from_turns(line, turns, prompt_key, role, {"meta": None})
    else:
        _, instruction = _pick(rec, INSTRUCTION_KEYS, required=True)
        record = Record(line=line, instruction=instruction)
    chosen = _preference_answer(rec, "chosen")
    rejected = _preference_answer(rec, "rejected")
    if chosen == rejected:
        raise RowError("'chosen' and 'rejected' are identical")
    used = {prompt_key, "chosen", "rejected"}
    key, input_text = _pick(rec, INPUT_KEYS, required=False)
    used.add(key)
    common = _common(rec, used)
    record.input = input_text or ""
    record.task, record.category = common.get("task"), common.get("category")
    record.system = common.get("system") or record.system
    record.meta = common["meta"]
    record.responses = [("chosen", chosen), ("rejected", rejected)]
    record.is_pair = True
    return record


PARSERS = {
    "alpaca": parse_alpaca,
    "messages": parse_messages,
    "sharegpt": parse_sharegpt,
    "prompts": parse_prompts,
    "preference": parse_preference,
}


def detect_format(rec: dict) -> str | None:
    """Guess a record format from its keys; None when nothing fits."""
    keys = set(rec)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if keys & set(INSTRUCTION_KEYS):
        return "alpaca" if keys & set(OUTPUT_KEYS) else "prompts"
    return None


# --------------------------------------------------------------------------------------------
# Readers: file → (line, record or RowError)
# --------------------------------------------------------------------------------------------


def _excerpt(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text[:EXCERPT_CHARS]


def _loads_line(raw: bytes) -> Any:
    """Parse one JSON line, turning every failure into a reason a person can act on."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RowError(f"invalid UTF-8 at byte {exc.start + 1} of the line") from None
    try:
        return json.loads(text)  # accepts NaN/Infinity, which validation then names
    except json.JSONDecodeError as exc:
        raise RowError(f"broken JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise RowError("broken JSON: nested too deeply") from None


def read_jsonl(data: bytes) -> Iterator[tuple[int, Any]]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            yield number, _loads_line(raw)
        except RowError as exc:
            yield number, exc


def read_json_array(text: str) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    whitespace = re.compile(r"[ \t\n\r]*")
    pos = whitespace.match(text, 0).end()
    if pos >= len(text):
        return
    if text[pos] != "[":
        line = text.count("\n", 0, pos) + 1
        raise ImportRejected(f"line {line}: a .json file must hold an array of records")
    pos = whitespace.match(text, pos + 1).end()
    line, counted_to = 1, 0
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ImportRejected(f"line {exc.lineno}: broken JSON: {exc.msg} at column {exc.colno}") from None
        yield line, value
        pos = whitespace.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = whitespace.match(text, pos + 1).end()
            continue
        if pos < len(text) and text[pos] == "]":
            rest = text[pos + 1:].strip()
            if rest:
                raise ImportRejected(f"line {text.count(chr(10), 0, pos) + 1}: unexpected text after the array")
            return
        raise ImportRejected(f"line {text.count(chr(10), 0, pos) + 1}: broken JSON: expected ',' or ']'")


def read_csv_rows(text: str) -> Iterator[tuple[int, Any]]:
    # The file is already in memory, so let the csv module read a cell of any size (its default
    # limit is 128 KiB); check_text then reports a field over 1 MB as a row error.
    if csv.field_size_limit() <= len(text):
        csv.field_size_limit(len(text) + 1)
    # strict: a quote never closed (or text after a closing quote) is an error, not a cell that
    # silently swallows the rest of the file.
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    line = 1
    try:
        if reader.fieldnames is None:
            return
        line = reader.line_num + 1
        for row in reader:
            if None in row:  # more cells than header columns
                yield line, RowError(f"{len(row[None])} more cells than the header's {len(reader.fieldnames)} columns")
            else:
                # Empty cells mean absent, as CSV has no null.
                yield line, {k: v for k, v in row.items() if v is not None and v != ""}
            line = reader.line_num + 1
    except csv.Error as exc:
        hint = " (a quoted field is never closed)" if "end of data" in str(exc) else ""
        raise ImportRejected(f"line {line}: broken CSV: {exc}{hint}") from None


def read_parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ImportRejected(f"not a readable Parquet file: {exc}") from None
    number = 0
    for batch in table.to_batches(max_chunksize=50_000):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _decode(data: bytes) -> str:
    """Whole-file UTF-8 decode; invalid bytes survive as surrogates that validation reports per row."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", "surrogateescape")


def iter_records(path: Path, data: bytes) -> Iterator[tuple[int, Any]]:
    kind = RECORD_SUFFIXES.get(path.suffix.lower())
    if kind == "jsonl":
        return read_jsonl(data)
    if kind == "json":
        return read_json_array(_decode(data))
    if kind == "csv":
        return read_csv_rows(_decode(data))
    if kind == "parquet":
        return read_parquet_rows(path)
    raise ImportRejected(f"unsupported file type {path.suffix!r}: use .jsonl, .json, .csv, .parquet or a corpus")


# --------------------------------------------------------------------------------------------
# Corpus: text, markdown, reStructuredText and HTML → cleaned, segmented documents
# --------------------------------------------------------------------------------------------


# CorpusOptions and the extraction, segmentation and filters live in core/corpus.py.


def clean_text(text: str, suffix: str) -> str:
    """A file's main content as plain text: its blocks (headings, paragraphs, code) one per paragraph."""
    return "\n\n".join(block.text for block in corpus.extract_blocks(text, suffix))


def segment_text(text: str, options: CorpusOptions) -> list[tuple[int, str]]:
    """Plain text → the (first line, text) of the passages the filters keep (see core.corpus)."""
    kept, _ = corpus.segment_document(text, ".txt", options)
    return [(p.line, p.text) for p in kept]


def corpus_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
    return [path]


def check_corpus_file(path: Path, data: bytes, options: CorpusOptions, seen: set[str] | None = None) -> FileCheck:
    """Extract, segment and filter one corpus file. `seen` (normalised texts already kept)
    deduplicates across files when one set is passed for all of them."""
    check = FileCheck(path=path, format="corpus", sha256=hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        check.fatal = f"line {line}: invalid UTF-8 at byte {exc.start + 1}"
        return check
    # A file with no passage that passes the filters simply yields nothing; the caller rejects an
    # import that yields no document at all.
    kept, check.drops = corpus.segment_document(text, path.suffix.lower(), options, title=path.stem, seen=seen)
    check.n_read = len(kept) + len(check.drops)
    check.documents = [Document(line=p.line, segment=p.segment, text=p.text, title=p.title) for p in kept]
    return check


# --------------------------------------------------------------------------------------------
# Checking files (reads, writes nothing)
# --------------------------------------------------------------------------------------------


def expand_paths(paths: list[Path | str], fmt: str | None) -> list[Path]:
    """Files to import: folders expand to their corpus files, or record files for other formats."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ImportRejected(f"{path}: no such file or folder")
        if path.is_dir():
            if fmt not in (None, "corpus"):
                found = sorted(p for p in path.rglob("*") if p.suffix.lower() in RECORD_SUFFIXES)
            else:
                found = corpus_files(path)
            if not found:
                raise ImportRejected(f"{path}: folder holds no importable files")
            out.extend(found)
        else:
            out.append(path)
    return out


def check_file(path: Path, fmt: str | None = None, role: str = "seed",
               corpus: CorpusOptions | None = None) -> FileCheck:
    """Read and validate one file. Never raises for bad content: problems go in the result."""
    if fmt is not None and fmt not in FORMATS:
        raise ImportRejected(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if fmt == "corpus" or (fmt is None and suffix in CORPUS_SUFFIXES):
        return check_corpus_file(path, data, corpus or CorpusOptions())

    check = FileCheck(path=path, format=fmt or "?", sha256=hashlib.sha256(data).hexdigest())
    if not data.strip(b" \t\r\n\xef\xbb\xbf"):
        check.fatal = f"{path} is empty: no records"
        return check
    parser = PARSERS.get(fmt) if fmt else None
    ids: dict[str, int] = {}  # a record's own "id" field → its line: two records, one id, is an error
    try:
        for line, rec in iter_records(path, data):
            check.n_read += 1
            if isinstance(rec, RowError):
                check.rejected.append(Rejected(line, str(rec)))
                continue
            if not isinstance(rec, dict):
                check.rejected.append(Rejected(line, f"expected a JSON object, got {_describe(rec)}",
                                               _excerpt(json.dumps(rec, default=str))))
                continue
            own_id = rec.get("id")
            if isinstance(own_id, (str, int)) and not isinstance(own_id, bool):
                key = str(own_id)
                if key in ids:
                    check.rejected.append(Rejected(line, f"duplicate id {key[:80]!r} (first on line {ids[key]})",
                                                   _excerpt(json.dumps(rec, default=str))))
                    continue
                ids[key] = line
            if parser is None:
                detected = detect_format(rec)
                if detected is None:
                    check.fatal = (f"cannot tell the format from the fields {sorted(rec)[:8]} on line {line}: "
                                   f"pass --format ({', '.join(FORMATS)})")
                    return check
                check.format, parser = detected, PARSERS[detected]
            try:
                check.records.append(parser(rec, line, role))
            except RowError as exc:
                check.rejected.append(Rejected(line, str(exc), _excerpt(json.dumps(rec, default=str))))
    except ImportRejected as exc:
        check.fatal = str(exc)
        return check
    if check.n_read == 0:
        check.fatal = f"{path} is empty: no records"
    return check


def check_paths(paths: list[Path | str], fmt: str | None = None, role: str = "seed",
                corpus: CorpusOptions | None = None) -> list[FileCheck]:
    if fmt is not None and fmt not in FORMATS:
        raise ImportRejected(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return [check_file(p, fmt, role, corpus) for p in expand_paths(paths, fmt)]


def rejection_message(checks: list[FileCheck]) -> str:
    lines = []
    for check in checks:
        if check.ok:
            continue
        n_bad = 1 if check.fatal else len(check.rejected)
        what = "unreadable" if check.fatal else f"{n_bad} invalid row{'s' if n_bad > 1 else ''}"
        lines.append(f"{check.path}: {what}")
        lines.extend(f"  {problem}" for problem in check.problems())
    lines.append("Nothing was imported. Fix the rows, or pass --skip-invalid to import the valid rows "
                 "and record the rejected ones.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Writing checked files
# --------------------------------------------------------------------------------------------


def _json_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def _chunks(rows: dict[str, list], size: int) -> Iterator[pa.Table]:
    n = len(next(iter(rows.values()))) if rows else 0
    for start in range(0, n, size):
        yield pa.table({k: v[start:start + size] for k, v in rows.items()})


def _record_columns(check: FileCheck, dataset_id: str, source: str) -> tuple[dict, dict, dict]:
    """Column lists for instructions, responses and preference pairs, deduplicated by id."""
    ins: dict[str, list] = {k: [] for k in ("id", "dataset_id", "text", "input", "system", "history", "task",
                                            "category", "n_chars", "source_file", "source_line", "meta")}
    res: dict[str, list] = {k: [] for k in ("id", "instruction_id", "role", "text", "n_chars",
                                            "source_file", "source_line")}
    pairs: dict[str, list] = {k: [] for k in ("id", "instruction_id", "chosen_id", "rejected_id",
                                              "source_file", "source_line")}
    seen_ins: set[str] = set()
    seen_res: set[str] = set()
    for r in check.records:
        history = _json_or_none(r.history)
        iid = content_id(dataset_id, r.system or "", history or "", r.instruction, r.input)
        if iid not in seen_ins:
            seen_ins.add(iid)
            ins["id"].append(iid)
            ins["dataset_id"].append(dataset_id)
            ins["text"].append(r.instruction)
            ins["input"].append(r.input)
            ins["system"].append(r.system)
            ins["history"].append(history)
            ins["task"].append(r.task)
            ins["category"].append(r.category)
            ins["n_chars"].append(len(r.instruction) + len(r.input))
            ins["source_file"].append(source)
            ins["source_line"].append(r.line)
            ins["meta"].append(_json_or_none(r.meta))
        ids = []
        for role, text in r.responses:
            rid = content_id(iid, role, "", text)
            ids.append(rid)
            if rid in seen_res:
                continue
            seen_res.add(rid)
            res["id"].append(rid)
            res["instruction_id"].append(iid)
            res["role"].append(role)
            res["text"].append(text)
            res["n_chars"].append(len(text))
            res["source_file"].append(source)
            res["source_line"].append(r.line)
        if r.is_pair:
            pairs["id"].append(content_id(ids[0], ids[1]))
            pairs["instruction_id"].append(iid)
            pairs["chosen_id"].append(ids[0])
            pairs["rejected_id"].append(ids[1])
            pairs["source_file"].append(source)
            pairs["source_line"].append(r.line)
    return ins, res, pairs


def _document_columns(check: FileCheck, dataset_id: str, source: str,
                      seen: set[str]) -> tuple[dict, list[corpus.Drop]]:
    """Columns of the file's new documents, and the passages an earlier file of this import
    already holds (`seen`: document ids, shared across the import's files), as duplicate drops."""
    docs: dict[str, list] = {k: [] for k in ("id", "dataset_id", "text", "title", "n_chars",
                                             "source_file", "source_line", "segment")}
    duplicates: list[corpus.Drop] = []
    for d in check.documents:
        did = content_id(dataset_id, normalise_for_dedup(d.text))
        if did in seen:
            duplicates.append(corpus.Drop(d.text, d.title, d.line, d.segment, corpus.DUPLICATE))
            continue
        seen.add(did)
        for key, value in (("id", did), ("dataset_id", dataset_id), ("text", d.text), ("title", d.title),
                           ("n_chars", len(d.text)), ("source_file", source), ("source_line", d.line),
                           ("segment", d.segment)):
            docs[key].append(value)
    return docs, duplicates


def _drop_columns(drops: list[corpus.Drop], dataset_id: str, source: str) -> dict:
    cols: dict[str, list] = {k: [] for k in ("id", "dataset_id", "source_file", "source_line", "segment",
                                             "title", "reason", "n_chars", "excerpt")}
    for d in drops:
        did = content_id("drop", dataset_id, source, str(d.segment), d.reason, normalise_for_dedup(d.text))
        for key, value in (("id", did), ("dataset_id", dataset_id), ("source_file", source),
                           ("source_line", d.line), ("segment", d.segment), ("title", d.title),
                           ("reason", d.reason), ("n_chars", d.n_chars), ("excerpt", d.excerpt)):
            cols[key].append(value)
    return cols


def write_checks(store, cur, dataset: str, checks: list[FileCheck]) -> list[dict]:
    """Write the valid records of each checked file, and its rejects, in the caller's transaction."""
    dataset_id = content_id("dataset", dataset)
    files = []
    corpus_seen: set[str] = set()  # document ids of this import's earlier corpus files
    for check in checks:
        source = _source_name(check.path)
        store.ensure_dataset(cur, dataset_id, dataset, DATASET_KIND.get(check.format, "mixed"))
        import_id = content_id("import", dataset_id, check.sha256, datetime.now(timezone.utc).isoformat())
        n_new = n_new_responses = 0
        n_valid, drops = check.n_valid, []
        if check.format == "corpus":
            docs, duplicates = _document_columns(check, dataset_id, source, corpus_seen)
            for table in _chunks(docs, WRITE_CHUNK_ROWS):
                n_new += store.insert_batch(cur, "documents", table)
            # A passage another file of this import holds is a drop, not a duplicate of the catalog.
            n_valid, drops = n_valid - len(duplicates), check.drops + duplicates
            for table in _chunks(_drop_columns(drops, dataset_id, source), WRITE_CHUNK_ROWS):
                store.insert_corpus_drops(cur, table)
        else:
            ins, res, pairs = _record_columns(check, dataset_id, source)
            for table in _chunks(ins, WRITE_CHUNK_ROWS):
                n_new += store.insert_batch(cur, "instructions", table)
            for table in _chunks(res, WRITE_CHUNK_ROWS):
                n_new_responses += store.insert_batch(cur, "responses", table)
            for table in _chunks(pairs, WRITE_CHUNK_ROWS):
                store.insert_batch(cur, "preference_pairs", table)
        rejects = {
            "id": [content_id(import_id, str(r.line), r.reason) for r in check.rejected],
            "import_id": [import_id] * len(check.rejected),
            "dataset_id": [dataset_id] * len(check.rejected),
            "source_file": [source] * len(check.rejected),
            "line": [r.line for r in check.rejected],
            "reason": [r.reason for r in check.rejected],
            "excerpt": [r.excerpt for r in check.rejected],
        }
        for table in _chunks(rejects, WRITE_CHUNK_ROWS):
            store.insert_batch(cur, "import_rejects", table)
        summary = _record_import(store, cur, import_id, dataset_id, source, check.sha256, check.format,
                                 check.n_read, n_new, n_new_responses, n_valid, len(check.rejected))
        if check.format == "corpus":
            summary["dropped"] = len(drops)
        files.append(summary)
    return files


def _record_import(store, cur, import_id, dataset_id, source, sha256, fmt, n_read, n_new, n_new_responses,
                   n_valid, n_rejected) -> dict:
    n_duplicates = max(n_valid - n_new, 0)
    store.record_import(cur, [import_id, dataset_id, source, sha256, fmt, n_read, n_new, n_new_responses,
                              n_duplicates, n_rejected])
    return {"file": source, "format": fmt, "read": n_read, "new": n_new, "new_responses": n_new_responses,
            "duplicates": n_duplicates, "rejected": n_rejected}


# Files at least this large go through DuckDB's bulk reader first (see core/store/, "Bulk import").
BULK_MIN_BYTES = 4 * 1024 * 1024
BULK_FORMATS = (None, "alpaca", "prompts")
BULK_KEYS = {"instruction", "input", "output", "task", "category", "system"}
_TRAILING_COMMA = re.compile(rb",[ \t\r]*[}\]]")


def bulk_eligible(path: Path, fmt: str | None, min_bytes: int = BULK_MIN_BYTES) -> bool:
    return (fmt in BULK_FORMATS and path.suffix.lower() in (".jsonl", ".ndjson")
            and path.stat().st_size >= min_bytes)


def bulk_import_file(store, cur, path: Path, dataset: str, fmt: str | None, role: str) -> dict | None:
    """Import a clean JSON Lines file of alpaca/prompts records in bulk, or return None (nothing
    written) so the caller checks it line by line: any bad row, a BOM, blank lines, other keys."""
    data = path.read_bytes()
    # DuckDB's JSON reader accepts a trailing comma ({"a": 1,}) that JSON, and the per-line path,
    # reject: such a file (or text that merely looks like one) goes line by line.
    # isspace() is strip()'s test without strip()'s copy of the whole file (436 MB at 1M rows).
    if data.startswith(b"\xef\xbb\xbf") or not data or data.isspace() or _TRAILING_COMMA.search(data):
        return None
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    sha256 = hashlib.sha256(data).hexdigest()
    del data
    keys = store.bulk_stage_jsonl(cur, path, BULK_KEYS)  # raises BulkUnreadable
    if "instruction" not in keys or not keys <= BULK_KEYS:
        store.bulk_drop(cur)
        return None
    fmt = fmt or ("alpaca" if "output" in keys else "prompts")
    dataset_id = content_id("dataset", dataset)
    source = _source_name(path)
    counts = store.bulk_insert(cur, fmt, n_lines, dataset_id, role, source)
    if counts is None:
        return None
    # Only now: a file that falls back may turn out another format, and the dataset's kind with it.
    store.ensure_dataset(cur, dataset_id, dataset, DATASET_KIND[fmt])
    import_id = content_id("import", dataset_id, sha256, datetime.now(timezone.utc).isoformat())
    return _record_import(store, cur, import_id, dataset_id, source, sha256, fmt, n_lines, counts[0], counts[1],
                          n_lines, 0)


def _source_name(path: Path) -> str:
    """How lineage names a file: relative to the working directory when inside it."""
    path = path.resolve()
    base = Path.cwd().resolve()
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
