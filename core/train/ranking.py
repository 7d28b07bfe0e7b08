"""Tuna's ranking loss and trainer (Li et al. 2023, "Tuna: Instruction Tuning using Feedback from
Large Language Models", arXiv 2310.13385, §2; DESIGN.md §6).

A group is one prompt and its N answers in rank order, best first (probabilistic ranking: the
teacher's own mean token log-probability; contextual ranking: a judge's listwise order). The
student scores each answer by its length-normalised log-probability

    s_k = (1/|y_k|) Σ_t log p_θ(y_k,t | x, y_k,<t)                          (Tuna, s = p̂)

and is trained on

    L = L_NLL(y_1) + Σ_{k<l} max(0, s_l − s_k + λ(l − k))                   (Tuna's L = L_MLE + L_rank)

with λ = 0.1: an answer ranked l must score at least λ(l−k) below every answer ranked k < l;
the margin grows with the distance in rank. L_NLL is the usual token-mean NLL of the best answer;
it stays by default (nll_weight 1.0): without it the ranking term alone can be satisfied by
pushing every score down, which degenerates the model (the paper's ablation).

Learning rates from the paper: 1e-5 for probabilistic ranking, 1e-6 for contextual (LEARNING_RATES).

`train_ranking` reuses core.train.sft's machinery (model loading, LoRA, optimizer, scheduler,
complete-or-absent checkpoints, resume, progress, the stop flag) with its own small loop; sft.py is
unchanged. Ranking settings (λ, weights) are saved as `ranking_config.json` beside the trainer's
`train_config.json`, which stays a plain TrainConfig so everything that reads it keeps working.
One process only for now (no DDP); packing is refused (each answer needs its own score).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.train.config import TrainConfig
from core.train.data import IGNORE, Example, Tokenized, end_token_ids, tokenize_example

RANKING_CONFIG_FILE = "ranking_config.json"
DEFAULT_MARGIN = 0.1  # λ in Tuna
LEARNING_RATES = {"probabilistic": 1e-5, "contextual": 1e-6}  # Tuna's rates for p and for c


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def sequence_scores(logits, targets, mask=None):
    """s per row: the mean log-probability of the row's response tokens, in float32.

    logits: B×T×V; targets: B×T, already shifted (targets[b, t] is the token after position t,
    IGNORE off the response); mask: B×T, 1 where a target counts (default: targets != IGNORE).
    A row without a response token scores 0 (it has nothing to rank)."""
    import torch

    if mask is None:
        mask = targets != IGNORE
    mask = mask.to(torch.float32)
    logp = torch.log_softmax(logits.float(), dim=-1)
    safe = targets.masked_fill(targets == IGNORE, 0)
    token_logp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1) * mask
    return token_logp.sum(-1) / mask.sum(-1).clamp(min=1.0)


def ranking_pair_terms(scores, lam: float = DEFAULT_MARGIN, valid=None):
    """max(0, s_l − s_k + λ(l−k)) for every k < l, as a B×N×N tensor (0 where k ≥ l or where
    either answer is missing: `valid` B×N, True where a group has an answer at that rank)."""
    import torch

    n = scores.shape[-1]
    rank = torch.arange(n, device=scores.device, dtype=scores.dtype)
    # terms[b, k, l] = s_l − s_k + λ(l − k)
    terms = scores.unsqueeze(-2) - scores.unsqueeze(-1) + lam * (rank.view(1, n) - rank.view(n, 1))
    upper = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(diagonal=1)
    keep = upper.unsqueeze(0)
    if valid is not None:
        keep = keep & valid.unsqueeze(-1) & valid.unsqueeze(-2)
    return terms.clamp(min=0) * keep


def ranking_loss(scores, lam: float = DEFAULT_MARGIN, valid=None, reduction: str = "mean"):
    """Tuna's margin ranking loss Σ_{k<l} max(0, s_l − s_k + λ(l−k)), per group, then averaged
    over the batch (reduction "mean"; "sum" adds the groups up, "none" returns one value a group).

    scores: B×N in rank order, best first (s_k of the k-th ranked answer). valid: optional B×N
    mask for groups with fewer than N answers (padding on the right).

    Normalisation: within a group the hinge terms are SUMMED, as in the paper's equation (not
    divided by the number of pairs), so a group with more answers carries more ranking signal,
    as it does in Tuna; across groups the loss is a MEAN, so the balance with the NLL term (also
    a mean) and the meaning of the learning rate do not change with the batch size or with
    gradient accumulation."""
    per_group = ranking_pair_terms(scores, lam, valid).sum(dim=(-2, -1))
    if reduction == "none":
        return per_group
    if reduction == "sum":
        return per_group.sum()
    if reduction == "mean":
        return per_group.mean()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def tuna_loss(logits, targets, group_index, rank_index, lam: float = DEFAULT_MARGIN, nll_weight: float = 1.0,
              rank_weight: float = 1.0):
    """L = nll_weight · NLL(best answers) + rank_weight · ranking_loss, for one batch of groups.

    The rows of logits/targets are answers; group_index[r] is row r's group (0..G−1) and
    rank_index[r] its rank in that group (0 = best). NLL is the token mean over the best answers'
    response tokens (core.train.loss's SFT loss with every weight 1). Returns (L, parts) where
    parts holds the detached nll, rank, and accuracy (the share of pairs already in order)."""
    parts = tuna_loss_parts(logits, targets, group_index, rank_index, lam)
    loss = nll_weight * parts["nll_sum"] / parts["best_tokens"].clamp(min=1) + rank_weight * parts["rank_sum"] / parts["groups"]
    return loss, {"nll": float(parts["nll_sum"].detach() / parts["best_tokens"].clamp(min=1)),
                  "rank": float(parts["rank_sum"].detach() / parts["groups"]),
                  "accuracy": float(parts["pairs_in_order"] / max(1, int(parts["pairs"])))}


def tuna_loss_parts(logits, targets, group_index, rank_index, lam: float = DEFAULT_MARGIN) -> dict:
    """The sums tuna_loss divides (so a step's micro-batches can share one denominator):
    nll_sum (Σ −log p over the best answers' tokens), best_tokens, rank_sum (Σ over groups of
    their ranking loss), groups, pairs and pairs_in_order (s_k > s_l for k < l)."""
    import torch
    import torch.nn.functional as F

    group_index = torch.as_tensor(group_index, device=logits.device)
    rank_index = torch.as_tensor(rank_index, device=logits.device)
    scores = sequence_scores(logits, targets)
    n_groups = int(group_index.max()) + 1
    n_ranks = int(rank_index.max()) + 1
    grid = torch.zeros(n_groups, n_ranks, dtype=scores.dtype, device=scores.device)
    valid = torch.zeros(n_groups, n_ranks, dtype=torch.bool, device=scores.device)
    grid = grid.index_put((group_index, rank_index), scores)
    valid[group_index, rank_index] = True
    rank_sum = ranking_loss(grid, lam, valid, reduction="sum")
    best = rank_index == 0
    best_targets = targets[best]
    flat = F.cross_entropy(logits[best].float().reshape(-1, logits.shape[-1]), best_targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
    with torch.no_grad():
        pair = valid.unsqueeze(-1) & valid.unsqueeze(-2) & torch.ones(n_ranks, n_ranks, dtype=torch.bool,
                                                                       device=scores.device).triu(1)
        in_order = (grid.unsqueeze(-1) > grid.unsqueeze(-2)) & pair
    return {"nll_sum": flat, "best_tokens": (best_targets != IGNORE).sum(), "rank_sum": rank_sum,
            "groups": n_groups, "pairs": pair.sum(), "pairs_in_order": in_order.sum()}


# --------------------------------------------------------------------------------------------
# Groups and settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingGroup:
    """One prompt (a conversation without the answer) and its answers in rank order, best first."""

    messages: tuple[dict, ...]
    responses: tuple[str, ...]
    id: str | None = None

    def __post_init__(self) -> None:
        messages = tuple(dict(m) for m in self.messages)
        if not messages or messages[-1].get("role") == "assistant":
            raise ValueError(f"group {self.id or ''}: messages are the prompt (ending with the user's turn), "
                             f"got roles {[m.get('role') for m in messages]}")
        responses = tuple(self.responses)
        if len(responses) < 2 or any(not isinstance(r, str) for r in responses):
            raise ValueError(f"group {self.id or ''}: a ranking needs at least 2 answers (text), got "
                             f"{len(responses)}")
        object.__setattr__(self, "messages", messages)
        object.__setattr__(self, "responses", responses)

    def examples(self) -> list[Example]:
        return [Example(self.messages + ({"role": "assistant", "content": r},), 1.0, self.id) for r in self.responses]


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class RankingParams:
    """Tuna's loss settings: margin λ, and the weights of the NLL and ranking terms."""

    margin: float = DEFAULT_MARGIN
    nll_weight: float = 1.0
    rank_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("margin", "nll_weight", "rank_weight"):
            value = getattr(self, name)
            if not _is_num(value) or value < 0:
                raise ValueError(f"{name} must be a number ≥ 0, not {value!r}")
        if self.nll_weight == 0 and self.rank_weight == 0:
            raise ValueError("nll_weight and rank_weight are both 0: nothing to train on")

    def save(self, folder: Path) -> Path:
        path = Path(folder) / RANKING_CONFIG_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> RankingParams:
        d = json.loads((Path(folder) / RANKING_CONFIG_FILE).read_text())
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown ranking setting(s) in {folder}: {', '.join(sorted(set(d) - known))}")
        return cls(**d)


@dataclass(frozen=True)
class _TokGroup:
    answers: tuple[Tokenized, ...]  # in rank order
    index: int


def tokenize_groups(groups: Sequence[RankingGroup], tokenizer, max_seq_len: int) -> tuple[list[_TokGroup], dict]:
    """Each answer as prompt + answer with response-only labels (core.train.data). An answer whose
    prompt fills max_seq_len is left out; a group left with fewer than 2 answers is skipped. A cut
    answer is scored on the tokens that fit."""
    end_ids = end_token_ids(tokenizer)
    out, stats = [], {"n_groups": len(groups), "n_used": 0, "n_skipped": 0, "n_answers": 0, "n_truncated": 0,
                      "n_tokens": 0}
    for i, group in enumerate(groups):
        answers = []
        for example in group.examples():
            tok, cut = tokenize_example(example, tokenizer, max_seq_len, i, end_ids)
            if tok is not None and tok.n_response:
                answers.append(tok)
                stats["n_truncated"] += int(cut)
        if len(answers) < 2:
            stats["n_skipped"] += 1
            continue
        out.append(_TokGroup(tuple(answers), i))
        stats["n_answers"] += len(answers)
        stats["n_tokens"] += sum(len(a.input_ids) for a in answers)
    stats["n_used"] = len(out)
    return out, stats


def group_batch(groups: Sequence[_TokGroup], pad_id: int) -> dict:
    """Groups → one padded batch of answers (rows), with each row's group and rank."""
    rows = [(g_i, r_i, a) for g_i, g in enumerate(groups) for r_i, a in enumerate(g.answers)]
    width = max(len(a.input_ids) for _, _, a in rows)
    batch = {"input_ids": [], "attention_mask": [], "position_ids": [], "targets": [], "group": [], "rank": []}
    for g_i, r_i, a in rows:
        n = width - len(a.input_ids)
        batch["input_ids"].append(a.input_ids + [pad_id] * n)
        batch["attention_mask"].append([1] * len(a.input_ids) + [0] * n)
        batch["position_ids"].append(list(range(width)))
        batch["targets"].append(a.labels[1:] + [IGNORE] * (n + 1))  # shifted: target[t] = labels[t+1]
        batch["group"].append(g_i)
        batch["rank"].append(r_i)
    batch["n_tokens"] = sum(len(a.input_ids) for _, _, a in rows)
    return batch


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


def _check_resume(config: TrainConfig, params: RankingParams, folder: Path) -> None:
    from core.train.sft import _check_resume_config

    _check_resume_config(config, folder)
    saved = RankingParams.load(folder)
    if saved != params:
        raise ValueError(f"cannot resume from {folder}: the ranking settings changed ({asdict(saved)} → "
                         f"{asdict(params)})")


def _save(folder: Path, model, tokenizer, config: TrainConfig, params: RankingParams) -> None:
    from core.train.sft import _save_model

    _save_model(model, tokenizer, config, folder)
    params.save(folder)


def _save_checkpoint(output_dir: Path, step: int, model, tokenizer, optimizer, scheduler, config: TrainConfig,
                     params: RankingParams, state: dict) -> Path:
    """As core.train.sft's checkpoints (complete or absent), plus ranking_config.json."""
    import torch

    from core.train.sft import STATE_FILE, _publish, _rng_state, checkpoints

    tmp = output_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save(tmp, model, tokenizer, config, params)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))  # last: its presence marks a whole folder
    final = output_dir / f"checkpoint-{step}"
    _publish(tmp, final)
    if config.save_total_limit:
        for old in checkpoints(output_dir)[: -config.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def train_ranking(config: TrainConfig, groups: Sequence[RankingGroup], output_dir: str | Path,
                  progress: Callable[..., None] | None = None, *, params: RankingParams | None = None,
                  resume_from: str | Path | bool | None = None, should_stop: Callable[[], bool] | None = None,
                  device: str | None = None, threads: int | None = None):
    """Train `config.base_model` on ranked groups with Tuna's loss; returns core.train.sft.TrainResult.

    One step = `grad_accum` micro-batches of `batch_size` groups (every answer of a group is in
    the same micro-batch, since the ranking term compares them). The step's loss is
    nll_weight · (Σ NLL over the best answers' tokens / their count) + rank_weight · (Σ group
    ranking losses / number of groups), denominators over the whole step, so accumulation does
    not change it. progress() gets sft's record (step, total_steps, epoch, loss, lr, grad_norm,
    tokens_per_s, eta_s, tokens, elapsed_s) plus nll, rank_loss and rank_accuracy (the share of
    pairs the model already scores in order, before the step). resume_from, should_stop, device
    and threads behave as in core.train.sft.train."""
    import torch

    from core.train import sft

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, not {type(config).__name__}")
    params = params or RankingParams()
    if config.packing:
        raise ValueError("packing is not available for ranking training: each answer needs its own score "
                         "(set packing false)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("ranking training runs on one process for now (WORLD_SIZE > 1 was set)")
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(".tmp-checkpoint-*"):  # left by a killed run: never a checkpoint
        shutil.rmtree(stale, ignore_errors=True)
    resume = sft._resume_point(output_dir, resume_from)
    if resume is not None:
        _check_resume(config, params, resume)
    elif resume_from in (None, False) and sft.checkpoints(output_dir):
        raise FileExistsError(f"{output_dir} holds checkpoints of an earlier run ({sft.latest_checkpoint(output_dir).name}): "
                              "resume it (resume_from='latest') or train into another folder")
    dev, amp_dtype = sft._device_and_dtype(config, device, sft._Dist())
    base = sft.resolve_base(config.base_model)
    torch.manual_seed(config.seed)  # LoRA init and dropout
    model, tokenizer = sft._load_model(config, base, resume, dev)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    tokenized, stats = tokenize_groups(groups, tokenizer, config.max_seq_len)
    if not tokenized:
        raise ValueError(f"no trainable group: {stats['n_groups']} group(s), {stats['n_skipped']} with fewer than 2 "
                         "answers that fit max_seq_len")
    n_batches = math.ceil(len(tokenized) / config.batch_size)
    steps_per_epoch = max(1, math.ceil(n_batches / config.grad_accum))
    total = config.max_steps or config.epochs * steps_per_epoch

    def step_batches(k: int) -> list[list[_TokGroup]]:
        epoch, j = divmod(k, steps_per_epoch)
        order = list(tokenized)
        random.Random(f"{config.seed}:{epoch}").shuffle(order)  # the same on resume
        batches = [order[i: i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        return batches[j * config.grad_accum: (j + 1) * config.grad_accum]

    optimizer = sft._optimizer(model, config)
    scheduler = sft._scheduler(optimizer, config, total)
    step, history_all = 0, []
    if resume is not None:
        state = json.loads((resume / sft.STATE_FILE).read_text())
        step, history_all = int(state["step"]), state.get("log_history", [])
        optimizer.load_state_dict(torch.load(resume / "optimizer.pt", map_location=dev, weights_only=True))
        scheduler.load_state_dict(torch.load(resume / "scheduler.pt", weights_only=True))
        sft._set_rng_state(torch.load(resume / "rng.pt", weights_only=True))
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = sft.TrainResult(output_dir, None, step, total, resumed_from=resume, data=stats,
                         load_seconds=time.perf_counter() - started)
    autocast = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

    def state_dict(k: int) -> dict:
        return {"step": k, "total_steps": total, "epoch": k / steps_per_epoch, "world_size": 1,
                "base_model_path": str(base), "method": config.method, "trainer": "ranking",
                "ranking": asdict(params), "log_history": history_all, "data": stats}

    def save(k: int) -> None:
        result.checkpoints.append(_save_checkpoint(output_dir, k, model, tokenizer, optimizer, scheduler, config,
                                                   params, state_dict(k)))

    loop_start = last_log = time.perf_counter()
    since = {"loss": [], "nll": [], "rank": [], "pairs": 0, "in_order": 0, "tokens": 0}
    first_step, last_saved = step, step
    while step < total:
        micro = [group_batch(b, pad_id) for b in step_batches(step)]
        # the step's denominators, known before its first micro-batch (as in core.train.loss)
        best_tokens = sum(sum(1 for row, r in zip(b["targets"], b["rank"], strict=True) if r == 0
                              for t in row if t != IGNORE) for b in micro)
        n_groups = sum(max(b["group"]) + 1 for b in micro)
        model.train()
        nll_total, rank_total = torch.zeros((), device=dev), torch.zeros((), device=dev)
        for b in micro:
            inputs = {k: torch.tensor(b[k], device=dev) for k in ("input_ids", "attention_mask", "position_ids")}
            targets = torch.tensor(b["targets"], device=dev)
            with autocast:
                logits = model(**inputs, use_cache=False).logits
            parts = tuna_loss_parts(logits, targets, b["group"], b["rank"], params.margin)
            nll = parts["nll_sum"] / max(1, best_tokens)
            rank = parts["rank_sum"] / n_groups
            (params.nll_weight * nll + params.rank_weight * rank).backward()
            nll_total += nll.detach()
            rank_total += rank.detach()
            since["pairs"] += int(parts["pairs"])
            since["in_order"] += int(parts["pairs_in_order"])
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm or float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        n_tokens = sum(b["n_tokens"] for b in micro)
        result.tokens += n_tokens
        since["tokens"] += n_tokens
        since["nll"].append(float(nll_total))
        since["rank"].append(float(rank_total))
        since["loss"].append(params.nll_weight * float(nll_total) + params.rank_weight * float(rank_total))
        if step % config.logging_steps == 0 or step == total:
            now = time.perf_counter()
            record = {"step": step, "total_steps": total, "epoch": round(step / steps_per_epoch, 4),
                      "loss": sum(since["loss"]) / len(since["loss"]), "nll": sum(since["nll"]) / len(since["nll"]),
                      "rank_loss": sum(since["rank"]) / len(since["rank"]),
                      "rank_accuracy": since["in_order"] / max(1, since["pairs"]), "lr": lr,
                      "grad_norm": float(grad_norm), "tokens_per_s": since["tokens"] / max(now - last_log, 1e-9),
                      "eta_s": (now - loop_start) / (step - first_step) * (total - step), "tokens": result.tokens,
                      "elapsed_s": now - loop_start}
            since = {"loss": [], "nll": [], "rank": [], "pairs": 0, "in_order": 0, "tokens": 0}
            last_log = now
            history_all.append(record)
            result.history.append(record)
            if progress is not None:
                progress(**record)
        stop = bool(should_stop()) if should_stop is not None else False
        if (config.save_steps and step % config.save_steps == 0) or (stop and step < total):
            save(step)
            last_saved = step
        if stop and step < total:
            result.stopped = True
            break
    result.train_seconds = time.perf_counter() - loop_start
    result.step, result.steps = step, step - first_step
    if result.stopped:
        return result
    if last_saved != step or not (output_dir / f"checkpoint-{step}").is_dir():
        save(step)
    result.model_dir = sft.publish_final(output_dir, result, lambda tmp: _save(tmp, model, tokenizer, config, params))
    return result


# --------------------------------------------------------------------------------------------
# The "ranking" training objective (core.train.objectives' contract)
# --------------------------------------------------------------------------------------------

OBJECTIVE_KEYS = ("margin", "nll_weight", "rank_weight")


def parse_objective(d: dict) -> dict:
    """{"kind": "ranking", "margin": λ (0.1), "nll_weight": 1.0, "rank_weight": 1.0}, validated."""
    unknown = sorted(set(d) - {"kind", *OBJECTIVE_KEYS})
    if unknown:
        raise ValueError(f"objective ranking: unknown setting(s) {', '.join(unknown)}; known: "
                         f"{', '.join(OBJECTIVE_KEYS)}")
    values = {k: d[k] for k in OBJECTIVE_KEYS if k in d}
    for key, value in values.items():
        if not _is_num(value) or value < 0:
            raise ValueError(f"objective ranking: {key} must be a number ≥ 0, not {value!r}")
    params = RankingParams(**{k: float(v) for k, v in values.items()})
    return {"kind": "ranking"} | asdict(params)


def objective_params(objective: dict) -> RankingParams:
    return RankingParams(**{k: objective[k] for k in OBJECTIVE_KEYS if k in objective})


def data_source(ws, name: str, objective: dict) -> dict:
    """A ranking set (core.ranking.freeze_ranking_set) by name."""
    from core.ranking import ranking_set

    info = ranking_set(ws, name)  # ValueError: no ranking set named …
    return {"name": info["name"], "parquet_path": info["parquet_path"], "content_hash": info["content_hash"]}


def train_objective(config, objective: dict, parquet, output_dir, progress, should_stop, threads):
    from core.ranking import read_ranking_set

    return train_ranking(config, read_ranking_set(parquet), output_dir, progress, params=objective_params(objective),
                         resume_from="latest", should_stop=should_stop, threads=threads)


__all__ = ["DEFAULT_MARGIN", "LEARNING_RATES", "RANKING_CONFIG_FILE", "RankingGroup", "RankingParams",
           "data_source", "group_batch", "objective_params", "parse_objective", "ranking_loss", "ranking_pair_terms",
           "sequence_scores", "tokenize_groups", "train_objective", "train_ranking", "tuna_loss", "tuna_loss_parts"]
