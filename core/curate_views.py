"""What the Curate page and Explore's sample view show, computed from core.curate's public
functions (and the store's public queries): the filter builder's widget values ↔ a spec, the
options the builder offers, a page of the samples a spec keeps, one sample's difficulty, its
judge scores and "why in / why out" as tables.

Pure or read-only, no streamlit: every function takes a workspace (or plain values) and returns
plain values or DataFrames, so tests check them without a page. Nothing here filters or counts
samples itself: that is `core.curate.counts` / `build_query` and the store's curate queries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from core import curate
from core.curate import NO_TASK, Spec, SpecError, load_spec
from core.judge import RUBRICS
from core.store.snapshots import MAX_JUDGES, CurateQuery

PREFIX = "curate_"
MAX_WEIGHT_RULES = 3
MAX_TAG_RULES = 3
PREVIEW_ROWS = 20
PREVIEW_CHARS = 200
REBALANCE_MODES = ("off", "tapir", "custom")
DEFAULT_DEDUP_THRESHOLD = 0.95


def clip(text: Any, n: int = PREVIEW_CHARS) -> str:
    """One line of at most n characters (a preview cell; shown as text, never as HTML)."""
    s = " ".join(str(text if text is not None else "").split())
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------------------------
# Judges and difficulty sources the builder offers
# --------------------------------------------------------------------------------------------


def judge_key(judge: str, rubric: str) -> str:
    """A (judge model, rubric) as one selectbox value (a JSON list: no separator can collide)."""
    return json.dumps([judge, rubric], ensure_ascii=False)


def parse_judge_key(key: str) -> tuple[str, str]:
    judge, rubric = json.loads(key)
    return judge, rubric


def judge_label(key: str | None) -> str:
    if key is None:
        return "none"
    judge, rubric = parse_judge_key(key)
    return f"{judge} · {rubric}"


def spec_judges(spec: Spec) -> list[tuple[str, str]]:
    """The (judge, rubric) pairs whose scores a spec reads: its judge rules, then dedup's judge."""
    pairs = [(rule.judge, rule.rubric) for rule in spec.judges]
    if spec.dedup is not None and spec.dedup.judge and spec.dedup.rubric:
        pairs.append((spec.dedup.judge, spec.dedup.rubric))
    return list(dict.fromkeys(pairs))


def trust_flag(judge: str, rubric: str, trust) -> tuple[str, str]:
    """How the Curate page shows a judge's calibration.Trust beside a rule that uses its scores:
    ("warning", text) when it is no better than chance on the user's labels (or worse), else
    ("caption", text); the text names the judge, since a spec can hold several."""
    return ("warning" if trust.flagged else "caption"), f"{judge} · {rubric}: {trust.sentence()}"


def rubric_scale(ws, judge: str, rubric: str) -> tuple[float, float]:
    """The score scale of a judge's rubric ("zephyr_aspects.honesty" → zephyr_aspects'), else the
    range of its parsed scores, else 0–10."""
    definition = RUBRICS.get(rubric) or RUBRICS.get(rubric.split(".")[0])
    if definition is not None and definition.scale_min is not None and definition.scale_max is not None:
        return float(definition.scale_min), float(definition.scale_max)
    scores = pd.to_numeric(ws.store.judge_score_counts(judge, rubric)["score"], errors="coerce").dropna()
    if len(scores):
        lo, hi = float(math.floor(scores.min())), float(math.ceil(scores.max()))
        return lo, hi if hi > lo else lo + 1.0
    return 0.0, 10.0


def default_min(rubric: str, lo: float, hi: float) -> float:
    """Where a judge rule's minimum starts: the rubric's documented threshold, else mid-scale."""
    definition = RUBRICS.get(rubric) or RUBRICS.get(rubric.split(".")[0])
    if definition is not None and definition.default_threshold is not None:
        return float(min(max(definition.default_threshold, lo), hi))
    return lo + (hi - lo) / 2


def slider_step(lo: float, hi: float) -> float:
    return 0.5 if hi - lo >= 2 else 0.05


