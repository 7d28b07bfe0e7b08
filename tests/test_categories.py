"""CITING's categories (core/categories.py): the proposal parser on literal replies, validation,
assignment by mean inner product on hand-built vectors, and the catalog side (load, merge,
seed, assign, edit) in a real workspace with the embedder replaced by known vectors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from core import categories
from core.categories import assign_vectors, centroids, parse_proposal, validate_category
from core.selection import ExploreFilter

GOOD = """Category: Arithmetic
Description: Calculations and word problems.
Criteria: The answer is correct; The steps are shown; The unit is given
Members: 1, 3

Category: **Short writing**
Description: Poems and notes.
Criteria:
- It has the asked-for form
- 2) It is vivid
Members: 2, 4, 9
"""


# -- the parser -----------------------------------------------------------------------------------


def test_a_well_formed_reply_parses_into_categories_with_criteria_and_members():
    p = parse_proposal(GOOD, n_shown=4)
    assert p.ok and p.skipped == 0
    math, writing = p.categories
    assert (math.name, math.description) == ("Arithmetic", "Calculations and word problems.")
    assert math.criteria == ("The answer is correct", "The steps are shown", "The unit is given")
    assert math.members == (1, 3)
    assert writing.name == "Short writing"  # markdown emphasis stripped
    assert writing.criteria == ("It has the asked-for form", "It is vivid")
    assert writing.members == (2, 4)  # 9 was never shown: ignored


def test_a_truncated_reply_keeps_its_complete_blocks_and_counts_the_cut_one():
    cut = GOOD + "\nCategory: Explanations\nDescription: Why and how questi"
    p = parse_proposal(cut, n_shown=4)
    assert p.ok and [c.name for c in p.categories] == ["Arithmetic", "Short writing"] and p.skipped == 1


@pytest.mark.parametrize("reply", [
    "", None, "Sure! Here are some great categories for you.", "Category: Math\nDescription: sums",
    "1. 2. 3.\n\n::::", "Criteria: a; b\nMembers: 1",
])
def test_garbage_is_a_parse_error_never_a_crash(reply):
    p = parse_proposal(reply, n_shown=5)
    assert not p.ok and p.categories == () and p.error


def test_limits_and_repeated_names():
    text = "\n".join(f"Category: C{k}\nCriteria: a; b; c; d\n" for k in range(5)) + "Category: c0\nCriteria: x\n"
    p = parse_proposal(text, n_shown=3, max_categories=3, max_criteria=2)
    assert [c.name for c in p.categories] == ["C0", "C1", "C2"]
    assert all(c.criteria == ("a", "b") for c in p.categories)


def test_a_category_is_validated_naming_the_key_and_value():
    ok = validate_category({"name": " Math ", "description": "Sums.", "criteria": "- right\n- shown"})
    assert ok == {"name": "Math", "description": "Sums.", "criteria": ["right", "shown"], "examples": []}
    with pytest.raises(ValueError, match=r"c\.name: one line of 1–60 characters, not ''"):
        validate_category({"name": "", "criteria": ["x"]}, "c")
    with pytest.raises(ValueError, match=r"c\.criteria: 1–10 criteria, not \[\]"):
        validate_category({"name": "Math", "criteria": []}, "c")
    with pytest.raises(ValueError, match=r"c: unknown key\(s\) colour"):
        validate_category({"name": "Math", "criteria": ["x"], "colour": "red"}, "c")
    with pytest.raises(ValueError, match=r"c\.examples: a list of example instructions"):
        validate_category({"name": "Math", "criteria": ["x"], "examples": "What is 2+2?"}, "c")


# -- assignment on hand-built vectors -------------------------------------------------------------


def test_an_instruction_joins_the_category_with_the_highest_mean_inner_product():
    e = np.eye(3, dtype=np.float32)
    groups = {
        # A's members point along x and y; B's two members both along z; C has none (skipped).
        "A": np.stack([e[0], e[1]]),
        "B": np.stack([e[2], e[2]]),
        "C": np.zeros((0, 3), dtype=np.float32),
    }
    ids, centres = centroids(groups)
    assert ids == ["A", "B"]
    x = np.array([[1, 0, 0],        # mean with A: (1 + 0) / 2 = 0.5; with B: 0
                  [0, 0.6, 0.8],    # A: 0.3, B: 0.8
                  [0.7, 0.7, 0.6]], dtype=np.float32)  # A: 0.7, B: 0.6 — the mean, not the max (1 vs 0.6 is the same here)
    best, sims = assign_vectors(x, centres)
    assert [ids[b] for b in best] == ["A", "B", "A"]
    assert sims == pytest.approx([0.5, 0.8, 0.7])


def test_the_mean_not_the_nearest_member_decides():
    # One member of A sits exactly on x, but A's other member is far: B's members are both near.
    groups = {"A": np.array([[1, 0], [-1, 0]], dtype=np.float32),
              "B": np.array([[0.8, 0.6], [0.8, -0.6]], dtype=np.float32)}
    ids, centres = centroids(groups)
    best, sims = assign_vectors(np.array([[1.0, 0.0]], dtype=np.float32), centres)
    assert ids[best[0]] == "B" and sims[0] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no category has a member"):
        assign_vectors(np.ones((1, 2)), np.zeros((0, 2)))


# -- the catalog ----------------------------------------------------------------------------------

POOL = ["What is 7 times 8?", "Write a poem about rain.", "What is 10 minus 4?", "Write a note to a friend.",
        "Why is the sea salty?"]
# Known vectors: sums along x, writing along y, the question along z (close to nothing seeded).
VECTORS = {"What is 7 times 8?": [1, 0, 0], "What is 10 minus 4?": [0.9, 0.1, 0],
           "Write a poem about rain.": [0, 1, 0], "Write a note to a friend.": [0.1, 0.9, 0],
           "Why is the sea salty?": [0.3, 0.2, 0.9], "What is 2 plus 2?": [1, 0, 0],
           "Write a haiku.": [0, 1, 0], "Why is grass green?": [0, 0, 1]}


@pytest.fixture
def ws(workspace, tmp_path, monkeypatch):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in POOL), encoding="utf-8")
    workspace.import_paths([path], "pool")

    def embed(texts):
        return np.array([VECTORS[t] for t in texts], dtype=np.float32).reshape(len(texts), 3)

    monkeypatch.setattr(workspace, "embed", embed)
    return workspace


def ids_by_text(ws) -> dict[str, str]:
    return {r["text"]: r["id"] for r in ws.store.instructions_for_job(ExploreFilter(datasets=["pool"]), 100)}


def add_proposal(ws, scheme: str, sample: list[str], reply: str) -> None:
    """A teacher proposal as the propose_categories stage's ingest writes it."""
    from core.categories import PROPOSAL_COLUMNS

    p = parse_proposal(reply, len(sample))
    row = {"id": f"p-{len(reply)}", "scheme": scheme, "model": "teacher", "job_id": None, "round": 1,
           "sample_ids": json.dumps(sample), "raw": reply, "parsed": json.dumps(p.as_json()) if p.ok else None,
           "parse_error": p.error, "call_error": None, "template_hash": "x", "params": "{}"}
    table = pa.table({k: [row[k]] for k in PROPOSAL_COLUMNS},
                     schema=pa.schema([(k, pa.int32() if k == "round" else pa.string()) for k in PROPOSAL_COLUMNS]))
    with ws.store.transaction() as cur:
        ws.store.insert_batch(cur, "category_proposals", table)


