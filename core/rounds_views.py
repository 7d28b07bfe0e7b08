"""What the Rounds page shows, computed without streamlit (app_pages/11_Rounds.py).

- Recipes: the shipped recipes/*.yaml, each with its leading comment and key values, and the
  models a recipe names that the workspace lacks (checked before anything is written).
- Runs: newest first, with a one-line label; a run's rounds as a timeline (one row per round) and
  each round's steps in order with the running job's progress.
- Comparison: `core.rounds.compare` (the very dict `winnow round compare --json` prints) reshaped
  into a side-by-side table and the frames the charts plot: win rates and exact match with their
  intervals, the MFD distributions on shared bins, the training set's task mix.

Everything is read from the catalog and the job folders, never from a session, so a reloaded
browser shows the same state.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from core.recipes import Recipe

REPO = Path(__file__).resolve().parent.parent
RECIPES_DIR = REPO / "recipes"
TRAIN_PAGE = "app_pages/10_Train.py"
JOBS_PAGE = "app_pages/5_Jobs.py"  # ui.JOBS_PAGE (core never imports ui: it imports streamlit)
ROLES = ("teacher", "judge", "student")
MFD_BINS = 20  # about this many bins across both rounds' MFD range
DASH = "—"


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


def recipe_files(folder: Path = RECIPES_DIR) -> list[Path]:
    """The shipped recipes: the laptop ones first (TAPIR's, the first closed loop, leading), then
    the GPU ones, each group by name."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.yaml"), key=lambda p: (not p.stem.endswith("-tiny"), p.stem != "tapir-tiny", p.stem))


def recipe_comment(text: str) -> str:
    """A recipe's leading comment block (its description), without the '#' marks."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        lines.append(stripped[1:][1:] if stripped[1:].startswith(" ") else stripped[1:])
    return "\n".join(lines).strip()


def recipe_facts(recipe: Recipe) -> pd.DataFrame:
    """The recipe's key values as (setting, value) rows: what a user checks before pressing Start."""
    t, train = recipe.tapir, recipe.train
    length = f"{train['max_steps']} steps" if train.get("max_steps") else f"{train.get('epochs', 1)} epoch(s)"
    rows = [
        ("name (the run)", recipe.name), ("method", recipe.method), ("rounds", recipe.rounds),
        ("teacher", recipe.teacher), ("judge", recipe.judge), ("student (round 1)", recipe.student),
        ("evaluation judge", recipe.eval_judge), ("pool", ", ".join(recipe.pool)), ("held out", recipe.heldout),
        ("pool limit", recipe.limit or "all"), ("judge rubric", f"{recipe.rubric} ({recipe.judge_mode})"),
        ("δ (seeds: MFD > δ)", t.delta), ("seeds per round", t.seeds), ("expansions per seed", t.expand),
        ("restyle", t.restyle), ("α₁, Δα", f"{t.alpha_1:g}, {t.delta_alpha:g}"),
        ("training", f"{train.get('method', 'full')}, {length}"),
    ]
    if recipe.register:
        rows.append(("registers", ", ".join(spec["name"] for spec in recipe.register)))
    return pd.DataFrame([{"setting": k, "value": str(v)} for k, v in rows])


def missing_models(ws, recipe: Recipe) -> list[str]:
    """"role: name" for each model the recipe names that is neither in the workspace nor among
    the models it registers itself (core.rounds.prepare would refuse it)."""
    registered = {spec["name"] for spec in recipe.register}
    missing = []
    for role, name in (*((r, getattr(recipe, r)) for r in ROLES), ("evaluate.judge", recipe.eval_judge)):
        if name in registered:
            continue
        try:
            ws.model(name)
        except ValueError:
            missing.append(f"{role}: {name}")
    return missing


# --------------------------------------------------------------------------------------------
# Runs and the timeline
# --------------------------------------------------------------------------------------------


