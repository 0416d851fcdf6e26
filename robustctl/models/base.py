"""What every architecture of the ``model`` group shares: the option registry it adds itself to,
and the interface the rest of robustctl relies on (:class:`EmbeddingModel`).

A new architecture is one module of this package: its config dataclass (with ``name``, the
option), a builder ``(cfg, *, num_classes, in_channels, mean, std, logit_sign, transform) ->
model`` and one ``OPTIONS.add(config, builder)`` per option; ``robustctl.models`` imports every
module of the package, so the option exists once the file does.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn

from robustctl.config.registry import OptionRegistry

OPTIONS: OptionRegistry = OptionRegistry("model")


class ModelOutput(NamedTuple):
    logits: Tensor  # [N, K] raw logits Z (before any test-time transform)
    embedding: Tensor  # [N, D] the embedding z the losses shape and the detectors read


@runtime_checkable
class EmbeddingModel(Protocol):
    """The model interface losses, detectors, attacks and stages rely on. Inputs are [N, C, H, W]
    images in [0, 1] (normalization and the input transform happen inside the model).

    - ``forward(x) -> ModelOutput(logits Z [N, K], embedding z [N, D])``; ``head(z) == Z``.
    - ``embed(x) -> z``, the embedding layer PDM's KDE detector reads.
    - ``layer_outputs(x, layers) -> {name: [N, C_l]}``: one forward pass returning the asked
      intermediate layers (spatially averaged) out of ``layer_names`` (input side first, last
      ``embedding``); the layer-wise detectors (LID, Mahalanobis) read these.
    - ``predict_logits(x) = logit_sign * Z``: the logits the model predicts with (``logit_sign``
      is -1 for a model trained with reverse cross-entropy); ``prediction_view()`` wraps it as a
      plain images -> logits module for third-party attack libraries.
    - ``num_classes``, ``in_channels``, ``embedding_dim``: the sizes.
    """

    num_classes: int
    in_channels: int
    embedding_dim: int
    head: nn.Module

    @property
    def layer_names(self) -> tuple[str, ...]: ...

    def embed(self, x: Tensor) -> Tensor: ...

    def layer_outputs(
        self, x: Tensor, layers: tuple[str, ...] | list[str]
    ) -> dict[str, Tensor]: ...

    def predict_logits(self, x: Tensor) -> Tensor: ...

    def prediction_view(self) -> nn.Module: ...
