"""Training: one loop for the overfit test and full training, its checkpoints, and torchrun.

Modules, in the order they import each other: ``distributed`` (torchrun), ``scoring``
(predict, per-split metrics), ``checkpoint`` (the checkpoint format, written and read there
only), ``setup`` (a run's device, graphs, model, optimizer and batches), ``state`` (the loop
state: history, best epoch, early stopping, snapshots), ``epoch`` (one epoch's steps and its
record), ``loop`` (:func:`train`: the phases in order).
"""

from gatrank.training.checkpoint import checkpoint_config
from gatrank.training.epoch import NonFiniteError
from gatrank.training.loop import TrainResult, train
from gatrank.training.scoring import predict

__all__ = ["NonFiniteError", "TrainResult", "predict", "train", "checkpoint_config"]