def newest_first(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda r: (str(r.get("created_at") or ""), r["name"]), reverse=True)


def run_label(run: dict, status: dict | None = None) -> str:
    """"adder · done · 2 of 2 rounds" (the rounds count needs the run's status)."""
    label = f"{run['name']} · {run['status']}"
    if status is not None:
        done = sum(r["status"] == "done" for r in status["rounds"])
        label += f" · {done} of {status['rounds_wanted']} rounds"
    return label


def rate_text(value, low=None, high=None, digits: int = 2) -> str:
    """0.62 [0.51, 0.72]; "—" when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    text = f"{value:.{digits}f}"
    if low is not None and high is not None:
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def win_text(ev: dict | None) -> str:
    """A round's win rate against its start, with its interval and the counts behind it."""
    if not ev or ev.get("win_rate") is None:
        return DASH
    return (rate_text(ev["win_rate"], ev.get("win_low"), ev.get("win_high"))
            + f" ({ev.get('wins', 0)}–{ev.get('ties', 0)}–{ev.get('losses', 0)} of {ev.get('n', 0)})")


def exact_text(ev: dict | None, side: str = "a") -> str:
    """Exact match of the evaluation's model `side` (a: the round's model, b: its start)."""
    if not ev or ev.get(f"exact_match_{side}") is None:
        return DASH
    interval = ev.get(f"exact_match_{side}_interval") or [None, None]
    return rate_text(ev[f"exact_match_{side}"], *interval) + f" ({ev.get(f'exact_{side}')}/{ev.get('n_reference')})"


def _num(value, spec: str = ",") -> str:
    return DASH if value is None else format(value, spec)


def timeline_frame(status: dict) -> pd.DataFrame:
    """One row per round of a run_status: student → model, state, α and data sizes, and its
    evaluation against the model it started from."""
    rows = []
    for r in status["rounds"]:
        m = r.get("metrics") or {}
        ev = m.get("evaluation")
        done = sum(s["status"] == "done" for s in r["steps"])
        current = next((s["name"] for s in r["steps"] if s["status"] != "done"), "")
        rows.append({
            "round": r["id"], "student": r["student"], "model": r["model"] or "…", "status": r["status"],
            "step": current or (f"{done} steps done" if r["status"] == "done" else ""),
            "α": (r.get("config") or {}).get("alpha", m.get("alpha")),
            "seeds": m.get("seeds"), "expanded": m.get("expanded"), "training samples": m.get("train_members"),
            "win rate vs start": win_text(ev), "exact match": exact_text(ev, "a"),
            "start's exact match": exact_text(ev, "b"), "error": r.get("error") or "",
        })
    return pd.DataFrame(rows, columns=["round", "student", "model", "status", "step", "α", "seeds", "expanded",
                                       "training samples", "win rate vs start", "exact match",
                                       "start's exact match", "error"])


def step_progress(step: dict) -> dict:
    """done, total, tokens/s and ETA of a step's running job (empty when it has none)."""
    job = step.get("job") or {}
    if not job:
        return {}
    return {"done": int(job.get("done") or 0), "total": int(job.get("total") or 0),
            "tokens_per_s": job.get("tokens_per_s"), "eta_s": job.get("eta_s"), "status": job.get("status")}


def steps_frame(round_row: dict) -> pd.DataFrame:
    """A round's steps in the order it reached them, with state, job and progress."""
    rows = []
    for s in round_row["steps"]:
        p = step_progress(s)
        skipped = s["kind"] == "job" and not s["job_id"] and s["status"] == "done"
        rows.append({
            "#": s["position"], "step": s["name"], "kind": s["kind"],
            "status": "skipped (nothing to do)" if skipped else s["status"],
            "progress": f"{p['done']:,} / {p['total']:,}" if p else "",
            "tokens/s": p.get("tokens_per_s") if p else None, "ETA s": p.get("eta_s") if p else None,
            "job": s["job_id"] or "", "started": s.get("started_at"), "finished": s.get("finished_at"),
            "error": s.get("error") or "",
        })
    return pd.DataFrame(rows, columns=["#", "step", "kind", "status", "progress", "tokens/s", "ETA s", "job",
                                       "started", "finished", "error"])


