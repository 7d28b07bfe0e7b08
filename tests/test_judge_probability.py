"""The probability judge mode (G-Eval, DESIGN.md §6): the math against hand-computed values, then
the real hf backend on tiny-random through the judge stage, counting every verdict; call errors
stored as call errors (never parse failures); pairwise in both orders; and a slow run of the
built-in SmolLM2-135M on eight pairs of the demo seed where every verdict must exist.

The only fake here is a backend that returns fixed label log-probabilities, for the pure
expected-score / renormalisation / confidence arithmetic through run_shard's plumbing."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pytest
from conftest import REPO

from core import judge, judge_stage, prompts
from core.jobs import JobContext
from core.llm.base import Backend, ChoiceLogprobs, exclusive_logprobs
from core.llm.registry import BUILTIN_SPECS, ModelSpec, load_backend

ITEMS = [
    {"response_id": f"r{i}", "instruction": q, "input": "", "response": a}
    for i, (q, a) in enumerate([
        ("What is 12 * 7?", "12 * 7 = 84."),
        ("Name three primary colours.", "Red, yellow and blue."),
        ("Summarise: the cat sat on the mat all day.", "A cat spent the day on a mat."),
        ("Write a Python function that reverses a string.", "def reverse(s):\n    return s[::-1]"),
        ("Translate 'good morning' into French.", "Bonjour."),
        ("Is a tomato a fruit or a vegetable?", "Botanically a fruit; in cooking, a vegetable."),
    ])
]
PAIRS = [{"a_id": f"a{i}", "b_id": f"b{i}", "instruction": it["instruction"], "input": "",
          "answer_a": it["response"], "answer_b": "I don't know."} for i, it in enumerate(ITEMS[:3])]


@pytest.fixture(scope="module")
def tiny():
    backend = load_backend("tiny-random")
    yield backend
    backend.close()


def ctx_for(tmp_path, backend, rubric: str, mode: str | None, **config) -> JobContext:
    """The judge stage's real context: a job folder for the log, the backend already loaded."""
    config = {"model": {"name": backend.name}, "rubric": rubric, "round": 0, "created": "t0",
              "params": judge_stage.DEFAULT_JUDGE_PARAMS | config.pop("params", {})} | config
    if mode is not None:
        config["mode"] = mode
    return JobContext(tmp_path, config, backend)


def log_text(tmp_path) -> str:
    path = tmp_path / "log.txt"
    return path.read_text() if path.exists() else ""


# --------------------------------------------------------------------------------------------
# The arithmetic, by hand
# --------------------------------------------------------------------------------------------


def lp(*probs: float) -> list[float]:
    return [math.log(p) if p > 0 else -math.inf for p in probs]


def test_expected_score_renormalises_over_the_labels_and_keeps_their_mass():
    # p(1..5) = .1 .2 .3 .1 .1 (mass .8) -> renormalised .125 .25 .375 .125 .125
    # expected = .125 + .5 + 1.125 + .5 + .625 = 2.875
    score, mass, probs = judge.expected_score(lp(.1, .2, .3, .1, .1), [1, 2, 3, 4, 5])
    assert score == pytest.approx(2.875) and mass == pytest.approx(0.8)
    assert probs == pytest.approx([.125, .25, .375, .125, .125])
    # Renormalisation is relative to the likeliest label: far-out log-probs do not underflow.
    score, mass, probs = judge.expected_score([-1000.0, -1000.0 + math.log(3)], [1, 5])
    assert score == pytest.approx(4.0) and probs == pytest.approx([.25, .75]) and mass == 0.0
    # A label the backend did not see (-inf) has no mass; one label alone is certain.
    assert judge.expected_score(lp(0, .4, 0), [1, 2, 3])[:2] == pytest.approx((2.0, 0.4))
    with pytest.raises(ValueError, match="no label has any probability"):
        judge.expected_score([-math.inf, -math.inf], [1, 2])
    with pytest.raises(ValueError, match="one log-probability per value"):
        judge.expected_score([-1.0], [1, 2])


