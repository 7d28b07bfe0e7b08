"""Generation benchmarks on the built-in SmolLM2-135M (CPU here; GPU when present).

- hf_batched_vs_loop: the hf backend on 32 prompts in batches versus one prompt at a time.
- generate_job_vs_direct: Winnow's generate job (its own process: snapshot, shards, progress,
  ingest) versus calling the backend directly on the same prompts (target ≥ 0.9). The job's time
  includes loading the model in the job process; the direct call's includes loading it too.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import job_start, report  # noqa: E402
from core import jobs  # noqa: E402
from core.demo import EVAL_FILE  # noqa: E402
from core.llm.base import GenerationParams  # noqa: E402
from core.llm.registry import load_backend  # noqa: E402
from core.workspace import Workspace  # noqa: E402

MODEL = "smollm2-135m-instruct"


def prompts(n: int) -> list[list[dict]]:
    rows = [json.loads(line) for line in EVAL_FILE.read_text().splitlines()]
    texts = [r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "") for r in rows]
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(n)]


def tokens(generations) -> int:
    return sum(g.n_tokens for samples in generations for g in samples)


def hf_batched_vs_loop(n: int = 32, max_tokens: int = 32) -> None:
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
    convs = prompts(n)
    with load_backend(MODEL) as backend:
        backend.generate(convs[:2], params)  # warm up
        start = time.perf_counter()
        batched = backend.generate(convs, params)
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        loop = [backend.generate([c], params)[0] for c in convs]
        loop_s = time.perf_counter() - start
    report("hf_batched_vs_loop", model=MODEL, prompts=n, max_tokens=max_tokens,
           batched_tok_per_s=round(tokens(batched) / batched_s, 1), loop_tok_per_s=round(tokens(loop) / loop_s, 1),
           speedup=round(loop_s / batched_s, 2))


SHARD = 16  # prompts per job shard


def generate_job_vs_direct(n: int = 32, max_tokens: int = 32) -> None:
    params = {"temperature": 0.0, "max_tokens": max_tokens}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        ws.import_paths([EVAL_FILE], "eval", fmt="prompts")
        rows = ws.store.instructions_for_job(ws_selection(), n)
        from core.generate import conversation_for

        convs = [conversation_for(r["text"], r["input"], r["system"], r["history"]) for r in rows]
        start = time.perf_counter()
        with load_backend(MODEL) as backend:  # the job's work: its two shards of SHARD prompts, one call each
            # (one call of all 32 would sort them by length across both shards: less padding, other work)
            direct = [g for k in range(0, len(convs), SHARD)
                      for g in backend.generate(convs[k:k + SHARD], GenerationParams(**params))]
        direct_s = time.perf_counter() - start
        timings = {}
        for start_kind in ("cold", "warm"):  # a first job starts cold; later ones fork (core.warm)
            job_id = ws.create_job("generate", {"model": MODEL, "role": f"student_{start_kind}", **params},
                                   ws_selection(), limit=n, shard_size=SHARD)
            with job_start(warm_start=start_kind == "warm"):
                start = time.perf_counter()
                jobs.launch(ws.job_dir(job_id))
                info = jobs.wait(ws.job_dir(job_id), poll=0.1)
                ingested = ws.ingest_job(job_id)
                timings[start_kind] = time.perf_counter() - start
            assert info["status"] == "done", info
        ws.close()
    report("generate_job_vs_direct", model=MODEL, prompts=n, max_tokens=max_tokens, direct_s=round(direct_s, 2),
           job_s=round(timings["warm"], 2), cold_job_s=round(timings["cold"], 2),
           ratio=round(direct_s / timings["warm"], 3), cold_ratio=round(direct_s / timings["cold"], 3),
           target_ratio=0.9, direct_tokens=tokens(direct), job_rows=ingested["rows"])


def ws_selection():
    from core.store import ExploreFilter

    return ExploreFilter(datasets=["eval"])


if __name__ == "__main__":
    hf_batched_vs_loop()
    generate_job_vs_direct()
