"""CITING's revision stage (arXiv 2310.02527; DESIGN.md §1 and §6, issue 14 item 4).

**revise**: the teacher revises a draft (the student's answer) against the criteria of the
instruction's category (core.categories; prompt core/prompts/revise.txt). The revision is a
response of `out_role` whose parent_id is the draft, with its lineage in meta: the draft's id,
the category (id and name), the hash of the criteria it was revised against, the mode.

Two kinds of training data come out of one revision, so one sft snapshot over `out_role` holds
both (DESIGN.md §6: train the direct answer and the revision, so the student keeps answering
directly):

- *direct*: instruction → revision (a response to the original instruction);
- *revision*: a new instruction (core/prompts/revision_task.txt: the request, the criteria and
  the draft) → revision. Those instructions go to their own dataset (`revision_dataset`), with
  parent_id = the original instruction, method 'revise', and the ids the importer would give
  the same text in that dataset.

Drops are counted with their reason in the job's log and kept in its shards (not ingested):
call failed, empty, same as the draft (after normalising whitespace and case), too long (the
reply hit max_tokens: a revision cut off is not one to learn from), duplicate.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core import prompts, stages
from core.categories import _check_scheme, criteria_hash, criteria_text
from core.expand import INSTRUCTION_COLUMNS, ensure_output_dataset, instruction_id, normalise
from core.ids import content_id
from core.judge import format_instruction
from core.llm.base import GenerationParams
from core.stages import RESPONSE_COLUMNS, Output, Stage, check_role, param

REVISE_TEMPLATE = "revise"
TASK_TEMPLATE = "revision_task"
MODES = ("direct", "revision")
DROP_REASONS = ("call failed", "empty", "same as draft", "too long", "duplicate")
REVISION_RESPONSE_COLUMNS = RESPONSE_COLUMNS + ("parent_id", "template_hash")

SHARD_SCHEMA = pa.schema([
    ("output", pa.string()),
    # instructions (revision mode)
    ("dataset_id", pa.string()), ("input", pa.string()), ("task", pa.string()),
    # both
    ("id", pa.string()), ("instruction_id", pa.string()), ("text", pa.string()), ("n_chars", pa.int32()),
    ("model", pa.string()), ("round", pa.int32()), ("method", pa.string()), ("parent_id", pa.string()),
    ("meta", pa.string()),
    # responses
    ("role", pa.string()), ("params", pa.string()), ("template_hash", pa.string()),
    # not stored: why a revision was dropped (NULL: kept), the raw reply's finish and tokens
    ("dropped", pa.string()), ("finish_reason", pa.string()), ("n_tokens", pa.int64()),
])


def _kept(shard: pa.Table) -> pa.Array:
    return pc.is_null(shard["dropped"])


def check_modes(modes) -> list[str]:
    """The training modes from a list or a comma-separated string: direct and/or revision."""
    given = modes
    if isinstance(modes, str):
        modes = [m.strip(" '\"") for m in modes.strip().strip("[]").split(",") if m.strip(" '\"")]  # a form's "[...]"
    if not isinstance(modes, (list, tuple)) or not modes or any(m not in MODES for m in modes):
        raise ValueError(f"modes must be a non-empty list of {', '.join(MODES)}, not {given!r}")
    return list(dict.fromkeys(modes))


def drop_reason(draft: str, revision: str | None, finish_reason: str, ok: bool, keep_cut_off: bool = False) -> str | None:
    """Why a revision is not kept (None: kept). Pure. keep_cut_off keeps a revision that hit
    max_tokens (a small teacher rarely stops in time; a strong one that does is cut off)."""
    if not ok:
        return "call failed"
    if not (revision or "").strip():
        return "empty"
    if normalise(revision) == normalise(draft or ""):
        return "same as draft"
    if finish_reason == "length" and not keep_cut_off:
        return "too long"
    return None


@dataclass(frozen=True)
class ReviseParams:
    model: Any = param(help="the teacher that revises the drafts", short="-m", kind="model", label="Teacher model")
    scheme: str = param("default", "the category scheme whose criteria the drafts are revised against", kind="text")
    role: str = param("student", "role of the drafts to revise", short="-r", kind="role", label="Draft role")
    draft_round: int | None = param(None, "only drafts of this round (a round revises its own student's answers)",
                                    kind="int", minimum=0, label="Draft round (optional)")
    out_role: str = param("revised", "role of the revisions", kind="role", label="Output role")
    modes: list = param(["direct", "revision"], "training data to write: direct (instruction → revision) and/or "
                                                "revision (instruction + criteria + draft → revision)",
                        kind="text", label="Modes")
    revision_dataset: str = param("revision-tasks", "the dataset the revision-mode instructions go to", kind="text",
                                  label="Revision-mode dataset")
    temperature: float = param(0.0, "sampling temperature (0 = greedy)", kind="float", minimum=0.0, maximum=5.0)
    max_tokens: int = param(512, "tokens per revision at most (a revision that hits it is dropped: too long)",
                            kind="int", minimum=1, maximum=32768)
    seed: int | None = param(None, "seed for reproducible sampling", kind="int", minimum=0, label="Seed (optional)")
    keep_cut_off: bool = param(False, "keep a revision that hit max_tokens instead of dropping it (too long)",
                               kind="bool", label="Keep cut-off revisions")

    def __post_init__(self) -> None:
        from core.workspace import check_dataset_name

        if not (isinstance(self.model, (str, dict)) and self.model):
            raise ValueError(f"model must be a model name or spec, not {self.model!r}")
        if not isinstance(self.keep_cut_off, bool):
            raise ValueError(f"keep_cut_off must be true or false, not {self.keep_cut_off!r}")
        _check_scheme(self.scheme)
        check_role(self.role, "draft role")
        check_role(self.out_role, "output role")
        if self.role == self.out_role:
            raise ValueError(f"the output role must differ from the draft role, not both {self.role!r}")
        if self.draft_round is not None and (isinstance(self.draft_round, bool) or not isinstance(self.draft_round, int)
                                             or self.draft_round < 0):
            raise ValueError(f"draft_round must be an integer ≥ 0 or empty, not {self.draft_round!r}")
        object.__setattr__(self, "modes", check_modes(self.modes))
        if not isinstance(self.revision_dataset, str):
            raise ValueError(f"revision_dataset must be a dataset name, not {self.revision_dataset!r}")
        object.__setattr__(self, "revision_dataset", check_dataset_name(self.revision_dataset))
        self.generation()

    def generation(self) -> GenerationParams:
        return GenerationParams(temperature=float(self.temperature), max_tokens=int(self.max_tokens),
                                seed=self.seed, n=1)


def select_drafts(ws, p: ReviseParams, selection, limit: int) -> pa.Table:
    if not ws.store.categories(p.scheme):
        raise ValueError(f"scheme {p.scheme!r} has no category: propose or load categories first")
    rows = ws.store.drafts_to_revise(selection, p.scheme, p.role, p.draft_round, p.out_role, limit)
    if not rows:
        raise ValueError(f"the selection holds no answer of role {p.role!r}"
                         + (f" from round {p.draft_round}" if p.draft_round is not None else "")
                         + f" to an instruction with a category of {p.scheme!r} and without a {p.out_role!r} "
                           "revision; nothing to revise")
    if "revision" in p.modes:
        ensure_output_dataset(ws, p.revision_dataset)  # ingest inserts instructions, never datasets
    return pa.table({
        "response_id": pa.array([r["response_id"] for r in rows], pa.string()),
        "instruction_id": pa.array([r["instruction_id"] for r in rows], pa.string()),
        "instruction": pa.array([format_instruction(r["text"], r["input"]) for r in rows], pa.string()),
        "draft": pa.array([r["draft"] for r in rows], pa.string()),
        "category_id": pa.array([r["category_id"] for r in rows], pa.string()),
        "category": pa.array([r["category"] for r in rows], pa.string()),
        "criteria": pa.array([json.dumps(r["criteria"]) for r in rows], pa.string()),
    })


def revision_task(template: prompts.PromptTemplate, instruction: str, criteria: list[str], draft: str) -> str:
    """The revision-mode instruction: the request, its category's criteria and the draft."""
    return template.render(instruction=instruction, criteria=criteria_text(criteria), draft=draft)


