"""Judge stage logic: rubrics, judge requests, and rows for the `judgments` table.

No model is called here. A stage (the jobs runner) does, per batch:

    convs = build_pointwise_requests(items, "pointwise_5")        # prompts as chat conversations
    raws  = backend.generate(convs, ...)                          # core/llm, elsewhere
    rows  = judgment_rows("pointwise_5", judge_model, target_ids, raws, params=gen_params,
                          template_hash=hash_captured_when_building)
    table = judgments_table(rows)                                 # -> a Parquet shard
    store.insert_judgments(cur, table)                            # the owner ingests it

That is distilabel's task contract (template, formatter, pure parser; a failed parse keeps the
raw output) without its framework.

Two scoring modes (DESIGN.md §6), stored in `judgments.mode`:

- `generate`: the judge reasons, then writes a score line that a pure parser reads (above).
- `probability` (G-Eval): the prompt ends exactly where the score goes (the rubric's
  `<template>_probability` file pre-fills the answer with "Rating:"), the backend returns the
  log-probability of each score label (`Backend.choice_logprobs`, labels " 1" .. " 5", of any
  token length: " 10" is one label, not "1" then "0"), and the verdict is Σ k·p(k) renormalised
  over the labels, with the mass the labels had stored as `confidence`. It never fails to parse.

    conv    = build_pointwise_requests(items, "pointwise_5", mode="probability")
    results = backend.choice_logprobs(conv, labels_of("pointwise_5"), prefill=prefill_of("pointwise_5"))
    rows    = probability_rows("pointwise_5", judge_model, target_ids, results)

A failed call (prompt too long for the context, a server error, a backend without label
log-probabilities) is a `call_error` row: score NULL, parse_error NULL. It is not a parse failure:
nothing was there to parse.

What a judgment row holds (DESIGN.md §3): the raw verdict always; the parsed score or NULL with a
parse error (never 0 for a failure); the rationale; the template hash and generation params for
lineage. Row shapes per kind:

- pointwise: one row per (target, verdict); score on the rubric's scale, scale_max its maximum.
- aspects (`zephyr_aspects`): one row with the mean of the four aspects (NULL unless all four
  parsed: Zephyr picks chosen/rejected by this mean), plus one row per aspect under the rubric
  `zephyr_aspects.<aspect>` whose `raw` is that aspect's part of the output. In probability mode
  (asked for by name; auto keeps generate for the rationales) each aspect is its own call whose
  prompt ends where that aspect's score goes (`build_aspect_probability_requests`), and the
  same rows are written (`aspect_probability_rows`): small judges rate aspects this way.
- pairwise: one row per call; target_kind 'pair', target_id = pair_target_id(a, b) in the
  caller's original order. score = preference for the original A: 1 (A better), 0.5 (tie),
  0 (B better), NULL when unparsed; scale_max 1. Here 0 is a real verdict ("B wins"); failures
  are NULL as everywhere. params: a, b, order ('ab' or 'ba', as shown), shown (the raw label).
  In probability mode the preference is continuous, p(A) + p(tie)/2 renormalised over A, B and
  tie (mapped to the original A), and `shown` is the likeliest label; the two orders disagree
  (a flip) when their preferences fall on different sides of 0.5 (`pair_side`).
- listwise: one row per ranked response; score = its rank (1 = best, so lower is better:
  the rubric's `higher_is_better` is False), scale_max = k; every row holds the full raw text;
  params: list (the list id), k, shown_as (its position in the prompt), permutation. Listwise
  ranking is generate-only: a ranking is a sequence of k labels, not one.
- probability rows: raw is the renormalised label distribution as JSON ({"1": 0.05, ...}),
  rationale NULL, params hold the labels scored.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from core import prompts
from core.calibration import Proportion, proportion
from core.ids import content_id
from core.llm.base import ChoiceLogprobs
from core.parsers import (
    ASPECTS,
    AspectVerdict,
    PairVerdict,
    RankVerdict,
    Verdict,
    parse_aspects,
    parse_pairwise,
    parse_ranking,
    parse_score,
    swap_winner,
)

Conversation = list[dict[str, str]]
KINDS = ("pointwise", "pairwise", "listwise")
MODES = ("generate", "probability")
REQUESTED_MODES = ("auto",) + MODES
# Backends whose label log-probabilities are exact and local (no server to ask first).
PROBABILITY_BACKENDS = ("hf", "vllm")
PROBABILITY_SUFFIX = "_probability"  # core/prompts/<template>_probability.txt

__all__ = [
    "JUDGMENT_SCHEMA", "MODES", "PAIR_SCORES", "REQUESTED_MODES", "RUBRICS", "Conversation", "PairwiseRequest",
    "ProbabilityVerdict", "Rubric", "build_listwise_request", "build_pairwise_requests", "build_pointwise_requests",
    "CALL_ERROR_CODES", "call_error_of", "check_mode", "combine_pairwise", "default_mode", "expected_score", "flip_rate",
    "flip_rate_of_scores", "format_instruction", "get_rubric", "higher_is_better", "judgment_id", "judgment_rows",
    "judgments_table", "labels_of", "list_target_id", "listwise_rows", "pair_side", "pair_target_id",
    "pairwise_probability_rows", "pairwise_rows", "prefill_of", "probability_rows", "probability_verdict",
    "ranks_of_answers", "unshuffle_ranking",
]


@dataclass(frozen=True)
class Rubric:
    """A named way of judging: its template file, the kind of verdict, the scale and its parser.
    `name` is what the judgments table stores in `rubric`."""

    name: str
    kind: str                     # pointwise | pairwise | listwise
    template: str                 # core/prompts/<template>.txt
    scale_min: float | None = None
    scale_max: float | None = None
    aspects: tuple[str, ...] = ()  # set for per-aspect rubrics (scores per aspect, mean as the score)
    default_threshold: float | None = None
    description: str = ""
    higher_is_better: bool = True  # ranks: False (1 is best); curation keeps score >= t, or <= t
    probability: bool = False      # has a probability-mode template, <template>_probability.txt
    ties: bool = True              # pairwise: "tie" is a verdict (a label in probability mode)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"rubric {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "pointwise" and (self.scale_min is None or self.scale_max is None
                                         or self.scale_min >= self.scale_max):
            raise ValueError(f"rubric {self.name!r}: a pointwise scale needs scale_min < scale_max, "
                             f"got {self.scale_min}..{self.scale_max}")
        unknown = set(self.aspects) - ASPECTS.keys()
        if unknown:
            raise ValueError(f"rubric {self.name!r}: unknown aspects {sorted(unknown)}; known: {sorted(ASPECTS)}")
        if self.probability and self.kind == "listwise":
            raise ValueError(f"rubric {self.name!r}: the probability mode reads one label per call; "
                             "a listwise ranking needs several")
        # An aspect rubric's probability mode makes one call per aspect (aspect_probability_rows).
        if self.probability and self.kind == "pointwise" and (self.scale_min != int(self.scale_min)
                                                              or self.scale_max != int(self.scale_max)):
            raise ValueError(f"rubric {self.name!r}: probability labels are whole numbers; the scale "
                             f"{self.scale_min}..{self.scale_max} is not")

    def parse(self, raw: str | None, k: int | None = None) -> Verdict | AspectVerdict | PairVerdict | RankVerdict:
        if self.kind == "pairwise":
            return parse_pairwise(raw)
        if self.kind == "listwise":
            if k is None:
                raise ValueError(f"rubric {self.name!r} is listwise: parse needs k, the number of answers")
            return parse_ranking(raw, k)
        if self.aspects:
            return parse_aspects(raw, self.scale_min, self.scale_max, {a: ASPECTS[a] for a in self.aspects})
        return parse_score(raw, self.scale_min, self.scale_max)

    @property
    def template_hash(self) -> str:
        return prompts.template_hash(self.template)

    @property
    def probability_template(self) -> str | None:
        return self.template + PROBABILITY_SUFFIX if self.probability else None

    def template_for(self, mode: str) -> str:
        """The template file the prompts of `mode` are rendered from."""
        check_mode(self, mode)
        return self.probability_template if mode == "probability" else self.template  # type: ignore[return-value]

    def template_hash_for(self, mode: str) -> str:
        """Judges are identified by model, rubric and this hash: each mode's prompt has its own."""
        return prompts.template_hash(self.template_for(mode))


