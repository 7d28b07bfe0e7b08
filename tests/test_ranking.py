"""Tuna (arXiv 2310.13385): the margin ranking loss against hand-computed values, its gradient,
length-normalised scores, the ranking trainer on tiny-random, and probabilistic ranking from a
real generate job (n = 3 samples at temperature 1, mean_logprob per sample)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMALL_PAIRS, write_jsonl
from safetensors.torch import load_file

from core import jobs
from core.ranking import (
    NO_ANSWER,
    TOO_FEW,
    export_rankings,
    rank_by_logprob,
    rank_probabilistic,
    ranking_groups,
)
from core.train import TrainConfig
from core.train.ranking import (
    RANKING_CONFIG_FILE,
    RankingGroup,
    RankingParams,
    ranking_loss,
    sequence_scores,
    train_ranking,
    tuna_loss,
)
from core.workspace import Workspace

# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------


def test_ranking_loss_against_a_hand_computed_value():
    # scores in rank order (best first), λ = 0.1; terms max(0, s_l − s_k + λ(l − k)) for k < l:
    #   (1,2): max(0, −1.5 − (−1.0) + 0.1·1) = max(0, −0.4) = 0
    #   (1,3): max(0, −0.8 − (−1.0) + 0.1·2) = max(0,  0.4) = 0.4
    #   (2,3): max(0, −0.8 − (−1.5) + 0.1·1) = max(0,  0.8) = 0.8
    #   sum = 1.2
    scores = torch.tensor([[-1.0, -1.5, -0.8]])
    assert float(ranking_loss(scores, 0.1)) == pytest.approx(1.2)
    # a well-separated ranking: −1.0, −1.2, −1.5 → (1,2): −0.2+0.1 < 0, (1,3): −0.5+0.2 < 0,
    # (2,3): −0.3+0.1 < 0 → 0
    good = torch.tensor([[-1.0, -1.2, -1.5]])
    assert float(ranking_loss(good, 0.1)) == 0.0
    # the batch mean of the two groups: (1.2 + 0) / 2 = 0.6; "sum" adds them; "none" keeps each
    both = torch.cat([scores, good])
    assert float(ranking_loss(both, 0.1)) == pytest.approx(0.6)
    assert float(ranking_loss(both, 0.1, reduction="sum")) == pytest.approx(1.2)
    assert ranking_loss(both, 0.1, reduction="none").tolist() == pytest.approx([1.2, 0.0])
    # a group with 2 answers padded to 3: only its pair (1,2) counts: max(0, −0.9 + 1.0 + 0.1) = 0.2
    padded = torch.tensor([[-1.0, -0.9, 99.0]])
    valid = torch.tensor([[True, True, False]])
    assert float(ranking_loss(padded, 0.1, valid)) == pytest.approx(0.2)
    # λ matters: with λ = 0, (1,3) gives 0.2, (2,3) 0.7 → 0.9
    assert float(ranking_loss(scores, 0.0)) == pytest.approx(0.9)


def test_the_gradient_pushes_a_lower_ranked_answer_down():
    scores = torch.tensor([[-1.0, -1.5, -0.8]], requires_grad=True)
    ranking_loss(scores, 0.1).backward()
    # active pairs (1,3) and (2,3): ∂L/∂s_3 = +2 (descent lowers the third answer), ∂L/∂s_1 =
    # ∂L/∂s_2 = −1 (descent raises the answers ranked above it)
    assert scores.grad.tolist() == [[-1.0, -1.0, 2.0]]
    step = (scores - 0.1 * scores.grad).detach()
    assert float(ranking_loss(step, 0.1)) < 1.2


def test_sequence_scores_are_the_mean_response_log_prob():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.tensor([[-100, -100, 3, 1, -100], [-100, 4, 4, 0, 6]])
    got = sequence_scores(logits, targets)
    logp = torch.log_softmax(logits, dim=-1)
    manual = [(logp[0, 2, 3] + logp[0, 3, 1]) / 2, (logp[1, 1, 4] + logp[1, 2, 4] + logp[1, 3, 0] + logp[1, 4, 6]) / 4]
    assert got.tolist() == pytest.approx([float(m) for m in manual], abs=1e-6)


def test_tuna_loss_is_nll_of_the_best_answer_plus_the_ranking_term():
    torch.manual_seed(1)
    logits = torch.randn(5, 4, 6)
    targets = torch.tensor([[-100, 1, 2, -100], [-100, 3, -100, -100], [-100, 5, 5, 0],
                            [-100, 2, -100, -100], [-100, 4, 1, -100]])
    group, rank = [0, 0, 0, 1, 1], [0, 1, 2, 0, 1]  # group 0: rows 0-2, group 1: rows 3-4
    loss, parts = tuna_loss(logits, targets, group, rank, lam=0.1)
    s = sequence_scores(logits, targets)
    grid = torch.tensor([[s[0], s[1], s[2]], [s[3], s[4], 0.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])
    rank_term = ranking_loss(grid, 0.1, valid)
    logp = torch.log_softmax(logits, dim=-1)
    best_tokens = [logp[0, 1, 1], logp[0, 2, 2], logp[3, 1, 2]]  # the best answers' response tokens
    nll = -sum(best_tokens) / 3
    assert float(loss) == pytest.approx(float(nll + rank_term), abs=1e-5)
    assert parts["nll"] == pytest.approx(float(nll), abs=1e-5) and parts["rank"] == pytest.approx(float(rank_term))
    # the NLL term is on by default; switching it off leaves the ranking term alone
    assert RankingParams().nll_weight == 1.0 and RankingParams().margin == 0.1
    off, _ = tuna_loss(logits, targets, group, rank, lam=0.1, nll_weight=0.0)
    assert float(off) == pytest.approx(float(rank_term), abs=1e-6)


def test_ranking_params_and_groups_validate():
    with pytest.raises(ValueError, match="margin must be a number ≥ 0, not -1"):
        RankingParams(margin=-1)
    with pytest.raises(ValueError, match="both 0"):
        RankingParams(nll_weight=0, rank_weight=0)
    with pytest.raises(ValueError, match="at least 2 answers"):
        RankingGroup(({"role": "user", "content": "q"},), ("only one",))


# --------------------------------------------------------------------------------------------
# The trainer on tiny-random
# --------------------------------------------------------------------------------------------

# Each prompt's answers, best first: the trainer should learn to score them in this order.
RANKED = [("What is the capital of France?", ("Paris.", "Lyon is.", "I do not know, maybe a city.")),
          ("What colour is the sky?", ("Blue.", "Grey today.", "Green like grass, always.")),
          ("How many legs has a cat?", ("Four.", "Three legs.", "Cats have no legs at all.")),
          ("What is 2 + 2?", ("4.", "5.", "It is twenty two."))]


def ranked_groups() -> list[RankingGroup]:
    return [RankingGroup(({"role": "user", "content": q},), answers, f"g{i}") for i, (q, answers) in enumerate(RANKED)]


def config(**kw) -> TrainConfig:
    base = dict(base_model="tiny-random", max_steps=8, batch_size=2, learning_rate=3e-3, max_seq_len=128,
                logging_steps=1, dtype="float32")
    return TrainConfig(**(base | kw))


def test_train_ranking_lowers_the_ranking_loss_and_changes_parameters(tmp_path):
    from core.llm import builtin

    records = []
    result = train_ranking(config(), ranked_groups(), tmp_path / "out", progress=lambda **r: records.append(r),
                           device="cpu")
    assert result.step == result.total_steps == 8 and [r["step"] for r in records] == list(range(1, 9))
    assert {"loss", "nll", "rank_loss", "rank_accuracy", "lr", "grad_norm", "tokens_per_s"} <= set(records[0])
    # the default keeps the NLL term: every record's loss is nll + rank_loss
    assert all(r["loss"] == pytest.approx(r["nll"] + r["rank_loss"]) for r in records)
    assert records[0]["nll"] > 0
    first = (records[0]["rank_loss"] + records[1]["rank_loss"]) / 2  # one epoch is 2 steps of 2 groups
    last = (records[-2]["rank_loss"] + records[-1]["rank_loss"]) / 2
    assert last < 0.5 * first, [r["rank_loss"] for r in records]
    assert records[-1]["nll"] < records[0]["nll"]
    before = load_file(str(builtin.model_path("tiny-random") / "model.safetensors"))
    after = load_file(str(next(result.model_dir.glob("*.safetensors"))))
    assert sum(not torch.equal(before[k], after[k]) for k in before) == len(before)
    # the settings beside the model and the checkpoint; train_config.json stays a plain TrainConfig
    assert RankingParams.load(result.model_dir) == RankingParams() == RankingParams.load(result.checkpoints[-1])
    assert TrainConfig.load(result.model_dir) == config()
    assert json.loads((result.checkpoints[-1] / "trainer_state.json").read_text())["trainer"] == "ranking"


def test_the_ranking_term_alone_orders_the_answers(tmp_path):
    # nll_weight 0 (not the default): the falling ranking loss comes from the ranking term itself
    result = train_ranking(config(max_steps=4), ranked_groups(), tmp_path / "out",
                           params=RankingParams(nll_weight=0.0), device="cpu")
    ranks = [r["rank_loss"] for r in result.history]
    assert all(r["loss"] == pytest.approx(r["rank_loss"]) for r in result.history)
    assert ranks[0] > 0 and (ranks[-2] + ranks[-1]) / 2 < 0.5 * (ranks[0] + ranks[1]) / 2, ranks
    assert result.history[-1]["rank_accuracy"] > result.history[0]["rank_accuracy"]


def test_train_ranking_stops_and_resumes_to_the_same_weights(tmp_path):
    cfg = config(max_steps=3, learning_rate=1e-3)
    whole = train_ranking(cfg, ranked_groups(), tmp_path / "whole", device="cpu")
    part = train_ranking(cfg, ranked_groups(), tmp_path / "part", device="cpu", should_stop=lambda: True)
    assert part.stopped and part.step == 1 and part.model_dir is None
    with pytest.raises(ValueError, match="ranking settings changed"):
        train_ranking(cfg, ranked_groups(), tmp_path / "part", params=RankingParams(margin=0.2),
                      resume_from="latest", device="cpu")
    rest = train_ranking(cfg, ranked_groups(), tmp_path / "part", resume_from="latest", device="cpu")
    assert rest.resumed_from.name == "checkpoint-1" and rest.step == 3
    a = load_file(str(next(whole.model_dir.glob("*.safetensors"))))
    b = load_file(str(next(rest.model_dir.glob("*.safetensors"))))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert (rest.model_dir / RANKING_CONFIG_FILE).is_file()


def test_train_ranking_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="packing is not available"):
        train_ranking(config(packing=True), ranked_groups(), tmp_path / "p", device="cpu")
    with pytest.raises(ValueError, match="no trainable group"):
        train_ranking(config(max_seq_len=8), ranked_groups(), tmp_path / "q", device="cpu")


# --------------------------------------------------------------------------------------------
# Probabilistic ranking from stored data
# --------------------------------------------------------------------------------------------


def test_rank_by_logprob_rule():
    answers = [{"instruction_id": "a", "response_id": "r2", "mean_logprob": -1.0},
               {"instruction_id": "a", "response_id": "r1", "mean_logprob": -1.0},  # a tie: r1 < r2 goes first
               {"instruction_id": "a", "response_id": "r3", "mean_logprob": -0.5},
               {"instruction_id": "b", "response_id": "r4", "mean_logprob": -0.1},
               {"instruction_id": "b", "response_id": "r5", "mean_logprob": None},  # no log-prob: left out
               {"instruction_id": "c", "response_id": None, "mean_logprob": None}]  # no answer at all
    got = rank_by_logprob(answers)
    assert got["rankings"] == [{"instruction_id": "a", "response_ids": ["r3", "r1", "r2"], "scores": [-0.5, -1.0, -1.0]}]
    assert got["skipped"] == {TOO_FEW: 1, NO_ANSWER: 1} and got["without_logprob"] == 1


def test_probabilistic_ranking_from_a_real_generate_job(tmp_path):
    ws = Workspace(tmp_path / "ws")
    try:
        ws.import_paths([write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)], "small")
        spec = ws.model("tiny-random").to_dict()
        job_id = ws.create_job("generate", {"model": spec, "role": "teacher", "n": 3, "temperature": 1.0,
                                            "max_tokens": 12, "seed": 3}, limit=4, shard_size=4)
        jobs.launch(ws.job_dir(job_id))
        info = jobs.wait(ws.job_dir(job_id), timeout=180)
        assert info["status"] == "done", (ws.job_dir(job_id) / jobs.LOG).read_text()
        assert ws.ingest_job(job_id)["new_now"] > 0
        stored = ws.store._dicts("SELECT id, instruction_id, meta FROM responses WHERE role = 'teacher'")
        logprob = {r["id"]: json.loads(r["meta"])["mean_logprob"] for r in stored}
        assert all(isinstance(v, float) for v in logprob.values())  # generate stores one per sample
        owner = {r["id"]: r["instruction_id"] for r in stored}

        summary = rank_probabilistic(ws, "teacher", "tiny-random")
        assert summary.instructions == len(SMALL_PAIRS)
        assert summary.ranked >= 3 and summary.new == summary.ranked
        assert summary.skipped.get(NO_ANSWER) == 2  # 4 of the 6 instructions were answered
        rows = ws.store._dicts("SELECT instruction_id, method, response_ids, scores FROM rankings")
        assert len(rows) == summary.ranked
        for row in rows:
            ids, scores = json.loads(row["response_ids"]), json.loads(row["scores"])
            assert len(ids) >= 2 and row["method"] == "probabilistic"
            assert scores == sorted(scores, reverse=True)  # best first
            assert scores == [logprob[i] for i in ids] and all(owner[i] == row["instruction_id"] for i in ids)
        # idempotent: a second run finds the same rankings and writes nothing
        again = rank_probabilistic(ws, "teacher", "tiny-random")
        assert again.new == 0 and again.ranked == summary.ranked
        assert ws.store._rows("SELECT count(*) FROM rankings")[0][0] == summary.ranked

        groups = ranking_groups(ws, role="teacher", model="tiny-random")
        assert len(groups) == summary.ranked
        texts = dict(ws.store._rows("SELECT id, text FROM responses"))
        by_instruction = {r["instruction_id"]: json.loads(r["response_ids"]) for r in rows}
        for g in groups:
            assert list(g.responses) == [texts[i] for i in by_instruction[g.id]]
            assert g.messages[-1]["role"] == "user"
        out = export_rankings(ws, tmp_path / "rankings.jsonl", role="teacher")
        lines = [json.loads(line) for line in (tmp_path / "rankings.jsonl").read_text().splitlines()]
        assert out["n"] == len(lines) == summary.ranked
        assert [line["responses"] for line in lines] == [list(g.responses) for g in groups]
        assert ranking_groups(ws, model="someone-else") == []
    finally:
        ws.close()


# --------------------------------------------------------------------------------------------
# The ranking objective: a training job on a frozen ranking set
# --------------------------------------------------------------------------------------------


def test_the_ranking_objective_validates_its_settings():
    from core.train import objectives

    assert objectives.parse({"kind": "ranking"}) == {"kind": "ranking", "margin": 0.1, "nll_weight": 1.0,
                                                     "rank_weight": 1.0}
    assert objectives.parse({"kind": "ranking", "margin": 0.3})["margin"] == 0.3
    with pytest.raises(ValueError, match="margin must be a number ≥ 0, not -1"):
        objectives.parse({"kind": "ranking", "margin": -1})
    with pytest.raises(ValueError, match="unknown setting.*lam"):
        objectives.parse({"kind": "ranking", "lam": 0.1})
    with pytest.raises(ValueError, match="both 0"):
        objectives.parse({"kind": "ranking", "nll_weight": 0, "rank_weight": 0})


@pytest.mark.slow  # a generate job and a training job on tiny-random: ~15 s on the shared CPU
def test_a_ranking_training_job_registers_a_model_whose_ranking_loss_fell(tmp_path):
    from core.ranking import freeze_ranking_set, ranking_set
    from core.train import job as train_job

    ws = Workspace(tmp_path / "ws")
    try:
        ws.import_paths([write_jsonl(tmp_path / "pairs.jsonl", SMALL_PAIRS)], "small")
        job_id = ws.create_job("generate", {"model": "tiny-random", "role": "teacher", "n": 3, "temperature": 1.0,
                                            "max_tokens": 12, "seed": 3}, shard_size=8)
        assert jobs.run(ws.job_dir(job_id)) == 0, ws.job_log(job_id)
        ws.ingest_job(job_id)
        summary = rank_probabilistic(ws, "teacher", "tiny-random")
        made = freeze_ranking_set(ws, "p-set", "probabilistic", role="teacher", model="tiny-random", round=0)
        assert made["n_groups"] == summary.ranked >= 4 and made["method"] == "probabilistic"
        assert ranking_set(ws, "p-set") == made
        with pytest.raises(ValueError, match="no ranking set named 'nothing'"):
            ws.create_training_job("never", "nothing", config(), objective={"kind": "ranking"})

        cfg = config(max_steps=10, batch_size=2, learning_rate=3e-3).to_dict()
        train_id = ws.create_training_job("ranked", "p-set", cfg, round=1, threads=1,
                                          objective={"kind": "ranking", "margin": 0.1})
        saved = json.loads((ws.job_dir(train_id) / jobs.CONFIG).read_text())
        assert saved["objective"] == {"kind": "ranking", "margin": 0.1, "nll_weight": 1.0, "rank_weight": 1.0}
        assert saved["snapshot"]["content_hash"] == made["content_hash"]
        assert jobs.run(ws.job_dir(train_id)) == 0, ws.job_log(train_id)
        assert ws.ingest_job(train_id)["registered"] == "ranked"
        history = train_job.metrics(ws.job_dir(train_id))
        assert len(history) == 10 and {"rank_loss", "rank_accuracy", "nll"} <= set(history[0])
        first = sum(r["rank_loss"] for r in history[:3]) / 3
        last = sum(r["rank_loss"] for r in history[-3:]) / 3
        assert last < first, [round(r["rank_loss"], 4) for r in history]
        lineage = ws.model_lineage("ranked")
        assert lineage["objective"]["kind"] == "ranking" and lineage["snapshot"] == "p-set"
        assert (ws.root / "models" / "ranked" / "model" / RANKING_CONFIG_FILE).is_file()
        assert ws.model("ranked").backend == "hf"
    finally:
        ws.close()
