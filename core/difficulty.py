"""Difficulty per instruction: TAPIR's MFD and the IFD of Li et al. (DESIGN.md §1, §6).

**MFD** (Model Fitting Difficulty, TAPIR, arXiv 2405.13448): MFD(x) = judge(teacher answer) −
judge(student answer), read from the stored verdicts of ONE judge (judge model + rubric, optionally
one template hash or scoring mode). A high MFD is an instruction the student has not learned to
answer yet; TAPIR keeps MFD > δ as seeds. No model runs here: `compute_mfd` is one SQL pass over
responses and judgments (core.store.difficulty), so it is cheap to recompute at 1M instructions.
With several answers of a role, the role's score is the mean of its answers' parsed scores (each
answer's score is the mean of its parsed verdicts) and the row's meta lists the answers used.
When a score is missing the value is NULL (never 0) and `missing` says why, from the teacher's
side first:

    no teacher or student answer   neither role answered the instruction in this round
    no teacher answer              (or student) no response of that role in the round
    teacher answer not judged      answers exist, but this judge has no verdict on any of them
    teacher judge call failed      every verdict is a failed call (call_error), not a parse failure
    teacher verdict unparsed       verdicts exist, none parsed

**IFD** (Instruction-Following Difficulty, Li et al. 2023, "From Quantity to Quality", arXiv
2308.12032): IFD(x, y) = PPL(y | x) / PPL(y), PPL = exp(−mean token log-prob of y), i.e.
exp(mean_lp(y) − mean_lp(y | x)). Above 1 the instruction does not help the model predict the
answer at all. Conditioned: the chat `core.generate.conversation_for` builds (system, history,
instruction and input). Unconditioned: the paper scores the answer as bare text; every backend
here scores through the chat template, so we use a conversation with one EMPTY user turn. That
keeps the template's scaffolding (turn markers, assistant header) identical on both sides, so the
ratio measures the instruction's content only. IFD needs a model, so it is a job stage (`ifd`,
registered below): resumable, sharded, ingested into `difficulty` like any stage's output.
One answer per instruction and round is scored (the oldest of the role), because a difficulty
row is per (instruction, round, metric, source). Rows: teacher_response_id holds the scored
answer (the answer to be fitted: TAPIR's teacher answer); the log-probs are in meta.

The chain (`run_difficulty_chain`) runs TAPIR's scoring end to end on existing stages:
teacher answers, student answers, the judge on both, then MFD.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core import jobs, stages
from core.calibration import Tau, kendall_tau
from core.generate import conversation_for
from core.ids import content_id
from core.llm.base import ScoreResult
from core.selection import ExploreFilter
from core.stages import Output, Stage, check_role, param
from core.store.difficulty import NO_LIMIT

METRICS = ("mfd", "ifd")
SIDES = ("teacher", "student")
IFD_REASONS = ("too long", "empty response", "scoring error")
# The unconditioned side of IFD: the answer after an empty user turn (see the module docstring).
UNCONDITIONED: list[dict] = [{"role": "user", "content": ""}]
# TAPIR's judge scale is 1-10, so MFD bins of 1 show the whole distribution.
DEFAULT_BIN_WIDTH = 1.0
# Kendall τ with a bootstrap interval is O(n log n)-ish per draw on few distinct values, but MFD
# from probability-mode judges and IFD are continuous: cap the sample it is computed on.
KENDALL_MAX_N = 2000

DIFFICULTY_SCHEMA = pa.schema([
    ("id", pa.string()), ("instruction_id", pa.string()), ("round", pa.int32()), ("metric", pa.string()),
    ("source", pa.string()), ("value", pa.float64()), ("teacher_response_id", pa.string()),
    ("student_response_id", pa.string()), ("teacher_score", pa.float64()), ("student_score", pa.float64()),
    ("missing", pa.string()), ("meta", pa.string()),
])
DIFFICULTY_COLUMNS = tuple(DIFFICULTY_SCHEMA.names)


def difficulty_id(instruction_id: str, round: int, metric: str, source: str) -> str:
    """The row id; core.store.difficulty computes the same hash in SQL."""
    return content_id(instruction_id, str(int(round)), metric, source)


def mfd_source(judge_model: str, rubric: str, *, mode: str | None = None, template_hash: str | None = None,
               teacher_role: str = "teacher", student_role: str = "student") -> str:
    """`judge_model/rubric`, plus whatever else distinguishes this MFD from another one: a row id
    includes its source, so two judges' (or modes', or role pairs') MFDs never overwrite each other."""
    source = f"{judge_model}/{rubric}"
    if mode:
        source += f"/{mode}"
    if template_hash:
        source += f"@{template_hash}"
    if (teacher_role, student_role) != ("teacher", "student"):
        source += f":{teacher_role}-{student_role}"
    return source


