"""Examples → token ids with response-only labels and per-token weights → batches.

An `Example` is a conversation that ends with the assistant's answer, plus a weight (TAPIR's α_r,
or any curation weight). Only the final assistant turn is trained on; earlier turns (a snapshot's
`history`) are context.

Tokenisation uses the model's chat template: the prompt is the template applied to every message
but the last with the generation prompt; the example is the template applied to all of them. The
tokens after the prompt are the response, cut after its end-of-turn token (`<|im_end|>`), which
is labelled, so the model learns to stop; what a template writes after it (ChatML's newline)
is never predicted and is dropped. Prompt tokens are labelled -100.

Labels follow the Hugging Face convention (labels[t] = input_ids[t] where trained). The batches
shift them inside each example (target[t] = labels[t+1]) before anything is concatenated, so a
packed row never asks one example to predict the next one's first token.

Packing on: the examples of an epoch, in their shuffled order, fill rows of up to `max_seq_len`
tokens one after another (next fit). Position ids restart at 0 for each example and the attention
mask is left out: transformers' Llama-family models (and others built on its masking utilities)
then derive a block-diagonal causal mask from the position ids, so no token attends across an
example boundary (flash-attention reads the same position ids as variable-length sequences). It
does so only without a KV cache: the forward passes `use_cache=False`. A
model that ignores position ids for masking would attend across boundaries; the
packing-equivalence test guards the built-in models. The tail of a row is padding with its own
position ids, attended by nothing else and never a target.
Packing off: each row is one example, right-padded to the longest in its batch, with an
attention mask.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.llm.base import as_conversation
from core.llm.chat import END_OF_TURN_TOKENS

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """A conversation ending with the assistant's answer (the trained turn) and its weight."""

    messages: tuple[dict, ...]
    weight: float = 1.0
    id: str | None = None

    def __post_init__(self) -> None:
        messages = tuple(as_conversation(list(self.messages)))
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ValueError(f"example {self.id or ''}: the last message must be the assistant's answer (the "
                             f"trained turn), after at least one prompt message; got roles "
                             f"{[m['role'] for m in messages]}")
        object.__setattr__(self, "messages", messages)
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"example {self.id or ''}: weight must be a finite number ≥ 0, not {w!r}")
        object.__setattr__(self, "weight", float(w))

    @classmethod
    def from_texts(cls, instruction: str, response: str, input: str | None = None, system: str | None = None,
                   history: str | list | None = None, weight: float = 1.0, id: str | None = None) -> Example:
        """The chat generation showed the model (system, earlier turns, instruction + input), then the answer."""
        from core.generate import conversation_for

        if not isinstance(response, str):
            raise ValueError(f"example {id or ''}: the response must be text, not {response!r:.80} (a prompts "
                             "snapshot has no answers to train on)")
        messages = conversation_for(instruction, input, system, history)
        return cls(tuple(messages) + ({"role": "assistant", "content": response},), weight, id)


def examples_from_parquet(path: str | Path) -> list[Example]:
    """An SFT snapshot's Parquet (core.curate: instruction, input, system (the snapshot's system tag,
    else the instruction's own), history, response, weight) as examples, in file order. A file with
    a `messages` column (JSON or a list of {role, content}, ending with the answer) is read as is."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = set(table.column_names)
    rows = table.to_pylist()
    if "messages" in columns:
        out = []
        for r in rows:
            messages = r["messages"]
            messages = json.loads(messages) if isinstance(messages, str) else messages
            out.append(Example(tuple(messages), _weight(r), r.get("response_id") or r.get("id")))
        return out
    missing = {"instruction", "response"} - columns
    if missing:
        raise ValueError(f"{path}: not an SFT snapshot (no {', '.join(sorted(missing))} column; columns are "
                         f"{', '.join(table.column_names)})")
    return [Example.from_texts(r["instruction"], r["response"], r.get("input"), r.get("system"), r.get("history"),
                               _weight(r), r.get("response_id") or r.get("instruction_id")) for r in rows]


def _weight(row: dict) -> float:
    w = row.get("weight")
    return 1.0 if w is None else float(w)


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens; unshifted (Hugging Face convention)
    weight: float
    index: int  # position in the examples list

    @property
    def n_response(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


@dataclass
class TokenizeStats:
    n_examples: int = 0
    n_used: int = 0
    n_truncated: int = 0  # response cut at max_seq_len (still trained on what fits)
    n_too_long: int = 0  # prompt alone fills max_seq_len: skipped
    n_zero_weight: int = 0  # weight 0 contributes nothing: skipped
    n_tokens: int = 0
    n_response_tokens: int = 0

    def to_dict(self) -> dict:
        return dict(vars(self))


def end_token_ids(tokenizer) -> set[int]:
    """End-of-turn ids the template writes (as core.llm.chat counts them), plus eos."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab, template = tokenizer.get_vocab(), tokenizer.chat_template or ""
    ids.update(int(vocab[t]) for t in END_OF_TURN_TOKENS if t in vocab and t in template)
    return ids


