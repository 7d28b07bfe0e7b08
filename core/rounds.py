"""Rounds (DESIGN.md §8): a recipe's rounds, durable in the catalog, advanced by whoever owns it.

A round is one function that reads top to bottom like the paper's algorithm (`tapir_round`).
Each step in it is a stage job, a snapshot, a training job, an evaluation or a small computation,
and each is recorded in `round_steps` under its name. The driver *replays* the round function:

- a step that is done returns the outputs it stored, without running again;
- a step whose job runs raises `Pending`, which unwinds the function; the next `advance` replays
  it from the top and gets to the same step, which is then done or still running;
- a step not yet started creates its job, records the job id, launches it and raises `Pending`.

So whoever calls `advance` (the app's owner thread every couple of seconds, or `winnow round run`
in the foreground when the app is closed) moves the round on; killing either loses nothing: the
jobs run in their own processes, their ids are in the catalog, a job killed with its driver is
relaunched (and resumes from its shards or checkpoint), and a step that finished is never redone.
The one window: a process killed between creating a job and recording it leaves an unlaunched job
folder behind (never run, harmless); a training job is found again by its model name.

A run is a recipe's rounds under one name (`round_runs`): round r + 1 starts from round r's model,
until the wanted number of rounds is done. A failed step (a job that failed, a round with no seed
left) stops the run with the reason; `start_run` again retries the failed step's job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core import jobs
from core.difficulty import ChainFailed, ChainStep, compute_mfd, mfd_source
from core.recipes import Recipe, Tapir, load_recipe
from core.selection import ExploreFilter

__all__ = ["Pending", "Round", "RoundFailed", "advance", "compare", "run_status", "drive", "start_run",
           "tapir_round", "alpha_weights"]

# Roles a round writes: the teacher's answers (round 0, reused every round), the current student's
# answers (in the round's number), the teacher's styled rewrites.
TEACHER, STUDENT, STYLED = "teacher", "student", "styled"
POLL_SECONDS = 0.5


class Pending(Exception):
    """A step's job is still running: the round goes on at a later `advance`."""

    def __init__(self, step: str, job_id: str):
        super().__init__(f"{step}: job {job_id} is running")
        self.step, self.job_id = step, job_id


class RoundFailed(RuntimeError):
    """A step failed; the run stops with this reason until it is started again."""


# --------------------------------------------------------------------------------------------
# One round's durable steps
# --------------------------------------------------------------------------------------------


