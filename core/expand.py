"""TAPIR's expansion and style-rewriting stages (arXiv 2405.13448; DESIGN.md §1, issue 13 item 6).

**expand**: the teacher writes new instructions from seed instructions (TAPIR's seeds are the
high-MFD ones): for each seed, `n` prompts from core/prompts/expand.txt ask for ONE new instruction
of the same task type and similar difficulty, not a paraphrase. Each prompt quotes the seed and
numbers its sample ("Variation k of n"), so the k samples of a seed are distinct prompts: every
backend seeds a prompt's sampling stream from the job's seed and the prompt, hence per (seed, k),
independent of batching. A reply is parsed (`parse_instruction`) into the new instruction; empty,
cut-off, seed-identical, held-out and duplicate ones are dropped and counted in the job's log
(the raw reply stays in the shard). New instructions go to a named output dataset with their
lineage: parent_id = the seed, task = the seed's current task, round, method 'expand', model, and
meta {seed_text, sample, template_hash, job, params}. Their ids are those the importer would give
the same text imported as a prompt into that dataset, so importing it later adds nothing.

Decontamination: `exclude_datasets` (e.g. the held-out eval prompts) drops a new instruction whose
normalised text (strip, collapse whitespace, casefold) equals one of theirs. The select step reads
those texts, at most MAX_EXCLUDED, and ships their hashes in the job's input snapshot (its Parquet
schema metadata) rather than in config.json: the config is copied into the jobs table and read by
every job listing, and 200,000 texts would make it tens of megabytes.

**restyle**: TAPIR's task-specific response style. Answers of a role to instructions whose current
task has a style are rewritten by a model: math and reasoning step by step (restyle_math.txt), code
generation and debugging as commented code followed by an explanation (restyle_code.txt). Other
tasks are not selected. The rewrite is a response of `out_role` whose parent_id is the answer it
rewrote; an answer that has a rewrite of that role is not selected again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core import prompts, stages
from core.ids import content_id
from core.judge import format_instruction
from core.llm.base import GenerationParams
from core.stages import RESPONSE_COLUMNS, Output, Stage, check_role, param

EXPAND_TEMPLATE = "expand"
MAX_EXPANSIONS = 16
MAX_EXCLUDED = 200_000
# Where the select step puts the held-out texts' hashes: the input snapshot's schema metadata.
EXCLUDE_KEY = b"winnow.expand.exclude"
DROP_REASONS = ("call failed", "empty", "cut off", "same as seed", "held-out", "duplicate")

STYLE_PREFIX = "restyle_"
# TAPIR's styles: step by step for math and reasoning, commented code plus an explanation for code.
DEFAULT_STYLES: dict[str, str] = {"math": "restyle_math", "reasoning": "restyle_math",
                                  "code_generation": "restyle_code", "code_debugging": "restyle_code"}
RESTYLE_COLUMNS = RESPONSE_COLUMNS + ("parent_id", "template_hash")

INSTRUCTION_SCHEMA = pa.schema([
    ("id", pa.string()), ("dataset_id", pa.string()), ("text", pa.string()), ("input", pa.string()),
    ("task", pa.string()), ("n_chars", pa.int32()), ("round", pa.int32()), ("method", pa.string()),
    ("model", pa.string()), ("parent_id", pa.string()), ("meta", pa.string()),
    # Not stored in `instructions`: the raw reply, why it was dropped (NULL: kept), tokens for the job's rate.
    ("raw", pa.string()), ("dropped", pa.string()), ("n_tokens", pa.int64()),
])
INSTRUCTION_COLUMNS = tuple(INSTRUCTION_SCHEMA.names[:11])


def _kept(shard: pa.Table) -> pa.Array:
    return pc.is_null(shard["dropped"])


# --------------------------------------------------------------------------------------------
# Pure parts: normalising, parsing a reply, the prompt
# --------------------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """What decontamination compares: stripped, whitespace collapsed, casefolded."""
    return " ".join(text.split()).casefold()


def text_key(text: str) -> str:
    # 64 bits: no two of 200,000 held-out texts and a million new ones collide in practice.
    return content_id("expand-exclude", normalise(text))[:16]


_FENCE = re.compile(r"^\s*```[\w+.-]*\s*$")
# Markdown a model puts before a line: a heading, a quote, a bullet, a list number.
_LEAD = re.compile(r"^\s*(?:#{1,6}\s+|>\s?|[-*+]\s+|\d{1,2}[.)]\s+)")
_NAME = r"(?:here\s+is\s+|here's\s+)?(?:(?:a|an|the|my|one)\s+)?(?:new\s+|rewritten\s+)?(?:instruction|task|prompt)" \
        r"(?:\s*#?\s*\d+)?"
# A label line alone ("New instruction", "### Instruction 2:") and a label before the text.
_LABEL = re.compile(rf"\**\s*{_NAME}\s*[:：]?\s*\**", re.I)
_PREFIX = re.compile(rf"^\**\s*{_NAME}\s*[:：]\s*\**\s*", re.I)
_QUOTES = (('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("`", "`"))


def _unquote(text: str) -> str:
    changed = True
    while changed and len(text) >= 2:
        changed = False
        if text.startswith("**") and text.endswith("**") and len(text) > 4:
            text, changed = text[2:-2].strip(), True
            continue
        for left, right in _QUOTES:
            inner = text[len(left):-len(right)]
            # Only a quote around the whole text: '"a" or "b"' keeps its quotes.
            if text.startswith(left) and text.endswith(right) and right not in inner and left not in inner:
                text, changed = inner.strip(), True
                break
    return text


def _clean(paragraph: str) -> str:
    raw = [line for line in paragraph.split("\n") if line.strip()]
    if len(raw) > 1 and all(_LEAD.match(line) and not line.lstrip().startswith(("#", ">")) for line in raw):
        raw = raw[:1]  # a list of several instructions: the first one
    elif len(raw) > 1 and raw[0].lstrip().startswith("#"):
        raw = raw[1:]  # a markdown heading over the instruction is a title, not part of it
    lines = [_LEAD.sub("", line).strip() for line in raw]
    lines = [line for line in lines if line and not _LABEL.fullmatch(line)]
    text = _PREFIX.sub("", "\n".join(lines), count=1).strip()
    return _unquote(text)


def split_reply(text: str | None) -> tuple[str | None, bool]:
    """(the new instruction, whether it is the reply's last paragraph); (None, True) when the
    reply holds nothing. A lead-in paragraph ending in ':' ("Sure! Here is one:") is skipped."""
    if not isinstance(text, str):
        return None, True
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if not _FENCE.match(line)]
    paragraphs = [c for c in (_clean(p) for p in re.split(r"\n\s*\n", "\n".join(lines))) if c]
    if not paragraphs:
        return None, True
    at = 1 if len(paragraphs) > 1 and paragraphs[0].endswith(":") else 0
    return paragraphs[at], at == len(paragraphs) - 1


def parse_instruction(text: str | None) -> str | None:
    """The new instruction in a model's reply: quotes, 'Instruction:' labels, markdown and code
    fences stripped; the first non-empty paragraph; None when nothing is left."""
    return split_reply(text)[0]


def expansion_prompt(template: prompts.PromptTemplate, instruction: str, input_text: str | None, sample: int,
                     n: int) -> str:
    """The prompt for sample `sample` (0-based) of a seed; the template shows it 1-based."""
    return template.render(instruction=format_instruction(instruction, input_text), variation=sample + 1, n=n)


# --------------------------------------------------------------------------------------------
# expand: params, input selection, worker
# --------------------------------------------------------------------------------------------


def dataset_names(value, what: str) -> list[str]:
    """Dataset names from a list, or from one comma-separated string (the CLI flag and the Jobs
    form give text; a name has no comma)."""
    from core.workspace import check_dataset_name

    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):  # the form shows a list default as "[]"
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"{what} must be dataset names separated by commas, not {value!r}") from None
        else:
            value = [part for part in text.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or any(not isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of dataset names, not {value!r}")
    out = []
    for name in value:
        try:
            name = check_dataset_name(name)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        if name not in out:
            out.append(name)
    return out


def _check_model(model) -> None:
    if not (isinstance(model, (str, dict)) and model):
        raise ValueError(f"model must be a model name or spec, not {model!r}")


@dataclass(frozen=True)
class ExpandParams:
    model: Any = param(help="the teacher that writes the new instructions", short="-m", kind="model",
                       label="Teacher model")
    # Not `dataset`: the stage's CLI already has --dataset (the selection's seed datasets).
    out_dataset: str = param(help="name of the dataset the new instructions go to (created if absent)",
                             kind="text", label="Output dataset")
    n: int = param(1, "new instructions per seed", kind="int", minimum=1, maximum=MAX_EXPANSIONS,
                   label="New instructions per seed (n)")
    exclude_datasets: list = param([], "drop a new instruction equal (after normalising) to an instruction of these "
                                       "datasets, e.g. the held-out eval prompts; names separated by commas",
                                   flag="--exclude-datasets", kind="text", label="Decontaminate against")
    temperature: float = param(0.7, "sampling temperature (0 = greedy)", kind="float", minimum=0.0, maximum=5.0)
    max_tokens: int = param(256, "tokens per reply at most", kind="int", minimum=1, maximum=32768)
    seed: int = param(0, "seed for reproducible sampling", kind="int", minimum=0)

    def __post_init__(self) -> None:
        from core.workspace import check_dataset_name

        _check_model(self.model)
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= MAX_EXPANSIONS:
            raise ValueError(f"n (new instructions per seed) must be an integer from 1 to {MAX_EXPANSIONS}, "
                             f"not {self.n!r}")
        if not isinstance(self.out_dataset, str):
            raise ValueError(f"out_dataset must be a dataset name, not {self.out_dataset!r}")
        object.__setattr__(self, "out_dataset", check_dataset_name(self.out_dataset))
        object.__setattr__(self, "exclude_datasets", dataset_names(self.exclude_datasets, "exclude_datasets"))
        self.generation()  # validates temperature, max_tokens and seed, naming a bad value

    def generation(self) -> GenerationParams:
        # One sample per prompt: the k samples of a seed are k prompts (see the module docstring).
        return GenerationParams(temperature=float(self.temperature), max_tokens=int(self.max_tokens),
                                seed=self.seed, n=1)


def _excluded_keys(ws, names: list[str]) -> set[str]:
    from core.selection import ExploreFilter

    for name in names:
        if ws.store.dataset(name) is None:
            raise ValueError(f"exclude_datasets: no dataset named {name!r} in this workspace")
    if not names:
        return set()
    rows = ws.store.instructions_for_job(ExploreFilter(datasets=list(names)), MAX_EXCLUDED + 1)
    if len(rows) > MAX_EXCLUDED:
        raise ValueError(f"exclude_datasets {', '.join(names)} hold more than {MAX_EXCLUDED:,} instructions; "
                         "decontaminate against fewer")
    keys = set()
    for r in rows:
        keys.add(text_key(r["text"]))
        if r.get("input"):  # the instruction with its input, as a new instruction could spell it
            keys.add(text_key(f"{r['text']} {r['input']}"))
    return keys


def ensure_output_dataset(ws, name: str) -> str:
    """The output dataset's id; the dataset row is created now (idempotent), before the job runs,
    because ingest inserts instructions and never datasets."""
    dataset_id = content_id("dataset", name)
    with ws.store.transaction() as cur:
        ws.store.ensure_dataset(cur, dataset_id, name, "prompts")
    return dataset_id


def expand_input_table(rows: list[dict], tasks: dict[str, dict], excluded: set[str]) -> pa.Table:
    """Seed rows (seed_id, text, input, task) with the held-out keys in the schema metadata."""
    table = pa.table({
        "seed_id": pa.array([r["id"] for r in rows], pa.string()),
        "text": pa.array([r["text"] for r in rows], pa.string()),
        "input": pa.array([r.get("input") or "" for r in rows], pa.string()),
        "task": pa.array([(tasks.get(r["id"]) or {}).get("task") for r in rows], pa.string()),
    })
    return table.replace_schema_metadata({EXCLUDE_KEY: "\n".join(sorted(excluded))}) if excluded else table


def select_seeds(ws, p: ExpandParams, selection, limit: int) -> pa.Table:
    rows = ws.store.instructions_for_job(selection, limit)
    if not rows:
        raise ValueError("the selection holds no instruction; nothing to expand")
    excluded = _excluded_keys(ws, p.exclude_datasets)
    tasks = ws.store.current_tasks([r["id"] for r in rows])
    ensure_output_dataset(ws, p.out_dataset)
    return expand_input_table(rows, tasks, excluded)


@lru_cache(maxsize=4)
def _keys(raw: bytes) -> frozenset[str]:
    return frozenset(raw.decode().split("\n"))


def excluded_keys(rows: pa.Table) -> frozenset[str]:
    """The held-out keys a select step put in the snapshot (every shard is a slice of it)."""
    raw = (rows.schema.metadata or {}).get(EXCLUDE_KEY)
    return _keys(raw) if raw else frozenset()


def instruction_id(dataset_id: str, text: str, input_text: str = "") -> str:
    """core.ingest's id for a prompt record without system or history in that dataset."""
    return content_id(dataset_id, "", "", text, input_text)


def run_expand_shard(ctx, rows: pa.Table) -> pa.Table:
    cfg = ctx.config
    params = GenerationParams.from_dict(cfg["params"])
    n, model, round_ = int(cfg["n"]), cfg["model"]["name"], int(cfg.get("round", 0))
    dataset_id = cfg["out_dataset_id"]
    template = prompts.load(EXPAND_TEMPLATE)
    excluded = excluded_keys(rows)
    seeds = rows.to_pylist()
    asks = [(seed, k) for seed in seeds for k in range(n)]
    conversations = [[{"role": "user", "content": expansion_prompt(template, s["text"], s["input"], k, n)}]
                     for s, k in asks]
    generations = ctx.backend.generate(conversations, params)
    out: dict[str, list] = {name: [] for name in INSTRUCTION_SCHEMA.names}
    seen: set[str] = set()
    for (seed, k), samples in zip(asks, generations, strict=True):
        g = samples[0]
        text, last = split_reply(g.text) if g.ok else (None, True)
        iid = instruction_id(dataset_id, text) if text else None
        if not g.ok:
            dropped = "call failed"
        elif text is None:
            dropped = "empty"
        elif g.finish_reason == "length" and last:  # the instruction may have been cut mid-sentence
            dropped = "cut off"
        elif normalise(text) == normalise(seed["text"]):
            dropped = "same as seed"
        elif text_key(text) in excluded:
            dropped = "held-out"
        elif iid in seen:
            dropped = "duplicate"
        else:
            dropped = None
            seen.add(iid)
        meta = {"seed_text": seed["text"], "sample": k, "template_hash": template.hash, "job": ctx.job_dir.name,
                "params": params.to_dict(), "finish_reason": g.finish_reason, "error": g.error}
        row = {"id": iid if dropped is None else None, "dataset_id": dataset_id, "text": text or "", "input": "",
               "task": seed["task"], "n_chars": len(text or ""), "round": round_, "method": "expand", "model": model,
               "parent_id": seed["seed_id"], "meta": json.dumps(meta), "raw": g.text, "dropped": dropped,
               "n_tokens": g.n_tokens}
        for name, value in row.items():
            out[name].append(value)
    counts = {reason: out["dropped"].count(reason) for reason in DROP_REASONS}
    summary = ", ".join(f"{c} {reason}" for reason, c in counts.items() if c)
    ctx.log(f"expand: {len(seen)} new instructions from {len(asks)} samples of {len(seeds)} seeds"
            + (f"; dropped {summary}" if summary else ""))
    return pa.table(out, schema=INSTRUCTION_SCHEMA)


def _expand_config(p: ExpandParams) -> dict:
    return {"params": p.generation().to_dict(), "n": p.n, "out_dataset": p.out_dataset,
            "out_dataset_id": content_id("dataset", p.out_dataset), "template": EXPAND_TEMPLATE}


EXPAND_STAGE = stages.register(Stage(
    name="expand", help="TAPIR expansion: the teacher writes new instructions of each seed's task and difficulty",
    params=ExpandParams, select=select_seeds, worker="core.expand:run_expand_shard",
    outputs=(Output("instructions", INSTRUCTION_COLUMNS, _kept),), config=_expand_config,
))


# --------------------------------------------------------------------------------------------
# restyle: params, input selection, worker
# --------------------------------------------------------------------------------------------


def style_templates() -> tuple[str, ...]:
    """The known style templates: core/prompts/restyle_*.txt."""
    return tuple(name for name in prompts.available() if name.startswith(STYLE_PREFIX))


def check_styles(styles) -> dict[str, str]:
    """task → style template, from a dict, a "task=template, …" string or a JSON object string;
    None or "" is TAPIR's default mapping."""
    from core.tasks import NAME_RE

    if styles is None or (isinstance(styles, str) and not styles.strip()):
        return dict(DEFAULT_STYLES)
    if isinstance(styles, str):
        text = styles.strip()
        if text.startswith("{"):
            try:
                styles = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"styles must be task=template pairs separated by commas, not {text!r}") from None
        else:
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError(f"styles must be task=template pairs separated by commas, not {text!r}")
            styles = {task.strip(): template.strip() for task, template in pairs}
    if not isinstance(styles, dict) or not styles:
        raise ValueError(f"styles must map task names to style templates, not {styles!r}")
    known = style_templates()
    for task, template in styles.items():
        if not isinstance(task, str) or not NAME_RE.match(task):
            raise ValueError(f"styles: task {task!r} is not a task name (snake_case, e.g. code_generation)")
        if template not in known:
            raise ValueError(f"styles: template {template!r} for task {task!r} is not a style template; "
                             f"known: {', '.join(known)}")
    return dict(styles)