def judge_options(ws) -> pd.DataFrame:
    """The judges a judge rule can use: pointwise (judge model, rubric) pairs with a parsed score,
    with their verdict counts and scale. Columns: key, judge_model, rubric, judgments, unparsed,
    targets, scale_min, scale_max."""
    judges = ws.judges()
    columns = ["key", "judge_model", "rubric", "judgments", "unparsed", "targets", "scale_min", "scale_max"]
    if judges.empty:
        return pd.DataFrame(columns=columns)
    judges = judges[(judges["kind"] == "pointwise") & (judges["judgments"] > judges["unparsed"])].copy()
    if judges.empty:
        return pd.DataFrame(columns=columns)
    judges["key"] = [judge_key(j, r) for j, r in zip(judges["judge_model"], judges["rubric"], strict=True)]
    scales = [rubric_scale(ws, j, r) for j, r in zip(judges["judge_model"], judges["rubric"], strict=True)]
    judges["scale_min"] = [lo for lo, _ in scales]
    judges["scale_max"] = [hi for _, hi in scales]
    return judges[columns].reset_index(drop=True)


def difficulty_options(ws) -> dict:
    """What the difficulty rules can read: {"rounds": [...], "mfd": {...}, "ifd": {...}}, each
    metric with its sources (valued ones) and the range of its values (None when it has none)."""
    table = ws.store.difficulty_sources()
    out: dict = {"rounds": sorted({int(r) for r in table["round"]}) if len(table) else []}
    for metric in ("mfd", "ifd"):
        rows = table[(table["metric"] == metric) & (table["valued"] > 0)] if len(table) else table
        if len(rows) == 0:
            out[metric] = {"sources": [], "min": None, "max": None, "rows": 0, "valued": 0}
            continue
        out[metric] = {"sources": sorted(set(rows["source"])), "min": float(rows["min_value"].min()),
                       "max": float(rows["max_value"].max()), "rows": int(rows["rows"].sum()),
                       "valued": int(rows["valued"].sum())}
    return out


def task_options(ws) -> list[str]:
    """Every current task in the workspace, and "(none)" when some instruction has no task."""
    from core import tasks

    counts = tasks.task_counts(ws)
    names = sorted(str(t) for t in counts["task"] if t is not None and t == t)
    if any(t is None or t != t for t in counts["task"]):
        names.append(NO_TASK)
    return names


def catalog_stamp(ws) -> str:
    """A cheap fingerprint of what live counts read (row counts, the newest label and difficulty
    rows): a page cache keyed by it never serves counts from before a new verdict, review or label."""
    counts = ws.store.table_counts()
    difficulty = ws.store.difficulty_sources()
    labels = ws.store.label_counts()
    parts = [sorted(counts.items()),
             [int(difficulty["rows"].sum()) if len(difficulty) else 0,
              str(difficulty["computed_at"].max()) if len(difficulty) else ""],
             [int(labels["n"].sum()) if len(labels) else 0, str(labels["last_labelled"].max()) if len(labels) else ""]]
    return json.dumps(parts, default=str)


# --------------------------------------------------------------------------------------------
# The filter builder: widget values ↔ spec
# --------------------------------------------------------------------------------------------


def parse_shares(text: str | None) -> dict:
    """Custom rebalancing shares from "math: 1/6, reasoning: 0.2" (or a YAML mapping)."""
    if text is None or not str(text).strip():
        raise SpecError("rebalance.target: write shares as task: share, e.g. \"math: 1/6, open_qa: 0.5\"")
    text = str(text).strip()
    try:
        value = yaml.safe_load(text if text.startswith("{") or "\n" in text else "{" + text + "}")
    except yaml.YAMLError:
        value = None
    if not isinstance(value, Mapping) or not value:
        raise SpecError(f"rebalance.target: expected task: share pairs, e.g. \"math: 1/6, open_qa: 0.5\", got {text!r}")
    return {str(k): v for k, v in value.items()}


def format_shares(target) -> str:
    if isinstance(target, str):
        return ""
    items = target.items() if isinstance(target, Mapping) else target
    return ", ".join(f"{t}: {_share_text(s)}" for t, s in items)


