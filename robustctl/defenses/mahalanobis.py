"""Mahalanobis detector (Lee et al. 2018, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks", NeurIPS; their section 2 and Algorithm 1).

Fit. For every layer l of ``layers`` (the probe layers of :meth:`robustctl.models.ResNet.
layer_outputs`, spatially averaged to [N, C]), from the clean features f_i^l of *all* training
images with their true labels y_i:

    mu_c^l    = mean of the f_i^l with y_i = c, for each class c present   (class means)
    Sigma^l   = (1/N) sum_i (f_i^l - mu_{y_i}^l)(f_i^l - mu_{y_i}^l)^T          (tied covariance)
    P^l       = pinv(Sigma^l)                                               (precision)

P^l is the Moore-Penrose pseudo-inverse (``torch.linalg.pinv(..., hermitian=True)`` in float64,
default cut-off rtol = D * eps): a layer whose features span fewer than D directions (ReLU
outputs that are always 0, fewer images than channels) gets a finite precision that ignores the
missing directions instead of an inverse that does not exist. Lee et al.'s code uses
scikit-learn's ``EmpiricalCovariance`` whose ``precision_`` is the same pseudo-inverse.
:meth:`MahalanobisDetector.caveats` names the layers whose covariance is rank-deficient.

Per-layer score (larger = more adversarial), the squared distance to the *closest* class mean:

    M^l(x) = min_c (f^l(x) - mu_c^l)^T P^l (f^l(x) - mu_c^l).

Lee et al.'s confidence score is max_c -M_c^l; its negative is used here so that a larger score
means "more adversarial". ``score_probe(probe, classes)`` ignores ``classes``, as Lee et al. do:
the score is the distance to the closest class whatever class the model predicts (their argument:
the closest class is the generative classifier's own prediction). A white-box attack minimizes
:meth:`MahalanobisDetector.score_bound` instead: the distance to the mean of the class t it moves
toward, an upper bound of the score (the closest-class score alone would pull an attack that has
not yet flipped the prediction back to the true class):

    B^l(x, t) = (f^l(x) - mu_t^l)^T P^l (f^l(x) - mu_t^l) >= M^l(x)   if t has training images,
    B^l(x, t) = M^l(x)                                               if it has none (no mu_t^l).

The means are kept with the labels of their classes (buffer ``class_labels``), so a class is
found by its label whatever labels the training split lacks.

Input preprocessing (``noise`` > 0; Lee et al. search it in {0, 0.0005, 0.001, 0.0014, 0.002,
0.005, 0.01, ...}): each layer is scored at

    x_hat^l = clip(x - noise * sign(grad_x M^l(x)), 0, 1),   score M^l(x_hat^l),

sign(g) = +1 where g >= 0 and -1 where g < 0 (sign(0) = +1, as Lee et al.'s code:
``(torch.ge(grad, 0).float() - 0.5) * 2``; a pixel the score does not depend on moves by -noise
too), a small step that brings x closer to its closest class (clean images move further than
adversarial ones). The gradient is taken in pixel space (Lee et al. step in normalized-input
space and divide by the normalization std, the same step in pixels) and is computed with its own
forward pass on a detached copy of x, also when the caller runs under ``torch.no_grad()``; then
one forward pass per layer scores x_hat^l. The clip to [0, 1] is a departure (Lee et al. do not
clip); it keeps x_hat^l an image. For a white-box attack the whole step is a constant (BPDA): the
score is evaluated at x + stopgrad(x_hat^l - x), so its gradient w.r.t. x is the gradient of M^l
at x_hat^l, passed straight through the sign and the clip.

Several layers: the per-layer scores are combined by a logistic regression (Lee et al.'s
"feature ensemble") fitted on clean (label 0) vs adversarial (label 1) examples crafted from the
*training* split (:func:`~robustctl.defenses.base.crafted_pairs`: ``fit_attack`` with
``fit_attack_params`` on ``fit_samples`` seeded images; with ``successful_only``, only pairs
whose clean image the model classifies correctly and whose adversarial example it
misclassifies; when fewer than ``MIN_FIT_PAIRS`` (10) are, all pairs, and a caveat says so). The
score is the regression's logit w . (s - mean) / scale + b of the per-layer scores s: linear in
them, hence differentiable. Its white-box bound replaces s^l by B^l(x, t) for each layer with
w^l >= 0 and keeps s^l = M^l(x) for each layer with w^l < 0 (a larger s^l there lowers the
logit), so it bounds the logit from above whatever the signs (as
:meth:`robustctl.defenses.combined.CombinedDetector.score_bound` does for its members). The
regression is :class:`~robustctl.defenses.regression.LogisticCombiner` (features standardized
with the fit set's mean and population std; L2-penalized, scikit-learn's objective with
``lr_c`` = C, intercept unpenalized; Newton's method in float64). Lee et al. fit it on a part of the
*test* set's adversarial examples (``LogisticRegressionCV``, tuned C, noisy images among the
negatives); here the test images are never used, there are no noisy images, and C is fixed. One
layer: the score is M^l itself, no adversarial example is needed.

Example:
    >>> det = MahalanobisDetector(layers=["stage3", "embedding"], noise=0.001).fit_on(inputs)
    >>> predictions, scores = score_images(det, model, x_test)   # larger = more adversarial
"""

