"""transformers backend: CPU or GPU, batched, with our own small decoding loop.

Why a loop of our own rather than `model.generate`: it gives, cheaply and exactly, what curation
needs and `generate` makes awkward —
- the log-probability of each chosen token under the model itself (raw logits, temperature 1),
  without keeping a (steps × batch × vocab) tensor of scores;
- one random stream per (prompt, sample index) derived from the seed, so a sample does not change
  when its batch-mates do (a resumed job with other shard boundaries gets the same answers);
- per-row stop strings and dropping finished rows from the KV cache as they end.

A LoRA adapter folder (adapter_config.json, as Winnow's trainer writes one) loads through peft on
top of the base model it names; `merge_lora=True` folds the adapter into the base weights (plain
matrices again: faster decoding), and `merge_adapter` writes such a merged folder (for vLLM).

Prompts are sorted by length (longest first, so an out-of-memory shows up in the first batch)
and left-padded; results are put back in the caller's order. A batch that runs out of memory is
split in two and retried.
"""

from __future__ import annotations

import inspect
import json
import secrets
from pathlib import Path

from core.llm.base import (
    DTYPES,
    Backend,
    ChoiceLogprobs,
    Conversation,
    Generation,
    GenerationParams,
    ScoreResult,
    as_conversation,
    check_choices,
    exclusive_logprobs,
    sample_seed,
    too_long_generations,
)
from core.llm.chat import ChatFormat


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class HFBackend(Backend):
    supports_choice_logprobs = True

    def __init__(self, path: str | Path, *, name: str | None = None, chat_template: str | None = None,
                 context_length: int | None = None, dtype: str = "auto", device: str | None = None,
                 trust_remote_code: bool = False, batch_size: int | None = None,
                 max_batch_tokens: int | None = None, threads: int | None = None, merge_lora: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            # Process-wide. On a shared CPU, oversubscribed OpenMP threads spin: with twice as many
            # runnable threads as cores, 2 threads decoded SmolLM2 ~5x slower than 1 (measured).
            torch.set_num_threads(int(threads))

        path = Path(path)
        base = adapter_base(path)  # None: a full model
        if base is None and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json)")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        self.name = name or path.name
        self.path = path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype == "auto":
            if self.device.type == "cuda":
                torch_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                torch_dtype = torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        on_gpu = self.device.type == "cuda"
        self.batch_size = batch_size or (64 if on_gpu else 16)
        self.max_batch_tokens = max_batch_tokens or (65536 if on_gpu else 8192)
        # An adapter folder from Winnow's trainer holds the tokenizer it was trained with.
        tokenizer_dir = base if base is not None and not (path / "tokenizer_config.json").is_file() else path
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code,
                                                       local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            base or path, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True,
            local_files_only=True,
        )
        if base is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path)
            if merge_lora:
                model = model.merge_and_unload()
        self.model = model.to(self.device).eval()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        self.chat = ChatFormat(self.tokenizer, chat_template, extra_eos_ids=gen_eos)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = next(iter(sorted(self.chat.eos_ids)), 0)
        config_ctx = getattr(self.model.config, "max_position_embeddings", None)
        self.context_length = int(context_length or config_ctx or 2048)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        # Remote-code models may not take logits_to_keep; then the full logits are computed.
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._keep_kw = "logits_to_keep" in inspect.signature(inner.forward).parameters

    # -- counting -----------------------------------------------------------------------------

    def count_tokens(self, conversation: Conversation) -> int:
        return self.chat.count_tokens(conversation)

    # -- generation ---------------------------------------------------------------------------

    def generate(self, conversations: list[Conversation], params: GenerationParams | None = None
                 ) -> list[list[Generation]]:
        params = params or GenerationParams()
        if params.guided_regex is not None:
            raise NotImplementedError("guided_regex needs the vllm backend or a server that supports it; "
                                      "the hf backend supports guided_choice")
        conversations = [as_conversation(c) for c in conversations]
        results: list[list[Generation | None]] = [[None] * params.n for _ in conversations]
        rows = []  # (conversation index, sample index, prompt ids, seed)
        base_seed = params.seed if params.seed is not None else secrets.randbits(63)
        prompts = [self.chat.prompt_ids(c) for c in conversations]
        if params.guided_choice is not None:
            return self._generate_choice(conversations, prompts, params, base_seed)
        for ci, ids in enumerate(prompts):
            if len(ids) + params.max_tokens > self.context_length:
                results[ci] = too_long_generations(params.n, len(ids), params.max_tokens, self.context_length)
                continue
            # Greedy answers are all the same: decode once and copy.
            for si in range(1 if params.greedy else params.n):
                rows.append((ci, si, ids, sample_seed(base_seed, si, ids)))
        rows.sort(key=lambda r: -len(r[2]))
        for batch in self._batches(rows, params.max_tokens):
            for (ci, si, _, _), gen in zip(batch, self._decode_split(batch, params), strict=True):
                results[ci][si] = gen
        if params.greedy and params.n > 1:
            for ci, samples in enumerate(results):
                if samples[0] is not None and samples[0].finish_reason != "too_long":
                    results[ci] = [samples[0]] + [_copy(samples[0]) for _ in range(params.n - 1)]
        return results  # type: ignore[return-value]

    def _batches(self, rows: list, new_tokens: int):
        """Consecutive runs of (length-sorted) rows within the row and token budgets."""
        batch: list = []
        for row in rows:
            width = max([len(r[2]) for r in batch] + [len(row[2])]) + new_tokens
            if batch and (len(batch) >= self.batch_size or width * (len(batch) + 1) > self.max_batch_tokens):
                yield batch
                batch = []
            batch.append(row)
        if batch:
            yield batch

    def _decode_split(self, rows: list, params: GenerationParams) -> list[Generation]:
        try:
            return self._decode(rows, params)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            self._empty_cache()
            if len(rows) == 1:
                n_prompt = len(rows[0][2])
                return [Generation("", "error", n_prompt, 0, [], [], f"out of memory: {exc}")]
            half = len(rows) // 2
            return self._decode_split(rows[:half], params) + self._decode_split(rows[half:], params)

    def _empty_cache(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _decode(self, rows: list, params: GenerationParams) -> list[Generation]:
        import torch
        from transformers import DynamicCache

        B = len(rows)
        L = max(len(r[2]) for r in rows)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, L), dtype=torch.long)
        for i, (_, _, ids, _) in enumerate(rows):
            input_ids[i, L - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[i, L - len(ids):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = None
        if not params.greedy:
            generators = [torch.Generator(device=self.device).manual_seed(r[3]) for r in rows]
        eos = self.chat.eos_ids
        stops = params.stop
        # Only a window of the newest tokens can hold a stop string completed by the newest one
        # (a character is at most 4 byte-level tokens); decoding it, not the whole answer, each step.
        tail = 4 * max((len(s) for s in stops), default=0) + 8
        tokens: list[list[int]] = [[] for _ in rows]
        logprobs: list[list[float]] = [[] for _ in rows]
        reasons = ["length"] * B
        cut_text: list[str | None] = [None] * B
        active = list(range(B))  # rows still decoding, in the order of the tensors below

        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            attention = attention.to(self.device)
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention,
                             position_ids=positions.to(self.device), past_key_values=cache, use_cache=True,
                             **({"logits_to_keep": 1} if self._keep_kw else {}))
            next_position = positions[:, -1:].to(self.device) + 1
            for step in range(params.max_tokens):
                logits = out.logits[:, -1, :].float()
                chosen = self._choose(logits, params, generators)
                chosen_lp = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None]).squeeze(1)
                chosen_list, lp_list = chosen.tolist(), chosen_lp.tolist()
                keep = []
                for k, row in enumerate(active):
                    token = chosen_list[k]
                    tokens[row].append(token)
                    logprobs[row].append(lp_list[k])
                    if token in eos:
                        reasons[row] = "stop"
                        continue
                    if stops and any(s in self.chat.decode(tokens[row][-tail:]) for s in stops):
                        # A stop string ends in the newest tokens; cut the full text at its first one.
                        text = self.chat.decode(tokens[row])
                        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
                        if hits:
                            reasons[row], cut_text[row] = "stop", text[: min(hits)]
                            continue
                    keep.append(k)
                if not keep or step == params.max_tokens - 1:
                    break
                if len(keep) < len(active):  # drop finished rows from every tensor and the cache
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    attention, next_position, chosen = attention[index], next_position[index], chosen[index]
                    if generators is not None:
                        generators = [generators[k] for k in keep]
                    active = [active[k] for k in keep]
                attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
                out = self.model(input_ids=chosen[:, None], attention_mask=attention, position_ids=next_position,
                                 past_key_values=cache, use_cache=True)
                next_position = next_position + 1

        results = []
        for i, (_, _, ids, _) in enumerate(rows):
            text = cut_text[i] if cut_text[i] is not None else self.chat.decode(tokens[i])
            results.append(Generation(text=text, finish_reason=reasons[i], n_prompt_tokens=len(ids),
                                      n_tokens=len(tokens[i]), token_ids=tokens[i],
                                      token_logprobs=logprobs[i] if params.logprobs else None))
        return results

    @staticmethod
    def _choose(logits, params: GenerationParams, generators):
        """Greedy, or a sample after temperature, top-k and top-p, one random stream per row."""
        import torch

        if params.greedy:
            return logits.argmax(dim=-1)
        logits = logits / params.temperature
        if params.top_k and params.top_k < logits.shape[-1]:
            kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        order = None
        if params.top_p < 1:
            probs, order = torch.sort(probs, dim=-1, descending=True)
            before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
            probs = probs.masked_fill(before >= params.top_p, 0.0)  # the top token always stays
        picks = torch.stack([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
        if order is not None:
            picks = order.gather(1, picks)
        return picks.squeeze(1)

    def _generate_choice(self, conversations, prompts, params: GenerationParams, base_seed: int):
        """guided_choice by scoring: the most likely choice (greedy) or one drawn from
        softmax(log P(choice) / temperature)."""
        import torch

        choices = list(params.guided_choice or ())
        flat_convs = [c for c in conversations for _ in choices]
        flat_resp = [ch for _ in conversations for ch in choices]
        scores = self.score(flat_convs, flat_resp)
        results = []
        for ci, ids in enumerate(prompts):
            mine = scores[ci * len(choices):(ci + 1) * len(choices)]
            if any(s.too_long for s in mine):
                longest = max(s.n_tokens for s in mine)
                results.append(too_long_generations(params.n, len(ids), longest, self.context_length))
                continue
            totals = torch.tensor([s.sum_logprob for s in mine], dtype=torch.float64)
            samples = []
            for si in range(params.n):
                if params.greedy:
                    pick = int(totals.argmax())
                else:
                    g = torch.Generator().manual_seed(sample_seed(base_seed, si, ids))
                    pick = int(torch.multinomial(torch.softmax(totals / params.temperature, 0), 1, generator=g))
                s = mine[pick]
                choice_ids = self.chat.response_ids(self.chat.prompt_text(conversations[ci]), ids, choices[pick])
                samples.append(Generation(choices[pick], "stop", len(ids), s.n_tokens, choice_ids,
                                          list(s.token_logprobs or []) if params.logprobs else None))
            results.append(samples)
        return results

    # -- scoring ------------------------------------------------------------------------------

    def score(self, conversations: list[Conversation], responses: list[str | list[int]]) -> list[ScoreResult]:
        if len(conversations) != len(responses):
            raise ValueError(f"score needs one response per conversation, got {len(conversations)} "
                             f"conversations and {len(responses)} responses")
        results: list[ScoreResult | None] = [None] * len(conversations)
        items = []  # (index, prompt ids, response ids)
        for i, (conv, response) in enumerate(zip(conversations, responses, strict=True)):
            conv = as_conversation(conv)
            prompt_text = self.chat.prompt_text(conv)
            prompt = self.chat.encode(prompt_text)
            resp = self.chat.response_ids(prompt_text, prompt, response)
            if len(prompt) + len(resp) > self.context_length:
                results[i] = ScoreResult(None, None, len(resp), too_long=True,
                                         error=f"prompt {len(prompt)} + response {len(resp)} tokens exceed the "
                                               f"context length {self.context_length}")
            elif not resp:
                results[i] = ScoreResult(0.0, None, 0)
            else:
                items.append((i, prompt, resp))
        items.sort(key=lambda it: -(len(it[1]) + len(it[2])))
        # Budget: the batch's tokens, and the (rows × response window × vocab) logits kept in float32.
        batch: list = []
        for item in items:
            trial = batch + [item]
            width = max(len(p) + len(r) for _, p, r in trial)
            window = max(len(r) for _, _, r in trial) + 1
            if batch and (len(trial) > self.batch_size or width * len(trial) > self.max_batch_tokens
                          or window * len(trial) * self.vocab_size > 2**27):
                self._score_batch(batch, results)
                batch = [item]
            else:
                batch = trial
        if batch:
            self._score_batch(batch, results)
        return results  # type: ignore[return-value]

    def _score_batch(self, batch: list, results: list) -> None:
        import torch

        B = len(batch)
        L = max(len(p) + len(r) for _, p, r in batch)
        K = max(len(r) for _, _, r in batch) + 1  # logits needed: the last K positions
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, L), dtype=torch.long)
        for b, (_, p, r) in enumerate(batch):
            seq = p + r
            input_ids[b, L - len(seq):] = torch.tensor(seq, dtype=torch.long)
            attention[b, L - len(seq):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                position_ids=positions.to(self.device), use_cache=False,
                                **({"logits_to_keep": K} if self._keep_kw else {})).logits[:, -K:].float()
            logprobs = torch.log_softmax(logits, dim=-1)  # [B, K, V]: position L-K+j predicts token L-K+j+1
            for b, (i, _, r) in enumerate(batch):
                n = len(r)
                rows = logprobs[b, K - 1 - n: K - 1]
                target = torch.tensor(r, device=rows.device)[:, None]
                results[i] = ScoreResult.from_logprobs(rows.gather(1, target).squeeze(1).tolist())

    # -- label log-probabilities (probability judges) ----------------------------------------

    def choice_logprobs(self, conversations: list[Conversation], choices, *, prefill: str = ""
                        ) -> list[ChoiceLogprobs]:
        """One forward pass per prompt when every label is one token (digits, "A"/"B"): the
        next-token distribution after the prompt holds them all. A label of several tokens needs
        the distributions after its prefixes too; the prompt is run once with the longest of those
        prefixes appended, which gives every shorter one on the way ("1" + "0": one pass)."""
        labels = check_choices(choices)
        results: list[ChoiceLogprobs | None] = [None] * len(conversations)
        plans: dict[int, tuple[list[int], list[tuple[int, ...]]]] = {}
        rows = []  # (conversation index, extension, prompt + extension): one sequence each
        for i, conversation in enumerate(conversations):
            prompt, seqs = self.chat.label_tokens(conversation, labels, prefill)
            longest = max(len(seq) for seq in seqs)
            if len(prompt) + longest > self.context_length:
                results[i] = ChoiceLogprobs.failed(
                    f"prompt of {len(prompt)} tokens + a label of {longest} exceeds the context length "
                    f"{self.context_length}", len(prompt), too_long=True)
                continue
            plans[i] = (prompt, seqs)
            rows += [(i, ext, prompt + list(ext)) for ext in _label_extensions(seqs)]
        rows.sort(key=lambda r: -len(r[2]))
        found: dict[int, dict] = {i: {} for i in plans}  # (prefix, next token) -> log-prob
        failed: dict[int, str] = {}
        for batch in self._batches(rows, 1):
            wants = [_wanted_tokens(plans[i][1], ext) for i, ext, _ in batch]
            for (i, ext, _), want_row, got in zip(batch, wants, self._label_split(batch, wants), strict=True):
                if isinstance(got, str):
                    failed[i] = got
                    continue
                for k, (want, values) in enumerate(zip(want_row, got, strict=True)):
                    for token, value in zip(want, values, strict=True):
                        found[i][(ext[:k], token)] = value
        for i, (prompt, seqs) in plans.items():
            if i in failed:
                results[i] = ChoiceLogprobs.failed(failed[i], len(prompt))
                continue
            table = found[i]
            totals = [sum(table[(seq[:k], seq[k])] for k in range(len(seq))) for seq in seqs]
            results[i] = ChoiceLogprobs(exclusive_logprobs(totals, seqs), len(prompt))
        return results  # type: ignore[return-value]

    def _label_split(self, batch: list, wants: list) -> list:
        """_label_batch, halving the batch on out-of-memory; a single row that still does not fit
        gets its error message instead of values."""
        try:
            return self._label_batch(batch, wants)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            self._empty_cache()
            if len(batch) == 1:
                return [f"out of memory: {exc}"]
            half = len(batch) // 2
            return self._label_split(batch[:half], wants[:half]) + self._label_split(batch[half:], wants[half:])

    def _label_batch(self, batch: list, wants: list) -> list[list[list[float]]]:
        """Per row and per position k (after prompt + ext[:k]), the log-probs of the wanted tokens."""
        import torch

        B = len(batch)
        L = max(len(seq) for _, _, seq in batch)
        K = max(len(ext) for _, ext, _ in batch) + 1  # logits needed: the last K positions
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, L), dtype=torch.long)
        for b, (_, _, seq) in enumerate(batch):
            input_ids[b, L - len(seq):] = torch.tensor(seq, dtype=torch.long)
            attention[b, L - len(seq):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                position_ids=positions.to(self.device), use_cache=False,
                                **({"logits_to_keep": K} if self._keep_kw else {})).logits[:, -K:].float()
            logprobs = torch.log_softmax(logits, dim=-1)  # [B, K, V]
            out = []
            for b, (_, ext, _) in enumerate(batch):
                steps = logprobs[b, K - 1 - len(ext):]  # row k: the distribution after prompt + ext[:k]
                out.append([steps[k, list(want)].tolist() for k, want in enumerate(wants[b])])
        return out

    def close(self) -> None:
        self.model = None
        self._empty_cache()

    def info(self) -> dict:
        return {"name": self.name, "path": str(self.path), "device": str(self.device),
                "dtype": str(self.model.dtype) if self.model is not None else None,
                "context_length": self.context_length}

    def __repr__(self) -> str:
        return f"<HFBackend {self.name!r} {json.dumps(str(self.path))} on {self.device}>"


