"""C&W-wb: the white-box Carlini-Wagner L2 attack against a classifier *and* its detector
(Carlini & Wagner 2017, "Adversarial examples are not easily detected", section 5.2;
docs/method.md section 4.7): the adaptive attack, for every detector of the ``defense`` group.

Same tanh change of variables, Adam and per-example binary search over c as :class:`CW`, with the
detector's score added to the misclassification term::

    ||x' - x||_2^2 + c * ( f(x') + lambda * max(s_t(x') - T, 0) )
    f(x')    = max(Z(x')_y - max_{i != y} Z(x')_i, -kappa)          (untargeted C&W margin)
    s_t(x')  = the detector's score of x' under class t (KDE: -log KDE_t(z(x')),
               docs/method.md section 5)

where Z are the prediction-view logits and s is read from the same forward pass (a
:class:`~robustctl.defenses.base.Probe` with the layers the detector reads; a detector with a
non-differentiable step scores through its stated surrogate: straight-through for feature
squeezing, the Monte-Carlo expectation for Bayesian uncertainty), and t the class the attack
moves toward: with ``toward=runner_up`` (default) the runner-up class while x' is still classified
as y, the predicted class once it is not (scoring under the current prediction gives no useful
gradient before the flip); with ``toward=every_class`` the search is run once per class t != y
with t fixed, and each image keeps its smallest successful example over the K - 1 searches (the
runner-up class may be one where the detector's scores are high: measured on the synthetic test
model with BU, images of one class were never breached toward their runner-up class and all were
toward another). The threshold T is per example by default, T_i = s(x_i) (the clean image's own
score under its prediction: "per_example", which is what breaches the AUC), or one global value
(``thresholds`` given as a scalar, e.g. the detector's threshold at a chosen false-positive rate:
"detector"). The attack minimizes the detector's ``attack_score``: its score, or an upper bound of
it that depends on t (``Detector.score_bound``), possibly in log units. An iterate succeeds when it
is misclassified by more than kappa *and* the detector's own score under the prediction,
s_pred(x'), is <= T; each example keeps its smallest-L2 successful iterate across iterations and
binary steps.

The model must expose ``layer_outputs``, ``embed(x)`` and ``head(z)`` (and ``logit_sign``), as
:class:`robustctl.models.ResNet` does; the detector is a
:class:`~robustctl.defenses.base.Detector`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.attacks.cw import CW, CwConfig, margins
from robustctl.config.validation import require
from robustctl.defenses import Probe, require_detector
from robustctl.defenses.base import AttackableDetector
from robustctl.errors import ConfigError


def _embedding_model_check(model: nn.Module) -> None:
    if not (callable(getattr(model, "embed", None)) and callable(getattr(model, "head", None))):
        raise ConfigError(
            f"cw_wb attacks the embedding layer, but {type(model).__name__} has no embed()/head()",
            hint=(
                "use a robustctl model (models trained by `robustctl train`), or a gray-box attack"
            ),
        )


THRESHOLDS = ("per_example", "detector")
TOWARD = ("runner_up", "every_class")
STARTS = ("clean", "other_class")


@dataclass
class CwWbConfig(CwConfig):
    """C&W-wb (``threat_model.whitebox``): C&W-L2 plus the detector term, per-example threshold.

    ``threshold``: ``per_example`` (T_i = the clean image's own score) or ``detector`` (one global
    T: the clean scores' threshold at false-positive rate ``fpr``); ``density_weight`` is lambda;
    ``toward``: the class t the detector term is taken under, ``runner_up`` (the runner-up class,
    then the prediction: one search) or ``every_class`` (one search per class t != y, each image
    keeping its smallest successful distortion: K - 1 times the cost, and the stronger attack when
    the classes nearest an image are not where the detector is easiest to fool); ``start``: where
    each search starts, ``clean`` (the image) or ``other_class`` (the nearest image of a pool of
    ``start_pool`` training images that is already a success for it: classified as another class,
    toward t with ``every_class``, and scored under its threshold; the image itself when the pool
    has none; the nearest image of another class when none of them is under the threshold), so
    the search shrinks a success instead of looking for one.
    """

    name: str = "cw_wb"
    binary_steps: int = 3
    steps: int = 1000
    lr: float = 0.01
    c_init: float = 1.0
    threshold: str = "per_example"
    fpr: float = 0.05
    density_weight: float = 1.0
    toward: str = "runner_up"
    start: str = "clean"
    start_pool: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.targeted == "none", "attack.targeted", "cw_wb is untargeted")
        require(
            self.threshold in THRESHOLDS,
            "attack.threshold",
            f"must be one of {', '.join(THRESHOLDS)}; got {self.threshold!r}",
        )
        require(0 < self.fpr < 1, "attack.fpr", f"must be in (0, 1), got {self.fpr}")
        require(
            self.toward in TOWARD,
            "attack.toward",
            f"must be one of {', '.join(TOWARD)}; got {self.toward!r}",
        )
        require(
            self.start in STARTS,
            "attack.start",
            f"must be one of {', '.join(STARTS)}; got {self.start!r}",
        )
        require(self.start_pool >= 1, "attack.start_pool", f"must be >= 1, got {self.start_pool}")
        require(
            self.density_weight >= 0,
            "attack.density_weight",
            f"must be >= 0, got {self.density_weight}",
        )


class CWWhiteBox(CW):
    """C&W-wb against ``model`` + ``detector``. ``thresholds``: None for each image's own clean
    score (``per_example``), or a global T (scalar) / per-example tensor computed by the caller."""

    method = "cw_wb"
    config_type = CwWbConfig
    group_option = False  # needs a detector: built by the white-box stage, not ``attack=``
    loop_progress: ClassVar[bool] = True  # 3 x 1000 iterations: show step and iteration

    def __init__(
        self,
        model: nn.Module,
        detector: AttackableDetector | None = None,
        config: CwWbConfig | None = None,
        /,
        *,
        thresholds: Tensor | float | None = None,
        pool: StartingPool | None = None,
        **params: Any,
    ) -> None:
        _embedding_model_check(model)
        require_detector(detector, "cw_wb")
        if not isinstance(detector, AttackableDetector):
            raise ConfigError(
                f"cw_wb optimizes through the detector, but {type(detector).__name__} lacks the "
                "AttackableDetector interface (layers, score_probe, attack_score, "
                "attack_threshold, bound_is_score)",
                hint="attack a robustctl detector (robustctl.defenses), or implement the protocol",
            )
        super().__init__(model, config, **params)
        self.detector, self.thresholds, self.pool = detector, thresholds, pool
        if self.start == "other_class" and pool is None:
            raise ValueError("cw_wb start=other_class needs a pool of starting images")

    def probe(self, x: Tensor) -> Probe:
        """The model's view of ``x`` with the layers the detector reads (one forward pass)."""
        return Probe(self.model, x, self.detector.layers)

    def clean_thresholds(self, x: Tensor) -> Tensor:
        """T_i: the clean image's own detector score under its predicted class."""
        with torch.no_grad():
            probe = self.probe(x)
            return self.detector.score_probe(probe, probe.predictions).detach()

    def _thresholds(self, x: Tensor) -> Tensor:
        if self.thresholds is None:
            return self.clean_thresholds(x)
        t = torch.as_tensor(self.thresholds, dtype=torch.float32, device=x.device)
        return t.expand(len(x)) if t.dim() == 0 else t

    def prepare(self, x: Tensor, y: Tensor, target: Tensor | None) -> WbState:
        """The per-batch :class:`WbState` (thresholds in both units, the true labels' mask),
        computed once, outside the iterations; toward the runner-up class."""
        if target is not None:
            raise ValueError("cw_wb is untargeted")
        with torch.no_grad():
            num_classes = self.probe(x[:1]).logits.shape[1]
        threshold = self._thresholds(x)
        return WbState(
            self.detector.attack_threshold(threshold),
            threshold,
            F.one_hot(y, num_classes=num_classes).bool(),
        )

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """``toward=runner_up``: one search. ``toward=every_class``: one search per class t, on
        the images whose label is not t, moving toward t; each image keeps its smallest-L2
        successful example over all of them."""
        state = self.prepare(x, y, target)
        if self.toward == "runner_up":
            return self.search(x, y, None, state, start=self.starts(x, y, state))[0]
        best_adv, best_l2 = x.clone(), torch.full((len(x),), float("inf"), device=x.device)
        view = (-1, *([1] * (x.dim() - 1)))
        for t in range(state.y_mask.shape[1]):
            rows = (y != t).nonzero().flatten()
            if len(rows) == 0:
                continue
            sub = state.toward_class(rows, t)
            start = self.starts(x[rows], y[rows], sub)
            adv, l2 = self.search(x[rows], y[rows], None, sub, f" → {t}", start)
            better = l2 < best_l2[rows]
            best_l2[rows] = torch.where(better, l2, best_l2[rows])
            best_adv[rows] = torch.where(better.view(view), adv, best_adv[rows])
        return best_adv

    def starts(self, x: Tensor, y: Tensor, state: WbState) -> Tensor | None:
        """Each image's starting point for ``start=other_class`` (None for ``clean``): the
        nearest (L2) pool image that is a success for it (predicted other than y, as
        ``state.toward`` when set, with a score <= its threshold); else the nearest pool image
        predicted so, whatever its score; else the image itself."""
        if self.start == "clean":
            return None
        pool = self.pool.to(x.device)
        other = pool.predictions[None, :] != y[:, None]
        if state.toward is not None:
            other &= pool.predictions[None, :] == state.toward[:, None]
        feasible = other & (pool.scores[None, :] <= state.score_threshold[:, None])
        distance = torch.cdist(x.flatten(1), pool.images.flatten(1))
        # feasible first (distance), then the other-class ones (distance + a constant above any)
        rank = torch.where(feasible, distance, distance + distance.max() + 1.0)
        nearest = rank.masked_fill(~other, float("inf")).argmin(1)
        found = other.any(1).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(found, pool.images[nearest], x)

    def iteration_terms(
        self, x_adv: Tensor, label: Tensor, targeted: bool, state: WbState
    ) -> tuple[Tensor, Tensor]:
        """f(x') + lambda * max(b_t(x') - T, 0) with b the detector's attack score (its bound,
        :meth:`~robustctl.defenses.base.Detector.attack_score`), and success = misclassified by
        > kappa and the detector's own score s_pred(x') <= T (the bound is what the attack
        pushes down; the detector decides with its score, which may pass T first)."""
        probe = self.probe(x_adv)
        logits = probe.logits
        z_y, z_other = margins(logits, label)
        gap = z_other - z_y
        f = (-gap).clamp(min=-self.confidence)
        predicted = logits.argmax(1)
        if state.toward is None:
            toward = torch.where(
                gap > 0, predicted, logits.masked_fill(state.y_mask, float("-inf")).argmax(1)
            )
        else:
            toward = state.toward
        score = self.detector.attack_score(probe, toward)
        penalty = (score - state.threshold).clamp(min=0)
        if state.toward is None and self.detector.bound_is_score:
            undetected = score <= state.threshold  # the score under the prediction, when it counts
        else:
            with torch.no_grad():
                undetected = self.detector.score_probe(probe, predicted) <= state.score_threshold
        return f + self.density_weight * penalty, (gap > self.confidence) & undetected


@dataclass
class StartingPool:
    """Images an attacker may start from (``start=other_class``), with the model's predictions
    and the detector's scores of them under those predictions."""

    images: Tensor
    predictions: Tensor
    scores: Tensor

    def to(self, device: torch.device) -> StartingPool:
        return StartingPool(
            self.images.to(device), self.predictions.to(device), self.scores.to(device)
        )


@dataclass
class WbState:
    """C&W-wb's per-batch state: ``threshold`` T in the units of the detector's
    ``attack_score``, ``score_threshold`` the same T in the units of its score, ``y_mask`` the
    one-hot mask of the true labels [N, K], and ``toward`` the class each image moves toward
    (None: the runner-up class, then the prediction)."""

    threshold: Tensor
    score_threshold: Tensor
    y_mask: Tensor
    toward: Tensor | None = None

    def toward_class(self, rows: Tensor, t: int) -> WbState:
        """The state of images ``rows``, all moving toward class ``t``."""
        return WbState(
            self.threshold[rows],
            self.score_threshold[rows],
            self.y_mask[rows],
            torch.full((len(rows),), t, dtype=torch.long, device=rows.device),
        )
