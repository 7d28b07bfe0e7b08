"""Any OpenAI-compatible server: `vllm serve`, SGLang, llama.cpp, Ollama, hosted APIs.

Plain `urllib` in a thread pool (no extra dependency): at most `concurrency` requests in
flight, spread round-robin over the base URLs; 429, 5xx, connection errors and timeouts are
retried with exponential backoff (honouring Retry-After), each time on the next URL. A prompt
whose requests all fail gets `finish_reason="error"` with the message; its batch goes on. But when
no server answers at all (every attempt refused or cut off: the server process is gone), the call
raises BackendUnavailable, naming the model and the URLs: that is no verdict on the prompt, and a
job must fail with the reason and resume later rather than record every prompt as an error.

The API key is read from the environment variable the spec names, when the backend is created;
it is never written anywhere.

Token counting and scoring use vLLM's extensions when the server has them: `POST /tokenize`
(chat-templated token ids) and `/v1/completions` with `echo` + `logprobs` (log-probabilities of
the prompt's own tokens). Without /tokenize, counts are an estimate and score() is not available.

Label log-probabilities (`choice_logprobs`, probability judges) take the same exact route when
/tokenize exists: each label's tokens after the (pre-filled) prompt, echoed. Without it they fall
back to the standard `top_logprobs` of the first answer token, which is exact only for labels of
one token that the server lists among its top 20 (others count as no mass; a label of several
tokens, like "10", is not seen) and cannot pre-fill the answer: a prefill there raises
NotImplementedError, which a judge records as a call error.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

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
    open_turn,
    sample_seed,
    too_long_generations,
)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
CONTEXT_ERROR_HINTS = ("maximum context length", "context length", "context_length_exceeded", "too long",
                       "max_model_len", "exceeds the maximum", "prompt is too long")
FINISH_MAP = {"stop": "stop", "length": "length", "eos": "stop", "tool_calls": "stop", "function_call": "stop",
              "content_filter": "stop", None: "stop", "abort": "error", "error": "error"}
MESSAGE_OVERHEAD = 8  # template tokens around each message, generously
TOP_LOGPROBS = 20  # the most the OpenAI API lists per token


class ServerError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def context_exceeded(self) -> bool:
        text = str(self).lower()
        return self.status == 400 and any(h in text for h in CONTEXT_ERROR_HINTS)


class BackendUnavailable(ServerError):
    """No server answered: every attempt's connection was refused, reset or closed unanswered.
    Raised out of generate/score/choice_logprobs (never turned into a per-prompt error), so a
    job fails with this reason, writes no shard for the batch, and resumes when the server is back.
    A timeout is not this: a slow prompt stays that prompt's error."""


def estimate_tokens(conversation: Conversation) -> int:
    """An over-estimate of the chat-templated length: real tokenizers average 3–4 bytes per token
    on English; this counts one per 2 bytes plus the template's overhead."""
    n_bytes = sum(len(m["content"].encode("utf-8")) for m in conversation)
    return math.ceil(n_bytes / 2) + MESSAGE_OVERHEAD * (len(conversation) + 1)


def _upper_bound_tokens(conversation: Conversation) -> int:
    """No tokenizer gives more tokens than bytes (plus the template): prompts under this fit for sure."""
    return sum(len(m["content"].encode("utf-8")) for m in conversation) + MESSAGE_OVERHEAD * (len(conversation) + 1)