def run_revise_shard(ctx, rows: pa.Table) -> pa.Table:
    cfg = ctx.config
    params = GenerationParams.from_dict(cfg["params"])
    model, out_role, round_, modes = cfg["model"]["name"], cfg["out_role"], int(cfg.get("round", 0)), cfg["modes"]
    dataset_id = cfg["revision_dataset_id"]
    revise, task = prompts.load(REVISE_TEMPLATE), prompts.load(TASK_TEMPLATE)
    items = rows.to_pylist()
    for it in items:
        it["criteria"] = json.loads(it["criteria"])
    conversations = [[{"role": "user", "content": revise.render(instruction=it["instruction"], category=it["category"],
                                                                criteria=criteria_text(it["criteria"]),
                                                                draft=it["draft"])}] for it in items]
    generations = ctx.backend.generate(conversations, params)
    out: dict[str, list] = {name: [] for name in SHARD_SCHEMA.names}
    params_json = json.dumps(params.to_dict())
    seen: set[str] = set()
    reasons: Counter = Counter()

    def emit(row: dict) -> None:
        for name in SHARD_SCHEMA.names:
            out[name].append(row.get(name))

    for it, samples in zip(items, generations, strict=True):
        g = samples[0]
        text = (g.text or "").strip()
        rid = content_id(it["instruction_id"], out_role, model, text)
        dropped = drop_reason(it["draft"], text, g.finish_reason, g.ok, cfg.get("keep_cut_off", False)) \
            or ("duplicate" if rid in seen else None)
        reasons[dropped or "kept"] += 1
        if dropped is None:
            seen.add(rid)
        lineage = {"draft_response_id": it["response_id"], "category_id": it["category_id"],
                   "category": it["category"], "criteria_hash": criteria_hash(it["criteria"]), "job": ctx.job_dir.name,
                   "finish_reason": g.finish_reason, "n_tokens": g.n_tokens, "error": g.error}
        common = {"model": model, "round": round_, "method": "revise", "dropped": dropped,
                  "finish_reason": g.finish_reason, "n_tokens": g.n_tokens}
        if "direct" in modes:
            emit(common | {"output": "responses", "id": rid, "instruction_id": it["instruction_id"], "role": out_role,
                           "text": text, "n_chars": len(text), "params": params_json, "parent_id": it["response_id"],
                           "template_hash": revise.hash, "meta": json.dumps(lineage | {"mode": "direct"})})
        if "revision" in modes:
            prompt = revision_task(task, it["instruction"], it["criteria"], it["draft"])
            iid = instruction_id(dataset_id, prompt)
            meta = json.dumps(lineage | {"mode": "revision", "source_instruction_id": it["instruction_id"],
                                         "template_hash": task.hash})
            emit(common | {"output": "instructions", "id": iid, "dataset_id": dataset_id, "text": prompt, "input": "",
                           "task": None, "n_chars": len(prompt), "parent_id": it["instruction_id"], "meta": meta})
            emit(common | {"output": "responses", "id": content_id(iid, out_role, model, text), "instruction_id": iid,
                           "role": out_role, "text": text, "n_chars": len(text), "params": params_json,
                           "parent_id": it["response_id"], "template_hash": revise.hash, "meta": meta})
    summary = ", ".join(f"{reasons[r]} {r}" for r in DROP_REASONS if reasons[r])
    ctx.log(f"revise: {reasons['kept']} revisions of {len(items)} drafts kept"
            + (f"; dropped {summary}" if summary else ""))
    return pa.table(out, schema=SHARD_SCHEMA)