class Round:
    """What a round function sees: its recipe, number, student, and the durable step helpers."""

    def __init__(self, ws, recipe: Recipe, row: dict, launch: Callable[[Path], Any] = jobs.launch):
        self.ws, self.recipe, self.row, self.launch = ws, recipe, row, launch
        self.id: str = row["id"]
        self.number: int = int(row["number"])
        self.student: str = row["student"]

    # -- names the round gives what it makes ----------------------------------------------------

    def name(self, what: str) -> str:
        """`<run>-r<n>-<what>`: snapshot, dataset and model names of this round."""
        return f"{self.recipe.name}-r{self.number}-{what}"

    @property
    def model_name(self) -> str:
        return f"{self.recipe.name}-r{self.number}"

    # -- the step primitives ----------------------------------------------------------------------

    def _step(self, name: str) -> dict | None:
        return self.ws.store.round_step(self.id, name)

    def compute(self, name: str, fn: Callable[[], dict]) -> dict:
        """A step without a job: runs once, its (JSON) outputs are stored and returned after."""
        row = self._step(name)
        if row and row["status"] == "done":
            return row["outputs"] or {}
        started = time.perf_counter()
        outputs = fn() | {"seconds": round(time.perf_counter() - started, 3)}  # a job step's time is its rows'
        if row is None:
            self.ws.store.insert_round_step(self.id, name, "compute", "done", outputs=outputs)
        else:
            self.ws.store.update_round_step(self.id, name, "done", outputs)
        return outputs

    def run_step(self, ws, name: str, stage: str, params: dict, selection: ExploreFilter, limit: int, round: int,
                 shard_size: int, needed: bool, on_progress=None) -> ChainStep:
        """core.difficulty.run_step's signature, durable: what core.evaluate and the round's job
        steps call. Returns the step when its job is done and ingested; raises Pending before."""
        row = self._step(name)
        if row and row["status"] == "done":
            return ChainStep(**(row["outputs"] or {}).get("step", {"name": name, "job": None, "status": "skipped"}))
        if row is None:
            if not needed:
                step = ChainStep(name, None, "skipped")
                self.ws.store.insert_round_step(self.id, name, "job", "done", outputs={"step": asdict(step)})
                return step
            job_id = ws.create_job(stage, params, selection, limit=limit, round=round, shard_size=shard_size)
            self.ws.store.insert_round_step(self.id, name, "job", "running", job_id, {"stage": stage})
            self.launch(ws.job_dir(job_id))
            raise Pending(name, job_id)
        return self._finish_job(row, lambda result: {
            "step": asdict(ChainStep(name, row["job_id"], "done", int(result.get("new", 0)))),
            "rows": int(result.get("rows", 0) or 0)}, ChainStep)

    def job(self, name: str, stage: str, params: dict, selection: ExploreFilter, *, round: int | None = None,
            needed: bool = True, limit: int = 1_000_000) -> ChainStep:
        """A stage job over the selection, in this round (or `round`)."""
        return self.run_step(self.ws, name, stage, params, selection, limit, self.number if round is None else round,
                             self.recipe.shard_size, needed)

    def train(self, name: str, model: str, snapshot: str, config: dict, base: str, objective: dict | None = None) -> str:
        """A training job from `base` on the snapshot (or ranking set) into the model `model`;
        returns its name once trained and registered. objective: core.train.objectives (sft by
        default, dpo, ranking)."""
        row = self._step(name)
        if row and row["status"] == "done":
            return row["outputs"]["model"]
        if row is None:
            adopted = [j["id"] for j in self.ws.jobs() if j["kind"] == "train" and j["model"] == model]
            job_id = adopted[0] if adopted else self.ws.create_training_job(
                model, snapshot, config | {"base_model": base}, round=self.number, threads=self.recipe.threads,
                objective=objective)
            self.ws.store.insert_round_step(self.id, name, "train", "running", job_id, {"model": model})
            if jobs.status(self.ws.job_dir(job_id)) != "running":
                self.launch(self.ws.job_dir(job_id))
            raise Pending(name, job_id)
        self._finish_job(row, lambda result: {"model": model, "job": row["job_id"]}, None)
        return model

    def _finish_job(self, row: dict, outputs_of: Callable[[dict], dict], wrap):
        """The recorded job of a running step: wait, relaunch (killed), fail, or ingest and finish."""
        name, job_id = row["name"], row["job_id"]
        job_dir = self.ws.job_dir(job_id)
        status = jobs.status(job_dir)
        outputs = row["outputs"] or {}
        if status == "running":
            raise Pending(name, job_id)
        if status in ("pending", "stopped") or (status in ("failed", "cancelled") and outputs.get("retry")):
            # never started, killed with its driver, or retried on request: run it (it resumes)
            self.ws.store.update_round_step(self.id, name, "running", outputs | {"retry": False})
            self.launch(job_dir)
            raise Pending(name, job_id)
        if status in ("failed", "cancelled"):
            error = (jobs.read_json(job_dir / jobs.FAILED) or {}).get("error") or status
            self.ws.store.update_round_step(self.id, name, "failed", outputs, f"job {job_id} {status}: {error}")
            raise RoundFailed(f"{name}: job {job_id} {status} ({error})")
        result = self.ws.ingest_job(job_id)
        done = outputs | outputs_of(result)
        self.ws.store.update_round_step(self.id, name, "done", done)
        return wrap(**done["step"]) if wrap else done

    # -- composite steps ------------------------------------------------------------------------

    def generate(self, name: str, model: str, role: str, selection: ExploreFilter, round: int) -> ChainStep:
        """`model` answers the selected instructions that have no answer of `role` from it in `round`."""
        r = self.recipe
        todo = self.ws.store.instructions_missing_answers(selection, r.limit, role, model, round) \
            if self._step(name) is None else True
        params = {"model": model, "role": role} | r.generate
        return self.job(name, "generate", params, selection, round=round, needed=bool(todo),
                        limit=r.limit or 1_000_000)

    def snapshot(self, name: str, snapshot_name: str, spec: dict) -> dict:
        """A snapshot made once (a replay after a crash finds it by name)."""
        from core import curate

        def make() -> dict:
            if self.ws.store.snapshot_row(snapshot_name) is not None:
                snap = curate.snapshot(self.ws, snapshot_name, page_size=1)
            else:
                snap = curate.create_snapshot(self.ws, spec, snapshot_name)
            return {"snapshot": snap.name, "members": snap.n_members, "instructions": snap.n_instructions,
                    "parquet": str(snap.parquet_path), "hash": snap.content_hash}

        return self.compute(name, make)

    def evaluate(self, name: str, model_a: str, model_b: str) -> dict:
        """core.evaluate on the held-out prompts, its jobs as this round's steps."""
        from core import evaluate

        row = self._step(name)
        if row and row["status"] == "done":
            return row["outputs"]
        e, r = self.recipe.evaluate, self.recipe

        def runner(ws, step, *args, **kwargs):
            return self.run_step(ws, f"{name}: {step}", *args, **kwargs)

        ev = evaluate.evaluate(self.ws, model_a, model_b, r.heldout, r.eval_judge, e.get("rubric", "pairwise"),
                               round=self.number, limit=e.get("limit"), max_tokens=e.get("max_tokens", 256),
                               pointwise=e.get("pointwise"), mode=e.get("mode", "auto"), shard_size=r.shard_size,
                               runner=runner)
        return self.compute(name, lambda: json_safe(ev.as_dict()))


