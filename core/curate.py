"""Curation: specs → named, immutable snapshots; live counts; why in / why out (DESIGN.md §7).

A **spec** is data (YAML, JSON or a dict) that says which (instruction, response) samples a
training round gets, and how:

    kind: sft                    # sft (default) | prompts (instructions only) | preference (pairs)
    datasets: [seed, augmented]  # default: every dataset
    roles: [seed]                # the training target's response role (sft only; default [seed])
    tasks: [math, reasoning]     # current task (the current_tasks view); "(none)" = unlabeled
    review: not_rejected         # any | accepted | rejected | unreviewed | not_rejected
    min_chars: 10                # instruction length (input included), as Explore counts it
    max_chars: 4000
    judges:                      # mean parsed score of a judge on the response; no verdict = out
      - {judge: smollm2-135m-instruct, rubric: pointwise_5, min: 4}
    mfd_min: 0.5                 # TAPIR: keep MFD > δ (strict); mfd_max / ifd_max inclusive
    ifd_max: 1.0
    difficulty: {round: null, mfd_source: null, ifd_source: null}   # null round: each instruction's latest
    dedup: {threshold: 0.95}     # + judge/rubric: keep the highest-scored of near-duplicates
    rebalance: {target: tapir, size: 2000, seed: 0}   # or target: {math: 0.3, open_qa: "1/6", ...}
    weights:                     # first matching rule wins; else default
      default: 1.0
      rules:
        - {when: {tasks: [math], mfd_min: 1.0}, weight: 2.0}
    pairs: {methods: [ai_feedback], rounds: [2]}   # preference only: which pairs of an instruction
    system_tags:                 # first matching rule wins; else default (null: the instruction's own)
      rules:
        - {when: {datasets: [seed]}, tag: "Answer in the style of an AI assistant."}
        - {when: {datasets: [augmented]}, tag: "Answer with knowledge from web search."}

**Rules, in order** (a sample's fate is the first rule it fails; "why out" names it and the value
it read): tasks, review, min_chars, max_chars, then each judge (no verdict, min, max), then MFD (no
value, min, max) and IFD (no value, min, max). The pool itself (datasets, roles, kind) is not a
rule: what is outside it is not a sample of the spec. After the rules, in Python:

1. Near-duplicate removal (`dedup`) works on distinct instructions: their MiniLM embeddings
   (instruction, then input) are visited in the stable order (insertion order, or the named
   judge's best score on the instruction first); one is dropped when its cosine with an earlier
   kept one is ≥ τ, with all its samples. Two responses to one instruction are not duplicates.
   Exact greedy, blockwise: each block of vectors is compared with the kept ones by matrix
   products, then resolved inside the block (see `near_duplicates`).
2. Rebalancing (`rebalance`) sets exact per-task counts by the largest-remainder rule (see
   `plan_rebalance`), then down-samples over-full tasks (seeded, without replacement) and repeats
   under-full ones (whole repeats, then a seeded choice of the remainder; repeats are recorded
   as copies 1, 2, …). A task with a share but no samples is reported, never invented.
3. Weights and system tags: the first matching rule, per sample.

**Live counts** (`counts`) are one aggregate query over the same rule expression; they count every
rule but not near-duplicate removal (it needs the embeddings); the rebalancing plan is computed
from them, and is exact whenever the spec does not dedup.

A **snapshot** is materialised once: members in `snapshot_members`, a row in `snapshots` (content
hash over the spec and the ordered members, stats), a Parquet file with the full texts under
`runs/snapshots/<name>.parquet` (what training reads), and the dropped samples with their rule
and value beside it (`<name>.drops.parquet`), so "why out" of an old snapshot tells what was true
when it was made.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from core.export import (
    FILE_TYPES,
    ExportError,
    ExportResult,
    to_alpaca,
    to_messages,
    to_preference,
    to_prompt,
    write_records,
)
from core.ids import content_id
from core.store.snapshots import MAX_JUDGES, CurateQuery, CurateRule

KINDS = ("sft", "prompts", "preference")
REVIEWS = ("any", "accepted", "rejected", "unreviewed", "not_rejected")
NO_TASK = "(none)"
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$")
# TAPIR's default task mix (arXiv 2405.13448): math and reasoning boosted, then code; the rest of
# the mass is spread evenly over the other tasks present.
TAPIR_SHARES = {"math": Fraction(1, 6), "reasoning": Fraction(1, 6),
                "code_generation": Fraction(1, 12), "code_debugging": Fraction(1, 12)}
DEDUP_BLOCK = 2048      # vectors compared per matrix product with the kept ones …
DEDUP_KEPT_CHUNK = 16384  # … in chunks of kept vectors: a block × chunk float32 product is 128 MiB


class SpecError(ValueError):
    """A spec is invalid; the message names the key and the bad value."""


class SnapshotExists(ValueError):
    """A snapshot of that name exists with other content: snapshots are immutable."""


# --------------------------------------------------------------------------------------------
# The spec: a frozen dataclass tree
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeRule:
    judge: str
    rubric: str
    min: float | None = None
    max: float | None = None

    @property
    def label(self) -> str:
        return f"judge {self.judge}/{self.rubric}"


@dataclass(frozen=True)
class Difficulty:
    round: int | None = None       # None: each instruction's latest round
    mfd_source: str | None = None  # None: any source (the latest row)
    ifd_source: str | None = None


@dataclass(frozen=True)
class Dedup:
    threshold: float = 0.95
    judge: str | None = None  # with rubric: keep the highest-scored of near-duplicates
    rubric: str | None = None


@dataclass(frozen=True)
class Rebalance:
    target: str | tuple[tuple[str, Fraction], ...] = "tapir"
    size: int | None = None  # None: the size of the pool after filters and dedup
    seed: int = 0


@dataclass(frozen=True)
class Condition:
    """`when` of a weight or tag rule: every given field must hold (AND)."""

    tasks: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    mfd_min: float | None = None
    mfd_max: float | None = None
    ifd_min: float | None = None
    ifd_max: float | None = None

    @property
    def label(self) -> str:
        parts = [f"{k} {_fmt(v)}" for k, v in _nonempty(self).items()]
        return "when " + (", ".join(parts) if parts else "always")


@dataclass(frozen=True)
class WeightRule:
    when: Condition
    weight: float


@dataclass(frozen=True)
class Weights:
    default: float = 1.0
    rules: tuple[WeightRule, ...] = ()


@dataclass(frozen=True)
class TagRule:
    when: Condition
    tag: str


@dataclass(frozen=True)
class SystemTags:
    default: str | None = None
    rules: tuple[TagRule, ...] = ()


@dataclass(frozen=True)
class PairFilter:
    """Which preference pairs a preference snapshot takes (empty: any): by how they were made
    (`preference_pairs.method`: import, ai_feedback, ...) and the round they belong to. A Zephyr
    round trains on its own round's pairs, not on every pair its prompts ever had."""

    methods: tuple[str, ...] = ()
    rounds: tuple[int, ...] = ()