RECIPE = [{"name": "Sums", "description": "Arithmetic.", "criteria": ["correct"], "examples": ["What is 2 plus 2?"]},
          {"name": "Empty", "description": "Nothing seeds it.", "criteria": ["anything"]}]


def test_recipe_and_teacher_categories_merge_and_every_instruction_joins_its_nearest(ws):
    ids = ids_by_text(ws)
    # The teacher saw two instructions and put both in "Writing"; its "Sums" repeats the recipe's.
    add_proposal(ws, "s", [ids["Write a poem about rain."], ids["Write a note to a friend."]],
                 "Category: Writing\nDescription: texts\nCriteria: vivid; on topic\nMembers: 1, 2\n\n"
                 "Category: sums\nCriteria: quick\nMembers: 1\n")
    add_proposal(ws, "s", [ids["Why is the sea salty?"]], "I cannot do that.")  # a parse failure, kept
    loaded = categories.load_categories(ws, "s", RECIPE)
    assert loaded["added"] == {"recipe": 2, "teacher": 1} and loaded["seed_members"] == 2
    assert loaded["proposal_parse_errors"] == 1
    assert [p["raw"] for p in ws.store.category_proposals("s") if p["parsed"] is None] == ["I cannot do that."]

    result = categories.assign(ws, "s", ExploreFilter(datasets=["pool"]), round=1)
    assert result["skipped_categories"] == ["Empty"]  # no member, no example: nothing to compare with
    assert result["assigned"] == 3 and result["seeds"] == 2
    cats = {c["name"]: c for c in categories.categories(ws, "s")}
    assert cats["Sums"]["origin"] == "recipe" and cats["Writing"]["origin"] == "teacher"
    assert cats["Writing"]["criteria"] == ["vivid", "on topic"]
    assert (cats["Sums"]["members"], cats["Writing"]["members"], cats["Empty"]["members"]) == (3, 2, 0)
    members = {m["text"]: m for m in ws.store.category_members(cats["Sums"]["id"])}
    assert members["What is 7 times 8?"]["similarity"] == pytest.approx(1.0)
    assert members["What is 10 minus 4?"]["similarity"] == pytest.approx(0.9)
    # The question is closest to Sums (0.3 against Writing's mean 0.2 = (0.2 + 0.9·0.2 …)/2).
    assert members["Why is the sea salty?"]["source"] == "assigned"
    writing = ws.store.category_members(cats["Writing"]["id"])
    assert {m["source"] for m in writing} == {"seed"} and all(m["similarity"] is not None for m in writing)

    # Idempotent: loading and assigning again adds nothing.
    assert categories.load_categories(ws, "s", RECIPE)["added"] == {"recipe": 0, "teacher": 0}
    assert categories.assign(ws, "s", ExploreFilter(datasets=["pool"]))["assigned"] == 0


