"""What every input transform of the ``transform`` group shares: its config fields, the module
that applies it in front of the network, and the gradient an attack sees through it.

An input transform t maps [0, 1] images to [0, 1] images. It sits in front of the network, in
training and at test time alike (the model is trained on transformed images, as Guo et al. 2018
found necessary to keep clean accuracy), so every attack, detector and evaluation sees the
composite f(t(x)).

Gradients (``gradient``; Athalye, Carlini and Wagner 2018, "Obfuscated gradients give a false
sense of security"). A transform whose autograd gradient is informative (``differentiable = True``)
always passes it. One with a step function inside (rounding, thresholding) has a zero gradient
almost everywhere, which masks the gradient of the composite and makes gradient attacks fail for
the wrong reason:

- ``bpda`` (the default): Backward Pass Differentiable Approximation, t_bpda(x) = t(x) +
  (g(x) - stopgrad(g(x))) with g a differentiable surrogate of t (:meth:`InputTransform.surrogate`:
  the identity, or the soft threshold for edge maps): the value is exactly t(x), the Jacobian
  g's, so a gradient attack differentiates f at t(x) and passes it back to x through g;
- ``exact``: autograd through the implementation as written, i.e. what a naive attacker gets
  (rounding and thresholds: 0). Use it only to show the masking (the tests and the taxonomy
  experiment's naive-attack rows do).

The DFT low-pass (linear) and the median (piecewise linear) have informative exact gradients:
they are ``differentiable`` and ignore ``gradient``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustctl.config.registry import OptionRegistry
from robustctl.config.validation import NoneConfig, configured, require

GRADIENTS = ("bpda", "exact")


# the ``transform`` group's options: ``none``, then each InputTransform subclass, registered by
# being defined (InputTransform.__init_subclass__)
OPTIONS: OptionRegistry = OptionRegistry("transform")
OPTIONS.add(NoneConfig())


@dataclass
class TransformConfig:
    """Fields every transform option shares: its ``name`` and the ``gradient`` attacks see
    (``bpda`` | ``exact``, module docstring)."""

    name: str = ""
    gradient: str = "bpda"

    def __post_init__(self) -> None:
        require(
            self.gradient in GRADIENTS,
            "transform.gradient",
            f"must be one of {', '.join(GRADIENTS)}; got {self.gradient!r}",
        )


def straight_through(surrogate: Tensor, transformed: Tensor) -> Tensor:
    """``transformed`` in value (exactly), with the Jacobian of ``surrogate`` (BPDA): with
    ``surrogate = x`` the identity."""
    return transformed.detach() + (surrogate - surrogate.detach())


def zero_gradient(x: Tensor, transformed: Tensor) -> Tensor:
    """``transformed`` in value, with the zero Jacobian w.r.t. ``x``: the exact derivative of a
    step function (a threshold) almost everywhere, kept in the graph so that an attack asking for
    the gradient gets zeros rather than an error."""
    return transformed.detach() + (x - x.detach()) * 0.0


def full_precision(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast switched off on ``device_type`` where it is on (mixed-precision training would
    otherwise run the DCT, the DFT and the Sobel convolutions in bf16 and move pixels across
    quantization and threshold boundaries); a no-op elsewhere."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (the tests' fake accelerator)
        enabled = False
    return torch.autocast(device_type, enabled=False) if enabled else contextlib.nullcontext()


class InputTransform(nn.Module):
    """Base of every transform (module docstring). A subclass sets ``config_type`` and implements
    :meth:`apply`; ``differentiable`` says whether that implementation's autograd gradient is the
    true one. Transforms hold no learned state: their buffers are not saved in checkpoints (a
    checkpoint records the transform's config instead)."""

    config_type: ClassVar[type[TransformConfig]] = TransformConfig
    differentiable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass whose config names an option (``JPEGConfig.name == "jpeg"``) is that
        option of the ``transform`` group: defining the class registers it in :data:`OPTIONS`."""
        super().__init_subclass__(**kwargs)
        if "config_type" in cls.__dict__ and cls.config_type().name:
            OPTIONS.add(cls.config_type(), cls)

    def __init__(self, config: TransformConfig | None = None, /, **params: Any) -> None:
        super().__init__()
        self.config = configured(self.config_type, config, params)

    def apply(self, x: Tensor) -> Tensor:
        """The transform's value on images ``x`` [N, C, H, W] in [0, 1]."""
        raise NotImplementedError

    def surrogate(self, x: Tensor) -> Tensor:
        """The differentiable g(x) ~ t(x) whose Jacobian BPDA passes back: the identity, unless a
        transform has a closer one (edges: the Sobel magnitude before the threshold)."""
        return x

    def forward(self, x: Tensor) -> Tensor:
        with full_precision(x.device.type):  # bf16 training must not round the transform's steps
            if self.differentiable:
                return self.apply(x)
            if self.config.gradient == "exact":
                out = self.apply(x)
                return out if out.requires_grad or not x.requires_grad else zero_gradient(x, out)
            with torch.no_grad():
                out = self.apply(x)
            return straight_through(self.surrogate(x), out) if x.requires_grad else out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self.config).items())