def tokenize_example(example: Example, tokenizer, max_seq_len: int, index: int = 0,
                     end_ids: set[int] | None = None) -> tuple[Tokenized | None, bool]:
    """(tokenized or None when the prompt fills max_seq_len, whether the response was cut)."""
    if not tokenizer.chat_template:
        raise ValueError("the base model's tokenizer has no chat template: give one in the trainer config "
                         "(chat_template)")
    end_ids = end_token_ids(tokenizer) if end_ids is None else end_ids
    messages = [dict(m) for m in example.messages]

    def encode(text: str) -> list[int]:  # the template writes any BOS itself
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    prompt = encode(tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True))
    full = encode(tokenizer.apply_chat_template(messages, tokenize=False))
    if full[: len(prompt)] == prompt:
        response = full[len(prompt):]
        ends = [i for i, t in enumerate(response) if t in end_ids]
        if ends:
            response = response[: ends[-1] + 1]
    else:  # a template that rewrites earlier turns once an answer follows: answer, then an end token
        response = encode(messages[-1]["content"])
        if tokenizer.eos_token_id is not None:
            response.append(int(tokenizer.eos_token_id))
    if len(prompt) >= max_seq_len:
        return None, False
    cut = len(prompt) + len(response) > max_seq_len
    response = response[: max_seq_len - len(prompt)]
    return Tokenized(prompt + response, [IGNORE] * len(prompt) + response, example.weight, index), cut


def tokenize_examples(examples: Sequence[Example], tokenizer, max_seq_len: int
                      ) -> tuple[list[Tokenized], TokenizeStats]:
    stats = TokenizeStats(n_examples=len(examples))
    end_ids = end_token_ids(tokenizer)
    out = []
    for i, example in enumerate(examples):
        if example.weight == 0:
            stats.n_zero_weight += 1
            continue
        tok, cut = tokenize_example(example, tokenizer, max_seq_len, i, end_ids)
        if tok is None:
            stats.n_too_long += 1
            continue
        stats.n_truncated += int(cut)
        stats.n_tokens += len(tok.input_ids)
        stats.n_response_tokens += tok.n_response
        out.append(tok)
    stats.n_used = len(out)
    return out, stats


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One micro-batch as plain lists (tensors are made on the training device)."""

    input_ids: list[list[int]]
    position_ids: list[list[int]]
    attention_mask: list[list[int]] | None  # None when packed: the mask comes from position ids
    targets: list[list[int]]  # shifted labels: target[t] is the token after position t, or IGNORE
    weights: list[list[float]]  # the example's weight where target != IGNORE, else 0
    example_index: list[list[int]] = field(default_factory=list)  # which example a position is (-1: pad)

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return sum(1 for row in self.example_index for e in row if e >= 0)

    @property
    def weight_sum(self) -> float:
        return sum(sum(row) for row in self.weights)


def _shifted(tok: Tokenized) -> tuple[list[int], list[float]]:
    targets = tok.labels[1:] + [IGNORE]
    return targets, [tok.weight if t != IGNORE else 0.0 for t in targets]


def _pad_rows(rows: list[tuple[list, list, list, list, list]], pad_id: int, packed: bool) -> Batch:
    width = max(len(r[0]) for r in rows)
    batch = Batch([], [], None if packed else [], [], [], [])
    for ids, pos, targets, weights, index in rows:
        n = width - len(ids)
        batch.input_ids.append(ids + [pad_id] * n)
        # Padding positions count up from 0: as their own "sequence" in a packed row, as a
        # continuation (ignored under the attention mask) in a padded one.
        batch.position_ids.append(pos + (list(range(n)) if packed else list(range(len(pos), width))))
        batch.targets.append(targets + [IGNORE] * n)
        batch.weights.append(weights + [0.0] * n)
        batch.example_index.append(index + [-1] * n)
        if not packed:
            batch.attention_mask.append([1] * len(ids) + [0] * n)
    return batch


def pack(tokenized: Sequence[Tokenized], max_seq_len: int) -> list[list[Tokenized]]:
    """Next fit, in order: an example starts a new row when it does not fit the current one."""
    rows: list[list[Tokenized]] = []
    used = max_seq_len + 1
    for tok in tokenized:
        if used + len(tok.input_ids) > max_seq_len:
            rows.append([])
            used = 0
        rows[-1].append(tok)
        used += len(tok.input_ids)
    return rows


def make_batch(group: Iterable[Tokenized] | Iterable[list[Tokenized]], pad_id: int, packed: bool) -> Batch:
    """Rows → a batch: each item is one example (packing off) or a list of examples (one packed row)."""
    rows = []
    for item in group:
        parts = item if packed else [item]
        ids, pos, targets, weights, index = [], [], [], [], []
        for tok in parts:
            t, w = _shifted(tok)
            ids += tok.input_ids
            pos += list(range(len(tok.input_ids)))
            targets += t
            weights += w
            index += [tok.index] * len(tok.input_ids)
        rows.append((ids, pos, targets, weights, index))
    return _pad_rows(rows, pad_id, packed)


def epoch_batches(tokenized: Sequence[Tokenized], batch_size: int, max_seq_len: int, packing: bool, pad_id: int,
                  seed: int, epoch: int) -> list[Batch]:
    """The micro-batches of one epoch: a seeded shuffle of the examples (the same on every process
    and on resume), then packed rows or single examples, `batch_size` rows a batch."""
    order = list(tokenized)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    rows = pack(order, max_seq_len) if packing else order
    return [make_batch(rows[i: i + batch_size], pad_id, packing) for i in range(0, len(rows), batch_size)]
