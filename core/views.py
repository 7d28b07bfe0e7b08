"""What the Difficulty & Tasks page shows (app_pages/7_Difficulty_and_Tasks.py), as pure functions.

No streamlit here, and no SQL: every number comes from the public functions of core.difficulty,
core.tasks, core.curate and the store's summary queries (aggregates over one source and round,
never a materialisation), shaped into the small DataFrames the page renders and the tests read.

- MFD: the (source, round) pairs that have rows, the δ slider's range, kept counts per task at
  MFD > δ (TAPIR's seed rule), NULL rows by reason, MFD vs IFD rank correlation.
- Tasks: the task mix now / target / after resampling, read from core.curate's live counts of a
  prompts spec (the same query and rebalancing plan a snapshot of that spec would use), the
  taxonomy, where the current labels come from, and the relabel form's candidates and history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import pandas as pd

from core import curate
from core import difficulty as dif
from core import tasks as tasks_mod
from core.selection import ExploreFilter

NO_TASK = curate.NO_TASK
MFD_HINT = ("No MFD yet: run `winnow difficulty --teacher … --student … --judge …` or start the chain from the "
            "Jobs page (teacher answers, student answers, the judge on both, then MFD).")
IFD_HINT = ("No IFD for this round yet: run an `ifd` job (Jobs page, or `winnow ifd --model STUDENT`) to see "
            "how MFD and IFD rank the same instructions.")
POOL_ALL = "all instructions"
POOL_KEPT = "kept at MFD > δ"
TAPIR_LABEL = "TAPIR (default)"
KEPT_COLUMNS = ["task", "instructions with MFD", "kept", "share kept"]
MIX_COLUMNS = ["task", "now", "now share", "target share", "target", "after", "after share"]
MAX_RELABEL_CANDIDATES = 50
MAX_SNAPSHOT_TARGETS = 10


# --------------------------------------------------------------------------------------------
# MFD
# --------------------------------------------------------------------------------------------


def difficulty_sources(ws, metric: str = "mfd", sources: pd.DataFrame | None = None) -> pd.DataFrame:
    """(source, round, rows, valued, min_value, max_value, computed_at) of one metric; `sources`:
    the store's difficulty_sources() when the caller has read it already."""
    df = ws.store.difficulty_sources() if sources is None else sources
    if df.empty:
        return df
    return df[df["metric"] == metric].drop(columns=["metric"]).reset_index(drop=True)


def data_version(ws, sources: pd.DataFrame | None = None, n_instructions: int | None = None) -> str:
    """A token that changes whenever what the page's cached queries read changes: difficulty rows
    (computed, recomputed), task labels (a relabel, a classifier run), instructions (an import)
    and snapshots (their rebalance targets). Small aggregates; pass what the page already read."""
    sources = ws.store.difficulty_sources() if sources is None else sources
    n = ws.explore_count(ExploreFilter()) if n_instructions is None else n_instructions
    labels = ws.store.label_counts("task")
    snapshots = [(r["name"], r["content_hash"]) for r in curate.snapshots(ws)]
    return repr((sources.to_records(index=False).tolist(), labels.to_records(index=False).tolist(), int(n),
                 snapshots))


@dataclass(frozen=True)
class DeltaRange:
    low: float
    high: float
    step: float
    default: float


def delta_range(min_value, max_value, step: float = 0.25) -> DeltaRange:
    """The δ slider: from one below the data's smallest whole value (every row is kept there) to
    its largest (none is), stepping by `step`; it starts at 0 (keep what the teacher answers
    better than the student) when 0 is in range."""
    lo = math.floor(float(min_value)) if min_value is not None and not pd.isna(min_value) else 0.0
    hi = math.ceil(float(max_value)) if max_value is not None and not pd.isna(max_value) else 1.0
    lo, hi = float(lo) - 1.0, float(hi)  # one step below the minimum keeps everything
    if hi <= lo:
        hi = lo + 1.0
    return DeltaRange(lo, hi, float(step), min(max(0.0, lo), hi))


