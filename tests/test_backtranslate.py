"""Humpback's backtranslation (core/backtranslate.py): the reversed seed pairs, the backtranslate
stage through real jobs, self-curation's keep step, the curated snapshot's system tags and its
export, and the Backtranslation page's views. Real workspaces; the backward model and the curator
are python-backend functions of this module where a known answer is needed, tiny-random where
any answer will do."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core import backtranslate as bt
from core import backtranslate_views as views
from core import curate, jobs
from core.methods.humpback import _training_spec, parse_section
from core.selection import ExploreFilter
from core.workspace import Workspace

DATA = Path(__file__).parent.parent / "data" / "humpback"
CORPUS = ExploreFilter(datasets=["corpus"])
MODULE = {"modules": ["tests.test_backtranslate"]}


# The backward "model": an instruction about the document's first words; nothing for the bread
# recipe's first part (an empty output to drop) and a loop for the houseplants (a degenerate one).
def backward(conversation: list[dict]) -> str:
    doc = conversation[-1]["content"]
    if doc.startswith("A basic loaf"):
        return "   "
    if "houseplants" in doc.casefold() or "Most houseplants" in doc:
        return "water water water water water water water water water water"
    return "Instruction: Explain this: " + " ".join(doc.split()[:6])


# The curator: a 5 for the bicycle passages (they name tyres, chains or brakes), else 2.
def curator(instruction: str, response: str, scale=(1, 5)) -> float:
    return 5.0 if any(w in response for w in ("tyre", "chain", "brake")) else 2.0


curator.winnow_role = "judge"


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    workspace.add_model({"name": "backward", "backend": "python", "path": "tests.test_backtranslate:backward",
                         "extra": MODULE})
    workspace.add_model({"name": "curator", "backend": "python", "path": "tests.test_backtranslate:curator",
                         "extra": MODULE | {"role": "judge"}})
    workspace.import_paths([DATA / "corpus"], "corpus", fmt="corpus")
    workspace.import_paths([DATA / "seed.jsonl"], "seed")
    yield workspace
    workspace.close()


def run_job(ws, job_id: str) -> dict:
    job_dir = ws.job_dir(job_id)
    jobs.launch(job_dir).wait()
    info = jobs.wait(job_dir)
    assert info["status"] == "done", (job_dir / jobs.LOG).read_text()
    return ws.ingest_job(job_id)


def backtranslate(ws) -> str:
    job_id = ws.create_job("backtranslate", {"model": "backward", "out_dataset": "cands"}, CORPUS, round=1)
    run_job(ws, job_id)
    return job_id


def curate_with(ws, judge: str = "curator", round: int = 1) -> None:
    run_job(ws, ws.create_job("judge", {"model": judge, "rubric": "pointwise_5", "roles": [bt.CANDIDATE_ROLE],
                                        "unjudged": True}, ExploreFilter(datasets=["cands"]), round=round))


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ok, text, finish, reason", [
    (False, None, "error", "call failed"),
    (True, None, "stop", "empty"),
    (True, "Describe how to oil a bicycle chain so that", "length", "cut off"),
    (True, "Chains?", "stop", "too short"),
    (True, "oil the chain oil the chain oil the chain oil the chain oil the chain", "stop", "repetitive"),
    (True, "wipe the chain with a rag after wet rides and every few weeks", "stop", "copies the document"),
    (True, "How do I look after my bicycle chain?", "stop", None),
])
def test_drop_reason_names_each_kind_of_degenerate_output(ok, text, finish, reason):
    document = "A dirty chain wears out the gears. Wipe the chain with a rag after wet rides, and every few weeks."
    assert bt.drop_reason(ok, text, document, finish) == reason


def test_reversed_pairs_swap_the_direction_and_keep_lineage():
    pairs = [{"instruction_id": "i1", "instruction": "Add these.", "input": "2 and 3", "response_id": "r1",
              "response": "5"}, {"instruction_id": "i2", "instruction": "Say hi.", "input": "", "response_id": "r2",
                                 "response": "Hi!"}]
    ins, res = bt.reversed_pair_rows(pairs, "ds")
    assert ins.column("text").to_pylist() == ["5", "Hi!"]           # the response is the prompt ...
    assert res.column("text").to_pylist() == ["Add these.\n\n2 and 3", "Say hi."]  # ... the instruction the answer
    assert ins.column("parent_id").to_pylist() == ["i1", "i2"]
    assert res.column("parent_id").to_pylist() == ["r1", "r2"]
    assert set(res.column("role").to_pylist()) == {bt.BACKWARD_ROLE}


@pytest.mark.parametrize("values, match", [
    ({"out_dataset": "c", "temperature": -1}, "temperature"),
    ({"out_dataset": "c", "top_p": 2}, "top_p"),
    ({"out_dataset": "bad/name"}, "dataset name"),
    ({"out_dataset": "c", "role": "Bad Role"}, "response role"),
])
def test_backtranslate_params_name_the_bad_value(values, match):
    with pytest.raises(ValueError, match=match):
        bt.BacktranslateParams(model="backward", **values)


def test_default_sampling_is_the_papers():
    g = bt.BacktranslateParams(model="m", out_dataset="c").generation()
    assert (g.temperature, g.top_p) == (0.7, 0.9)


# --------------------------------------------------------------------------------------------
# The stage, curation and the curated snapshot, through real jobs
# --------------------------------------------------------------------------------------------


def test_backward_data_reverses_every_seed_pair_and_snapshots(ws):
    out = bt.write_backward_data(ws, ["seed"], "seed", "seed-backward")
    assert out["pairs"] == 10 and out["new"] == 10
    assert bt.write_backward_data(ws, ["seed"], "seed", "seed-backward")["new"] == 0  # idempotent
    snap = curate.create_snapshot(ws, {"kind": "sft", "datasets": ["seed-backward"], "roles": ["backward"]}, "bw")
    rows = pq.read_table(snap.parquet_path).to_pylist()
    seeds = {p["response"]: p["instruction"] for p in ws.store.seed_pairs(["seed"], "seed")}
    assert len(rows) == 10 and all(seeds[r["instruction"]] == r["response"] for r in rows)


def candidate_samples(ws, dataset: str) -> list[dict]:
    """Each instruction of a dataset with its responses (Workspace.sample), oldest first."""
    page = ws.explore_page(ExploreFilter(datasets=[dataset]), page_size=100)
    return [ws.sample(i) for i in page["id"].tolist()]


def test_backtranslate_writes_candidates_with_lineage_and_counts_its_drops(ws):
    job_id = backtranslate(ws)
    docs = {d["id"]: d for d in ws.store.documents_to_backtranslate(["corpus"], "none", None, 100)}
    assert len(docs) == 7
    samples = candidate_samples(ws, "cands")
    assert len(samples) == 5  # 7 documents: the empty output and the loop are dropped
    for s in samples:
        row = s["instruction"]
        doc = docs[row["parent_id"]]
        assert (row["model"], row["round"], row["method"]) == ("backward", 1, "backtranslate")
        assert row["text"].startswith("Explain this: ")  # the "Instruction:" label is parsed off
        assert row["text"].endswith(" ".join(doc["text"].split()[:6]))
        assert [(a["role"], a["text"], a["parent_id"]) for a in s["responses"]] == [
            (bt.CANDIDATE_ROLE, doc["text"], doc["id"])]
        meta = row["meta"] if isinstance(row["meta"], dict) else json.loads(row["meta"])
        assert meta["params"]["temperature"] == 0.7 and meta["document_id"] == doc["id"]
    assert bt.drop_counts(ws.job_dir(job_id)) == {"empty": 1, "repetitive": 1}
    assert "dropped 1 empty, 1 repetitive" in (ws.job_dir(job_id) / jobs.LOG).read_text()
    # Another job does only the documents without a candidate yet: the two dropped ones.
    again = ws.create_job("backtranslate", {"model": "backward", "out_dataset": "cands"}, CORPUS)
    assert pq.read_table(ws.job_dir(again) / jobs.INPUT).num_rows == 2


@pytest.mark.slow
def test_keep_copies_the_candidates_at_or_above_k_and_the_snapshot_tags_each_source(ws):
    backtranslate(ws)
    curate_with(ws)
    out = bt.keep_candidates(ws, ["cands"], "curator", "pointwise_5", None, 4.5, "kept-r1", 1)
    assert (out["candidates"], out["judged"], out["kept"]) == (5, 5, 3)  # the three bicycle passages
    assert out["mean_score"] == pytest.approx((3 * 5 + 2 * 2) / 5)
    assert bt.keep_candidates(ws, ["cands"], "curator", "pointwise_5", None, 4.5, "kept-r1", 1)["kept"] == 3
    kept = candidate_samples(ws, "kept-r1")
    scored = {c["instruction_id"]: c for c in ws.store.kept_candidates(["cands"], bt.CANDIDATE_ROLE, "curator",
                                                                       "pointwise_5", None, 4.5)}
    assert len(kept) == 3
    for s in kept:  # a copy of a kept candidate: parent_id is the candidate, the answer its document
        parent = scored[s["instruction"]["parent_id"]]
        assert s["instruction"]["text"] == parent["instruction"]
        assert [r["text"] for r in s["responses"]] == [parent["response"]] and parent["score"] == 5.0

    h, _ = parse_section({"corpus": ["corpus"], "tags": {"seed": "AI style.", "augmented": "Web style."}})
    snap = curate.create_snapshot(ws, _training_spec(["seed"], h, kept="kept-r1"), "curated")
    assert snap.n_members == 13
    # The curated snapshot exports in TRL's messages format: the tag is the system message.
    records = curate.snapshot_records(ws, "curated", "messages")
    assert len(records) == 13
    systems = sorted({r["messages"][0]["content"] for r in records if r["messages"][0]["role"] == "system"})
    assert systems == ["AI style.", "Web style."]
    assert all(r["messages"][-1]["role"] == "assistant" for r in records)


@pytest.mark.slow
def test_views_count_at_k_and_calibrate_the_curator_against_labels(ws):
    backtranslate(ws)
    curate_with(ws)
    (found,) = views.curators(ws, "cands")
    assert (found.model, found.n) == ("curator", 5)
    assert views.counts_at(ws, "cands", found, 4.5)["kept"] == 3
    assert views.counts_at(ws, "cands", found, 1.5)["kept"] == 5
    assert views.calibration_at(ws, "cands", found, 4.5).n_labels == 0
    page = views.page_of(ws, "cands", found, page_size=10)
    assert [r["score"] for r in page] == [5.0, 5.0, 5.0, 2.0, 2.0] and all(r["title"] for r in page)
    # Label two kept ones accept and reject, one dropped accept: precision 1/2, recall 1/2.
    views.label(ws, page[0]["response_id"], "accept")
    views.label(ws, page[1]["response_id"], "reject")
    views.label(ws, page[3]["response_id"], "accept")
    cal = views.calibration_at(ws, "cands", found, 4.5)
    assert (cal.n_labels, cal.precision.k, cal.precision.n, cal.recall.k, cal.recall.n) == (3, 1, 2, 1, 2)
    assert 0 < cal.precision.low < 0.5 < cal.precision.high < 1
    assert views.calibration_lines(cal)["precision"].startswith("0.50 [")
    assert views.page_of(ws, "cands", found, page_size=10)[0]["decision"] == "accept"
    with pytest.raises(ValueError, match="accepted or rejected"):
        views.label(ws, page[0]["response_id"], "tie")


@pytest.mark.slow
def test_backtranslate_with_tiny_random_runs_and_accounts_for_every_document(ws):
    job_id = ws.create_job("backtranslate", {"model": "tiny-random", "out_dataset": "noise", "max_tokens": 16},
                           CORPUS, round=1)
    run_job(ws, job_id)
    shards = [pq.read_table(p) for p in jobs.finished_shards(ws.job_dir(job_id))]
    outputs = [o for s in shards for o in s.column("output").to_pylist()]
    kept = len(candidate_samples(ws, "noise"))
    assert outputs.count("instructions") == 7  # one generated instruction per document, kept or dropped
    assert kept + sum(bt.drop_counts(ws.job_dir(job_id)).values()) == 7


def test_the_page_defaults_k_to_the_run_that_made_the_candidates():
    rounds = [{"round": "hb/1", "k": 3.0}, {"round": "hb/2", "k": 3.5}, {"round": "other/1", "k": 4.5}]
    assert views.run_k(rounds, "hb-candidates") == 3.5
    assert views.run_k(rounds, "cands") is None
