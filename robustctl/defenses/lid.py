"""Local-intrinsic-dimensionality detector (Ma et al. 2018, "Characterizing adversarial
subspaces using local intrinsic dimensionality", ICLR; their section 4 and Algorithm 1).

LID estimate. For a feature vector f of layer l (the probe layers of
:meth:`robustctl.models.ResNet.layer_outputs`, spatially averaged to [N, C]) and a reference set
B^l of clean training features, the maximum-likelihood estimator (Levina and Bickel; Amsaleg et
al.) over k neighbours is

    LID^l(f) = -( (1/k) sum_{i=2..k+1} log(r_i(f) / r_{k+1}(f)) )^{-1},

r_i(f) the Euclidean distance from f to its i-th nearest neighbour in B^l (r_1 <= r_2 <= ...):
the nearest, r_1, is always dropped and neighbours 2..k+1 are used, for every point (clean,
noisy and adversarial alike), as Ma et al.'s code does (``mle_batch``: the sorted distances
``[:, 1:k+1]``). It is computed from squared distances,
log(r_i / r_{k+1}) = (log(r_i^2 + t) - log(r_{k+1}^2 + t)) / 2 with t the dtype's smallest
normal number (guards log 0), and the mean is capped at -1e-6 (k equidistant neighbours would
give 1/0), so LID <= 1e6.

Dropping the nearest. In Ma et al.'s minibatches every clean image is a point of the batch,
at distance 0 from itself, and their code drops the first sorted distance of every point, clean
or not. The same rule here: an image of the reference set loses its own point, and any other
image loses its nearest reference point. The rule is continuous in f: moving f onto a reference
point, or a hair off it, changes r_2..r_{k+1} by as little as f moves (leaving out only a point
at distance exactly 0 would make LID jump there, as an earlier version did). The rank
correlation of the detector's test scores under the two rules is in docs/method.md section 5.1
(``benchmarks/lid_neighbour_rule.py``).

Reference set (the minibatch estimator). Ma et al. estimate LID within minibatches of 100 clean
images (an adversarial example against the clean minibatch it came from). Here the reference is
one minibatch fixed at fit: ``reference_size`` (default 100) clean training images drawn with the
fit's seeded generator (``FitInputs.generator``), whose features are kept as buffers; every image,
at fit and at test time, is estimated against it. ``k`` (default 20) must be below
``reference_size`` (k + 1 nearest, the first dropped). The training-set rows of the reference
images are kept too (``reference_rows``): :meth:`LIDDetector.held_training_rows`, which a
white-box attacker's starting pool leaves out.

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
the squared distances passes the gradient to the k + 1 selected distances, of which the nearest
is dropped (the neighbour *choice* is piecewise constant, the distances continuous across a
change of choice), and everything after it is smooth, at reference points too.

White-box attack. LID does not depend on a class and has no class-dependent upper bound here:
C&W-wb minimizes the score itself. From the clean image, the score's rise near the decision
boundary can keep the attack from ever crossing it: measured on the synthetic test model (20
images, 5 x 1000 iterations, per-example thresholds), 55-75% success for either search
(``threat_model.whitebox.toward``) and lambda in {0.02, 0.1, 1}, 5% at lambda = 10. Started from
a success (``threat_model.whitebox.start=other_class``: the nearest training image that fools
model and detector) and searched toward every class, it breached all 20 (AUC 0.46) with the old
neighbour rule and a pool that held the reference images; with Ma et al.'s rule and those images
left out of the pool, 19 of 20 at 3 x 500 iterations (and at 4 x 500), AUC <= 0.5.

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
from robustctl.defenses.regression import LogisticCombiner, adopt_shapes, with_defaults
from robustctl.inference import model_device

__all__ = ["LIDConfig", "LIDDetector", "lid_estimates"]

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
            f"must be > k = {self.k} (the k + 1 nearest are read, the first dropped), "
            f"got {self.reference_size}",
        )
        self.check_fit_fields()


def lid_estimates(features: Tensor, reference: Tensor, k: int) -> Tensor:
    """[N] MLE LID of ``features`` [N, C] against ``reference`` [R, C], R > k, over neighbours
    2..k+1 (module docstring: the nearest is always dropped). Differentiable in ``features``."""
    if features.shape[0] == 0:
        return features.new_zeros(0)
    ref = reference.to(features.dtype)
    sq = (features.unsqueeze(1) - ref.unsqueeze(0)).pow(2).sum(-1)  # [N, R]
    nearest = torch.topk(sq, k + 1, dim=1, largest=False, sorted=True).values[:, 1:]  # ascending
    logs = torch.log(nearest + torch.finfo(sq.dtype).tiny)
    mean_log_ratio = 0.5 * (logs - logs[:, -1:]).mean(1)
    return -1.0 / mean_log_ratio.clamp(max=MAX_MEAN_LOG_RATIO)


class LIDDetector(Detector):
    """Ma et al.'s LID detector (module docstring): per-layer LID against a fixed reference
    minibatch of clean training features, combined by a logistic regression fitted on
    adversarial (and noisy) examples of training images.

    Build with a :class:`LIDConfig` or its fields as keywords (``LIDDetector(k=10)``).

    Buffers (moved by ``.to``, saved in ``state_dict``): ``reference_<layer>`` [R, C] reference
    features, ``reference_rows`` [R] their images' rows in the training split (empty when the
    reference was set from features, or loaded from a ``state_dict`` saved without them) and
    the :class:`~robustctl.defenses.regression.LogisticCombiner` ``combiner.*``.
    """

    config_type = LIDConfig
    option = "lid"
    fit_pairs: Tensor
    reference_rows: Tensor

    def __init__(self, config: LIDConfig | None = None, /, **params: Any) -> None:
        super().__init__()
        config = configured(LIDConfig, config, params)
        self.config = config
        self.layers = tuple(config.layers)  # type: ignore[misc]
        self.k = int(config.k)
        for name in self.layers:
            self.register_buffer(f"reference_{name}", torch.zeros(0, 0))
        self.register_buffer("fit_pairs", torch.tensor(0.0))
        self.register_buffer("reference_rows", torch.zeros(0, dtype=torch.long))
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

    def held_training_rows(self) -> Tensor:
        """The training-set rows of the reference images (``reference_rows``)."""
        return self.reference_rows

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # saved before the rows were kept: none known
        empty = torch.zeros(0, dtype=torch.long)
        state_dict = with_defaults(state_dict, prefix, {"reference_rows": empty})
        adopt_shapes(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}, k={self.k}" + ("" if self.fitted else ", unfitted")

    # --------------------------------------------------------------------------------- fit
    def set_reference(self, features: dict[str, Tensor], rows: Tensor | None = None) -> LIDDetector:
        """Keep ``{layer: [R, C]}`` clean features as the reference set (R > k) and ``rows``
        [R], their images' rows in the training split (none when not given)."""
        for name in self.layers:
            ref = features[name].detach()
            if ref.dim() != 2 or ref.shape[0] <= self.k:
                raise ValueError(
                    f"layer {name}: the reference needs [R, C] features with R > k = {self.k}, "
                    f"got {tuple(ref.shape)}"
                )
            self._buffers[f"reference_{name}"] = ref.clone()
        device = self.reference(self.layers[0]).device
        rows = torch.zeros(0, dtype=torch.long) if rows is None else rows
        self.reference_rows = rows.detach().to(device, torch.long).clone()
        return self

    def lid_features(self, features: dict[str, Tensor]) -> Tensor:
        """[N, L] LID of each layer's ``features`` [N, C] against the reference (on its
        device)."""
        cols = []
        for name in self.layers:
            ref = self.reference(name)
            cols.append(lid_estimates(features[name].to(ref.device), ref, self.k))
        return torch.stack(cols, 1)

    def lid_features_of(self, model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
        """[N, L] LID features of images ``x``, batch by batch in eval mode (no gradient)."""
        parts = []
        with torch.no_grad():
            for xb in batches(x, batch_size):
                feats = layer_outputs(model, xb, self.layers, batch_size)
                parts.append(self.lid_features(feats).cpu())
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
        rows = torch.randperm(len(x_train), generator=gen)[:n_ref]
        ref = layer_outputs(model, x_train[rows], self.layers, inputs.batch_size)
        self.to("cpu").set_reference(ref, rows)
        clean, adv, _, self.fit_fallback_ = crafted_pairs(inputs, cfg)
        sets = [clean]
        if cfg.noisy:
            delta = (adv - clean).flatten(1).norm(dim=1)
            noise = torch.randn(clean.shape, generator=gen, dtype=clean.dtype)
            scale = delta / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
            sets.append((clean + noise * scale.view(-1, *[1] * (clean.dim() - 1))).clamp(0, 1))
        sets.append(adv)
        feats = [self.lid_features_of(model, s, inputs.batch_size) for s in sets]
        labels = torch.cat([torch.zeros(len(f)) for f in feats[:-1]] + [torch.ones(len(adv))])
        self.combiner.fit(torch.cat(feats), labels, c=cfg.lr_c)
        self.fit_pairs = torch.tensor(float(len(clean)))
        return self.to(model_device(model))

    # ----------------------------------------------------------------------------- scoring
    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor:
        """[N] logistic-regression logit of the probe's per-layer LIDs; ``classes`` unused."""
        self._check_fitted()
        return self.combiner(self.lid_features(probe.layers))