def ifd_source(model: str, role: str) -> str:
    return f"{model}/{role}"


# --------------------------------------------------------------------------------------------
# MFD
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MFDParams:
    """Which verdicts an MFD is read from; validated so a typo fails before any SQL runs."""

    judge_model: str
    rubric: str
    teacher_role: str = "teacher"
    student_role: str = "student"
    round: int = 0
    template_hash: str | None = None
    mode: str | None = None  # None: every mode's verdicts of this judge and rubric
    teacher_round: int | None = None  # the round of the teacher's answers; None: `round`

    def __post_init__(self) -> None:
        from core import judge

        if not isinstance(self.judge_model, str) or not self.judge_model:
            raise ValueError(f"judge_model must be a model name, not {self.judge_model!r}")
        rubric = judge.get_rubric(self.rubric)
        if rubric.kind != "pointwise":
            raise ValueError(f"MFD needs a pointwise rubric (a score per answer); {rubric.name!r} is {rubric.kind}")
        check_role(self.teacher_role, "teacher role")
        check_role(self.student_role, "student role")
        if self.teacher_role == self.student_role:
            raise ValueError(f"the teacher and student roles must differ, not both {self.teacher_role!r}")
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 0:
            raise ValueError(f"round must be an integer ≥ 0, not {self.round!r}")
        if self.mode is not None and self.mode not in ("probability", "generate"):
            raise ValueError(f"mode must be None, 'probability' or 'generate', not {self.mode!r}")
        if self.teacher_round is not None and (isinstance(self.teacher_round, bool)
                                               or not isinstance(self.teacher_round, int) or self.teacher_round < 0):
            raise ValueError(f"teacher_round must be None or an integer ≥ 0, not {self.teacher_round!r}")

    @property
    def source(self) -> str:
        return mfd_source(self.judge_model, self.rubric, mode=self.mode, template_hash=self.template_hash,
                          teacher_role=self.teacher_role, student_role=self.student_role)


@dataclass(frozen=True)
class MFDSummary:
    """What one MFD computation wrote: rows with a value, and NULL rows by reason."""

    source: str
    round: int
    computed: int
    null: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.computed + sum(self.null.values())

    def as_dict(self) -> dict:
        return asdict(self) | {"total": self.total}

    def __str__(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.null.items(), key=lambda kv: -kv[1]))
        return (f"MFD {self.source} round {self.round}: {self.computed} of {self.total} instructions"
                + (f"; NULL: {reasons}" if reasons else ""))


def compute_mfd(ws, judge_model: str, rubric: str, teacher_role: str = "teacher", student_role: str = "student",
                round: int = 0, selection: ExploreFilter | None = None, *, limit: int | None = None,
                template_hash: str | None = None, mode: str | None = None,
                teacher_round: int | None = None) -> MFDSummary:
    """MFD for every selected instruction (the first `limit`, oldest first, as jobs take them),
    written to `difficulty`; recomputing replaces the earlier rows of the same source and round.
    teacher_round: read the teacher's answers from that round (a TAPIR round reuses the teacher's
    round-0 answers and compares them with the current student's); None: the same round."""
    p = MFDParams(judge_model, rubric, teacher_role, student_role, int(round), template_hash, mode, teacher_round)
    counts = ws.store.compute_mfd(selection or ExploreFilter(), limit, judge_model=p.judge_model, rubric=p.rubric,
                                  teacher_role=p.teacher_role, student_role=p.student_role, round=p.round,
                                  source=p.source, template_hash=p.template_hash, mode=p.mode,
                                  teacher_round=p.teacher_round)
    return MFDSummary(p.source, p.round, counts.pop(None, 0), counts)