def kept_table(ws, source: str, delta: float, round: int = 0) -> pd.DataFrame:
    """Per current task: instructions with an MFD, kept at MFD > δ, and the kept share; largest
    task first (an order that does not change as δ moves)."""
    df = dif.kept_per_task(ws, source, float(delta), int(round))
    if df.empty:
        return pd.DataFrame(columns=KEPT_COLUMNS)
    out = pd.DataFrame({
        "task": df["task"].astype(str),
        "instructions with MFD": df["valued"].astype(int),
        "kept": df["kept"].astype(int),
    })
    out = out[out["instructions with MFD"] > 0]
    out["share kept"] = [k / v if v else 0.0 for k, v in zip(out["kept"], out["instructions with MFD"], strict=True)]
    return out.sort_values(["instructions with MFD", "task"], ascending=[False, True]).reset_index(drop=True)


def kept_totals(table: pd.DataFrame) -> dict:
    valued = int(table["instructions with MFD"].sum()) if not table.empty else 0
    kept = int(table["kept"].sum()) if not table.empty else 0
    return {"valued": valued, "kept": kept, "share": kept / valued if valued else 0.0}


def null_reasons(ws, source: str, round: int = 0) -> pd.DataFrame:
    """(reason, instructions): the rows of this MFD with no value, by why (core.difficulty)."""
    df = ws.store.difficulty_missing("mfd", source, int(round))
    return pd.DataFrame({"reason": df["missing"].astype(str) if not df.empty else [],
                         "instructions": df["n"].astype(int) if not df.empty else []})


def histogram(ws, source: str, round: int, bin_width: float) -> pd.DataFrame:
    """(bin_start, n) of the rows with a value, binned in DuckDB; NULL rows are left to null_reasons."""
    df = dif.difficulty_histogram(ws, source, int(round), float(bin_width))
    return df[df["bin_start"].notna()].reset_index(drop=True)


def ifd_sources(ws, round: int = 0, sources: pd.DataFrame | None = None) -> list[str]:
    """The IFD sources with a value in this round (what MFD can be compared with)."""
    df = difficulty_sources(ws, "ifd", sources)
    if df.empty:
        return []
    return df[(df["round"] == int(round)) & (df["valued"] > 0)]["source"].tolist()


def rank_correlation(ws, mfd_source: str, ifd_source: str, round: int = 0, bootstrap: int = 1000):
    return dif.rank_correlation(ws, mfd_source, ifd_source, int(round), bootstrap=bootstrap)


def correlation_text(corr) -> str:
    tau = corr.kendall
    if corr.n < 2 or math.isnan(tau.value):
        return f"Kendall τ n/a: {corr.n} instruction(s) have both an MFD and an IFD (need 2 with some spread)."
    return f"Kendall τ {tau.value:.2f} [{tau.low:.2f}, {tau.high:.2f}] (95% bootstrap, n = {corr.n})" + (
        f" · Spearman ρ {corr.spearman:.2f}" if not math.isnan(corr.spearman) else "")


# --------------------------------------------------------------------------------------------
# Tasks: now / target / after resampling
# --------------------------------------------------------------------------------------------


def rebalance_targets(ws) -> dict[str, str | tuple]:
    """Label → rebalance target: TAPIR's default, then the custom targets of the workspace's
    snapshot specs (newest first), so the page can show what an earlier round asked for."""
    out: dict[str, str | tuple] = {TAPIR_LABEL: "tapir"}
    for row in curate.snapshots(ws)[:MAX_SNAPSHOT_TARGETS]:
        try:
            spec = curate.snapshot(ws, row["name"], page_size=1).spec
        except ValueError:
            continue
        if spec.rebalance is not None and spec.rebalance.target != "tapir":
            out[f"snapshot {row['name']}"] = spec.rebalance.target
    return out


def mix_spec(pool: str, source: str | None = None, delta: float | None = None, round: int = 0,
             target="tapir", size: int | None = None) -> dict:
    """The prompts spec whose live counts are the page's task mix: every instruction, or those
    kept at MFD > δ (one source and round), rebalanced to the target."""
    target_value = target if isinstance(target, str) else {t: str(s) for t, s in target}
    spec: dict = {"kind": "prompts", "roles": [], "rebalance": {"target": target_value, "size": size}}
    if pool == POOL_KEPT:
        if source is None or delta is None:
            raise ValueError("the kept pool needs an MFD source and δ")
        spec |= {"mfd_min": float(delta), "difficulty": {"round": int(round), "mfd_source": source}}
    return spec


@dataclass
class TaskMix:
    table: pd.DataFrame          # MIX_COLUMNS, one row per task present in the pool
    pool_size: int
    size: int
    missing: tuple[str, ...] = ()  # tasks with a target share but nothing in the pool
    notes: list[str] = field(default_factory=list)


