"""Judge stage: a judge model scores responses, as a job.

Pointwise rubrics: input rows response_id, instruction, input, response; one verdict each.
Pairwise: input rows a_id, b_id, instruction, input, answer_a, answer_b; each pair is asked in
both orders (DESIGN.md §6) so position bias shows as a flip. Listwise: input rows instruction,
input, response_ids, answers; the answers are shown in a seeded random order and the parsed
ranking is mapped back. Output rows: the `judgments` table's columns plus the judge's token count.

The scoring mode comes from `config["mode"]` ('auto', 'probability' or 'generate'; missing means
auto): auto is probability wherever the rubric has it and the loaded backend gives label
log-probabilities (hf, vllm), else generate (listwise is generate-only; an aspect rubric runs
probability only when asked by name: one call per aspect, no rationales).
- generate: the judge writes reasoning and a score line; the raw text is kept, an unparsable one
  has score NULL and a parse error.
- probability: one forward pass per prompt reads the label distribution (core.judge).
A failed call (prompt too long, backend error, no label log-probabilities) is a row with a
call_error, never a parse error, and is logged. Prompts and parsers: core.prompts, core.parsers,
core.judge.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from core import judge
from core.llm.base import ChoiceLogprobs, Generation, GenerationParams

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


def list_input_table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "instruction": [r["instruction"] for r in rows],
        "input": [r.get("input") or "" for r in rows],
        "response_ids": pa.array([list(r["response_ids"]) for r in rows], pa.list_(pa.string())),
        "answers": pa.array([list(r["answers"]) for r in rows], pa.list_(pa.string())),
    })


def judge_mode(config: dict, rubric: judge.Rubric, backend) -> str:
    """The mode this job runs: config's choice, 'auto' resolved against the loaded backend."""
    return judge.default_mode(rubric, bool(getattr(backend, "supports_choice_logprobs", False)),
                              config.get("mode") or "auto")


def run_shard(ctx, rows: pa.Table) -> pa.Table:
    config = ctx.config
    rubric = judge.get_rubric(config["rubric"])
    mode = judge_mode(config, rubric, ctx.backend)
    if rubric.kind == "pairwise":
        return run_pairwise_shard(ctx, rows, rubric, mode)
    if rubric.kind == "listwise":
        return run_listwise_shard(ctx, rows, rubric)
    if rubric.kind != "pointwise":
        raise ValueError(f"the judge job runs pointwise, pairwise and listwise rubrics; {rubric.name!r} is {rubric.kind}")
    items = rows.to_pylist()
    target_ids = [it["response_id"] for it in items]
    common = {"round": int(config.get("round", 0)), "template_hash": rubric.template_hash_for(mode)}
    if mode == "probability" and rubric.aspects:  # one call per aspect, then the mean row
        results = label_logprobs(ctx, judge.build_aspect_probability_requests(items, rubric), rubric)
        table = judge.judgments_table(judge.aspect_probability_rows(rubric, config["model"]["name"], target_ids,
                                                                    results, **common))
        _log_call_errors(ctx, [judge.call_error_of(r) for r in results])
        return _with_tokens(table, [1] * table.num_rows)
    if mode == "probability":
        conversations = judge.build_pointwise_requests(items, rubric, mode="probability")
        results = label_logprobs(ctx, conversations, rubric)
        table = judge.judgments_table(judge.probability_rows(rubric, config["model"]["name"], target_ids, results,
                                                             **common))
        _log_call_errors(ctx, [judge.call_error_of(r) for r in results])
        return _with_tokens(table, [1] * table.num_rows)  # one label position read per verdict
    params = GenerationParams.from_dict(config["params"])
    conversations = judge.build_pointwise_requests(items, rubric)
    generations = [samples[0] for samples in ctx.backend.generate(conversations, params)]
    errors = [generation_error(g) for g in generations]
    table = judge.judgments_table(judge.judgment_rows(
        rubric, config["model"]["name"], target_ids, [g.text if g.ok else "" for g in generations],
        params=params.to_dict(), call_errors=errors, **common))
    _log_call_errors(ctx, errors)
    # Token count per judgment row: the judge's output tokens (aspect rows repeat the call's).
    by_target = {t: g.n_tokens for t, g in zip(target_ids, generations, strict=True)}
    return _with_tokens(table, [by_target.get(t, 0) for t in table["target_id"].to_pylist()])