def mfd_reference(instruction_ids: Iterable[str], responses: Iterable[Mapping], judgments: Iterable[Mapping],
                  teacher_role: str = "teacher", student_role: str = "student", round: int = 0) -> dict[str, dict]:
    """The MFD rule in plain Python (tests check the SQL against it).

    responses: dicts with id, instruction_id, role, round, in insertion order. judgments: dicts
    with target_id, score (None = unparsed) and optionally call_error, already limited to one
    judge. Returns, per instruction: value, missing, teacher/student score and response id."""
    verdicts: dict[str, list] = {}
    for j in judgments:
        verdicts.setdefault(j["target_id"], []).append(j)
    answers: dict[tuple[str, str], list[str]] = {}
    for r in responses:
        if r["round"] == round and r["role"] in (teacher_role, student_role):
            answers.setdefault((r["instruction_id"], r["role"]), []).append(r["id"])

    def side(instruction_id: str, role: str, name: str) -> tuple[float | None, str | None, str | None]:
        ids = answers.get((instruction_id, role))
        if not ids:
            return None, None, f"no {name} answer"
        scores = {}
        for rid in ids:
            parsed = [v["score"] for v in verdicts.get(rid, []) if v["score"] is not None]
            if parsed:
                scores[rid] = sum(parsed) / len(parsed)
        if scores:
            return sum(scores.values()) / len(scores), next(iter(scores)), None
        judged = [v for rid in ids for v in verdicts.get(rid, [])]
        if not judged:
            return None, ids[0], f"{name} answer not judged"
        if all(v.get("call_error") for v in judged):
            return None, ids[0], f"{name} judge call failed"
        return None, ids[0], f"{name} verdict unparsed"

    out = {}
    for iid in instruction_ids:
        t_score, t_id, t_missing = side(iid, teacher_role, "teacher")
        s_score, s_id, s_missing = side(iid, student_role, "student")
        if t_missing == "no teacher answer" and s_missing == "no student answer":
            missing = "no teacher or student answer"
        else:
            missing = t_missing or s_missing
        out[iid] = {"value": None if missing else t_score - s_score, "missing": missing, "teacher_score": t_score,
                    "student_score": s_score, "teacher_response_id": t_id, "student_response_id": s_id}
    return out


# --------------------------------------------------------------------------------------------
# IFD: a job stage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IFDParams:
    # IFD asks how much an instruction helps a model predict an answer. For TAPIR's question (how
    # hard is the teacher's answer for the student to fit) score the teacher's answers with the
    # student model, hence the default role.
    model: Any = param(help="the scoring model (for TAPIR: the student)", short="-m", kind="model",
                       label="Scoring model")
    role: str = param("teacher", "role of the answers to score (one per instruction and round: the oldest)",
                      short="-r", kind="role", label="Answer role")

    def __post_init__(self) -> None:
        if not (isinstance(self.model, (str, dict)) and self.model):
            raise ValueError(f"model must be a model name or spec, not {self.model!r}")
        check_role(self.role, "answer role")


def ifd_input_table(rows: list[dict]) -> pa.Table:
    """Job input rows from (instruction_id, response_id, round, text, input, system, history,
    response) rows: the conditioned conversation as JSON, and the answer to score."""
    return pa.table({
        "response_id": pa.array([r["response_id"] for r in rows], pa.string()),
        "instruction_id": pa.array([r["instruction_id"] for r in rows], pa.string()),
        "round": pa.array([int(r["round"]) for r in rows], pa.int32()),
        "conversation": pa.array([json.dumps(conversation_for(r["text"], r.get("input"), r.get("system"),
                                                              r.get("history"))) for r in rows], pa.string()),
        "response": pa.array([r["response"] for r in rows], pa.string()),
    })


