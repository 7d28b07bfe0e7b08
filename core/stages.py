"""The stage registry (DESIGN.md §4): each stage is declared once, here.

A stage is a kind of map job. Its entry says:
- `params`: a dataclass of what the user chooses, validated in `__post_init__` (errors name the
  bad value). Field metadata (see `param`) is what the CLI subcommand and the Jobs page form are
  built from, so a new stage needs no CLI or page code of its own.
- `select(ws, params, selection, limit) -> pa.Table`: the job's input rows (instructions,
  responses, pairs, documents …) from a selection, snapshotted into the job folder.
- `worker`: "module:function", `worker(ctx, rows) -> pa.Table`, run on one shard inside the job
  process (imported lazily there, so listing stages never loads torch).
- `outputs`: which catalog tables the shard's rows become. A shard may feed several tables: its
  rows then carry an `output` column naming the table each row is for.
- `config(params) -> dict`: what the worker reads from the job's config.json (besides the
  resolved model spec, the round and the params themselves).

Job creation (`Workspace.create_job`), the owner's `create_job` operation, ingest, the CLI and
the Jobs page all read this registry. Adding a stage is one module and one `register(...)`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def param(default: Any = MISSING, help: str = "", *, flag: str | None = None, short: str | None = None,
          choices: tuple | Callable[[], tuple] | None = None, kind: str | None = None, label: str | None = None,
          minimum: float | None = None, maximum: float | None = None):
    """A stage parameter: a dataclass field with what the CLI and the Jobs form need to show it.

    kind: 'model' (a model name of the workspace), 'role' (a response role), 'roles' (a list of
    roles), 'choice' (one of `choices`), 'int', 'float', 'text'. Lists repeat their CLI flag."""
    meta = {"help": help, "flag": flag, "short": short, "choices": choices, "kind": kind, "label": label,
            "minimum": minimum, "maximum": maximum}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Output:
    """Rows of a shard that become rows of a catalog table."""

    table: str
    columns: tuple[str, ...]
    keep: Callable[[pa.Table], pa.Array] | None = None  # a row filter over the shard

    def rows(self, shard: pa.Table, several: bool) -> pa.Table:
        if several:
            shard = shard.filter(pc.equal(shard["output"], self.table))
        if self.keep is not None and shard.num_rows:
            shard = shard.filter(self.keep(shard))
        return shard.select([c for c in self.columns if c in shard.column_names])


@dataclass(frozen=True)
class Field:
    """One stage parameter as the CLI and the form see it."""

    name: str
    kind: str
    default: Any
    required: bool
    help: str
    flag: str
    short: str | None
    label: str
    choices: tuple | None
    minimum: float | None
    maximum: float | None

    @property
    def repeated(self) -> bool:
        return self.kind == "roles"


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    params: type
    select: Callable[[Any, Any, Any, int], pa.Table]
    worker: str
    outputs: tuple[Output, ...]
    config: Callable[[Any], dict] = lambda p: {}
    # The prompts the worker will send for these input rows, checked against the model's context
    # before the job is submitted (core.context_check): prompts(params, rows, backend name) ->
    # (item ids, conversations, tokens kept for the answer, what the ids name). None: not checked.
    prompts: Callable[[Any, pa.Table, str], tuple[list[str], list, int, str]] | None = None

    def make_params(self, values: dict | Any):
        """The params dataclass from a dict (unknown keys are an error) or as given."""
        if isinstance(values, self.params):
            return values
        known = {f.name for f in fields(self.params)}
        unknown = set(values or {}) - known
        if unknown:
            raise ValueError(f"stage {self.name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(known))}")
        return self.params(**{k: v for k, v in (values or {}).items() if v is not None})

    def fields(self) -> list[Field]:
        out = []
        for f in fields(self.params):
            meta = f.metadata
            choices = meta.get("choices")
            default = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else None)
            out.append(Field(
                name=f.name, kind=meta.get("kind") or "text", default=default,
                required=f.default is MISSING and f.default_factory is MISSING, help=meta.get("help", ""),
                flag=meta.get("flag") or "--" + f.name.replace("_", "-"), short=meta.get("short"),
                label=meta.get("label") or f.name.replace("_", " ").capitalize(),
                choices=tuple(choices() if callable(choices) else choices) if choices else None,
                minimum=meta.get("minimum"), maximum=meta.get("maximum")))
        return out

    def output_batches(self, shard: pa.Table) -> list[tuple[str, pa.Table]]:
        several = len(self.outputs) > 1
        if several and "output" not in shard.column_names:
            raise ValueError(f"a {self.name} shard feeds {len(self.outputs)} tables but has no 'output' column")
        return [(out.table, out.rows(shard, several)) for out in self.outputs]


REGISTRY: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    if not re.match(r"^[a-z][a-z0-9_]{0,31}$", stage.name):
        raise ValueError(f"stage name {stage.name!r}: use lowercase letters, digits and '_'")
    names = {f.name for f in fields(stage.params)}
    if "model" not in names:
        raise ValueError(f"stage {stage.name!r}: its params need a 'model' field (the model the job loads)")
    REGISTRY[stage.name] = stage
    return stage


def get(name: str) -> Stage:
    _load_builtin_stages()
    if name not in REGISTRY:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def all_stages() -> list[Stage]:
    _load_builtin_stages()
    return list(REGISTRY.values())


def params_dict(params) -> dict:
    return asdict(params)


def check_role(role: str, what: str = "role") -> str:
    if not isinstance(role, str) or not ROLE_RE.match(role):
        raise ValueError(f"{what} {role!r} is invalid: use lowercase letters, digits and '_'")
    return role


# --------------------------------------------------------------------------------------------
# Built-in stages
# --------------------------------------------------------------------------------------------

_LOADED = False


def _load_builtin_stages() -> None:
    """Stage modules register themselves on import; importing them here keeps `get` complete."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in BUILTIN_STAGE_MODULES:
        importlib.import_module(module)


