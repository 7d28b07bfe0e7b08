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

What a judgment row holds (DESIGN.md §3): the raw verdict always; the parsed score or NULL with a
parse error (never 0 for a failure); the rationale; the template hash and generation params for
lineage. Row shapes per kind:

- pointwise: one row per (target, verdict); score on the rubric's scale, scale_max its maximum.
- aspects (`zephyr_aspects`): one row with the mean of the four aspects (NULL unless all four
  parsed: Zephyr picks chosen/rejected by this mean), plus one row per aspect under the rubric
  `zephyr_aspects.<aspect>` whose `raw` is that aspect's part of the output.
- pairwise: one row per call; target_kind 'pair', target_id = pair_target_id(a, b) in the
  caller's original order. score = preference for the original A: 1 (A better), 0.5 (tie),
  0 (B better), NULL when unparsed; scale_max 1. Here 0 is a real verdict ("B wins"); failures
  are NULL as everywhere. params: a, b, order ('ab' or 'ba', as shown), shown (the raw label).
- listwise: one row per ranked response; score = its rank (1 = best, so lower is better),
  scale_max = k; every row holds the full raw text; params: list (the list id), k, shown_as
  (its position in the prompt), permutation.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core import prompts
from core.calibration import Proportion, proportion
from core.ids import content_id
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

__all__ = [
    "JUDGMENT_SCHEMA", "PAIR_SCORES", "RUBRICS", "Conversation", "PairwiseRequest", "Rubric",
    "build_listwise_request", "build_pairwise_requests", "build_pointwise_requests", "combine_pairwise",
    "flip_rate", "format_instruction", "get_rubric", "judgment_id", "judgment_rows", "judgments_table",
    "list_target_id", "listwise_rows", "pair_target_id", "pairwise_rows", "ranks_of_answers",
    "unshuffle_ranking",
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


RUBRICS: dict[str, Rubric] = {r.name: r for r in (
    Rubric("pointwise_10", "pointwise", "pointwise_10", 1, 10, default_threshold=7,
           description="TAPIR-style quality judge, 1-10 (MFD = judge(teacher) - judge(student))"),
    Rubric("pointwise_5", "pointwise", "pointwise_5", 1, 5, default_threshold=5,
           description="Humpback-style self-curation, 5-point; keep score >= 5 (>= 4.5 when averaged)"),
    Rubric("zephyr_aspects", "pointwise", "zephyr_aspects", 1, 5, aspects=tuple(ASPECTS), default_threshold=4,
           description="UltraFeedback/Zephyr: helpfulness, honesty, instruction following, truthfulness, 1-5 each"),
    Rubric("pairwise", "pairwise", "pairwise", 0, 1,
           description="A/B preference, asked in both orders; the flip rate is reported"),
    Rubric("listwise", "listwise", "listwise",
           description="rank k answers shown in shuffled order (Tuna contextual ranking)"),
)}


def get_rubric(rubric: Rubric | str) -> Rubric:
    if isinstance(rubric, Rubric):
        return rubric
    if rubric not in RUBRICS:
        raise ValueError(f"unknown rubric {rubric!r}; known: {sorted(RUBRICS)}")
    return RUBRICS[rubric]


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


def build_pointwise_requests(items: Iterable[Mapping], rubric: Rubric | str = "pointwise_10",
                             system: str | None = None) -> list[Conversation]:
    """One conversation per item (keys: instruction, response, optional input)."""
    r = get_rubric(rubric)
    if r.kind != "pointwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not pointwise")
    template = prompts.load(r.template)
    return [
        _conversation(template.render(instruction=format_instruction(_item(it, "instruction"), it.get("input")),
                                      response=_item(it, "response")), system)
        for it in items
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
                            rubric: Rubric | str = "pairwise", system: str | None = None) -> list[PairwiseRequest]:
    """Requests for pairs (keys: instruction, answer_a, answer_b, optional input).

    both_orders (the default, DESIGN.md §6): each pair is asked twice, as shown and swapped, so
    position bias shows up as a flip; rng only decides which of the two calls comes first.
    Otherwise one call per pair, swapped at random (rng), which spreads position bias evenly."""
    r = get_rubric(rubric)
    if r.kind != "pairwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not pairwise")
    template = prompts.load(r.template)
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
    a second sampled verdict on the same target (different raw text) is kept beside the first."""
    return content_id("judgment", row["target_kind"], row["target_id"], row["judge_model"], row["rubric"],
                      row["kind"], str(row["round"]), row["template_hash"] or "", row["params"] or "", row["raw"])


def _row(*, target_kind: str, target_id: str, judge_model: str, rubric: str, kind: str, score: float | None,
         scale_max: float | None, raw: str | None, error: str | None, rationale: str | None, round: int,
         template_hash: str | None, params: Mapping | None) -> dict:
    if not judge_model:
        raise ValueError("judge_model is required")
    if score is not None and error is not None:
        raise ValueError(f"a judgment has a score ({score}) or a parse error ({error!r}), not both")
    if score is None and error is None:
        raise ValueError("a judgment without a score needs a parse error")
    row = {
        "target_kind": target_kind, "target_id": target_id, "judge_model": judge_model, "rubric": rubric,
        "kind": kind, "score": None if score is None else float(score),
        "scale_max": None if scale_max is None else int(scale_max),
        "raw": raw or "", "parse_error": error, "rationale": rationale, "round": int(round),
        "template_hash": template_hash, "params": _params_json(params),
    }
    row["id"] = judgment_id(row)
    return row


def _check_lengths(**seqs: Sequence) -> None:
    lengths = {name: len(s) for name, s in seqs.items() if s is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"lengths differ: {lengths}")


def judgment_rows(rubric: Rubric | str, judge_model: str, target_ids: Sequence[str], raws: Sequence[str | None],
                  verdicts: Sequence[Verdict | AspectVerdict] | None = None, *, target_kind: str = "response",
                  round: int = 0, params: Mapping | None = None, template_hash: str | None = None) -> list[dict]:
    """Rows for pointwise verdicts (one per target; an aspect rubric adds one per aspect).

    verdicts: parsed already, or None to parse `raws` with the rubric's parser here.
    template_hash: the hash of the template the prompts were rendered from (capture it when
    building the requests); defaults to the template file's current hash."""
    r = get_rubric(rubric)
    if r.kind != "pointwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}: use pairwise_rows or listwise_rows")
    _check_lengths(target_ids=target_ids, raws=raws, verdicts=verdicts)
    template_hash = template_hash or r.template_hash
    rows = []
    for i, (target_id, raw) in enumerate(zip(target_ids, raws, strict=True)):
        verdict = verdicts[i] if verdicts is not None else r.parse(raw)
        common = dict(target_kind=target_kind, target_id=target_id, judge_model=judge_model, kind="pointwise",
                      scale_max=r.scale_max, round=round, template_hash=template_hash)
        rows.append(_row(rubric=r.name, score=verdict.score, raw=raw, error=verdict.error,
                         rationale=verdict.rationale, params=params, **common))
        if isinstance(verdict, AspectVerdict):
            for aspect, score in verdict.scores.items():
                rows.append(_row(rubric=f"{r.name}.{aspect}", score=score, raw=_aspect_raw(verdict, aspect),
                                 error=verdict.errors.get(aspect), rationale=verdict.rationales.get(aspect),
                                 params=params, **common))
    return rows


