"""Training: the loop, schedules, checkpoints, devices."""

from robustctl.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from robustctl.training.trainer import TrainResult, checkpoint_path, fit

__all__ = [
    "TrainResult",
    "checkpoint_path",
    "fit",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
]
