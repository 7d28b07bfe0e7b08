"""Humpback's instruction backtranslation (Li et al. 2023, arXiv 2308.06259): the data of the
backward model, the self-augment stage, and self-curation's keep step.

**Backward data** (§2.1): a seed pair (instruction x, response y) reversed: the response becomes
the prompt and the instruction the answer, so a model trained on it learns p(x | y). The reversed
pairs are rows of their own dataset (role BACKWARD_ROLE, parent_id = the seed instruction), which an
ordinary sft snapshot freezes for an ordinary training job.

**Self-augment** (§2.2), the `backtranslate` stage: the backward model reads each corpus document
(the whole text is the prompt, as in training) and writes the instruction it would answer. A
candidate is the pair (generated instruction → the document as the response): an instruction in
the candidates dataset (method 'backtranslate', parent_id = the document, model = the backward
model, round, meta {document title, job, sampling}) and one response of role CANDIDATE_ROLE whose
text is the document. Sampling T = 0.7, top-p 0.9 by default (the paper's). Degenerate outputs are
dropped with a reason (DROP_REASONS), counted in the job's log and kept, raw, in its shards
(`drop_counts`).

**Self-curate** (§2.3): the curator rates each candidate with the 5-point rubric (`pointwise_5`, by
the ordinary judge stage, probability mode by default); `keep_candidates` copies the candidates
scoring ≥ k into a round's kept dataset, the set the forward model trains on beside the seed.
Why a copy: a snapshot spec's judge rule applies to every sample, and the seed pairs have no
verdict, so one spec cannot say "seed pairs, plus candidates scoring ≥ k". The kept dataset makes
the curation one plain spec (seed + kept, a system tag per dataset) and records, per round, which
candidates that round's curator kept (lineage: parent_id = the candidate instruction, meta score).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core import jobs, stages
from core.expand import dataset_names, parse_instruction
from core.ids import content_id
from core.llm.base import GenerationParams
from core.stages import Output, Stage, check_role, param

BACKWARD_ROLE = "backward"      # the reversed pairs' answers (the seed instructions)
CANDIDATE_ROLE = "document"     # a candidate's response: the corpus document itself
KEPT_METHOD = "humpback_kept"
DROP_REASONS = ("call failed", "empty", "cut off", "too short", "repetitive", "copies the document", "duplicate")
MIN_WORDS = 3

SHARD_SCHEMA = pa.schema([
    ("output", pa.string()), ("id", pa.string()), ("dataset_id", pa.string()), ("instruction_id", pa.string()),
    ("role", pa.string()), ("text", pa.string()), ("input", pa.string()), ("task", pa.string()),
    ("n_chars", pa.int32()), ("round", pa.int32()), ("method", pa.string()), ("model", pa.string()),
    ("parent_id", pa.string()), ("params", pa.string()), ("meta", pa.string()),
    # Not stored in the catalog: the raw output, why it was dropped (NULL: kept), tokens.
    ("raw", pa.string()), ("dropped", pa.string()), ("n_tokens", pa.int64()),
])
INSTRUCTION_COLUMNS = ("id", "dataset_id", "text", "input", "task", "n_chars", "round", "method", "model",
                       "parent_id", "meta")
RESPONSE_COLUMNS = ("id", "instruction_id", "role", "text", "n_chars", "model", "round", "method", "parent_id",
                    "params", "meta")


# --------------------------------------------------------------------------------------------
# Pure parts: ids, degenerate outputs
# --------------------------------------------------------------------------------------------


def candidate_id(dataset_id: str, document_id: str, model: str, text: str) -> str:
    """A candidate instruction's id: the same text written for two documents is two candidates."""
    return content_id("backtranslate", dataset_id, document_id, model, text)


def response_id(instruction_id: str, role: str, text: str) -> str:
    return content_id(instruction_id, role, "", text)  # no model wrote it


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def is_repetitive(text: str) -> bool:
    """A loop, the usual failure of a small sampled model: few distinct words among many, or one
    three-word phrase over and over."""
    words = _words(text)
    if len(words) < 8:
        return False
    if len(set(words)) / len(words) < 0.4:
        return True
    trigrams = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)]
    return max(trigrams.count(t) for t in set(trigrams)) > 3


def copies_document(instruction: str, document: str) -> bool:
    """The backward model echoed the document instead of asking for it: the instruction (40+
    characters) is a stretch of the document's text."""
    a, b = " ".join(_words(instruction)), " ".join(_words(document))
    return len(a) >= 40 and a in b


