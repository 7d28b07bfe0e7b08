"""Recipes: a method's rounds as data (DESIGN.md §8). A recipe is YAML; `load_recipe` validates it
and every error names the key and the value, before anything is written.

    name: tapir-tiny                # the run's name: rounds are <name>/1, <name>/2, ...
    method: tapir
    rounds: 2
    models:                         # by role; names of workspace or built-in models
      teacher: smollm2-135m-instruct
      judge: smollm2-135m-instruct
      student: tiny-random          # round 1's student; round r+1's is round r's model
    register:                       # optional model specs added to the workspace when missing
      - {name: adder, backend: python, path: "core.synthetic:teacher"}
    data:
      pool: [tapir-tiny-pool]       # where seeds come from
      heldout: tapir-tiny-heldout   # the evaluation prompts (never expanded into)
      files:                        # imported when the dataset is missing (relative to the recipe)
        tapir-tiny-pool: ../data/tapir/pool.jsonl
      limit: 24                     # the pool's first N instructions each round (default: all)
    generate: {max_tokens: 64, temperature: 0.0, seed: 0}
    judge: {rubric: pointwise_10, mode: auto, min_score: null}   # min_score: a quality floor on training answers
    tapir: {delta: 1.0, seeds: 8, rebalance: tapir, expand: 1, restyle: true,
            alpha_1: 0.3, delta_alpha: 0.2, train_size: null}
    train: {method: full, max_steps: 20, batch_size: 4, learning_rate: 1.0e-4}   # core.train.TrainConfig
    evaluate: {judge: smollm2-135m-instruct, rubric: pairwise, limit: 8, max_tokens: 64, pointwise: null}
    shard_size: 16
    threads: null                   # CPU threads per training job

TAPIR's α_r (arXiv 2405.13448): the share of the round's training signal that comes from the
difficult instructions (MFD > δ, and their expansions) grows from α_1 by Δα each round, capped at 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.curate import SpecError, load_spec
from core.train.config import TrainConfig

# TAPIR's round is core.rounds.tapir_round; each other method's section parser and round function
# live in its own module (imported when a recipe names the method):
#   parse_section(section: Mapping) -> (params: dict, models: {key path: model name})
#       the recipe's `<method>:` section validated, defaults filled, JSON-safe; RecipeError naming
#       the key (e.g. "zephyr.beta") and the value. `models` are the model names the section
#       refers to, checked to exist (or be registered) before a run writes anything.
#   round_function(r: core.rounds.Round) -> core.rounds.RoundResult
METHOD_MODULES = {"zephyr": "core.methods.zephyr", "humpback": "core.methods.humpback",
                  "tuna": "core.methods.tuna", "citing": "core.methods.citing"}
METHODS = ("tapir", *METHOD_MODULES)
RUN_NAME_CHARS = "letters, digits, '.', '_' or '-'"


class RecipeError(ValueError):
    """A recipe value is wrong; the message names the key and the value."""


@dataclass(frozen=True)
class Tapir:
    delta: float = 1.0          # seeds: MFD > δ
    seeds: int = 16             # seeds per round after rebalancing
    rebalance: Any = "tapir"    # "tapir", a task → share mapping, or None (no rebalancing)
    expand: int = 1             # new instructions the teacher writes per seed
    restyle: bool = True        # per-task style rewriting of the teacher's answers
    alpha_1: float = 0.3
    delta_alpha: float = 0.2
    train_size: int | None = None   # a fixed number of training examples per round (None: all)
    include_pool: bool = True   # train on the whole pool (easy ones at weight 1 − α) or seeds + expansions only

    def alpha(self, round_number: int) -> float:
        """α_r = min(1, α_1 + (r − 1)·Δα)."""
        return min(1.0, self.alpha_1 + (round_number - 1) * self.delta_alpha)


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str
    teacher: str
    judge: str
    student: str
    pool: tuple[str, ...]
    heldout: str
    rounds: int = 2
    register: tuple[dict, ...] = ()
    files: dict[str, str] = field(default_factory=dict)   # dataset → absolute path
    limit: int | None = None
    generate: dict = field(default_factory=lambda: {"max_tokens": 256, "temperature": 0.0, "seed": 0})
    rubric: str = "pointwise_10"
    judge_mode: str = "auto"
    min_score: float | None = None
    tapir: Tapir = field(default_factory=Tapir)
    train: dict = field(default_factory=dict)     # TrainConfig fields (base_model is the round's student)
    evaluate: dict = field(default_factory=dict)  # judge, rubric, limit, max_tokens, pointwise, mode
    shard_size: int = 16
    threads: int | None = None
    source: str | None = None   # the file it was read from
    params: dict = field(default_factory=dict)          # the method's own section (not TAPIR's), validated
    method_models: dict = field(default_factory=dict)   # key path → model name, from that section

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def eval_judge(self) -> str:
        return self.evaluate.get("judge") or self.judge


def load_recipe(source: str | Path | Mapping, rounds: int | None = None) -> Recipe:
    """A validated Recipe from a YAML file, YAML text or a dict; `rounds` overrides the recipe's."""
    base = Path.cwd()
    where = None
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        text = str(source)
        path = Path(text).expanduser()
        if "\n" not in text and path.suffix in (".yaml", ".yml", ".json"):
            if not path.is_file():
                raise RecipeError(f"no recipe file {path}")
            base, where = path.resolve().parent, str(path.resolve())
            text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RecipeError(f"the recipe is not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise RecipeError(f"a recipe is a mapping of keys to values, not {type(data).__name__}")
    recipe = _parse(data, base, where)
    if rounds is not None:
        recipe = Recipe(**{**recipe.__dict__, "rounds": _int("rounds", rounds, 1)})
    return recipe


KNOWN = {"name", "method", "rounds", "models", "register", "data", "generate", "judge", "tapir", "train",
         "evaluate", "shard_size", "threads", "description", *METHOD_MODULES}


def _parse(d: Mapping, base: Path, where: str | None) -> Recipe:
    _keys("recipe", d, KNOWN)
    name = d.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "._-" for c in name) \
            or not name[0].isalnum() or len(name) > 60:
        raise RecipeError(f"name: 1–60 {RUN_NAME_CHARS}, starting with a letter or digit, not {name!r}")
    method = d.get("method", "tapir")
    if method not in METHODS:
        raise RecipeError(f"method: one of {', '.join(METHODS)}, not {method!r}")
    for other in METHOD_MODULES:
        if other != method and other in d:
            raise RecipeError(f"{other}: a section for method {other}, but this recipe's method is {method}")
    params, method_models = {}, {}
    if method in METHOD_MODULES:
        import importlib

        parse_section = importlib.import_module(METHOD_MODULES[method]).parse_section
        params, method_models = parse_section(_map(method, d.get(method) or {}))
    models = _map("models", d.get("models"))
    _keys("models", models, {"teacher", "judge", "student"})
    for role in ("teacher", "judge", "student"):
        _name(f"models.{role}", models.get(role))
    data = _map("data", d.get("data"))
    _keys("data", data, {"pool", "heldout", "files", "limit"})
    pool = data.get("pool")
    pool = [pool] if isinstance(pool, str) else pool
    if not isinstance(pool, list) or not pool:
        raise RecipeError(f"data.pool: a dataset name or a list of them, not {data.get('pool')!r}")
    for i, p in enumerate(pool):
        _name(f"data.pool[{i}]", p)
    heldout = _name("data.heldout", data.get("heldout"))
    if heldout in pool:
        raise RecipeError(f"data.heldout: {heldout!r} is also in data.pool; evaluate on prompts the round never trains on")
    files = {}
    for key, value in _map("data.files", data.get("files") or {}).items():
        path = Path(_name(f"data.files.{key}", value)).expanduser()
        files[str(key)] = str(path if path.is_absolute() else (base / path).resolve())
    register = []
    for i, spec in enumerate(d.get("register") or []):
        spec = _map(f"register[{i}]", spec)
        _name(f"register[{i}].name", spec.get("name"))
        register.append(dict(spec))
    generate = _map("generate", d.get("generate") or {})
    _keys("generate", generate, {"max_tokens", "temperature", "top_p", "seed"})
    generate = {"max_tokens": 256, "temperature": 0.0, "seed": 0} | generate
    _int("generate.max_tokens", generate["max_tokens"], 1)
    _num("generate.temperature", generate["temperature"], 0, 5)
    judge = _map("judge", d.get("judge") or {})
    _keys("judge", judge, {"rubric", "mode", "min_score"})
    from core import judge as judge_mod

    rubric = _name("judge.rubric", judge.get("rubric", "pointwise_10"))
    try:
        kind = judge_mod.get_rubric(rubric).kind
    except ValueError as exc:
        raise RecipeError(f"judge.rubric: {exc}") from exc
    if method == "tapir" and kind != "pointwise":
        raise RecipeError(f"judge.rubric: MFD needs a pointwise rubric, not {rubric!r} ({kind})")
    if method == "zephyr" and not judge_mod.get_rubric(rubric).aspects:
        # Checked here, not when the round starts: a run would otherwise write its first round's
        # teacher answers and dSFT before finding out that the judge cannot rate aspects.
        raise RecipeError(f"judge.rubric: Zephyr rates aspects (zephyr_aspects), not {rubric!r}")
    mode = judge.get("mode", "auto")
    if mode not in ("auto", "probability", "generate"):
        raise RecipeError(f"judge.mode: auto, probability or generate, not {mode!r}")
    min_score = judge.get("min_score")
    if min_score is not None:
        _num("judge.min_score", min_score)
    tapir = _tapir(_map("tapir", d.get("tapir") or {}))
    train = dict(_map("train", d.get("train") or {}))
    if "base_model" in train:
        raise RecipeError("train.base_model: leave it out; each round trains its own student")
    try:
        TrainConfig.from_dict(train | {"base_model": "placeholder"})
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"train: {exc}") from exc
    evaluate = dict(_map("evaluate", d.get("evaluate") or {}))
    _keys("evaluate", evaluate, {"judge", "rubric", "limit", "max_tokens", "pointwise", "mode"})
    if evaluate.get("judge") is not None:
        _name("evaluate.judge", evaluate["judge"])
    for key in ("limit", "max_tokens"):
        if evaluate.get(key) is not None:
            _int(f"evaluate.{key}", evaluate[key], 1)
    return Recipe(
        name=name, method=method, teacher=models["teacher"], judge=models["judge"], student=models["student"],
        pool=tuple(pool), heldout=heldout, rounds=_int("rounds", d.get("rounds", 2), 1), register=tuple(register),
        files=files, limit=_int("data.limit", data.get("limit"), 1, optional=True), generate=generate,
        rubric=rubric, judge_mode=mode, min_score=min_score, tapir=tapir, train=train, evaluate=evaluate,
        shard_size=_int("shard_size", d.get("shard_size", 16), 1),
        threads=_int("threads", d.get("threads"), 1, optional=True), source=where, params=params,
        method_models=dict(method_models))


