"""Issue 12: a judge no better than chance on the user's own labels is flagged wherever its scores
show. Real workspaces on disk: responses imported, judgments recorded, labels stored with
Workspace.review; the Judgments page under AppTest; the CLI in process (its owner dispatch too)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from conftest import open_page, write_jsonl
from streamlit.testing.v1 import AppTest

from core import cli, owner
from core import judge as judge_mod
from core.review_queue import QueueSource
from core.workspace import ExploreFilter, Workspace

N_RESPONSES, N_LABELED = 30, 24
COIN, GOOD, RUBRIC = "coin-m", "good-m", "pointwise_5"
SLIDER = f"judgments_threshold_{COIN}_{RUBRIC}"


def accepted(k: int) -> bool:
    """The human label of response k: blocks of three accepts, then three rejects."""
    return (k // 3) % 2 == 0


def coin_score(k: int) -> float:
    """A score that ignores the answer: 1–5 by position, unrelated to the label (AUC ≈ 0.57)."""
    return float((k * 11) % 5 + 1)


def good_score(k: int) -> float:
    """A score that follows the label, wrong on two of the labeled responses."""
    return float(5 if accepted(k) != (k in (4, 9)) else 2)


def judged_ws(ws: Workspace, tmp_path) -> list[str]:
    records = [{"instruction": f"Question {k}: what is {k} + {k}?", "input": "", "output": f"{2 * k}."}
               for k in range(N_RESPONSES)]
    ws.import_paths([write_jsonl(tmp_path / "qa.jsonl", records)], "qa")
    ids = ws.explore_page(ExploreFilter(), page_size=N_RESPONSES, order="oldest")["id"].tolist()
    by_text = {ws.sample(i)["responses"][0]["text"]: ws.sample(i)["responses"][0]["id"] for i in ids}
    rids = [by_text[f"{2 * k}."] for k in range(N_RESPONSES)]
    for model, score in ((COIN, coin_score), (GOOD, good_score)):
        raws = [f"Score: {score(k):g}" for k in range(N_RESPONSES)]
        assert ws.record_judgments(judge_mod.judgment_rows(RUBRIC, model, rids, raws)) == N_RESPONSES
    for k in range(N_LABELED):
        ws.review(rids[k], "accept" if accepted(k) else "reject", reviewer="ana")
    return rids


@pytest.fixture
def trust_ws(workspace, tmp_path) -> Workspace:
    judged_ws(workspace, tmp_path)
    return workspace


def test_workspace_flags_the_coin_judge_and_trusts_the_good_one(trust_ws):
    coin = trust_ws.judge_trust(COIN, RUBRIC)
    assert coin.n_labels == N_LABELED and (coin.n_accept, coin.n_reject) == (12, 12)
    assert coin.status == "at_chance" and coin.flagged and coin.more_labels > 0 and not coin.more_labels_capped
    assert coin.auc.low <= 0.5 <= coin.auc.high
    assert coin.sentence() == (f"At chance on your 24 labels: AUC {coin.auc.value:.2f} [{coin.auc.low:.2f}, "
                               f"{coin.auc.high:.2f}] includes 0.5 — about {coin.more_labels} more labels would "
                               "settle it.")
    good = trust_ws.judge_trust(GOOD, RUBRIC)
    assert good.status == "better" and not good.flagged and good.more_labels is None and good.auc.low > 0.5
    # Threshold-free: the calibration at any threshold carries the same AUC.
    assert trust_ws.calibration(COIN, RUBRIC, 3.0).auc.value == pytest.approx(coin.auc.value)
    listed = {(j["judge_model"], j["rubric"]): j["trust"].status for j in trust_ws.judge_trusts()}
    assert listed == {(COIN, RUBRIC): "at_chance", (GOOD, RUBRIC): "better"}
    # The owner's dispatch (what a CLI command handed to the app runs) returns valid JSON.
    handed = json.loads(json.dumps(owner.execute(trust_ws, "judges", {}), allow_nan=False))
    assert {j["judge_model"]: j["trust"]["status"] for j in handed["judges"]} == {COIN: "at_chance", GOOD: "better"}


def test_a_tie_on_a_pair_is_not_a_label_and_breaks_nothing(workspace, tmp_path):
    pairs = [{"prompt": f"Say {w}.", "chosen": f"{w.title()}!", "rejected": "No."} for w in ("hi", "bye", "yes")]
    workspace.import_paths([write_jsonl(tmp_path / "prefs.jsonl", pairs)], "prefs")
    pair_ids = [r["id"] for r in workspace.store._dicts("SELECT id FROM preference_pairs ORDER BY id")]
    rows = []
    for pid, score in zip(pair_ids, (1.0, 0.0, 1.0), strict=True):
        row = {"target_kind": "pair", "target_id": pid, "judge_model": "pj", "rubric": "pairwise",
               "kind": "pairwise", "score": score, "scale_max": 1, "raw": "Winner: A", "parse_error": None,
               "rationale": None, "round": 0, "template_hash": "t", "params": "{}", "mode": "generate",
               "call_error": None}
        rows.append(row | {"id": judge_mod.judgment_id(row)})
    workspace.record_judgments(rows)
    workspace.review(pair_ids[0], "tie")
    workspace.review(pair_ids[1], "accept")
    evidence = workspace.judge_evidence("pj", "pairwise")
    assert evidence.target_ids == [pair_ids[1]] and evidence.labels == [1]
    assert workspace.judge_trust("pj", "pairwise").status == "unknown"


def test_cli_judges_and_the_judge_report_print_the_trust_sentence(trust_ws, capsys):
    coin = trust_ws.judge_trust(COIN, RUBRIC)
    good = trust_ws.judge_trust(GOOD, RUBRIC)
    root = trust_ws.root
    assert cli.main(["judges", "-w", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{COIN} · {RUBRIC} (pointwise, 30 judgments)\n  WARNING: {coin.sentence()}" in out
    assert f"{GOOD} · {RUBRIC}" in out and f"  {good.sentence()}" in out and f"WARNING: {good.sentence()}" not in out
    assert cli.main(["judges", "--json", "-w", str(root)]) == 0
    data = json.loads(capsys.readouterr().out)
    by_model = {j["judge_model"]: j["trust"] for j in data["judges"]}
    assert by_model[COIN]["at_chance"] is True and by_model[COIN]["more_labels"] == coin.more_labels
    assert by_model[GOOD]["status"] == "better" and by_model[GOOD]["auc"]["low"] > 0.5
    # What `winnow judge` prints once its job is in.
    cli._judge_report(root, argparse.Namespace(model=COIN, rubric=RUBRIC))
    report = capsys.readouterr().out
    assert report.startswith(f"{COIN} on {RUBRIC}: 30 judgments") and f"WARNING: {coin.sentence()}" in report


# --------------------------------------------------------------------------------------------
# The Judgments page
# --------------------------------------------------------------------------------------------


def plain(text: str) -> str:
    """A message as the page wrote it (ui.md_escape), back to plain text."""
    return text.replace("\\", "").replace("  \n", "\n")


def review_links(at: AppTest) -> list:
    return [link for link in at.get("page_link") if link.proto.page == "Review"]


def queue_source(link) -> QueueSource:
    return QueueSource.from_query({k: v[0] for k, v in parse_qs(link.proto.query_string).items()})


def test_judgments_page_flags_the_coin_judge_and_links_its_queue(app_ws, tmp_path):
    judged_ws(app_ws, tmp_path)
    coin = app_ws.judge_trust(COIN, RUBRIC)
    at = open_page("6_Judgments.py")
    at.selectbox(key="judgments_model").set_value(COIN).run()
    assert not at.exception, at.exception
    warnings = [plain(w.value) for w in at.warning]
    assert coin.sentence() in warnings, warnings
    assert not any("Better than chance" in s.value for s in at.success)
    # The AUC with its interval is in the metrics table too.
    metrics = next(df.value for df in at.dataframe if "95% interval" in df.value.columns).set_index("metric")
    auc_row = next(m for m in metrics.index if m.startswith("ROC AUC"))
    assert metrics.loc[auc_row, "95% interval"].startswith(f"[{coin.auc.low:.2f}, {coin.auc.high:.2f}]")
    assert metrics.loc[auc_row, "k / n"] == "12 accept / 12 reject"

    # Right under the threshold sentence: a link into the review queue of the judge's suggestions.
    for threshold in (at.slider(key=SLIDER).value, 3.0):
        at.slider(key=SLIDER).set_value(threshold).run()
        assert not at.exception, at.exception
        [link] = review_links(at)
        assert link.proto.label == f"Label the {N_RESPONSES - N_LABELED} samples that narrow this interval most"
        source = queue_source(link)
        assert (source.kind, source.judge_model, source.rubric, source.threshold) == ("judge", COIN, RUBRIC, threshold)

    # The good judge: no warning, a success line with its AUC.
    at.selectbox(key="judgments_model").set_value(GOOD).run()
    assert not at.exception, at.exception
    good = app_ws.judge_trust(GOOD, RUBRIC)
    assert [plain(s.value) for s in at.success] == [good.sentence()]
    assert not [w for w in at.warning if "chance" in w.value]


def test_judgments_page_says_when_trust_is_not_yet_known_and_shows_rubrics_in_full(app_ws, tmp_path):
    rids = judged_ws(app_ws, tmp_path)[:2]
    text = ("Helpfulness score: 4\nHonesty score: 5\nInstruction following score: 3\nTruthfulness score: 4")
    app_ws.record_judgments(judge_mod.judgment_rows("zephyr_aspects", "aspect-m", rids, [text, text]))
    at = open_page("6_Judgments.py")
    at.selectbox(key="judgments_model").set_value("aspect-m").run()
    radio = at.radio(key="judgments_rubric")
    assert "zephyr_aspects.instruction_following" in radio.options  # a radio cuts no name short
    radio.set_value("zephyr_aspects.instruction_following").run()
    assert not at.exception, at.exception
    infos = [plain(i.value) for i in at.info]
    assert any(i.startswith("Not yet known whether this judge beats chance: 2 labels") for i in infos), infos
    captions = [plain(c.value) for c in at.caption]
    assert any("aspect-m · zephyr_aspects.instruction_following: UltraFeedback" in c for c in captions), captions
    assert not at.warning


def test_judgments_page_without_judgments_links_to_the_judge_tab(app_ws):
    at = open_page("6_Judgments.py")
    [link] = [link for link in at.get("page_link") if link.proto.label == "Start a judge job"]
    assert parse_qs(link.proto.query_string) == {"stage": ["judge"]} and link.proto.page == "Jobs"


# --------------------------------------------------------------------------------------------
# The finding, measured: the built-in 135M judge on code answered right or wrong
# --------------------------------------------------------------------------------------------

CODE_PROMPTS = Path(__file__).parent / "data" / "code_prompts.jsonl"


@pytest.mark.slow
def test_smollm2_on_code_prompts_gets_the_flag_its_auc_interval_calls_for(tmp_path):
    """16 code prompts, each answered with its own solution (accept) and with the next problem's
    (reject), judged by the built-in SmolLM2-135M in probability mode through a real judge job.
    Whatever it measures, the flag must be the one its AUC and τ intervals call for."""
    from core import jobs

    problems = [json.loads(line) for line in CODE_PROMPTS.read_text(encoding="utf-8").splitlines()]
    assert len(problems) == 16
    own = [{"instruction": p["instruction"], "output": p["solution"]} for p in problems]
    other = [{"instruction": p["instruction"], "output": problems[(i + 1) % 16]["solution"]}
             for i, p in enumerate(problems)]
    with Workspace(tmp_path / "ws") as ws:
        ws.import_paths([write_jsonl(tmp_path / "own.jsonl", own)], "code", role="own")
        ws.import_paths([write_jsonl(tmp_path / "other.jsonl", other)], "code", role="other")
        job = ws.create_job("judge", {"model": "smollm2-135m-instruct", "rubric": RUBRIC, "roles": ["own", "other"],
                                      "mode": "probability"}, shard_size=8)
        jobs.launch(ws.job_dir(job))
        info = jobs.wait(ws.job_dir(job), timeout=600)
        assert info["status"] == "done", (ws.job_dir(job) / jobs.LOG).read_text()
        ws.ingest_job(job)
        for row in ws.store._dicts("SELECT id, role FROM responses"):
            ws.review(row["id"], "accept" if row["role"] == "own" else "reject")
        trust = ws.judge_trust("smollm2-135m-instruct", RUBRIC)
        print(f"\nSmolLM2-135M, pointwise_5, probability mode, 16 code prompts × (own, other's solution): "
              f"AUC {trust.auc} · Kendall τ {trust.kendall} · {trust.status} · more labels {trust.more_labels}"
              f"\n{trust.sentence()}")
    assert (trust.n_labels, trust.n_accept, trust.n_reject, trust.n_unscored) == (32, 16, 16, 0)
    includes_chance = trust.auc.low <= 0.5 <= trust.auc.high or trust.kendall.low <= 0 <= trust.kendall.high
    assert trust.at_chance == includes_chance and trust.flagged == (includes_chance or trust.auc.high < 0.5)
    assert (trust.more_labels is not None) == includes_chance
    assert trust.sentence().startswith({"at_chance": "At chance", "inverted": "Worse than chance",
                                        "better": "Better than chance"}[trust.status])