def _aspect_raw(verdict: AspectVerdict, aspect: str) -> str:
    """An aspect row's raw text: its own rationale and score line (the full text is on the mean row)."""
    score = verdict.scores.get(aspect)
    line = f"{aspect} score: {score:g}" if score is not None else f"{aspect}: {verdict.errors.get(aspect)}"
    return "\n".join(x for x in (verdict.rationales.get(aspect), line) if x)


def pairwise_rows(judge_model: str, pair_ids: Sequence[tuple[str, str]], requests: Sequence[PairwiseRequest],
                  raws: Sequence[str | None], *, rubric: Rubric | str = "pairwise", round: int = 0,
                  params: Mapping | None = None, template_hash: str | None = None) -> list[dict]:
    """One row per pairwise call. pair_ids[i] = (id of answer_a, id of answer_b) of pairs[i] as
    passed to build_pairwise_requests; requests and raws are aligned with each other."""
    r = get_rubric(rubric)
    if r.kind != "pairwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not pairwise")
    _check_lengths(requests=requests, raws=raws)
    template_hash = template_hash or r.template_hash
    rows = []
    for request, raw in zip(requests, raws, strict=True):
        a_id, b_id = pair_ids[request.index]
        verdict = parse_pairwise(raw)
        winner = swap_winner(verdict.winner) if request.swapped else verdict.winner
        call = {**(params or {}), "a": a_id, "b": b_id, "order": request.order, "shown": verdict.winner}
        rows.append(_row(target_kind="pair", target_id=pair_target_id(a_id, b_id), judge_model=judge_model,
                         rubric=r.name, kind="pairwise", score=PAIR_SCORES.get(winner), scale_max=1, raw=raw,
                         error=verdict.error, rationale=verdict.rationale, round=round,
                         template_hash=template_hash, params=call))
    return rows


def listwise_rows(judge_model: str, response_ids: Sequence[str], permutation: Sequence[int], raw: str | None,
                  verdict: RankVerdict | None = None, *, rubric: Rubric | str = "listwise", round: int = 0,
                  params: Mapping | None = None, template_hash: str | None = None) -> list[dict]:
    """One row per ranked response: score = its rank, 1 = best (NULL for all when unparsed).
    response_ids are in the caller's original order (the `answers` of build_listwise_request)."""
    r = get_rubric(rubric)
    if r.kind != "listwise":
        raise ValueError(f"rubric {r.name!r} is {r.kind}, not listwise")
    k = len(response_ids)
    if len(permutation) != k:
        raise ValueError(f"{k} responses but a permutation of {len(permutation)}")
    verdict = verdict or parse_ranking(raw, k)
    ranks = ranks_of_answers(unshuffle_ranking(verdict.ranking, permutation)) if verdict.ok else [None] * k
    shown_as = {index: j + 1 for j, index in enumerate(permutation)}
    list_id = list_target_id(response_ids)
    template_hash = template_hash or r.template_hash
    return [
        _row(target_kind="response", target_id=rid, judge_model=judge_model, rubric=r.name, kind="listwise",
             score=ranks[i], scale_max=k, raw=raw, error=verdict.error, rationale=verdict.rationale, round=round,
             template_hash=template_hash,
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