@dataclass(frozen=True)
class RestyleParams:
    model: Any = param(help="the model that rewrites the answers (TAPIR: the teacher)", short="-m", kind="model")
    role: str = param("teacher", "role of the answers to rewrite", short="-r", kind="role", label="Answer role")
    out_role: str = param("styled", "role of the rewritten answers", kind="role", label="Output role")
    styles: Any = param(None, "task=template pairs separated by commas (default: math and reasoning step by "
                              "step, code_generation and code_debugging as commented code)", kind="text",
                        label="Styles (optional)")
    temperature: float = param(0.0, "sampling temperature (0 = greedy)", kind="float", minimum=0.0, maximum=5.0)
    max_tokens: int = param(512, "tokens per rewrite at most", kind="int", minimum=1, maximum=32768)
    seed: int | None = param(None, "seed for reproducible sampling", kind="int", minimum=0, label="Seed (optional)")

    def __post_init__(self) -> None:
        _check_model(self.model)
        check_role(self.role, "answer role")
        check_role(self.out_role, "output role")
        if self.role == self.out_role:
            raise ValueError(f"the output role must differ from the answer role, not both {self.role!r}")
        object.__setattr__(self, "styles", check_styles(self.styles))
        self.generation()

    def generation(self) -> GenerationParams:
        return GenerationParams(temperature=float(self.temperature), max_tokens=int(self.max_tokens),
                                seed=self.seed, n=1)