def select_ifd_rows(ws, p: IFDParams, selection: ExploreFilter, limit: int) -> pa.Table:
    """The stage's input: the oldest answer of the role per selected instruction and round that
    has no IFD value from this model yet (re-running a finished job's stage adds nothing).
    The rows' round is the answer's round, so the job's own round does not enter."""
    name = p.model["name"] if isinstance(p.model, dict) else p.model
    rows = ws.store.responses_for_ifd(selection, p.role, ifd_source(name, p.role), limit)
    if not rows:
        raise ValueError(f"the selection holds no answer of role {p.role!r} without an IFD from {name}; "
                         "nothing to score")
    return ifd_input_table(rows)


def ifd_value(conditioned: ScoreResult, unconditioned: ScoreResult) -> tuple[float | None, str | None]:
    """(IFD, None), or (None, why) when either side has no mean log-prob."""
    for result in (conditioned, unconditioned):
        if result.too_long:
            return None, "too long"
        if result.error:
            return None, "scoring error"
        if result.mean_logprob is None or not result.n_tokens:
            return None, "empty response"
    # PPL(y|x) / PPL(y) = exp(-lp_with) / exp(-lp_without); the exponent is a difference of two
    # mean log-probs, so it cannot overflow for any real model.
    return math.exp(unconditioned.mean_logprob - conditioned.mean_logprob), None


def run_ifd_shard(ctx, rows: pa.Table) -> pa.Table:
    """Score each answer with and without its instruction (one batched call for both) and turn
    the pair into a difficulty row; n_tokens is the tokens scored, for the job's tokens/s."""
    model, role = ctx.config["model"]["name"], ctx.config["role"]
    source = ifd_source(model, role)
    items = rows.to_pylist()
    responses = [it["response"] for it in items]
    scores = ctx.backend.score([json.loads(it["conversation"]) for it in items] + [UNCONDITIONED] * len(items),
                               responses + responses)
    out: dict[str, list] = {name: [] for name in DIFFICULTY_COLUMNS + ("n_tokens",)}
    for it, with_, without in zip(items, scores[:len(items)], scores[len(items):], strict=True):
        value, missing = ifd_value(with_, without)
        meta = {"response_id": it["response_id"], "role": role, "model": model,
                "unconditioned": "empty user turn",
                "mean_logprob_conditioned": with_.mean_logprob, "mean_logprob_unconditioned": without.mean_logprob,
                "n_tokens_conditioned": with_.n_tokens, "n_tokens_unconditioned": without.n_tokens,
                "error": with_.error or without.error}
        row = {"id": difficulty_id(it["instruction_id"], it["round"], "ifd", source),
               "instruction_id": it["instruction_id"], "round": it["round"], "metric": "ifd", "source": source,
               "value": value, "teacher_response_id": it["response_id"], "student_response_id": None,
               "teacher_score": None, "student_score": None, "missing": missing, "meta": json.dumps(meta),
               "n_tokens": (with_.n_tokens or 0) + (without.n_tokens or 0)}
        for name, v in row.items():
            out[name].append(v)
    failed = sum(1 for m in out["missing"] if m)
    if failed:
        ctx.log(f"{failed} of {len(items)} answers got no IFD (too long, empty or a scoring error)")
    return pa.table(out, schema=DIFFICULTY_SCHEMA.append(pa.field("n_tokens", pa.int64())))


IFD_STAGE = stages.register(Stage(
    name="ifd", help="instruction-following difficulty: PPL(answer | instruction) / PPL(answer)",
    params=IFDParams, select=select_ifd_rows, worker="core.difficulty:run_ifd_shard",
    outputs=(Output("difficulty", DIFFICULTY_COLUMNS),),
    config=lambda p: {"role": p.role},
))


# --------------------------------------------------------------------------------------------
# MFD vs IFD: rank correlation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankCorrelation:
    n: int               # instructions with both values
    kendall: Tau         # τ-b with a bootstrap interval, on at most KENDALL_MAX_N of them
    spearman: float      # ρ on all n (NaN when undefined)

    def __str__(self) -> str:
        rho = "n/a" if math.isnan(self.spearman) else f"{self.spearman:.2f}"
        return f"Kendall τ {self.kendall}, Spearman ρ {rho} (n = {self.n})"