def adapter_base(path: str | Path) -> Path | None:
    """The base model folder a LoRA adapter folder names, or None when `path` is a full model."""
    path = Path(path)
    if (path / "config.json").is_file() or not (path / "adapter_config.json").is_file():
        return None
    try:
        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError):
        raise FileNotFoundError(f"{path}/adapter_config.json names no base model (base_model_name_or_path)") from None
    folder = Path(base or "").expanduser()
    if not base or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"LoRA adapter {path}: its base model {base!r} is not a local model folder")
    return folder


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold a LoRA adapter into its base and save the result as a full model folder (safetensors,
    tokenizer): what vLLM or another trainer run can load without peft."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    base = adapter_base(adapter_dir)
    if base is None:
        raise ValueError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json)")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True, local_files_only=True)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    AutoTokenizer.from_pretrained(adapter_dir if has_tokenizer else base, local_files_only=True).save_pretrained(out_dir)
    return out_dir


def _label_extensions(seqs: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Token prefixes to append to the prompt so that one pass per prefix yields every label's
    log-probability: the longest proper prefixes of the labels (their own prefixes come along on
    the way), or none beyond the prompt itself when every label is one token."""
    prefixes = {seq[:k] for seq in seqs for k in range(1, len(seq))}
    longest = [p for p in prefixes if not any(len(q) > len(p) and q[: len(p)] == p for q in prefixes)]
    return sorted(longest) or [()]


def _wanted_tokens(seqs: list[tuple[int, ...]], ext: tuple[int, ...]) -> list[list[int]]:
    """For each position k of an extension (after prompt + ext[:k]): the label tokens that come next."""
    return [sorted({seq[k] for seq in seqs if len(seq) > k and seq[:k] == ext[:k]}) for k in range(len(ext) + 1)]


def _copy(g: Generation) -> Generation:
    return Generation(g.text, g.finish_reason, g.n_prompt_tokens, g.n_tokens, list(g.token_ids or []),
                      None if g.token_logprobs is None else list(g.token_logprobs), g.error)