def json_safe(value):
    """A value as JSON would give it back (what a round step stores)."""
    return json.loads(json.dumps(value, default=str))


def alpha_weights(n_hard: int, n_easy: int, alpha: float) -> tuple[float, float]:
    """Per-sample loss weights (hard, easy) that give the hard samples at least the share α of
    the training signal (TAPIR's α_r; the loss is a weighted token mean, so only the ratio of the
    weights matters). Hard samples already at or above α keep weight 1, as do the easy ones: a
    small group is never blown up. Below α the hard samples are up-weighted to
    w = α·n_easy / ((1 − α)·n_hard); α = 1 trains on the hard samples alone (easy weight 0)."""
    if n_hard <= 0 or n_easy <= 0 or n_hard / (n_hard + n_easy) >= alpha:
        return 1.0, 1.0
    if alpha >= 1:
        return 1.0, 0.0
    return alpha * n_easy / ((1 - alpha) * n_hard), 1.0


# --------------------------------------------------------------------------------------------
# TAPIR (arXiv 2405.13448), one round
# --------------------------------------------------------------------------------------------


@dataclass
class RoundResult:
    model: str
    snapshot: str
    metrics: dict


def tapir_round(r: Round) -> RoundResult:
    """Task-aware curriculum planning, one round, from the student it starts with to the next."""
    ws, rc, t, n = r.ws, r.recipe, r.recipe.tapir, r.number
    pool = ExploreFilter(datasets=list(rc.pool))

    # 1. Difficulty. The teacher answers the pool once (round 0, reused by every round); the
    #    round's student answers it anew; the judge scores the answers it has not scored yet;
    #    MFD = judge(teacher answer) − judge(student answer), per instruction.
    r.generate("teacher answers", rc.teacher, TEACHER, pool, round=0)
    r.generate("student answers", r.student, STUDENT, pool, round=n)
    judge_params = {"model": rc.judge, "rubric": rc.rubric, "roles": [TEACHER, STUDENT], "mode": rc.judge_mode,
                    "unjudged": True}
    r.job("judge answers", "judge", judge_params, pool, needed=unjudged(ws, pool, rc, [(TEACHER, 0), (STUDENT, n)]))
    source = mfd_source(rc.judge, rc.rubric, mode=None if rc.judge_mode == "auto" else rc.judge_mode)
    mfd = r.compute("mfd", lambda: compute_mfd(
        ws, rc.judge, rc.rubric, TEACHER, STUDENT, n, pool, limit=rc.limit,
        mode=None if rc.judge_mode == "auto" else rc.judge_mode, teacher_round=0).as_dict() | {"source": source})
    difficulty = {"round": n, "mfd_source": mfd["source"]}

    # 2. Seeds: the instructions the student has not learned (MFD > δ), rebalanced over tasks
    #    (TAPIR's target boosts math, reasoning and code) to the round's seed budget.
    seed_spec = {"kind": "prompts", "roles": [], "datasets": list(rc.pool), "mfd_min": t.delta,
                 "difficulty": difficulty}
    if t.rebalance is not None:
        seed_spec["rebalance"] = {"target": t.rebalance, "size": t.seeds, "seed": n}
    seeds = r.snapshot("seeds", r.name("seeds"), seed_spec)
    if not seeds["members"]:
        raise RoundFailed(f"no instruction has MFD > δ = {t.delta} in round {n} ({mfd['computed']} with a value): "
                          "the student fits the pool already, or lower tapir.delta")
    seed_ids = _members(seeds["parquet"])[: t.seeds]

    # 3. Expansion: the teacher writes new instructions of the same task and difficulty from each
    #    seed (lineage: parent_id), never one of the held-out prompts; then answers them.
    expanded = r.name("expanded")
    if t.expand:
        r.job("expand seeds", "expand", {"model": rc.teacher, "n": t.expand, "out_dataset": expanded,
                                         "exclude_datasets": [rc.heldout]} | _sampling(rc), ExploreFilter(ids=seed_ids))
        r.generate("answer expansions", rc.teacher, TEACHER, ExploreFilter(datasets=[expanded]), round=n)

    # 4. Style: math and reasoning answers rewritten step by step, code as commented code with an
    #    explanation; the rewrite replaces the teacher's answer in training (other tasks keep it).
    datasets = list(rc.pool) + ([expanded] if _dataset_exists(ws, expanded) else [])
    roles, styled_tasks = [TEACHER], []
    if t.restyle:
        from core.expand import DEFAULT_STYLES

        styled_tasks = sorted(DEFAULT_STYLES)
        selection = ExploreFilter(datasets=datasets)
        todo = ws.store.responses_to_restyle(selection, TEACHER, STYLED, styled_tasks, 1)
        r.job("restyle answers", "restyle", {"model": rc.teacher, "role": TEACHER, "out_role": STYLED,
                                             "max_tokens": 2 * int(rc.generate["max_tokens"])}, selection,
              needed=bool(todo))
        roles = [STYLED, TEACHER]

    # 5. Quality floor (optional): the judge scores this round's new answers (to the expansions,
    #    and the styled rewrites), the training set keeps min_score.
    if rc.min_score is not None:
        training_pool = ExploreFilter(datasets=datasets)
        r.job("judge new answers", "judge", judge_params | {"roles": roles}, training_pool,
              needed=unjudged(ws, training_pool, rc, [(role, n) for role in roles]))

    # 6. The training set, with α_r: the hard samples (MFD > δ, and the expansions) carry at least
    #    the share α_r = α_1 + (r − 1)·Δα of the loss (see alpha_weights).
    alpha = t.alpha(n)
    train_spec = _training_spec(ws, rc, t, datasets, roles, styled_tasks, difficulty, expanded, alpha, n)
    alpha_counts = train_spec.pop("counts")
    train = r.snapshot("training set", r.name("train"), train_spec)

    # 7. SFT: the student is trained into this round's model (the next round's student).
    model = r.train("train", r.model_name, train["snapshot"], dict(rc.train), base=r.student)

    # 8. Evaluation against the model the round started from, on the held-out prompts.
    ev = r.evaluate("evaluate", model, r.student)

    metrics = {"alpha": alpha, "delta": t.delta, "mfd": mfd, "seeds": len(seed_ids),
               "expanded": _count(ws, expanded), "train_members": train["members"],
               "weights": train_spec["weights"], "alpha_counts": alpha_counts, "evaluation": eval_summary(ev),
               "lineage": ws.model_lineage(model)}
    return RoundResult(model, train["snapshot"], json_safe(metrics))


