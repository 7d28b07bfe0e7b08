"""Generate stage: a model answers a selection of instructions, n samples each, as a job.

Input rows (the job's snapshot): instruction_id and the conversation to answer (JSON).
Output rows: responses with lineage (model, parameters, round, sample) plus the finish reason
and token count; only finished answers (stop or length) become responses when ingested.
"""

from __future__ import annotations

import json

import pyarrow as pa

from core.ids import content_id
from core.llm.base import GenerationParams

OUTPUT_COLUMNS = ("id", "instruction_id", "role", "text", "n_chars", "model", "round", "method", "params",
                  "meta", "finish_reason", "n_tokens")


def conversation_for(instruction: str, input_text: str | None, system: str | None,
                     history: str | list | None) -> list[dict]:
    """The chat a model sees for an instruction: system prompt, earlier turns, the instruction
    with its input appended (as export's `messages` format does)."""
    turns = [{"role": "system", "content": system}] if system else []
    if history:
        turns.extend(json.loads(history) if isinstance(history, str) else history)
    content = f"{instruction}\n\n{input_text}" if input_text else instruction
    return turns + [{"role": "user", "content": content}]


def input_table(rows: list[dict]) -> pa.Table:
    """Snapshot rows from instruction rows (id, text, input, system, history)."""
    return pa.table({
        "instruction_id": [r["id"] for r in rows],
        "conversation": [json.dumps(conversation_for(r["text"], r.get("input"), r.get("system"),
                                                     r.get("history"))) for r in rows],
    })


def run_shard(ctx, rows: pa.Table) -> pa.Table:
    config = ctx.config
    params = GenerationParams.from_dict(config["params"])
    model, role, round_ = config["model"]["name"], config["role"], int(config.get("round", 0))
    conversations = [json.loads(c) for c in rows["conversation"].to_pylist()]
    generations = ctx.backend.generate(conversations, params)
    out: dict[str, list] = {c: [] for c in OUTPUT_COLUMNS}
    seen: set[str] = set()
    params_json = json.dumps(params.to_dict())
    for instruction_id, samples in zip(rows["instruction_id"].to_pylist(), generations, strict=True):
        for k, g in enumerate(samples):
            rid = content_id(instruction_id, role, model, g.text)
            if rid in seen:  # identical samples (e.g. greedy with n > 1) are one response
                continue
            seen.add(rid)
            meta = {"sample": k, "finish_reason": g.finish_reason, "n_tokens": g.n_tokens,
                    "n_prompt_tokens": g.n_prompt_tokens, "mean_logprob": g.mean_logprob, "error": g.error}
            for key, value in (("id", rid), ("instruction_id", instruction_id), ("role", role), ("text", g.text),
                               ("n_chars", len(g.text)), ("model", model), ("round", round_),
                               ("method", config.get("method", "generate")), ("params", params_json),
                               ("meta", json.dumps(meta)), ("finish_reason", g.finish_reason),
                               ("n_tokens", g.n_tokens)):
                out[key].append(value)
    failed = sum(1 for f in out["finish_reason"] if f not in ("stop", "length"))
    if failed:
        ctx.log(f"{failed} of {len(out['id'])} samples did not finish (too_long or error)")
    return pa.table(out)