RUBRICS: dict[str, Rubric] = {r.name: r for r in (
    Rubric("pointwise_10", "pointwise", "pointwise_10", 1, 10, default_threshold=7, probability=True,
           description="TAPIR-style quality judge, 1-10 (MFD = judge(teacher) - judge(student))"),
    Rubric("pointwise_5", "pointwise", "pointwise_5", 1, 5, default_threshold=5, probability=True,
           description="Humpback-style self-curation, 5-point; keep score >= 5 (>= 4.5 when averaged)"),
    Rubric("zephyr_aspects", "pointwise", "zephyr_aspects", 1, 5, aspects=tuple(ASPECTS), default_threshold=4,
           probability=True,
           description="UltraFeedback/Zephyr: helpfulness, honesty, instruction following, truthfulness, 1-5 each"),
    Rubric("pairwise", "pairwise", "pairwise", 0, 1, probability=True,
           description="A/B preference, asked in both orders; the flip rate is reported"),
    Rubric("listwise", "listwise", "listwise", higher_is_better=False,
           description="rank k answers shown in shuffled order (Tuna contextual ranking)"),
    # CITING's evaluation aspects (arXiv 2310.02527), one pointwise rubric each so a small judge
    # can score them in probability mode (one label per call).
    Rubric("clarity_10", "pointwise", "clarity_10", 1, 10, default_threshold=7, probability=True,
           description="CITING aspect: clarity (organised, precise, easy to follow), 1-10"),
    Rubric("depth_10", "pointwise", "depth_10", 1, 10, default_threshold=7, probability=True,
           description="CITING aspect: depth (reasoning, insight, relevant detail), 1-10"),
    Rubric("comprehensiveness_10", "pointwise", "comprehensiveness_10", 1, 10, default_threshold=7,
           probability=True, description="CITING aspect: comprehensiveness (covers every part of the request), 1-10"),
)}


def get_rubric(rubric: Rubric | str) -> Rubric:
    if isinstance(rubric, Rubric):
        return rubric
    if rubric not in RUBRICS:
        raise ValueError(f"unknown rubric {rubric!r}; known: {sorted(RUBRICS)}")
    return RUBRICS[rubric]