def _share_text(share) -> str:
    if isinstance(share, Fraction):
        return str(share.numerator) if share.denominator == 1 else (
            f"{float(share):g}" if Fraction(str(float(share))) == share else str(share))
    return str(share)


def _names(value) -> list[str]:
    return [str(v) for v in (value or [])]


def spec_from_widgets(values: Mapping[str, Any]) -> dict:
    """The spec (a dict for `load_spec`) that the builder's widget values say. `values` is keyed
    by widget key (see `builder_defaults`); a missing key takes its default."""
    v = builder_defaults() | {k: val for k, val in values.items() if k.startswith(PREFIX)}
    kind = v["curate_kind"]
    spec: dict = {"kind": kind}
    if v["curate_datasets"]:
        spec["datasets"] = _names(v["curate_datasets"])
    spec["roles"] = _names(v["curate_roles"]) if kind == "sft" else []
    if v["curate_tasks"]:
        spec["tasks"] = _names(v["curate_tasks"])
    if v["curate_review"] != "any":
        spec["review"] = v["curate_review"]
    for key in ("min_chars", "max_chars"):
        if v[f"curate_{key}"] is not None:
            spec[key] = int(v[f"curate_{key}"])
    if kind == "sft":
        judges = []
        for i in range(int(v["curate_n_judges"] or 0)):
            key = v.get(f"curate_judge_{i}")
            if not key:
                continue
            judge, rubric = parse_judge_key(key)
            rule: dict = {"judge": judge, "rubric": rubric}
            if v.get(f"curate_judge_has_min_{i}", True) and v.get(f"curate_judge_min_{i}") is not None:
                rule["min"] = float(v[f"curate_judge_min_{i}"])
            if v.get(f"curate_judge_has_max_{i}", False) and v.get(f"curate_judge_max_{i}") is not None:
                rule["max"] = float(v[f"curate_judge_max_{i}"])
            judges.append(rule)
        if judges:
            spec["judges"] = judges
    if v["curate_mfd_on"] and v["curate_mfd_min"] is not None:
        spec["mfd_min"] = float(v["curate_mfd_min"])
    if v["curate_ifd_on"] and v["curate_ifd_range"] is not None:
        lo, hi = v["curate_ifd_range"]
        spec["ifd_min"], spec["ifd_max"] = float(lo), float(hi)
    difficulty = {"round": None if v["curate_round"] in (None, "latest") else int(v["curate_round"]),
                  "mfd_source": v["curate_mfd_source"], "ifd_source": v["curate_ifd_source"]}
    if any(x is not None for x in difficulty.values()):
        spec["difficulty"] = difficulty
    if v["curate_dedup_on"]:
        dedup: dict = {"threshold": float(v["curate_dedup_threshold"])}
        if v["curate_dedup_judge"]:
            dedup["judge"], dedup["rubric"] = parse_judge_key(v["curate_dedup_judge"])
        spec["dedup"] = dedup
    if v["curate_rebalance"] != "off":
        target = "tapir" if v["curate_rebalance"] == "tapir" else parse_shares(v["curate_shares"])
        size = v["curate_rebalance_size"]
        spec["rebalance"] = {"target": target, "size": int(size) if size else None,
                             "seed": int(v["curate_rebalance_seed"] or 0)}
    weights: dict = {"default": float(v["curate_weight_default"]), "rules": []}
    for i in range(int(v["curate_n_weight_rules"] or 0)):
        when: dict = {}
        for field in ("tasks", "datasets"):
            if v.get(f"curate_weight_{field}_{i}"):
                when[field] = _names(v[f"curate_weight_{field}_{i}"])
        if v.get(f"curate_weight_mfd_{i}") is not None:
            when["mfd_min"] = float(v[f"curate_weight_mfd_{i}"])
        weight = v.get(f"curate_weight_value_{i}")
        weights["rules"].append({"when": when, "weight": float(1.0 if weight is None else weight)})
    if weights["rules"] or weights["default"] != 1.0:
        spec["weights"] = weights
    tags: dict = {"rules": []}
    if v["curate_tag_default"] and str(v["curate_tag_default"]).strip():
        tags["default"] = str(v["curate_tag_default"])
    for i in range(int(v["curate_n_tag_rules"] or 0)):
        when = {field: _names(v[f"curate_tag_{field}_{i}"]) for field in ("tasks", "datasets")
                if v.get(f"curate_tag_{field}_{i}")}
        tags["rules"].append({"when": when, "tag": v.get(f"curate_tag_text_{i}") or ""})
    if tags["rules"] or "default" in tags:
        spec["system_tags"] = tags
    return spec


