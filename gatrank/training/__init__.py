"""Training: one loop for the overfit test and full training, its checkpoints, and torchrun."""

from gatrank.training.loop import NonFiniteError, TrainResult, checkpoint_config, predict, train

__all__ = ["NonFiniteError", "TrainResult", "predict", "train", "checkpoint_config"]