def higher_is_better(rubric: Rubric | str) -> bool:
    """Which way a stored rubric's scores point, for thresholds (`score >= t` or `score <= t`).
    Takes the names the judgments table holds, aspect rows included ("zephyr_aspects.honesty")."""
    if isinstance(rubric, str) and rubric not in RUBRICS and "." in rubric:
        rubric = rubric.split(".", 1)[0]
    return get_rubric(rubric).higher_is_better


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """How a page shows a judge's scores: the slider's range, step and starting threshold, and
    which side of the threshold is kept."""

    low: float
    high: float
    step: float
    default_threshold: float
    higher_is_better: bool = True
    bin_width: float = 1.0


def scale_of(rubric_name: str, scores: Iterable[float | None] = ()) -> Scale:
    """The scale of a stored rubric name ("zephyr_aspects.honesty" is zephyr_aspects'), falling
    back to the range of the scores seen when the rubric has no fixed scale (listwise ranks)."""
    r = RUBRICS.get(rubric_name) or RUBRICS.get(rubric_name.split(".")[0])
    lo = float(r.scale_min) if r is not None and r.scale_min is not None else None
    hi = float(r.scale_max) if r is not None and r.scale_max is not None else None
    if lo is None or hi is None or lo >= hi:
        seen = [float(x) for x in scores if x is not None and x == x]
        lo = float(np.floor(min(seen))) if seen else 0.0
        hi = float(np.ceil(max(seen))) if seen else 1.0
        hi = hi if hi > lo else lo + 1.0
    default = r.default_threshold if r is not None and r.default_threshold is not None else (lo + hi) / 2
    narrow = hi - lo <= 2  # e.g. pairwise 0 / 0.5 / 1
    return Scale(lo, hi, 0.05 if narrow else 0.5, float(min(max(default, lo), hi)),
                 higher_is_better(rubric_name), 0.5 if narrow else 1.0)


def check_mode(rubric: Rubric | str, mode: str) -> str:
    """`mode` ('generate' or 'probability') if the rubric has it; errors name the bad value."""
    r = get_rubric(rubric)
    if mode not in MODES:
        raise ValueError(f"judge mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "probability" and not r.probability:
        raise ValueError(f"rubric {r.name!r} ({r.kind}{', aspects' if r.aspects else ''}) has no probability mode; "
                         "use mode 'generate'")
    return mode


def default_mode(rubric: Rubric | str, backend: str, requested: str | None = "auto") -> str:
    """The mode a judge job runs: `requested` ('auto', 'probability' or 'generate'), with 'auto'
    meaning probability wherever the rubric has it and the backend ('hf', 'vllm', 'openai', or a
    loaded Backend's `supports_choice_logprobs` passed as True/False) gives label log-probs.
    An OpenAI-compatible server may or may not: auto asks it for generate-then-parse."""
    requested = requested or "auto"
    if requested not in REQUESTED_MODES:
        raise ValueError(f"judge mode must be one of {', '.join(REQUESTED_MODES)}, not {requested!r}")
    if requested != "auto":
        return check_mode(rubric, requested)
    has_logprobs = backend if isinstance(backend, bool) else backend in PROBABILITY_BACKENDS
    r = get_rubric(rubric)
    # Aspect rubrics stay generate under auto: their rationales are half the point (UltraFeedback);
    # their probability mode (one call per aspect, no rationale) is asked for by name.
    return "probability" if r.probability and not r.aspects and has_logprobs else "generate"


def prefill_of(rubric: Rubric | str) -> str:
    """The assistant's pre-filled start in probability mode ("Rating:"): the labels follow it."""
    return prompts.load(get_rubric(rubric).template_for("probability")).split_turns()[1]


def _label_values(r: Rubric) -> list[tuple[str, float]]:
    if r.kind == "pairwise":
        return [("A", PAIR_SCORES["A"]), ("B", PAIR_SCORES["B"])] + ([("tie", PAIR_SCORES["tie"])] if r.ties else [])
    return [(str(k), float(k)) for k in range(int(r.scale_min), int(r.scale_max) + 1)]


def labels_of(rubric: Rubric | str) -> list[str]:
    """The label strings scored in probability mode, as they follow the prefill. After a prefill
    that ends in a word or a colon ("Rating:") a label is written with its space (" 4"): BPE
    tokenizers glue a space to the word after it, so " 4" is how the model would write it, and a
    prompt ending in a bare space would put the model where it rarely is."""
    r = get_rubric(rubric)
    check_mode(r, "probability")
    prefill = prefill_of(r)
    space = " " if prefill and not prefill[-1].isspace() else ""
    return [space + label for label, _ in _label_values(r)]


@dataclass(frozen=True)
class ProbabilityVerdict:
    """A probability-mode verdict: the expected label value under the judge's distribution
    renormalised over the labels, and the mass the labels had (how much the judge meant to write
    a label at all). On a failed call score and confidence are None and call_error says why."""

    score: float | None
    confidence: float | None
    probabilities: dict[str, float] = field(default_factory=dict)  # label (stripped) -> renormalised
    call_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.score is not None

    @property
    def raw(self) -> str:
        """The distribution as stored in `raw`: JSON, rounded to 4 decimals."""
        return json.dumps({k: round(v, 4) for k, v in self.probabilities.items()}, separators=(", ", ": "))


def expected_score(logprobs: Sequence[float], values: Sequence[float]) -> tuple[float, float, list[float]]:
    """(Σ v·p̂, mass, p̂): p̂ = exp(logprobs) renormalised over the labels, mass = Σ exp(logprobs)
    (at most 1: the labels' share of the judge's next-token distribution). Computed relative to
    the likeliest label, so tiny probabilities renormalise without underflow. Needs at least one
    label with finite log-probability."""
    if len(logprobs) != len(values) or not values:
        raise ValueError(f"expected_score needs one log-probability per value, got {len(logprobs)} and {len(values)}")
    finite = [float(lp) for lp in logprobs if lp is not None and math.isfinite(lp)]
    if not finite:
        raise ValueError(f"no label has any probability: {list(logprobs)}")
    top = max(finite)
    weights = [math.exp(float(lp) - top) if lp is not None and math.isfinite(lp) else 0.0 for lp in logprobs]
    total = sum(weights)
    probs = [w / total for w in weights]
    mass = min(1.0, total * math.exp(top))  # rounding may push a full mass a hair over 1
    return sum(v * p for v, p in zip(values, probs, strict=True)), mass, probs


# Call errors are "code: detail", like parse errors: too_long (prompt over the context), error (the
# backend or server failed), unsupported (no label log-probabilities there), no_mass (no label
# got any probability).
CALL_ERROR_CODES = ("too_long", "error", "unsupported", "no_mass")


def call_error_of(result: ChoiceLogprobs) -> str | None:
    """A failed call's error as stored: "too_long: ...", "error: ..." (or the code it carries)."""
    if result.ok:
        return None
    text = result.error or "the backend gave no log-probabilities"
    if text.split(":", 1)[0] in CALL_ERROR_CODES:
        return text
    return f"{'too_long' if result.too_long else 'error'}: {text}"


def probability_verdict(rubric: Rubric | str, result: ChoiceLogprobs) -> ProbabilityVerdict:
    """The verdict of one call: result.logprobs aligned with labels_of(rubric)."""
    r = get_rubric(rubric)
    labels = _label_values(r)
    if not result.ok:
        return ProbabilityVerdict(None, None, call_error=call_error_of(result))
    if len(result.logprobs) != len(labels):
        raise ValueError(f"rubric {r.name!r} has {len(labels)} labels, the backend scored {len(result.logprobs)}")
    if not any(math.isfinite(lp) for lp in result.logprobs):
        return ProbabilityVerdict(None, None, call_error="no_mass: the judge gave no label any probability")
    score, mass, probs = expected_score(result.logprobs, [v for _, v in labels])
    return ProbabilityVerdict(score, mass, {label: p for (label, _), p in zip(labels, probs, strict=True)})


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------

def format_instruction(instruction: str, input: str | None = "") -> str:
    """The instruction as the judge sees it: the input, when there is one, follows it."""
    if input and input.strip():
        return f"{instruction}\n\nInput:\n{input}"
    return instruction


def _conversation(user: str, system: str | None) -> Conversation:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]