def test_exclusive_logprobs_take_ten_out_of_one():
    # Tokens: "1" = (5,), "10" = (5, 0), "2" = (6,). P("1" tokens) = .5 includes P("10") = .2.
    out = exclusive_logprobs(lp(.5, .2, .1), [(5,), (5, 0), (6,)])
    assert [math.exp(x) for x in out] == pytest.approx([.3, .2, .1])
    # A chain 1 < 10 < 100: "1" loses only its direct extension "10" (whose mass holds "100").
    out = exclusive_logprobs(lp(.5, .2, .05), [(5,), (5, 0), (5, 0, 0)])
    assert [math.exp(x) for x in out] == pytest.approx([.3, .15, .05])
    # A tokenizer with a "10" token: nothing to take away.
    assert exclusive_logprobs(lp(.5, .2), [(5,), (9,)]) == pytest.approx(lp(.5, .2))
    with pytest.raises(ValueError, match="same tokens"):
        exclusive_logprobs(lp(.5, .2), [(5,), (5,)])


def test_probability_verdicts_and_call_errors_by_hand():
    v = judge.probability_verdict("pointwise_5", ChoiceLogprobs(lp(.1, .2, .3, .1, .1)))
    assert (v.score, v.confidence, v.call_error) == (pytest.approx(2.875), pytest.approx(0.8), None)
    assert json.loads(v.raw) == {"1": .125, "2": .25, "3": .375, "4": .125, "5": .125}
    failed = judge.probability_verdict("pointwise_5", ChoiceLogprobs.failed("prompt of 900 tokens ...", 900,
                                                                            too_long=True))
    assert failed.score is None and failed.call_error == "too_long: prompt of 900 tokens ..."
    none = judge.probability_verdict("pointwise_5", ChoiceLogprobs([-math.inf] * 5))
    assert none.score is None and none.call_error.startswith("no_mass")
    with pytest.raises(ValueError, match="5 labels"):
        judge.probability_verdict("pointwise_5", ChoiceLogprobs(lp(.5, .5)))


class FixedLabels(Backend):
    """Returns the same label distribution for every prompt; records what it was asked."""

    name = "fixed"
    supports_choice_logprobs = True

    def __init__(self, probs):
        self.probs, self.asked = probs, []

    def choice_logprobs(self, conversations, choices, *, prefill=""):
        self.asked.append((conversations, list(choices), prefill))
        return [ChoiceLogprobs(lp(*self.probs), 50) for _ in conversations]

    def generate(self, conversations, params=None):
        raise AssertionError("auto mode on a backend with label log-probs must not generate")

    def score(self, conversations, responses):
        raise NotImplementedError

    def count_tokens(self, conversation):
        return 0


def test_run_shard_in_probability_mode_writes_the_hand_computed_rows(tmp_path):
    backend = FixedLabels([.1, .2, .3, .1, .1])
    out = judge_stage.run_shard(ctx_for(tmp_path, backend, "pointwise_5", None), judge_stage.input_table(ITEMS))
    assert out.schema.names == judge.JUDGMENT_SCHEMA.names + ["n_tokens"]
    rows = out.to_pylist()
    assert len(rows) == 6
    for row in rows:
        assert row["mode"] == "probability" and row["score"] == pytest.approx(2.875)
        assert row["confidence"] == pytest.approx(0.8) and row["parse_error"] is None and row["call_error"] is None
        assert row["template_hash"] == prompts.template_hash("pointwise_5_probability") != prompts.template_hash(
            "pointwise_5")
        assert json.loads(row["params"])["labels"] == [" 1", " 2", " 3", " 4", " 5"]
    [(conversations, labels, prefill)] = backend.asked
    assert labels == [" 1", " 2", " 3", " 4", " 5"] and prefill == "Rating:"
    # The prompt ends where the score goes: the user's turn asks for the number, the answer is pre-filled.
    assert conversations[0][-1]["role"] == "user" and conversations[0][-1]["content"].endswith("from 1 to 5.")
    assert "12 * 7 = 84." in conversations[0][-1]["content"]