def test_categories_are_editable_and_an_edit_makes_them_human(ws):
    categories.load_categories(ws, "s", RECIPE, proposals=False)
    sums = next(c for c in categories.categories(ws, "s") if c["name"] == "Sums")
    categories.assign(ws, "s", ExploreFilter(datasets=["pool"]))
    edited = categories.update_category(ws, sums["id"], name="Arithmetic", criteria="- right answer\n- steps shown")
    assert (edited["id"], edited["name"], edited["criteria"], edited["origin"]) == (
        sums["id"], "Arithmetic", ["right answer", "steps shown"], "human")
    assert next(c for c in categories.categories(ws, "s") if c["id"] == sums["id"])["members"] == 5
    with pytest.raises(ValueError, match="has a category named 'empty' already"):
        categories.update_category(ws, sums["id"], name="empty")
    with pytest.raises(ValueError, match="criteria: 1–10 criteria"):
        categories.update_category(ws, sums["id"], criteria="")
    assert ws.store.category(sums["id"])["name"] == "Arithmetic"  # the failed edits changed nothing
    added = categories.add_category(ws, "s", "Questions", "Why and how.", ["explains the cause"])
    assert added["origin"] == "human"
    categories.delete_category(ws, sums["id"])
    assert ws.store.category(sums["id"]) is None
    assert sorted(c["name"] for c in categories.categories(ws, "s")) == ["Empty", "Questions"]
    assert ws.store.unassigned_instructions(ExploreFilter(datasets=["pool"]), "s", 100)  # its members are free again
    with pytest.raises(ValueError, match="no category with id 'nope'"):
        categories.delete_category(ws, "nope")


def test_assignment_without_any_seed_says_so(ws):
    categories.load_categories(ws, "s", [RECIPE[1]], proposals=False)
    with pytest.raises(ValueError, match="no category of scheme 's' has a member or an example"):
        categories.assign(ws, "s", ExploreFilter(datasets=["pool"]))