def _tapir(t: Mapping) -> Tapir:
    _keys("tapir", t, set(Tapir.__dataclass_fields__))
    out = Tapir()
    values = {}
    for key, default in asdict(out).items():
        value = t.get(key, default)
        path = f"tapir.{key}"
        if key in ("delta", "alpha_1", "delta_alpha"):
            _num(path, value, *((0, 1) if key != "delta" else (None, None)))
        elif key in ("seeds", "expand"):
            _int(path, value, 1 if key == "seeds" else 0)
        elif key == "train_size":
            _int(path, value, 1, optional=True)
        elif key in ("restyle", "include_pool"):
            if not isinstance(value, bool):
                raise RecipeError(f"{path}: true or false, not {value!r}")
        elif key == "rebalance" and value is not None:
            try:  # the snapshot spec's own check of a target
                load_spec({"kind": "prompts", "roles": [], "rebalance": {"target": value}})
            except SpecError as exc:
                raise RecipeError(f"tapir.rebalance: {exc}") from exc
        values[key] = value
    return Tapir(**values)


def _keys(path: str, d: Mapping, known: set[str]) -> None:
    unknown = sorted(set(map(str, d)) - known)
    if unknown:
        raise RecipeError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _map(path: str, value) -> dict:
    if not isinstance(value, Mapping):
        raise RecipeError(f"{path}: expected a mapping, not {value!r}")
    return dict(value)


def _name(path: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(f"{path}: expected a name, not {value!r}")
    return value


def _int(path: str, value, minimum: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecipeError(f"{path}: expected an integer ≥ {minimum}, not {value!r}")
    return value


def _num(path: str, value, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (low is not None and value < low) or (high is not None and value > high):
        span = f" in [{low}, {high}]" if low is not None and high is not None else ""
        raise RecipeError(f"{path}: expected a number{span}, not {value!r}")
    return float(value)