# Modules that declare stages beyond the two below (each calls `register` at import).
BUILTIN_STAGE_MODULES: list[str] = ["core.difficulty", "core.expand", "core.ranking", "core.backtranslate",
                                      "core.revise", "core.categories"]


# -- generate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateParams:
    model: Any = param(help="model name (see `winnow models list`)", short="-m", kind="model")
    role: str = param(help="role of the answers: teacher, student, pool_1, …", short="-r", kind="role",
                      label="Response role")
    n: int = param(1, "samples per instruction", kind="int", minimum=1, maximum=256,
                   label="Samples per instruction (n)")
    temperature: float = param(1.0, "sampling temperature (0 = greedy)", kind="float", minimum=0.0, maximum=5.0)
    top_p: float = param(1.0, "nucleus sampling mass", kind="float", minimum=0.0, maximum=1.0, label="Top-p")
    max_tokens: int = param(256, "tokens per answer at most", kind="int", minimum=1, maximum=32768)
    seed: int | None = param(None, "seed for reproducible sampling", kind="int", minimum=0,
                             label="Seed (optional)")

    def __post_init__(self) -> None:
        check_role(self.role)
        self.generation()  # validates the sampling settings, naming a bad value

    def generation(self):
        from core.llm.base import GenerationParams

        return GenerationParams(temperature=float(self.temperature), top_p=float(self.top_p),
                                max_tokens=int(self.max_tokens), seed=self.seed, n=int(self.n))


def _select_instructions(ws, p: GenerateParams, selection, limit: int) -> pa.Table:
    from core.generate import input_table

    rows = ws.store.instructions_for_job(selection, limit)
    if not rows:
        raise ValueError("the selection holds no instruction; nothing to generate")
    return input_table(rows)