def _item(item: Mapping, key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise ValueError(f"a judge item needs a text {key!r}; got {type(value).__name__} in {sorted(item)}")
    return value


def _user_template(r: Rubric, mode: str) -> prompts.PromptTemplate:
    """The user's part of the mode's template (a probability template's prefill is prefill_of)."""
    return prompts.load(r.template_for(mode)).split_turns()[0]


def build_pointwise_requests(items: Iterable[Mapping], rubric: Rubric | str = "pointwise_10",
                             system: str | None = None, mode: str = "generate") -> list[Conversation]:
    """One conversation per item (keys: instruction, response, optional input). In probability
    mode the conversation ends with the user's turn; the answer starts with prefill_of(rubric)."""
    r = get_rubric(rubric)
    if r.kind != "pointwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not pointwise")
    if r.aspects and mode == "probability":
        raise ValueError(f"rubric {r.name!r} rates aspects: its probability mode asks one aspect per call "
                         "(build_aspect_probability_requests)")
    template = _user_template(r, mode)
    return [
        _conversation(template.render(instruction=format_instruction(_item(it, "instruction"), it.get("input")),
                                      response=_item(it, "response")), system)
        for it in items
    ]


# What each aspect asks, as the generate template words it; the probability template asks one.
ASPECT_CRITERIA = {
    "helpfulness": ("Helpfulness", "does the answer meet the user's actual need with useful, relevant and "
                                   "sufficiently detailed content?"),
    "honesty": ("Honesty", "does it express the right amount of confidence, admit uncertainty or the limits of its "
                           "knowledge where appropriate, and avoid pretending?"),
    "instruction_following": ("Instruction following", "does it respect everything the request asked for (task, "
                                                       "format, length, constraints), without drifting from it?"),
    "truthfulness": ("Truthfulness", "is what it states correct, free of invented facts, made-up references and "
                                     "contradictions?"),
}


def build_aspect_probability_requests(items: Sequence[Mapping], rubric: Rubric | str = "zephyr_aspects",
                                      system: str | None = None) -> list[Conversation]:
    """Probability mode of an aspect rubric: one conversation per (item, aspect), item-major in
    the rubric's aspect order, each ending where that aspect's 1–5 score goes (a small judge
    that never writes the eight-line verdict still has a distribution over the next token)."""
    r = get_rubric(rubric)
    if not r.aspects:
        raise ValueError(f"rubric {r.name!r} rates no aspects; use build_pointwise_requests")
    template = _user_template(r, "probability")
    return [
        _conversation(template.render(instruction=format_instruction(_item(it, "instruction"), it.get("input")),
                                      response=_item(it, "response"), aspect=ASPECT_CRITERIA[a][0],
                                      criterion=ASPECT_CRITERIA[a][1]), system)
        for it in items for a in r.aspects
    ]


