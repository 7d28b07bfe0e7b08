"""Named model specs and `load_backend` (DESIGN.md §5).

A spec says which backend runs a model and where the model is: a local Hugging Face folder
(`hf`, `vllm`), one or more OpenAI-compatible servers (`openai`), or a Python function named as
"module:function" (`python`: synthetic teachers and exact-match judges, see python_backend.py).
`path` may also name a built-in model's cache folder as `builtin:<name>`, e.g. to serve SmolLM2
with vLLM.

Built-ins (always listed, never shadowed by a user spec): `tiny-random` and
`smollm2-135m-instruct`. User specs live in the workspace catalog (`Workspace.add_model`).
API keys are never stored: a spec names the environment variable that holds one.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from core.llm import builtin, python_backend
from core.llm.base import DTYPES, Backend

BACKENDS = ("hf", "vllm", "openai", "python")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,79}$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUILTIN_PREFIX = "builtin:"
# Options each backend understands in `extra` (a typo is an error, not a silent default).
EXTRA_KEYS = {
    "hf": {"device", "batch_size", "max_batch_tokens", "threads", "merge_lora"},
    "vllm": {"tensor_parallel_size", "gpu_memory_utilization", "enforce_eager", "seed", "max_num_seqs",
             "engine_args"},
    "openai": {"concurrency", "timeout", "max_retries", "backoff", "max_backoff", "structured_outputs"},
    "python": python_backend.EXTRA_KEYS,
}


def remote_code_files(folder: Path) -> list[str]:
    """The files of a model folder that point transformers at custom code (an `auto_map`)."""
    found = []
    for name in ("config.json", "tokenizer_config.json", "processor_config.json"):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            found.append(name)
    return found


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backend: str = "hf"
    path: str | None = None  # local model folder (hf, vllm), builtin:<name>, or module:function (python)
    base_urls: tuple[str, ...] = ()  # openai: e.g. http://127.0.0.1:8000/v1; requests spread across them
    model: str | None = None  # openai: the model id the server knows
    api_key_env: str | None = None  # openai: name of the environment variable holding the key
    chat_template: str | None = None  # Jinja override of the tokenizer's template
    context_length: int | None = None  # None: from the model config (or the server)
    dtype: str = "auto"
    trust_remote_code: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ValueError(f"model name {self.name!r} is invalid: use 1–80 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        if self.backend not in BACKENDS:
            raise ValueError(f"model {self.name}: backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        urls = self.base_urls
        if isinstance(urls, str):
            urls = (urls,)
        urls = tuple(u.rstrip("/") if isinstance(u, str) else u for u in (urls or ()))
        set_(self, "base_urls", urls)
        if self.backend == "openai":
            if not urls:
                raise ValueError(f"model {self.name}: the openai backend needs base_urls "
                                 "(e.g. http://127.0.0.1:8000/v1)")
            for url in urls:
                if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
                    raise ValueError(f"model {self.name}: base URL {url!r} must start with http:// or https://")
            if not isinstance(self.model, str) or not self.model.strip():
                raise ValueError(f"model {self.name}: the openai backend needs `model`, the model id on the "
                                 f"server, not {self.model!r}")
            if self.path is not None:
                raise ValueError(f"model {self.name}: the openai backend takes base_urls, not a path ({self.path!r})")
            if self.api_key_env is not None and (not isinstance(self.api_key_env, str)
                                                 or not ENV_RE.match(self.api_key_env)):
                raise ValueError(f"model {self.name}: api_key_env must be the NAME of an environment variable "
                                 f"(letters, digits, '_'), not {self.api_key_env!r}")
        else:
            if not isinstance(self.path, str) or not self.path.strip():
                what = "a function as module:function" if self.backend == "python" else "a local model folder"
                raise ValueError(f"model {self.name}: the {self.backend} backend needs `path`, {what}, "
                                 f"not {self.path!r}")
            if urls:
                raise ValueError(f"model {self.name}: base_urls are for the openai backend, not {self.backend}")
            if self.api_key_env is not None:
                raise ValueError(f"model {self.name}: api_key_env is for the openai backend, not {self.backend}")
            if self.path.startswith(BUILTIN_PREFIX) and self.path[len(BUILTIN_PREFIX):] not in builtin.BUILTIN_NAMES:
                raise ValueError(f"model {self.name}: {self.path!r} names no built-in model; built-ins are "
                                 f"{', '.join(builtin.BUILTIN_NAMES)}")
        if self.chat_template is not None and (not isinstance(self.chat_template, str) or not self.chat_template.strip()):
            raise ValueError(f"model {self.name}: chat_template must be a non-empty Jinja string or None")
        if self.context_length is not None and (isinstance(self.context_length, bool)
                                                or not isinstance(self.context_length, int)
                                                or self.context_length < 16):
            raise ValueError(f"model {self.name}: context_length must be an integer ≥ 16 or None, "
                             f"not {self.context_length!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model {self.name}: dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"model {self.name}: trust_remote_code must be true or false, not {self.trust_remote_code!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"model {self.name}: extra must be a dict, not {self.extra!r}")
        unknown = set(self.extra) - EXTRA_KEYS[self.backend]
        if unknown:
            raise ValueError(f"model {self.name}: unknown option(s) {', '.join(sorted(unknown))} for the "
                             f"{self.backend} backend; known: {', '.join(sorted(EXTRA_KEYS[self.backend]))}")
        try:
            json.dumps(self.extra)
        except (TypeError, ValueError):
            raise ValueError(f"model {self.name}: extra must be JSON-serialisable, not {self.extra!r}") from None
        if self.backend == "python":
            try:
                python_backend.check_spec(self)
            except ValueError as exc:
                raise ValueError(f"model {self.name}: {exc}") from None

    @property
    def is_builtin(self) -> bool:
        return self.name in BUILTIN_SPECS and BUILTIN_SPECS[self.name] == self

    def local_path(self) -> Path:
        """The model folder (building a built-in model on first use)."""
        if self.path is None:
            raise ValueError(f"model {self.name} is served over HTTP; it has no local folder")
        if self.path.startswith(BUILTIN_PREFIX):
            return builtin.model_path(self.path[len(BUILTIN_PREFIX):])
        return Path(self.path).expanduser()

    def check_files(self) -> None:
        """A local folder must exist and hold config.json and safetensors weights (never pickles);
        a python model's function must resolve (its module is imported)."""
        if self.backend == "python":
            try:
                python_backend.FunctionModel.from_extra(self.path, self.extra)
            except ValueError as exc:
                raise ValueError(f"model {self.name}: {exc}") from None
            return
        if self.path is None or self.path.startswith(BUILTIN_PREFIX):
            return
        folder = Path(self.path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"model {self.name}: no folder at {folder}")
        if self.backend == "hf" and (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
            from core.llm.hf import adapter_base  # a LoRA adapter: its base must be there too

            try:
                adapter_base(folder)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"model {self.name}: {exc}") from None
        elif not (folder / "config.json").is_file():
            raise FileNotFoundError(f"model {self.name}: {folder} holds no config.json (not a Hugging Face "
                                    "model folder)")
        if not any(folder.glob("*.safetensors")):
            raise FileNotFoundError(f"model {self.name}: {folder} holds no *.safetensors weights; Winnow loads "
                                    "safetensors only (convert .bin/.pt checkpoints first)")
        custom = remote_code_files(folder)
        if custom and not self.trust_remote_code:
            raise ValueError(f"model {self.name}: {', '.join(custom)} in {folder} name custom Python code (auto_map); "
                             "Winnow runs no code from a model folder unless you turn on trust_remote_code for this "
                             "model, after reading that code")

    @property
    def warning(self) -> str | None:
        """What a page or the CLI says beside a model that may run code from its folder."""
        if self.trust_remote_code:
            return (f"model {self.name} has trust_remote_code on: loading it runs Python code from its folder "
                    "with your permissions")
        return None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["base_urls"] = list(self.base_urls)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        if not isinstance(d, dict):
            raise ValueError(f"a model spec must be a mapping, not {d!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model spec field(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        if "name" not in d:
            raise ValueError("a model spec needs a name")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls.from_dict(json.loads(text))


BUILTIN_SPECS: dict[str, ModelSpec] = {
    "tiny-random": ModelSpec("tiny-random", "hf", path="builtin:tiny-random", context_length=builtin.TINY_CONTEXT,
                             dtype="float32"),
    "smollm2-135m-instruct": ModelSpec("smollm2-135m-instruct", "hf", path="builtin:smollm2-135m-instruct",
                                       context_length=8192, dtype="auto"),
}


def builtin_specs() -> list[ModelSpec]:
    return list(BUILTIN_SPECS.values())


def get_builtin(name: str) -> ModelSpec:
    try:
        return BUILTIN_SPECS[name]
    except KeyError:
        raise ValueError(f"no built-in model {name!r}; built-ins are {', '.join(BUILTIN_SPECS)}") from None


def load_backend(spec: ModelSpec | dict | str) -> Backend:
    """Load a model from its spec, or the spec's dict (`ModelSpec.to_dict()`, e.g. from a job's
    config), or a built-in's name (workspace models go through Workspace.model)."""
    if isinstance(spec, str):
        spec = get_builtin(spec)
    elif isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec)
    extra = spec.extra
    if spec.backend == "hf":
        from core.llm.hf import HFBackend

        spec.check_files()
        return HFBackend(spec.local_path(), name=spec.name, chat_template=spec.chat_template,
                         context_length=spec.context_length, dtype=spec.dtype, device=extra.get("device"),
                         trust_remote_code=spec.trust_remote_code, batch_size=extra.get("batch_size"),
                         max_batch_tokens=extra.get("max_batch_tokens"), threads=extra.get("threads"),
                         merge_lora=bool(extra.get("merge_lora", False)))
    if spec.backend == "vllm":
        from core.llm.vllm_backend import VLLMBackend

        spec.check_files()
        return VLLMBackend(spec.local_path(), name=spec.name, chat_template=spec.chat_template,
                           context_length=spec.context_length, dtype=spec.dtype,
                           trust_remote_code=spec.trust_remote_code,
                           tensor_parallel_size=extra.get("tensor_parallel_size", 1),
                           gpu_memory_utilization=extra.get("gpu_memory_utilization"),
                           enforce_eager=extra.get("enforce_eager", False), seed=extra.get("seed", 0),
                           max_num_seqs=extra.get("max_num_seqs"), engine_args=extra.get("engine_args"))
    if spec.backend == "python":
        return python_backend.PythonBackend.from_spec(spec)
    from core.llm.openai_backend import OpenAIBackend

    return OpenAIBackend(list(spec.base_urls), spec.model or "", name=spec.name, api_key_env=spec.api_key_env,
                         context_length=spec.context_length, chat_template=spec.chat_template, **extra)
