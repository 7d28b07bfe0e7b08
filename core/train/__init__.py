"""Supervised fine-tuning (DESIGN.md §4): a config, examples from a snapshot, and `train`.

    from core.train import TrainConfig, examples_from_parquet, train
    result = train(TrainConfig("tiny-random", max_steps=10), examples_from_parquet(path), out_dir,
                   progress=lambda **r: print(r))

`train` and `TrainResult` load lazily (they import torch), so reading or validating a config
(the Train page, a recipe) stays cheap.
"""

from core.train.config import TrainConfig, default_target_modules
from core.train.data import Example, examples_from_parquet

_LAZY = {"train", "TrainResult", "latest_checkpoint", "checkpoints", "resolve_base"}


def __getattr__(name: str):
    if name in _LAZY:
        from core.train import sft

        return getattr(sft, name)
    raise AttributeError(f"module 'core.train' has no attribute {name!r}")


__all__ = ["Example", "TrainConfig", "TrainResult", "checkpoints", "default_target_modules", "examples_from_parquet",
           "latest_checkpoint", "resolve_base", "train"]
