"""A detector combining others by logistic regression on their scores; ``kde_bu`` is Feinman et
al.'s KD+BU (Feinman et al. 2017, "Detecting adversarial samples from artifacts",
arXiv:1703.00410, section 5.3: kernel density and Bayesian uncertainty combined).

Members. ``members`` names detector options (default ``["kde", "bu"]``); each is built from its
own default config by ``member_factory`` (default: the ``OPTIONS`` registry of
:mod:`robustctl.defenses`, looked up when the detector is built, not when this module is
imported) and held as a submodule (``.to(device)`` moves it). ``layers`` and ``reads_images``
are the union of the members'.

Fit. Every member is fitted with ``fit_on(inputs)`` (on clean training data). The combination is
then fitted on a held-out split: n = ``fit_samples`` (default 1000) validation images, a seeded
subset (``seed``), and their adversarial examples crafted with the attack option ``fit_attack``
and its ``fit_attack_params`` (default FGSM, eps 0.1), by
:func:`~robustctl.defenses.base.crafted_pairs` ("val"). Neither the training images the members
were fitted on nor test images enter it. With ``successful_only`` (default), as Feinman et al.
did, only the pairs whose clean image the model classifies correctly and whose adversarial
example it misclassifies are kept (when fewer than ``MIN_FIT_PAIRS`` are, all pairs are used and
a caveat says so). Each member scores each image under the model's prediction for it (as
:func:`~robustctl.defenses.base.score_images` does), giving feature vectors s in R^M (M
members); clean images get label 0, adversarial ones label 1. Features are standardized with the
fit set's mean mu and standard deviation sd (ddof 0; a constant feature gets sd = 1, as
scikit-learn's StandardScaler), f = (s - mu) / sd, and an L2-penalized logistic regression

    minimize_{w, b}  sum_i [log(1 + exp(w.f_i + b)) - y_i (w.f_i + b)] + ||w||^2 / (2 C),

C = ``lr_c`` (default 1.0; the intercept b is not penalized), is solved by Newton's method in
float64 (the same objective as ``sklearn.linear_model.LogisticRegression(C=C)``): the
:class:`~robustctl.defenses.regression.LogisticCombiner` that ``lid`` and ``mahalanobis`` fit too.

Score. The regression's logit, score(x) = w . (s(x) - mu) / sd + b (larger = more adversarial):
linear in the members' scores, so it is differentiable wherever they are (through their own
surrogates: BPDA, EOT), and a white-box attack optimizes through all members at once.

Departures from Feinman et al.: they fitted the regression (LogisticRegressionCV, C chosen by
cross-validation) on features of the test set's images, adding Gaussian-noised images to the
negatives, and reported cross-validated AUCs; here it is fitted on validation images only, without
noisy images, with a fixed C. The features are the members' scores as they are: the KDE score is
-log density (Feinman et al. use the density), BU's the MC-dropout variance of this project's BU
detector (dropout on the embedding, :mod:`robustctl.defenses.uncertainty`).

Metrics: the members' own, ``combined/weight_<member>`` (w on the standardized score),
``combined/lr_val_accuracy`` (the regression's accuracy at logit 0 on its fit set: clean vs
adversarial validation images, in-sample) and ``combined/fit_pairs`` (pairs in the fit set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustctl.config.validation import configured, require
from robustctl.defenses.base import (
    OPTIONS,
    AdversarialFitConfig,
    Detector,
    FitInputs,
    Probe,
    batches,
    crafted_pairs,
)
from robustctl.defenses.regression import LogisticCombiner
from robustctl.errors import ConfigError
from robustctl.inference import eval_mode, model_device

__all__ = [
    "CombinedConfig",
    "CombinedDetector",
    "KDEBUConfig",
    "KDEBUDetector",
    "default_member_factory",
]

PREFIX = "combined"  # metric and caveat keys: combined/<quantity>, for every option of this class


@dataclass
class CombinedConfig(AdversarialFitConfig):
    """The ``defense=combined`` option (module docstring for the fit and the score).

    ``members``: the detector options combined; ``fit_attack`` / ``fit_attack_params``: the
    attack option (and its parameter overrides) that crafts the adversarial side of the fit set
    from ``fit_samples`` validation images (seeded by ``seed``); ``successful_only``: keep only
    pairs whose attack succeeded on a correctly classified image; ``lr_c``: the regression's
    inverse L2 strength (scikit-learn's C).
    """

    name: str = "combined"
    members: list[str] = field(default_factory=lambda: ["kde", "bu"])

    def __post_init__(self) -> None:
        members = list(self.members)
        require(bool(members), "defense.members", "must name at least one detector")
        require(
            len(set(members)) == len(members),
            "defense.members",
            f"must not repeat a detector, got {members}",
        )
        self.check_fit_fields()


@dataclass
class KDEBUConfig(CombinedConfig):
    """The ``defense=kde_bu`` option: Feinman et al.'s KD+BU, a :class:`CombinedConfig` with
    members ``["kde", "bu"]``."""

    name: str = "kde_bu"
    members: list[str] = field(default_factory=lambda: ["kde", "bu"])


def default_member_factory(name: str) -> Detector:
    """The detector of option ``name`` (:data:`~robustctl.defenses.base.OPTIONS`), built from
    its default config."""
    cls = OPTIONS.implementations.get(name)
    if cls is None:
        valid = sorted(n for n in OPTIONS if n != "none")
        raise ConfigError(f"defense.members: {name!r} is not a detector — valid: {valid}")
    return cls.from_config(cls.config_type())


class CombinedDetector(Detector):
    """Logistic regression on member detectors' standardized scores (module docstring).

    Build with a :class:`CombinedConfig` (or :class:`KDEBUConfig`) or its fields as keywords;
    ``member_factory(name) -> Detector`` builds each member (default:
    :func:`default_member_factory`). ``members``: an ``nn.ModuleDict`` name -> detector;
    ``combiner``: the :class:`~robustctl.defenses.regression.LogisticCombiner` on their scores
    (buffers ``combiner.*``: float64 mean, scale and weight [M], bias []).
    """

    config_type = CombinedConfig
    option = "combined"

    def __init__(
        self,
        config: CombinedConfig | None = None,
        /,
        member_factory: Callable[[str], Detector] | None = None,
        **params: Any,
    ) -> None:
        super().__init__()
        config = configured(type(self).config_type, config, params)
        self.config = config
        factory = member_factory or default_member_factory
        self.member_names = [str(name) for name in config.members]
        self.members = nn.ModuleDict({name: factory(name) for name in self.member_names})
        detectors = list(self.members.values())
        # instance values shadowing the class defaults of Detector: the union of the members'
        self.layers = tuple(dict.fromkeys(layer for d in detectors for layer in d.layers))
        self.reads_images = any(d.reads_images for d in detectors)
        self.combiner = LogisticCombiner()
        self._nonnegative: list[bool] = []  # combiner.weight >= 0, per member (host copy)
        self.fit_fallback_: str | None = None  # why all pairs were used, when they were

    @property
    def fitted(self) -> bool:
        return self.combiner.fitted

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit_on(inputs) first")

    # ----------------------------------------------------------------------------------- fit
    def member_scores(
        self, model: nn.Module, x: Tensor, batch_size: int = 512
    ) -> tuple[Tensor, Tensor]:
        """(predictions [N], member scores [N, M] under them) of images ``x``, batch by batch in
        eval mode without gradients; CPU results."""
        device = model_device(model)
        preds, scores = [], []
        with torch.no_grad(), eval_mode(model):
            for xb in batches(x, batch_size):
                probe = Probe(model, xb.to(device), self.layers)
                classes = probe.predictions
                preds.append(classes.cpu())
                scores.append(self._stacked(probe, classes).cpu())
        if not preds:
            m = len(self.member_names)
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, m)
        return torch.cat(preds), torch.cat(scores)

    def fit_on(self, inputs: FitInputs) -> CombinedDetector:
        """Fit every member on ``inputs``, then the regression on clean vs adversarial validation
        images (module docstring)."""
        cfg = self.config
        for member in self.members.values():
            member.fit_on(inputs)
        # a ConfigError naming dataset.val_fraction when there are no validation images
        clean, adv, _, self.fit_fallback_ = crafted_pairs(inputs, cfg, "val")
        _, s_clean = self.member_scores(inputs.model, clean, inputs.batch_size)
        _, s_adv = self.member_scores(inputs.model, adv, inputs.batch_size)
        features = torch.cat([s_clean, s_adv]).to(torch.float64)
        if not torch.isfinite(features).all():
            raise ValueError(f"defense={cfg.name}: a member gave a NaN or infinite score")
        labels = torch.cat([torch.zeros(len(s_clean)), torch.ones(len(s_adv))])
        self.combiner.fit(features, labels, c=float(cfg.lr_c))
        # host copy of the signs, read once here: the attack loop reads nothing from the device
        self._nonnegative = [v >= 0 for v in self.combiner.weight.tolist()]
        return self

    # ------------------------------------------------------------------------------- scoring
    def _stacked(self, probe: Probe, classes: Tensor, bounds: bool = False) -> Tensor:
        """[N, M] the members' scores of the probe, on its device; with ``bounds``, each member
        with a weight >= 0 gives its ``score_bound`` instead."""
        device = probe.embedding.device
        use_bound = self._nonnegative if bounds else [False] * len(self.members)
        parts = [
            (m.score_bound(probe, classes) if bound else m.score_probe(probe, classes))
            for m, bound in zip(self.members.values(), use_bound, strict=True)
        ]
        return torch.stack([p.to(device) for p in parts], 1)

    def score_bound(self, probe: Probe, toward: Tensor) -> Tensor:
        """The regression's logit with each member of weight >= 0 replaced by its upper bound,
        and each of negative weight kept as its score: an upper bound of the combined score
        (a member the regression learned to read the other way round, e.g. uncertainty on an
        RCE model whose clean predictions are the uncertain ones, would otherwise be pushed the
        wrong way by its bound)."""
        self._check_fitted()
        return self.combiner(self._stacked(probe, toward, bounds=True))

    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor:
        """The regression's logit w . (s - mu) / sd + b of the members' scores s ([N])."""
        self._check_fitted()
        return self.combiner(self._stacked(probe, classes))

    def held_training_rows(self) -> Tensor:
        """The training rows any member holds as reference points (ascending, each once)."""
        rows = [m.held_training_rows().cpu() for m in self.members.values()]
        return torch.unique(torch.cat(rows)) if rows else torch.zeros(0, dtype=torch.long)

    # ------------------------------------------------------------------------------- reports
    def metrics(self) -> dict[str, float]:
        """The members' metrics, ``combined/weight_<member>``, ``combined/lr_val_accuracy`` and
        ``combined/fit_pairs`` (the fit set holds each pair's clean and adversarial image)."""
        self._check_fitted()
        out: dict[str, float] = {}
        for member in self.members.values():
            out.update(member.metrics())
        for name, w in zip(self.member_names, self.combiner.weight.tolist(), strict=True):
            out[f"{PREFIX}/weight_{name}"] = float(w)
        out[f"{PREFIX}/lr_val_accuracy"] = float(self.combiner.train_accuracy)
        out[f"{PREFIX}/fit_pairs"] = float(self.combiner.train_examples) / 2
        return out

    def caveats(self) -> dict[str, tuple[str, str]]:
        """The members' caveats, and ``combined/fit_pairs`` (value ``all``) when too few attacks
        succeeded to keep only the successful pairs."""
        out: dict[str, tuple[str, str]] = {}
        for member in self.members.values():
            out.update(member.caveats())
        if self.fit_fallback_ is not None:
            out[f"{PREFIX}/fit_pairs"] = ("all", self.fit_fallback_)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        weight = state_dict.get(prefix + "combiner.weight")
        if weight is not None:  # the host copy of the signs, read once at load
            self._nonnegative = [v >= 0 for v in weight.tolist()]

    def extra_repr(self) -> str:
        state = "fitted" if self.fitted else "unfitted"
        return f"name={self.config.name}, {state}"


class KDEBUDetector(CombinedDetector):
    """The ``kde_bu`` option: :class:`CombinedDetector` whose default config is
    :class:`KDEBUConfig` (members ``kde`` and ``bu``)."""

    config_type = KDEBUConfig
    option = "kde_bu"