from __future__ import annotations

import math
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
)
from robustctl.defenses.regression import LogisticCombiner, adopt_shapes, with_defaults
from robustctl.inference import eval_mode, model_device

__all__ = ["MahalanobisConfig", "MahalanobisDetector"]


@dataclass
class MahalanobisConfig(AdversarialFitConfig):
    """The ``defense=mahalanobis`` option (module docstring for the formulas).

    ``layers``: probe layers scored (any of the model's ``layer_names``; several are combined by
    a logistic regression). ``noise``: input-preprocessing step (0 = off). ``fit_attack``,
    ``fit_attack_params``, ``fit_samples``: the attack option, its parameters and the number of
    training images whose adversarial examples fit the combination (several layers only);
    ``successful_only`` keeps only pairs with a correctly classified clean image and a
    misclassified adversarial example; ``lr_c``: inverse L2 strength of the regression
    (scikit-learn's C); ``seed``: the subset of training images attacked.
    """

    name: str = "mahalanobis"
    layers: list[str] = field(default_factory=lambda: ["embedding"])
    noise: float = 0.0

    def __post_init__(self) -> None:
        check_layer_list(self.layers)
        require(
            math.isfinite(self.noise) and 0 <= self.noise <= 1,
            "defense.noise",
            f"must be in [0, 1], got {self.noise}",
        )
        self.check_fit_fields()