def task_mix(ws, pool: str = POOL_ALL, source: str | None = None, delta: float | None = None, round: int = 0,
             target="tapir", size: int | None = None) -> TaskMix:
    """Instructions per task now, the target share (renormalised over the tasks present, as the
    rebalancing does) and the exact counts after resampling, from curate's live counts."""
    spec = curate.load_spec(mix_spec(pool, source, delta, round, target, size))
    counts = curate.counts(ws, spec)
    per_task = counts.per_task
    available = {str(t): int(n) for t, n in zip(per_task["task"], per_task["after"], strict=True)}
    plan = curate.plan_rebalance(available, spec.rebalance.target, spec.rebalance.size)
    rows = []
    for task in sorted(available, key=lambda t: (-available[t], t)):
        now = available[task]
        if now == 0:
            continue
        share = plan.shares.get(task, Fraction(0))
        after = int(plan.counts.get(task, 0))
        rows.append({"task": task, "now": now, "now share": now / counts.after if counts.after else 0.0,
                     "target share": float(share), "target": float(share * plan.size),
                     "after": after, "after share": after / plan.size if plan.size else 0.0})
    notes = []
    if counts.planned is not None and counts.planned != plan.size:  # both from curate: a guard, not a rule
        notes.append(f"curate planned {counts.planned} rows, the plan here {plan.size}")
    return TaskMix(pd.DataFrame(rows, columns=MIX_COLUMNS), counts.after, plan.size, plan.missing, notes)


# --------------------------------------------------------------------------------------------
# Taxonomy, label sources, relabel
# --------------------------------------------------------------------------------------------


def taxonomy_frame(ws) -> pd.DataFrame:
    taxonomy = tasks_mod.get_taxonomy(ws)
    return pd.DataFrame([{"name": c.name, "family": c.family, "description": c.description}
                         for c in taxonomy.classes], columns=["name", "family", "description"])


def label_sources(ws) -> pd.DataFrame:
    """Where the current task of each instruction comes from: import, human, a model (the embed
    or llm classifier), or nowhere. Counts of instructions (the current_tasks view)."""
    df = tasks_mod.task_counts(ws)
    if df.empty:
        return pd.DataFrame(columns=["source", "instructions"])
    no_task = int(df.loc[df["task"].isna(), "n"].sum())
    rows = [("import", int(df["imported"].sum())), ("human", int(df["human"].sum())),
            ("model (embed or llm)", int(df["model"].sum())), ("no task", no_task)]
    return pd.DataFrame(rows, columns=["source", "instructions"])


def classifier_labels(ws) -> pd.DataFrame:
    """Stored task label rows per method (human, embed, llm) and classifier: every row, also the
    ones a later label replaced (a model label under an imported one, an earlier relabel)."""
    df = ws.store.label_counts("task")
    if df.empty:
        return pd.DataFrame(columns=["method", "classifier", "labels", "mean confidence"])
    method = [c if c == "human" else str(c).split(":", 1)[0] for c in df["classifier"]]
    out = pd.DataFrame({"method": method, "classifier": df["classifier"].astype(str), "labels": df["n"].astype(int),
                        "mean confidence": df["mean_confidence"]})
    return (out.groupby(["method", "classifier"], as_index=False, sort=True)
            .agg({"labels": "sum", "mean confidence": "mean"}))


def relabel_candidates(ws, search: str = "", limit: int = MAX_RELABEL_CANDIDATES) -> pd.DataFrame:
    """(id, task, instruction): the first instructions whose text or input contains `search`,
    with their current task (a relabel shows at once)."""
    page = ws.explore_page(ExploreFilter(search=(search or "").strip()), 0, int(limit), "oldest")
    if page.empty:
        return pd.DataFrame(columns=["id", "task", "instruction"])
    current = ws.store.current_tasks(page["id"].tolist())
    return pd.DataFrame({"id": page["id"], "task": [(current.get(i) or {}).get("task") for i in page["id"]],
                         "instruction": page["instruction"]}).reset_index(drop=True)


def history_frame(found: dict | None) -> pd.DataFrame:
    """An instruction's task label history (newest first), from core.tasks.task_of."""
    rows = (found or {}).get("history") or []
    return pd.DataFrame([{"task": r["value"], "by": r["classifier"], "reviewer": r.get("reviewer") or "",
                          "confidence": r.get("confidence"), "at": r.get("created_at")} for r in rows],
                        columns=["task", "by", "reviewer", "confidence", "at"])
