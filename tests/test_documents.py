"""The Documents queries (core.store.documents): filter, count, page, one document, the
instructions generated from it, and the datasets' contents, on a real workspace on disk."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from core import explore_views as views
from core.ids import content_id
from core.ingest import CorpusOptions
from core.store.documents import DocumentFilter
from core.workspace import Workspace

# Paragraphs of 70-95 characters: with min 50 / max 100 each becomes one passage.
TIDES = [
    "Tides are the rise and fall of sea levels caused by the Moon and the Sun.",
    "A spring tide happens when the Sun, the Moon and the Earth line up: 100% of the pull adds up.",
    "A neap tide happens at the quarter moons, when the pulls partly cancel.",
]
HEAPS = [
    "A heap is a binary tree in which every parent is smaller than its children.",
    "heap_push adds an item and keeps the heap invariant, in logarithmic time.",
]


def _corpus(folder: Path) -> Path:
    folder.mkdir()
    (folder / "tides.txt").write_text("\n\n".join(TIDES) + "\n", encoding="utf-8")
    (folder / "heaps.md").write_text("\n\n".join(HEAPS) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def docs_ws(tmp_path, pairs_file) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.import_paths([_corpus(tmp_path / "corpus")], "notes", fmt="corpus",
                    corpus=CorpusOptions(min_chars=50, max_chars=100))
    ws.import_paths([pairs_file], "small")
    yield ws
    ws.close()


def _texts(ws: Workspace, f: DocumentFilter, **kw) -> list[str]:
    return ws.store.documents_page(f, **kw)["preview"].tolist()


def test_documents_page_lists_passages_in_file_order_with_their_position(docs_ws):
    store = docs_ws.store
    assert store.documents_count(DocumentFilter()) == 5
    page = store.documents_page(DocumentFilter())
    # Files in sorted order (heaps.md, tides.txt), passages in order within each.
    assert page["preview"].tolist() == HEAPS + TIDES
    assert page["dataset"].unique().tolist() == ["notes"]
    assert page["segment"].tolist() == [0, 1, 0, 1, 2]
    assert page["source_line"].tolist() == [1, 3, 1, 3, 5]
    assert page["title"].tolist() == ["heaps"] * 2 + ["tides"] * 3
    assert [Path(p).name for p in page["source_file"]] == ["heaps.md"] * 2 + ["tides.txt"] * 3
    assert page["n_chars"].tolist() == [len(t) for t in HEAPS + TIDES]
    assert page["n_instructions"].tolist() == [0] * 5
    # Paging.
    assert _texts(docs_ws, DocumentFilter(), limit=2, offset=2) == TIDES[:2]
    assert _texts(docs_ws, DocumentFilter(), limit=2, offset=10) == []
    with pytest.raises(ValueError):
        store.documents_page(DocumentFilter(), limit=0)


def test_documents_filters(docs_ws):
    store = docs_ws.store
    tides = next(s for s in store.document_filter_options()["sources"] if s.endswith("tides.txt"))
    cases = [
        (DocumentFilter(datasets=["notes"]), HEAPS + TIDES),
        (DocumentFilter(datasets=["small"]), []),           # a dataset without documents
        (DocumentFilter(datasets=["nope"]), []),
        (DocumentFilter(sources=[tides]), TIDES),
        (DocumentFilter(search="TIDE"), TIDES),             # case-insensitive, text or title
        (DocumentFilter(search="heaps"), HEAPS),            # the title matches
        (DocumentFilter(search="100%"), [TIDES[1]]),        # % is literal, not a wildcard
        (DocumentFilter(search="heap_push"), [HEAPS[1]]),   # _ too
        (DocumentFilter(search="heap%push"), []),
        (DocumentFilter(min_chars=80), [t for t in HEAPS + TIDES if len(t) >= 80]),
        (DocumentFilter(max_chars=72), [t for t in HEAPS + TIDES if len(t) <= 72]),
        (DocumentFilter(sources=[tides], search="moon", max_chars=80), [TIDES[0], TIDES[2]]),
    ]
    for f, expected in cases:
        assert store.documents_count(f) == len(expected), f
        assert _texts(docs_ws, f) == expected, f
    with pytest.raises(ValueError, match="above"):
        DocumentFilter(min_chars=10, max_chars=5)


def test_document_and_the_instructions_generated_from_it(docs_ws):
    store = docs_ws.store
    first = store.documents_page(DocumentFilter(search="spring tide")).iloc[0]
    doc = store.document(first["id"])
    assert doc["text"] == TIDES[1] and doc["dataset"] == "notes"
    assert (doc["segment"], doc["source_line"], doc["title"]) == (1, 3, "tides")
    assert store.document("no-such-id") is None
    assert store.document_instructions(first["id"]).empty

    # Two instructions generated from the passage, one from elsewhere.
    dataset_id = content_id("dataset", "notes")
    rows = [{"id": content_id(dataset_id, "", "", text, ""), "dataset_id": dataset_id, "text": text, "input": "",
             "n_chars": len(text), "round": 1, "method": "backtranslate", "parent_id": parent}
            for text, parent in (("What is a spring tide?", first["id"]), ("When do spring tides happen?", first["id"]),
                                 ("What is a neap tide?", "another-document"))]
    with store.transaction() as cur:
        assert store.insert_batch(cur, "instructions", pa.Table.from_pylist(rows)) == 3
    children = store.document_instructions(first["id"])
    assert children["instruction"].tolist() == ["What is a spring tide?", "When do spring tides happen?"]
    assert set(children["dataset"]) == {"notes"} and set(children["method"]) == {"backtranslate"}
    page = store.documents_page(DocumentFilter()).set_index("preview")
    assert page.loc[TIDES[1], "n_instructions"] == 2 and page["n_instructions"].sum() == 2
    assert views.documents_table(store.documents_page(DocumentFilter(search="spring tide")))["instructions"].tolist() \
        == [2]


def test_document_filter_options_and_dataset_contents(docs_ws):
    store = docs_ws.store
    options = store.document_filter_options()
    assert options["datasets"] == ["notes"]  # only the datasets that hold documents
    assert sorted(Path(s).name for s in options["sources"]) == ["heaps.md", "tides.txt"]
    assert len(store.document_filter_options(["notes"])["sources"]) == 2
    assert store.document_filter_options(["small"])["sources"] == []
    assert store.document_filter_options(["nope"])["sources"] == []

    contents = store.dataset_contents(["notes", "small"]).set_index("name")
    assert contents.loc["notes", "documents"] == 5 and contents.loc["notes", "instructions"] == 0
    assert contents.loc["small", "documents"] == 0 and contents.loc["small", "instructions"] == 6
    assert views.corpus_only(store.dataset_contents(["notes"])) == [("notes", 5)]
    assert views.corpus_only(store.dataset_contents(["notes", "small"])) == []  # not only corpus datasets
    assert views.corpus_only_sentence([("notes", 5)]) == "notes has 5 documents and no instructions."
    assert views.corpus_only_sentence([("one", 1)]) == "one has 1 document and no instructions."


def test_table_columns_and_judges_views():
    assert views.table_columns(["task", "judge_score", "review", "instruction"], has_judge=False) == \
        ["review", "instruction", "task"]
    assert views.table_columns(["task", "judge_score", "review"], has_judge=True) == ["review", "judge_score", "task"]
    assert views.DEFAULT_COLUMNS[0] == "review"
    assert views.short_path("/a/b/c/tides.txt") == "c/tides.txt" and views.short_path(None) == "—"