def test_pairwise_probability_preference_maps_back_and_flips_by_side():
    requests = judge.build_pairwise_requests(PAIRS[:1], rng=0, mode="probability")
    assert {r.order for r in requests} == {"ab", "ba"}
    # Shown A .6, shown B .2, tie .2 in both calls: the first-shown answer wins both times.
    results = [ChoiceLogprobs(lp(.6, .2, .2)) for _ in requests]
    rows = judge.pairwise_probability_rows("fixed", [("a0", "b0")], requests, results)
    by_order = {json.loads(r["params"])["order"]: r for r in rows}
    assert by_order["ab"]["score"] == pytest.approx(0.7)   # .6 + .2 / 2
    assert by_order["ba"]["score"] == pytest.approx(0.3)   # the original A was shown as B
    assert all(json.loads(r["params"])["shown"] == "A" and r["mode"] == "probability" for r in rows)
    flips = judge.flip_rate_of_scores([(by_order["ab"]["score"], by_order["ba"]["score"]), (0.8, 0.6), (0.2, None)])
    assert (flips.k, flips.n) == (1, 2)
    assert judge.pair_side(1.0) == "A" and judge.pair_side(0.5) == "tie" and judge.pair_side(0.0) == "B"


def test_modes_templates_and_ids():
    assert judge.labels_of("pointwise_10") == [f" {k}" for k in range(1, 11)]
    assert judge.labels_of("pairwise") == [" A", " B", " tie"]
    assert judge.prefill_of("pointwise_10") == "Score:" and judge.prefill_of("pairwise") == "Winner:"
    assert judge.default_mode("pointwise_5", "hf") == "probability"
    assert judge.default_mode("pointwise_5", "openai") == "generate"      # a server may lack log-probs
    assert judge.default_mode("listwise", "hf") == "generate"             # a ranking is k labels
    assert judge.default_mode("zephyr_aspects", "vllm") == "generate"
    assert judge.default_mode("pointwise_5", "openai", "probability") == "probability"
    with pytest.raises(ValueError, match="'listwise'.*no probability mode"):
        judge.default_mode("listwise", "hf", "probability")
    with pytest.raises(ValueError, match="'sampled'"):
        judge.default_mode("pointwise_5", "hf", "sampled")
    assert not judge.higher_is_better("listwise") and judge.higher_is_better("zephyr_aspects.honesty")
    # The same verdict text in two modes is two verdicts.
    base = {"target_kind": "response", "target_id": "r", "judge_model": "m", "rubric": "pointwise_5",
            "kind": "pointwise", "round": 0, "template_hash": "h", "params": None, "raw": "x", "call_error": None}
    assert judge.judgment_id(base | {"mode": "generate"}) != judge.judgment_id(base | {"mode": "probability"})
    with pytest.raises(ValueError, match=r"\$"):
        prompts.PromptTemplate("t", "Q $x\n=== assistant ===\nRating $y", "h").split_turns()


# --------------------------------------------------------------------------------------------
# The real hf backend on tiny-random
# --------------------------------------------------------------------------------------------


