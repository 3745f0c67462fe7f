"""The one training engine: :func:`fit` with pluggable objectives, exact resume and DDP."""

from xred.engine.loop import TrainConfig, TrainResult, distributed_context, epoch_batches, fit
from xred.engine.objectives import classification, flip_and_shift

__all__ = ["TrainConfig", "TrainResult", "classification", "distributed_context",
           "epoch_batches", "fit", "flip_and_shift"]