_SENTENCE_END = re.compile(r"[.?!…][\"'”’)\]]*(?=\s|$)")


def complete_sentences(text: str) -> str | None:
    """A text cut off at max_tokens, up to its last finished sentence; None when none finished.
    A generated instruction is usually one or two sentences: what the model finished is kept."""
    ends = list(_SENTENCE_END.finditer(text or ""))
    return text[: ends[-1].end()].strip() if ends else None


def drop_reason(ok: bool, instruction: str | None, document: str, finish_reason: str | None) -> str | None:
    """Why a generated instruction is not a candidate (one of DROP_REASONS), or None."""
    if not ok:
        return "call failed"
    if not instruction:
        return "empty"
    if finish_reason == "length" and not complete_sentences(instruction):  # cut before one sentence ended
        return "cut off"
    if len(_words(instruction)) < MIN_WORDS:
        return "too short"
    if is_repetitive(instruction):
        return "repetitive"
    if copies_document(instruction, document):
        return "copies the document"
    return None


def reversed_pair_rows(pairs: list[dict], dataset_id: str) -> tuple[pa.Table, pa.Table]:
    """The backward model's training rows from seed pairs: instructions (the seed response's text,
    parent_id = the seed instruction) and responses of BACKWARD_ROLE (the seed instruction, its
    input appended as the model saw it)."""
    ins: dict[str, list] = {c: [] for c in INSTRUCTION_COLUMNS}
    res: dict[str, list] = {c: [] for c in RESPONSE_COLUMNS}
    seen = set()
    for p in pairs:
        prompt, answer = p["response"], p["instruction"] + (f"\n\n{p['input']}" if p.get("input") else "")
        iid = content_id(dataset_id, "", "", prompt, "")  # the importer's id for this text as a prompt
        if iid in seen or not prompt.strip() or not answer.strip():
            continue
        seen.add(iid)
        meta = json.dumps({"seed_instruction_id": p["instruction_id"], "seed_response_id": p["response_id"]})
        for k, v in dict(id=iid, dataset_id=dataset_id, text=prompt, input="", task=None, n_chars=len(prompt),
                         round=0, method="humpback_backward", model=None, parent_id=p["instruction_id"],
                         meta=meta).items():
            ins[k].append(v)
        for k, v in dict(id=response_id(iid, BACKWARD_ROLE, answer), instruction_id=iid, role=BACKWARD_ROLE,
                         text=answer, n_chars=len(answer), model=None, round=0, method="humpback_backward",
                         parent_id=p["response_id"], params=None, meta=meta).items():
            res[k].append(v)
    return _table(ins, INSTRUCTION_COLUMNS), _table(res, RESPONSE_COLUMNS)


def _table(columns: dict[str, list], names: tuple[str, ...]) -> pa.Table:
    return pa.table({n: pa.array(columns[n], SHARD_SCHEMA.field(n).type) for n in names})


# --------------------------------------------------------------------------------------------
# Store-side steps (run by the round, or by a user through the workspace)
# --------------------------------------------------------------------------------------------


def write_backward_data(ws, seed_datasets: list[str], seed_role: str, dataset: str) -> dict:
    """The reversed seed pairs into `dataset` (idempotent); returns counts."""
    pairs = ws.store.seed_pairs(seed_datasets, seed_role)
    if not pairs:
        raise ValueError(f"humpback.seed: datasets {', '.join(seed_datasets)} hold no pair with a {seed_role!r} "
                         "response to reverse")
    dataset_id = content_id("dataset", dataset)
    instructions, responses = reversed_pair_rows(pairs, dataset_id)
    with ws.store.transaction() as cur:
        ws.store.ensure_dataset(cur, dataset_id, dataset, "pairs")
        new = ws.store.insert_batch(cur, "instructions", instructions)
        ws.store.insert_batch(cur, "responses", responses)
    return {"dataset": dataset, "pairs": instructions.num_rows, "new": new}