def select_restyle_rows(ws, p: RestyleParams, selection, limit: int) -> pa.Table:
    rows = ws.store.responses_to_restyle(selection, p.role, p.out_role, sorted(p.styles), limit)
    if not rows:
        raise ValueError(f"the selection holds no answer of role {p.role!r} to an instruction of a styled task "
                         f"({', '.join(sorted(p.styles))}) without a {p.out_role!r} rewrite; nothing to restyle")
    return pa.table({
        "response_id": pa.array([r["response_id"] for r in rows], pa.string()),
        "instruction_id": pa.array([r["instruction_id"] for r in rows], pa.string()),
        "task": pa.array([r["task"] for r in rows], pa.string()),
        "instruction": pa.array([format_instruction(r["text"], r["input"]) for r in rows], pa.string()),
        "response": pa.array([r["response"] for r in rows], pa.string()),
    })


def run_restyle_shard(ctx, rows: pa.Table) -> pa.Table:
    cfg = ctx.config
    params = GenerationParams.from_dict(cfg["params"])
    model, out_role, round_, styles = cfg["model"]["name"], cfg["out_role"], int(cfg.get("round", 0)), cfg["styles"]
    templates = {name: prompts.load(name) for name in set(styles.values())}
    items = rows.to_pylist()
    conversations = [[{"role": "user", "content": templates[styles[it["task"]]].render(
        instruction=it["instruction"], response=it["response"])}] for it in items]
    generations = ctx.backend.generate(conversations, params)
    out: dict[str, list] = {name: [] for name in RESTYLE_COLUMNS + ("finish_reason", "n_tokens", "dropped")}
    seen: set[str] = set()
    params_json = json.dumps(params.to_dict())
    for it, samples in zip(items, generations, strict=True):
        g, style = samples[0], styles[it["task"]]
        rid = content_id(it["instruction_id"], out_role, model, g.text)
        dropped = "call failed" if not g.ok else "empty" if not g.text.strip() else "duplicate" if rid in seen \
            else None
        if dropped is None:
            seen.add(rid)
        meta = {"source_response_id": it["response_id"], "style": style, "task": it["task"],
                "finish_reason": g.finish_reason, "n_tokens": g.n_tokens, "error": g.error}
        row = {"id": rid, "instruction_id": it["instruction_id"], "role": out_role, "text": g.text,
               "n_chars": len(g.text), "model": model, "round": round_, "method": "restyle", "params": params_json,
               "meta": json.dumps(meta), "parent_id": it["response_id"], "template_hash": templates[style].hash,
               "finish_reason": g.finish_reason, "n_tokens": g.n_tokens, "dropped": dropped}
        for name, value in row.items():
            out[name].append(value)
    dropped = [d for d in out["dropped"] if d]
    ctx.log(f"restyle: {len(seen)} rewrites of {len(items)} answers"
            + (f"; dropped {', '.join(f'{dropped.count(r)} {r}' for r in sorted(set(dropped)))}" if dropped else ""))
    return pa.table(out)


def _restyle_config(p: RestyleParams) -> dict:
    return {"params": p.generation().to_dict(), "out_role": p.out_role, "role": p.role, "styles": dict(p.styles)}


RESTYLE_STAGE = stages.register(Stage(
    name="restyle", help="TAPIR style rewriting: math and reasoning answers step by step, code answers as "
                         "commented code with an explanation",
    params=RestyleParams, select=select_restyle_rows, worker="core.expand:run_restyle_shard",
    outputs=(Output("responses", RESTYLE_COLUMNS, _kept),), config=_restyle_config,
))
