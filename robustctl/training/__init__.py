"""Training: the loop, schedules, checkpoints, devices."""

from robustctl.training.checkpoint import (
    checkpoint_slot,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from robustctl.training.trainer import TrainResult, checkpoint_path, fit

__all__ = [
    "TrainResult",
    "checkpoint_path",
    "checkpoint_slot",
    "fit",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
]
