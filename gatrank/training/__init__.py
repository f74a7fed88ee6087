"""Training: one loop for the overfit test and full training, its checkpoints, and torchrun."""

from gatrank.training.loop import (
    LossFn,
    NonFiniteError,
    TrainResult,
    checkpoint_config,
    environment_info,
    make_loss_fn,
    predict,
    resolve_device,
    set_seed,
    train,
)

__all__ = [
    "NonFiniteError",
    "TrainResult",
    "LossFn",
    "make_loss_fn",
    "resolve_device",
    "set_seed",
    "predict",
    "train",
    "environment_info",
    "checkpoint_config",
]
