"""CITING's revise stage (core/revise.py) and the propose_categories stage, through real jobs
with python-backend teachers whose answers are known; drop reasons on literal cases."""

from __future__ import annotations

import json

import pytest

from core import categories, jobs, revise
from core.selection import ExploreFilter
from core.workspace import Workspace


# A revising "teacher" for the python backend (served from this module: the spec lists it in
# extra modules). It answers a revise prompt with the draft, upper-cased, plus the number of
# criteria it was shown, so a test can tell that the criteria reached the prompt; a draft that
# says SAME comes back unchanged (dropped: same as draft), one that says EMPTY comes back empty.
def reviser(conversation: list[dict]) -> str:
    prompt = conversation[-1]["content"]
    draft = prompt.split("[Draft answer]\n", 1)[1].split("\n[End of draft answer]", 1)[0]
    criteria = prompt.split("task]\n", 1)[1].split("\n[End of criteria]", 1)[0]
    if "SAME" in draft:
        return draft
    if "EMPTY" in draft:
        return " "
    return f"{draft.upper()} ({criteria.count('- ')} criteria)"


# A proposing "teacher": one well-formed category holding instructions 1 and 2.
def proposer(conversation: list[dict]) -> str:
    return "Category: Everything\nDescription: all of it\nCriteria: right; short\nMembers: 1, 2\n"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_job(ws, job_id: str) -> dict:
    job_dir = ws.job_dir(job_id)
    jobs.launch(job_dir).wait()
    info = jobs.wait(job_dir)
    assert info["status"] == "done", (job_dir / jobs.LOG).read_text()
    return ws.ingest_job(job_id)


ANSWERS = [{"instruction": "What is 6 times 7?", "output": "42"},
           {"instruction": "Name a colour.", "output": "SAME blue"},
           {"instruction": "Say hello.", "output": "EMPTY"},
           {"instruction": "Name a fruit.", "output": "an apple"}]


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    for name, fn in (("reviser", "reviser"), ("proposer", "proposer")):
        workspace.add_model({"name": name, "backend": "python", "path": f"tests.test_revise:{fn}",
                             "extra": {"modules": ["tests.test_revise"]}})
    workspace.import_paths([write_jsonl(tmp_path / "a.jsonl", ANSWERS)], "pool", role="student")
    categories.load_categories(ws := workspace, "s", [
        {"name": "General", "description": "Anything.", "criteria": ["right", "short", "kind"],
         "examples": ["Name an animal."]}], proposals=False)
    # Every instruction in the one category (the embedder is not needed for a single centroid).
    general = categories.categories(ws, "s")[0]["id"]
    rows = [{"instruction_id": r["id"], "category_id": general, "similarity": 1.0, "source": "assigned"}
            for r in ws.store.instructions_for_job(ExploreFilter(datasets=["pool"]), 100)]
    with ws.store.transaction() as cur:
        ws.store.set_memberships(cur, "s", rows)
    yield ws
    ws.close()


def revisions_of(ws, role: str) -> list[dict]:
    return ws.store.revisions(role=role)