@dataclass(frozen=True)
class Spec:
    kind: str = "sft"
    datasets: tuple[str, ...] = ()
    roles: tuple[str, ...] = ("seed",)
    tasks: tuple[str, ...] = ()
    review: str = "any"
    min_chars: int | None = None
    max_chars: int | None = None
    judges: tuple[JudgeRule, ...] = ()
    mfd_min: float | None = None
    mfd_max: float | None = None
    ifd_min: float | None = None
    ifd_max: float | None = None
    difficulty: Difficulty = field(default_factory=Difficulty)
    dedup: Dedup | None = None
    rebalance: Rebalance | None = None
    weights: Weights = field(default_factory=Weights)
    system_tags: SystemTags = field(default_factory=SystemTags)
    pairs: PairFilter | None = None

    def to_dict(self) -> dict:
        """The canonical form (every key; `pairs` only when set, so the specs and content hashes
        written before it existed stay the same), which load_spec reads back to an equal Spec."""
        d = _plain(self)
        if d["pairs"] is None:
            del d["pairs"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)


def _plain(value):
    if isinstance(value, Rebalance):
        target = value.target if isinstance(value.target, str) else {t: _share_out(s) for t, s in value.target}
        return {"target": target, "size": value.size, "seed": value.seed}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _share_out(share: Fraction) -> float | str:
    return int(share) if share.denominator == 1 else (float(share) if _is_short_decimal(share) else str(share))


def _is_short_decimal(share: Fraction) -> bool:
    return Fraction(str(float(share))) == share


def _nonempty(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) not in (None, ())}


def _fmt(value) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------------------------
# Loading and validating a spec
# --------------------------------------------------------------------------------------------


def load_spec(source: Spec | Mapping | str | Path) -> Spec:
    """A Spec from a Spec, a dict, YAML/JSON text, or a .yaml/.yml/.json file path."""
    if isinstance(source, Spec):
        return source
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and source.endswith((".yaml", ".yml", ".json"))):
        path = Path(source)
        if not path.exists():
            raise SpecError(f"spec file {str(path)!r} does not exist")
        source = path.read_text(encoding="utf-8")
    if isinstance(source, str):
        try:
            source = yaml.safe_load(source)  # YAML is a superset of JSON
        except yaml.YAMLError as exc:
            raise SpecError(f"spec: not valid YAML or JSON ({exc})") from None
    if source is None:
        source = {}
    if not isinstance(source, Mapping):
        raise SpecError(f"spec: expected a mapping of keys, got {source!r}")
    return _parse_spec(dict(source))


def _parse_spec(d: dict) -> Spec:
    _check_keys("spec", d, Spec)
    roles_given = "roles" in d
    roles = _names("roles", d.get("roles", ["seed"]))
    kind = d.get("kind", "sft" if roles else "prompts")
    if kind not in KINDS:
        raise SpecError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "sft" and not roles:
        raise SpecError("roles: an sft snapshot needs a response role (or use kind: prompts), got []")
    if kind != "sft":
        if roles_given and roles:
            raise SpecError(f"roles: a {kind} snapshot has no response target; use roles: [], got {list(roles)!r}")
        roles = ()
    review = d.get("review", "any")
    if review not in REVIEWS:
        raise SpecError(f"review: expected one of {', '.join(REVIEWS)}, got {review!r}")
    judges = tuple(_judge(f"judges[{i}]", j) for i, j in enumerate(_list("judges", d.get("judges") or [])))
    if judges and kind != "sft":
        raise SpecError(f"judges: judge rules score a response; a {kind} snapshot has none, got {d['judges']!r}")
    spec = Spec(
        kind=kind, datasets=_names("datasets", d.get("datasets", [])), roles=roles,
        tasks=_names("tasks", d.get("tasks", [])), review=review,
        min_chars=_int("min_chars", d.get("min_chars"), minimum=0),
        max_chars=_int("max_chars", d.get("max_chars"), minimum=0),
        judges=judges,
        mfd_min=_number("mfd_min", d.get("mfd_min")), mfd_max=_number("mfd_max", d.get("mfd_max")),
        ifd_min=_number("ifd_min", d.get("ifd_min")), ifd_max=_number("ifd_max", d.get("ifd_max")),
        difficulty=_difficulty(d.get("difficulty")),
        dedup=_dedup(d.get("dedup")),
        rebalance=_rebalance(d.get("rebalance")),
        weights=_weights(d.get("weights")),
        system_tags=_system_tags(d.get("system_tags")),
        pairs=_pairs(d.get("pairs"), kind),
    )
    if len(_judge_list(spec)) > MAX_JUDGES:  # the store keeps one score column per judge
        raise SpecError(f"judges: at most {MAX_JUDGES} judges (dedup's included), got {len(_judge_list(spec))}")
    _check_range("min_chars", spec.min_chars, "max_chars", spec.max_chars, strict=False)
    _check_range("mfd_min", spec.mfd_min, "mfd_max", spec.mfd_max, strict=True)
    _check_range("ifd_min", spec.ifd_min, "ifd_max", spec.ifd_max, strict=True)
    return spec


def _check_keys(path: str, d: Mapping, cls, aliases: Mapping[str, str] | None = None) -> None:
    known = {f.name for f in fields(cls)} | set(aliases or {})
    for key in d:
        if key not in known:
            raise SpecError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})")


def _check_range(lo_key: str, lo, hi_key: str, hi, strict: bool) -> None:
    # A strict minimum equal to the maximum keeps nothing: say so instead of an empty snapshot.
    if lo is not None and hi is not None and (lo >= hi if strict else lo > hi):
        raise SpecError(f"{lo_key}: {lo!r} must be below {hi_key} {hi!r}")


def _mapping(path: str, value) -> dict:
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}: expected a mapping, got {value!r}")
    return dict(value)


def _list(path: str, value) -> list:
    if not isinstance(value, list | tuple):
        raise SpecError(f"{path}: expected a list, got {value!r}")
    return list(value)


def _pairs(value, kind: str) -> PairFilter | None:
    if value is None:
        return None
    if kind != "preference":
        raise SpecError(f"pairs: only a preference snapshot takes a pair filter, this one is {kind}")
    if not isinstance(value, Mapping):
        raise SpecError(f"pairs: expected a mapping with methods and/or rounds, got {value!r}")
    _check_keys("pairs", dict(value), PairFilter)
    rounds = _list("pairs.rounds", value.get("rounds") or [])
    for r in rounds:
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise SpecError(f"pairs.rounds: expected round numbers (integers ≥ 0), got {r!r}")
    return PairFilter(methods=_names("pairs.methods", value.get("methods") or []), rounds=tuple(dict.fromkeys(rounds)))


def _names(path: str, value) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else _list(path, value)
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise SpecError(f"{path}: expected names (non-empty strings), got {v!r}")
    return tuple(dict.fromkeys(v.strip() for v in values))