def spearman(x, y) -> float:
    """Spearman's ρ: Pearson's r of the average ranks (ties share their mean rank)."""
    rx = pd.Series(np.asarray(x, dtype=float)).rank(method="average").to_numpy()
    ry = pd.Series(np.asarray(y, dtype=float)).rank(method="average").to_numpy()
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def rank_correlation_values(x, y, bootstrap: int = 1000, seed: int = 0,
                            max_kendall: int = KENDALL_MAX_N) -> RankCorrelation:
    """τ and ρ between two aligned value arrays (pairs with a NaN are left out)."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[keep], ya[keep]
    kx, ky = xa, ya
    if len(xa) > max_kendall:  # a seeded subsample: same data, same interval
        idx = np.random.default_rng(seed).choice(len(xa), max_kendall, replace=False)
        kx, ky = xa[idx], ya[idx]
    return RankCorrelation(len(xa), kendall_tau(kx, ky, bootstrap=bootstrap, seed=seed), spearman(xa, ya))


def rank_correlation(ws, mfd_source_name: str, ifd_source_name: str, round: int = 0, bootstrap: int = 1000,
                     seed: int = 0) -> RankCorrelation:
    """How MFD and IFD agree on the instructions that have both (in one round)."""
    pairs = ws.store.difficulty_pairs(mfd_source_name, ifd_source_name, round)
    return rank_correlation_values(pairs["mfd"], pairs["ifd"], bootstrap=bootstrap, seed=seed)


# --------------------------------------------------------------------------------------------
# Summaries for pages
# --------------------------------------------------------------------------------------------


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")


def difficulty_histogram(ws, source: str, round: int = 0, bin_width: float = DEFAULT_BIN_WIDTH,
                         metric: str = "mfd") -> pd.DataFrame:
    """(bin_start, n), binned in DuckDB; bin_start NaN counts the rows with no value."""
    _check_metric(metric)
    if not isinstance(bin_width, (int, float)) or not bin_width > 0:
        raise ValueError(f"bin_width must be positive, not {bin_width!r}")
    return ws.store.difficulty_histogram(metric, source, round, bin_width)


def kept_per_task(ws, source: str, delta: float, round: int = 0, metric: str = "mfd") -> pd.DataFrame:
    """(task, kept, valued, rows) per current task: kept = value > δ (TAPIR's seed rule; a NULL
    value is never kept), valued = rows with a value."""
    _check_metric(metric)
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not math.isfinite(delta):
        raise ValueError(f"delta must be a finite number, not {delta!r}")
    return ws.store.difficulty_kept_per_task(metric, source, round, delta)


# --------------------------------------------------------------------------------------------
# The chain: teacher answers, student answers, judge both, MFD
# --------------------------------------------------------------------------------------------

# Seeded sampling: a re-run that does re-answer an instruction writes the same text, hence the
# same response id, which ingest skips.
DEFAULT_CHAIN_GENERATION = {"seed": 0}


@dataclass
class ChainStep:
    name: str
    job: str | None   # None: skipped, its outputs existed
    status: str       # skipped | done | failed | cancelled | stopped
    new: int = 0


@dataclass
class ChainResult:
    steps: list[ChainStep]
    mfd: MFDSummary

    def as_dict(self) -> dict:
        return {"steps": [asdict(s) for s in self.steps], "mfd": self.mfd.as_dict()}


class ChainFailed(RuntimeError):
    """A job of the chain did not finish; it can be resumed (`winnow jobs resume JOB`)."""

    def __init__(self, step: ChainStep, error: str | None):
        self.step = step
        super().__init__(f"{step.name}: job {step.job} {step.status}"
                         + (f" ({error})" if error else "") + f"; resume with `winnow jobs resume {step.job}`"
                         " or run the chain again")


def run_difficulty_chain(ws, teacher: str, student: str, judge: str, datasets: list[str],
                         rubric: str = "pointwise_10", limit: int | None = None, round: int = 0,
                         on_progress: Callable[[dict], None] | None = None, *, teacher_role: str = "teacher",
                         student_role: str = "student", judge_mode: str = "auto",
                         generation: dict | None = None, judge_params: dict | None = None,
                         shard_size: int = 16) -> ChainResult:
    """TAPIR's scoring, top to bottom: the teacher and the student answer the first `limit`
    instructions of the datasets, the judge scores both answers, MFD is computed from the verdicts.

    Each step is a stage job (core.stages), run to the end and ingested. A step whose outputs
    exist (answers of that role from that model; verdicts of that judge on every answer) is
    skipped; an unfinished job of the same step from an earlier run is resumed, not redone."""
    selection = ExploreFilter(datasets=list(datasets))
    n = limit if limit is not None else NO_LIMIT
    gen = DEFAULT_CHAIN_GENERATION | (generation or {})
    steps = []
    for step, model, role in (("teacher answers", teacher, teacher_role), ("student answers", student, student_role)):
        todo = ws.store.instructions_missing_answers(selection, limit, role, model, round)
        steps.append(run_step(ws, step, "generate", {"model": model, "role": role} | gen, selection, n, round,
                               shard_size, bool(todo), on_progress))
    mode = None if judge_mode == "auto" else judge_mode
    roles = [teacher_role, student_role]
    todo = ws.store.responses_missing_verdicts(selection, limit, roles, round, judge, rubric, mode)
    # The judge stage takes the first N answers of the roles in instruction order (every round):
    # N = the answers to the chain's instructions, so it judges exactly those.
    n_answers = ws.store.count_answers(selection, limit, roles)
    steps.append(run_step(ws, "judge", "judge", {"model": judge, "rubric": rubric, "roles": roles,
                                                  "mode": judge_mode} | (judge_params or {}),
                           selection, max(n_answers, 1), round, shard_size, bool(todo), on_progress))
    summary = compute_mfd(ws, judge, rubric, teacher_role, student_role, round, selection, limit=limit, mode=mode)
    if on_progress:
        on_progress({"step": "mfd", "status": "done", "summary": summary.as_dict()})
    return ChainResult(steps, summary)


def run_step(ws, name: str, stage: str, params: dict, selection: ExploreFilter, limit: int, round: int,
             shard_size: int, needed: bool, on_progress) -> ChainStep:
    """One step of a chain, run to the end: skipped when not `needed`; else an unfinished job of
    the same stage, params and round is resumed, or a new job is created, launched, waited for and
    ingested. Raises ChainFailed when the job does not finish. (core.rounds has the durable
    variant with the same signature.)"""
    if not needed:
        if on_progress:
            on_progress({"step": name, "status": "skipped"})
        return ChainStep(name, None, "skipped")
    job_id = _unfinished_job(ws, stage, params, round) or ws.create_job(stage, params, selection, limit=limit,
                                                                         round=round, shard_size=shard_size)
    job_dir = ws.job_dir(job_id)
    jobs.launch(job_dir)
    info = jobs.wait(job_dir, on_progress=(lambda i: on_progress({"step": name} | i)) if on_progress else None)
    result = ws.ingest_job(job_id)
    step = ChainStep(name, job_id, info["status"], int(result["new"]))
    if info["status"] != "done":
        raise ChainFailed(step, info.get("error"))
    return step


def _unfinished_job(ws, stage: str, params: dict, round: int) -> str | None:
    """The newest job of this stage, params and round that stopped before the end (killed,
    cancelled, failed): resuming it finishes the work without redoing its shards."""
    entry = stages.get(stage)
    p = entry.make_params(params)
    wanted = stages.params_dict(p) | {"model": ws.model(p.model).name if isinstance(p.model, str) else p.model["name"]}
    for info in ws.jobs():  # newest first
        if info["kind"] != stage or info["status"] not in ("stopped", "cancelled", "failed"):
            continue
        config = jobs.read_json(Path(info["dir"]) / jobs.CONFIG) or {}
        if config.get("stage_params") == wanted and int(config.get("round", 0)) == int(round):
            return info["id"]
    return None
