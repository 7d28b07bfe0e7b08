"""SQL-injection payloads (issue 15) in every value a user types: the Explore filter's text and
list fields, the documents filter, a curation spec's names, snapshot and model names, and the
page order. Each reaches DuckDB only as a bound parameter or through an allowlist, so a payload
is plain text: it matches only a sample that contains it literally, and no table changes."""

from __future__ import annotations

import dataclasses

import pytest

from core import curate
from core.curate import SpecError
from core.selection import ExploreFilter
from core.store.documents import DocumentFilter

PAYLOADS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "'; DROP TABLE instructions; --",
    '"; DELETE FROM responses; --',
    "x') UNION SELECT id, text FROM instructions --",
    "%' OR '%'='",
    "\\'; ATTACH 'evil.db' AS evil; --",
    "1; COPY instructions TO '/tmp/leak.csv'",
    "'||(SELECT count(*) FROM instructions)||'",
    "$$; CREATE TABLE pwned(x INT); $$",
    "_%",
    "\x00' --",
]
LIST_FIELDS = ["datasets", "tasks", "roles", "sources", "methods", "ids"]


def snapshot_of_tables(ws) -> dict:
    return ws.store.table_counts() | {"tables": sorted(r[0] for r in ws.store.schema())}


@pytest.fixture
def ws(seeded_workspace, tmp_path):
    """The seeded workspace plus one sample whose instruction holds every payload literally."""
    from tests.conftest import write_jsonl

    text = "Literal payloads: " + " | ".join(p.replace("\x00", "") for p in PAYLOADS)
    seeded_workspace.import_paths([write_jsonl(tmp_path / "lit.jsonl", [{"instruction": text, "output": "ok"}])],
                                  "literal")
    return seeded_workspace


@pytest.mark.parametrize("payload", PAYLOADS)
def test_explore_filters_treat_payloads_as_text(ws, payload):
    before = snapshot_of_tables(ws)
    for name in LIST_FIELDS:
        selection = ExploreFilter(**{name: [payload]})
        assert ws.explore_count(selection) == 0, name
        assert ws.explore_page(selection).empty, name
    for search_responses in (False, True):
        selection = ExploreFilter(search=payload, search_responses=search_responses)
        found = ws.explore_page(selection, page_size=50)
        literal = payload.replace("\x00", "")
        # A payload matches only the sample that holds it literally (LIKE wildcards are escaped).
        texts = [ws.sample(i)["instruction"]["text"] for i in found["id"]]  # the page holds previews
        assert all(literal.lower() in t.lower() for t in texts), texts
        assert ws.explore_count(selection) == len(found) <= 1
    docs = DocumentFilter(datasets=[payload], sources=[payload], search=payload)
    assert ws.store.documents_count(docs) == 0
    assert snapshot_of_tables(ws) == before


def test_the_literal_sample_is_found_by_each_payload(ws):
    for payload in PAYLOADS:
        if "\x00" in payload:
            continue
        assert ws.explore_count(ExploreFilter(search=payload)) == 1, payload


@pytest.mark.parametrize("payload", PAYLOADS)
def test_page_order_is_an_allowlist(ws, payload):
    with pytest.raises(ValueError):
        ws.explore_page(ExploreFilter(), order=payload)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_spec_fields_carry_payloads_as_values(ws, payload):
    before = snapshot_of_tables(ws)
    fields = [{"datasets": [payload]}, {"tasks": [payload]}, {"roles": [payload]},
              {"judges": [{"judge": payload, "rubric": "pointwise_5", "min": 1}]},
              {"system_tags": {"default": payload}}, {"search": payload}]
    for extra in fields:
        try:
            counts = curate.counts(ws, {"kind": "sft", "roles": ["seed"]} | extra)
        except SpecError as exc:  # refused by the spec's own checks: fine, as long as nothing ran
            assert str(exc)
            continue
        if "system_tags" not in extra:
            assert counts.after == 0, extra
    assert snapshot_of_tables(ws) == before


@pytest.mark.parametrize("payload", PAYLOADS)
def test_names_with_payloads_are_refused_or_stored_literally(ws, payload):
    before = snapshot_of_tables(ws)
    try:
        snap = curate.create_snapshot(ws, {"kind": "sft", "roles": ["seed"]}, payload)
    except (ValueError, SpecError) as exc:
        assert str(exc)
    else:
        assert curate.snapshot(ws, payload, page_size=1).name == snap.name == payload
    try:
        ws.add_model({"name": payload, "backend": "python", "path": "core.synthetic:teacher"})
    except ValueError as exc:
        assert str(exc)
    else:
        assert ws.model(payload).name == payload
    after = snapshot_of_tables(ws)
    for table in ("instructions", "responses", "documents", "judgments"):
        key = next((k for k in before if k.startswith(table)), None)
        if key:
            assert after[key] == before[key], table
    assert set(before["tables"]) <= set(after["tables"]) and "pwned" not in after["tables"]


def test_every_explore_filter_field_is_covered():
    names = {f.name for f in dataclasses.fields(ExploreFilter)}
    assert set(LIST_FIELDS) | {"search", "search_responses", "rounds", "min_chars", "max_chars", "review"} == names