def builder_defaults() -> dict:
    """Every widget key of the builder with the value it starts on (what an empty spec says)."""
    return {
        "curate_kind": "sft", "curate_datasets": [], "curate_roles": ["seed"], "curate_tasks": [],
        "curate_review": "any", "curate_min_chars": None, "curate_max_chars": None, "curate_n_judges": 0,
        "curate_round": "latest", "curate_mfd_on": False, "curate_mfd_min": None, "curate_mfd_source": None,
        "curate_ifd_on": False, "curate_ifd_range": None, "curate_ifd_source": None,
        "curate_dedup_on": False, "curate_dedup_threshold": DEFAULT_DEDUP_THRESHOLD, "curate_dedup_judge": None,
        "curate_rebalance": "off", "curate_shares": "", "curate_rebalance_size": 0, "curate_rebalance_seed": 0,
        "curate_weight_default": 1.0, "curate_n_weight_rules": 0, "curate_tag_default": "", "curate_n_tag_rules": 0,
    }


class NotRepresentable(ValueError):
    """A spec the builder's widgets cannot say exactly (use it as YAML instead)."""


def widgets_from_spec(spec) -> dict:
    """The builder's widget values for a spec; raises NotRepresentable (naming what is lost) when
    the widgets cannot say it exactly, i.e. when `spec_from_widgets` would give another spec."""
    spec = load_spec(spec)
    lost = []
    v = builder_defaults()
    v.update({"curate_kind": spec.kind, "curate_datasets": list(spec.datasets),
              "curate_roles": list(spec.roles) if spec.kind == "sft" else ["seed"], "curate_tasks": list(spec.tasks),
              "curate_review": spec.review, "curate_min_chars": spec.min_chars, "curate_max_chars": spec.max_chars,
              "curate_n_judges": len(spec.judges)})
    for i, rule in enumerate(spec.judges):
        v[f"curate_judge_{i}"] = judge_key(rule.judge, rule.rubric)
        v[f"curate_judge_has_min_{i}"] = rule.min is not None
        v[f"curate_judge_min_{i}"] = rule.min
        v[f"curate_judge_has_max_{i}"] = rule.max is not None
        v[f"curate_judge_max_{i}"] = rule.max
    v["curate_mfd_on"], v["curate_mfd_min"] = spec.mfd_min is not None, spec.mfd_min
    if spec.mfd_max is not None:
        lost.append("mfd_max")
    if (spec.ifd_min is None) != (spec.ifd_max is None):
        lost.append("an IFD bound without the other (the builder sets both)")
    elif spec.ifd_min is not None:
        v["curate_ifd_on"], v["curate_ifd_range"] = True, (spec.ifd_min, spec.ifd_max)
    d = spec.difficulty
    v["curate_round"] = "latest" if d.round is None else str(d.round)
    v["curate_mfd_source"], v["curate_ifd_source"] = d.mfd_source, d.ifd_source
    if spec.dedup:
        v["curate_dedup_on"], v["curate_dedup_threshold"] = True, spec.dedup.threshold
        v["curate_dedup_judge"] = judge_key(spec.dedup.judge, spec.dedup.rubric) if spec.dedup.judge else None
    if spec.rebalance:
        r = spec.rebalance
        v["curate_rebalance"] = "tapir" if r.target == "tapir" else "custom"
        v["curate_shares"] = format_shares(r.target)
        v["curate_rebalance_size"], v["curate_rebalance_seed"] = r.size or 0, r.seed
    v["curate_weight_default"] = spec.weights.default
    if len(spec.weights.rules) > MAX_WEIGHT_RULES:
        lost.append(f"more than {MAX_WEIGHT_RULES} weight rules")
    v["curate_n_weight_rules"] = min(len(spec.weights.rules), MAX_WEIGHT_RULES)
    for i, rule in enumerate(spec.weights.rules[:MAX_WEIGHT_RULES]):
        v[f"curate_weight_tasks_{i}"], v[f"curate_weight_datasets_{i}"] = list(rule.when.tasks), list(rule.when.datasets)
        v[f"curate_weight_mfd_{i}"], v[f"curate_weight_value_{i}"] = rule.when.mfd_min, rule.weight
    v["curate_tag_default"] = spec.system_tags.default or ""
    if len(spec.system_tags.rules) > MAX_TAG_RULES:
        lost.append(f"more than {MAX_TAG_RULES} system tag rules")
    v["curate_n_tag_rules"] = min(len(spec.system_tags.rules), MAX_TAG_RULES)
    for i, rule in enumerate(spec.system_tags.rules[:MAX_TAG_RULES]):
        v[f"curate_tag_tasks_{i}"], v[f"curate_tag_datasets_{i}"] = list(rule.when.tasks), list(rule.when.datasets)
        v[f"curate_tag_text_{i}"] = rule.tag
    if not lost:
        try:
            if load_spec(spec_from_widgets(v)) != spec:
                lost.append("rule conditions the builder has no field for (roles, mfd_max, ifd bounds)")
        except SpecError as exc:
            lost.append(str(exc))
    if lost:
        raise NotRepresentable("the filter builder cannot show " + "; ".join(lost))
    return v


