"""Zephyr's AI feedback, binarised into preference pairs (arXiv 2310.16944, DESIGN.md §1, §6).

Several models (a pool of response roles: pool_1, pool_2, …) answer each prompt; a judge rates
every answer with the `zephyr_aspects` rubric (helpfulness, honesty, instruction following,
truthfulness, 1–5 each with a rationale; the judge stage stores one `zephyr_aspects.<aspect>`
row per aspect). `binarise` turns those stored ratings into pairs:

- an answer's score is the mean of its four aspect scores (an aspect rated several times counts
  with the mean of its parsed verdicts); an answer without all four is left out, counted by
  reason: 'not judged' (no verdict of this judge and template), 'judge call failed' (only
  failed calls), 'aspect unparsed';
- per instruction, chosen = the highest mean; when two or more answers share it the instruction
  is dropped ('tie at the top'), as in the paper;
- rejected = a seeded random choice among the strictly lower answers, not the worst (the paper:
  "a random lower one"), optionally only among those at least `min_margin` lower;
- margin = chosen mean − rejected mean.

    summary = binarise(ws, "judge-model", ["pool_1", "pool_2", "pool_3"], seed=0)

The pairs go to `preference_pairs` (method 'ai_feedback', the round), their lineage to
`pair_feedback` (judge, rubric, template hash, both means, margin, the per-aspect ratings with the
ids of the judgment rows holding the rationales, seed, pool roles, min_margin), all in one
transaction. Ids are content hashes of what makes a pair: instruction, chosen, rejected, judge,
rubric, template and round (not the seed: the same pair drawn under two seeds is one pair). So a
re-run with the same inputs adds nothing and replaces nothing, and a run with another seed adds
only the pairs whose rejected answer differs.

The rejected answer is the candidate with the smallest `draw_key(seed, instruction, answer)`, a
hash: a uniform seeded choice that SQL computes exactly as `binarise_reference` (plain Python, on
dicts) does; tests compare the two.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from core.ids import content_id
from core.selection import ExploreFilter

DEFAULT_RUBRIC = "zephyr_aspects"
METHOD = "ai_feedback"  # preference_pairs.method of the pairs binarise writes
MEAN_DECIMALS = 9       # as core.store.feedback: means are rounded before ties are looked for
PAIR = None             # the store's count key for "gave a pair" (instructions) and "rated" (answers)

__all__ = ["BinariseParams", "BinariseSummary", "DEFAULT_RUBRIC", "HumanAgreement", "METHOD", "agreement_of",
           "binarise", "binarise_reference", "draw_key", "human_agreement", "pair_id", "record_pair_verdict"]


def draw_key(seed: int, instruction_id: str, response_id: str) -> str:
    """The key the rejected answer is drawn by (the smallest among the candidates wins)."""
    return content_id("binarise", str(int(seed)), instruction_id, response_id)


def pair_id(instruction_id: str, chosen_id: str, rejected_id: str, judge_model: str, rubric: str,
            template_hash: str, round: int) -> str:
    """The id of an AI-feedback pair: everything that makes it a different pair, not the seed."""
    return content_id(METHOD, instruction_id, chosen_id, rejected_id, judge_model, rubric, template_hash, str(int(round)))


@dataclass(frozen=True)
class BinariseParams:
    """What a binarisation reads and how it draws; validated so a typo fails before any SQL runs."""

    judge_model: str
    roles: tuple[str, ...]
    rubric: str = DEFAULT_RUBRIC
    seed: int = 0
    round: int = 0
    min_margin: float = 0.0
    template_hash: str | None = None  # None: the template of this judge's newest aspect verdicts

    def __post_init__(self) -> None:
        from core import judge
        from core.stages import check_role

        if not isinstance(self.judge_model, str) or not self.judge_model.strip():
            raise ValueError(f"judge_model must be a judge's model name, not {self.judge_model!r}")
        if isinstance(self.roles, str) or not self.roles:
            raise ValueError(f"roles must be a list of the pool's answer roles, not {self.roles!r}")
        for role in self.roles:
            check_role(role, "pool role")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"pool roles repeat: {list(self.roles)}")
        if not judge.get_rubric(self.rubric).aspects:
            raise ValueError(f"rubric {self.rubric!r} rates no aspects; binarise reads a per-aspect rubric "
                             f"such as {DEFAULT_RUBRIC!r}")
        for name in ("seed", "round"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")
        if isinstance(self.min_margin, bool) or not isinstance(self.min_margin, (int, float)) \
                or not math.isfinite(self.min_margin) or self.min_margin < 0:
            raise ValueError(f"min_margin must be a number >= 0, not {self.min_margin!r}")

    @property
    def aspects(self) -> tuple[str, ...]:
        from core import judge

        return judge.get_rubric(self.rubric).aspects

    @property
    def aspect_rubrics(self) -> list[str]:
        """The rubric names the aspect rows are stored under (zephyr_aspects.helpfulness, …)."""
        return [f"{self.rubric}.{aspect}" for aspect in self.aspects]


@dataclass(frozen=True)
class BinariseSummary:
    """What one binarisation found and wrote."""

    judge_model: str
    rubric: str
    template_hash: str
    roles: list[str]
    seed: int
    round: int
    min_margin: float
    pairs: int                                            # instructions that gave a pair
    new: int                                              # of those, pairs not stored before
    dropped: dict[str, int] = field(default_factory=dict)  # instructions without a pair, by reason
    left_out: dict[str, int] = field(default_factory=dict)  # answers without a full rating, by reason
    rated: int = 0                                        # answers with all aspects rated

    @property
    def instructions(self) -> int:
        return self.pairs + sum(self.dropped.values())

    def as_dict(self) -> dict:
        return asdict(self) | {"instructions": self.instructions}

    def line(self) -> str:
        def reasons(counts: dict[str, int]) -> str:
            return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

        text = (f"{self.judge_model} · {self.rubric}: {self.pairs} pairs from {self.instructions} instructions "
                f"({self.new} new)")
        if self.dropped:
            text += f"; no pair: {reasons(self.dropped)}"
        if self.left_out:
            text += f"; answers left out: {reasons(self.left_out)}"
        return text


def binarise(ws, judge_model: str, roles: list[str], rubric: str = DEFAULT_RUBRIC, seed: int = 0, round: int = 0,
             selection: ExploreFilter | None = None, min_margin: float = 0.0, *,
             template_hash: str | None = None, answer_rounds: Mapping[str, int] | None = None) -> BinariseSummary:
    """Pairs from the stored aspect ratings of the pool's answers (`roles`, in `round`) to the
    selected instructions, written with their lineage in one transaction (see the module
    docstring). template_hash: read the verdicts of that judge prompt; None: the prompt of the
    judge's newest aspect verdicts (ratings from two prompts are not compared). Verdicts of any
    judge-job round count; `round` is the answers' round and the pairs'. answer_rounds: another
    round for some roles' answers ({role: round}; Zephyr's static pool models answer once, in
    round 0, the student anew in each round)."""
    p = BinariseParams(judge_model, tuple(roles), rubric, seed, round, float(min_margin), template_hash)
    answer_rounds = dict(answer_rounds or {})
    for role, rnd in answer_rounds.items():
        if role not in p.roles:
            raise ValueError(f"answer_rounds names role {role!r}, which is not one of the roles {list(p.roles)}")
        if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
            raise ValueError(f"answer_rounds[{role!r}] must be a whole number >= 0, not {rnd!r}")
    template = p.template_hash or ws.store.latest_aspect_template(p.judge_model, p.aspect_rubrics)
    if template is None:
        judges = ws.store.aspect_judges(p.aspect_rubrics)
        raise ValueError(f"judge {p.judge_model!r} has no parsed {p.rubric} verdicts; judges with some: "
                         f"{', '.join(judges) or 'none'} (rate the pool first: `winnow judge --judge MODEL "
                         f"--rubric {p.rubric} --role ROLE ...`)")
    counts = ws.store.binarise_pairs(
        selection or ExploreFilter(), judge_model=p.judge_model, rubric=p.rubric, aspect_rubrics=p.aspect_rubrics,
        template_hash=template, roles=list(p.roles), round=p.round, seed=p.seed, min_margin=p.min_margin,
        params={"roles": list(p.roles), "min_margin": p.min_margin}
        | ({"answer_rounds": answer_rounds} if answer_rounds else {}), answer_rounds=answer_rounds)
    dropped, left_out = dict(counts["pairs"]), dict(counts["answers"])
    return BinariseSummary(p.judge_model, p.rubric, template, list(p.roles), p.seed, p.round, p.min_margin,
                           pairs=dropped.pop(PAIR, 0), new=counts["new"], dropped=dropped,
                           rated=left_out.pop(PAIR, 0), left_out=left_out)


def binarise_reference(answers: Iterable[Mapping], seed: int = 0, min_margin: float = 0.0,
                       aspects: Iterable[str] | None = None,
                       instruction_ids: Iterable[str] | None = None) -> dict:
    """The binarisation rule in plain Python (tests check the SQL against it).

    answers: dicts with instruction_id, response_id and ratings ({aspect: score, or None when it
    did not parse}; an aspect absent counts as None), optionally `missing` (the reason an answer
    has no rating, e.g. 'not judged'; default 'aspect unparsed'). aspects: the rubric's (default
    zephyr_aspects'). instruction_ids: the selected instructions (default: those of the answers).

    Returns {"pairs": [{instruction_id, chosen_id, rejected_id, chosen_score, rejected_score,
    margin}], "dropped": {reason: instructions}, "left_out": {reason: answers}}, pairs in the
    order of instruction_ids."""
    if aspects is None:
        from core import judge

        aspects = judge.get_rubric(DEFAULT_RUBRIC).aspects
    aspects = tuple(aspects)
    by_instruction: dict[str, list[tuple[str, float]]] = {}
    answered: dict[str, None] = {}  # insertion-ordered: the default order of instructions
    left_out: Counter = Counter()
    for a in answers:
        answered.setdefault(a["instruction_id"])
        scores = [(a.get("ratings") or {}).get(aspect) for aspect in aspects]
        if any(s is None for s in scores):
            left_out[a.get("missing") or "aspect unparsed"] += 1
            continue
        mean = round(sum(scores) / len(scores), MEAN_DECIMALS)
        by_instruction.setdefault(a["instruction_id"], []).append((a["response_id"], mean))
    order = list(instruction_ids) if instruction_ids is not None else list(answered)
    pairs, dropped = [], Counter()
    for iid in order:
        rated = by_instruction.get(iid, [])
        if iid not in answered:
            dropped["no answer of these roles"] += 1
            continue
        if len(rated) < 2:
            dropped["fewer than two rated answers"] += 1
            continue
        top = max(mean for _, mean in rated)
        best = [rid for rid, mean in rated if mean == top]
        if len(best) > 1:
            dropped["tie at the top"] += 1
            continue
        lower = [(rid, mean) for rid, mean in rated
                 if mean < top and round(top - mean, MEAN_DECIMALS) >= min_margin]
        if not lower:
            dropped["no answer min_margin lower"] += 1
            continue
        rejected_id, rejected_score = min(lower, key=lambda rm: draw_key(seed, iid, rm[0]))
        pairs.append({"instruction_id": iid, "chosen_id": best[0], "rejected_id": rejected_id, "chosen_score": top,
                      "rejected_score": rejected_score, "margin": round(top - rejected_score, MEAN_DECIMALS)})
    return {"pairs": pairs, "dropped": dict(dropped), "left_out": dict(left_out)}


# --------------------------------------------------------------------------------------------
# Human verdicts on pairs: how far the AI judge's preferences agree with people's
# --------------------------------------------------------------------------------------------

# A human verdict on a pair is a review of target_kind 'pair' (core.workspace.review): accept =
# the chosen answer is better (the judge was right), reject = the rejected one is, tie.
HUMAN_VERDICTS = {"chosen": "accept", "rejected": "reject", "tie": "tie"}
HUMAN_PREFERENCE = {"accept": 1.0, "tie": 0.0, "reject": -1.0}  # for τ: +1 agrees with the judge


def record_pair_verdict(ws, pair_id: str, better: str, reviewer: str | None = None,
                        source: str = "preferences") -> str:
    """A person's verdict on an AI-feedback pair: better = 'chosen', 'rejected' or 'tie'. Stored
    as a review of the pair (append-only; the latest counts). Returns the review id."""
    if better not in HUMAN_VERDICTS:
        raise ValueError(f"better must be one of {', '.join(HUMAN_VERDICTS)}, not {better!r}")
    return ws.review(pair_id, HUMAN_VERDICTS[better], target_kind="pair", reviewer=reviewer, source=source)


@dataclass(frozen=True)
class HumanAgreement:
    """The AI judge against human verdicts on its pairs.

    agreement: share of the pairs a person did not call a tie where the person also prefers the
    chosen answer, with a Wilson interval (core.calibration.proportion). tau: Kendall τ-b between
    the judge's margin and the human preference (+1 chosen better, 0 tie, −1 rejected better),
    ties included, with a seeded bootstrap interval: positive when bigger margins are the pairs
    people agree with more."""

    n_verdicts: int
    n_ties: int
    agreement: object   # core.calibration.Proportion
    tau: object         # core.calibration.Tau

    def as_dict(self) -> dict:
        a, t = self.agreement, self.tau
        return {"n_verdicts": self.n_verdicts, "n_ties": self.n_ties, "agree": a.k, "n": a.n,
                "agreement": a.value, "agreement_low": a.low, "agreement_high": a.high,
                "tau": t.value, "tau_low": t.low, "tau_high": t.high, "tau_n": t.n}

    def line(self) -> str:
        if not self.n_verdicts:
            return "no human verdict on these pairs yet"
        return (f"agreement with people {self.agreement} over {self.agreement.n} pairs ({self.n_ties} ties left out); "
                f"τ(margin, human) {self.tau}")


def human_agreement(ws, judge_model: str | None = None, round: int | None = None, bootstrap: int = 1000,
                    seed: int = 0) -> HumanAgreement:
    """The judge's agreement with the human verdicts on its pairs (of one judge and round, or all)."""
    rows = ws.store.pair_verdicts(judge_model, round)
    return agreement_of([(r["margin"], r["decision"]) for r in rows], bootstrap=bootstrap, seed=seed)


def agreement_of(margin_decisions: Iterable[tuple[float, str]], bootstrap: int = 1000, seed: int = 0) -> HumanAgreement:
    """HumanAgreement from (margin, decision) pairs, decision accept | reject | tie."""
    from core.calibration import kendall_tau, proportion

    rows = list(margin_decisions)
    bad = sorted({d for _, d in rows if d not in HUMAN_PREFERENCE}, key=str)
    if bad:
        raise ValueError(f"a pair verdict is accept, reject or tie, not {bad[0]!r}")
    decided = [d for _, d in rows if d != "tie"]
    agreement = proportion(sum(d == "accept" for d in decided), len(decided))
    tau = kendall_tau([float(m) for m, _ in rows], [HUMAN_PREFERENCE[d] for _, d in rows], bootstrap=bootstrap,
                      seed=seed)
    return HumanAgreement(len(rows), len(rows) - len(decided), agreement, tau)