def step_link(step: dict) -> dict | None:
    """Where a step's job is shown: a training job on the Train page (?job=), another job on the
    Jobs page on its stage's tab (?stage=). None for a step without a job."""
    if not step.get("job_id"):
        return None
    if step["kind"] == "train":
        return {"page": TRAIN_PAGE, "query_params": {"job": step["job_id"]},
                "label": f"{step['name']}: {step['job_id']} on the Train page"}
    stage = (step.get("outputs") or {}).get("stage")
    return {"page": JOBS_PAGE, "query_params": {"stage": stage} if stage else {},
            "label": f"{step['name']}: {step['job_id']} on the Jobs page"}


def steps_timeline_frame(status: dict, now=None) -> pd.DataFrame:
    """(round, step, status, start, end) per step, a running step ending now: what
    charts.round_timeline draws."""
    now = pd.Timestamp(now) if now is not None else pd.Timestamp.now()
    rows = []
    for r in status["rounds"]:
        for s in r["steps"]:
            if s.get("started_at") is None:
                continue
            start = pd.Timestamp(s["started_at"])
            if s.get("finished_at") is not None:
                end = pd.Timestamp(s["finished_at"])
            else:  # a compute step is recorded done at once, without a finish time
                end = max(now, start) if s["status"] == "running" else start
            rows.append({"round": r["id"], "step": s["name"], "status": s["status"], "start": start, "end": end})
    return pd.DataFrame(rows, columns=["round", "step", "status", "start", "end"])


def is_live(status: dict | None) -> bool:
    """Whether the page should refresh itself: the run is active (the owner advances it)."""
    return bool(status) and status["status"] == "active"


# --------------------------------------------------------------------------------------------
# Comparing two rounds
# --------------------------------------------------------------------------------------------


def comparable_rounds(statuses: list[dict]) -> list[str]:
    """The ids of the finished rounds of these runs: only they have an evaluation and a model."""
    return [r["id"] for s in statuses for r in s["rounds"] if r["status"] == "done"]


def comparison_frame(cmp: dict) -> pd.DataFrame:
    """core.rounds.compare side by side: one row per fact, one column per round."""
    a, b = cmp["a"], cmp["b"]

    def facts(f: dict) -> list[tuple[str, str]]:
        ev = f.get("evaluation") or {}
        mfd = f.get("mfd") or {}
        return [
            ("student → model", f"{f['student']} → {f['model'] or '…'}"), ("status", f["status"]),
            ("α", _num(f.get("alpha"), "g")), ("seeds", _num(f.get("seeds"))),
            ("expanded", _num(f.get("expanded"))), ("training samples", _num(f.get("train_members"))),
            ("win rate vs its start", win_text(ev)), ("order-flip rate", rate_text(ev.get("flip_rate"))),
            ("exact match", exact_text(ev, "a")), ("start's exact match", exact_text(ev, "b")),
            ("mean MFD", rate_text(mfd.get("mean"))), ("instructions with an MFD", _num(mfd.get("n"))),
            ("training snapshot", f.get("snapshot") or DASH),
        ]

    fa, fb = facts(a), facts(b)
    return pd.DataFrame({"": [k for k, _ in fa], a["round"]: [v for _, v in fa],
                         b["round"] if b["round"] != a["round"] else f"{b['round']} ": [v for _, v in fb]})