def _finished_generations(shard: pa.Table) -> pa.Array:
    """Only answers that finished (stop or length) become responses; too_long and errors stay in
    the job's shards and log."""
    return pc.is_in(shard["finish_reason"], value_set=pa.array(["stop", "length"]))


RESPONSE_COLUMNS = ("id", "instruction_id", "role", "text", "n_chars", "model", "round", "method", "params", "meta")


def _generate_prompts(p: GenerateParams, rows: pa.Table, backend: str) -> tuple[list[str], list, int, str]:
    """The conversations core.generate.run_shard sends, and max_tokens for each answer."""
    import json

    conversations = [json.loads(c) for c in rows["conversation"].to_pylist()]
    return rows["instruction_id"].to_pylist(), conversations, int(p.max_tokens), "instruction"


register(Stage(
    name="generate", help="answer instructions with a model",
    params=GenerateParams, select=_select_instructions, worker="core.generate:run_shard",
    outputs=(Output("responses", RESPONSE_COLUMNS, _finished_generations),),
    config=lambda p: {"role": p.role, "params": p.generation().to_dict(), "method": "generate"},
    prompts=_generate_prompts,
))


# -- judge ------------------------------------------------------------------------------------


def _rubric_names() -> tuple[str, ...]:
    from core.judge import RUBRICS

    return tuple(RUBRICS)


JUDGE_MODES = ("auto", "probability", "generate")


@dataclass(frozen=True)
class JudgeParams:
    model: Any = param(help="judge model name", flag="--judge", short="-j", kind="model", label="Judge model")
    rubric: str = param(help="pointwise_10, pointwise_5, zephyr_aspects; pairwise (A/B, asked in both orders); "
                             "listwise (all answers of the roles ranked together)", kind="choice",
                        choices=_rubric_names)
    roles: list = param([], "roles of the responses to judge; for pairwise exactly two: A then B",
                        flag="--role", short="-r", kind="roles", label="Response roles")
    mode: str = param("auto", "probability: the expected score from the judge's own next-token "
                              "distribution (never fails to parse); generate: reasoning, then a parsed score "
                              "line; auto: probability when the backend gives log-probs (zephyr_aspects: "
                              "generate, for its rationales; probability asks one call per aspect)", kind="choice",
                      choices=JUDGE_MODES, label="Scoring mode")
    max_tokens: int = param(256, "generate mode: tokens per verdict at most", kind="int", minimum=1, maximum=32768)
    seed: int | None = param(None, "seed (order shuffles and sampling)", kind="int", minimum=0,
                             label="Seed (optional)")
    unjudged: bool = param(False, "pointwise: only answers this judge and rubric have no verdict on yet "
                                  "(a round judges its new answers only)", kind="bool", label="Only unjudged answers")

    def __post_init__(self) -> None:
        from core import judge

        rubric = judge.get_rubric(self.rubric)
        if not self.roles:
            raise ValueError("choose at least one response role to judge")
        for role in self.roles:
            check_role(role, "response role")
        if rubric.kind == "pairwise" and (len(self.roles) != 2 or self.roles[0] == self.roles[1]):
            raise ValueError(f"a pairwise judge compares two roles (A then B), not {list(self.roles)}")
        if self.mode not in JUDGE_MODES:
            raise ValueError(f"mode must be one of {', '.join(JUDGE_MODES)}, not {self.mode!r}")
        if self.mode != "auto":
            judge.check_mode(rubric, self.mode)  # e.g. listwise has no probability mode
        if not isinstance(self.unjudged, bool):
            raise ValueError(f"unjudged must be true or false, not {self.unjudged!r}")
        if self.unjudged and rubric.kind != "pointwise":
            raise ValueError(f"unjudged applies to pointwise rubrics only, not {rubric.name!r} ({rubric.kind})")

    def generation(self):
        from core.judge_stage import DEFAULT_JUDGE_PARAMS
        from core.llm.base import GenerationParams

        return GenerationParams.from_dict(DEFAULT_JUDGE_PARAMS | {"max_tokens": int(self.max_tokens),
                                                                  "seed": self.seed})