def _revise_config(p: ReviseParams) -> dict:
    return {"params": p.generation().to_dict(), "scheme": p.scheme, "role": p.role, "out_role": p.out_role,
            "modes": list(p.modes), "revision_dataset": p.revision_dataset, "keep_cut_off": p.keep_cut_off,
            "revision_dataset_id": content_id("dataset", p.revision_dataset), "template": REVISE_TEMPLATE}


def drop_counts(job_dir: Path) -> dict:
    """{kept, dropped: {reason: n}} of a revise job, from its shards (drops are never ingested).
    One count per draft: its direct-mode row (or its revision-mode row when only that was written)."""
    from core import jobs

    kept, dropped = 0, Counter()
    for path in jobs.finished_shards(Path(job_dir)):
        shard = jobs.read_shard(path)
        for row in shard.select(["output", "dropped", "meta"]).to_pylist():
            meta = json.loads(row["meta"] or "{}")
            if row["output"] != "responses" or (meta.get("mode") == "revision" and "direct" in _modes_of(job_dir)):
                continue
            if row["dropped"] is None:
                kept += 1
            else:
                dropped[row["dropped"]] += 1
    return {"kept": kept, "dropped": dict(dropped)}


def _modes_of(job_dir: Path) -> list[str]:
    from core import jobs

    return (jobs.read_json(Path(job_dir) / jobs.CONFIG) or {}).get("modes") or list(MODES)


REVISE_STAGE = stages.register(Stage(
    name="revise", help="CITING: the teacher revises answers against their category's criteria (direct and "
                        "revision-mode training data)",
    params=ReviseParams, select=select_drafts, worker="core.revise:run_revise_shard",
    outputs=(Output("instructions", INSTRUCTION_COLUMNS, _kept), Output("responses", REVISION_RESPONSE_COLUMNS, _kept)),
    config=_revise_config,
))