def spec_yaml(spec) -> str:
    """A spec as YAML: the keys a user set, in the spec's own order (the defaults left out)."""
    spec = load_spec(spec)
    full, default = spec.to_dict(), Spec().to_dict()
    shown = {k: _prune(val) for k, val in full.items() if val != default.get(k) or k in ("kind", "roles")}
    if spec.kind != "sft":
        shown.pop("roles", None)
    shown = {k: val for k, val in shown.items() if val not in (None, {}) or k == "kind"}
    # Top-level keys in block style, short lists and mappings inside them in flow style.
    return "".join(yaml.safe_dump({k: val}, sort_keys=False, allow_unicode=True, width=100,
                                  default_flow_style=None if isinstance(val, dict | list) else False)
                   for k, val in shown.items())


def _prune(value):
    """Nested nulls and empty lists left out: they are the defaults, and load back the same."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Live counts and a page of what a spec keeps
# --------------------------------------------------------------------------------------------


def counts_table(result: curate.Counts) -> pd.DataFrame:
    """Per task: now (before the rules), after the rules, dropped, and the rebalancing plan."""
    table = result.per_task.rename(columns={"before": "now", "after": "after filters"}).copy()
    table["dropped"] = table["now"] - table["after filters"]
    if "planned" in table.columns:
        table = table.rename(columns={"planned": "after rebalancing"})
    return table


def preview(ws, spec, page: int = 0, page_size: int = PREVIEW_ROWS) -> tuple[pd.DataFrame, int]:
    """One page of the samples the spec's rules keep, in the stable order, and how many it keeps:
    instruction and response previews, task, each judge's score, MFD, IFD, weight and system tag.
    Near-duplicate removal and rebalancing are decided when a snapshot is made (not here)."""
    if not 1 <= page_size <= 50:
        raise ValueError(f"page_size must be between 1 and 50, not {page_size}")
    spec = load_spec(spec)
    store = ws.store
    fates = store.curate_fates(curate.build_query(store, spec))
    kept = fates.filter(pc.is_null(fates.column("rule")))
    n = kept.num_rows
    chunk = kept.slice(max(0, page) * page_size, page_size).to_pandas()
    columns = ["instruction", "response", "task", "dataset", "role"] + \
        [f"score {j.judge}/{j.rubric}" for j in spec.judges] + ["mfd", "ifd", "weight", "system tag", "sample id"]
    if chunk.empty:
        return pd.DataFrame(columns=columns), n
    chunk["task"] = chunk["task"].fillna(NO_TASK)
    names = {v: k for k, v in store.curate_dataset_ids().items()}
    chunk["dataset"] = chunk["dataset_id"].map(names)
    weights, tags = curate.assign_weights_and_tags(chunk, spec)
    members = pa.table({
        "position": pa.array(range(len(chunk)), pa.int32()),
        "instruction_id": pa.array(chunk["instruction_id"], pa.string()),
        "response_id": pa.array(chunk["response_id"], pa.string(), from_pandas=True),
        "task": pa.array(chunk["task"], pa.string()),
        "weight": pa.array(weights, pa.float64()), "copy": pa.array([0] * len(chunk), pa.int32()),
        "system_tag": pa.array(tags, pa.string()),
    })
    texts = store.snapshot_member_texts(members).to_pandas().sort_values("position")
    out = pd.DataFrame({
        "instruction": [clip(t if not i else f"{t}\n\n{i}") for t, i in zip(texts["instruction"], texts["input"],
                                                                              strict=True)],
        "response": [clip(r) if r is not None else "" for r in texts["response"]],
        "task": chunk["task"].tolist(), "dataset": chunk["dataset"].tolist(),
        "role": [r if r is not None else "" for r in chunk["role"]],
    })
    for k, j in enumerate(spec.judges, start=1):
        out[f"score {j.judge}/{j.rubric}"] = chunk[f"judge_{k}"].tolist()
    out["mfd"], out["ifd"] = chunk["mfd"].tolist(), chunk["ifd"].tolist()
    out["weight"], out["system tag"] = list(weights), [t or "" for t in tags]
    out["sample id"] = [r if r is not None else i for r, i in zip(chunk["response_id"], chunk["instruction_id"],
                                                                  strict=True)]
    return out[columns], n


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


def snapshots_table(rows: list[dict]) -> pd.DataFrame:
    """curate.snapshots() as the page's table."""
    return pd.DataFrame([{"name": r["name"], "kind": r["kind"], "members": int(r["n_members"]),
                          "instructions": int(r["n_instructions"]), "created": r["created_at"],
                          "hash": r["content_hash"][:12]} for r in rows],
                        columns=["name", "kind", "members", "instructions", "created", "hash"])


