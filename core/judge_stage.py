"""Judge stage: a judge model scores responses, as a job.

Pointwise rubrics: input rows response_id, instruction, input, response; one verdict each.
Pairwise: input rows a_id, b_id, instruction, input, answer_a, answer_b; each pair is asked in
both orders (DESIGN.md §6) so position bias shows as a flip. Listwise: input rows instruction,
input, response_ids, answers; the answers are shown in a seeded random order and the parsed
ranking is mapped back. Output rows: the `judgments`
table's columns (the raw verdict always kept; an unparsable verdict has score NULL and a parse
error) plus the judge's token count. Prompts and parsers: core.prompts, core.parsers, core.judge.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from core import judge
from core.llm.base import GenerationParams

# Judges decode greedily by default: a verdict should not depend on a sampling draw.
DEFAULT_JUDGE_PARAMS = {"temperature": 0.0, "max_tokens": 256}


def input_table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "response_id": [r["response_id"] for r in rows],
        "instruction": [r["instruction"] for r in rows],
        "input": [r.get("input") or "" for r in rows],
        "response": [r["response"] for r in rows],
    })


def pair_input_table(rows: list[dict]) -> pa.Table:
    return pa.table({key: [r.get(key) or "" for r in rows]
                     for key in ("a_id", "b_id", "instruction", "input", "answer_a", "answer_b")})


def run_shard(ctx, rows: pa.Table) -> pa.Table:
    config = ctx.config
    rubric = judge.get_rubric(config["rubric"])
    if rubric.kind == "pairwise":
        return run_pairwise_shard(ctx, rows, rubric)
    if rubric.kind == "listwise":
        return run_listwise_shard(ctx, rows, rubric)
    if rubric.kind != "pointwise":
        raise ValueError(f"the judge job runs pointwise and pairwise rubrics; {rubric.name!r} is {rubric.kind}")
    params = GenerationParams.from_dict(config["params"])
    items = rows.to_pylist()
    template_hash = rubric.template_hash
    conversations = judge.build_pointwise_requests(items, rubric)
    generations = ctx.backend.generate(conversations, params)
    raws = [samples[0].text if samples[0].ok else "" for samples in generations]
    table = judge.judgments_table(judge.judgment_rows(
        rubric, config["model"]["name"], [it["response_id"] for it in items], raws,
        round=int(config.get("round", 0)), params=params.to_dict(), template_hash=template_hash))
    failed = sum(1 for samples in generations if not samples[0].ok)
    if failed:
        ctx.log(f"{failed} of {len(items)} judge calls did not finish: {json.dumps(generations[0][0].error)}")
    # Token count per judgment row: the judge's output tokens (aspect rows repeat the call's).
    by_target = {it["response_id"]: samples[0].n_tokens for it, samples in zip(items, generations, strict=True)}
    return table.append_column("n_tokens", pa.array([by_target.get(t, 0) for t in table["target_id"].to_pylist()],
                                                     pa.int64()))


def run_pairwise_shard(ctx, rows: pa.Table, rubric) -> pa.Table:
    config = ctx.config
    params = GenerationParams.from_dict(config["params"])
    pairs = rows.to_pylist()
    # Which order is asked first is random but reproducible: seeded by the job and shard.
    seed = f"{config.get('created')}:{pairs[0]['a_id']}"
    requests = judge.build_pairwise_requests(pairs, rng=judge_seed(seed), rubric=rubric)
    generations = ctx.backend.generate([r.conversation for r in requests], params)
    raws = [samples[0].text if samples[0].ok else "" for samples in generations]
    table = judge.judgments_table(judge.pairwise_rows(
        config["model"]["name"], [(p["a_id"], p["b_id"]) for p in pairs], requests, raws, rubric=rubric,
        round=int(config.get("round", 0)), params=params.to_dict(), template_hash=rubric.template_hash))
    tokens = sum(samples[0].n_tokens for samples in generations)
    return table.append_column("n_tokens", pa.array([tokens // max(table.num_rows, 1)] * table.num_rows, pa.int64()))


def list_input_table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "instruction": [r["instruction"] for r in rows],
        "input": [r.get("input") or "" for r in rows],
        "response_ids": pa.array([list(r["response_ids"]) for r in rows], pa.list_(pa.string())),
        "answers": pa.array([list(r["answers"]) for r in rows], pa.list_(pa.string())),
    })


def run_listwise_shard(ctx, rows: pa.Table, rubric) -> pa.Table:
    config = ctx.config
    params = GenerationParams.from_dict(config["params"])
    items = rows.to_pylist()
    requests = [judge.build_listwise_request(it["instruction"], it["answers"],
                                             judge_seed(f"{config.get('created')}:{it['response_ids'][0]}"),
                                             input=it["input"], rubric=rubric) for it in items]
    generations = ctx.backend.generate([conversation for conversation, _ in requests], params)
    out = []
    for it, (_, permutation), samples in zip(items, requests, generations, strict=True):
        raw = samples[0].text if samples[0].ok else ""
        out += judge.listwise_rows(config["model"]["name"], it["response_ids"], permutation, raw, rubric=rubric,
                                   round=int(config.get("round", 0)), params=params.to_dict(),
                                   template_hash=rubric.template_hash)
    table = judge.judgments_table(out)
    tokens = sum(samples[0].n_tokens for samples in generations)
    return table.append_column("n_tokens", pa.array([tokens // max(table.num_rows, 1)] * table.num_rows, pa.int64()))


def judge_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