class OpenAIBackend(Backend):
    def __init__(self, base_urls: list[str] | str, model: str, *, name: str | None = None,
                 api_key_env: str | None = None, context_length: int | None = None, chat_template: str | None = None,
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 4, backoff: float = 0.5,
                 max_backoff: float = 30.0, structured_outputs: str = "vllm"):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("the openai backend needs at least one base URL")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer ≥ 1, not {concurrency!r}")
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer ≥ 0, not {max_retries!r}")
        if structured_outputs not in ("vllm", "legacy", "none"):
            raise ValueError(f"structured_outputs must be vllm (vLLM ≥ 0.12), legacy (guided_* fields) or none, "
                             f"not {structured_outputs!r}")
        self.base_urls = [u.rstrip("/") for u in urls]
        self.model = model
        self.name = name or model
        self.chat_template = chat_template
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.structured_outputs = structured_outputs
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"model {self.name}: the environment variable {api_key_env} (its API key) is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        self._context_length = context_length
        self._context_probed = context_length is not None
        self._tokenize_ok: bool | None = None  # unknown until tried
        self._logprobs_ok = True
        self._lock = threading.Lock()
        self._next = 0
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"openai-{self.name}")
        self.requests_sent = 0  # for tests and progress: attempts, retries included

    # -- HTTP -----------------------------------------------------------------------------------

    def _pick_url(self, start: int | None, attempt: int) -> tuple[int, str]:
        """A request starts on the next URL in turn; its retries move on from its own start, so
        k attempts try k different URLs whatever the other threads do meanwhile."""
        with self._lock:
            if start is None:
                start = self._next
                self._next += 1
            self.requests_sent += 1
        return start, self.base_urls[(start + attempt) % len(self.base_urls)]

    def _request(self, method: str, path: str, body: dict | None = None, root: bool = False,
                 retries: int | None = None) -> dict:
        """One call with retries; `root` addresses the server root (vLLM's /tokenize) instead of /v1."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        retries = self.max_retries if retries is None else retries
        last: ServerError | None = None
        start = None
        unreachable = 0  # attempts whose connection failed before any answer (not timeouts)
        for attempt in range(retries + 1):
            start, base = self._pick_url(start, attempt)
            if root and base.endswith("/v1"):
                base = base[:-3]
            request = urllib.request.Request(base + path, data=data, headers=self._headers, method=method)
            retry_after = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = _error_text(exc)
                last = ServerError(f"{method} {base}{path}: HTTP {exc.code}: {detail}", exc.code)
                if exc.code not in RETRY_STATUS:
                    raise last from None
                retry_after = _retry_after(exc)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                kind = "timed out" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else "failed"
                last = ServerError(f"{method} {base}{path}: request {kind} ({reason})")
                unreachable += kind == "failed"
            except ValueError as exc:  # a body that is not JSON
                last = ServerError(f"{method} {base}{path}: the server's answer is not JSON ({exc})")
            if attempt < retries:
                delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
                time.sleep(max(delay, retry_after or 0.0))
        assert last is not None
        if unreachable == retries + 1:
            raise BackendUnavailable(f"model {self.name}: no server answered at {', '.join(self.base_urls)}: {last} "
                                     f"(after {retries + 1} attempts)")
        raise ServerError(f"{last} (after {retries + 1} attempts)", last.status)

    # -- context and tokens -------------------------------------------------------------------

    @property
    def context_length(self) -> int | None:  # type: ignore[override]
        if not self._context_probed:
            self._context_probed = True
            try:
                models = self._request("GET", "/models", retries=len(self.base_urls) - 1).get("data", [])
                for entry in models:
                    if entry.get("id") == self.model and entry.get("max_model_len"):
                        self._context_length = int(entry["max_model_len"])
            except ServerError:
                pass
        return self._context_length

    def _tokenize(self, conversation: Conversation, add_generation_prompt: bool,
                  continue_final_message: bool = False) -> list[int] | None:
        """Token ids from vLLM's /tokenize, or None when the server has no such endpoint."""
        if self._tokenize_ok is False:
            return None
        body = {"model": self.model, "messages": conversation, "add_generation_prompt": add_generation_prompt,
                "continue_final_message": continue_final_message, "add_special_tokens": False}
        if self.chat_template:
            body["chat_template"] = self.chat_template
        try:
            answer = self._request("POST", "/tokenize", body, root=True)
        except ServerError as exc:
            if exc.status in (400, 404, 405, 422, 501):
                self._tokenize_ok = False
                return None
            raise
        tokens = answer.get("tokens")
        if not isinstance(tokens, list):
            self._tokenize_ok = False
            return None
        self._tokenize_ok = True
        if answer.get("max_model_len") and self._context_length is None:
            self._context_length = int(answer["max_model_len"])
            self._context_probed = True
        return [int(t) for t in tokens]

    def count_tokens(self, conversation: Conversation) -> int:
        conversation = as_conversation(conversation)
        ids = self._tokenize(conversation, conversation[-1]["role"] != "assistant")
        return len(ids) if ids is not None else estimate_tokens(conversation)

    # -- generation ---------------------------------------------------------------------------

    def generate(self, conversations: list[Conversation], params: GenerationParams | None = None
                 ) -> list[list[Generation]]:
        params = params or GenerationParams()
        conversations = [as_conversation(c) for c in conversations]
        return list(self._pool.map(lambda c: self._generate_one(c, params), conversations))

    def _generate_one(self, conversation: Conversation, params: GenerationParams) -> list[Generation]:
        try:
            n_prompt = self._precheck(conversation, params.max_tokens)
        except BackendUnavailable:
            raise
        except ServerError as exc:
            return [Generation("", "error", 0, 0, None, None, str(exc)) for _ in range(params.n)]
        ctx = self.context_length
        if n_prompt is not None and ctx is not None and n_prompt + params.max_tokens > ctx:
            return too_long_generations(params.n, n_prompt, params.max_tokens, ctx)
        samples: list[Generation] = []
        attempt = 0
        while len(samples) < params.n:
            # Servers without `n` (llama.cpp, Ollama) answer once: ask again for the rest.
            want = params.n - len(samples)
            seed = params.seed if attempt == 0 or params.seed is None else sample_seed(
                params.seed, attempt, json.dumps(conversation))
            try:
                got = self._chat(conversation, params, want, seed)
            except BackendUnavailable:
                raise
            except ServerError as exc:
                if exc.context_exceeded:
                    # The server's own words: our count and context length, if any, said it fits.
                    message = str(exc)
                    return [Generation("", "too_long", n_prompt or 0, 0, [], [], message) for _ in range(params.n)]
                samples += [Generation("", "error", n_prompt or 0, 0, None, None, str(exc)) for _ in range(want)]
                break
            if not got:
                samples += [Generation("", "error", n_prompt or 0, 0, None, None, "the server returned no choices")
                            for _ in range(want)]
                break
            samples += got[:want]
            attempt += 1
        return samples

    def _precheck(self, conversation: Conversation, max_tokens: int) -> int | None:
        """The prompt's exact token count when it might not fit, else None (no extra round trip)."""
        ctx = self.context_length
        if ctx is None or _upper_bound_tokens(conversation) + max_tokens <= ctx:
            return None  # fits for sure, or nothing to check against
        ids = self._tokenize(conversation, True)
        return None if ids is None else len(ids)  # None: the server will say if it is too long

    def _chat(self, conversation: Conversation, params: GenerationParams, n: int, seed: int | None) -> list[Generation]:
        body: dict = {"model": self.model, "messages": conversation, "max_tokens": params.max_tokens,
                      "temperature": params.temperature, "top_p": params.top_p, "n": n}
        if seed is not None:
            body["seed"] = seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_k:
            body["top_k"] = params.top_k  # a vLLM/SGLang extension
        if self.chat_template:
            body["chat_template"] = self.chat_template  # vLLM extension
        body.update(self._structured(params))
        want_logprobs = params.logprobs and self._logprobs_ok
        if want_logprobs:
            body["logprobs"] = True
        try:
            answer = self._request("POST", "/chat/completions", body)
        except ServerError as exc:
            if want_logprobs and exc.status == 400 and "logprob" in str(exc).lower():
                self._logprobs_ok = False  # this server does not do logprobs: ask without them
                body.pop("logprobs")
                answer = self._request("POST", "/chat/completions", body)
            else:
                raise
        usage = answer.get("usage") or {}
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        n_prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        out = []
        for choice in choices:
            message = choice.get("message") or {}
            text = message.get("content") or ""
            content = (choice.get("logprobs") or {}).get("content")
            logprobs = [float(t["logprob"]) for t in content] if isinstance(content, list) else None
            n_tokens = len(logprobs) if logprobs is not None else (completion // max(1, len(choices)))
            reason = FINISH_MAP.get(choice.get("finish_reason"), "stop")
            error = f"the server stopped with {choice.get('finish_reason')!r}" if reason == "error" else None
            out.append(Generation(text, reason, n_prompt, n_tokens, None,
                                  logprobs if params.logprobs else None, error))
        return out

    def _structured(self, params: GenerationParams) -> dict:
        if params.guided_choice is None and params.guided_regex is None:
            return {}
        if self.structured_outputs == "none":
            raise NotImplementedError(f"model {self.name}: structured output is off for this server "
                                      "(extra.structured_outputs = none)")
        if self.structured_outputs == "legacy":  # vLLM < 0.12, SGLang
            if params.guided_choice is not None:
                return {"guided_choice": list(params.guided_choice)}
            return {"guided_regex": params.guided_regex}
        if params.guided_choice is not None:
            return {"structured_outputs": {"choice": list(params.guided_choice)}}
        return {"structured_outputs": {"regex": params.guided_regex}}

    # -- scoring ------------------------------------------------------------------------------

    def score(self, conversations: list[Conversation], responses: list[str | list[int]]) -> list[ScoreResult]:
        if len(conversations) != len(responses):
            raise ValueError(f"score needs one response per conversation, got {len(conversations)} "
                             f"conversations and {len(responses)} responses")
        pairs = [(as_conversation(c), r) for c, r in zip(conversations, responses, strict=True)]
        return list(self._pool.map(lambda pair: self._score_one(*pair), pairs))

    def _score_one(self, conversation: Conversation, response: str | list[int]) -> ScoreResult:
        prompt = self._tokenize(conversation, True)
        if prompt is None:
            raise NotImplementedError(
                f"model {self.name}: scoring needs the server's /tokenize endpoint and /v1/completions "
                "with echo + logprobs (vLLM has both); this server has no /tokenize")
        if isinstance(response, str):
            full = self._tokenize(conversation + [{"role": "assistant", "content": response}], False, True)
            if full is None or full[: len(prompt)] != prompt:
                return ScoreResult(None, None, 0, error="the response's tokens do not extend the prompt's "
                                   "under this server's chat template")
        else:
            full = prompt + [int(t) for t in response]
        n_resp = len(full) - len(prompt)
        ctx = self.context_length
        if ctx is not None and len(full) + 1 > ctx:
            return ScoreResult(None, None, n_resp, too_long=True,
                               error=f"prompt {len(prompt)} + response {n_resp} tokens exceed the context length {ctx}")
        if n_resp == 0:
            return ScoreResult(0.0, None, 0)
        try:
            values = self._echo(full, len(prompt))
        except BackendUnavailable:
            raise
        except ServerError as exc:
            return ScoreResult(None, None, n_resp, too_long=exc.context_exceeded, error=str(exc))
        if any(v is None for v in values):
            return ScoreResult(None, None, n_resp, error="the server left some response logprobs empty")
        return ScoreResult.from_logprobs([float(v) for v in values])

    def _echo(self, full: list[int], start: int) -> list[float | None]:
        """log P(full[j] | full[:j]) for j ≥ start, by echoing `full` as a completion prompt.
        Raises ServerError (context exceeded, server trouble), or NotImplementedError when the
        server refuses echo + logprobs: a missing feature, not a failed call."""
        body = {"model": self.model, "prompt": full, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 0}
        try:
            answer = self._request("POST", "/completions", body)
        except ServerError as exc:
            if not exc.context_exceeded and exc.status is not None and 400 <= exc.status < 500:
                raise NotImplementedError(f"model {self.name}: the server refused echo + logprobs scoring: {exc}") \
                    from None
            raise
        choice = (answer.get("choices") or [{}])[0]
        token_logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        if not isinstance(token_logprobs, list) or len(token_logprobs) < len(full):
            raise NotImplementedError(f"model {self.name}: the server did not echo the prompt's logprobs")
        return token_logprobs[start: len(full)]

    # -- label log-probabilities --------------------------------------------------------------

    def choice_logprobs(self, conversations: list[Conversation], choices, *, prefill: str = ""
                        ) -> list[ChoiceLogprobs]:
        labels = check_choices(choices)
        conversations = [open_turn(c) for c in conversations]
        return list(self._pool.map(lambda c: self._labels_one(c, labels, prefill), conversations))

    def _labels_one(self, conversation: Conversation, labels: list[str], prefill: str) -> ChoiceLogprobs:
        opened = conversation + [{"role": "assistant", "content": prefill}] if prefill else conversation
        try:
            prompt = self._tokenize(opened, not prefill, bool(prefill))
            if prompt is None:
                return self._labels_from_top_logprobs(conversation, labels, prefill)
            fulls = [self._tokenize(conversation + [{"role": "assistant", "content": prefill + label}], False, True)
                     for label in labels]
        except BackendUnavailable:
            raise
        except ServerError as exc:
            return ChoiceLogprobs.failed(str(exc))
        for label, full in zip(labels, fulls, strict=True):
            if full is None or len(full) <= len(prompt) or full[: len(prompt)] != prompt:
                return ChoiceLogprobs.failed(f"the tokens of label {label!r} do not extend the prompt's under this "
                                             "server's chat template", len(prompt))
        ctx = self.context_length
        longest = max(len(full) for full in fulls)
        if ctx is not None and longest + 1 > ctx:
            return ChoiceLogprobs.failed(f"prompt of {len(prompt)} tokens + a label of {longest - len(prompt)} "
                                         f"exceeds the context length {ctx}", len(prompt), too_long=True)
        totals = []
        for full in fulls:
            try:
                values = self._echo(full, len(prompt))
            except BackendUnavailable:
                raise
            except ServerError as exc:
                return ChoiceLogprobs.failed(str(exc), len(prompt), too_long=exc.context_exceeded)
            if any(v is None for v in values):
                return ChoiceLogprobs.failed("the server left some label logprobs empty", len(prompt))
            totals.append(sum(float(v) for v in values))
        return ChoiceLogprobs(exclusive_logprobs(totals, [full[len(prompt):] for full in fulls]), len(prompt))

    def _labels_from_top_logprobs(self, conversation: Conversation, labels: list[str], prefill: str
                                  ) -> ChoiceLogprobs:
        """The standard API's `top_logprobs` of the first answer token (see the module docstring)."""
        if prefill:
            raise NotImplementedError(
                f"model {self.name}: a pre-filled answer ({prefill!r}) needs the server's /tokenize and echo + "
                "logprobs (vLLM has both); this server has no /tokenize. Use the generate judge mode")
        body = {"model": self.model, "messages": conversation, "max_tokens": 1, "temperature": 0,
                "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        if self.chat_template:
            body["chat_template"] = self.chat_template
        try:
            answer = self._request("POST", "/chat/completions", body)
        except BackendUnavailable:
            raise
        except ServerError as exc:
            if exc.status == 400 and "logprob" in str(exc).lower():
                raise NotImplementedError(f"model {self.name}: the server refuses top_logprobs: {exc}") from None
            return ChoiceLogprobs.failed(str(exc), too_long=exc.context_exceeded)
        content = (((answer.get("choices") or [{}])[0]).get("logprobs") or {}).get("content")
        top = content[0].get("top_logprobs") if isinstance(content, list) and content else None
        if not isinstance(top, list) or not top:
            raise NotImplementedError(f"model {self.name}: the server returned no top_logprobs, so label "
                                      "probabilities cannot be read; use the generate judge mode")
        # Tokens that read the same once stripped (" 4", "4") are the same label: add their mass.
        mass: dict[str, float] = {}
        for entry in top:
            key = str(entry.get("token", "")).strip()
            mass[key] = mass.get(key, 0.0) + math.exp(float(entry["logprob"]))
        values = [math.log(mass[label.strip()]) if mass.get(label.strip(), 0.0) > 0 else -math.inf
                  for label in labels]
        return ChoiceLogprobs(values, int((answer.get("usage") or {}).get("prompt_tokens") or 0))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is best effort
        return exc.reason or ""
    try:
        payload = json.loads(raw)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)[:500]
    except ValueError:
        return raw[:500]


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return min(60.0, float(value)) if value else None
    except ValueError:
        return None
