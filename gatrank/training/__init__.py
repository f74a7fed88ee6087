"""Training: one loop for the overfit test and full training, its checkpoints, and torchrun.

Modules, in the order they import each other: ``distributed`` (torchrun), ``scoring``
(predict, per-split metrics), ``checkpoint`` (the checkpoint format, written and read there
only), ``dropout`` (dropout off inside any model, for the overfit test), ``setup`` (a run's
device, graphs, model, optimizer and batches), ``state`` (the loop state: history, best epoch,
early stopping, snapshots), ``epoch`` (one epoch's steps and its record), ``loop``
(:func:`train`: the phases in order).
"""

from gatrank.training.checkpoint import checkpoint_config
from gatrank.training.dropout import DropoutOff, format_dropout_off, no_dropout
from gatrank.training.epoch import NonFiniteError
from gatrank.training.loop import TrainResult, train
from gatrank.training.scoring import predict

__all__ = [
    "DropoutOff",
    "NonFiniteError",
    "TrainResult",
    "checkpoint_config",
    "format_dropout_off",
    "no_dropout",
    "predict",
    "train",
]
