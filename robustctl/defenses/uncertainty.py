"""Bayesian-uncertainty detector by Monte-Carlo dropout (Feinman et al. 2017, "Detecting
adversarial samples from artifacts", arXiv:1703.00410, section 4.1 and eq. 3).

For an input x, T stochastic forward passes under dropout give softmax vectors p_1 .. p_T
(p_t = softmax of the prediction logits under dropout sample t); the uncertainty is

    U(x) = (1/T) sum_t p_t^T p_t - m^T m,      m = (1/T) sum_t p_t,

computed as the equal, non-negative form (1/T) sum_t ||p_t - m||^2 (the sum of the per-class
variances of p over the dropout samples; no cancellation in float32). The score is U itself:
adversarial examples tend to lie where the dropout ensemble disagrees, so larger = more
adversarial, as in Feinman et al. ``classes`` does not enter the score.

Departure: the project's ResNets have no dropout layer (Feinman et al. read the dropout of their
networks' fully-connected layers). Here dropout of rate p = ``dropout`` (default 0.5) is applied
to the embedding z just before the linear head, with inverted scaling: sample t sees

    logits_t = logit_sign * head(z * b_t / (1 - p)),    b_t in {0, 1}^D, P(b_t,i = 0) = p,

the prediction view of :meth:`robustctl.models.ResNet.predict_logits` with z dropped out. Only
the head is stochastic, so one forward pass up to z serves all T = ``samples`` (default 50)
samples, and the detector needs nothing but z (it reads no other layer and no image): scores can
come from an evaluation's stored embeddings. The head is the one of the model the probe was
taken from (``probe.model``); ``fit_on`` records the model's embedding dim (the masks' size,
checked at scoring) and class count.

Masks. ``masks`` [T, D] (a buffer: ``.to(device)`` moves it, ``state_dict`` saves it) holds the
keep masks b_1 .. b_T, drawn at ``fit_on`` from a CPU generator seeded with ``seed``. With
``fixed_masks`` (default) every image of every call is scored with these same T masks, so scores
are deterministic and do not depend on how images are batched. With ``fixed_masks=False`` every
call draws fresh masks, T per image ([T, N, D], per-sample as Keras' dropout draws them), from
the same generator continued, so repeated calls give different scores.

Gradient. The score is the Monte-Carlo average over the T samples itself, a smooth function of
z (hence of the image), so its gradient is the Monte-Carlo estimate of the expectation over
dropout of the per-sample gradients: Expectation over Transformation (EOT, Athalye et al. 2018).
With fixed masks a white-box attack (C&W-wb) minimizes the uncertainty under those T masks (a
fixed T-sample EOT estimate: an attack can overfit to them, which a defender drawing other masks
would not share); with ``fixed_masks=False`` each step sees fresh masks, an EOT estimate that is
averaged over the attack's steps as well.

Example:
    >>> det = BUDetector(samples=50).fit_on(inputs)
    >>> scores = det.score_probe(Probe(model, x), predictions)   # [N], larger = more adversarial
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robustctl.config.validation import configured, require
from robustctl.defenses.base import Detector, FitInputs, LogScaleAttack, Probe, batches
from robustctl.inference import model_device

__all__ = ["BUConfig", "BUDetector", "uncertainty"]

BU_VAL_UNCERTAINTY = "bu/val_uncertainty"  # mean U of the clean validation images
BU_SAMPLES = "bu/samples"
BU_DROPOUT = "bu/dropout"


@dataclass
class BUConfig:
    """The ``defense=bu`` option (module docstring for the formula).

    ``dropout``: the rate p of the dropout applied to the embedding before the head (a unit is
    zeroed with probability p, kept ones scaled by 1/(1-p)); ``samples``: T, the dropout samples
    per image; ``fixed_masks``: the same T masks (drawn at fit) for every call, so scores are
    deterministic (false: fresh masks per call); ``seed``: the masks' generator.
    """

    name: str = "bu"
    dropout: float = 0.5
    samples: int = 50
    fixed_masks: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        require(
            0.0 < self.dropout < 1.0, "defense.dropout", f"must be in (0, 1), got {self.dropout}"
        )
        require(
            self.samples >= 2,
            "defense.samples",
            f"must be >= 2 (one sample has no variance), got {self.samples}",
        )


def uncertainty(probs: Tensor) -> Tensor:
    """U over the sample dim 0 of ``probs`` [T, N, K]: (1/T) sum_t ||p_t - m||^2, [N]."""
    mean = probs.mean(0, keepdim=True)
    return (probs - mean).square().sum(-1).mean(0)


class BUDetector(LogScaleAttack, Detector):
    """MC-dropout uncertainty of the prediction (module docstring); larger = more adversarial.

    Build with a :class:`BUConfig` or its fields as keywords (``BUDetector(samples=20)``).
    Buffers: ``masks`` [T, D] keep masks (0/1, float32), drawn by :meth:`fit_on` (or
    :meth:`draw_masks`).
    """

    config_type = BUConfig
    option = "bu"
    masks: Tensor

    def __init__(self, config: BUConfig | None = None, /, **params: Any) -> None:
        super().__init__()
        config = configured(BUConfig, config, params)
        self.config = config
        self.dropout, self.samples, self.fixed_masks = (
            float(config.dropout),
            int(config.samples),
            bool(config.fixed_masks),
        )
        self.register_buffer("masks", torch.zeros(0, 0))
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.embedding_dim = 0
        self.num_classes = 0
        self.val_uncertainty_ = float("nan")

    @property
    def fitted(self) -> bool:
        return self.embedding_dim > 0

    def draw_masks(self, embedding_dim: int, num_classes: int) -> BUDetector:
        """Restart the generator at ``seed`` and draw the T fixed masks for embeddings of
        ``embedding_dim``; what :meth:`fit_on` does, for callers without :class:`FitInputs`."""
        self.generator.manual_seed(int(self.config.seed))
        self.embedding_dim, self.num_classes = int(embedding_dim), int(num_classes)
        self.masks = self._draw((self.samples, self.embedding_dim)).to(self.masks.device)
        return self

    def _draw(self, shape: tuple[int, ...]) -> Tensor:
        return (torch.rand(shape, generator=self.generator) >= self.dropout).float()

    # ------------------------------------------------------------------------------- Detector
    def fit_on(self, inputs: FitInputs) -> BUDetector:
        """Draw the masks for the model's embedding dim (nothing is learned), and note the mean
        uncertainty of the clean validation images (a metric) when there are any."""
        model = inputs.model
        self.draw_masks(int(model.embedding_dim), int(model.num_classes))
        self.val_uncertainty_ = float("nan")
        if len(inputs.data.y_val):
            z_val = inputs.outputs.split("val").embeddings
            head, device = model.head, model_device(model)
            with torch.no_grad():
                total = 0.0
                for zb in batches(z_val, inputs.batch_size):
                    zb = zb.to(device)
                    total += float(self.uncertainty_of(zb, head, model.logit_sign).sum())
            self.val_uncertainty_ = total / len(z_val)
        return self

    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor:
        """U of the probe's embeddings under the probe's model's head ([N]; ``classes`` unused)."""
        model = probe.model
        return self.uncertainty_of(probe.embedding, model.head, model.logit_sign)

    def score_bound(self, probe: Probe, toward: Tensor) -> Tensor:
        """(1/T) sum_t ||p_t - e_toward||^2 >= U: the variance of the dropout predictions is at
        most their mean squared distance from any point, here the one-hot of the class the
        attack moves toward; it is 0 only when every dropout sample predicts that class with
        certainty, so minimizing it flips the prediction and calms the dropout together."""
        model = probe.model
        probs = self.dropout_probabilities(probe.embedding, model.head, model.logit_sign)
        target = torch.nn.functional.one_hot(toward, probs.shape[-1]).to(probs.dtype)
        return (probs - target.unsqueeze(0)).square().sum(-1).mean(0)

    def uncertainty_of(self, z: Tensor, head: torch.nn.Module, logit_sign: Any = 1.0) -> Tensor:
        """U of embeddings ``z`` [N, D] through ``logit_sign * head(dropout(z))``; differentiable
        w.r.t. ``z`` (module docstring: masks, EOT)."""
        return uncertainty(self.dropout_probabilities(z, head, logit_sign))

    def dropout_probabilities(
        self, z: Tensor, head: torch.nn.Module, logit_sign: Any = 1.0
    ) -> Tensor:
        """[T, N, K] softmax of ``logit_sign * head(dropout_t(z))`` for the T dropout samples."""
        if not self.fitted:
            raise RuntimeError("BUDetector is not fitted: call fit_on(inputs) first")
        if z.dim() != 2 or z.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embeddings must have shape [N, {self.embedding_dim}], got {tuple(z.shape)}"
            )
        keep = self.masks if self.fixed_masks else self._draw((self.samples, *z.shape))
        keep = keep.to(device=z.device, dtype=z.dtype)
        if keep.dim() == 2:  # [T, D]: the same masks for every image
            keep = keep.unsqueeze(1)
        dropped = z.unsqueeze(0) * keep / (1.0 - self.dropout)  # [T, N, D]
        return torch.softmax(logit_sign * head(dropped), -1)

    def metrics(self) -> dict[str, float]:
        """``bu/samples``, ``bu/dropout`` and, when the validation split was not empty,
        ``bu/val_uncertainty`` (mean U of its clean images: the scale of a clean score)."""
        out = {BU_SAMPLES: float(self.samples), BU_DROPOUT: self.dropout}
        if self.val_uncertainty_ == self.val_uncertainty_:  # not NaN
            out[BU_VAL_UNCERTAINTY] = self.val_uncertainty_
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # draw_masks() sizes the buffer: adopt the checkpoint's shape before the copy.
        if prefix + "masks" in state_dict:
            cur = self.masks
            self._buffers["masks"] = torch.empty(
                state_dict[prefix + "masks"].shape, dtype=cur.dtype, device=cur.device
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.masks.numel():
            self.embedding_dim = int(self.masks.shape[1])

    def extra_repr(self) -> str:
        state = f"dim={self.embedding_dim}" if self.fitted else "unfitted"
        return (
            f"dropout={self.dropout}, samples={self.samples}, fixed_masks={self.fixed_masks}, "
            f"{state}"
        )