def test_hf_choice_logprobs_equal_scored_label_sequences(tiny):
    """One pass per prompt gives what scoring each label's full sequence gives: log P(" 7") =
    score("Score: 7") - score("Score:"), and " 1" without the " 10" inside it."""
    conv = judge.build_pointwise_requests(ITEMS[:1], "pointwise_10", mode="probability")[0]
    labels = judge.labels_of("pointwise_10")
    [result] = tiny.choice_logprobs([conv], labels, prefill="Score:")
    assert result.ok and result.n_prompt_tokens == tiny.count_tokens(conv) + len(tiny.chat.encode("Score:"))
    ten = tiny.chat.label_tokens(conv, labels, "Score:")[1][-1]
    assert len(ten) == 2, "tiny-random writes ' 10' as two tokens: the case under test"
    [prefix] = tiny.score([conv], ["Score:"])
    full = [s.sum_logprob - prefix.sum_logprob for s in tiny.score([conv] * 10, [f"Score:{label}" for label in labels])]
    assert result.logprobs[1:] == pytest.approx(full[1:], abs=1e-4)
    assert math.exp(result.logprobs[0]) == pytest.approx(math.exp(full[0]) - math.exp(full[9]), rel=1e-3)


def test_hf_choice_logprobs_do_not_depend_on_batch_mates(tiny, monkeypatch):
    convs = judge.build_pointwise_requests(ITEMS, "pointwise_5", mode="probability")
    labels = judge.labels_of("pointwise_5")
    singles = [tiny.choice_logprobs([c], labels, prefill="Rating:")[0].logprobs for c in convs]
    monkeypatch.setattr(tiny, "batch_size", 4)  # two padded batches
    batched = [r.logprobs for r in tiny.choice_logprobs(convs, labels, prefill="Rating:")]
    for one, many in zip(singles, batched, strict=True):
        assert many == pytest.approx(one, abs=1e-4)
    with pytest.raises(ValueError, match="end with the user's turn"):
        tiny.choice_logprobs([convs[0] + [{"role": "assistant", "content": "Rating:"}]], labels)
    with pytest.raises(ValueError, match="distinct"):
        tiny.choice_logprobs(convs[:1], [" 1", " 1"])


@pytest.mark.parametrize("rubric, top", [("pointwise_5", 5), ("pointwise_10", 10)])
def test_tiny_random_probability_judge_scores_every_target(tmp_path, tiny, rubric, top):
    out = judge_stage.run_shard(ctx_for(tmp_path, tiny, rubric, "auto"), judge_stage.input_table(ITEMS)).to_pylist()
    assert len(out) == 6
    assert sum(r["score"] is not None for r in out) == 6
    assert all(1 <= r["score"] <= top and 0 < r["confidence"] <= 1 for r in out)
    assert all(r["mode"] == "probability" and r["parse_error"] is None and r["call_error"] is None for r in out)
    assert len({r["score"] for r in out}) == 6, "a continuous score, one per answer"
    assert log_text(tmp_path) == ""  # no call failed


def test_generate_mode_on_tiny_random_keeps_parse_failures_honest(tmp_path, tiny):
    """tiny-random writes noise: every pairwise verdict is a parse failure with its raw text, none a
    call error. The long pointwise generate rubric (over 600 tokens under tiny's tokenizer) does not
    fit its 512-token context: every call is a call error, and nothing is counted as unparsed."""
    ctx = ctx_for(tmp_path, tiny, "pairwise", "generate", params={"max_tokens": 8})
    out = judge_stage.run_shard(ctx, judge_stage.pair_input_table(PAIRS)).to_pylist()
    assert len(out) == 6 and all(r["mode"] == "generate" for r in out)
    assert sum(r["score"] is not None for r in out) == 0
    assert sum(r["parse_error"] is not None for r in out) == 6 and all(r["raw"] for r in out)
    assert sum(r["call_error"] is not None for r in out) == 0
    assert all(r["template_hash"] == prompts.template_hash("pairwise") for r in out)

    ctx = ctx_for(tmp_path, tiny, "pointwise_5", "generate", params={"max_tokens": 8})
    out = judge_stage.run_shard(ctx, judge_stage.input_table(ITEMS)).to_pylist()
    assert len(out) == 6 and sum(r["score"] is not None for r in out) == 0
    assert sum(r["parse_error"] is not None for r in out) == 0
    assert [r["call_error"].split(":")[0] for r in out] == ["too_long"] * 6
    assert "6 of 6 judge calls failed" in log_text(tmp_path)


