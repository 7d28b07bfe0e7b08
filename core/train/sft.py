"""The SFT loop: `train(config, examples, output_dir, progress=...) -> TrainResult`.

A small explicit torch loop, not TRL's SFTTrainer or a transformers Trainer subclass, because
what Winnow needs sits exactly where those are hard to bend:
- per-sample weights normalised over the whole optimizer step (core.train.loss): Trainer hands
  compute_loss an unweighted token count; TRL's collators and packing drop extra columns;
- checkpoints that are complete or absent (written to a temporary folder, then renamed), with the
  config beside them and exact resume (optimizer, scheduler, RNG, data position);
- a plain progress callback and a stop flag a job worker can wrap.
The loop is ~150 lines; the rest (AdamW, schedulers, peft, save_pretrained, DDP) is library code.

Data parallel: under `torchrun`/`accelerate launch` (WORLD_SIZE > 1) the model is wrapped in DDP
(gloo on CPU, nccl on GPU). Every process builds the same batches from the seed; step k's
micro-batches are dealt out round-robin, and the loss denominator is the whole step's, so the
result matches one process with `grad_accum × world_size` micro-batches (up to float order).
With `parallel: fsdp` the same schedule runs on a sharded model instead (torch's FSDP2,
`fully_shard` on every transformer block, then the root): each process holds 1/world of the
parameters, gradients and AdamW state. Checkpoints stay whole: the full model and optimizer
state are gathered onto rank 0's CPU and saved as for one process (safetensors), so any
checkpoint loads with from_pretrained; a resume shards them again. Under `accelerate launch`
the launch config decides processes and machines; the trainer config decides ddp or fsdp (an
FSDP launch config with `parallel: ddp` is refused rather than silently not sharding).

Output folder:
    checkpoint-<step>/   model or LoRA adapter (safetensors), tokenizer, train_config.json,
                         trainer_state.json, optimizer.pt, scheduler.pt, rng.pt
    .tmp-checkpoint-*    a checkpoint being written (or abandoned by a kill): ignored, removed
    model/               the final model (full) or adapter (lora) with tokenizer and config
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.train.config import CONFIG_FILE, TrainConfig, default_target_modules
from core.train.data import Batch, Example, TokenizeStats, epoch_batches, tokenize_examples
from core.train.loss import weighted_loss_sum

STATE_FILE = "trainer_state.json"
FINAL_DIR = "model"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
ProgressFn = Callable[..., None]


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path | None  # None when stopped before the end
    step: int
    total_steps: int
    stopped: bool = False
    resumed_from: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # every progress record of this run
    data: dict = field(default_factory=dict)  # TokenizeStats
    train_seconds: float = 0.0  # the loop only (no model load, no final save)
    load_seconds: float = 0.0
    tokens: int = 0  # real tokens processed by this run, all processes
    steps: int = 0  # optimizer steps taken by this run

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.train_seconds if self.train_seconds else 0.0

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None

    def to_dict(self) -> dict:
        return {"output_dir": str(self.output_dir), "model_dir": str(self.model_dir) if self.model_dir else None,
                "step": self.step, "total_steps": self.total_steps, "stopped": self.stopped,
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                "checkpoints": [str(p) for p in self.checkpoints], "history": self.history, "data": self.data,
                "train_seconds": self.train_seconds, "load_seconds": self.load_seconds, "tokens": self.tokens,
                "steps": self.steps, "tokens_per_s": self.tokens_per_s, "steps_per_s": self.steps_per_s}


# --------------------------------------------------------------------------------------------
# Checkpoint folders
# --------------------------------------------------------------------------------------------


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first. A folder is complete once renamed into place; one
    without its state file (copied by hand, damaged) is not counted."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := CHECKPOINT_RE.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished temporary folder into place (atomic on one filesystem)."""
    if final.exists():  # the same step written again (a re-run after a crash between rename and exit)
        stale = final.with_name(f".stale-{final.name}-{os.getpid()}")
        final.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp.rename(final)


def publish_final(output_dir: Path, result, write_model: Callable[[Path], None]) -> Path:
    """The end of a finished run (sft and ranking alike): the model written by write_model into a
    temporary folder with train_result.json beside it, then renamed to output_dir/final at once,
    so a reader never sees a half-written final model. Returns that folder."""
    final = output_dir / FINAL_DIR
    tmp = output_dir / f".tmp-{FINAL_DIR}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model(tmp)
    (tmp / "train_result.json").write_text(json.dumps({**result.to_dict(), "model_dir": str(final)}, indent=1))
    _publish(tmp, final)
    return final