def test_revise_writes_both_modes_with_lineage_and_counts_its_drops(ws):
    job = ws.create_job("revise", {"model": "reviser", "scheme": "s", "out_role": "revised",
                                   "revision_dataset": "rev-tasks"}, ExploreFilter(datasets=["pool"]))
    result = run_job(ws, job)
    assert result["new"] == 2 + 2 * 2  # two kept: a direct response, a revision-mode instruction and its response
    direct = {r["instruction"]: r for r in revisions_of(ws, "revised")}
    assert set(direct) == {"What is 6 times 7?", "Name a fruit."}
    fruit = direct["Name a fruit."]
    assert fruit["revision"] == "AN APPLE (3 criteria)" and fruit["draft"] == "an apple"
    general = categories.categories(ws, "s")[0]
    assert fruit["meta"]["category_id"] == general["id"] and fruit["meta"]["mode"] == "direct"
    assert fruit["meta"]["criteria_hash"] == categories.criteria_hash(general["criteria"])
    assert fruit["meta"]["draft_response_id"] == fruit["draft_id"] and fruit["template_hash"]
    # Revision mode: a new instruction (request + criteria + draft) in its own dataset, parent → the original.
    tasks = ws.store.instructions_for_job(ExploreFilter(datasets=["rev-tasks"]), 100)
    assert len(tasks) == 2
    task = next(t for t in tasks if "an apple" in t["text"])
    assert "Name a fruit." in task["text"] and "- right" in task["text"]
    row = ws.store._dicts("SELECT parent_id, method FROM instructions WHERE id = ?", [task["id"]])[0]
    assert row == {"parent_id": fruit["instruction_id"], "method": "revise"}
    assert [r["text"] for r in ws.store.responses_for(task["id"])] == ["AN APPLE (3 criteria)"]
    assert revise.drop_counts(ws.job_dir(job)) == {"kept": 2, "dropped": {"same as draft": 1, "empty": 1}}
    log = (ws.job_dir(job) / jobs.LOG).read_text()
    assert "revise: 2 revisions of 4 drafts kept; dropped 1 empty, 1 same as draft" in log
    # A draft with a revision of the role is not selected again; the dropped ones are.
    again = ws.create_job("revise", {"model": "reviser", "scheme": "s", "out_role": "revised", "modes": "direct"},
                          ExploreFilter(datasets=["pool"]))
    assert run_job(ws, again)["new"] == 0 and revise.drop_counts(ws.job_dir(again))["kept"] == 0


def test_revise_refuses_bad_params_and_empty_input_naming_them(ws):
    with pytest.raises(ValueError, match=r"modes must be a non-empty list of direct, revision, not \['both'\]"):
        ws.create_job("revise", {"model": "reviser", "scheme": "s", "modes": ["both"]}, ExploreFilter())
    with pytest.raises(ValueError, match="the output role must differ from the draft role"):
        ws.create_job("revise", {"model": "reviser", "scheme": "s", "role": "x", "out_role": "x"}, ExploreFilter())
    with pytest.raises(ValueError, match="scheme 'other' has no category"):
        ws.create_job("revise", {"model": "reviser", "scheme": "other"}, ExploreFilter())
    with pytest.raises(ValueError, match="no answer of role 'student' from round 3"):
        ws.create_job("revise", {"model": "reviser", "scheme": "s", "draft_round": 3}, ExploreFilter())


@pytest.mark.parametrize(("draft", "revision", "finish", "ok", "reason"), [
    ("a", "b", "stop", True, None),
    ("a", "  ", "stop", True, "empty"),
    ("Blue  sky", "blue sky", "stop", True, "same as draft"),
    ("a", "b b b", "length", True, "too long"),
    ("a", "", "error", False, "call failed"),
])
def test_drop_reasons(draft, revision, finish, ok, reason):
    assert revise.drop_reason(draft, revision, finish, ok) == reason


def test_a_cut_off_revision_is_kept_only_when_asked():
    assert revise.drop_reason("a", "b b b", "length", True, keep_cut_off=True) is None
    assert revise.drop_reason("a", "a", "length", True, keep_cut_off=True) == "same as draft"


def test_the_propose_stage_stores_the_teachers_reply_and_its_categories(ws):
    job = ws.create_job("propose_categories", {"model": "proposer", "scheme": "t", "sample_size": 3},
                        ExploreFilter(datasets=["pool"]))
    run_job(ws, job)
    (proposal,) = ws.store.category_proposals("t")
    assert proposal["parse_error"] is None and len(proposal["sample_ids"]) == 3 and proposal["job_id"] == job
    assert proposal["parsed"][0]["name"] == "Everything" and proposal["parsed"][0]["members"] == [1, 2]
    loaded = categories.load_categories(ws, "t")
    assert loaded["added"]["teacher"] == 1 and loaded["seed_members"] == 2
    (cat,) = categories.categories(ws, "t")
    assert (cat["origin"], cat["criteria"], cat["seeds"]) == ("teacher", ["right", "short"], 2)


def test_modes_come_from_a_list_or_the_text_a_form_or_flag_gives():
    assert revise.check_modes(["revision", "direct", "revision"]) == ["revision", "direct"]
    assert revise.check_modes("['direct', 'revision']") == ["direct", "revision"]  # the Jobs form's default
    assert revise.check_modes("direct") == ["direct"]
    with pytest.raises(ValueError, match="modes must be a non-empty list of direct, revision, not ''"):
        revise.check_modes("")
