"""Prompts longer than the model's context, counted before a job is submitted (issue 15).

A prompt whose chat-templated tokens plus the tokens reserved for the answer exceed the model's
context length cannot be answered: the backends mark it `too_long` at run time (generate) or
record a call error (judge), after the job has been queued and run. This module counts them
before: the same input rows the job would snapshot (the stage's own `select`), turned into the
same prompts the worker builds (the stage's `prompts` hook in core.stages), counted with the
model's own tokenizer and chat template.

Counting needs the tokenizer only, never the weights: hf and vllm models load theirs from the
model folder (as core.llm.hf does); an OpenAI-compatible server is asked (`/tokenize`) only for
prompts that might not fit by a byte bound; a python model has no context to exceed.

    check = check_job(ws, "generate", {"model": "smollm2-135m-instruct", ...}, selection, limit)
    check.sentence()          # "3 of 120 prompts are longer than ... (e.g. instruction 9f2c…)"
    without_too_long(selection, check)   # the selection minus them (generate jobs)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from core import stages
from core.selection import ExploreFilter

# Tokens a probability judge reads after its prompt: the pre-filled "Rating:" and the label.
PROBABILITY_ANSWER_TOKENS = 8
DEFAULT_CONTEXT = 2048  # what core.llm.hf assumes when neither the spec nor config.json says
EXAMPLES = 5
MAX_IDS_SHOWN = 100  # as_dict (CLI, owner answers) names at most these many; `too_long` counts all


@dataclass(frozen=True)
class ContextCheck:
    """How many of a job's prompts do not fit the model's context with the answer's tokens."""

    stage: str
    model: str
    context_length: int | None
    answer_tokens: int  # tokens reserved after the prompt (max_tokens, or a label's)
    checked: int  # prompts counted
    id_kind: str  # what the ids name: instruction, response, pair or list
    too_long_ids: tuple[str, ...] = ()
    kept_ids: tuple[str, ...] = ()  # the checked ids that fit, in input order
    longest_prompt: int = 0
    unavailable: str | None = None  # why nothing could be counted (no tokenizer, server down, …)

    @property
    def too_long(self) -> int:
        return len(self.too_long_ids)

    @property
    def examples(self) -> list[str]:
        return list(self.too_long_ids[:EXAMPLES])

    def sentence(self) -> str:
        if self.unavailable:
            return f"Prompt lengths were not checked against {self.model}'s context: {self.unavailable}."
        if not self.too_long:
            return (f"All {self.checked} prompts fit {self.model}'s context of {self.context_length} tokens with "
                    f"{self.answer_tokens} tokens for the answer (the longest is {self.longest_prompt}).")
        return (f"{self.too_long} of {self.checked} prompts are longer than {self.model}'s context of "
                f"{self.context_length} tokens once {self.answer_tokens} tokens are kept for the answer "
                f"(e.g. {self.id_kind} {self.too_long_ids[0]}; the longest prompt has {self.longest_prompt} "
                "tokens): they would be marked too long and not answered.")

    def as_dict(self) -> dict:
        """For the CLI's --json and the owner's answer: the ids that fit are a count, the others
        the first MAX_IDS_SHOWN."""
        out = asdict(self) | {"too_long": self.too_long, "sentence": self.sentence()}
        out["kept"] = len(out.pop("kept_ids"))
        out["too_long_ids"] = list(self.too_long_ids[:MAX_IDS_SHOWN])
        return out


# --------------------------------------------------------------------------------------------
# Counting tokens without loading a model
# --------------------------------------------------------------------------------------------

Counter = Callable[[list], list[int | None]]  # conversations -> token counts (None: fits for sure)


