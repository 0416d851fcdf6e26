"""Feature-squeezing detector (Xu, Evans and Qi 2018, "Feature squeezing: detecting adversarial
examples in deep neural networks", NDSS, arXiv:1704.01155).

A squeezer s maps an image to a coarser one; an input whose prediction moves a lot under
squeezing is flagged. With f the model's prediction logits (``logit_sign * Z``) and
softmax(f(x)) its probability vector, the score is the joint detector's

    score(x) = max_s || softmax(f(x)) - softmax(f(s(x))) ||_1      (larger = more adversarial)

over the configured squeezers (``classes`` does not enter the score):

- bit-depth reduction to b = ``bits`` bits per channel: x -> round(x * (2^b - 1)) / (2^b - 1),
  with round half to even (``np.rint``, as in the authors' code); default 5. Xu et al. use 1 bit
  for MNIST and 5 bits for CIFAR-10 (4 for ImageNet): set ``bits`` per dataset;
- median smoothing with a k x k window, k = ``median_size`` (default 2, the paper's 2x2 for MNIST
  and CIFAR-10), per image and channel, exactly ``scipy.ndimage.median_filter(x, size=(1, 1, k,
  k), mode="reflect")`` as in the authors' code: the window of output pixel (i, j) covers input
  rows i - k//2 .. i + (k-1) - k//2 (the same for columns), so an even window reaches one pixel
  further up/left than down/right; outside the image the input is mirrored with its edge pixel
  repeated (``reflect``: d c b a | a b c d | d c b a); of an even number k^2 of values the upper
  of the two middle ones is the median (scipy's rank k^2 // 2).

``bits=None`` or ``median_size=None`` leaves that squeezer out (at least one is needed).

Departures: Xu et al.'s CIFAR-10 joint detector also has a non-local-means squeezer (13-3-2),
not implemented here; the detection threshold (their 5% false-positive rate on clean training
images) is not part of the detector: the evaluation thresholds the score like any other.

Gradient. Rounding has a zero gradient almost everywhere, so bit-depth reduction is applied
straight-through (BPDA, Athalye et al. 2018): s_bpda(x) = s(x) + (x - x.detach()), whose value is
exactly s(x) and whose Jacobian is the identity; its branch's gradient is the gradient of f at
s(x), passed back unchanged to x. The median is piecewise linear (each output pixel is one input
pixel of its window), so it keeps its exact gradient: each output pixel's gradient goes to the
input pixel that is its window's median. On a median-smoothing model of the bundled digits the
exact gradient was the stronger attack (PGD-0.25 success 0.995 vs 0.887 through the identity).
The unsqueezed branch's gradient is the true one. A white-box attack (C&W-wb) optimizes through
this.

The detector has no parameters and learns nothing (``fit_on`` returns it unchanged). It runs the
model again on the squeezed images (``reads_images``): one extra forward pass over all squeezed
copies of a batch together.

Example:
    >>> det = FeatureSqueezingDetector(bits=1)                   # MNIST
    >>> scores = det.score_probe(Probe(model, x), predictions)   # [N], in [0, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robustctl.config.validation import configured, require
from robustctl.defenses.base import Detector, FitInputs, LogScaleAttack, Probe
from robustctl.inference import prediction_logits
from robustctl.transforms.base import straight_through
from robustctl.transforms.bit_depth import bit_depth
from robustctl.transforms.median import median_smooth

__all__ = [
    "FeatureSqueezingDetector",
    "SqueezeConfig",
    "bit_depth",
    "median_smooth",
    "straight_through",
]


@dataclass
class SqueezeConfig:
    """The ``defense=feature_squeezing`` option (module docstring for the squeezers).

    ``bits``: bit depth of the bit-depth squeezer (1..16; Xu et al.: 1 for MNIST, 5 for
    CIFAR-10), or null to leave it out; ``median_size``: the k of the k x k median filter (>= 2;
    Xu et al.: 2), or null to leave it out.
    """

    name: str = "feature_squeezing"
    bits: int | None = 5
    median_size: int | None = 2

    def __post_init__(self) -> None:
        require(
            self.bits is not None or self.median_size is not None,
            "defense.bits",
            "bits and median_size are both null: no squeezer left",
        )
        if self.bits is not None:
            require(1 <= self.bits <= 16, "defense.bits", f"must be in 1..16, got {self.bits}")
        if self.median_size is not None:
            require(
                self.median_size >= 2,
                "defense.median_size",
                f"must be >= 2 (a 1x1 median changes nothing), got {self.median_size}",
            )


class FeatureSqueezingDetector(LogScaleAttack, Detector):
    """Xu et al.'s joint feature-squeezing detector (module docstring); larger = more adversarial.

    Build with a :class:`SqueezeConfig` or its fields as keywords
    (``FeatureSqueezingDetector(bits=1)``). Nothing to fit and no state.
    """

    config_type = SqueezeConfig
    option = "feature_squeezing"
    reads_images = True

    def __init__(self, config: SqueezeConfig | None = None, /, **params: Any) -> None:
        super().__init__()
        config = configured(SqueezeConfig, config, params)
        self.config = config
        self.bits = None if config.bits is None else int(config.bits)
        self.median_size = None if config.median_size is None else int(config.median_size)

    @property
    def squeezer_names(self) -> list[str]:
        """``bits<b>`` and/or ``median<k>x<k>``, in the order of :meth:`squeeze`."""
        names = [] if self.bits is None else [f"bits{self.bits}"]
        if self.median_size is not None:
            names.append(f"median{self.median_size}x{self.median_size}")
        return names

    def squeeze(self, x: Tensor) -> list[Tensor]:
        """The squeezed copies of images ``x`` (plain values, no gradient path)."""
        with torch.no_grad():
            return self.squeeze_differentiable(x)

    def squeeze_differentiable(self, x: Tensor) -> list[Tensor]:
        """:meth:`squeeze`'s values with a gradient path to ``x``: bit-depth reduction
        straight-through (:func:`straight_through`), the median with its exact gradient."""
        out = [] if self.bits is None else [straight_through(x, bit_depth(x.detach(), self.bits))]
        if self.median_size is not None:
            out.append(median_smooth(x, self.median_size))
        return out

    # ------------------------------------------------------------------------------- Detector
    def fit_on(self, inputs: FitInputs) -> FeatureSqueezingDetector:
        """Nothing to learn."""
        return self

    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor:
        """max over squeezers of the L1 distance between the softmax of the probe's logits and
        of the model's logits on the squeezed images ([N]; ``classes`` unused)."""
        if probe.x.shape[0] == 0:
            return probe.logits.sum(1)
        p = torch.softmax(probe.logits, 1)
        distances = [(p_s - p).abs().sum(1) for p_s in self.squeezed_probabilities(probe)]
        return torch.stack(distances).amax(0)

    def score_bound(self, probe: Probe, toward: Tensor) -> Tensor:
        """max over squeezers of ||p - e_t||_1 + ||p_s - e_t||_1 >= ||p - p_s||_1 (triangle
        inequality through the one-hot e_t of the class the attack moves toward): 0 only when
        the image and every squeezed copy are classified as t with certainty."""
        if probe.x.shape[0] == 0:
            return probe.logits.sum(1)
        target = torch.nn.functional.one_hot(toward, probe.logits.shape[1]).to(probe.logits.dtype)
        own = (torch.softmax(probe.logits, 1) - target).abs().sum(1)
        bounds = [own + (p_s - target).abs().sum(1) for p_s in self.squeezed_probabilities(probe)]
        return torch.stack(bounds).amax(0)

    def squeezed_probabilities(self, probe: Probe) -> list[Tensor]:
        """Per squeezer, the softmax of the model's prediction logits on the squeezed copies of
        the probe's images, differentiable (:meth:`squeeze_differentiable`): one forward pass
        for all squeezers, once per probe (the attack's bound and the score of one iteration
        share it)."""

        def compute() -> list[Tensor]:
            x = probe.x
            squeezed = torch.cat(self.squeeze_differentiable(x))
            logits = prediction_logits(probe.model, squeezed).split(len(x))
            return [torch.softmax(lg, 1) for lg in logits]

        return probe.derive(f"squeezed:{','.join(self.squeezer_names)}", compute)

    def extra_repr(self) -> str:
        return ", ".join(self.squeezer_names)