def keep_candidates(ws, candidates: list[str], curator: str, rubric: str, mode: str | None, k: float,
                    kept_dataset: str, round: int) -> dict:
    """Copy the candidates the curator scored ≥ k into `kept_dataset` (idempotent): an instruction
    per kept candidate (parent_id = the candidate instruction) with its document as a response of
    CANDIDATE_ROLE. Returns the curation's counts (candidates, judged, kept, mean score …)."""
    counts = ws.store.curation_counts(candidates, CANDIDATE_ROLE, curator, rubric, mode, k)
    rows = ws.store.kept_candidates(candidates, CANDIDATE_ROLE, curator, rubric, mode, k)
    dataset_id = content_id("dataset", kept_dataset)
    ins: dict[str, list] = {c: [] for c in INSTRUCTION_COLUMNS}
    res: dict[str, list] = {c: [] for c in RESPONSE_COLUMNS}
    for row in rows:
        iid = content_id(KEPT_METHOD, dataset_id, row["instruction_id"])
        meta = json.dumps({"candidate_id": row["instruction_id"], "candidate_response_id": row["response_id"],
                           "document_id": row["document_id"], "curator": curator, "rubric": rubric, "mode": mode,
                           "score": row["score"], "k": k})
        for key, v in dict(id=iid, dataset_id=dataset_id, text=row["instruction"], input="", task=None,
                           n_chars=len(row["instruction"]), round=round, method=KEPT_METHOD,
                           model=row["backward_model"], parent_id=row["instruction_id"], meta=meta).items():
            ins[key].append(v)
        for key, v in dict(id=response_id(iid, CANDIDATE_ROLE, row["response"]), instruction_id=iid,
                           role=CANDIDATE_ROLE, text=row["response"], n_chars=len(row["response"]), model=None,
                           round=round, method=KEPT_METHOD, parent_id=row["response_id"], params=None,
                           meta=meta).items():
            res[key].append(v)
    with ws.store.transaction() as cur:
        ws.store.ensure_dataset(cur, dataset_id, kept_dataset, "pairs")
        ws.store.insert_batch(cur, "instructions", _table(ins, INSTRUCTION_COLUMNS))
        ws.store.insert_batch(cur, "responses", _table(res, RESPONSE_COLUMNS))
    counts = {key: (float(v) if isinstance(v, float) else v) for key, v in counts.items()}
    return counts | {"k": k, "kept_dataset": kept_dataset, "kept_share": counts["kept"] / counts["candidates"]
                     if counts["candidates"] else None}


def drop_counts(job_dir: Path) -> dict[str, int]:
    """Why the backtranslate job's outputs were dropped: reason → count, read from its shards
    (the dropped rows stay there, raw, and never reach the catalog)."""
    out: dict[str, int] = {}
    for path in jobs.finished_shards(Path(job_dir)):
        for reason in jobs.read_shard(path).column("dropped").to_pylist():
            if reason:
                out[reason] = out.get(reason, 0) + 1
    return out


# --------------------------------------------------------------------------------------------
# The stage: params, input selection, worker
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktranslateParams:
    model: Any = param(help="the backward model (trained on reversed seed pairs: response → instruction)",
                       short="-m", kind="model", label="Backward model")
    out_dataset: str = param(help="dataset the candidates go to (created if absent)", kind="text",
                             label="Candidates dataset")
    role: str = param(CANDIDATE_ROLE, "role of a candidate's response (the document)", kind="role",
                      label="Response role")
    temperature: float = param(0.7, "sampling temperature (Humpback: 0.7)", kind="float", minimum=0.0, maximum=5.0)
    top_p: float = param(0.9, "nucleus sampling mass (Humpback: 0.9)", kind="float", minimum=0.0, maximum=1.0,
                         label="Top-p")
    max_tokens: int = param(96, "tokens per instruction at most", kind="int", minimum=1, maximum=4096)
    seed: int = param(0, "seed for reproducible sampling", kind="int", minimum=0)

    def __post_init__(self) -> None:
        from core.workspace import check_dataset_name

        if not (isinstance(self.model, (str, dict)) and self.model):
            raise ValueError(f"model must be a model name or spec, not {self.model!r}")
        if not isinstance(self.out_dataset, str):
            raise ValueError(f"out_dataset must be a dataset name, not {self.out_dataset!r}")
        object.__setattr__(self, "out_dataset", check_dataset_name(self.out_dataset))
        check_role(self.role, "response role")
        self.generation()  # validates temperature, top_p, max_tokens and seed, naming a bad value

    def generation(self) -> GenerationParams:
        return GenerationParams(temperature=float(self.temperature), top_p=float(self.top_p),
                                max_tokens=int(self.max_tokens), seed=self.seed, n=1)


def _model_name(model) -> str:
    return model["name"] if isinstance(model, dict) else model