def _local_counter(spec) -> tuple[Counter, int]:
    """The model folder's tokenizer and chat template, and its context length, as core.llm.hf
    reads them (an adapter folder falls back on its base model's tokenizer and config)."""
    from transformers import AutoTokenizer

    from core.llm.chat import ChatFormat
    from core.llm.hf import adapter_base

    path = spec.local_path()
    base = adapter_base(path)
    tokenizer_dir = base if base is not None and not (path / "tokenizer_config.json").is_file() else path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=spec.trust_remote_code,
                                              local_files_only=True)
    tokenizer.model_max_length = 10**9  # this copy only counts: no "longer than the maximum" warning per prompt
    chat = ChatFormat(tokenizer, spec.chat_template)
    config = json.loads((Path(base or path) / "config.json").read_text(encoding="utf-8"))
    context = int(spec.context_length or config.get("max_position_embeddings") or DEFAULT_CONTEXT)

    def count(conversations: list) -> list[int | None]:
        texts = [chat.prompt_text(c) for c in conversations]
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count, context


def _server_counter(spec, answer_tokens: int) -> tuple[Counter, int | None, Callable[[], None]]:
    """An OpenAI-compatible server's own counts (vLLM's /tokenize), asked only for the prompts
    that a byte bound cannot clear (no tokenizer gives more tokens than bytes)."""
    from core.llm.openai_backend import _upper_bound_tokens
    from core.llm.registry import load_backend

    backend = load_backend(spec)
    context = backend.context_length

    def count(conversations: list) -> list[int | None]:
        if context is None:
            return [None] * len(conversations)
        return [None if _upper_bound_tokens(c) + answer_tokens <= context else backend.count_tokens(c)
                for c in conversations]

    return count, context, backend.close


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def check_job(ws, stage: str, params: dict, selection: ExploreFilter | None = None,
              limit: int = 1_000_000) -> ContextCheck | None:
    """Count the prompts of the job `ws.create_job(stage, params, selection, limit)` would
    create that do not fit the model's context. None for a stage without prompts to check
    (core.stages: no `prompts` hook). Raises what create_job raises on bad params or an empty
    selection, so a form shows the same error either way."""
    from core.llm.registry import ModelSpec

    entry = stages.get(stage)
    if entry.prompts is None:
        return None
    p = entry.make_params(params or {})
    spec = ModelSpec.from_dict(p.model) if isinstance(p.model, dict) else ws.model(p.model)
    rows = entry.select(ws, p, selection or ExploreFilter(), limit)
    ids, conversations, answer_tokens, id_kind = entry.prompts(p, rows, spec.backend)
    base = ContextCheck(entry.name, spec.name, spec.context_length, int(answer_tokens), len(ids), id_kind,
                        kept_ids=tuple(ids))
    close = None
    try:
        if spec.backend in ("hf", "vllm"):
            count, context = _local_counter(spec)
        elif spec.backend == "openai":
            count, context, close = _server_counter(spec, int(answer_tokens))
            if context is None:
                return replace(base, unavailable="the server does not say its context length")
        else:
            return replace(base, unavailable=f"a {spec.backend} model has no context length")
        counts = count(conversations)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run must not block the job
        return replace(base, unavailable=f"{type(exc).__name__}: {exc}")
    finally:
        if close is not None:
            close()
    return _verdict(base, context, ids, counts)


def _verdict(base: ContextCheck, context: int, ids: list[str], counts: list[int | None]) -> ContextCheck:
    # A pairwise item is asked twice (both orders): it is too long when either order is.
    over, longest = {}, 0
    for item_id, n in zip(ids, counts, strict=True):
        if n is not None:
            longest = max(longest, n)
            if n + base.answer_tokens > context:
                over[item_id] = True
    fits = [i for i in dict.fromkeys(ids) if i not in over]
    return replace(base, context_length=context, checked=len(set(ids)), too_long_ids=tuple(over),
                   kept_ids=tuple(fits), longest_prompt=longest)


def without_too_long(selection: ExploreFilter | None, check: ContextCheck) -> ExploreFilter:
    """The selection without the prompts that do not fit: its instructions that fit, by id (a
    generate job's prompts are instructions; a judge's are answers, which a selection of
    instructions cannot drop one by one)."""
    if check.id_kind != "instruction":
        raise ValueError(f"a {check.stage} job's prompts are {check.id_kind}s; only instructions can be "
                         "dropped from a selection (run it anyway: they are recorded as too long)")
    if not check.kept_ids:
        raise ValueError("every prompt of the selection is too long for the model; nothing would be left")
    return replace(selection or ExploreFilter(), ids=list(check.kept_ids))
