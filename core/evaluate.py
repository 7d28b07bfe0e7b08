"""Evaluation: model A against model B on held-out prompts (issue 13, item 4; DESIGN.md §8).

    from core.evaluate import evaluate
    ev = evaluate(ws, "student-r2", "student-r1", "addition_heldout", judge="exact")
    print(ev.line())   # student-r2 vs student-r1 on addition_heldout (40 prompts): win 0.62 [0.47, 0.75], …

Top to bottom, every step a stage job (core.stages), run to the end and ingested:

1. The prompt set: the dataset's first `limit` instructions (Explore's order).
2. A and B answer them (`generate`, greedy, seeded). The answers get a role of their own per
   model, `eval_<model>` (see `answer_role`), so they never mix with teacher, student or training
   answers, and an answer of a model is reused by every evaluation of that model.
3. A pairwise judge compares A's answer with B's in both orders (the judge stage asks both).
4. Optionally a pointwise judge scores every answer (`pointwise="pointwise_5"`): a mean per model.

Then the numbers come from the stored judgments, never from the jobs' memory:
- a pair's verdict is the mean of its two orders' preference for A (1 A better, 0.5 tie, 0 B
  better; continuous in probability mode): above 0.5 a win for A, below a loss, 0.5 a tie. So an
  A/B flip between the orders is a tie, and A/tie is a (weak) win.
- the order-flip rate: pairs judged in both orders whose two verdicts fall on different sides of
  0.5 (`core.judge.pair_side`, the Judgments page's convention).
- the win rate is wins / n with a Wilson 95% interval; ties are reported apart (tie and loss
  rates), not counted as half a win.
- exact match where a prompt has a reference answer (a response of role 'reference', else the
  instruction's meta `reference`, as core.synthetic's prompt files write): the answer, stripped,
  equals the reference, stripped. An unanswered prompt counts as wrong.

Resumable as core.difficulty.run_difficulty_chain is: a step whose outputs exist (answers of that
model to every prompt; verdicts in both orders on every pair) is skipped, and an unfinished job of
the same step is resumed. The result is stored in `evaluations`, one row per (model pair, prompt
dataset, judge, rubric, round); `evaluations(ws)` and `latest_evaluation(ws, a, b)` read it back.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from core import judge as judge_mod
from core.calibration import Proportion, proportion
from core.difficulty import ChainFailed, ChainStep, run_step
from core.ids import content_id
from core.selection import ExploreFilter
from core.stages import JUDGE_MODES, ROLE_RE

__all__ = ["EvalConfig", "Evaluation", "answer_role", "evaluate", "evaluations", "latest_evaluation", "ChainFailed"]

# Evaluation answers are greedy and seeded: the same model gives the same answers, hence the same
# response ids, so a re-run adds nothing and every evaluation of a model shares its answers.
EVAL_GENERATION = {"temperature": 0.0, "seed": 0, "n": 1}
JOB_LIMIT = 1_000_000  # the judge stage's own default: the ids filter bounds what it reads


def answer_role(model: str) -> str:
    """The response role of a model's evaluation answers: `eval_<model>` when the name is already
    a valid role, else a readable slug plus a hash of the name (so 'a-b' and 'a_b' never share one)."""
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")
    role = f"eval_{slug}"
    if slug == model and ROLE_RE.match(role):
        return role
    return f"eval_{slug[:18]}_{hashlib.sha256(model.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class EvalConfig:
    """What an evaluation compares and how; validated here, before anything is written."""

    model_a: str
    model_b: str
    prompts: str                      # the prompt dataset's name
    judge: str
    rubric: str = "pairwise"          # a pairwise rubric
    round: int = 0
    limit: int | None = None          # the dataset's first `limit` prompts; None: all
    max_tokens: int = 256             # per answer
    pointwise: str | None = None      # an optional pointwise rubric for a mean score per model
    mode: str = "auto"                # the judge's scoring mode (core.stages.JUDGE_MODES)
    shard_size: int = 16

    def __post_init__(self) -> None:
        for name in ("model_a", "model_b", "prompts", "judge"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty name, not {value!r}")
        if self.model_a == self.model_b:
            raise ValueError(f"model A and model B are both {self.model_a!r}; compare two different models")
        if judge_mod.get_rubric(self.rubric).kind != "pairwise":
            raise ValueError(f"rubric must be a pairwise rubric (e.g. 'pairwise'), not {self.rubric!r}")
        if self.pointwise is not None and judge_mod.get_rubric(self.pointwise).kind != "pointwise":
            raise ValueError(f"pointwise must be a pointwise rubric (e.g. 'pointwise_5'), not {self.pointwise!r}")
        for name, low in (("round", 0), ("max_tokens", 1), ("shard_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer ≥ {low}, not {value!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or isinstance(self.limit, bool)
                                       or self.limit < 1):
            raise ValueError(f"limit must be a positive integer or None, not {self.limit!r}")
        if self.mode not in JUDGE_MODES:
            raise ValueError(f"mode must be one of {', '.join(JUDGE_MODES)}, not {self.mode!r}")

    @property
    def id(self) -> str:
        """One evaluation per (model pair, prompts, judge, rubric, round)."""
        return content_id("evaluation", self.model_a, self.model_b, self.prompts, self.judge, self.rubric,
                          str(self.round))

    @property
    def roles(self) -> tuple[str, str]:
        return answer_role(self.model_a), answer_role(self.model_b)


@dataclass
class Evaluation:
    """Counts are for model A: a win is a pair whose verdict prefers A."""

    config: EvalConfig
    n_prompts: int
    n: int                    # pairs with a verdict (at least one order parsed)
    wins: int
    ties: int
    losses: int
    n_both_orders: int        # pairs with a parsed verdict in both orders
    flips: int                # of those, the two orders' verdicts on different sides
    score_a: float | None = None   # mean pointwise score (config.pointwise), None without one
    score_b: float | None = None
    n_reference: int = 0
    exact_a: int | None = None     # answers equal to the reference, of n_reference
    exact_b: int | None = None
    meta: dict = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    steps: list[ChainStep] = field(default_factory=list)
    created_at: str | None = None

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def win(self) -> Proportion:
        return proportion(self.wins, self.n)

    @property
    def flip(self) -> Proportion:
        return proportion(self.flips, self.n_both_orders)

    def rate(self, k: int | None, n: int) -> float | None:
        return None if k is None or not n else k / n

    @property
    def exact_match_a(self) -> Proportion | None:
        return proportion(self.exact_a, self.n_reference) if self.n_reference else None

    @property
    def exact_match_b(self) -> Proportion | None:
        return proportion(self.exact_b, self.n_reference) if self.n_reference else None

    def line(self) -> str:
        c = self.config
        head = f"{c.model_a} vs {c.model_b} on {c.prompts} ({self.n_prompts} prompts): "
        if not self.n:
            parts = ["no pair judged"]
        else:
            w = self.win
            parts = [f"win {w.value:.2f} [{w.low:.2f}, {w.high:.2f}]", f"tie {self.ties / self.n:.2f}",
                     f"loss {self.losses / self.n:.2f}"]
            parts.append("order flips " + (f"{self.flip.value:.2f}" if self.n_both_orders else "n/a"))
        if self.n_reference:
            parts.append(f"exact match {c.model_a} {self.exact_a / self.n_reference:.2f} / "
                         f"{c.model_b} {self.exact_b / self.n_reference:.2f}")
        if c.pointwise:
            parts.append(f"{c.pointwise} {c.model_a} {_num(self.score_a)} / {c.model_b} {_num(self.score_b)}")
        return head + ", ".join(parts)

    def as_dict(self) -> dict:
        """JSON-ready: the stored row's numbers plus the rates, intervals and this call's steps."""
        w, f = self.win, self.flip
        ea, eb = self.exact_match_a, self.exact_match_b
        return {
            "id": self.id, **asdict(self.config), "n_prompts": self.n_prompts, "n": self.n, "wins": self.wins,
            "ties": self.ties, "losses": self.losses, "n_both_orders": self.n_both_orders, "flips": self.flips,
            "win_rate": w.value, "win_low": w.low if self.n else None, "win_high": w.high if self.n else None,
            "tie_rate": self.rate(self.ties, self.n), "loss_rate": self.rate(self.losses, self.n),
            "flip_rate": f.value, "score_a": self.score_a, "score_b": self.score_b, "n_reference": self.n_reference,
            "exact_a": self.exact_a, "exact_b": self.exact_b,
            "exact_match_a": ea.value if ea else None, "exact_match_b": eb.value if eb else None,
            "exact_match_a_interval": [ea.low, ea.high] if ea else None,
            "exact_match_b_interval": [eb.low, eb.high] if eb else None,
            "meta": self.meta, "jobs": self.jobs, "steps": [asdict(s) for s in self.steps],
            "created_at": self.created_at, "line": self.line(),
        }

    def row(self) -> dict:
        """The `evaluations` row (core.store.evaluations.EVALUATION_COLUMNS)."""
        w, c = self.win, self.config
        return {"id": self.id, "model_a": c.model_a, "model_b": c.model_b, "prompts": c.prompts, "round": c.round,
                "judge": c.judge, "rubric": c.rubric, "n_prompts": self.n_prompts, "n": self.n, "wins": self.wins,
                "ties": self.ties, "losses": self.losses, "n_both_orders": self.n_both_orders, "flips": self.flips,
                "win_rate": w.value, "win_low": w.low if self.n else None, "win_high": w.high if self.n else None,
                "flip_rate": self.flip.value, "pointwise_rubric": c.pointwise, "score_a": self.score_a,
                "score_b": self.score_b, "n_reference": self.n_reference, "exact_a": self.exact_a,
                "exact_b": self.exact_b, "config": asdict(c), "jobs": self.jobs, "meta": self.meta}

    @classmethod
    def from_row(cls, row: dict) -> Evaluation:
        config = EvalConfig(**_json(row["config"]))
        return cls(config=config, n_prompts=row["n_prompts"], n=row["n"], wins=row["wins"], ties=row["ties"],
                   losses=row["losses"], n_both_orders=row["n_both_orders"], flips=row["flips"],
                   score_a=row["score_a"], score_b=row["score_b"], n_reference=row["n_reference"],
                   exact_a=row["exact_a"], exact_b=row["exact_b"], meta=_json(row["meta"]) or {},
                   jobs=_json(row["jobs"]) or [], created_at=str(row["created_at"]))


# --------------------------------------------------------------------------------------------
# Running an evaluation
# --------------------------------------------------------------------------------------------


def evaluate(ws, model_a: str, model_b: str, prompts_dataset: str, judge: str, rubric: str = "pairwise",
             round: int = 0, limit: int | None = None, max_tokens: int = 256,
             progress: Callable[[dict], None] | None = None, *, pointwise: str | None = None, mode: str = "auto",
             shard_size: int = 16, runner: Callable[..., ChainStep] = run_step) -> Evaluation:
    """A against B on the prompt dataset, judged pairwise in both orders; stored and returned.

    runner: how a step's job runs, with core.difficulty.run_step's signature (the default runs it
    to the end). A round passes its durable runner (core.rounds), which records the job and
    raises while it runs; calling evaluate again then continues, because every step reads what
    is left to do from the catalog.

    Raises ValueError (nothing written) for an unknown model, judge or dataset, or an empty one;
    ChainFailed when a job does not finish (run again, or `winnow jobs resume JOB`)."""
    config = EvalConfig(model_a, model_b, prompts_dataset, judge, rubric, round, limit, max_tokens, pointwise,
                        mode, shard_size)
    for name in (config.model_a, config.model_b, config.judge):
        ws.model(name)  # a ValueError naming the known models
    dataset_id = ws.store.dataset_id(config.prompts)
    if dataset_id is None:
        raise ValueError(f"no dataset named {config.prompts!r} in this workspace (import the prompts first)")
    ids = ws.store.eval_prompt_ids(dataset_id, config.limit or JOB_LIMIT)
    if not ids:
        raise ValueError(f"dataset {config.prompts!r} holds no instruction to evaluate on")

    steps = [_answer_step(ws, config, side, ids, progress, runner) for side in ("A", "B")]
    rows = _eval_rows(ws, config, ids)
    steps.append(_pairwise_step(ws, config, rows, progress, runner))
    if config.pointwise:
        steps.append(_pointwise_step(ws, config, rows, progress, runner))

    result = aggregate(ws, config, ids, rows)
    result.steps = steps
    earlier = ws.store.evaluation(config.id)
    result.jobs = _merged(_json(earlier["jobs"]) if earlier else [], [s.job for s in steps if s.job])
    ws.store.upsert_evaluation(result.row())
    result.created_at = str(ws.store.evaluation(config.id)["created_at"])
    if progress:
        progress({"step": "evaluation", "status": "done", "line": result.line()})
    return result


def _answer_step(ws, config: EvalConfig, side: str, ids: list[str], progress, runner=run_step) -> ChainStep:
    model = config.model_a if side == "A" else config.model_b
    role = answer_role(model)
    todo = ws.store.eval_missing_answers(ids, role, model)
    params = {"model": model, "role": role, "max_tokens": config.max_tokens} | EVAL_GENERATION
    return runner(ws, f"answers of {side} ({model})", "generate", params, ExploreFilter(ids=todo), max(len(todo), 1),
                    config.round, config.shard_size, bool(todo), progress)


def _eval_rows(ws, config: EvalConfig, ids: list[str]) -> list[dict]:
    (role_a, role_b), c = config.roles, config
    rows = ws.store.eval_rows(ids, role_a, c.model_a, role_b, c.model_b)
    for r in rows:
        both = r["a_id"] is not None and r["b_id"] is not None
        r["pair_id"] = judge_mod.pair_target_id(r["a_id"], r["b_id"]) if both else None
    return rows


def _mode(config: EvalConfig) -> str | None:
    """The mode verdicts are read in: any, for 'auto' (it resolves per backend inside the job)."""
    return None if config.mode == "auto" else config.mode


def _pairwise_step(ws, config: EvalConfig, rows: list[dict], progress, runner=run_step) -> ChainStep:
    pairs = [r for r in rows if r["pair_id"]]
    verdicts = _verdicts(ws, config.judge, config.rubric, [r["pair_id"] for r in pairs], _mode(config))
    todo = [r["instruction_id"] for r in pairs
            if any(not verdicts.get((r["pair_id"], order), {}).get("n_done") for order in ("ab", "ba"))]
    params = {"model": config.judge, "rubric": config.rubric, "roles": list(config.roles), "mode": config.mode}
    return runner(ws, "pairwise judge", "judge", params, ExploreFilter(ids=todo), JOB_LIMIT, config.round,
                    config.shard_size, bool(todo), progress)


def _pointwise_step(ws, config: EvalConfig, rows: list[dict], progress, runner=run_step) -> ChainStep:
    answers = [(r["instruction_id"], r[key]) for r in rows for key in ("a_id", "b_id") if r[key]]
    verdicts = _verdicts(ws, config.judge, config.pointwise, [a for _, a in answers], _mode(config))
    todo = sorted({iid for iid, a in answers if not verdicts.get((a, None), {}).get("n_done")})
    params = {"model": config.judge, "rubric": config.pointwise, "roles": list(config.roles), "mode": config.mode}
    return runner(ws, "pointwise judge", "judge", params, ExploreFilter(ids=todo), JOB_LIMIT, config.round,
                    config.shard_size, bool(todo), progress)


def _verdicts(ws, judge: str, rubric: str, targets: list[str], mode: str | None) -> dict[tuple, dict]:
    """{(target, order or None): {score, n_parsed, n_done}} for one judge and rubric."""
    if not targets:
        return {}
    return {(v["target_id"], v["order"]): v for v in ws.store.eval_verdicts(judge, rubric, targets, mode)}


def aggregate(ws, config: EvalConfig, ids: list[str], rows: list[dict] | None = None) -> Evaluation:
    """The evaluation's numbers from the stored answers and judgments (no model runs)."""
    rows = _eval_rows(ws, config, ids) if rows is None else rows
    pairs = [r for r in rows if r["pair_id"]]
    verdicts = _verdicts(ws, config.judge, config.rubric, [r["pair_id"] for r in pairs], _mode(config))
    n = wins = ties = losses = both = flips = 0
    for r in pairs:
        by_order = [verdicts.get((r["pair_id"], order)) for order in ("ab", "ba")]
        scores = [v["score"] for v in by_order if v and v["n_parsed"]]
        if not scores:
            continue
        n += 1
        side = judge_mod.pair_side(sum(scores) / len(scores))
        wins, ties, losses = wins + (side == "A"), ties + (side == "tie"), losses + (side == "B")
        if len(scores) == 2:
            both += 1
            flips += judge_mod.pair_side(scores[0]) != judge_mod.pair_side(scores[1])
    result = Evaluation(config, n_prompts=len(ids), n=n, wins=wins, ties=ties, losses=losses, n_both_orders=both,
                        flips=flips)
    with_reference = [r for r in rows if r["reference"] is not None]
    result.n_reference = len(with_reference)
    if with_reference:
        result.exact_a = sum(_exact(r["a_text"], r["reference"]) for r in with_reference)
        result.exact_b = sum(_exact(r["b_text"], r["reference"]) for r in with_reference)
    result.meta = {"unanswered_a": sum(r["a_id"] is None for r in rows),
                   "unanswered_b": sum(r["b_id"] is None for r in rows),
                   "pairs": len(pairs), "roles": list(config.roles)}
    if config.pointwise:
        scored = _verdicts(ws, config.judge, config.pointwise, [r[k] for r in rows for k in ("a_id", "b_id") if r[k]],
                           _mode(config))
        for side, key in (("a", "a_id"), ("b", "b_id")):
            values = [scored[(r[key], None)]["score"] for r in rows
                      if r[key] and scored.get((r[key], None), {}).get("n_parsed")]
            setattr(result, f"score_{side}", sum(values) / len(values) if values else None)
            result.meta[f"scored_{side}"] = len(values)
    return result


def _exact(answer: str | None, reference: str) -> bool:
    return answer is not None and answer.strip() == reference.strip()


# --------------------------------------------------------------------------------------------
# Reading stored evaluations
# --------------------------------------------------------------------------------------------


def evaluations(ws, model: str | None = None, round: int | None = None) -> list[Evaluation]:
    """Stored evaluations, newest first; only those with `model` on either side, or in `round`."""
    return [Evaluation.from_row(r) for r in ws.store.evaluations(model, round)]


def latest_evaluation(ws, model_a: str, model_b: str, prompts: str | None = None) -> Evaluation | None:
    """The newest stored evaluation of A against B (in that direction), on `prompts` if given."""
    row = ws.store.latest_evaluation(model_a, model_b, prompts)
    return Evaluation.from_row(row) if row else None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _merged(old: list[str], new: list[str]) -> list[str]:
    return old + [j for j in new if j not in old]


def _num(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
