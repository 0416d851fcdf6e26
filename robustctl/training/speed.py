"""How the training step runs on its device: precision, memory format, compilation, host syncs.

These settings change speed (and, for ``bf16``, round-off), never what is trained. Resolved once
per run from ``trainer.precision``, ``trainer.channels_last`` and ``trainer.compile``:

- ``precision``: ``fp32``, or ``bf16`` autocast around the model's forward pass; ``auto`` is bf16
  on CUDA and fp32 elsewhere (CPU bf16 autocast is slower than fp32 on most CPUs). The loss is
  computed from the outputs cast back to fp32, and everything outside the training step (the
  validation accuracy, evaluation, attacks, the detector's log-densities) runs in fp32: C&W's small
  steps and KDE log-densities need the precision. bf16 has fp32's exponent range, so no loss
  scaling is needed (fp16 is not offered for that reason).
- ``channels_last``: NHWC memory format for the model and each batch (faster convolutions on
  tensor cores); null = on for CUDA.
- ``compile``: ``torch.compile`` of the module used in the training forward pass (off by default:
  the first epoch pays the compilation; the checkpoint holds the uncompiled module's weights).
- ``sync_every``: the step reads device values (divergence check, progress-bar loss) every this
  many steps: 1 on the CPU, where reading is free, :data:`ACCELERATOR_SYNC_EVERY` elsewhere, so a
  GPU queues many steps ahead of the host.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

ACCELERATOR_SYNC_EVERY = 50
AUTOCAST_DTYPES = {"bf16": torch.bfloat16}


def sync_interval(device: torch.device) -> int:
    """Steps between host reads of device values: 1 on the CPU, where reading is free."""
    return 1 if device.type == "cpu" else ACCELERATOR_SYNC_EVERY


@dataclass(frozen=True)
class StepSettings:
    precision: str  # fp32 | bf16 (resolved)
    channels_last: bool
    compile: bool
    sync_every: int

    @classmethod
    def resolve(cls, trainer: Any, device: torch.device) -> StepSettings:
        on_cuda = device.type == "cuda"
        precision = trainer.precision
        if precision == "auto":
            precision = "bf16" if on_cuda else "fp32"
        channels_last = on_cuda if trainer.channels_last is None else bool(trainer.channels_last)
        return cls(precision, channels_last, bool(trainer.compile), sync_interval(device))

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's autocast context (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[self.precision])

    def images(self, x: Tensor) -> Tensor:
        """A batch in the step's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, model: nn.Module) -> nn.Module:
        """Set the model's memory format; returns the module the training step calls (compiled
        when asked; it shares the model's parameters)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return torch.compile(model) if self.compile else model

    def tags(self) -> dict[str, str]:
        """Logged with the run, so a number can be traced to the precision that produced it."""
        return {
            "train_precision": self.precision,
            "train_channels_last": str(self.channels_last).lower(),
            "train_compile": str(self.compile).lower(),
        }