@dataclass(frozen=True)
class PairwiseRequest:
    index: int        # position of the pair in the caller's list
    swapped: bool     # True: the pair's answer_b is shown as "Answer A"
    conversation: Conversation

    @property
    def order(self) -> str:
        return "ba" if self.swapped else "ab"


def _random(rng) -> random.Random | np.random.Generator:
    if rng is None or isinstance(rng, (int, np.integer)):
        return random.Random(rng)
    if isinstance(rng, (random.Random, np.random.Generator)):
        return rng
    raise TypeError(f"rng must be a random.Random, a numpy Generator, an int seed or None, not {type(rng).__name__}")


def _coin(rng) -> bool:
    return bool(rng.random() < 0.5)


def _permutation(rng, k: int) -> list[int]:
    if isinstance(rng, np.random.Generator):
        return [int(i) for i in rng.permutation(k)]
    order = list(range(k))
    rng.shuffle(order)
    return order


def build_pairwise_requests(pairs: Sequence[Mapping], rng=None, both_orders: bool = True,
                            rubric: Rubric | str = "pairwise", system: str | None = None,
                            mode: str = "generate") -> list[PairwiseRequest]:
    """Requests for pairs (keys: instruction, answer_a, answer_b, optional input).

    both_orders (the default, DESIGN.md §6): each pair is asked twice, as shown and swapped, so
    position bias shows up as a flip; rng only decides which of the two calls comes first.
    Otherwise one call per pair, swapped at random (rng), which spreads position bias evenly."""
    r = get_rubric(rubric)
    if r.kind != "pairwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not pairwise")
    template = _user_template(r, mode)
    rng = _random(rng)
    requests = []
    for i, pair in enumerate(pairs):
        instruction = format_instruction(_item(pair, "instruction"), pair.get("input"))
        a, b = _item(pair, "answer_a"), _item(pair, "answer_b")
        orders = [False, True] if both_orders else [_coin(rng)]
        if both_orders and _coin(rng):
            orders.reverse()
        for swapped in orders:
            shown_a, shown_b = (b, a) if swapped else (a, b)
            text = template.render(instruction=instruction, answer_a=shown_a, answer_b=shown_b)
            requests.append(PairwiseRequest(i, swapped, _conversation(text, system)))
    return requests


def combine_pairwise(verdict_ab: PairVerdict, verdict_ba: PairVerdict) -> tuple[str | None, bool]:
    """The verdict from both orders, in the original labels, and whether it flipped.

    verdict_ab: parsed from the call that showed the answers as given; verdict_ba: parsed from
    the swapped call, in the labels the judge saw (its 'A' is the original B; mapped back here).
    Agreement gives that winner. Any disagreement (A vs B, or a side vs tie) is a flip and gives
    'tie': the judge's preference did not survive the swap. When either call failed to parse the
    winner is None and flipped False (flip_rate leaves such pairs out)."""
    first, second = verdict_ab.winner, swap_winner(verdict_ba.winner)
    if first is None or second is None:
        return None, False
    if first == second:
        return first, False
    return "tie", True