def win_rate_frame(cmp: dict) -> pd.DataFrame:
    """(comparison, win_rate, low, high, n): each round against its start, and head to head."""
    rows = []
    for side in ("a", "b"):
        f = cmp[side]
        ev = f.get("evaluation") or {}
        if ev.get("win_rate") is not None:
            rows.append({"comparison": f"{f['round']}: {ev['model_a']} vs {ev['model_b']}",
                         "win_rate": ev["win_rate"], "low": ev.get("win_low"), "high": ev.get("win_high"),
                         "n": ev.get("n")})
    head = cmp.get("head_to_head") or {}
    if head.get("win_rate") is not None:
        rows.append({"comparison": f"head to head: {head['model_a']} vs {head['model_b']}",
                     "win_rate": head["win_rate"], "low": head.get("win_low"), "high": head.get("win_high"),
                     "n": head.get("n")})
    return pd.DataFrame(rows, columns=["comparison", "win_rate", "low", "high", "n"])


def exact_match_frame(cmp: dict) -> pd.DataFrame:
    """(model, exact_match, low, high, n) on the held-out prompts with a reference answer: each
    round's start, then its model (the starts of two consecutive rounds overlap: kept once)."""
    rows, seen = [], set()
    for side in ("a", "b"):
        ev = cmp[side].get("evaluation") or {}
        for which in ("b", "a"):
            model, value = ev.get(f"model_{which}"), ev.get(f"exact_match_{which}")
            if value is None or model in seen:
                continue
            seen.add(model)
            low, high = ev.get(f"exact_match_{which}_interval") or [None, None]
            rows.append({"model": model, "exact_match": value, "low": low, "high": high, "n": ev.get("n_reference")})
    return pd.DataFrame(rows, columns=["model", "exact_match", "low", "high", "n"])


def nice_bin_width(values: list[float], bins: int = MFD_BINS) -> float:
    """1, 2 or 5 times a power of ten, about `bins` bins across the values' range."""
    if not values:
        return 1.0
    span = max(values) - min(values)
    if span <= 0:
        return 1.0
    raw = span / bins
    power = 10 ** math.floor(math.log10(raw))
    return next(f * power for f in (1, 2, 5, 10) if f * power >= raw)


def mfd_overlay_frame(cmp: dict, bin_width: float | None = None) -> tuple[pd.DataFrame, float]:
    """(round, bin_start, n) of both rounds' MFD values on the same bins, and the bin width."""
    labels = side_labels(cmp)
    series = {labels[s]: list((cmp[s].get("mfd") or {}).get("values") or []) for s in ("a", "b")}
    values = [v for vs in series.values() for v in vs]
    w = float(bin_width) if bin_width else nice_bin_width(values)
    rows = []
    for name, vs in series.items():
        if not vs:
            continue
        starts = np.floor(np.asarray(vs, dtype=float) / w + 1e-9) * w
        counts = pd.Series(starts).round(9).value_counts().sort_index()
        rows += [{"round": name, "bin_start": float(s), "n": int(n)} for s, n in counts.items()]
    return pd.DataFrame(rows, columns=["round", "bin_start", "n"]), w


def side_labels(cmp: dict) -> dict[str, str]:
    """The two sides' names in charts: their round ids, marked A and B when both are one round
    (a round compared with itself would otherwise merge into one series)."""
    a, b = cmp["a"]["round"], cmp["b"]["round"]
    return {"a": a, "b": b} if a != b else {"a": f"{a} (A)", "b": f"{b} (B)"}


def task_mix_frame(cmp: dict) -> pd.DataFrame:
    """(round, task, n, share) of each round's training snapshot (its members per task)."""
    rows, labels = [], side_labels(cmp)
    for side in ("a", "b"):
        f = cmp[side]
        mix = f.get("task_mix") or []
        counts = {str(t.get("task")): int(t.get("final", t.get("after", 0)) or 0) for t in mix}
        total = sum(counts.values())
        rows += [{"round": labels[side], "task": task, "n": n, "share": n / total if total else 0.0}
                 for task, n in counts.items()]
    return pd.DataFrame(rows, columns=["round", "task", "n", "share"])
