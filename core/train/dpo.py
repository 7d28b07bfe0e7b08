"""Zephyr's direct preference optimisation (Rafailov et al. 2023; Tunstall et al. 2023, arXiv
2310.16944 §2.3; DESIGN.md §6), as the training objective `dpo` (core.train.objectives).

    L = −log σ(β · [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])

over the preference pairs (x, chosen y_w, rejected y_l) of a *preference* snapshot; π_ref is the
model training starts from (in Zephyr the dSFT model). The loop is TRL's DPOTrainer: DPO needs no
per-token weights, so the reasons core.train.sft keeps its own loop do not apply here, and TRL's
reference handling (a frozen copy, the adapter switched off under LoRA, or log-probs computed
once before training: `precompute_ref_log_probs`) is well tested library code.

What this module adds around it, so a DPO job looks like every other training job:
- settings: beta (0.1, the paper; the later recipe used 0.01), loss_type (sigmoid), whether to
  precompute the reference, an optional max_prompt_length; everything else is our TrainConfig;
- the snapshot's rows as TRL's conversational format, with the same conversation generation
  and SFT show the model (core.generate.conversation_for) and the chat template the TrainConfig
  or the tokenizer has; pairs of weight 0 are left out (other weights are not applied: DPO's
  loss is a mean over pairs, as in the paper);
- checkpoints `checkpoint-<step>` (HF Trainer's, with trainer_state.json and our
  train_config.json + dpo_config.json beside), a checkpoint at the last step always, resume from
  the newest, the final model (or LoRA adapter) with its tokenizer in `output_dir/model`;
- `should_stop` honoured at a step boundary (a checkpoint is written, then training stops);
- progress(**record) with core.train.sft's record fields plus DPO's rewards (chosen, rejected,
  accuracies, margins) from TRL's logs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from core.train.config import TrainConfig

BETA = 0.1
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down")
DPO_CONFIG_FILE = "dpo_config.json"
SETTINGS = {"kind", "beta", "loss_type", "precompute_ref_log_probs", "max_prompt_length"}
# TRL's log keys → the names in our progress records (a "/" is awkward in JSON column names).
REWARD_KEYS = {"rewards/chosen": "rewards_chosen", "rewards/rejected": "rewards_rejected",
               "rewards/accuracies": "rewards_accuracies", "rewards/margins": "rewards_margins",
               "logps/chosen": "logps_chosen", "logps/rejected": "logps_rejected"}

__all__ = ["BETA", "LOSS_TYPES", "data_source", "parse_objective", "preference_rows", "train_dpo",
           "train_objective"]


# --------------------------------------------------------------------------------------------
# The objective contract
# --------------------------------------------------------------------------------------------


def parse_objective(d: dict) -> dict:
    """{"kind": "dpo", "beta", "loss_type", "precompute_ref_log_probs", "max_prompt_length"}
    validated, defaults filled; errors name the key and the value."""
    unknown = sorted(set(d) - SETTINGS)
    if unknown:
        raise ValueError(f"objective dpo: unknown setting(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(SETTINGS - {'kind'}))}")
    beta = d.get("beta", BETA)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"objective dpo: beta must be a number > 0, not {beta!r}")
    loss_type = d.get("loss_type", "sigmoid")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"objective dpo: loss_type must be one of {', '.join(LOSS_TYPES)}, not {loss_type!r}")
    precompute = d.get("precompute_ref_log_probs", False)
    if not isinstance(precompute, bool):
        raise ValueError(f"objective dpo: precompute_ref_log_probs must be true or false, not {precompute!r}")
    max_prompt = d.get("max_prompt_length")
    if max_prompt is not None and (isinstance(max_prompt, bool) or not isinstance(max_prompt, int) or max_prompt < 1):
        raise ValueError(f"objective dpo: max_prompt_length must be an integer ≥ 1 or null, not {max_prompt!r}")
    return {"kind": "dpo", "beta": float(beta), "loss_type": loss_type, "precompute_ref_log_probs": precompute,
            "max_prompt_length": max_prompt}


def data_source(ws, name: str, objective: dict) -> dict:
    from core.train.objectives import snapshot_source

    return snapshot_source(ws, name, "preference")


def train_objective(config, objective: dict, parquet, output_dir, progress, should_stop, threads):
    return train_dpo(config, objective, preference_rows(parquet), output_dir, progress=progress,
                     should_stop=should_stop, threads=threads)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def preference_rows(parquet) -> list[dict]:
    """A preference snapshot's Parquet (core.curate: instruction, input, system, history, chosen,
    rejected, weight, pair_id) as TRL's conversational rows {prompt, chosen, rejected, pair_id}:
    the prompt is the conversation generation showed the model; weight-0 pairs are left out."""
    import pyarrow.parquet as pq

    from core.generate import conversation_for

    table = pq.read_table(parquet)
    missing = {"instruction", "chosen", "rejected"} - set(table.column_names)
    if missing:
        raise ValueError(f"{parquet}: not a preference snapshot (no {', '.join(sorted(missing))} column; columns "
                         f"are {', '.join(table.column_names)})")
    rows = []
    for r in table.to_pylist():
        if r.get("weight") is not None and float(r["weight"]) == 0:
            continue
        prompt = conversation_for(r["instruction"], r.get("input"), r.get("system"), r.get("history"))
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": r["chosen"]}],
                     "rejected": [{"role": "assistant", "content": r["rejected"]}],
                     "pair_id": r.get("pair_id")})
    return rows


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _dpo_args(config: TrainConfig, objective: dict, output_dir: Path, use_cpu: bool, bf16: bool):
    from trl import DPOConfig

    steps = {"max_steps": config.max_steps} if config.max_steps else {"num_train_epochs": config.epochs}
    warmup = config.warmup_steps or config.warmup_ratio  # transformers 5: a float < 1 is a ratio
    return DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        lr_scheduler_type={"constant": "constant_with_warmup"}.get(config.lr_scheduler, config.lr_scheduler),
        warmup_steps=warmup, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm or 1e9,
        seed=config.seed, data_seed=config.seed, logging_steps=config.logging_steps,
        # Checkpoints: every save_steps (0: none on the way); the last step and a stop always save
        # (the callback below), so the job's contract (a checkpoint at the end) holds either way.
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit, gradient_checkpointing=config.gradient_checkpointing,
        max_length=config.max_seq_len, beta=objective["beta"], loss_type=[objective["loss_type"]],
        precompute_ref_log_probs=objective["precompute_ref_log_probs"], report_to="none", use_cpu=use_cpu,
        bf16=bf16, disable_tqdm=True, dataloader_num_workers=0, save_only_model=False,
        model_init_kwargs=None, **steps)


def _with_prompt_limit(rows: list[dict], tokenizer, limit: int | None) -> tuple[list[dict], int]:
    """Pairs whose templated prompt fits max_prompt_length (TRL 1.16 truncates only the whole
    sequence, to max_length): longer ones are left out, and counted."""
    if limit is None:
        return rows, 0
    kept = [r for r in rows if len(tokenizer.apply_chat_template(r["prompt"], tokenize=True,
                                                                 add_generation_prompt=True)) <= limit]
    return kept, len(rows) - len(kept)


def train_dpo(config: TrainConfig, objective: dict, rows: list[dict], output_dir, progress=None, *,
              should_stop=None, threads: int | None = None, device: str | None = None):
    """DPO from config.base_model (also the reference) on `rows` ({prompt, chosen, rejected});
    resumes from the newest complete checkpoint in output_dir. Returns core.train.sft.TrainResult."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOTrainer

    from core.train import sft
    from core.train.config import default_target_modules

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, not {type(config).__name__}")
    objective = parse_objective(dict(objective))
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resume = sft.latest_checkpoint(output_dir)
    if resume is not None:
        _check_resume(config, objective, resume)
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    bf16 = use_cuda and config.dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    base = sft.resolve_base(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True, trust_remote_code=config.trust_remote_code)
    if config.chat_template:
        tokenizer.chat_template = config.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows, too_long = _with_prompt_limit(list(rows), tokenizer, objective["max_prompt_length"])
    if not rows:
        raise ValueError(f"no preference pair to train on ({too_long} with a prompt over max_prompt_length)"
                         if too_long else "no preference pair to train on (the snapshot is empty or all weight 0)")
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True,
                                                 local_files_only=True, trust_remote_code=config.trust_remote_code)
    model.config.use_cache = False
    peft_config = None
    if config.method == "lora":
        from peft import LoraConfig

        targets = config.target_modules or default_target_modules(getattr(model.config, "model_type", None))
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=list(targets) if isinstance(targets, tuple) else targets,
                                 bias="none", task_type="CAUSAL_LM")
    args = _dpo_args(config, objective, output_dir, use_cpu=not use_cuda, bf16=bf16)
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    history: list[dict] = []
    state = {"loop_start": None, "last_log": None, "tokens_at_log": 0, "first_step": 0}

    class _Winnow(TrainerCallback):
        """Progress records, our config files beside each checkpoint, a checkpoint at the end
        and on a stop request."""

        def on_train_begin(self, args_, st, control, **kw):
            state["loop_start"] = state["last_log"] = time.perf_counter()
            state["first_step"] = st.global_step

        def on_step_end(self, args_, st, control, **kw):
            state["loop_end"] = time.perf_counter()  # before any checkpoint of this step is written
            # Rank 0 decides and the others follow (as core.train.sft does): processes that read the
            # cancel file each on their own could disagree at a step, and one would wait forever.
            stop = bool(should_stop()) if (should_stop is not None and st.is_world_process_zero) else False
            if torch.distributed.is_available() and torch.distributed.is_initialized() \
                    and torch.distributed.get_world_size() > 1:
                flag = torch.tensor([int(stop)])
                torch.distributed.broadcast(flag, 0)
                stop = bool(flag.item())
            if st.global_step >= st.max_steps or stop:
                control.should_save = True
            if stop and st.global_step < st.max_steps:
                control.should_training_stop = True
            return control

        def on_save(self, args_, st, control, **kw):
            folder = output_dir / f"checkpoint-{st.global_step}"
            if folder.is_dir():
                config.save(folder)
                (folder / DPO_CONFIG_FILE).write_text(json.dumps(objective, indent=1))

        def on_log(self, args_, st, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs or not st.is_world_process_zero:  # a summary, or not the job's writer
                return
            now = time.perf_counter()
            tokens = int(logs.get("num_tokens", 0) or 0)
            done = st.global_step - state["first_step"]
            elapsed = now - state["loop_start"]
            record = {"step": st.global_step, "total_steps": st.max_steps,
                      "epoch": round(float(logs.get("epoch", st.epoch or 0.0)), 4), "loss": float(logs["loss"]),
                      "lr": float(logs.get("learning_rate", 0.0)), "grad_norm": float(logs.get("grad_norm", 0.0)),
                      "tokens": tokens,
                      "tokens_per_s": (tokens - state["tokens_at_log"]) / max(now - state["last_log"], 1e-9),
                      "eta_s": elapsed / max(done, 1) * (st.max_steps - st.global_step), "elapsed_s": elapsed}
            record |= {ours: float(logs[theirs]) for theirs, ours in REWARD_KEYS.items() if theirs in logs}
            state["last_log"], state["tokens_at_log"] = now, tokens
            history.append(record)
            if progress is not None:
                progress(**record)

    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[_Winnow()])
    result = sft.TrainResult(output_dir, None, 0, 0, resumed_from=resume,
                             data={"n_pairs": len(rows), "n_prompt_too_long": too_long},
                             load_seconds=time.perf_counter() - started)
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    st = trainer.state
    # The loop's time, as core.train.sft counts it: without the last checkpoint and the final save.
    result.train_seconds = (state.get("loop_end") or time.perf_counter()) - (state["loop_start"] or started)
    result.step, result.total_steps = st.global_step, st.max_steps
    result.steps = st.global_step - state["first_step"]
    result.history = history
    result.tokens = int(history[-1]["tokens"]) if history else 0
    result.checkpoints = sft.checkpoints(output_dir)
    if st.global_step < st.max_steps:
        result.stopped = True
        return result
    final = output_dir / sft.FINAL_DIR
    tmp = output_dir / f".tmp-{sft.FINAL_DIR}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainer.model.save_pretrained(tmp)  # peft: the adapter only; full: the whole model (safetensors)
    tokenizer.save_pretrained(tmp)
    config.save(tmp)
    (tmp / DPO_CONFIG_FILE).write_text(json.dumps(objective, indent=1))
    (tmp / "train_result.json").write_text(json.dumps({**result.to_dict(), "model_dir": str(final),
                                                       "train_loss": out.training_loss}, indent=1))
    sft._publish(tmp, final)
    result.model_dir = final
    return result


def _check_resume(config: TrainConfig, objective: dict, folder: Path) -> None:
    """A resumed run must compute what the first one did: same trainer config and DPO settings."""
    from core.train import sft

    if (folder / "train_config.json").is_file():
        sft._check_resume_config(config, folder)
    saved_file = folder / DPO_CONFIG_FILE
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        changed = sorted(k for k in objective if saved.get(k) != objective[k])
        if changed:
            pairs = ", ".join(f"{k}: {saved.get(k)!r} → {objective[k]!r}" for k in changed)
            raise ValueError(f"cannot resume from {folder}: the DPO settings changed ({pairs})")