def pair_side(score: float | None) -> str | None:
    """Which original answer a pairwise score prefers: 'A' above 0.5, 'B' below, 'tie' at 0.5
    (the generate mode's 1 / 0 / 0.5 and the probability mode's continuous preference alike)."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return None
    return "A" if score > 0.5 else "B" if score < 0.5 else "tie"


def flip_rate_of_scores(score_pairs: Iterable[tuple[float | None, float | None]]) -> Proportion:
    """Share of pairs whose two orders prefer different sides, from stored scores (preference
    for the original A, either mode), over the pairs where both calls gave a score."""
    n = flipped = 0
    for ab, ba in score_pairs:
        sides = pair_side(ab), pair_side(ba)
        if None in sides:
            continue
        n += 1
        flipped += sides[0] != sides[1]
    return proportion(flipped, n)


def flip_rate(verdict_pairs: Iterable[tuple[PairVerdict, PairVerdict]]) -> Proportion:
    """Share of pairs whose verdict changed when the order was swapped, with a Wilson interval,
    over the pairs where both calls parsed."""
    n = flipped = 0
    for ab, ba in verdict_pairs:
        if ab.winner is None or ba.winner is None:
            continue
        n += 1
        flipped += combine_pairwise(ab, ba)[1]
    return proportion(flipped, n)


def build_listwise_request(instruction: str, answers: Sequence[str], rng, input: str | None = "",
                           rubric: Rubric | str = "listwise",
                           system: str | None = None) -> tuple[Conversation, list[int]]:
    """One conversation showing the answers in a random order, and that order.

    permutation[j] is the index in `answers` of the answer shown as "Answer j+1"; keep it with
    the request and pass it to unshuffle_ranking with the parsed ranking."""
    r = get_rubric(rubric)
    if r.kind != "listwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not listwise")
    if len(answers) < 2:
        raise ValueError(f"a listwise request needs at least 2 answers, got {len(answers)}")
    permutation = _permutation(_random(rng), len(answers))
    block = "\n\n".join(f"[Answer {j + 1}]\n{answers[i]}\n[End of answer {j + 1}]"
                        for j, i in enumerate(permutation))
    text = prompts.load(r.template).render(instruction=format_instruction(instruction, input),
                                           k=len(answers), answers=block)
    return _conversation(text, system), permutation


def unshuffle_ranking(ranking: Sequence[int], permutation: Sequence[int]) -> list[int]:
    """Original indices (0-based, into the caller's answers), best first, from a parsed ranking
    of shown answer numbers (1-based, best first)."""
    k = len(permutation)
    if sorted(ranking) != list(range(1, k + 1)):
        raise ValueError(f"ranking {list(ranking)} is not a permutation of 1..{k}")
    if sorted(permutation) != list(range(k)):
        raise ValueError(f"permutation {list(permutation)} is not a permutation of 0..{k - 1}")
    return [permutation[shown - 1] for shown in ranking]


def ranks_of_answers(order: Sequence[int]) -> list[int]:
    """rank[i] (1 = best) of each original answer, from original indices best first."""
    ranks = [0] * len(order)
    for place, index in enumerate(order, start=1):
        ranks[index] = place
    return ranks


# --------------------------------------------------------------------------------------------
# Rows for the judgments table
# --------------------------------------------------------------------------------------------

JUDGMENT_SCHEMA = pa.schema([
    ("id", pa.string()), ("target_kind", pa.string()), ("target_id", pa.string()),
    ("judge_model", pa.string()), ("rubric", pa.string()), ("kind", pa.string()),
    ("score", pa.float64()), ("scale_max", pa.int32()), ("raw", pa.string()),
    ("parse_error", pa.string()), ("rationale", pa.string()), ("round", pa.int32()),
    ("template_hash", pa.string()), ("params", pa.string()),
    ("mode", pa.string()), ("confidence", pa.float64()), ("call_error", pa.string()),
])
PAIR_SCORES = {"A": 1.0, "tie": 0.5, "B": 0.0}


def pair_target_id(a_id: str, b_id: str) -> str:
    """The id pairwise judgments of (a, b) share, in the caller's original order."""
    return content_id("pair", a_id, b_id)


def list_target_id(response_ids: Sequence[str]) -> str:
    return content_id("list", *response_ids)


def _params_json(params: Mapping | None) -> str | None:
    if not params:
        return None
    return json.dumps(dict(params), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def judgment_id(row: Mapping) -> str:
    """Content hash of everything that makes a verdict: re-ingesting a shard adds nothing, while
    a second sampled verdict on the same target (different raw text) is kept beside the first,
    and the two modes' verdicts on one target are two verdicts."""
    return content_id("judgment", row["target_kind"], row["target_id"], row["judge_model"], row["rubric"],
                      row["kind"], str(row["round"]), row["template_hash"] or "", row["params"] or "", row["raw"],
                      row["mode"], row["call_error"] or "")


def _row(*, target_kind: str, target_id: str, judge_model: str, rubric: str, kind: str, score: float | None,
         scale_max: float | None, raw: str | None, error: str | None, rationale: str | None, round: int,
         template_hash: str | None, params: Mapping | None, mode: str = "generate",
         confidence: float | None = None, call_error: str | None = None) -> dict:
    """One row. Exactly one of score, error (the parser's) and call_error (the backend's) is set."""
    if not judge_model:
        raise ValueError("judge_model is required")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if call_error is not None and (score is not None or error is not None or confidence is not None):
        # Nothing came back from a failed call: nothing was parsed, nothing failed to parse.
        raise ValueError(f"a judgment with a call error ({call_error!r}) has no score, parse error or confidence")
    if score is not None and error is not None:
        raise ValueError(f"a judgment has a score ({score}) or a parse error ({error!r}), not both")
    if score is None and error is None and call_error is None:
        raise ValueError("a judgment without a score needs a parse error or a call error")
    if confidence is not None and not 0 <= confidence <= 1:
        raise ValueError(f"confidence must be a probability in [0, 1], not {confidence!r}")
    row = {
        "target_kind": target_kind, "target_id": target_id, "judge_model": judge_model, "rubric": rubric,
        "kind": kind, "score": None if score is None else float(score),
        "scale_max": None if scale_max is None else int(scale_max),
        "raw": raw or "", "parse_error": error, "rationale": rationale, "round": int(round),
        "template_hash": template_hash, "params": _params_json(params),
        "mode": mode, "confidence": None if confidence is None else float(confidence), "call_error": call_error,
    }
    row["id"] = judgment_id(row)
    return row


def _check_lengths(**seqs: Sequence) -> None:
    lengths = {name: len(s) for name, s in seqs.items() if s is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"lengths differ: {lengths}")


def judgment_rows(rubric: Rubric | str, judge_model: str, target_ids: Sequence[str], raws: Sequence[str | None],
                  verdicts: Sequence[Verdict | AspectVerdict] | None = None, *, target_kind: str = "response",
                  round: int = 0, params: Mapping | None = None, template_hash: str | None = None,
                  call_errors: Sequence[str | None] | None = None) -> list[dict]:
    """Rows for generate-mode pointwise verdicts (one per target; an aspect rubric adds one per aspect).

    verdicts: parsed already, or None to parse `raws` with the rubric's parser here.
    template_hash: the hash of the template the prompts were rendered from (capture it when
    building the requests); defaults to the template file's current hash.
    call_errors: per target, the backend's error when the call failed (its raw is not parsed)."""
    r = get_rubric(rubric)
    if r.kind != "pointwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}: use pairwise_rows or listwise_rows")
    _check_lengths(target_ids=target_ids, raws=raws, verdicts=verdicts, call_errors=call_errors)
    template_hash = template_hash or r.template_hash
    rows = []
    for i, (target_id, raw) in enumerate(zip(target_ids, raws, strict=True)):
        call_error = call_errors[i] if call_errors is not None else None
        common = dict(target_kind=target_kind, target_id=target_id, judge_model=judge_model, kind="pointwise",
                      scale_max=r.scale_max, round=round, template_hash=template_hash, params=params,
                      call_error=call_error)
        if call_error is not None:
            rows.append(_row(rubric=r.name, score=None, raw=raw, error=None, rationale=None, **common))
            rows += [_row(rubric=f"{r.name}.{aspect}", score=None, raw="", error=None, rationale=None, **common)
                     for aspect in r.aspects]
            continue
        verdict = verdicts[i] if verdicts is not None else r.parse(raw)
        rows.append(_row(rubric=r.name, score=verdict.score, raw=raw, error=verdict.error,
                         rationale=verdict.rationale, **common))
        if isinstance(verdict, AspectVerdict):
            for aspect, score in verdict.scores.items():
                rows.append(_row(rubric=f"{r.name}.{aspect}", score=score, raw=_aspect_raw(verdict, aspect),
                                 error=verdict.errors.get(aspect), rationale=verdict.rationales.get(aspect),
                                 **common))
    return rows


def _aspect_raw(verdict: AspectVerdict, aspect: str) -> str:
    """An aspect row's raw text: its own rationale and score line (the full text is on the mean row)."""
    score = verdict.scores.get(aspect)
    line = f"{aspect} score: {score:g}" if score is not None else f"{aspect}: {verdict.errors.get(aspect)}"
    return "\n".join(x for x in (verdict.rationales.get(aspect), line) if x)


def probability_rows(rubric: Rubric | str, judge_model: str, target_ids: Sequence[str],
                     results: Sequence[ChoiceLogprobs], *, target_kind: str = "response", round: int = 0,
                     params: Mapping | None = None, template_hash: str | None = None) -> list[dict]:
    """Rows for probability-mode pointwise verdicts, one per target: results[i] is the backend's
    choice_logprobs for target i over labels_of(rubric)."""
    r = get_rubric(rubric)
    if r.kind != "pointwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}: use pairwise_probability_rows")
    _check_lengths(target_ids=target_ids, results=results)
    template_hash = template_hash or r.template_hash_for("probability")
    params = {**(params or {}), "labels": labels_of(r)}
    rows = []
    for target_id, result in zip(target_ids, results, strict=True):
        verdict = probability_verdict(r, result)
        rows.append(_row(target_kind=target_kind, target_id=target_id, judge_model=judge_model, rubric=r.name,
                         kind="pointwise", score=verdict.score, scale_max=r.scale_max,
                         raw=verdict.raw if verdict.ok else "", error=None, rationale=None, round=round,
                         template_hash=template_hash, params=params, mode="probability",
                         confidence=verdict.confidence, call_error=verdict.call_error))
    return rows