def _sampling(rc: Recipe) -> dict:
    return {k: v for k, v in rc.generate.items() if k in ("temperature", "max_tokens", "seed")}


def unjudged(ws, selection: ExploreFilter, rc: Recipe, role_rounds: list[tuple[str, int]]) -> bool:
    """Whether the recipe's judge has yet to score some answer of these (role, round)s."""
    mode = None if rc.judge_mode == "auto" else rc.judge_mode
    return any(ws.store.responses_missing_verdicts(selection, rc.limit, [role], rnd, rc.judge, rc.rubric, mode)
               for role, rnd in role_rounds)


def _members(parquet: str) -> list[str]:
    """The distinct instruction ids of a snapshot's Parquet, in member order."""
    ids = pq.read_table(parquet, columns=["instruction_id"]).column("instruction_id").to_pylist()
    return list(dict.fromkeys(ids))


def _dataset_exists(ws, name: str) -> bool:
    return ws.store.dataset_id(name) is not None


def _count(ws, dataset: str) -> int:
    return ws.explore_count(ExploreFilter(datasets=[dataset])) if _dataset_exists(ws, dataset) else 0


def _training_spec(ws, rc: Recipe, t: Tapir, datasets: list[str], roles: list[str], styled_tasks: list[str],
                   difficulty: dict, expanded: str, alpha: float, n: int) -> dict:
    from core import curate

    spec: dict = {"kind": "sft", "datasets": datasets, "roles": roles, "difficulty": difficulty}
    if rc.min_score is not None:
        spec["judges"] = [{"judge": rc.judge, "rubric": rc.rubric, "min": rc.min_score}]
    if t.train_size is not None:
        spec["rebalance"] = {"target": t.rebalance or "tapir", "size": t.train_size, "seed": n}
    # α is counted over the teacher's answers: one sample per instruction, styled or not.
    counted = spec | {"roles": [TEACHER]}
    total = curate.counts(ws, counted).after
    hard = curate.counts(ws, counted | {"datasets": list(rc.pool), "mfd_min": t.delta}).after
    if expanded in datasets:
        hard += curate.counts(ws, counted | {"datasets": [expanded]}).after
    w_hard, w_easy = alpha_weights(hard, total - hard, alpha)
    rules = [{"when": {"mfd_min": t.delta}, "weight": w_hard}]
    if expanded in datasets:
        rules.insert(0, {"when": {"datasets": [expanded]}, "weight": w_hard})
    if styled_tasks:  # weight 0 takes a sample out of the loss: the styled rewrite stands in for it
        rules.insert(0, {"when": {"roles": [TEACHER], "tasks": styled_tasks}, "weight": 0.0})
    spec["weights"] = {"default": w_easy, "rules": rules}
    spec["counts"] = {"hard": hard, "total": total}
    return spec


