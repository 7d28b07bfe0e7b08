"""The trainer's one config (DESIGN.md §4): validated on construction, saved beside every checkpoint.

Errors name the field and the bad value, TRL style. `to_json()` / `from_json()` round-trip
exactly, and `from_dict` refuses unknown keys, so a typo in a recipe is an error, not a default.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

METHODS = ("full", "lora")
SCHEDULERS = ("linear", "cosine", "constant")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")
# How several processes (torchrun / accelerate launch, WORLD_SIZE > 1) share the work: "ddp" keeps a
# whole model and optimizer on each; "fsdp" shards parameters, gradients and optimizer state
# across them (torch's FSDP2, `fully_shard`), for models whose training state does not fit one
# device. One process trains the same way under either.
PARALLEL_MODES = ("ddp", "fsdp")
CONFIG_FILE = "train_config.json"
# Fields that change how a run reports or saves, not what it computes: a resumed run may differ here.
RESUMABLE_CHANGES = frozenset({"logging_steps", "save_steps", "save_total_limit"})

# LoRA targets by model_type: attention and MLP projections (the QLoRA finding: adapting every
# linear layer matters more than r). Other architectures get peft's "all-linear" (every linear
# layer but the output head).
LORA_TARGETS = {
    **dict.fromkeys(("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
                     "gemma3_text", "olmo", "olmo2", "granite", "smollm3"),
                    ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}


def default_target_modules(model_type: str | None) -> tuple[str, ...] | str:
    return LORA_TARGETS.get(model_type or "", "all-linear")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class TrainConfig:
    """Supervised fine-tuning settings.

    base_model: a built-in model's name (`tiny-random`), `builtin:<name>`, or a local Hugging Face
    folder (a workspace model is resolved to its folder by the caller).
    Steps: `max_steps` > 0 fixes the number of optimizer steps (cycling the data as needed);
    0 trains `epochs` passes. One step = `grad_accum` micro-batches of `batch_size` rows per
    process, where a row is one example (packing off) or one packed sequence (packing on).
    dtype: "auto" computes in bfloat16 (autocast, float32 master weights) on a CUDA device with
    bf16 support and in float32 elsewhere; float16 is not offered (it needs loss scaling).
    parallel: under torchrun / accelerate launch, "ddp" (a whole copy per process) or "fsdp"
    (sharded, core.train.sft); either trains like one process with grad_accum × processes.
    """

    base_model: str
    method: str = "full"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # None: by architecture (LORA_TARGETS)
    learning_rate: float = 2e-5
    epochs: int = 1
    max_steps: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 1024
    packing: bool = False
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping (the norm is still reported)
    seed: int = 0
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 0  # 0: a checkpoint at the end only
    save_total_limit: int | None = None  # keep the newest N checkpoints; None: all
    chat_template: str | None = None  # a Jinja override of the tokenizer's template
    trust_remote_code: bool = False
    parallel: str = "ddp"  # PARALLEL_MODES; written to JSON only when not the default (see to_dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            raise ValueError(f"base_model must be a model name or a local folder, not {self.base_model!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        for name in ("lora_r", "lora_alpha", "epochs", "batch_size", "grad_accum", "logging_steps"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, not {value!r}")
        for name in ("max_steps", "warmup_steps", "save_steps", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be an integer ≥ 0, not {value!r}")
        if not _is_int(self.max_seq_len) or self.max_seq_len < 8:
            raise ValueError(f"max_seq_len must be an integer ≥ 8, not {self.max_seq_len!r}")
        if not _is_num(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be a number in [0, 1), not {self.lora_dropout!r}")
        if not _is_num(self.learning_rate) or not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be a number in (0, 1), not {self.learning_rate!r}")
        if not _is_num(self.warmup_ratio) or not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be a number in [0, 1), not {self.warmup_ratio!r}")
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError(f"give warmup_steps ({self.warmup_steps!r}) or warmup_ratio ({self.warmup_ratio!r}), "
                             "not both")
        if not _is_num(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a number ≥ 0, not {self.weight_decay!r}")
        if not _is_num(self.max_grad_norm) or self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be a number ≥ 0 (0: no clipping), not {self.max_grad_norm!r}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, not {self.lr_scheduler!r}")
        if self.parallel not in PARALLEL_MODES:
            raise ValueError(f"parallel must be one of {', '.join(PARALLEL_MODES)}, not {self.parallel!r}")
        if self.dtype not in TRAIN_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TRAIN_DTYPES)}, not {self.dtype!r}")
        for name in ("packing", "gradient_checkpointing", "trust_remote_code"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {getattr(self, name)!r}")
        if self.save_total_limit is not None and (not _is_int(self.save_total_limit) or self.save_total_limit < 1):
            raise ValueError(f"save_total_limit must be an integer ≥ 1 or None, not {self.save_total_limit!r}")
        if self.target_modules is not None:
            targets = self.target_modules
            if isinstance(targets, str):
                targets = (targets,)
            try:
                targets = tuple(targets)
            except TypeError:
                raise ValueError(f"target_modules must be a list of module names or None, "
                                 f"not {self.target_modules!r}") from None
            if not targets or any(not isinstance(t, str) or not t.strip() for t in targets):
                raise ValueError(f"target_modules must be a non-empty list of module names or None, "
                                 f"not {self.target_modules!r}")
            set_(self, "target_modules", targets)
        if self.chat_template is not None and (not isinstance(self.chat_template, str) or not self.chat_template.strip()):
            raise ValueError(f"chat_template must be a non-empty Jinja string or None, not {self.chat_template!r}")

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Every setting, except `parallel` at its default: a config written before that setting
        existed (a checkpoint's train_config.json, a job's config, a model's lineage) keeps its
        exact JSON, and from_dict fills the default back in."""
        d = self._all_settings()
        if d["parallel"] == "ddp":
            del d["parallel"]
        return d

    def _all_settings(self) -> dict:
        d = asdict(self)
        if self.target_modules is not None:
            d["target_modules"] = list(self.target_modules)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a trainer config must be a mapping, not {d!r:.200}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown trainer setting(s): {', '.join(sorted(unknown))}; known: "
                             f"{', '.join(sorted(known))}")
        if "base_model" not in d:
            raise ValueError("a trainer config needs base_model")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    def save(self, folder: Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> TrainConfig:
        return cls.from_json((Path(folder) / CONFIG_FILE).read_text())

    def differences(self, other: TrainConfig) -> list[str]:
        """Fields whose values differ and that change what training computes. `parallel` counts:
        a DDP checkpoint's optimizer state is laid out per parameter index, an FSDP one's per
        parameter name, so one does not resume the other."""
        a, b = self._all_settings(), other._all_settings()
        return sorted(k for k in a if a[k] != b[k] and k not in RESUMABLE_CHANGES)