def _text(path: str, value, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{path}: expected a non-empty string, got {value!r}")
    return value


def _number(path: str, value, minimum: float | None = None, maximum: float | None = None,
            optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise SpecError(f"{path}: expected a number, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SpecError(f"{path}: expected a number in [{_fmt(minimum)}, {_fmt(maximum)}], got {value!r}")
    return float(value)


def _int(path: str, value, minimum: int | None = None, optional: bool = True) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}: expected a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(f"{path}: expected a whole number >= {minimum}, got {value!r}")
    return int(value)


def _judge(path: str, value) -> JudgeRule:
    d = _mapping(path, value)
    _check_keys(path, d, JudgeRule)
    rule = JudgeRule(judge=_text(f"{path}.judge", d.get("judge"), optional=False),
                     rubric=_text(f"{path}.rubric", d.get("rubric"), optional=False),
                     min=_number(f"{path}.min", d.get("min")), max=_number(f"{path}.max", d.get("max")))
    _check_range(f"{path}.min", rule.min, "max", rule.max, strict=False)
    return rule


def _difficulty(value) -> Difficulty:
    d = _mapping("difficulty", value or {})
    _check_keys("difficulty", d, Difficulty)
    return Difficulty(round=_int("difficulty.round", d.get("round"), minimum=0),
                      mfd_source=_text("difficulty.mfd_source", d.get("mfd_source")),
                      ifd_source=_text("difficulty.ifd_source", d.get("ifd_source")))


def _dedup(value) -> Dedup | None:
    if value is None or value is False:
        return None
    d = _mapping("dedup", value)
    _check_keys("dedup", d, Dedup)
    dedup = Dedup(threshold=_number("dedup.threshold", d.get("threshold", 0.95), minimum=-1.0, maximum=1.0,
                                    optional=False),
                  judge=_text("dedup.judge", d.get("judge")), rubric=_text("dedup.rubric", d.get("rubric")))
    if (dedup.judge is None) != (dedup.rubric is None):
        raise SpecError(f"dedup: judge and rubric go together, got judge {dedup.judge!r}, rubric {dedup.rubric!r}")
    return dedup


def _share(path: str, value) -> Fraction:
    """A target share: a number, or a fraction written "1/6" (exact, so counts are too)."""
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        share = Fraction(str(value).strip()) if isinstance(value, str) else Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise SpecError(f"{path}: expected a share (a number or a fraction like \"1/6\"), got {value!r}") from None
    if share < 0:
        raise SpecError(f"{path}: a share cannot be negative, got {value!r}")
    return share


def _rebalance(value) -> Rebalance | None:
    if value is None or value is False:
        return None
    d = _mapping("rebalance", value)
    _check_keys("rebalance", d, Rebalance)
    target = d.get("target", "tapir")
    if isinstance(target, str):
        if target != "tapir":
            raise SpecError(f"rebalance.target: expected \"tapir\" or a mapping of task to share, got {target!r}")
    else:
        shares = _mapping("rebalance.target", target)
        parsed = tuple((_names("rebalance.target", [t])[0], _share(f"rebalance.target.{t}", s))
                       for t, s in shares.items())
        if not any(s > 0 for _, s in parsed):
            raise SpecError(f"rebalance.target: at least one task needs a share above 0, got {target!r}")
        target = parsed
    return Rebalance(target=target, size=_int("rebalance.size", d.get("size"), minimum=1),
                     seed=_int("rebalance.seed", d.get("seed", 0), optional=False))


_CONDITION_ALIASES = {"task": "tasks", "role": "roles", "dataset": "datasets"}


def _condition(path: str, value) -> Condition:
    d = _mapping(path, value or {})
    _check_keys(path, d, Condition, _CONDITION_ALIASES)
    d = {_CONDITION_ALIASES.get(k, k): v for k, v in d.items()}
    cond = Condition(tasks=_names(f"{path}.tasks", d.get("tasks", [])),
                     roles=_names(f"{path}.roles", d.get("roles", [])),
                     datasets=_names(f"{path}.datasets", d.get("datasets", [])),
                     **{k: _number(f"{path}.{k}", d.get(k)) for k in ("mfd_min", "mfd_max", "ifd_min", "ifd_max")})
    _check_range(f"{path}.mfd_min", cond.mfd_min, "mfd_max", cond.mfd_max, strict=True)
    _check_range(f"{path}.ifd_min", cond.ifd_min, "ifd_max", cond.ifd_max, strict=True)
    return cond


def _weights(value) -> Weights:
    if value is None:
        return Weights()
    if not isinstance(value, Mapping):  # a constant weight for every sample
        return Weights(default=_number("weights", value, minimum=0.0, optional=False))
    d = dict(value)
    _check_keys("weights", d, Weights)
    rules = []
    for i, rule in enumerate(_list("weights.rules", d.get("rules") or [])):
        path = f"weights.rules[{i}]"
        r = _mapping(path, rule)
        _check_keys(path, r, WeightRule)
        rules.append(WeightRule(when=_condition(f"{path}.when", r.get("when")),
                                weight=_number(f"{path}.weight", r.get("weight"), minimum=0.0, optional=False)))
    return Weights(default=_number("weights.default", d.get("default", 1.0), minimum=0.0, optional=False),
                   rules=tuple(rules))


def _system_tags(value) -> SystemTags:
    d = _mapping("system_tags", value or {})
    _check_keys("system_tags", d, SystemTags)
    rules = []
    for i, rule in enumerate(_list("system_tags.rules", d.get("rules") or [])):
        path = f"system_tags.rules[{i}]"
        r = _mapping(path, rule)
        _check_keys(path, r, TagRule)
        rules.append(TagRule(when=_condition(f"{path}.when", r.get("when")),
                             tag=_text(f"{path}.tag", r.get("tag"), optional=False)))
    return SystemTags(default=_text("system_tags.default", d.get("default")), rules=tuple(rules))


# --------------------------------------------------------------------------------------------
# The spec as rules the store runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str           # what "why out" says: "judge smollm2/pointwise_5 min 4"
    query: CurateRule
    numeric: bool = True


def spec_rules(spec: Spec) -> list[Rule]:
    """The spec's filter rules in the order a sample meets them."""
    rules: list[Rule] = []
    if spec.tasks:
        rules.append(Rule(f"tasks {_fmt(spec.tasks)}", CurateRule("task", (list(spec.tasks),)), numeric=False))
    if spec.review != "any":
        rules.append(Rule(f"review {spec.review}", CurateRule(f"review_{spec.review}"), numeric=False))
    if spec.min_chars is not None:
        rules.append(Rule(f"min_chars {spec.min_chars}", CurateRule("min_chars", (spec.min_chars,))))
    if spec.max_chars is not None:
        rules.append(Rule(f"max_chars {spec.max_chars}", CurateRule("max_chars", (spec.max_chars,))))
    for k, judge in enumerate(spec.judges, start=1):
        rules.append(Rule(f"{judge.label}: no verdict", CurateRule("judge_present", (k,), (k,))))
        if judge.min is not None:
            rules.append(Rule(f"{judge.label} min {_fmt(judge.min)}", CurateRule("judge_min", (k, judge.min), (k,))))
        if judge.max is not None:
            rules.append(Rule(f"{judge.label} max {_fmt(judge.max)}", CurateRule("judge_max", (k, judge.max), (k,))))
    for metric in ("mfd", "ifd"):
        lo, hi = getattr(spec, f"{metric}_min"), getattr(spec, f"{metric}_max")
        if lo is None and hi is None:
            continue
        rules.append(Rule(f"{metric}: no value", CurateRule(f"{metric}_present")))
        if lo is not None:
            rules.append(Rule(f"{metric}_min {_fmt(lo)}", CurateRule(f"{metric}_min", (lo,))))
        if hi is not None:
            rules.append(Rule(f"{metric}_max {_fmt(hi)}", CurateRule(f"{metric}_max", (hi,))))
    return rules


def _judge_list(spec: Spec) -> list[tuple[str, str]]:
    """Judges whose scores the query computes: the rules', then the one ordering dedup."""
    judges = [(j.judge, j.rubric) for j in spec.judges]
    if spec.dedup and spec.dedup.judge and (spec.dedup.judge, spec.dedup.rubric) not in judges:
        judges.append((spec.dedup.judge, spec.dedup.rubric))
    return judges


def _prefer_judge(spec: Spec) -> int:
    if not (spec.dedup and spec.dedup.judge):
        return 0
    return _judge_list(spec).index((spec.dedup.judge, spec.dedup.rubric)) + 1


def _dataset_ids(store, spec: Spec) -> dict[str, str]:
    """Name → id for the datasets the spec names; an unknown name is an error (a typo would
    otherwise select nothing, silently)."""
    known = store.curate_dataset_ids()
    named = set(spec.datasets) | {d for r in spec.weights.rules + spec.system_tags.rules for d in r.when.datasets}
    unknown = sorted(named - set(known))
    if unknown:
        raise SpecError(f"datasets: no dataset named {unknown[0]!r} in this workspace "
                        f"(known: {', '.join(sorted(known)) or 'none'})")
    return known


def build_query(store, spec: Spec) -> CurateQuery:
    ids = _dataset_ids(store, spec)
    pair_filter = spec.pairs or PairFilter()
    return CurateQuery(pool=spec.kind, roles=spec.roles, dataset_ids=tuple(ids[d] for d in spec.datasets),
                       pair_methods=pair_filter.methods, pair_rounds=pair_filter.rounds,
                       judges=tuple(_judge_list(spec)), difficulty_round=spec.difficulty.round,
                       mfd_source=spec.difficulty.mfd_source, ifd_source=spec.difficulty.ifd_source,
                       rules=tuple(r.query for r in spec_rules(spec)))


def _store(ws_or_store):
    return getattr(ws_or_store, "store", ws_or_store)


# --------------------------------------------------------------------------------------------
# Live counts
# --------------------------------------------------------------------------------------------


@dataclass
class Counts:
    """Samples per task before and after the spec's rules, and what each rule dropped.

    `planned` is the rebalancing plan over the `after` counts: exact when the spec does not dedup
    (near-duplicate removal is not in live counts: it needs the embeddings; see `not_counted`)."""

    per_task: pd.DataFrame  # task, before, after[, planned]
    rules: pd.DataFrame     # rule, dropped (by this rule first)
    before: int
    after: int
    planned: int | None = None
    missing_tasks: tuple[str, ...] = ()
    not_counted: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"before": self.before, "after": self.after, "planned": self.planned,
                "per_task": self.per_task.to_dict("records"), "rules": self.rules.to_dict("records"),
                "missing_tasks": list(self.missing_tasks), "not_counted": list(self.not_counted)}


def counts(ws_or_store, spec) -> Counts:
    """Live counts: one aggregate DuckDB query over the spec's values, nothing materialised. The
    values (joins over the big tables) are kept per value source while the catalog is unchanged,
    so moving a threshold reruns only the aggregate (core.store.snapshots)."""
    spec = load_spec(spec)
    store = _store(ws_or_store)
    rows = store.curate_counts(build_query(store, spec))
    return _counts_from(rows, spec, spec_rules(spec))


def _counts_from(rows: list[tuple[str, int | None, int]], spec: Spec, rules: list[Rule]) -> Counts:
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    dropped = [0] * len(rules)
    for task, rule, n in rows:
        before[task] = before.get(task, 0) + n
        if rule is None:
            after[task] = after.get(task, 0) + n
        else:
            dropped[rule] += n
    tasks = sorted(before)
    per_task = pd.DataFrame({"task": tasks, "before": [before[t] for t in tasks],
                             "after": [after.get(t, 0) for t in tasks]}, columns=["task", "before", "after"])
    rule_drops = pd.DataFrame({"rule": [r.name for r in rules], "dropped": dropped}, columns=["rule", "dropped"])
    result = Counts(per_task=per_task, rules=rule_drops,
                    before=sum(before.values()), after=sum(after.values()),
                    not_counted=("dedup",) if spec.dedup else ())
    if spec.rebalance:
        plan = plan_rebalance({t: after.get(t, 0) for t in tasks}, spec.rebalance.target, spec.rebalance.size)
        per_task["planned"] = [plan.counts.get(t, 0) for t in tasks]
        result.planned, result.missing_tasks = sum(plan.counts.values()), plan.missing
    return result


# --------------------------------------------------------------------------------------------
# Near-duplicate removal
# --------------------------------------------------------------------------------------------


def near_duplicates(vectors: np.ndarray, threshold: float, block: int = DEDUP_BLOCK,
                    kept_chunk: int = DEDUP_KEPT_CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy near-duplicate removal over unit vectors in the given order: a vector is dropped when
    its cosine with an earlier *kept* one is ≥ threshold. Returns (keep mask, index of the kept
    vector it duplicates or -1, that cosine).

    Exact, blockwise: each block of `block` vectors is compared with every kept vector by matrix
    products (in chunks of `kept_chunk`, to bound memory), then with itself; inside a block only
    the few vectors that have an earlier in-block neighbour ≥ threshold are walked in order. Cost
    O(n · kept · d) multiply-adds, done by BLAS; memory O(block · kept_chunk)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    keep = np.zeros(n, dtype=bool)
    dup_of = np.full(n, -1, dtype=np.int64)
    cosine = np.zeros(n, dtype=np.float32)
    kept_rows = np.empty(n, dtype=np.int64)
    kept = np.empty_like(x)
    n_kept = 0
    for start in range(0, n, block):
        xb = x[start:start + block]
        best = np.full(len(xb), -np.inf, dtype=np.float32)
        best_at = np.full(len(xb), -1, dtype=np.int64)
        for c in range(0, n_kept, kept_chunk):
            sims = xb @ kept[c:min(c + kept_chunk, n_kept)].T
            at = sims.argmax(axis=1)
            val = sims[np.arange(len(xb)), at]
            better = val > best
            best[better], best_at[better] = val[better], kept_rows[c + at[better]]
        alive = best < threshold
        hit = ~alive
        dup_of[start:start + len(xb)][hit], cosine[start:start + len(xb)][hit] = best_at[hit], best[hit]
        _resolve_block(xb, alive, threshold, start, dup_of, cosine)
        rows = np.nonzero(alive)[0]
        kept[n_kept:n_kept + len(rows)] = xb[rows]
        kept_rows[n_kept:n_kept + len(rows)] = start + rows
        n_kept += len(rows)
        keep[start + rows] = True
    return keep, dup_of, cosine


def _resolve_block(xb: np.ndarray, alive: np.ndarray, threshold: float, start: int,
                   dup_of: np.ndarray, cosine: np.ndarray) -> None:
    """Greedy inside one block, in order: drop a vector that an earlier alive one in the block is
    too close to. Only columns with some earlier neighbour ≥ threshold need a look."""
    sims = xb @ xb.T
    close = np.triu(sims >= threshold, k=1)  # close[i, j]: i before j and too similar
    for j in np.nonzero(close.any(axis=0))[0]:
        if not alive[j]:
            continue
        earlier = np.nonzero(close[:j, j] & alive[:j])[0]
        if earlier.size:
            i = earlier[sims[earlier, j].argmax()]
            alive[j] = False
            dup_of[start + j], cosine[start + j] = start + i, sims[i, j]


def _instruction_texts(store, instruction_ids: list[str]) -> list[str]:
    """What is embedded for an instruction: its text, then its input (two prompts that differ only
    in their input are not duplicates)."""
    table = store.curate_instruction_texts(instruction_ids).to_pandas()
    by_id = {i: (t if not inp else f"{t}\n\n{inp}") for i, t, inp in zip(table["id"], table["text"], table["input"],
                                                                           strict=True)}
    return [by_id[i] for i in instruction_ids]


# --------------------------------------------------------------------------------------------
# Rebalancing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RebalancePlan:
    shares: dict[str, Fraction]   # the target share of each task that has samples (sum 1)
    counts: dict[str, int]        # exact samples per task after rebalancing
    missing: tuple[str, ...]      # tasks with a share but no samples: reported, not invented
    size: int


def target_shares(target: str | tuple[tuple[str, Fraction], ...], present: list[str]) -> dict[str, Fraction]:
    """Shares per task before renormalisation. TAPIR: math and reasoning 1/6 each, code_generation
    and code_debugging 1/12 each, the remaining half spread evenly over the other present tasks."""
    if target != "tapir":
        return dict(target)
    shares = dict(TAPIR_SHARES)
    others = [t for t in present if t not in shares]
    for t in others:
        shares[t] = (1 - sum(TAPIR_SHARES.values())) / len(others)
    return shares


def plan_rebalance(available: Mapping[str, int], target, size: int | None) -> RebalancePlan:
    """Exact per-task counts by the largest-remainder rule.

    Shares are renormalised over the tasks that have samples (a task with a share and no samples
    is reported in `missing`; a present task without a share gets 0). With N = size (default: all
    available), task t gets ⌊N·s_t⌋, and the N − Σ⌊N·s_t⌋ units left go one each to the tasks with
    the largest remainders N·s_t − ⌊N·s_t⌋, ties broken by task name. Shares are exact fractions,
    so 120 × 1/6 is 20, not 19.999…"""
    present = sorted(t for t, n in available.items() if n > 0)
    raw = target_shares(target, present)
    missing = tuple(sorted(t for t, s in raw.items() if s > 0 and available.get(t, 0) == 0))
    weighted = {t: raw.get(t, Fraction(0)) for t in present}
    total = sum(weighted.values())
    n = sum(available.values()) if size is None else size
    if total == 0 or n == 0:
        return RebalancePlan({}, {t: 0 for t in present}, missing, 0)
    shares = {t: s / total for t, s in weighted.items()}
    quotas = {t: n * s for t, s in shares.items()}
    result = {t: int(q) for t, q in quotas.items()}  # floor: quotas are non-negative fractions
    left = n - sum(result.values())
    by_remainder = sorted(present, key=lambda t: (-(quotas[t] - result[t]), t))
    for t in by_remainder[:left]:
        result[t] += 1
    return RebalancePlan(shares, result, missing, n)


def _task_rng(seed: int, task: str) -> np.random.Generator:
    # One stream per task: a task's sample does not change when another task's count does.
    return np.random.default_rng([seed, int(content_id("rebalance", task)[:12], 16)])


def resample(n_available: int, n_wanted: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(row, copy) pairs: a seeded choice without replacement when n_wanted ≤ n_available; else
    every row ⌊n_wanted / n_available⌋ times and a seeded choice of the remainder once more."""
    if n_wanted <= n_available:
        rows = np.sort(rng.choice(n_available, size=n_wanted, replace=False))
        return [(int(r), 0) for r in rows]
    whole, extra = divmod(n_wanted, n_available)
    out = [(r, c) for c in range(whole) for r in range(n_available)]
    out += [(int(r), whole) for r in np.sort(rng.choice(n_available, size=extra, replace=False))]
    return out


# --------------------------------------------------------------------------------------------
# Weights and system tags
# --------------------------------------------------------------------------------------------


def _condition_mask(frame: pd.DataFrame, cond: Condition) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for column, allowed in (("task", cond.tasks), ("role", cond.roles), ("dataset", cond.datasets)):
        if allowed:
            mask &= frame[column].isin(allowed).to_numpy()
    for metric in ("mfd", "ifd"):
        values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)
        lo, hi = getattr(cond, f"{metric}_min"), getattr(cond, f"{metric}_max")
        with np.errstate(invalid="ignore"):  # NaN (no value) compares False: the rule does not match
            if lo is not None:
                mask &= values > lo
            if hi is not None:
                mask &= values <= hi
    return mask


def first_match(frame: pd.DataFrame, conditions: list[Condition]) -> np.ndarray:
    """Per row, the index of the first condition it meets (-1: none)."""
    matched = np.full(len(frame), -1, dtype=np.int64)
    for k, cond in enumerate(conditions):
        matched[(matched == -1) & _condition_mask(frame, cond)] = k
    return matched


def assign_weights_and_tags(frame: pd.DataFrame, spec: Spec) -> tuple[np.ndarray, list[str | None]]:
    """First-match weight and system tag per row (frame: task, role, dataset, mfd, ifd)."""
    w_rule = first_match(frame, [r.when for r in spec.weights.rules])
    w_values = np.array([r.weight for r in spec.weights.rules] + [spec.weights.default], dtype=float)
    t_rule = first_match(frame, [r.when for r in spec.system_tags.rules])
    t_values = [r.tag for r in spec.system_tags.rules] + [spec.system_tags.default]
    return w_values[w_rule], [t_values[k] for k in t_rule]  # -1 picks the default, listed last


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    name: str
    content_hash: str
    spec: Spec
    n_members: int
    n_instructions: int
    parquet_path: Path
    stats: dict
    created_at: Any = None
    created: bool = False  # False: an identical snapshot of that name existed already
    members: pd.DataFrame | None = None  # a page, when asked for

    def to_dict(self) -> dict:
        return {"name": self.name, "content_hash": self.content_hash, "spec": self.spec.to_dict(),
                "n_members": self.n_members, "n_instructions": self.n_instructions,
                "parquet_path": str(self.parquet_path), "stats": self.stats,
                "created_at": str(self.created_at) if self.created_at is not None else None,
                "created": self.created}


def snapshots_dir(ws) -> Path:
    path = Path(ws.root) / "runs" / "snapshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not SNAPSHOT_NAME.match(name):
        raise ValueError(f"snapshot name {name!r} is invalid: use 1–100 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


@dataclass
class _Plan:
    """A materialised spec before it is stored."""

    members: pa.Table
    drops: pa.Table
    stats: dict


def create_snapshot(ws, spec, name: str, embed: Callable[[list[str]], np.ndarray] | None = None) -> Snapshot:
    """Materialise a spec as the named snapshot. An existing name is refused unless the content
    (spec and ordered members) is identical, which returns the existing snapshot unchanged.
    `embed` (texts → unit vectors N × d) defaults to the workspace's MiniLM embedder."""
    name = _check_name(name)
    spec = load_spec(spec)
    plan = _materialise(ws.store, spec, embed or ws.embed)
    digest = _content_hash(spec, plan.members)
    existing = ws.store.snapshot_row(name)
    if existing is not None:
        if existing["content_hash"] != digest:
            raise SnapshotExists(f"snapshot {name!r} exists with other content (hash {existing['content_hash'][:12]}, "
                                 f"now {digest[:12]}); snapshots are immutable: choose another name")
        return _snapshot_from_row(ws, existing)
    folder = snapshots_dir(ws)
    path, drops_path = folder / f"{name}.parquet", folder / f"{name}.drops.parquet"
    pair_filter = spec.pairs or PairFilter()
    texts = ws.store.snapshot_member_texts(plan.members, pairs=spec.kind == "preference",
                                           pair_methods=pair_filter.methods, pair_rounds=pair_filter.rounds)
    tmp, drops_tmp = _write_tmp(texts, path), _write_tmp(plan.drops, drops_path)
    n_instructions = len(set(plan.members.column("instruction_id").to_pylist()))
    try:
        def publish() -> None:  # last step of the transaction: a failed rename leaves no row
            os.replace(drops_tmp, drops_path)
            os.replace(tmp, path)

        ws.store.insert_snapshot([name, digest, spec.to_json(), plan.members.num_rows, n_instructions,
                                  path.relative_to(ws.root).as_posix(),
                                  json.dumps(plan.stats)], plan.members, before_commit=publish)
    finally:
        tmp.unlink(missing_ok=True)
        drops_tmp.unlink(missing_ok=True)
    return replace(_snapshot_from_row(ws, ws.store.snapshot_row(name)), created=True)


def _resolve(ws, stored: str) -> Path:
    """Snapshot files are stored relative to the workspace, so a moved workspace still finds them."""
    return Path(ws.root) / stored


def _write_tmp(table: pa.Table, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    return tmp


def _content_hash(spec: Spec, members: pa.Table) -> str:
    """sha256 over the canonical spec and the ordered members (ids, weight, tag, copy)."""
    h = hashlib.sha256(spec.to_json().encode())
    for column in ("instruction_id", "response_id", "system_tag"):
        h.update(b"\x1e" + "\x1f".join("" if v is None else v for v in members.column(column).to_pylist()).encode())
    for column in ("weight", "copy"):
        h.update(b"\x1e" + members.column(column).to_numpy().tobytes())
    return h.hexdigest()


def _materialise(store, spec: Spec, embed) -> _Plan:
    """Spec → members, drops and stats: the rules in SQL, then dedup, rebalancing, weights, tags.
    Every step that can drop a sample is numbered in stats["rules"], as the drops' `rule` column."""
    kept, drops, stats = _apply_rules(store, spec)
    per_task = pd.DataFrame(stats.pop("per_task"))
    rules = stats["rules"]
    if spec.dedup:
        kept, dropped, stats["dedup"] = _remove_near_duplicates(store, kept, spec.dedup, embed, rule=len(rules))
        rules.append({"rule": f"dedup threshold {_fmt(spec.dedup.threshold)}", "dropped": dropped.num_rows,
                      "numeric": True})
        drops.append(dropped)
    per_task["after_dedup"] = _per_task(per_task, kept)
    rows, copies = np.arange(len(kept)), np.zeros(len(kept), dtype=np.int64)
    if spec.rebalance:
        rows, copies, dropped, stats["rebalance"] = _rebalance_rows(kept, spec.rebalance, rule=len(rules))
        rules.append({"rule": f"rebalance {_target_label(spec.rebalance.target)}", "dropped": dropped.num_rows,
                      "numeric": False})
        drops.append(dropped)
    members = _ordered(kept, rows, copies)
    members["dataset"] = members["dataset_id"].map({v: k for k, v in store.curate_dataset_ids().items()})
    weights, tags = assign_weights_and_tags(members, spec)
    per_task["final"] = _per_task(per_task, members)
    stats |= {"per_task": per_task.to_dict("records"), "n_members": len(members)}
    return _Plan(members=_members_table(members, weights, tags), drops=pa.concat_tables(drops), stats=stats)


def _apply_rules(store, spec: Spec) -> tuple[pd.DataFrame, list[pa.Table], dict]:
    """The samples that pass every rule (stable order), the dropped ones with rule and value, and
    the counts per task and rule, all from one read of the catalog."""
    rules = spec_rules(spec)
    fates = store.curate_fates(build_query(store, spec), _prefer_judge(spec)).to_pandas()
    fates["task"] = fates["task"].fillna(NO_TASK)
    groups = fates.groupby(["task", "rule"], dropna=False).size().items()
    counted = _counts_from([(t, None if pd.isna(r) else int(r), int(n)) for (t, r), n in groups], spec, rules)
    stats = {"kind": spec.kind, "before": counted.before, "after_filters": counted.after,
             "rules": [{"rule": r.name, "dropped": int(n), "numeric": r.numeric}
                       for r, n in zip(rules, counted.rules["dropped"], strict=True)],
             "per_task": counted.per_task[["task", "before", "after"]]
             .rename(columns={"after": "after_filters"}).to_dict("records")}
    dropped = fates[fates["rule"].notna()]
    drops = _drops_table(dropped, dropped["rule"].astype(int).to_numpy(), _strings(dropped["value"]))
    return fates[fates["rule"].isna()].reset_index(drop=True), [drops], stats


def _per_task(per_task: pd.DataFrame, frame: pd.DataFrame) -> pd.Series:
    return per_task["task"].map(frame["task"].value_counts()).fillna(0).astype(int)


def _ordered(kept: pd.DataFrame, rows: np.ndarray, copies: np.ndarray) -> pd.DataFrame:
    """Training order: every sample once in the stable order, then the repeats (copy 1, 2, …)."""
    members = kept.iloc[rows].reset_index(drop=True)
    members["copy"], members["order"] = copies, rows
    return members.sort_values(["copy", "order"], kind="stable").reset_index(drop=True)


def _members_table(members: pd.DataFrame, weights: np.ndarray, tags: list[str | None]) -> pa.Table:
    return pa.table({
        "position": pa.array(np.arange(len(members)), pa.int32()),
        "instruction_id": _strings(members["instruction_id"]),
        "response_id": _strings(members["response_id"]),
        "task": _strings(members["task"].where(members["task"] != NO_TASK)),
        "weight": pa.array(weights, pa.float64()),
        "system_tag": pa.array(tags, pa.string()),
        "copy": pa.array(members["copy"].to_numpy(), pa.int32()),
    })


def _strings(series: pd.Series) -> pa.Array:
    """A string column with SQL NULL for None/NaN (pandas writes a NULL string as either)."""
    return pa.array(series, pa.string(), from_pandas=True)


_DROP_SCHEMA = pa.schema([("instruction_id", pa.string()), ("response_id", pa.string()), ("task", pa.string()),
                          ("rule", pa.int32()), ("value", pa.string()), ("duplicate_of", pa.string())])


def _drops_table(frame: pd.DataFrame, rule, value, duplicate_of=None) -> pa.Table:
    n = len(frame)
    return pa.table({
        "instruction_id": _strings(frame["instruction_id"]),
        "response_id": _strings(frame["response_id"]),
        "task": _strings(frame["task"]),
        "rule": pa.array(np.broadcast_to(np.asarray(rule, dtype=np.int32), (n,)), pa.int32()),
        "value": _text_column(value, n),
        "duplicate_of": _text_column(duplicate_of, n),
    }, schema=_DROP_SCHEMA)


def _text_column(value, n: int) -> pa.Array:
    """A constant (str or None), a list, or an Arrow array, as n strings."""
    if isinstance(value, pa.Array):
        return value
    if value is None or isinstance(value, str):
        return pa.array([value] * n, pa.string())
    return pa.array(list(value), pa.string())


def _remove_near_duplicates(store, kept: pd.DataFrame, dedup: Dedup, embed,
                            rule: int) -> tuple[pd.DataFrame, pa.Table, dict]:
    """Drop the samples of near-duplicate instructions (see the module docstring)."""
    started = time.perf_counter()
    firsts = kept.groupby("instruction_id", sort=False).agg(seq=("i_seq", "min"), score=("prefer_score", "max"))
    if dedup.judge:  # the best-scored first; no verdict last; then the stable order
        firsts = firsts.sort_values(["score", "seq"], ascending=[False, True], na_position="last", kind="stable")
    else:
        firsts = firsts.sort_values("seq", kind="stable")
    ids = firsts.index.tolist()
    vectors = np.asarray(embed(_instruction_texts(store, ids)), dtype=np.float32) if ids else np.zeros((0, 1))
    keep, dup_of, cosine = near_duplicates(vectors, dedup.threshold)
    dropped_ids = {ids[i]: (ids[dup_of[i]], float(cosine[i])) for i in np.nonzero(~keep)[0]}
    out = kept["instruction_id"].isin(dropped_ids).to_numpy()
    gone = kept[out]
    twins = [dropped_ids[i] for i in gone["instruction_id"]]
    drops = _drops_table(gone, rule, [f"{c:.4f}" for _, c in twins], [t for t, _ in twins])
    info = {"threshold": dedup.threshold, "instructions": len(ids), "dropped_instructions": len(dropped_ids),
            "dropped_samples": int(out.sum()), "method": "exact greedy, blockwise matrix products",
            "seconds": round(time.perf_counter() - started, 3)}
    return kept[~out].reset_index(drop=True), drops, info


def _target_label(target) -> str:
    return target if isinstance(target, str) else "{" + ", ".join(f"{t}: {s}" for t, s in target) + "}"


def _rebalance_rows(kept: pd.DataFrame, rebalance: Rebalance, rule: int):
    """Rows (into kept) and copy numbers after rebalancing, the down-sampled drops, and the plan."""
    groups = {t: np.asarray(ix) for t, ix in kept.groupby("task", sort=True).indices.items()}
    plan = plan_rebalance({t: len(ix) for t, ix in groups.items()}, rebalance.target, rebalance.size)
    rows, copies, dropped = [], [], []
    for task, ix in groups.items():
        chosen = resample(len(ix), plan.counts.get(task, 0), _task_rng(rebalance.seed, task))
        rows += [int(ix[r]) for r, _ in chosen]
        copies += [c for _, c in chosen]
        picked = {r for r, _ in chosen}
        dropped += [int(ix[r]) for r in range(len(ix)) if r not in picked]
    gone = kept.iloc[sorted(dropped)]
    values = [f"{t}: {plan.counts.get(t, 0)} of {len(groups[t])} kept" for t in gone["task"]]
    info = {"target": _target_label(rebalance.target), "size": plan.size, "seed": rebalance.seed,
            "shares": {t: str(s) for t, s in plan.shares.items()}, "counts": plan.counts,
            "available": {t: len(ix) for t, ix in groups.items()}, "missing_tasks": list(plan.missing),
            "copies_added": int(sum(1 for c in copies if c > 0))}
    return np.asarray(rows, dtype=np.int64), np.asarray(copies, dtype=np.int64), _drops_table(gone, rule, values), info


def _snapshot_from_row(ws, row: dict) -> Snapshot:
    return Snapshot(name=row["name"], content_hash=row["content_hash"], spec=load_spec(json.loads(row["spec"])),
                    n_members=int(row["n_members"]), n_instructions=int(row["n_instructions"]),
                    parquet_path=_resolve(ws, row["parquet_path"]), stats=json.loads(row["stats"] or "{}"),
                    created_at=row["created_at"])


def snapshots(ws) -> list[dict]:
    """Every snapshot, newest first: name, content_hash, kind, n_members, n_instructions, path, created_at."""
    return ws.store.snapshot_rows()


def snapshot(ws, name: str, page: int = 0, page_size: int = 50) -> Snapshot:
    """One snapshot with its spec, stats and a page of its members."""
    row = ws.store.snapshot_row(name)
    if row is None:
        raise ValueError(f"no snapshot named {name!r}")
    if not 1 <= page_size <= 500:
        raise ValueError(f"page_size must be between 1 and 500, not {page_size}")
    snap = _snapshot_from_row(ws, row)
    snap.members = ws.store.snapshot_members_page(name, page_size, max(0, page) * page_size)
    return snap


def diff(ws, a: str, b: str, limit: int = 50) -> dict:
    """Members only in a, only in b, and in both with a changed weight or number of copies
    (a sample is an (instruction, response) pair); counts per task and up to `limit` of each."""
    for name in (a, b):
        if ws.store.snapshot_row(name) is None:
            raise ValueError(f"no snapshot named {name!r}")
    per_task = ws.store.snapshot_diff_counts(a, b)
    out = {"a": a, "b": b, "per_task": per_task}
    for change in ("only_a", "only_b", "changed"):
        out[change] = ws.store.snapshot_diff_samples(a, b, change, limit)
        out[f"n_{change}"] = int(per_task[change].sum()) if len(per_task) else 0
    return out


# --------------------------------------------------------------------------------------------
# Why in / why out
# --------------------------------------------------------------------------------------------


def explain(ws, snapshot_or_spec, sample_id: str) -> dict:
    """Why a sample is in or out. `snapshot_or_spec`: a snapshot name (answered from what was
    stored when it was made) or a spec (answered from the catalog now; dedup and rebalancing are
    only decided when a snapshot is made). `sample_id`: a response id, or an instruction id (for
    an sft spec that explains each of its responses of the spec's roles, under "samples")."""
    resolved = ws.store.curate_resolve_sample(sample_id)
    if resolved is None:
        raise ValueError(f"no instruction or response with id {sample_id!r}")
    instruction_id, response_id = resolved
    if isinstance(snapshot_or_spec, str) and SNAPSHOT_NAME.match(snapshot_or_spec):
        row = ws.store.snapshot_row(snapshot_or_spec)
        if row is None:
            raise ValueError(f"no snapshot named {snapshot_or_spec!r}")
        return _explain_snapshot(ws, _snapshot_from_row(ws, row), instruction_id, response_id)
    return _explain_live(ws, load_spec(snapshot_or_spec), instruction_id, response_id)


def _sample_keys(spec: Spec, instruction_id: str, response_id: str | None) -> tuple[str, str | None]:
    # A prompt-only sample is the instruction; a response id names its instruction.
    return (instruction_id, None) if spec.kind != "sft" else (instruction_id, response_id)


def _outside_pool(ws, spec: Spec, instruction_id: str, response_id: str | None) -> dict | None:
    """Why a sample is not in the spec's pool at all (dataset, role, no pair), or None."""
    facts = ws.store.curate_sample_facts(instruction_id, response_id)
    if spec.datasets and facts["dataset"] not in spec.datasets:
        return {"rule": f"datasets {_fmt(spec.datasets)}", "value": facts["dataset"]}
    if spec.kind == "sft" and response_id is not None and facts["role"] not in spec.roles:
        return {"rule": f"roles {_fmt(spec.roles)}", "value": facts["role"]}
    if spec.kind == "preference" and not facts["has_pair"]:
        return {"rule": "kind preference: has a preference pair", "value": False}
    return None


def _with_id(out: dict, instruction_id: str, response_id: str | None) -> dict:
    return {"instruction_id": instruction_id, "response_id": response_id} | out


def _group(samples: list[dict], instruction_id: str) -> dict:
    if len(samples) == 1:
        return samples[0]
    return {"instruction_id": instruction_id, "in": any(s["in"] for s in samples), "samples": samples}


def _value(rule_numeric: bool, value: str | None):
    if value is None or not rule_numeric:
        return value
    number = float(value)
    return int(number) if number.is_integer() else number


def _explain_live(ws, spec: Spec, instruction_id: str, response_id: str | None) -> dict:
    instruction_id, response_id = _sample_keys(spec, instruction_id, response_id)
    outside = _outside_pool(ws, spec, instruction_id, response_id)
    if outside is not None:
        return _with_id({"in": False, "source": "live"} | outside, instruction_id, response_id)
    rules = spec_rules(spec)
    fates = ws.store.curate_fates(build_query(ws.store, spec), instruction_id=instruction_id).to_pylist()
    rows = [r for r in fates if response_id is None or r["response_id"] == response_id]
    if not rows:  # an instruction with no response of the spec's roles
        return _with_id({"in": False, "source": "live", "rule": f"roles {_fmt(spec.roles)}", "value": None},
                        instruction_id, response_id)
    frame = pd.DataFrame(rows)
    frame["task"] = frame["task"].fillna(NO_TASK)
    frame["dataset"] = frame["dataset_id"].map({v: k for k, v in ws.store.curate_dataset_ids().items()})
    weights, tags = assign_weights_and_tags(frame, spec)
    samples = []
    for k, row in enumerate(rows):
        if row["rule"] is None:
            out = {"in": True, "weight": float(weights[k]), "system_tag": tags[k],
                   "note": "passes every rule; near-duplicate removal and rebalancing are decided when a "
                           "snapshot is made" if (spec.dedup or spec.rebalance) else "passes every rule"}
        else:
            rule = rules[int(row["rule"])]
            out = {"in": False, "rule": rule.name, "value": _value(rule.numeric, row["value"])}
        samples.append(_with_id({"source": "live"} | out, row["instruction_id"], row["response_id"]))
    return _group(samples, instruction_id)


def _explain_snapshot(ws, snap: Snapshot, instruction_id: str, response_id: str | None) -> dict:
    spec = snap.spec
    instruction_id, response_id = _sample_keys(spec, instruction_id, response_id)
    source = {"source": f"snapshot {snap.name}"}
    outside = _outside_pool(ws, spec, instruction_id, response_id)
    if outside is not None:
        return _with_id({"in": False} | source | outside, instruction_id, response_id)
    members = pd.DataFrame(ws.store.snapshot_member_rows(snap.name, instruction_id, response_id))
    drops = _drops_for(snap, instruction_id, response_id)
    rules = snap.stats.get("rules", [])
    samples = []
    for rid, rows in members.groupby("response_id", dropna=False, sort=False) if len(members) else []:
        first = rows.iloc[0]
        samples.append(_with_id(source | {
            "in": True, "weight": float(first["weight"]), "system_tag": first["system_tag"],
            "copies": len(rows), "positions": [int(p) for p in rows["position"]]},
            instruction_id, None if pd.isna(rid) else rid))
    for d in drops:
        rule = rules[d["rule"]]
        out = {"in": False, "rule": rule["rule"], "value": _value(rule["numeric"], d["value"])}
        if d["duplicate_of"]:
            out["duplicate_of"] = d["duplicate_of"]
        samples.append(_with_id(source | out, d["instruction_id"], d["response_id"]))
    if not samples:
        return _with_id(source | {"in": False, "rule": "not a sample of the spec when the snapshot was made",
                                  "value": None}, instruction_id, response_id)
    return _group(samples, instruction_id)


def _drops_for(snap: Snapshot, instruction_id: str, response_id: str | None) -> list[dict]:
    path = snap.parquet_path.with_name(f"{snap.name}.drops.parquet")
    if not path.exists():
        return []
    wanted = pc.field("instruction_id") == instruction_id
    if response_id is not None:
        wanted = wanted & (pc.field("response_id") == response_id)
    return pq.read_table(path, filters=wanted).to_pylist()


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

SNAPSHOT_FORMATS = ("alpaca", "messages", "preference", "prompts")


def snapshot_records(ws, name: str, fmt: str) -> list[dict]:
    """A snapshot's training records, read from its Parquet file (the texts as they were when it
    was made), built with core.export's record builders; SFT and preference records carry the
    member's weight, and the system prompt is its tag (else the instruction's own)."""
    if fmt not in SNAPSHOT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: choose one of {', '.join(SNAPSHOT_FORMATS)}")
    row = ws.store.snapshot_row(name)
    if row is None:
        raise ExportError(f"no snapshot named {name!r}")
    kind = json.loads(row["spec"])["kind"]
    rows = pq.read_table(_resolve(ws, row["parquet_path"])).to_pylist()
    if fmt == "prompts":
        seen: set[tuple[str, int]] = set()
        out = []
        for r in rows:  # one prompt per instruction and copy (an sft snapshot may hold several answers)
            if (r["instruction_id"], r["copy"]) not in seen:
                seen.add((r["instruction_id"], r["copy"]))
                out.append(to_prompt(r))
        return out
    if fmt == "preference":
        if kind != "preference":
            raise ExportError(f"snapshot {name!r} holds {kind} samples; a preference export needs a snapshot "
                              "made with kind: preference")
        conversational = any(r.get("system") or r.get("history") for r in rows)
        return [to_preference(r, conversational) | {"weight": r["weight"]} for r in rows]
    if kind != "sft":
        raise ExportError(f"snapshot {name!r} holds {kind} samples without a response; export it as prompts"
                          + (" or preference" if kind == "preference" else ""))
    convert = to_alpaca if fmt == "alpaca" else to_messages
    return [convert(r | {"output": r["response"]}) | {"weight": r["weight"]} for r in rows]


def export_snapshot(ws, name: str, fmt: str, file_type: str = "jsonl", out: str | Path | None = None) -> ExportResult:
    """Write a snapshot as a training file under workspace/exports/ (default
    exports/<name>.<fmt>.<type>); written atomically."""
    if file_type not in FILE_TYPES:
        raise ExportError(f"unknown file type {file_type!r}: choose jsonl or parquet")
    records = snapshot_records(ws, name, fmt)
    if not records:
        raise ExportError(f"snapshot {name!r} holds no records for this format; nothing was written")
    path = Path(out) if out is not None else ws.exports_dir / f"{name}.{fmt}.{file_type}"
    write_records(records, path, file_type)
    return ExportResult(path=path, format=fmt, n_records=len(records))


__all__ = [
    "Counts", "Condition", "Dedup", "Difficulty", "JudgeRule", "Rebalance", "RebalancePlan", "Snapshot",
    "SnapshotExists", "Spec", "SpecError", "SystemTags", "TagRule", "WeightRule", "Weights",
    "counts", "create_snapshot", "diff", "explain", "export_snapshot", "load_spec", "near_duplicates",
    "plan_rebalance", "resample", "snapshot", "snapshot_records", "snapshots", "spec_rules",
]