def eval_summary(ev: dict) -> dict:
    """The numbers of an evaluation a round's metrics keep (core.evaluate's as_dict)."""
    keys = ("model_a", "model_b", "prompts", "n_prompts", "n", "wins", "ties", "losses", "win_rate", "win_low",
            "win_high", "flip_rate", "score_a", "score_b", "n_reference", "exact_a", "exact_b", "exact_match_a",
            "exact_match_b", "exact_match_a_interval", "exact_match_b_interval", "line")
    return {k: ev.get(k) for k in keys}


def round_function(method: str) -> Callable[[Round], RoundResult]:
    """The round function of a recipe's method: TAPIR's here, the others' in core.methods.<method>
    (imported when a run of that method advances)."""
    if method == "tapir":
        return tapir_round
    import importlib

    from core.recipes import METHOD_MODULES

    return importlib.import_module(METHOD_MODULES[method]).round_function


# --------------------------------------------------------------------------------------------
# Runs: start, advance, drive
# --------------------------------------------------------------------------------------------


def prepare(ws, recipe: Recipe) -> list[str]:
    """What a recipe needs before its first round: its extra models registered and its missing
    datasets imported from data.files. Returns what it did. Everything is checked first (model
    names, files), so a recipe that cannot run writes nothing."""
    registered = {spec["name"] for spec in recipe.register}
    for role, name in (("models.teacher", recipe.teacher), ("models.judge", recipe.judge),
                       ("models.student", recipe.student), ("evaluate.judge", recipe.eval_judge),
                       *recipe.method_models.items()):
        if name in registered:
            continue
        try:
            ws.model(name)
        except ValueError as exc:
            raise ValueError(f"{role}: {exc}") from exc
    missing = [d for d in (*recipe.pool, recipe.heldout) if ws.store.dataset_id(d) is None]
    for dataset in missing:
        path = recipe.files.get(dataset)
        if path is None:
            raise ValueError(f"dataset {dataset!r} is not in this workspace and the recipe's data.files does not "
                             "name a file for it")
        if not Path(path).is_file():
            raise ValueError(f"data.files.{dataset}: no file {path}")
    done = []
    for spec in recipe.register:
        if ws.store.model_spec(spec["name"]) is None:
            ws.add_model(spec)
            done.append(f"registered model {spec['name']}")
    for dataset in missing:
        summary = ws.import_paths([recipe.files[dataset]], dataset)
        done.append(f"imported {summary.n_new} records into {dataset}")
    return done