def select_documents(ws, p: BacktranslateParams, selection, limit: int) -> pa.Table:
    corpus = dataset_names(list(getattr(selection, "datasets", None) or []), "corpus datasets")
    if not corpus:
        raise ValueError("choose the corpus dataset(s) whose documents to backtranslate (--dataset)")
    dataset_id = content_id("dataset", p.out_dataset)
    with ws.store.transaction() as cur:  # ingest inserts rows, never datasets: the dataset exists first
        ws.store.ensure_dataset(cur, dataset_id, p.out_dataset, "pairs")
    model = ws.model(p.model).name if isinstance(p.model, str) else _model_name(p.model)
    rows = ws.store.documents_to_backtranslate(corpus, dataset_id, model, limit)
    if not rows:
        raise ValueError(f"datasets {', '.join(corpus)} hold no document without a candidate of {model} in "
                         f"{p.out_dataset}; nothing to backtranslate (import a corpus on the Import page)")
    return pa.table({
        "document_id": pa.array([r["id"] for r in rows], pa.string()),
        "text": pa.array([r["text"] for r in rows], pa.string()),
        "title": pa.array([r["title"] for r in rows], pa.string()),
    })


def run_shard(ctx, rows: pa.Table) -> pa.Table:
    cfg = ctx.config
    params = GenerationParams.from_dict(cfg["params"])
    model, round_, role, dataset_id = cfg["model"]["name"], int(cfg.get("round", 0)), cfg["role"], cfg["out_dataset_id"]
    docs = rows.to_pylist()
    # The prompt is the document alone, as the backward model was trained (response → instruction).
    generations = ctx.backend.generate([[{"role": "user", "content": d["text"]}] for d in docs], params)
    out: dict[str, list] = {name: [] for name in SHARD_SCHEMA.names}
    params_json = json.dumps(params.to_dict())
    seen: set[str] = set()

    def add(**row) -> None:
        for name in SHARD_SCHEMA.names:
            out[name].append(row.get(name))

    for doc, samples in zip(docs, generations, strict=True):
        g = samples[0]
        text = parse_instruction(g.text) if g.ok else None
        if text and g.finish_reason == "length":
            text = complete_sentences(text) or text  # drop_reason drops it when no sentence finished
        dropped = drop_reason(g.ok, text, doc["text"], g.finish_reason)
        iid = candidate_id(dataset_id, doc["document_id"], model, text) if text else None
        if dropped is None and iid in seen:
            dropped = "duplicate"
        meta = json.dumps({"document_id": doc["document_id"], "title": doc["title"], "job": ctx.job_dir.name,
                           "params": params.to_dict(), "finish_reason": g.finish_reason, "error": g.error})
        add(output="instructions", id=iid if dropped is None else None, dataset_id=dataset_id, text=text or "",
            input="", n_chars=len(text or ""), round=round_, method="backtranslate", model=model,
            parent_id=doc["document_id"], meta=meta, raw=g.text, dropped=dropped, n_tokens=g.n_tokens)
        if dropped is None:
            seen.add(iid)
            add(output="responses", id=response_id(iid, role, doc["text"]), instruction_id=iid, role=role,
                text=doc["text"], n_chars=len(doc["text"]), round=round_, method="backtranslate", model=None,
                parent_id=doc["document_id"], params=params_json, meta=meta, n_tokens=0)
    reasons = [d for d in out["dropped"] if d]
    summary = ", ".join(f"{reasons.count(r)} {r}" for r in DROP_REASONS if r in reasons)
    ctx.log(f"backtranslate: {len(seen)} candidates from {len(docs)} documents" + (f"; dropped {summary}" if summary else ""))
    return pa.table(out, schema=SHARD_SCHEMA)


def _kept(shard: pa.Table) -> pa.Array:
    return pc.is_null(shard["dropped"])


def _config(p: BacktranslateParams) -> dict:
    return {"params": p.generation().to_dict(), "role": p.role, "out_dataset": p.out_dataset,
            "out_dataset_id": content_id("dataset", p.out_dataset)}


BACKTRANSLATE_STAGE = stages.register(Stage(
    name="backtranslate", help="Humpback self-augment: the backward model writes an instruction for each corpus "
                               "document (candidates: instruction → the document as the answer)",
    params=BacktranslateParams, select=select_documents, worker="core.backtranslate:run_shard",
    outputs=(Output("instructions", INSTRUCTION_COLUMNS, _kept), Output("responses", RESPONSE_COLUMNS, _kept)),
    config=_config,
))