MERGED_SUFFIX = ".merged"


def resolve_base(base_model: str) -> Path:
    """A built-in name, builtin:<name>, or a local folder → the model folder. A LoRA adapter folder
    (a round trained with method lora is the next round's base) is folded into its base once, into
    `<adapter folder>.merged` beside it, and training starts from that full model."""
    from core.llm import builtin

    name = base_model[len("builtin:"):] if base_model.startswith("builtin:") else base_model
    if name in builtin.BUILTIN_NAMES:
        return builtin.model_path(name)
    folder = Path(base_model).expanduser()
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        return merged_adapter(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"base_model {base_model!r} is neither a built-in model "
                                f"({', '.join(builtin.BUILTIN_NAMES)}) nor a model folder with a config.json")
    return folder


def merged_adapter(adapter_dir: Path) -> Path:
    """The full model of a LoRA adapter, merged once and reused (complete or absent: merged into a
    temporary folder, then renamed, so concurrent processes under torchrun or a killed job never
    see half a model)."""
    from core.llm.hf import merge_adapter

    final = adapter_dir.with_name(adapter_dir.name + MERGED_SUFFIX)
    if (final / "config.json").is_file():
        return final
    tmp = adapter_dir.with_name(f"{adapter_dir.name}{MERGED_SUFFIX}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    merge_adapter(adapter_dir, tmp)
    try:
        tmp.rename(final)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str | None) -> _Dist:
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _check_launcher(config: TrainConfig) -> None:
    """`accelerate launch` with an FSDP config sets ACCELERATE_USE_FSDP; a trainer config that
    says ddp would then train unsharded without a word, so it is an error instead."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and config.parallel != "fsdp":
        raise ValueError(f"accelerate launch was given an FSDP config (ACCELERATE_USE_FSDP=true), but the trainer "
                         f"config has parallel {config.parallel!r}: set parallel: fsdp in the trainer config")


def _shard(model, dev, world: int) -> None:
    """FSDP2 in place: each transformer block (the classes transformers never splits), then the root,
    so one block's parameters are gathered at a time. Called before the optimizer is built: the
    optimizer must hold the sharded parameters."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    mesh = init_device_mesh(dev.type, (world,))
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps the model
    blocks = set(getattr(base, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _no_grad_sync(train_model):
    """A micro-batch that only accumulates: DDP's no_sync(), FSDP2's gradient-sync switch."""
    if not hasattr(train_model, "set_requires_gradient_sync"):
        return train_model.no_sync()

    @contextlib.contextmanager
    def unsynced():
        train_model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            train_model.set_requires_gradient_sync(True)

    return unsynced()


def _device_and_dtype(config: TrainConfig, device: str | None, d: _Dist):
    import torch

    if device is None:
        device = f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", d.local_rank)
    if config.dtype == "float32":
        return dev, None
    if config.dtype == "bfloat16":
        if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"dtype 'bfloat16' was asked for, but {torch.cuda.get_device_name(dev)} does not "
                             "support it; use dtype 'float32' or 'auto'")
        return dev, torch.bfloat16
    # auto: bf16 where the GPU has it; float32 elsewhere (fp16 would need loss scaling)
    bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    return dev, (torch.bfloat16 if bf16 else None)


def _load_model(config: TrainConfig, base: Path, resume: Path | None, dev):
    """Float32 master weights (autocast does the bf16 compute); LoRA wraps the base with peft."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(dtype=torch.float32, use_safetensors=True, local_files_only=True,
                  trust_remote_code=config.trust_remote_code)
    weights = resume if (resume is not None and config.method == "full") else base
    model = AutoModelForCausalLM.from_pretrained(weights, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(resume or base, local_files_only=True,
                                              trust_remote_code=config.trust_remote_code)
    if config.chat_template:
        tokenizer.chat_template = config.chat_template
    model.config.use_cache = False
    if config.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # the name from transformers 5.2x on
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.method == "lora":
        from peft import LoraConfig, PeftModel, get_peft_model

        if config.gradient_checkpointing:
            model.enable_input_require_grads()
        if resume is not None:
            model = PeftModel.from_pretrained(model, resume, is_trainable=True)
        else:
            targets = config.target_modules or default_target_modules(getattr(model.config, "model_type", None))
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                              target_modules=list(targets) if isinstance(targets, tuple) else targets,
                              bias="none", task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
    return model.to(dev), tokenizer


def _optimizer(model, config: TrainConfig):
    import torch

    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)  # no decay on norms and biases
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8)


def _scheduler(optimizer, config: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup"}.get(config.lr_scheduler, config.lr_scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


class _Schedule:
    """Which micro-batches step k uses: epoch k // steps_per_epoch, built from the seed."""

    def __init__(self, tokenized, config: TrainConfig, pad_id: int, world: int):
        self.tokenized, self.config, self.pad_id, self.world = tokenized, config, pad_id, world
        self.per_step = config.grad_accum * world
        self._epoch, self._batches = -1, []
        n = len(self._epoch_batches(0))
        self.steps_per_epoch = max(1, math.ceil(n / self.per_step))
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch

    def _epoch_batches(self, epoch: int) -> list[Batch]:
        if epoch != self._epoch:
            c = self.config
            batches = epoch_batches(self.tokenized, c.batch_size, c.max_seq_len, c.packing, self.pad_id, c.seed, epoch)
            if self.world > 1:  # every process needs the same number of micro-batches in a step
                keep = len(batches) - len(batches) % self.world
                if keep == 0:
                    raise ValueError(f"{len(batches)} micro-batch(es) an epoch cannot feed {self.world} processes: "
                                     "use more data or a smaller batch_size")
                batches = batches[:keep]
            self._epoch, self._batches = epoch, batches
        return self._batches

    def step(self, k: int) -> list[Batch]:
        epoch, j = divmod(k, self.steps_per_epoch)
        return self._epoch_batches(epoch)[j * self.per_step: (j + 1) * self.per_step]


def _tensors(batch: Batch, dev):
    import torch

    inputs = {"input_ids": torch.tensor(batch.input_ids, device=dev),
              "position_ids": torch.tensor(batch.position_ids, device=dev),
              "use_cache": False}  # with a KV cache, transformers would not derive the packed mask
    if batch.attention_mask is not None:
        inputs["attention_mask"] = torch.tensor(batch.attention_mask, device=dev)
    return inputs, torch.tensor(batch.targets, device=dev), torch.tensor(batch.weights, device=dev)


# --------------------------------------------------------------------------------------------
# Saving and resuming
# --------------------------------------------------------------------------------------------


def _rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _full_state(model, optimizer, sharded: bool) -> tuple[dict | None, dict | None]:
    """A sharded model's whole state, gathered onto rank 0's CPU (a collective: every process calls
    it; the others get empty dicts); (None, None) when unsharded, where rank 0 saves its own copy.
    optimizer None: the model's only."""
    if not sharded:
        return None, None
    from torch.distributed.checkpoint import state_dict as dcp

    options = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = dcp.get_model_state_dict(model, options=options)
    # Gathered copies no longer share storage, so save_pretrained would write a tied weight
    # (lm_head = embed_tokens) twice; keep the name named_parameters keeps, as it would.
    kept = {name for name, _ in model.named_parameters()}
    for name, _ in model.named_parameters(remove_duplicate=False):
        if name not in kept:
            model_state.pop(name, None)
    optimizer_state = dcp.get_optimizer_state_dict(model, optimizer, options=options) if optimizer else None
    return model_state, optimizer_state


def _load_optimizer_state(optimizer, model, path: Path, dev, sharded: bool) -> None:
    import torch

    state = torch.load(path, map_location="cpu" if sharded else dev, weights_only=True)
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _save_model(model, tokenizer, config: TrainConfig, folder: Path, model_state: dict | None = None) -> None:
    # peft: the adapter only; full: the whole model (safetensors). model_state: gathered from shards.
    model.save_pretrained(folder, state_dict=model_state)
    tokenizer.save_pretrained(folder)
    config.save(folder)


def _save_checkpoint(output_dir: Path, step: int, model, tokenizer, optimizer, scheduler, config: TrainConfig,
                     state: dict, full_state: tuple[dict | None, dict | None] = (None, None)) -> Path:
    import torch

    model_state, optimizer_state = full_state
    tmp = output_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_model(model, tokenizer, config, tmp, model_state)
    torch.save(optimizer_state if optimizer_state is not None else optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_state(), tmp / "rng.pt")
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))  # last: its presence marks a whole folder
    final = output_dir / f"checkpoint-{step}"
    _publish(tmp, final)
    if config.save_total_limit:
        for old in checkpoints(output_dir)[: -config.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _resume_point(output_dir: Path, resume_from) -> Path | None:
    if resume_from in (None, False):
        return None
    if resume_from is True or resume_from == "latest":
        return latest_checkpoint(output_dir)  # None: nothing saved yet, start fresh
    folder = Path(resume_from)
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume_from {str(resume_from)!r} is not a complete checkpoint (no {STATE_FILE})")
    return folder


def _check_resume_config(config: TrainConfig, folder: Path) -> None:
    saved = TrainConfig.load(folder)
    changed = saved.differences(config)
    if changed:
        pairs = ", ".join(f"{k}: {getattr(saved, k)!r} → {getattr(config, k)!r}" for k in changed)
        raise ValueError(f"cannot resume from {folder}: the trainer config changed ({pairs}); only "
                         "logging_steps, save_steps and save_total_limit may change on resume")


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(config: TrainConfig, examples: Sequence[Example], output_dir: str | Path, progress: ProgressFn | None = None,
          *, resume_from: str | Path | bool | None = None, should_stop: Callable[[], bool] | None = None,
          device: str | None = None, threads: int | None = None) -> TrainResult:
    """Fine-tune `config.base_model` on `examples`; checkpoints and the final model go under output_dir.

    progress(step=, total_steps=, epoch=, loss=, lr=, grad_norm=, tokens_per_s=, eta_s=, tokens=,
    elapsed_s=) is called on the main process every `logging_steps` steps and at the last step;
    `loss` is the mean of the steps' weighted losses since the previous call.
    resume_from: "latest"/True (the newest complete checkpoint in output_dir, or a fresh start
    when there is none), a checkpoint folder, or None (a fresh start, refused when output_dir
    already holds checkpoints). should_stop() is asked after every step: when it returns true a
    checkpoint is written and the result says stopped.
    device: e.g. "cpu" or "cuda:0" (default: this process's GPU, else the CPU). threads: torch's
    CPU threads, process-wide. On a shared CPU, oversubscribed threads spin: on 2 busy cores one
    thread trained tiny-random 2-5x faster than two (measured).
    """
    import torch

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, not {type(config).__name__}")
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    output_dir = Path(output_dir)
    _check_launcher(config)
    d = _init_distributed(device)
    if d.main:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in output_dir.glob(".tmp-checkpoint-*"):  # left by a killed run: never a checkpoint
            shutil.rmtree(stale, ignore_errors=True)
    resume = _resume_point(output_dir, resume_from)
    if resume is not None:
        _check_resume_config(config, resume)
    elif resume_from in (None, False) and checkpoints(output_dir):
        # a later "latest" would mix this run with the earlier one's checkpoints
        raise FileExistsError(f"{output_dir} holds checkpoints of an earlier run ({latest_checkpoint(output_dir).name}): "
                              "resume it (resume_from='latest') or train into another folder")
    dev, amp_dtype = _device_and_dtype(config, device, d)
    base = resolve_base(config.base_model)
    torch.manual_seed(config.seed)  # LoRA init and dropout
    model, tokenizer = _load_model(config, base, resume, dev)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    tokenized, stats = tokenize_examples(examples, tokenizer, config.max_seq_len)
    if not tokenized:
        raise ValueError(f"no trainable example: {_stats_text(stats)}")
    schedule = _Schedule(tokenized, config, pad_id, d.world)
    total = schedule.total_steps
    sharded = d.world > 1 and config.parallel == "fsdp"
    if sharded:
        _shard(model, dev, d.world)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config, total)
    step, history_all = 0, []
    if resume is not None:
        state = json.loads((resume / STATE_FILE).read_text())
        step, history_all = int(state["step"]), state.get("log_history", [])
        _load_optimizer_state(optimizer, model, resume / "optimizer.pt", dev, sharded)
        scheduler.load_state_dict(torch.load(resume / "scheduler.pt", weights_only=True))
        _set_rng_state(torch.load(resume / "rng.pt", weights_only=True))
    train_model = model
    if d.world > 1 and not sharded:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(output_dir, None, step, total, resumed_from=resume, data=stats.to_dict(),
                         load_seconds=time.perf_counter() - started)
    autocast = (torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext())

    def state_dict(k: int) -> dict:
        return {"step": k, "total_steps": total, "epoch": k / schedule.steps_per_epoch, "world_size": d.world,
                "base_model_path": str(base), "method": config.method, "log_history": history_all,
                "data": stats.to_dict()}

    def save(k: int) -> None:
        full_state = _full_state(model, optimizer, sharded)
        if d.main:
            result.checkpoints.append(_save_checkpoint(output_dir, k, model, tokenizer, optimizer, scheduler,
                                                       config, state_dict(k), full_state))
        if d.world > 1:
            torch.distributed.barrier()

    loop_start = last_log = time.perf_counter()
    losses, tokens_since, first_step, last_saved = [], 0, step, step
    while step < total:
        micro = schedule.step(step)
        denominator = sum(b.weight_sum for b in micro)  # the whole step's Σ w_i |resp(i)|, every process
        mine = micro[d.rank:: d.world]
        train_model.train()
        step_loss = torch.zeros((), device=dev)
        for j, batch in enumerate(mine):
            sync = j == len(mine) - 1 or d.world == 1
            with (contextlib.nullcontext() if sync else _no_grad_sync(train_model)):
                inputs, targets, weights = _tensors(batch, dev)
                with autocast:
                    logits = train_model(**inputs).logits
                share = weighted_loss_sum(logits, targets, weights) / denominator
                # DDP and FSDP average gradients over processes; the shares must add up, so scale back.
                (share * d.world).backward()
                step_loss += share.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a replicated DTensor
            grad_norm = grad_norm.full_tensor()
        lr = scheduler.get_last_lr()[0]  # the rate this step used (the scheduler then moves on)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if d.world > 1:
            torch.distributed.all_reduce(step_loss)
        step += 1
        n_tokens = sum(b.n_tokens for b in micro)
        result.tokens += n_tokens
        tokens_since += n_tokens
        losses.append(float(step_loss))
        if step % config.logging_steps == 0 or step == total:
            now = time.perf_counter()
            record = {"step": step, "total_steps": total, "epoch": round(step / schedule.steps_per_epoch, 4),
                      "loss": sum(losses) / len(losses), "lr": lr,
                      "grad_norm": float(grad_norm), "tokens_per_s": tokens_since / max(now - last_log, 1e-9),
                      "eta_s": (now - loop_start) / (step - first_step) * (total - step), "tokens": result.tokens,
                      "elapsed_s": now - loop_start}
            losses, tokens_since, last_log = [], 0, now
            history_all.append(record)
            result.history.append(record)
            if progress is not None and d.main:
                progress(**record)
        stop = bool(should_stop()) if (should_stop is not None and d.main) else False
        if d.world > 1:
            flag = torch.tensor([int(stop)], device=dev)
            torch.distributed.broadcast(flag, 0)
            stop = bool(flag.item())
        if (config.save_steps and step % config.save_steps == 0) or (stop and step < total):
            save(step)
            last_saved = step
        if stop and step < total:
            result.stopped = True
            break
    result.train_seconds = time.perf_counter() - loop_start
    result.step, result.steps = step, step - first_step
    if result.stopped:
        return result
    if last_saved != step or not (output_dir / f"checkpoint-{step}").is_dir():
        save(step)
    model_state, _ = _full_state(model, None, sharded)  # a collective: every rank takes part
    if d.main:
        publish_final(output_dir, result, lambda tmp: _save_model(model, tokenizer, config, tmp, model_state))
    if d.world > 1:
        torch.distributed.barrier()
    result.model_dir = output_dir / FINAL_DIR
    return result


def _stats_text(stats: TokenizeStats) -> str:
    return (f"{stats.n_examples} example(s), {stats.n_zero_weight} with weight 0, {stats.n_too_long} whose prompt "
            "fills max_seq_len")


__all__ = ["CONFIG_FILE", "TrainResult", "checkpoints", "latest_checkpoint", "resolve_base", "train"]
