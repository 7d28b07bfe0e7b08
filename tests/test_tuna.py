"""Tuna as a closed loop (core.methods.tuna, core.ranking): the recipe section, contextual ranking
from listwise verdicts (literal strings for every failure path; a real listwise judge job whose
shuffled order is recorded), ranking sets, the TRL preference export, and rounds end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SMALL_PAIRS, write_jsonl

from core import jobs, judge, rounds
from core.methods import tuna
from core.ranking import (
    INCOMPLETE,
    MIXED,
    contextual_rankings,
    export_preferences,
    export_rankings,
    freeze_ranking_set,
    preference_pairs,
    rank_contextual,
    ranking_set,
    read_ranking_set,
)
from core.recipes import RecipeError, load_recipe
from core.selection import ExploreFilter
from core.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
PY_MODULES = ["core.methods.tuna"]

# -- the recipe section -------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "message"), [
    ({"n": 1}, "tuna.n: expected an integer ≥ 2, not 1"),
    ({"n": "four"}, "tuna.n: expected an integer ≥ 2, not 'four'"),
    ({"temperature": 0}, "tuna.temperature: expected a number > 0 and ≤ 5, not 0"),
    ({"margin": -0.1}, "tuna.margin: expected a number ≥ 0, not -0.1"),
    ({"lr_p": 2}, "tuna.lr_p: expected a number > 0 and ≤ 1, not 2"),
    ({"lr_c": "small"}, "tuna.lr_c: expected a number > 0 and ≤ 1, not 'small'"),
    ({"contextual": "yes"}, "tuna.contextual: expected true or false, not 'yes'"),
    ({"judge": ""}, "tuna.judge: expected a model name (or null: models.judge), not ''"),
    ({"judge_max_tokens": 0}, "tuna.judge_max_tokens: expected an integer ≥ 1, not 0"),
    ({"lambda": 0.1}, "tuna: unknown key(s) lambda"),
])
def test_a_bad_tuna_value_names_its_key_and_value(section, message):
    base = {"name": "t", "method": "tuna", "models": {"teacher": "a", "judge": "b", "student": "c"},
            "data": {"pool": ["p"], "heldout": "h"}}
    with pytest.raises(RecipeError) as err:
        load_recipe(base | {"tuna": section})
    assert message in str(err.value)


def test_the_tuna_section_defaults_follow_the_paper():
    params, models = tuna.parse_section({})
    assert params | {} == {"n": 4, "temperature": 0.7, "top_p": 1.0, "margin": 0.1, "nll_weight": 1.0,
                           "lr_p": 1e-5, "lr_c": 1e-6, "contextual": True, "judge": None, "judge_max_tokens": 256}
    assert models == {}
    assert tuna.parse_section({"judge": "big"})[1] == {"tuna.judge": "big"}
    for path in ("recipes/tuna-tiny.yaml", "recipes/tuna.yaml"):
        recipe = load_recipe(REPO / path)
        assert recipe.method == "tuna" and recipe.params["n"] >= 3
    assert tuna.contextual_role("tuna-tiny", 2) == "c2_tuna_tiny"
    assert len(tuna.contextual_role("x" * 60, 12)) <= 32


# -- contextual ranking from listwise verdicts, as literal strings ------------------------------

IDS = ["ra", "rb", "rc"]
PERMUTATION = [2, 0, 1]  # shown as Answer 1 = rc, Answer 2 = ra, Answer 3 = rb


def verdict_rows(raw: str, permutation=PERMUTATION, ids=IDS, seq: int = 0, call_error=None, model="m") -> list[dict]:
    """The rows the judge stage stores for one listwise verdict, as the store reads them back."""
    rows = judge.listwise_rows("judge", ids, permutation, raw, template_hash="th", round=1, call_error=call_error)
    return [{"list": json.loads(r["params"])["list"], "response_id": r["target_id"], "instruction_id": "i1",
             "role": "c1", "model": model, "response_round": 1, "score": r["score"], "raw": r["raw"],
             "parse_error": r["parse_error"], "call_error": r["call_error"], "template_hash": r["template_hash"],
             "params": r["params"], "seq": seq + j} for j, r in enumerate(rows)]


def test_a_valid_verdict_is_mapped_back_through_the_shuffle():
    got = contextual_rankings(verdict_rows("Answer 2 is clearest.\nRanking: 2 > 3 > 1"), "c1", "m", 1)
    assert got["skipped"] == {}
    [ranking] = got["rankings"]
    # shown 2 = ra, shown 3 = rb, shown 1 = rc
    assert ranking["response_ids"] == ["ra", "rb", "rc"] and ranking["scores"] == [1, 2, 3]
    assert ranking["shown"] == ["rc", "ra", "rb"] and ranking["parse_error"] is None and ranking["k"] == 3
    assert ranking["raw"].endswith("2 > 3 > 1") and ranking["template_hash"] == "th"


@pytest.mark.parametrize(("raw", "error"), [
    ("I think the first one is best.", "no_score"),         # no ranking line at all
    ("Ranking: 2 > 1", "not_permutation"),                   # wrong k
    ("Ranking: 2 > 2 > 1", "not_permutation"),               # a repeated answer
    ("Ranking: 1 > 2 > 4", "not_permutation"),               # a number outside 1..k
    ("", "empty"),                                           # nothing at all
])
def test_an_invalid_verdict_is_a_null_ranking_with_its_raw_text(raw, error):
    [ranking] = contextual_rankings(verdict_rows(raw), "c1", "m", 1)["rankings"]
    assert ranking["response_ids"] is None and ranking["scores"] is None
    assert ranking["raw"] == raw and ranking["parse_error"].startswith(error), ranking["parse_error"]
    assert ranking["shown"] == ["rc", "ra", "rb"]


def test_call_errors_mixed_lists_and_the_newest_verdict():
    [failed] = contextual_rankings(verdict_rows("", call_error="too_long: prompt"), "c1", "m", 1)["rankings"]
    assert failed["response_ids"] is None and failed["parse_error"] == "call error: too_long: prompt"
    mixed = verdict_rows("Ranking: 1 > 2 > 3")
    mixed[0]["model"] = "someone-else"
    assert contextual_rankings(mixed, "c1", "m", 1) == {"rankings": [], "skipped": {MIXED: 1}}
    # two verdicts on one list: the newer one counts, whichever parsed
    old, new = verdict_rows("Ranking: 1 > 2 > 3", seq=0), verdict_rows("no idea", seq=10)
    [ranking] = contextual_rankings(old + new, "c1", "m", 1)["rankings"]
    assert ranking["raw"] == "no idea" and ranking["response_ids"] is None
    [ranking] = contextual_rankings(new + verdict_rows("Ranking: 1 > 2 > 3", seq=20), "c1", "m", 1)["rankings"]
    assert ranking["response_ids"] == ["rc", "ra", "rb"]
    partial = verdict_rows("Ranking: 1 > 2 > 3")[:2]
    [ranking] = contextual_rankings(partial, "c1", "m", 1)["rankings"]
    assert ranking["response_ids"] is None and ranking["parse_error"].startswith(INCOMPLETE)


def test_preference_pairs_in_trl_conversational_format():
    record = {"messages": [{"role": "user", "content": "Q?"}], "responses": ["best", "mid", "worst"]}
    adjacent = preference_pairs([record])
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in adjacent] == [
        ("best", "mid"), ("mid", "worst")]
    assert adjacent[0] == {"prompt": [{"role": "user", "content": "Q?"}],
                           "chosen": [{"role": "assistant", "content": "best"}],
                           "rejected": [{"role": "assistant", "content": "mid"}]}
    every = preference_pairs([record], "all")
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in every] == [
        ("best", "mid"), ("best", "worst"), ("mid", "worst")]
    with pytest.raises(ValueError, match="pairs must be one of adjacent, all, not 'some'"):
        preference_pairs([record], "some")


def test_the_python_length_judge_writes_a_ranking_the_parser_reads():
    conversation, permutation = judge.build_listwise_request("Say it.", ["a much longer answer here", "short", "mid one"],
                                                             rng=3)
    raw = tuna.length_ranking_judge(conversation)
    verdict = judge.get_rubric("listwise").parse(raw, 3)
    assert verdict.ok
    assert judge.unshuffle_ranking(verdict.ranking, permutation) == [1, 2, 0]  # shortest first


# -- a real listwise judge job: the shown order is shuffled and recorded ------------------------


def python_models(ws) -> None:
    ws.add_model({"name": "sampler", "backend": "python", "path": "core.methods.tuna:sampled_answer",
                  "extra": {"modules": PY_MODULES}})
    ws.add_model({"name": "length-judge", "backend": "python", "path": "core.methods.tuna:length_ranking_judge",
                  "extra": {"modules": PY_MODULES, "role": "generator"}})


def run_and_ingest(ws, stage: str, params: dict, **kw) -> str:
    job_id = ws.create_job(stage, params, **kw)
    assert jobs.run(ws.job_dir(job_id)) == 0, ws.job_log(job_id)
    ws.ingest_job(job_id)
    return job_id


def test_contextual_ranking_from_a_real_listwise_judge_job(tmp_path):
    ws = Workspace(tmp_path / "ws")
    try:
        ws.import_paths([write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)], "small")
        python_models(ws)
        run_and_ingest(ws, "generate", {"model": "sampler", "role": "c1", "n": 4, "temperature": 1.0,
                                        "max_tokens": 200, "seed": 1}, round=1)
        run_and_ingest(ws, "judge", {"model": "length-judge", "rubric": "listwise", "roles": ["c1"],
                                     "mode": "generate", "seed": 1}, round=1)
        summary = rank_contextual(ws, "length-judge", "c1", "sampler", round=1)
        assert summary.ranked == len(SMALL_PAIRS) and summary.invalid == 0 and summary.new == summary.ranked
        texts = dict(ws.store._rows("SELECT id, text FROM responses"))
        rows = ws.store._dicts("SELECT * FROM rankings WHERE method = 'contextual'")
        assert len(rows) == summary.ranked
        shuffled = 0
        for row in rows:
            ids, params = json.loads(row["response_ids"]), json.loads(row["params"])
            assert json.loads(row["scores"]) == list(range(1, len(ids) + 1)) and row["judge"] == "length-judge"
            lengths = [len(texts[i]) for i in ids]
            assert lengths == sorted(lengths)  # the judge's rule: shorter first
            assert sorted(params["shown"]) == sorted(ids) and "Ranking:" in row["raw"]
            # the order the judge saw, read back from its prompt's answers as stored per judgment
            stored = ws.store._dicts("SELECT target_id, params FROM judgments WHERE kind = 'listwise' "
                                     "AND params->>'$.list' = ?", [params["list"]])
            by_place = sorted(stored, key=lambda j: json.loads(j["params"])["shown_as"])
            assert params["shown"] == [j["target_id"] for j in by_place]
            original = ws.store._rows("SELECT id FROM responses WHERE instruction_id = ? AND role = 'c1' ORDER BY rowid",
                                      [row["instruction_id"]])
            shuffled += params["shown"] != [r[0] for r in original]
        assert shuffled >= 2, "the judge saw every list in its stored order: not shuffled"
        assert rank_contextual(ws, "length-judge", "c1", "sampler", round=1).new == 0  # idempotent

        made = freeze_ranking_set(ws, "ctx", "contextual", role="c1", model="sampler", judge="length-judge", round=1)
        assert made["n_groups"] == summary.ranked and Path(made["parquet_path"]).parent == ws.root / "rankings"
        groups = read_ranking_set(made["parquet_path"])
        assert all([len(a) for a in g.responses] == sorted(len(a) for a in g.responses) for g in groups)
        out = export_preferences(ws, tmp_path / "prefs.jsonl", "contextual", "all", role="c1")
        lines = [json.loads(x) for x in (tmp_path / "prefs.jsonl").read_text().splitlines()]
        assert out["n"] == len(lines) == sum(len(g.responses) * (len(g.responses) - 1) // 2 for g in groups)
        assert all(len(x["chosen"][0]["content"]) <= len(x["rejected"][0]["content"]) for x in lines)
        assert set(lines[0]) == {"prompt", "chosen", "rejected"} and lines[0]["prompt"][-1]["role"] == "user"
        adjacent = export_preferences(ws, tmp_path / "adj.jsonl", "contextual", role="c1")
        assert adjacent["n"] == sum(len(g.responses) - 1 for g in groups)
        assert export_rankings(ws, tmp_path / "r.jsonl", "contextual")["n"] == summary.ranked
    finally:
        ws.close()


def test_ranking_sets_are_immutable(tmp_path):
    ws = Workspace(tmp_path / "ws")
    try:
        ws.import_paths([write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)], "small")
        python_models(ws)
        run_and_ingest(ws, "generate", {"model": "sampler", "role": "c1", "n": 3, "temperature": 1.0,
                                        "max_tokens": 200, "seed": 2}, round=1, limit=3)
        run_and_ingest(ws, "judge", {"model": "length-judge", "rubric": "listwise", "roles": ["c1"]}, round=1)
        rank_contextual(ws, "length-judge", "c1", "sampler", round=1)
        with pytest.raises(ValueError, match="no valid contextual ranking of role 'c2'"):
            freeze_ranking_set(ws, "empty", "contextual", role="c2")
        with pytest.raises(ValueError, match="a ranking set name is"):
            freeze_ranking_set(ws, "../escape", "contextual")
        first = freeze_ranking_set(ws, "set", "contextual", role="c1")
        assert freeze_ranking_set(ws, "set", "contextual", role="c1") == first  # the same content: the same set
        small = ExploreFilter(ids=[ws.store._rows("SELECT id FROM instructions ORDER BY rowid LIMIT 1")[0][0]])
        with pytest.raises(ValueError, match="exists already with other content"):
            freeze_ranking_set(ws, "set", "contextual", role="c1", selection=small)
        assert ranking_set(ws, "set")["content_hash"] == first["content_hash"]
        with pytest.raises(ValueError, match="no ranking set named 'nope'"):
            ranking_set(ws, "nope")
    finally:
        ws.close()


# -- rounds end to end --------------------------------------------------------------------------

HELDOUT = [{"instruction": "Name a month with 30 days.", "input": ""},
           {"instruction": "What is the opposite of hot?", "input": ""},
           {"instruction": "Give one word that rhymes with cat.", "input": ""}]


def python_judge_recipe(tmp_path: Path, **section) -> dict:
    """Tuna over tiny-random as teacher and student (it gives log-probs) with python judges that
    always rank (length_ranking_judge) and score (length_judge): the c path runs for real."""
    pool = write_jsonl(tmp_path / "pool.jsonl", SMALL_PAIRS)
    heldout = write_jsonl(tmp_path / "heldout.jsonl", HELDOUT)
    return {
        "name": "tuna-py", "method": "tuna", "rounds": 2,
        "models": {"teacher": "tiny-random", "judge": "length-judge", "student": "tiny-random"},
        "register": [
            {"name": "length-judge", "backend": "python", "path": "core.methods.tuna:length_ranking_judge",
             "extra": {"modules": PY_MODULES, "role": "generator"}},
            {"name": "length-scorer", "backend": "python", "path": "core.methods.tuna:length_judge",
             "extra": {"modules": PY_MODULES, "role": "judge"}},
        ],
        "data": {"pool": ["pool"], "heldout": "heldout", "files": {"pool": str(pool), "heldout": str(heldout)}},
        "generate": {"max_tokens": 10, "seed": 0},
        "tuna": {"n": 3, "temperature": 1.0, "lr_p": 3e-3, "lr_c": 1e-3, "judge_max_tokens": 200} | section,
        "train": {"method": "full", "max_steps": 6, "batch_size": 3, "max_seq_len": 96, "logging_steps": 1,
                  "dtype": "float32"},
        "evaluate": {"judge": "length-scorer", "rubric": "pairwise", "max_tokens": 8},
        "shard_size": 16, "threads": 2,
    }


def assert_round_lineage(ws, run: str, rounds_done: list[dict]) -> None:
    assert [r["number"] for r in rounds_done] == [1, 2]
    assert rounds_done[1]["student"] == rounds_done[0]["model"]  # round 2 starts from round 1's model
    for row in rounds_done:
        m = row["metrics"]
        assert row["model"] and ws.model(row["model"]).backend == "hf"
        assert m["groups_p"] >= 1 and m["probabilistic"]["ranked"] == m["groups_p"]
        assert ranking_set(ws, f"{run}-r{row['number']}-p")["n_groups"] == m["groups_p"]
        assert m["losses_p"]["steps"] == 6 and m["losses_p"]["first_rank_loss"] is not None
        assert m["evaluation"]["n_prompts"] >= 1
        lineage = ws.model_lineage(m["model_p"])
        assert lineage["objective"]["kind"] == "ranking" and lineage["base_model"] == row["student"]


@pytest.mark.slow  # two rounds, ~14 jobs on tiny-random and python models: ~1–2 min on the shared CPU
def test_two_tuna_rounds_with_a_judge_that_ranks(tmp_path):
    ws = Workspace(tmp_path / "ws")
    try:
        rounds.start_run(ws, python_judge_recipe(tmp_path))
        status = rounds.drive(ws, "tuna-py", timeout=900)
        assert status["status"] == "done", status
        done = ws.store.rounds("tuna-py")
        assert_round_lineage(ws, "tuna-py", done)
        for row in done:
            n, m = row["number"], row["metrics"]
            c = m["contextual"]
            assert c["skipped"] is None and c["valid"] == c["lists"] == len(SMALL_PAIRS) and c["invalid"] == 0
            assert row["model"] == f"tuna-py-r{n}" and m["model_p"] == f"tuna-py-r{n}-p"
            assert ranking_set(ws, f"tuna-py-r{n}-c")["n_groups"] == m["groups_c"] == c["valid"]
            lineage = ws.model_lineage(row["model"])  # Tuna-c is trained from Tuna-p, on the c set
            assert lineage["base_model"] == m["model_p"] and lineage["snapshot"] == f"tuna-py-r{n}-c"
            assert m["losses_c"]["steps"] == 6
            assert c["role"] == f"c{n}_tuna_py"
        methods = dict(ws.store._rows("SELECT method, count(*) FROM rankings GROUP BY method"))
        assert methods["probabilistic"] >= 1 and methods["contextual"] == 2 * len(SMALL_PAIRS)
    finally:
        ws.close()


@pytest.mark.slow  # SmolLM2-135M teaches and judges, tiny-random learns: ~2–5 min on the shared CPU
def test_two_rounds_of_tuna_tiny_end_to_end(tmp_path):
    ws = Workspace(tmp_path / "ws")
    try:
        rounds.start_run(ws, REPO / "recipes" / "tuna-tiny.yaml")
        status = rounds.drive(ws, "tuna-tiny", timeout=3000)
        assert status["status"] == "done", status
        done = ws.store.rounds("tuna-tiny")
        assert_round_lineage(ws, "tuna-tiny", done)
        methods = dict(ws.store._rows("SELECT method, count(*) FROM rankings GROUP BY method"))
        assert methods["probabilistic"] >= 1
        for row in done:
            c = row["metrics"]["contextual"]
            # a 135M judge rarely writes a valid ranking: then the reason is recorded, else c trained
            if c["valid"]:
                assert c["skipped"] is None and row["model"] == f"tuna-tiny-r{row['number']}"
                assert ranking_set(ws, f"tuna-tiny-r{row['number']}-c")["n_groups"] == c["valid"]
            else:
                assert c["skipped"].startswith(("no valid contextual ranking", "no prompt has two distinct"))
                assert row["model"] == row["metrics"]["model_p"]
            if c.get("lists"):
                assert methods.get("contextual", 0) >= 1  # valid or not, each verdict is a row
    finally:
        ws.close()


@pytest.mark.slow  # one round, ~7 jobs on tiny-random and python models: ~1–4 min on the shared CPU
def test_a_judge_without_a_valid_ranking_skips_tuna_c_with_the_reason(tmp_path):
    recipe = python_judge_recipe(tmp_path) | {"name": "tuna-babble", "rounds": 1,
                                              "models": {"teacher": "tiny-random", "judge": "babbler",
                                                         "student": "tiny-random"}}
    recipe["register"] = recipe["register"] + [{"name": "babbler", "backend": "python",
                                                "path": "core.methods.tuna:sampled_answer",
                                                "extra": {"modules": PY_MODULES}}]
    ws = Workspace(tmp_path / "ws")
    try:
        rounds.start_run(ws, recipe)
        assert rounds.drive(ws, "tuna-babble", timeout=1800)["status"] == "done"
        [row] = ws.store.rounds("tuna-babble")
        c = row["metrics"]["contextual"]
        assert c["valid"] == 0 and c["invalid"] == c["lists"] == len(SMALL_PAIRS)
        assert c["skipped"] == (f"no valid contextual ranking: all {len(SMALL_PAIRS)} verdicts of babbler were "
                                f"invalid ({len(SMALL_PAIRS)} no_score)")
        # Tuna-p is the round's model; no c set, no c training job; every invalid verdict is kept
        assert row["model"] == row["metrics"]["model_p"] == "tuna-babble-r1-p"
        assert row["metrics"]["ranking_sets"] == ["tuna-babble-r1-p"] and row["metrics"]["losses_c"] is None
        assert not any(j["kind"] == "train" and j["model"] == "tuna-babble-r1" for j in ws.jobs())
        kept = ws.store._rows("SELECT count(*), count(response_ids), count(raw) FROM rankings "
                              "WHERE method = 'contextual'")[0]
        assert kept == (len(SMALL_PAIRS), 0, len(SMALL_PAIRS))
        assert row["metrics"]["evaluation"]["model_a"] == "tuna-babble-r1-p"
    finally:
        ws.close()