def run_pairwise_shard(ctx, rows: pa.Table, rubric, mode: str = "generate") -> pa.Table:
    config = ctx.config
    pairs = rows.to_pylist()
    pair_ids = [(p["a_id"], p["b_id"]) for p in pairs]
    # Which order is asked first is random but reproducible: seeded by the job and shard.
    seed = f"{config.get('created')}:{pairs[0]['a_id']}"
    requests = judge.build_pairwise_requests(pairs, rng=judge_seed(seed), rubric=rubric, mode=mode)
    common = {"rubric": rubric, "round": int(config.get("round", 0)), "template_hash": rubric.template_hash_for(mode)}
    conversations = [r.conversation for r in requests]
    if mode == "probability":
        results = label_logprobs(ctx, conversations, rubric)
        table = judge.judgments_table(judge.pairwise_probability_rows(config["model"]["name"], pair_ids, requests,
                                                                      results, **common))
        _log_call_errors(ctx, [judge.call_error_of(r) for r in results])
        return _with_tokens(table, [1] * table.num_rows)
    params = GenerationParams.from_dict(config["params"])
    generations = [samples[0] for samples in ctx.backend.generate(conversations, params)]
    errors = [generation_error(g) for g in generations]
    table = judge.judgments_table(judge.pairwise_rows(
        config["model"]["name"], pair_ids, requests, [g.text if g.ok else "" for g in generations],
        params=params.to_dict(), call_errors=errors, **common))
    _log_call_errors(ctx, errors)
    return _with_tokens(table, _spread(sum(g.n_tokens for g in generations), table.num_rows))


def run_listwise_shard(ctx, rows: pa.Table, rubric) -> pa.Table:
    config = ctx.config
    params = GenerationParams.from_dict(config["params"])
    items = rows.to_pylist()
    requests = [judge.build_listwise_request(it["instruction"], it["answers"],
                                             judge_seed(f"{config.get('created')}:{it['response_ids'][0]}"),
                                             input=it["input"], rubric=rubric) for it in items]
    generations = [samples[0] for samples in ctx.backend.generate([c for c, _ in requests], params)]
    errors = [generation_error(g) for g in generations]
    out = []
    for it, (_, permutation), g, error in zip(items, requests, generations, errors, strict=True):
        out += judge.listwise_rows(config["model"]["name"], it["response_ids"], permutation, g.text if g.ok else "",
                                   rubric=rubric, round=int(config.get("round", 0)), params=params.to_dict(),
                                   template_hash=rubric.template_hash, call_error=error)
    _log_call_errors(ctx, errors)
    table = judge.judgments_table(out)
    return _with_tokens(table, _spread(sum(g.n_tokens for g in generations), table.num_rows))


def label_logprobs(ctx, conversations: list, rubric) -> list[ChoiceLogprobs]:
    """The backend's label log-probabilities; a backend without them fails every call of the
    shard with its own explanation (recorded as call errors, the job goes on)."""
    try:
        return ctx.backend.choice_logprobs(conversations, judge.labels_of(rubric), prefill=judge.prefill_of(rubric))
    except NotImplementedError as exc:
        return [ChoiceLogprobs.failed(f"unsupported: {exc}") for _ in conversations]


def generation_error(g: Generation) -> str | None:
    """A generate-mode call that did not finish (too_long, error): the row's call_error."""
    return None if g.ok else f"{g.finish_reason}: {g.error or 'the backend gave no reason'}"


def _log_call_errors(ctx, errors: list[str | None]) -> None:
    failed = [e for e in errors if e is not None]
    if failed:
        ctx.log(f"{len(failed)} of {len(errors)} judge calls failed (call_error, not a parse failure); "
                f"first: {json.dumps(failed[0])}")


def _spread(total: int, n: int) -> list[int]:
    return [total // max(n, 1)] * n


def _with_tokens(table: pa.Table, tokens: list[int]) -> pa.Table:
    return table.append_column("n_tokens", pa.array(tokens, pa.int64()))


def judge_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