def test_too_long_prompts_are_call_errors_not_parse_failures(tmp_path, tiny):
    long = ITEMS[:5] + [ITEMS[5] | {"response": "lighthouse keeper " * 400}]
    out = judge_stage.run_shard(ctx_for(tmp_path, tiny, "pointwise_5", "probability"),
                                judge_stage.input_table(long)).to_pylist()
    failed = {r["target_id"]: r for r in out}["r5"]
    assert failed["score"] is None and failed["parse_error"] is None and failed["confidence"] is None
    assert failed["call_error"].startswith("too_long: ") and "context length 512" in failed["call_error"]
    assert sum(r["call_error"] is not None for r in out) == 1 and sum(r["score"] is not None for r in out) == 5
    assert "1 of 6 judge calls failed" in log_text(tmp_path)
    # Generate mode, pairwise (its prompt fits tiny's context): the long pair fails in both orders
    # as call errors; the two pairs that fit are read, and tiny's noise does not parse.
    pairs = PAIRS[:2] + [PAIRS[2] | {"answer_b": "lighthouse keeper " * 400}]
    out = judge_stage.run_shard(ctx_for(tmp_path, tiny, "pairwise", "generate", params={"max_tokens": 8}),
                                judge_stage.pair_input_table(pairs)).to_pylist()
    long_pair = judge.pair_target_id("a2", "b2")
    assert [r["call_error"].split(":")[0] for r in out if r["target_id"] == long_pair] == ["too_long"] * 2
    assert sum(r["call_error"] is not None for r in out) == 2 and sum(r["parse_error"] is not None for r in out) == 4
    assert all(r["parse_error"] is None for r in out if r["call_error"]) and "2 of 6 judge calls failed" in log_text(
        tmp_path)


def test_a_tiny_context_makes_every_call_a_call_error(tmp_path):
    short = ModelSpec("tiny-short", "hf", path="builtin:tiny-random", context_length=64, dtype="float32")
    with load_backend(short) as backend:
        out = judge_stage.run_shard(ctx_for(tmp_path, backend, "pointwise_10", "probability"),
                                    judge_stage.input_table(ITEMS[:3])).to_pylist()
    assert [r["call_error"].split(":")[0] for r in out] == ["too_long"] * 3
    assert all(r["score"] is None and r["parse_error"] is None for r in out)
    assert "3 of 3 judge calls failed" in log_text(tmp_path)


def test_pairwise_probability_on_tiny_random_asks_both_orders(tmp_path, tiny):
    out = judge_stage.run_shard(ctx_for(tmp_path, tiny, "pairwise", "auto"), judge_stage.pair_input_table(PAIRS))
    rows = out.to_pylist()
    assert len(rows) == 6 and sum(r["score"] is not None for r in rows) == 6
    orders: dict[str, set] = {}
    for row in rows:
        params = json.loads(row["params"])
        assert row["mode"] == "probability" and 0 <= row["score"] <= 1 and 0 < row["confidence"] <= 1
        assert params["shown"] in ("A", "B", "tie") and params["labels"] == [" A", " B", " tie"]
        orders.setdefault(row["target_id"], set()).add(params["order"])
    assert len(orders) == 3 and all(o == {"ab", "ba"} for o in orders.values())
    # Recompute one swapped call by hand: its score is 1 - the preference for the answer shown as A.
    requests = judge.build_pairwise_requests(PAIRS, rng=judge_stage.judge_seed("t0:a0"), mode="probability")
    swapped = next(r for r in requests if r.swapped and r.index == 0)
    [result] = tiny.choice_logprobs([swapped.conversation], [" A", " B", " tie"], prefill="Winner:")
    p = [math.exp(x) for x in result.logprobs]
    shown_a = (p[0] + p[2] / 2) / sum(p)
    stored = next(r for r in rows if r["target_id"] == judge.pair_target_id("a0", "b0")
                  and json.loads(r["params"])["order"] == "ba")
    assert stored["score"] == pytest.approx(1 - shown_a, abs=1e-5)
    # float32 logprobs of one call alone and of the same call in the stage's padded batch of six
    # differ by a few ulps (~1e-6 of a logprob near -10, so ~1e-6 relative after exp; measured
    # 1.7e-6 under two test workers): a wrong formula would be off by far more than 1e-4.
    assert stored["confidence"] == pytest.approx(sum(p), rel=1e-4)