def snapshot_stats_table(stats: dict) -> pd.DataFrame:
    """A snapshot's per-task counts at each step (before, after filters, dedup, final)."""
    return pd.DataFrame(stats.get("per_task") or [])


def snapshot_rules_table(stats: dict) -> pd.DataFrame:
    return pd.DataFrame([{"rule": r["rule"], "dropped": r["dropped"]} for r in stats.get("rules") or []],
                        columns=["rule", "dropped"])


# --------------------------------------------------------------------------------------------
# Why in / why out
# --------------------------------------------------------------------------------------------

EXPLAIN_COLUMNS = ["response", "in", "rule", "value", "weight", "system tag", "copies", "duplicate of", "note"]


def explain_table(result: dict, role_of: Mapping[str, str] | None = None) -> pd.DataFrame:
    """`curate.explain`'s answer (one sample, or an instruction's samples) as rows: in or out,
    the rule that dropped it and the value it read, else its weight, tag and copies."""
    samples = result.get("samples") or [result]
    role_of = role_of or {}
    rows = []
    for s in samples:
        rid = s.get("response_id")
        rows.append({
            "response": (f"{role_of[rid]} · {rid[:8]}" if rid in role_of else (rid or "(the instruction)")),
            "in": "in" if s.get("in") else "out",
            "rule": s.get("rule") or "", "value": "" if s.get("value") is None else str(s["value"]),
            "weight": s.get("weight"), "system tag": s.get("system_tag") or "",
            "copies": s.get("copies"), "duplicate of": s.get("duplicate_of") or "", "note": s.get("note") or "",
        })
    return pd.DataFrame(rows, columns=EXPLAIN_COLUMNS)