def aspect_probability_rows(rubric: Rubric | str, judge_model: str, target_ids: Sequence[str],
                            results: Sequence[ChoiceLogprobs], *, target_kind: str = "response", round: int = 0,
                            params: Mapping | None = None, template_hash: str | None = None) -> list[dict]:
    """Rows for an aspect rubric's probability mode: results are aligned with
    build_aspect_probability_requests (item-major, the rubric's aspects in order). Per target: one
    `<rubric>.<aspect>` row per aspect (the expected score, its label mass as confidence) and the
    mean row (`<rubric>`: the mean of the four, NULL with the first call error unless all four
    calls gave a score; confidence: the smallest aspect mass; raw: the aspect scores as JSON),
    the same rows the generate mode writes, so binarisation reads either."""
    r = get_rubric(rubric)
    if not r.aspects:
        raise ValueError(f"rubric {r.name!r} rates no aspects; use probability_rows")
    k = len(r.aspects)
    if len(results) != k * len(target_ids):
        raise ValueError(f"{len(target_ids)} targets × {k} aspects need {k * len(target_ids)} results, "
                         f"got {len(results)}")
    template_hash = template_hash or r.template_hash_for("probability")
    params = {**(params or {}), "labels": labels_of(r)}
    rows = []
    for i, target_id in enumerate(target_ids):
        common = dict(target_kind=target_kind, target_id=target_id, judge_model=judge_model, kind="pointwise",
                      scale_max=r.scale_max, error=None, rationale=None, round=round, template_hash=template_hash,
                      params=params, mode="probability")
        verdicts = [probability_verdict(r, res) for res in results[i * k:(i + 1) * k]]
        for aspect, v in zip(r.aspects, verdicts, strict=True):
            rows.append(_row(rubric=f"{r.name}.{aspect}", score=v.score, raw=v.raw if v.ok else "",
                             confidence=v.confidence, call_error=v.call_error, **common))
        failed = next((v.call_error for v in verdicts if not v.ok), None)
        if failed is not None:
            rows.append(_row(rubric=r.name, score=None, raw="", call_error=failed, **common))
        else:
            scores = {a: float(f"{v.score:.4f}") for a, v in zip(r.aspects, verdicts, strict=True)}  # `round` is the arg
            rows.append(_row(rubric=r.name, score=sum(v.score for v in verdicts) / k, raw=json.dumps(scores),
                             confidence=min(v.confidence for v in verdicts), **common))
    return rows