def _select_judge_targets(ws, p: JudgeParams, selection, limit: int) -> pa.Table:
    from core import judge, judge_stage

    kind = judge.get_rubric(p.rubric).kind
    roles = list(p.roles)
    if kind == "pairwise":  # answers of roles[0] (A) against answers of roles[1] (B)
        rows = ws.store.pairs_for_judge(selection, roles[0], roles[1], limit)
        if not rows:
            raise ValueError(f"no instruction in the selection has answers of both {roles[0]} and {roles[1]}")
        return judge_stage.pair_input_table(rows)
    if kind == "listwise":  # every answer of these roles to an instruction, ranked together
        rows = ws.store.lists_for_judge(selection, roles, limit)
        if not rows:
            raise ValueError(f"no instruction in the selection has two or more answers of {', '.join(roles)}")
        return judge_stage.list_input_table(rows)
    judged_by = (ws.model(p.model).name if isinstance(p.model, str) else p.model["name"], judge.get_rubric(p.rubric).name,
                 None if p.mode == "auto" else p.mode)
    rows = ws.store.responses_for_judge(selection, roles, limit, unjudged_by=judged_by if p.unjudged else None)
    if not rows:
        raise ValueError(f"the selection holds no response with role {', '.join(roles)}"
                         + (" without a verdict of this judge" if p.unjudged else "") + "; nothing to judge")
    return judge_stage.input_table(rows)


JUDGMENT_COLUMNS = ("id", "target_kind", "target_id", "judge_model", "rubric", "kind", "score", "scale_max", "raw",
                    "parse_error", "rationale", "round", "template_hash", "params", "mode", "confidence",
                    "call_error")


def _judge_config(p: JudgeParams) -> dict:
    from core import judge

    return {"rubric": judge.get_rubric(p.rubric).name, "roles": list(p.roles), "mode": p.mode,
            "params": p.generation().to_dict()}


def _judge_prompts(p: JudgeParams, rows: pa.Table, backend: str) -> tuple[list[str], list, int, str]:
    """The conversations core.judge_stage.run_shard sends (both orders of a pair; the first
    aspect's of an aspect rubric, as long as any), and the tokens the verdict needs."""
    from core import judge

    rubric = judge.get_rubric(p.rubric)
    mode = "generate" if rubric.kind == "listwise" else judge.default_mode(rubric, backend, p.mode)
    answer = int(p.max_tokens) if mode == "generate" else 8  # probability: a prefill and a label
    items = rows.to_pylist()
    if rubric.kind == "pairwise":
        requests = judge.build_pairwise_requests(items, rng=0, rubric=rubric, mode=mode)
        return ([f"{items[r.index]['a_id']}|{items[r.index]['b_id']}" for r in requests],
                [r.conversation for r in requests], answer, "pair")
    if rubric.kind == "listwise":
        return ([it["response_ids"][0] for it in items],
                [judge.build_listwise_request(it["instruction"], it["answers"], 0, input=it["input"],
                                              rubric=rubric)[0] for it in items], answer, "list")
    if mode == "probability" and rubric.aspects:
        per_item = judge.build_aspect_probability_requests(items, rubric)
        k = len(per_item) // max(1, len(items))
        return [it["response_id"] for it in items for _ in range(k)], per_item, answer, "response"
    conversations = judge.build_pointwise_requests(items, rubric, mode=mode)
    return [it["response_id"] for it in items], conversations, answer, "response"


register(Stage(
    name="judge", help="score responses with a judge model",
    params=JudgeParams, select=_select_judge_targets, worker="core.judge_stage:run_shard",
    outputs=(Output("judgments", JUDGMENT_COLUMNS),), config=_judge_config, prompts=_judge_prompts,
))