def explain_sentence(result: dict) -> str:
    """One line: "in (weight 1)" / "out: judge m/pointwise_5 min 4 (value 2)"; for several
    samples, how many are in."""
    samples = result.get("samples")
    if samples:
        n_in = sum(1 for s in samples if s.get("in"))
        return f"{n_in} of {len(samples)} samples of this instruction are in"
    if result.get("in"):
        weight = result.get("weight")
        return "in" + (f" (weight {weight:g})" if isinstance(weight, int | float) else "")
    value = result.get("value")
    return f"out: {result.get('rule')}" + ("" if value is None else f" (value {value})")


# --------------------------------------------------------------------------------------------
# One sample: task labels, judge scores, difficulty
# --------------------------------------------------------------------------------------------


def label_history_table(task_info: dict | None) -> pd.DataFrame:
    columns = ["created_at", "value", "classifier", "confidence", "reviewer", "job"]
    if not task_info or not task_info.get("history"):
        return pd.DataFrame(columns=columns)
    return pd.DataFrame([{"created_at": h["created_at"], "value": h["value"], "classifier": h["classifier"],
                          "confidence": h["confidence"], "reviewer": h["reviewer"] or "", "job": h["job_id"] or ""}
                         for h in task_info["history"]], columns=columns)


def judge_scores_table(judgments: list[dict], role_of: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per target and (judge, rubric, mode): the score curation reads (the mean of the parsed
    verdicts; empty when none parsed, never 0), the mean confidence and the verdict counts."""
    columns = ["target", "judge", "rubric", "mode", "score", "confidence", "verdicts", "parsed"]
    rows = [j for j in judgments if j.get("kind") == "pointwise"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    frame["mode"] = frame.get("mode", pd.Series([None] * len(frame))).fillna("generate")
    role_of = role_of or {}
    out = []
    for (target, judge, rubric, mode), part in frame.groupby(["target_id", "judge_model", "rubric", "mode"],
                                                              sort=True):
        scores = pd.to_numeric(part["score"], errors="coerce").dropna()
        confidence = pd.to_numeric(part["confidence"], errors="coerce").dropna() if "confidence" in part else []
        out.append({"target": role_of.get(target, target), "judge": judge, "rubric": rubric, "mode": mode,
                    "score": float(scores.mean()) if len(scores) else None,
                    "confidence": float(confidence.mean()) if len(confidence) else None,
                    "verdicts": len(part), "parsed": len(scores)})
    return pd.DataFrame(out, columns=columns)


def sample_difficulty(ws, instruction_id: str, max_sources: int = 50) -> pd.DataFrame:
    """One instruction's MFD and IFD per computed (metric, source, round): the value curation's
    difficulty rules read for that source and round (None: no value for this instruction, either
    no row or a row whose value is missing). Read through the curate values query, one instruction
    at a time, so it costs one small query per source and round."""
    sources = ws.store.difficulty_sources()
    columns = ["metric", "source", "round", "value"]
    rows = []
    for metric, source, rnd in zip(sources["metric"], sources["source"], sources["round"], strict=True):
        if len(rows) >= max_sources:
            break
        q = CurateQuery(pool="prompts", roles=(), difficulty_round=int(rnd),
                        mfd_source=source if metric == "mfd" else None,
                        ifd_source=source if metric == "ifd" else None)
        values = ws.store.curate_values(q, instruction_id)
        if values.num_rows == 0 or metric not in values.column_names:
            continue
        value = values.column(metric)[0].as_py()
        rows.append({"metric": metric, "source": source, "round": int(rnd), "value": value})
    return pd.DataFrame(rows, columns=columns)


__all__ = [
    "MAX_JUDGES", "NotRepresentable", "builder_defaults", "catalog_stamp", "counts_table", "difficulty_options",
    "default_min", "explain_sentence", "explain_table", "format_shares", "judge_key", "judge_label", "judge_options",
    "judge_scores_table", "label_history_table", "parse_judge_key", "parse_shares", "preview", "rubric_scale",
    "sample_difficulty", "snapshot_rules_table", "snapshot_stats_table", "snapshots_table", "spec_from_widgets",
    "spec_judges", "spec_yaml", "task_options", "trust_flag", "widgets_from_spec",
]
