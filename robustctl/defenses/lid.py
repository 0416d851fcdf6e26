"""Local-intrinsic-dimensionality detector (Ma et al. 2018, "Characterizing adversarial
subspaces using local intrinsic dimensionality", ICLR; their section 4 and Algorithm 1).

LID estimate. For a feature vector f of layer l (the probe layers of
:meth:`robustctl.models.ResNet.layer_outputs`, spatially averaged to [N, C]) and a reference set
B^l of clean training features, the maximum-likelihood estimator (Levina and Bickel; Amsaleg et
al.) over the k nearest neighbours is

    LID^l(f) = -( (1/k) sum_{i=1..k} log(r_i(f) / r_k(f)) )^{-1},

r_i(f) the Euclidean distance from f to its i-th nearest neighbour in B^l (r_1 <= ... <= r_k).
It is computed from squared distances, log(r_i / r_k) = (log(r_i^2 + t) - log(r_k^2 + t)) / 2
with t the dtype's smallest normal number (guards log 0), and the mean is capped at -1e-6 (k
equidistant neighbours would give 1/0), so LID <= 1e6.

Leave-one-out. A reference point at distance exactly 0 from f is f itself (an image of the
reference set): it is left out and the k nearest are taken among the others. At fit, an example
whose clean image *is* a reference image also has that reference point left out for its
adversarial and noisy versions (matched by the image, not by the features, so round-off between
forward passes cannot hide it): at test time no image's source is in the reference set.

Reference set (the minibatch estimator). Ma et al. estimate LID within minibatches of 100 clean
images (an adversarial example against the clean minibatch it came from). Here the reference is
one minibatch fixed at fit: ``reference_size`` (default 100) clean training images drawn with the
fit's seeded generator (``FitInputs.generator``), whose features are kept as buffers; every image,
at fit and at test time, is estimated against it. ``k`` (default 20) must be below
``reference_size`` (leave-one-out).

Detector. The feature vector is (LID^l(x))_l over ``layers`` (default: all of the model's
``layer_names``, stem to embedding; Ma et al. use every layer's flattened activations and the
logits: here the probe's spatially averaged layers, and no logits). A logistic regression
(:class:`~robustctl.defenses.regression.LogisticCombiner`: standardized features, L2 with
``lr_c`` = scikit-learn's C, Newton in float64) is fitted on adversarial examples of *training*
images (label 1, :func:`~robustctl.defenses.base.crafted_pairs`: ``fit_attack`` with
``fit_attack_params`` on ``fit_samples`` seeded images; with ``successful_only``, only pairs with
a correctly classified clean image and a misclassified adversarial example, unless fewer than 10
are: then all pairs, with a caveat; Ma et al. keep the correctly classified images) against
their clean images and, with ``noisy`` (default), Ma et al.'s noisy examples (both label 0): x + n,
Gaussian n rescaled to the L2 norm ||x_adv - x|| of its own adversarial example, clipped to [0, 1]
(Ma et al. match the *average* L2 norm for some attacks and use sign noise of the L-inf budget for
FGSM/BIM; one rule for every attack here). The score is the regression's logit (larger = more
adversarial). ``classes`` is not used: LID does not depend on a class.

Gradient. The score is differentiable in the features, hence in ``probe.x``: ``torch.topk`` on
the squared distances passes the gradient to the k selected distances (the neighbour *choice*
is piecewise constant), and everything after it is smooth. One exception: the features of a
reference image itself, whose own point is left out by value; moved off it by any amount, they
get it back as nearest neighbour, so the score jumps there (test images are not reference
images; at fit the exclusion is by row, which is smooth).

White-box attack. LID does not depend on a class and has no class-dependent upper bound here:
C&W-wb minimizes the score itself. From the clean image, the score's rise near the decision
boundary can keep the attack from ever crossing it: measured on the synthetic test model (20
images, 5 x 1000 iterations, per-example thresholds), 55-75% success for either search
(``threat_model.whitebox.toward``) and lambda in {0.02, 0.1, 1}, 5% at lambda = 10. Started from
a success (``threat_model.whitebox.start=other_class``: the nearest training image that fools
model and detector) and searched toward every class, it breaches all 20 (AUC 0.46).

Example:
    >>> det = LIDDetector(k=20, reference_size=100).fit_on(inputs)
    >>> predictions, scores = score_images(det, model, x_test)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustctl.config.validation import configured, require
from robustctl.defenses.base import (
    AdversarialFitConfig,
    Detector,
    FitInputs,
    Probe,
    batches,
    check_layer_list,
    check_layers,
    crafted_pairs,
    layer_outputs,
)
from robustctl.defenses.regression import LogisticCombiner, adopt_shapes
from robustctl.inference import model_device

__all__ = ["LIDConfig", "LIDDetector", "lid_estimates", "matching_rows"]

ALL_LAYERS = ("stem", "stage1", "stage2", "stage3", "embedding")  # ResNet.layer_names
MAX_MEAN_LOG_RATIO = -1e-6  # caps LID at 1e6 (k equidistant neighbours)


@dataclass
class LIDConfig(AdversarialFitConfig):
    """The ``defense=lid`` option (module docstring for the formulas).

    ``layers``: probe layers whose LID enters the feature vector (default all of ResNet's);
    ``k``: neighbours of the estimate; ``reference_size``: clean training images in the fixed
    reference minibatch; ``fit_attack``, ``fit_attack_params``, ``fit_samples``: the attack
    option, its parameters and the number of training images whose adversarial examples fit the
    logistic regression; ``noisy``: add Ma et al.'s noisy examples as negatives;
    ``successful_only``: only pairs with a correctly classified clean image and a misclassified
    adversarial example; ``lr_c``: inverse L2 strength (scikit-learn's C); ``seed``: the subset
    of training images attacked.
    """

    name: str = "lid"
    layers: list[str] = field(default_factory=lambda: list(ALL_LAYERS))
    k: int = 20
    reference_size: int = 100
    noisy: bool = True

    def __post_init__(self) -> None:
        check_layer_list(self.layers)
        require(self.k >= 2, "defense.k", f"must be >= 2, got {self.k}")
        require(
            self.reference_size > self.k,
            "defense.reference_size",
            f"must be > k = {self.k} (leave-one-out), got {self.reference_size}",
        )
        self.check_fit_fields()


def lid_estimates(
    features: Tensor, reference: Tensor, k: int, exclude: Tensor | None = None
) -> Tensor:
    """[N] MLE LID of ``features`` [N, C] against ``reference`` [R, C] over the k nearest
    neighbours (module docstring), leaving out reference points at distance exactly 0 and, where
    ``exclude`` [N] (reference row or -1) names one, that row. Differentiable in ``features``."""
    if features.shape[0] == 0:
        return features.new_zeros(0)
    ref = reference.to(features.dtype)
    sq = (features.unsqueeze(1) - ref.unsqueeze(0)).pow(2).sum(-1)  # [N, R], exact 0 for self
    left_out = sq.detach() == 0
    if exclude is not None:
        rows = (exclude >= 0).nonzero().flatten()
        left_out[rows.to(sq.device), exclude[rows].to(sq.device)] = True
    sq = sq.masked_fill(left_out, torch.finfo(sq.dtype).max)
    nearest = torch.topk(sq, k, dim=1, largest=False, sorted=True).values  # ascending
    logs = torch.log(nearest + torch.finfo(sq.dtype).tiny)
    mean_log_ratio = 0.5 * (logs - logs[:, -1:]).mean(1)
    return -1.0 / mean_log_ratio.clamp(max=MAX_MEAN_LOG_RATIO)


def matching_rows(images: Tensor, reference: Tensor) -> Tensor:
    """[N] index of the reference image equal (bit for bit) to each image, or -1."""
    index = {ref.contiguous().numpy().tobytes(): j for j, ref in enumerate(reference.cpu())}
    return torch.tensor(
        [index.get(img.contiguous().numpy().tobytes(), -1) for img in images.cpu()],
        dtype=torch.long,
    )


class LIDDetector(Detector):
    """Ma et al.'s LID detector (module docstring): per-layer LID against a fixed reference
    minibatch of clean training features, combined by a logistic regression fitted on
    adversarial (and noisy) examples of training images.

    Build with a :class:`LIDConfig` or its fields as keywords (``LIDDetector(k=10)``).

    Buffers (moved by ``.to``, saved in ``state_dict``): ``reference_<layer>`` [R, C] reference
    features and the :class:`~robustctl.defenses.regression.LogisticCombiner` ``combiner.*``.
    """

    config_type = LIDConfig
    option = "lid"
    fit_pairs: Tensor

    def __init__(self, config: LIDConfig | None = None, /, **params: Any) -> None:
        super().__init__()
        config = configured(LIDConfig, config, params)
        self.config = config
        self.layers = tuple(config.layers)  # type: ignore[misc]
        self.k = int(config.k)
        for name in self.layers:
            self.register_buffer(f"reference_{name}", torch.zeros(0, 0))
        self.register_buffer("fit_pairs", torch.tensor(0.0))
        self.combiner = LogisticCombiner()
        self.fit_fallback_: str | None = None  # why all pairs were used, when they were

    # ------------------------------------------------------------------------------- state
    def reference(self, name: str) -> Tensor:
        return self._buffers[f"reference_{name}"]  # type: ignore[return-value]

    @property
    def fitted(self) -> bool:
        return self.combiner.fitted and self.reference(self.layers[0]).shape[0] > self.k

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("LIDDetector is not fitted: call fit_on(inputs) first")

    def metrics(self) -> dict[str, float]:
        """``lid/k``, ``lid/reference_size``, ``lid/layers`` (count), ``lid/lr_train_accuracy``
        (the regression's accuracy at logit 0 on its fit set of clean, noisy and adversarial
        training images, in-sample) and ``lid/fit_pairs`` (clean/adversarial pairs)."""
        self._check_fitted()
        return {
            "lid/k": float(self.k),
            "lid/reference_size": float(self.reference(self.layers[0]).shape[0]),
            "lid/layers": float(len(self.layers)),
            "lid/lr_train_accuracy": float(self.combiner.train_accuracy),
            "lid/fit_pairs": float(self.fit_pairs),
        }

    def caveats(self) -> dict[str, tuple[str, str]]:
        """``lid/fit_pairs`` (value ``all``) when too few attacks succeeded to keep only the
        successful pairs (said by the fit that made it, not kept by ``state_dict``)."""
        self._check_fitted()
        if self.fit_fallback_ is None:
            return {}
        return {"lid/fit_pairs": ("all", self.fit_fallback_)}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        adopt_shapes(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}, k={self.k}" + ("" if self.fitted else ", unfitted")

    # --------------------------------------------------------------------------------- fit
    def set_reference(self, features: dict[str, Tensor]) -> LIDDetector:
        """Keep ``{layer: [R, C]}`` clean features as the reference set (R > k)."""
        for name in self.layers:
            ref = features[name].detach()
            if ref.dim() != 2 or ref.shape[0] <= self.k:
                raise ValueError(
                    f"layer {name}: the reference needs [R, C] features with R > k = {self.k}, "
                    f"got {tuple(ref.shape)}"
                )
            self._buffers[f"reference_{name}"] = ref.clone()
        return self

    def lid_features(self, features: dict[str, Tensor], exclude: Tensor | None = None) -> Tensor:
        """[N, L] LID of each layer's ``features`` [N, C] against the reference (on its
        device); ``exclude`` as in :func:`lid_estimates`."""
        cols = []
        for name in self.layers:
            ref = self.reference(name)
            cols.append(lid_estimates(features[name].to(ref.device), ref, self.k, exclude))
        return torch.stack(cols, 1)

    def lid_features_of(
        self, model: nn.Module, x: Tensor, exclude: Tensor | None = None, batch_size: int = 512
    ) -> Tensor:
        """[N, L] LID features of images ``x``, batch by batch in eval mode (no gradient)."""
        parts = []
        start = 0
        with torch.no_grad():
            for xb in batches(x, batch_size):
                feats = layer_outputs(model, xb, self.layers, batch_size)
                ex = None if exclude is None else exclude[start : start + len(xb)]
                parts.append(self.lid_features(feats, ex).cpu())
                start += len(xb)
        return torch.cat(parts) if parts else torch.zeros(0, len(self.layers))

    def fit_on(self, inputs: FitInputs) -> LIDDetector:
        """Reference minibatch, LID features of clean / noisy / adversarial training examples,
        logistic regression. The detector ends on the model's device."""
        cfg, model = self.config, inputs.model
        check_layers(model, self.layers)
        x_train = inputs.data.x_train
        n_ref = int(cfg.reference_size)
        if len(x_train) < n_ref:
            raise ValueError(
                f"lid: reference_size {n_ref} exceeds the {len(x_train)} training images"
            )
        gen = inputs.generator
        x_ref = x_train[torch.randperm(len(x_train), generator=gen)[:n_ref]]
        self.to("cpu").set_reference(layer_outputs(model, x_ref, self.layers, inputs.batch_size))
        clean, adv, _, self.fit_fallback_ = crafted_pairs(inputs, cfg)
        exclude = matching_rows(clean, x_ref)
        sets = [clean]
        if cfg.noisy:
            delta = (adv - clean).flatten(1).norm(dim=1)
            noise = torch.randn(clean.shape, generator=gen, dtype=clean.dtype)
            scale = delta / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
            sets.append((clean + noise * scale.view(-1, *[1] * (clean.dim() - 1))).clamp(0, 1))
        sets.append(adv)
        feats = [self.lid_features_of(model, s, exclude, inputs.batch_size) for s in sets]
        labels = torch.cat([torch.zeros(len(f)) for f in feats[:-1]] + [torch.ones(len(adv))])
        self.combiner.fit(torch.cat(feats), labels, c=cfg.lr_c)
        self.fit_pairs = torch.tensor(float(len(clean)))
        return self.to(model_device(model))

    # ----------------------------------------------------------------------------- scoring
    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor:
        """[N] logistic-regression logit of the probe's per-layer LIDs; ``classes`` unused."""
        self._check_fitted()
        return self.combiner(self.lid_features(probe.layers))