def start_run(ws, recipe: Recipe | str | Path | dict, rounds: int | None = None) -> dict:
    """Start a run of the recipe, or continue it: (re)activate it for `rounds` rounds in all and
    retry a failed step. Returns the run's status (`run_status`)."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, rounds)
    if rounds is not None and rounds != recipe.rounds:
        recipe = Recipe(**{**recipe.__dict__, "rounds": rounds})
    notes = prepare(ws, recipe)
    ws.store.save_round_run(recipe.name, recipe.method, json_safe(recipe.to_dict()), recipe.source, recipe.rounds)
    for row in ws.store.rounds(recipe.name):
        if row["status"] == "failed":
            for step in ws.store.round_steps(row["id"]):
                if step["status"] == "failed":
                    ws.store.update_round_step(row["id"], step["name"], "running", (step["outputs"] or {}) | {"retry": True})
            ws.store.set_round_status(row["id"], "running")
    return run_status(ws, recipe.name) | {"prepared": notes}


def recipe_from_dict(d: dict) -> Recipe:
    d = dict(d)
    d["tapir"] = Tapir(**d["tapir"])
    d["pool"], d["register"] = tuple(d["pool"]), tuple(d["register"])
    d.setdefault("params", {})
    d.setdefault("method_models", {})
    return Recipe(**d)


def advance(ws, launch: Callable[[Path], Any] = jobs.launch) -> dict[str, str]:
    """One pass over every active run: each moves on as far as it can without waiting. Returns
    {run: what it is doing}. The owner thread calls this every few seconds."""
    return {name: advance_run(ws, name, launch) for name in ws.store.active_round_runs()}


def advance_run(ws, name: str, launch: Callable[[Path], Any] = jobs.launch) -> str:
    run = ws.store.round_run(name)
    if run is None:
        raise ValueError(f"no round run named {name!r}")
    if run["status"] != "active":
        return run["status"]
    recipe = recipe_from_dict(run["recipe"])
    rounds = ws.store.rounds(name)
    current = next((row for row in rounds if row["status"] != "done"), None)
    if current is None:
        if len(rounds) >= run["rounds"]:
            ws.store.set_round_run_status(name, "done")
            return "done"
        parent = rounds[-1] if rounds else None
        number = len(rounds) + 1
        student = parent["model"] if parent else recipe.student
        round_id = f"{name}/{number}"
        params = {"alpha": recipe.tapir.alpha(number)} if recipe.method == "tapir" else {}
        ws.store.insert_round(round_id, name, number, parent["id"] if parent else None, student,
                              params | {"recipe": recipe.source})
        current = ws.store.round(round_id)
    if current["status"] == "failed":
        return "failed"
    try:
        result = round_function(recipe.method)(Round(ws, recipe, current, launch))
    except Pending as pending:
        return f"round {current['number']}: {pending.step}"
    except (RoundFailed, ChainFailed, ValueError, FileNotFoundError) as exc:
        ws.store.set_round_status(current["id"], "failed", str(exc))
        ws.store.set_round_run_status(name, "failed", f"round {current['number']}: {exc}")
        return "failed"
    ws.store.finish_round(current["id"], result.model, result.snapshot, result.metrics)
    return f"round {current['number']} done"


def drive(ws, name: str, launch: Callable[[Path], Any] = jobs.launch, on_progress: Callable[[str], None] | None = None,
          timeout: float | None = None) -> dict:
    """Advance the run in the foreground until it is done or failed (`winnow round run` with no
    app open). Returns its status; raises RoundFailed with the reason."""
    started, last = time.time(), None
    while True:
        state = advance_run(ws, name, launch)
        if on_progress and state != last:
            on_progress(state)
        last = state
        if state == "done":
            return run_status(ws, name)
        if state == "failed":
            raise RoundFailed(run_status(ws, name)["error"] or "the run failed")
        if timeout is not None and time.time() - started > timeout:
            raise TimeoutError(f"run {name!r} did not finish in {timeout:.0f} s ({state})")
        if state.startswith("round ") and state.endswith(" done"):
            continue  # the next round starts at once
        time.sleep(POLL_SECONDS)


# --------------------------------------------------------------------------------------------
# Reading: status and comparison
# --------------------------------------------------------------------------------------------


def run_status(ws, name: str) -> dict:
    """A run with its rounds and each round's steps (with the running job's progress)."""
    run = ws.store.round_run(name)
    if run is None:
        raise ValueError(f"no round run named {name!r}")
    rounds = []
    for row in ws.store.rounds(name):
        steps = []
        for step in ws.store.round_steps(row["id"]):
            if step["job_id"] and step["status"] == "running":
                try:
                    step = step | {"job": jobs.summary(ws.job_dir(step["job_id"]))}
                except ValueError:
                    pass
            steps.append(step)
        rounds.append(row | {"steps": steps})
    return {"name": run["name"], "method": run["method"], "status": run["status"], "error": run["error"],
            "rounds_wanted": run["rounds"], "source": run["source"], "rounds": rounds}


def runs(ws) -> list[dict]:
    return ws.store.round_runs()


def _round(ws, ref: str) -> dict:
    """A round by id (`run/2`)."""
    row = ws.store.round(ref)
    if row is None:
        raise ValueError(f"no round {ref!r}; rounds are named <run>/<number>, e.g. tapir-tiny/1")
    return row


def round_facts(ws, ref: str) -> dict:
    """One round's numbers for a comparison: its evaluation against its start, data size, MFD
    distribution, task mix of the training set."""
    from core import curate

    row = _round(ws, ref)
    metrics = row["metrics"] or {}
    facts = {"round": row["id"], "number": row["number"], "status": row["status"], "student": row["student"],
             "model": row["model"], "snapshot": row["snapshot"], "alpha": metrics.get("alpha"),
             "evaluation": metrics.get("evaluation"), "seeds": metrics.get("seeds"),
             "expanded": metrics.get("expanded"), "train_members": metrics.get("train_members")}
    mfd = metrics.get("mfd") or {}
    if mfd.get("source"):
        values = [d["value"] for d in ws.store.difficulty_rows("mfd", mfd["source"], row["number"])
                  if d["value"] is not None]
        facts["mfd"] = {"n": len(values), "mean": sum(values) / len(values) if values else None,
                        "values": values[:5000]}
    if row["snapshot"]:
        snap = curate.snapshot(ws, row["snapshot"], page_size=1)
        facts["task_mix"] = snap.stats.get("per_task") or snap.stats.get("tasks")
    return facts


def compare(ws, a: str, b: str) -> dict:
    """Two rounds side by side (the Rounds page and `winnow round compare --json`): each round's
    facts, the shift of mean MFD, and the head-to-head evaluation of their models when one exists."""
    from core import evaluate

    fa, fb = round_facts(ws, a), round_facts(ws, b)
    out = {"a": fa, "b": fb}
    ma, mb = (fa.get("mfd") or {}).get("mean"), (fb.get("mfd") or {}).get("mean")
    out["mfd_shift"] = None if ma is None or mb is None else mb - ma
    head = None
    if fa["model"] and fb["model"]:
        found = evaluate.latest_evaluation(ws, fb["model"], fa["model"]) or evaluate.latest_evaluation(
            ws, fa["model"], fb["model"])
        head = eval_summary(found.as_dict()) if found else None
    out["head_to_head"] = head
    return out
