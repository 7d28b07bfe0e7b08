"""Hypothesis fuzz (issue 15) of everything that reads what a user or a model wrote: the import
readers, the judge verdict parsers, the recipe loader and the snapshot-spec loader. Each may
refuse its input, but only with its own error type and a message; no other exception escapes,
and what it accepts is well formed. Derandomised, so CI runs the same 12,000 cases each time."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import parsers
from core.curate import SpecError, load_spec
from core.ingest import ImportRejected, check_file
from core.recipes import RecipeError, load_recipe

pytestmark = pytest.mark.slow  # about a minute for all of them

def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))

# Text with everything that breaks naive code: control characters, lone surrogates, BOMs, RTL marks.
NASTY = st.text(st.characters(codec=None, exclude_categories=()), max_size=40) | st.sampled_from(
    ["", " ", "\ufeff", "\u202e", "\x00", "\ud800", "NaN", "Score: 11", "1e309", "'; DROP TABLE x; --", "\n\n"])
KEYS = st.sampled_from(["instruction", "input", "output", "prompt", "response", "messages", "conversations",
                        "chosen", "rejected", "role", "content", "from", "value", "task", "system", "id", "text"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | NASTY
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(KEYS | NASTY, inner, max_size=5), max_leaves=12)


def _json_line(value) -> str:
    return json.dumps(value, allow_nan=True)  # NaN and Infinity literals, \ud800 escapes: all allowed here


RECORD_LINES = st.lists(st.dictionaries(KEYS, JSON_VALUES, max_size=5).map(_json_line)
                        | JSON_VALUES.map(_json_line) | NASTY, min_size=0, max_size=6)
RAW_BYTES = st.binary(max_size=300)
SUFFIXES = st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".txt", ".md", ".html", ".rst"])


@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def _assert_well_formed(check) -> None:
    for record in check.records:
        assert isinstance(record.instruction, str) and record.instruction.strip()
    for rejected in check.rejected:
        assert isinstance(rejected.reason, str) and rejected.reason


@fuzz(3000)
@given(lines=RECORD_LINES, suffix=SUFFIXES, newline=st.sampled_from(["\n", "\r\n"]))
def test_the_readers_never_crash_on_structured_garbage(scratch, lines, suffix, newline):
    path = scratch / f"f{suffix}"
    text = newline.join(lines)
    if suffix == ".json":
        text = "[" + ",".join(lines) + "]"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        _assert_well_formed(check_file(path))
    except ImportRejected as exc:
        assert str(exc)


@fuzz(1000)
@given(data=RAW_BYTES, suffix=SUFFIXES)
def test_the_readers_never_crash_on_raw_bytes(scratch, data, suffix):
    path = scratch / f"raw{suffix}"
    path.write_bytes(data)
    try:
        _assert_well_formed(check_file(path))
    except ImportRejected as exc:
        assert str(exc)


def _score_ok(verdict, low: float, high: float) -> None:
    assert (verdict.score is None) != (verdict.error is None) or verdict.score is not None
    if verdict.score is not None:
        assert math.isfinite(verdict.score) and low <= verdict.score <= high


VERDICT_TEXT = NASTY | st.builds(lambda a, n, b: f"{a}Score: {n}{b}", NASTY, SCALARS.map(str), NASTY) | st.builds(
    lambda a, n: f"{a}\nRanking: {n}", NASTY, st.lists(st.integers(-2, 9), max_size=6).map(lambda v: " > ".join(map(str, v))))


@fuzz(4000)
@given(text=VERDICT_TEXT | st.none(), k=st.integers(1, 6))
def test_the_verdict_parsers_never_crash_and_stay_on_the_scale(text, k):
    _score_ok(parsers.parse_score(text, 1, 10), 1, 10)
    aspects = parsers.parse_aspects(text, 1, 5)
    for verdict in getattr(aspects, "aspects", {}).values() if hasattr(aspects, "aspects") else []:
        _score_ok(verdict, 1, 5)
    pair = parsers.parse_pairwise(text)
    assert pair.winner in (None, "A", "B", "tie")
    ranking = parsers.parse_ranking(text, k)
    if ranking.ranking is not None:
        assert sorted(ranking.ranking) == list(range(1, k + 1))


VALID_RECIPE = {
    "name": "fuzz", "method": "tapir", "rounds": 2,
    "models": {"teacher": "t", "judge": "j", "student": "s"},
    "data": {"pool": ["pool"], "heldout": "held", "limit": 8},
    "generate": {"max_tokens": 16, "temperature": 0.0, "seed": 0},
    "judge": {"rubric": "pointwise_10", "mode": "probability", "min_score": None},
    "tapir": {"delta": 1.0, "seeds": 4, "rebalance": "tapir", "expand": 1, "restyle": True,
              "alpha_1": 0.3, "delta_alpha": 0.2},
    "train": {"method": "full", "max_steps": 4, "batch_size": 2, "learning_rate": 1e-4},
    "evaluate": {"judge": "j", "rubric": "pairwise", "limit": 4, "max_tokens": 16},
    "shard_size": 16, "threads": 1,
}
VALID_SPEC = {"kind": "sft", "roles": ["seed"], "datasets": ["d"], "tasks": ["math"], "min_chars": 10,
              "judges": [{"judge": "j", "rubric": "pointwise_5", "min": 4}],
              "rebalance": {"target": "tapir", "size": 20, "seed": 1}, "weights": {"default": 1.0},
              "system_tags": {"default": "Answer briefly."}}


def _paths(d: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in d.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out.extend(_paths(value, prefix + (key,)))
    return out


def _mutate(base: dict, path: tuple, value, drop: bool) -> dict:
    d = json.loads(json.dumps(base))
    node = d
    for key in path[:-1]:
        node = node[key]
    if drop:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return d


def mutations(base: dict):
    return st.builds(_mutate, st.just(base), st.sampled_from(_paths(base)), JSON_VALUES, st.booleans())


@fuzz(2000)
@given(recipe=mutations(VALID_RECIPE) | st.dictionaries(KEYS | NASTY, JSON_VALUES, max_size=6), as_yaml=st.booleans())
def test_the_recipe_loader_only_ever_raises_recipe_error(recipe, as_yaml):
    try:
        source = yaml.safe_dump(recipe, allow_unicode=True) + "\n" if as_yaml else recipe
    except yaml.YAMLError:
        source = recipe
    try:
        loaded = load_recipe(source)
    except RecipeError as exc:
        assert str(exc)
    else:
        assert loaded.name and loaded.rounds >= 1 and loaded.pool


@fuzz(2000)
@given(spec=mutations(VALID_SPEC) | st.dictionaries(KEYS | NASTY, JSON_VALUES, max_size=6) | NASTY)
def test_the_spec_loader_only_ever_raises_spec_error(spec):
    try:
        loaded = load_spec(spec)
    except SpecError as exc:
        assert str(exc)
    else:
        assert loaded.kind in ("sft", "prompts", "preference")