# -------------------------------------------------------------------------------------- module
def _min_distance(f: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """[N] min_c (f - mu_c)^T P (f - mu_c) for features f [N, D], means [K, D], P [D, D]."""
    d = f.unsqueeze(1) - means.to(f.dtype).unsqueeze(0)  # [N, K, D]
    return ((d @ precision.to(f.dtype)) * d).sum(-1).amin(1)


class MahalanobisDetector(Detector):
    """Lee et al.'s Mahalanobis detector (module docstring): per-layer distance to the closest
    class mean under a tied covariance, optional input preprocessing, several layers combined by
    a logistic regression fitted on adversarial examples of training images.

    Build with a :class:`MahalanobisConfig` or its fields as keywords
    (``MahalanobisDetector(layers=["stage2", "embedding"], noise=0.001)``).

    Buffers (moved by ``.to``, saved in ``state_dict``): ``means_<layer>`` [K, C] class means,
    one row per label of ``class_labels`` [K] (the labels present at fit, ascending; a
    ``state_dict`` saved without it loads as 0..K-1), ``precision_<layer>`` [C, C]
    pseudo-inverse covariances, ``ranks`` [L] covariance ranks, and the
    :class:`~robustctl.defenses.regression.LogisticCombiner` ``combiner.*`` (fitted with more
    than one layer).
    """

    config_type = MahalanobisConfig
    option = "mahalanobis"
    ranks: Tensor
    class_labels: Tensor
    fit_pairs: Tensor

    def __init__(self, config: MahalanobisConfig | None = None, /, **params: Any) -> None:
        super().__init__()
        config = configured(MahalanobisConfig, config, params)
        self.config = config
        self.layer_names: tuple[str, ...] = tuple(config.layers)
        self.noise = float(config.noise)
        # with preprocessing every layer is read at x_hat, never from the caller's probe
        self.layers = () if self.noise > 0 else self.layer_names  # type: ignore[misc]
        self.reads_images = self.noise > 0  # type: ignore[misc]
        for name in self.layer_names:
            self.register_buffer(f"means_{name}", torch.zeros(0, 0))
            self.register_buffer(f"precision_{name}", torch.zeros(0, 0))
        self.register_buffer("ranks", torch.zeros(0, dtype=torch.long))
        self.register_buffer("class_labels", torch.zeros(0, dtype=torch.long))
        self.register_buffer("fit_pairs", torch.tensor(0.0))
        self.combiner = LogisticCombiner()
        self.fit_fallback_: str | None = None  # why all pairs were used, when they were

    # ------------------------------------------------------------------------------- state
    @property
    def fitted(self) -> bool:
        return self._layers_fitted and (len(self.layer_names) == 1 or self.combiner.fitted)

    @property
    def _layers_fitted(self) -> bool:
        return self.ranks.numel() == len(self.layer_names)

    def _check_fitted(self, layers_only: bool = False) -> None:
        if not (self._layers_fitted if layers_only else self.fitted):
            raise RuntimeError("MahalanobisDetector is not fitted: call fit_on(inputs) first")

    def means(self, name: str) -> Tensor:
        return self._buffers[f"means_{name}"]  # type: ignore[return-value]

    def precision(self, name: str) -> Tensor:
        return self._buffers[f"precision_{name}"]  # type: ignore[return-value]

    def metrics(self) -> dict[str, float]:
        """``mahalanobis/layers`` (count), ``mahalanobis/noise`` and, with several layers,
        ``mahalanobis/lr_train_accuracy`` (the regression's accuracy at logit 0 on its fit set:
        clean vs adversarial training images, in-sample) and ``mahalanobis/fit_pairs``."""
        self._check_fitted()
        out = {"mahalanobis/layers": float(len(self.layer_names)), "mahalanobis/noise": self.noise}
        if len(self.layer_names) > 1:
            out["mahalanobis/lr_train_accuracy"] = float(self.combiner.train_accuracy)
            out["mahalanobis/fit_pairs"] = float(self.fit_pairs)
        return out

    def caveats(self) -> dict[str, tuple[str, str]]:
        """``mahalanobis/rank_deficient_covariance``: the layers whose tied covariance has rank
        below its dimension (their precision is a pseudo-inverse that ignores some directions);
        ``mahalanobis/fit_pairs`` (value ``all``) when too few attacks succeeded to keep only the
        successful pairs (said by the fit that made it, not kept by ``state_dict``)."""
        self._check_fitted()
        out: dict[str, tuple[str, str]] = {}
        if self.fit_fallback_ is not None:
            out["mahalanobis/fit_pairs"] = ("all", self.fit_fallback_)
        short = [
            f"{name} ({int(r)}/{self.precision(name).shape[0]})"
            for name, r in zip(self.layer_names, self.ranks.tolist(), strict=True)
            if int(r) < self.precision(name).shape[0]
        ]
        if short:
            out["mahalanobis/rank_deficient_covariance"] = (
                ",".join(s.split(" ")[0] for s in short),
                f"tied covariance of layer(s) {', '.join(short)} is rank-deficient (rank/dim): "
                "the pseudo-inverse ignores the directions the clean training features never take",
            )
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        means = state_dict.get(f"{prefix}means_{self.layer_names[0]}")
        if means is not None and means.dim() == 2:  # saved without labels: classes 0..K-1
            k = torch.arange(means.shape[0], dtype=torch.long)
            state_dict = with_defaults(state_dict, prefix, {"class_labels": k})
        adopt_shapes(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"layers={list(self.layer_names)}, noise={self.noise}" + (
            "" if self.fitted else ", unfitted"
        )

    # --------------------------------------------------------------------------------- fit
    def fit_features(self, features: dict[str, Tensor], labels: Tensor) -> MahalanobisDetector:
        """Class means, tied covariances and their pseudo-inverses from clean features
        ``{layer: [N, C]}`` and true labels [N] (float64 math; buffers in the features' dtype
        and on their device). Only the classes present in ``labels`` get a mean; their labels
        are kept in ``class_labels``, one per row of the means."""
        y = torch.as_tensor(labels).long()
        ranks = []
        for name in self.layer_names:
            f = features[name].detach()
            if f.dim() != 2 or f.shape[0] != y.shape[0] or f.shape[0] == 0:
                raise ValueError(f"layer {name}: features {tuple(f.shape)}, labels {len(y)}")
            if not torch.isfinite(f).all():
                raise ValueError(f"layer {name}: features contain NaN or inf")
            f64, yy = f.double(), y.to(f.device)
            classes, index = torch.unique(yy, sorted=True, return_inverse=True)
            sums = torch.zeros(len(classes), f.shape[1], dtype=f64.dtype, device=f.device)
            sums.index_add_(0, index, f64)
            counts = torch.bincount(index, minlength=len(classes)).to(f64.dtype)
            means = sums / counts.unsqueeze(1)
            centered = f64 - means[index]
            cov = centered.T @ centered / f.shape[0]
            precision = torch.linalg.pinv(cov, hermitian=True)
            ranks.append(int(torch.linalg.matrix_rank(cov, hermitian=True)))
            self._buffers[f"means_{name}"] = means.to(f.dtype)
            self._buffers[f"precision_{name}"] = precision.to(f.dtype)
            self.class_labels = classes.clone()
        self.ranks = torch.tensor(ranks, dtype=torch.long, device=self.means(name).device)
        return self

    def fit_on(self, inputs: FitInputs) -> MahalanobisDetector:
        """Means and precisions from every clean training image's features; with several
        layers, the logistic combination on adversarial examples of training images. The
        detector ends on the model's device."""
        model = inputs.model
        check_layers(model, self.layer_names)
        device = model_device(model)
        feats = inputs.layers("train", self.layer_names)
        self.fit_features(feats, inputs.data.y_train).to(device)
        if len(self.layer_names) > 1:
            clean, adv, _, self.fit_fallback_ = crafted_pairs(inputs, self.config)
            s_clean = self.layer_scores_of(model, clean, inputs.batch_size)
            s_adv = self.layer_scores_of(model, adv, inputs.batch_size)
            labels = torch.cat([torch.zeros(len(s_clean)), torch.ones(len(s_adv))])
            self.combiner.fit(torch.cat([s_clean, s_adv]), labels, c=self.config.lr_c)
            self.fit_pairs = torch.tensor(float(len(clean)))
            self.to(device)
        return self

    # ----------------------------------------------------------------------------- scoring
    def distance(self, features: Tensor, name: str, classes: Tensor | None = None) -> Tensor:
        """[N] squared Mahalanobis distance of ``features`` [N, C] of layer ``name``: M^l, to the
        closest class mean, when ``classes`` is None; else B^l, to the mean of each row's class
        in ``classes`` [N] (labels, found in ``class_labels``), and, for a class with no
        training image (no mean), the closest-class distance M^l, which keeps
        :meth:`score_bound` an upper bound of the score. Differentiable in the features."""
        closest = _min_distance(features, self.means(name), self.precision(name))
        if classes is None:
            return closest
        match = classes.to(self.class_labels.device).unsqueeze(1) == self.class_labels  # [N, K]
        row = match.long().argmax(1)  # the class's row; 0 (unused) for a class with no mean
        d = features - self.means(name).to(features.dtype)[row]
        aimed = ((d @ self.precision(name).to(features.dtype)) * d).sum(-1)
        return torch.where(match.any(1).to(aimed.device), aimed, closest)

    def preprocessed(self, model: nn.Module, x: Tensor) -> dict[str, Tensor]:
        """{layer: x_hat^l = clip(x - noise * sign(grad_x M^l(x)), 0, 1)}, sign(0) = +1 (Lee et
        al.'s code), each written as ``x + stopgrad(x_hat^l - x)`` (BPDA: gradient identity in
        x). The sign is computed with grad enabled on a detached copy of x, even under
        ``torch.no_grad()``."""
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            feats = model.layer_outputs(xd, self.layer_names)
            signs = []
            for i, name in enumerate(self.layer_names):
                m = self.distance(feats[name], name)
                last = i == len(self.layer_names) - 1
                (g,) = torch.autograd.grad(m.sum(), xd, retain_graph=not last)
                signs.append(torch.where(g >= 0, 1.0, -1.0).to(g.dtype))
        out = {}
        for name, sign in zip(self.layer_names, signs, strict=True):
            step = (x.detach() - self.noise * sign).clamp(0.0, 1.0) - x.detach()
            out[name] = x + step
        return out

    def layer_features(self, probe: Probe) -> dict[str, Tensor]:
        """{layer: [N, C]} the features each layer is scored on: the probe's own, or, with
        preprocessing, those of x_hat^l (one forward pass per layer)."""
        if self.noise <= 0:
            return {name: probe.layers[name] for name in self.layer_names}
        x_hats = self.preprocessed(probe.model, probe.x)
        return {
            name: Probe(probe.model, x_hats[name], (name,)).layers[name]
            for name in self.layer_names
        }

    def layer_scores(self, probe: Probe, classes: Tensor | None = None) -> Tensor:
        """[N, L] per-layer scores M^l of the probe's images (at x_hat^l with preprocessing);
        B^l, the distances to the means of ``classes``, instead when given (:meth:`distance`)."""
        self._check_fitted(layers_only=True)
        feats = self.layer_features(probe)
        return torch.stack([self.distance(feats[n], n, classes) for n in self.layer_names], 1)

    def layer_scores_of(self, model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
        """[N, L] per-layer scores of images ``x``, batch by batch in eval mode (CPU, no grad)."""
        device = model_device(model)
        parts = []
        with eval_mode(model), torch.no_grad():
            for xb in batches(x, batch_size):
                probe = Probe(model, xb.to(device), self.layers)
                parts.append(self.layer_scores(probe).cpu())
        return torch.cat(parts) if parts else torch.zeros(0, len(self.layer_names))

    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor:
        """[N] M^l (one layer) or the logistic combination's logit (several); ``classes`` is not
        used (module docstring)."""
        self._check_fitted()
        scores = self.layer_scores(probe)
        if len(self.layer_names) == 1:
            return scores[:, 0]
        return self.combiner(scores)

    def score_bound(self, probe: Probe, toward: Tensor) -> Tensor:
        """The white-box surrogate, an upper bound of :meth:`score_probe` (module docstring):
        one layer, B^l(x, toward), the distance to the mean of the class the attack moves
        toward (>= the distance to the closest mean); several, the regression's logit with B^l
        for each layer of weight >= 0 and M^l kept for each layer of negative weight. Aiming at
        the target's mean gives the attack a gradient toward the class it must reach, where the
        closest-class score would pull it back to the true class."""
        self._check_fitted()
        feats = self.layer_features(probe)
        aimed = torch.stack([self.distance(feats[n], n, toward) for n in self.layer_names], 1)
        if len(self.layer_names) == 1:
            return aimed[:, 0]
        closest = torch.stack([self.distance(feats[n], n) for n in self.layer_names], 1)
        # the signs are read on the device (no host sync in the attack loop), from the weights
        # the combiner holds now
        nonnegative = (self.combiner.weight >= 0).to(aimed.device)
        return self.combiner(torch.where(nonnegative, aimed, closest))
