"""Inference, below training, attacks and evaluation: devices, eval mode, the prediction view.

- :func:`model_device`: where a module's parameters live (the device every input is moved to).
- :func:`eval_mode`: put a module in eval mode for a block and restore its mode afterwards.
- :func:`prediction_logits`: the logits a model *predicts* with: ``model.predict_logits(x)``
  for project models (``logit_sign * Z``, so an RCE-trained ResNet predicts with ``-Z``), else
  ``model(x)`` (any images -> logits module, e.g. a third-party classifier).
- :func:`predict` (logits and embeddings), :func:`predict_labels` and :func:`accuracy`: batched,
  in eval mode, on the model's device, results on the CPU.
- :class:`MemoryBackoff`: halve a batch (or block) size when the device runs out of memory, and
  say so once; attacks and KDE scoring retry with it (training does not: it would change results).
- :class:`ModelOutputs`: one evaluation's single pass over each split (train, val, test), computed
  on first use and shared by clean accuracy, the diagnostics, the detector fit and the threat
  stages.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


def model_device(model: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of the model's first parameter or buffer (``default`` for a stateless module)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return torch.device(default) if first is None else first.device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block; the previous mode is restored on exit, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def prediction_logits(model: nn.Module, x: Tensor) -> Tensor:
    """Logits [N, K] the model predicts with (see the module docstring)."""
    predict_fn = getattr(model, "predict_logits", None)
    out = predict_fn(x) if callable(predict_fn) else model(x)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """``(prediction_logits, embeddings)`` of a project model (``embed``, ``head``, ``logit_sign``),
    computed batch by batch in eval mode on the model's device; both returned on the CPU."""
    device = model_device(model)
    logits, embeddings = [], []
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            z = model.embed(x[start : start + batch_size].to(device, non_blocking=True))
            logits.append((model.logit_sign * model.head(z)).cpu())
            embeddings.append(z.cpu())
    if not logits:
        return torch.empty(0, model.num_classes), torch.empty(0, model.embedding_dim)
    return torch.cat(logits), torch.cat(embeddings)


@torch.no_grad()
def predict_labels(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted classes [N] (CPU) through the prediction view, batch by batch in eval mode."""
    device = model_device(model, default=x.device)
    with eval_mode(model):
        preds = [
            prediction_logits(model, x[i : i + batch_size].to(device)).argmax(1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Fraction of (x, y) the model classifies correctly; NaN for no examples."""
    if len(y) == 0:
        return float("nan")
    return (predict_labels(model, x, batch_size) == y.cpu()).float().mean().item()


@dataclass(frozen=True)
class SplitOutputs:
    """A model's outputs on one split, on the CPU: prediction logits [N, K], embeddings [N, D]."""

    logits: Tensor
    embeddings: Tensor

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(1)

    def subset(self, idx: Tensor) -> SplitOutputs:
        return SplitOutputs(self.logits[idx], self.embeddings[idx])


class ModelOutputs:
    """One evaluation's outputs of a trained model on ``data``'s splits, each computed once.

    ``outputs.split("train")`` (or ``"val"``, ``"test"``) runs :func:`predict` over
    ``data.x_<split>`` on first use and returns the cached :class:`SplitOutputs` afterwards. The
    model must not change while an instance is in use (evaluation never trains it)."""

    SPLITS = ("train", "val", "test")

    def __init__(self, model: nn.Module, data: Any, batch_size: int = 512) -> None:
        self.model, self.data, self.batch_size = model, data, batch_size
        self._cache: dict[str, SplitOutputs] = {}

    def split(self, name: str) -> SplitOutputs:
        if name not in self.SPLITS:
            raise ValueError(f"unknown split {name!r}; one of {', '.join(self.SPLITS)}")
        if name not in self._cache:
            x = getattr(self.data, f"x_{name}")
            self._cache[name] = SplitOutputs(*predict(self.model, x, self.batch_size))
        return self._cache[name]


class MemoryBackoff:
    """The size to use for ``what`` (an attack's batch, the detector's block), halved each time
    the device runs out of memory, down to ``floor``; the first halving is passed to ``announce``
    (once; callers pass the console's print), since smaller batches can change round-off (and
    C&W's batch-level early stop)."""

    def __init__(
        self, what: str, size: int, announce: Callable[[str], Any], floor: int = 1
    ) -> None:
        self.what, self.size, self.floor, self.announce = what, size, floor, announce
        self.halvings = 0

    def shrink(self, error: BaseException) -> int:
        """The halved size after ``error`` (a ``torch.OutOfMemoryError``); re-raises it at the
        floor."""
        if self.size <= self.floor:
            raise error
        old, self.size = self.size, max(self.size // 2, self.floor)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if not self.halvings:
            self.announce(
                f"[yellow]out of device memory[/] in {self.what} at size {old}: "
                f"retrying with {self.size} (halved again if needed)"
            )
        self.halvings += 1
        return self.size