def test_a_backend_without_label_logprobs_is_a_call_error_for_each_row(tmp_path):
    class GenerateOnly(FixedLabels):
        supports_choice_logprobs = False

        def choice_logprobs(self, conversations, choices, *, prefill=""):
            return Backend.choice_logprobs(self, conversations, choices, prefill=prefill)

    out = judge_stage.run_shard(ctx_for(tmp_path, GenerateOnly([1.0]), "pointwise_5", "probability"),
                                judge_stage.input_table(ITEMS[:2])).to_pylist()
    assert [r["call_error"].split(":")[0] for r in out] == ["unsupported", "unsupported"]
    assert "choice_logprobs" in out[0]["call_error"] and all(r["parse_error"] is None for r in out)


def test_the_judgments_table_takes_probability_rows(seeded_workspace, tiny):
    """Rows of both modes go into the catalog side by side (migration 0008's columns)."""
    ws = seeded_workspace
    rids = [r["id"] for r in ws.store._dicts("SELECT id FROM responses ORDER BY id")][:3]
    items = [{"instruction": "q", "response": f"answer {i}"} for i in range(3)]
    convs = judge.build_pointwise_requests(items, "pointwise_5", mode="probability")
    results = tiny.choice_logprobs(convs, judge.labels_of("pointwise_5"), prefill=judge.prefill_of("pointwise_5"))
    rows = judge.probability_rows("pointwise_5", "tiny-random", rids, results)
    rows += judge.judgment_rows("pointwise_5", "tiny-random", rids, ["Score: 4", "no idea", ""],
                                call_errors=[None, None, "too_long: prompt of 900 tokens"])
    assert ws.record_judgments(judge.judgments_table(rows)) == 6
    stored = ws.store._dicts("SELECT mode, score, confidence, parse_error, call_error FROM judgments ORDER BY mode")
    assert [r["mode"] for r in stored] == ["generate"] * 3 + ["probability"] * 3
    assert sum(r["call_error"] is not None for r in stored) == 1 and sum(r["parse_error"] is not None for r in stored) == 1
    assert all(r["score"] is not None and 0 < r["confidence"] <= 1 for r in stored if r["mode"] == "probability")
    assert isinstance(judge.judgments_table(rows), pa.Table)


# --------------------------------------------------------------------------------------------
# The built-in SmolLM2-135M on the demo seed
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_probability_judge_gives_every_seed_pair_a_verdict(tmp_path):
    seed = [json.loads(line) for line in (REPO / "data" / "seed.jsonl").read_text().splitlines()][:168:21]
    items = [{"response_id": f"seed-{i}", "instruction": r["instruction"], "input": r["input"], "response": r["output"]}
             for i, r in enumerate(seed)]
    assert len(items) == 8
    with load_backend(BUILTIN_SPECS["smollm2-135m-instruct"]) as backend:
        out = judge_stage.run_shard(ctx_for(tmp_path, backend, "pointwise_5", "auto"),
                                    judge_stage.input_table(items)).to_pylist()
    assert len(out) == 8 and sum(r["score"] is not None for r in out) == 8
    assert all(1 <= r["score"] <= 5 and 0 < r["confidence"] <= 1 for r in out)
    assert all(r["mode"] == "probability" and r["call_error"] is None for r in out)
    # The judge means to write a rating: a good share of its next-token mass is on the five labels.
    assert sum(r["confidence"] for r in out) / 8 > 0.3
