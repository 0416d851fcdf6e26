"""What every white-box attack through a classifier *and* its detector shares (Carlini & Wagner
2017, "Adversarial examples are not easily detected", section 5.2; docs/method.md section 4.7):
the detector-aware objective, the thresholds, the starts and the targets. The optimizers that use
it are C&W-wb (:mod:`robustctl.threat_models.cw_wb`, a binary search over the trade-off constant)
and FMN-wb (:mod:`robustctl.threat_models.fmn_wb`, a minimum-norm search), so both attack the
same objective from the same starts toward the same classes and their distortions compare.

Objective, per example, at an iterate x'::

    f(x') + lambda * max(b_t(x') - T, 0)
    f(x')    = max(Z(x')_y - max_{i != y} Z(x')_i, -kappa)          (untargeted C&W margin)
    b_t(x')  = the detector's attack score of x' under class t (its score, or an upper bound of
               it that depends on t: ``Detector.score_bound``; KDE: -log KDE_t(z(x')))

Z are the prediction-view logits, and the detector reads the same forward pass (a
:class:`~robustctl.defenses.base.Probe` with its layers; a detector with a non-differentiable step
scores through its stated surrogate: straight-through for feature squeezing, the Monte-Carlo
expectation for Bayesian uncertainty).

**Success** ("adversarial"): misclassified by more than kappa *and* the detector's own score under
the prediction, s_pred(x'), <= T (the bound is what the attack pushes down; the detector decides
with its score, which may pass T first).

**Thresholds** ``threshold``: ``per_example`` (default), T_i = s(x_i), the clean image's own score
under its prediction (what breaches the AUC); or ``detector``: one global T, the clean validation
scores' threshold at false-positive rate ``fpr``, computed by the caller.

**Targets** ``toward``: ``runner_up`` (default; t = the runner-up class while x' is still
classified as y, the prediction once it is not: scoring under the current prediction gives no
useful gradient before the flip) or ``every_class`` (one search per class t != y with t fixed; each
image keeps its smallest successful example over the K - 1 searches: the runner-up class may be one
where the detector's scores are high).

**Starts** ``start``: ``clean`` (the image) or ``other_class`` (the nearest, in L2, of
``start_pool`` training images that is already a success for it: classified as another class,
toward t with ``every_class``, scored under its threshold; else the nearest image of another
class; else the image itself), so the search shrinks a success instead of looking for one.
Distances are always
measured to the clean image.

The model must expose ``layer_outputs``, ``embed(x)``, ``head(z)`` (as
:class:`robustctl.models.ResNet` does); the detector must be an
:class:`~robustctl.defenses.base.AttackableDetector`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.attacks.base import Attack, AttackConfig
from robustctl.attacks.cw import margins
from robustctl.config.validation import require
from robustctl.defenses import Probe, require_detector
from robustctl.defenses.base import AttackableDetector
from robustctl.errors import ConfigError

THRESHOLDS = ("per_example", "detector")
TOWARD = ("runner_up", "every_class")
STARTS = ("clean", "other_class")


@dataclass
class DetectorAttackConfig(AttackConfig):
    """The fields of a detector-aware attack (module docstring): ``threshold``
    (``per_example`` | ``detector``) with ``fpr`` for ``detector``; ``density_weight`` lambda;
    ``confidence`` kappa; ``toward`` (``runner_up`` | ``every_class``); ``start`` (``clean`` |
    ``other_class``) with ``start_pool`` training images to start from."""

    threshold: str = "per_example"
    fpr: float = 0.05
    density_weight: float = 1.0
    confidence: float = 0.0
    toward: str = "runner_up"
    start: str = "clean"
    start_pool: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.targeted == "none", "attack.targeted", f"{self.name} is untargeted")
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
        require(self.confidence >= 0, "attack.confidence", f"must be >= 0, got {self.confidence}")


DETECTOR_FIELDS = tuple(
    f.name
    for f in fields(DetectorAttackConfig)
    if f.name not in {g.name for g in fields(AttackConfig)}
)


def _embedding_model_check(model: nn.Module, method: str) -> None:
    if not (callable(getattr(model, "embed", None)) and callable(getattr(model, "head", None))):
        raise ConfigError(
            f"{method} attacks the embedding layer, but {type(model).__name__} has no "
            "embed()/head()",
            hint=(
                "use a robustctl model (models trained by `robustctl train`), or a gray-box attack"
            ),
        )


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
    """A detector-aware attack's per-batch state: ``threshold`` T in the units of the
    detector's ``attack_score``, ``score_threshold`` the same T in the units of its score,
    ``y_mask`` the one-hot mask of the true labels [N, K], and ``toward`` the class each image
    moves toward (None: the runner-up class, then the prediction)."""

    threshold: Tensor
    score_threshold: Tensor
    y_mask: Tensor
    toward: Tensor | None = None

    def take(self, rows: Tensor) -> WbState:
        """The state of images ``rows`` (an index tensor)."""
        return WbState(
            self.threshold[rows],
            self.score_threshold[rows],
            self.y_mask[rows],
            None if self.toward is None else self.toward[rows],
        )

    def toward_class(self, rows: Tensor, t: int) -> WbState:
        """The state of images ``rows``, all moving toward class ``t``."""
        sub = self.take(rows)
        sub.toward = torch.full((len(rows),), t, dtype=torch.long, device=rows.device)
        return sub


class DetectorAwareAttack(Attack):
    """Base of the attacks through model + detector (module docstring). A subclass supplies
    ``search(x, y, target, state, label_suffix, start) -> (best_adv, best_l2sq)``: each
    example's smallest-L2 successful iterate (else x) and its squared L2 distance (inf where none
    succeeded), using :meth:`iteration_terms` for the objective and the success mask.

    ``thresholds``: None for each image's own clean score (``per_example``), or a global T
    (scalar) / per-example tensor computed by the caller; ``pool``: the starting images of
    ``start=other_class``."""

    group_option = False  # needs a detector: built by the white-box stage, not ``attack=``

    def __init__(
        self,
        model: nn.Module,
        detector: AttackableDetector | None = None,
        config: Any = None,
        /,
        *,
        thresholds: Tensor | float | None = None,
        pool: StartingPool | None = None,
        **params: Any,
    ) -> None:
        _embedding_model_check(model, self.method)
        require_detector(detector, self.method)
        if not isinstance(detector, AttackableDetector):
            raise ConfigError(
                f"{self.method} optimizes through the detector, but {type(detector).__name__} "
                "lacks the AttackableDetector interface (layers, score_probe, attack_score, "
                "attack_threshold, bound_is_score)",
                hint="attack a robustctl detector (robustctl.defenses), or implement the protocol",
            )
        super().__init__(model, config, **params)
        self.detector, self.thresholds, self.pool = detector, thresholds, pool
        self._incumbent: Tensor | None = None  # the current call's incumbents (``start=``)
        # rows of the last :meth:`starts` call that start from their incumbent (None: no
        # incumbents given); read by the search that follows it
        self.from_incumbent: Tensor | None = None
        if self.start == "other_class" and pool is None:
            raise ValueError(f"{self.method} start=other_class needs a pool of starting images")

    def __call__(
        self, x: Tensor, y: Tensor, target: Tensor | None = None, start: Tensor | None = None
    ) -> Any:
        """As :meth:`Attack.__call__`, with ``start``: each image's incumbent, an adversarial
        example found before (the image itself where there is none), from which its search
        restarts instead of the configured start (:meth:`starts`)."""
        self._incumbent = start
        try:
            return super().__call__(x, y, target)
        finally:
            self._incumbent = None

    def probe(self, x: Tensor) -> Probe:
        """The model's view of ``x`` with the layers the detector reads (one forward pass,
        counted: :meth:`~robustctl.attacks.base.Attack.counted`)."""
        return Probe(self.model, self.counted(x), self.detector.layers)

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
            raise ValueError(f"{self.method} is untargeted")
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
        incumbent = self._incumbent
        if incumbent is not None:
            incumbent = incumbent.to(x.device, x.dtype)
        if self.toward == "runner_up":
            return self.search(x, y, None, state, start=self.starts(x, y, state, incumbent))[0]
        best_adv, best_l2 = x.clone(), torch.full((len(x),), float("inf"), device=x.device)
        view = (-1, *([1] * (x.dim() - 1)))
        for t in range(state.y_mask.shape[1]):
            rows = (y != t).nonzero().flatten()
            if len(rows) == 0:
                continue
            sub = state.toward_class(rows, t)
            start = self.starts(
                x[rows], y[rows], sub, None if incumbent is None else incumbent[rows]
            )
            adv, l2 = self.search(x[rows], y[rows], None, sub, f" → {t}", start)
            better = l2 < best_l2[rows]
            best_l2[rows] = torch.where(better, l2, best_l2[rows])
            best_adv[rows] = torch.where(better.view(view), adv, best_adv[rows])
        return best_adv

    def starts(
        self, x: Tensor, y: Tensor, state: WbState, incumbent: Tensor | None = None
    ) -> Tensor | None:
        """Each image's starting point (None: every image itself). Its ``incumbent`` where it
        has one (differs from the image, is classified other than y, and as ``state.toward``
        when set); else, for ``start=other_class``, the nearest (L2) pool image that is a
        success for it (predicted other than y, as ``state.toward`` when set, with a score <=
        its threshold), else the nearest pool image predicted so, whatever its score, else the
        image itself. Records which rows start from their incumbent in :attr:`from_incumbent`."""
        configured = self.configured_starts(x, y, state)
        self.from_incumbent = None
        if incumbent is None:
            return configured
        with torch.no_grad():
            predicted = self.logits(incumbent).argmax(1)
        use = (incumbent != x).flatten(1).any(1) & (predicted != y)
        if state.toward is not None:
            use &= predicted == state.toward
        view = (-1, *([1] * (x.dim() - 1)))
        self.from_incumbent = use
        return torch.where(use.view(view), incumbent, x if configured is None else configured)

    def configured_starts(self, x: Tensor, y: Tensor, state: WbState) -> Tensor | None:
        """The configured start of each image (:meth:`starts` without an incumbent)."""
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
        """(f(x') + lambda * max(b_t(x') - T, 0), success) per example: b the detector's attack
        score (:meth:`~robustctl.defenses.base.Detector.attack_score`), success = misclassified
        by > kappa and the detector's own score s_pred(x') <= T."""
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