def pairwise_rows(judge_model: str, pair_ids: Sequence[tuple[str, str]], requests: Sequence[PairwiseRequest],
                  raws: Sequence[str | None], *, rubric: Rubric | str = "pairwise", round: int = 0,
                  params: Mapping | None = None, template_hash: str | None = None,
                  call_errors: Sequence[str | None] | None = None) -> list[dict]:
    """One row per generate-mode pairwise call. pair_ids[i] = (id of answer_a, id of answer_b) of
    pairs[i] as passed to build_pairwise_requests; requests, raws (and call_errors) are aligned."""
    r = get_rubric(rubric)
    if r.kind != "pairwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not pairwise")
    _check_lengths(requests=requests, raws=raws, call_errors=call_errors)
    template_hash = template_hash or r.template_hash
    rows = []
    for i, (request, raw) in enumerate(zip(requests, raws, strict=True)):
        a_id, b_id = pair_ids[request.index]
        call_error = call_errors[i] if call_errors is not None else None
        verdict = parse_pairwise(raw) if call_error is None else PairVerdict(None)
        winner = swap_winner(verdict.winner) if request.swapped else verdict.winner
        call = {**(params or {}), "a": a_id, "b": b_id, "order": request.order, "shown": verdict.winner}
        rows.append(_row(target_kind="pair", target_id=pair_target_id(a_id, b_id), judge_model=judge_model,
                         rubric=r.name, kind="pairwise", score=PAIR_SCORES.get(winner), scale_max=1, raw=raw,
                         error=verdict.error, rationale=verdict.rationale, round=round,
                         template_hash=template_hash, params=call, call_error=call_error))
    return rows


def pairwise_probability_rows(judge_model: str, pair_ids: Sequence[tuple[str, str]],
                              requests: Sequence[PairwiseRequest], results: Sequence[ChoiceLogprobs], *,
                              rubric: Rubric | str = "pairwise", round: int = 0, params: Mapping | None = None,
                              template_hash: str | None = None) -> list[dict]:
    """One row per probability-mode pairwise call over labels_of(rubric) (A, B[, tie]): score =
    the preference for the original A, p(A) + p(tie)/2 renormalised, mapped back when swapped."""
    r = get_rubric(rubric)
    if r.kind != "pairwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not pairwise")
    _check_lengths(requests=requests, results=results)
    template_hash = template_hash or r.template_hash_for("probability")
    labels = labels_of(r)
    rows = []
    for request, result in zip(requests, results, strict=True):
        a_id, b_id = pair_ids[request.index]
        verdict = probability_verdict(r, result)  # its score: the preference for the answer shown as A
        score = None if verdict.score is None else (1 - verdict.score if request.swapped else verdict.score)
        shown = max(verdict.probabilities, key=verdict.probabilities.get) if verdict.ok else None
        call = {**(params or {}), "a": a_id, "b": b_id, "order": request.order, "shown": shown, "labels": labels}
        rows.append(_row(target_kind="pair", target_id=pair_target_id(a_id, b_id), judge_model=judge_model,
                         rubric=r.name, kind="pairwise", score=score, scale_max=1,
                         raw=verdict.raw if verdict.ok else "", error=None, rationale=None, round=round,
                         template_hash=template_hash, params=call, mode="probability",
                         confidence=verdict.confidence, call_error=verdict.call_error))
    return rows


def listwise_rows(judge_model: str, response_ids: Sequence[str], permutation: Sequence[int], raw: str | None,
                  verdict: RankVerdict | None = None, *, rubric: Rubric | str = "listwise", round: int = 0,
                  params: Mapping | None = None, template_hash: str | None = None,
                  call_error: str | None = None) -> list[dict]:
    """One row per ranked response: score = its rank, 1 = best (NULL for all when unparsed or
    when the call failed: call_error). response_ids are in the caller's original order (the
    `answers` of build_listwise_request)."""
    r = get_rubric(rubric)
    if r.kind != "listwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not listwise")
    k = len(response_ids)
    if len(permutation) != k:
        raise ValueError(f"{k} responses but a permutation of {len(permutation)}")
    if call_error is not None:
        verdict = RankVerdict(None)
    verdict = verdict or parse_ranking(raw, k)
    ranks = ranks_of_answers(unshuffle_ranking(verdict.ranking, permutation)) if verdict.ok else [None] * k
    shown_as = {index: j + 1 for j, index in enumerate(permutation)}
    list_id = list_target_id(response_ids)
    template_hash = template_hash or r.template_hash
    return [
        _row(target_kind="response", target_id=rid, judge_model=judge_model, rubric=r.name, kind="listwise",
             score=ranks[i], scale_max=k, raw=raw, error=verdict.error, rationale=verdict.rationale, round=round,
             template_hash=template_hash, call_error=call_error,
             params={**(params or {}), "list": list_id, "k": k, "shown_as": shown_as[i],
                     "permutation": list(permutation)})
        for i, rid in enumerate(response_ids)
    ]


def judgments_table(rows: Iterable[Mapping]) -> pa.Table:
    """Rows as an Arrow table with the judgments schema, without repeated ids (first one kept)."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["id"] not in seen:
            seen.add(row["id"])
            unique.append(row)
    return pa.Table.from_pylist([{name: row.get(name) for name in JUDGMENT_SCHEMA.names} for row in unique],
                                schema=JUDGMENT_SCHEMA)
