"""What every detector of the ``defense`` group shares: the :class:`Probe` it reads, the
:class:`FitInputs` it is fitted on, and the :class:`Detector` interface.

A detector flags inputs as adversarial with a score (larger = more adversarial). It is fitted on
clean *training* data only (and, where the method needs adversarial examples, on adversarial
examples crafted from training or validation images: :meth:`FitInputs.adversarial_examples`),
never on the attacked test images; held-out choices (bandwidths, combination weights) use the
validation split.

A :class:`Probe` is one batch of images as the model sees them, from one forward pass: the
prediction logits, the embedding z and the intermediate layers the detector declared
(``Detector.layers``; spatially averaged, :meth:`robustctl.models.ResNet.layer_outputs`).
``score_probe(probe, classes)`` scores it under ``classes`` (the predicted classes, or, inside a
white-box attack, the class the attack moves toward). Scores are differentiable with respect to
``probe.x`` wherever the method allows, so a white-box attack optimizes through the detector
(C&W-wb); a detector with a non-differentiable step scores through a differentiable surrogate
(straight-through / BPDA, or an expectation over its randomness) and says which in its docstring.

Detectors fitted on adversarial examples (``lid``, ``mahalanobis`` with several layers,
``combined``, ``kde_bu``) share their config fields (:class:`AdversarialFitConfig`), their fit
set (:func:`crafted_pairs`) and their logistic regression
(:class:`~robustctl.defenses.regression.LogisticCombiner`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from robustctl.attacks import check_attack_choice
from robustctl.config.registry import OptionRegistry
from robustctl.config.validation import NoneConfig, require
from robustctl.defenses.regression import MIN_FIT_PAIRS
from robustctl.errors import ConfigError
from robustctl.inference import eval_mode, model_device, predict_labels

SPLIT_NAMES = {"train": "training", "val": "validation"}


@dataclass
class AdversarialFitConfig:
    """The fields every detector fitted on adversarial examples shares (``lid``,
    ``mahalanobis`` with several layers, ``combined``, ``kde_bu``): ``fit_attack`` and
    ``fit_attack_params``, the attack option and its parameters that craft the adversarial side
    of the fit set from ``fit_samples`` training or validation images (seeded by ``seed``);
    ``successful_only``: keep only pairs whose attack succeeded on a correctly classified image;
    ``lr_c``: the logistic regression's inverse L2 strength (scikit-learn's C)."""

    name: str = ""  # the option's name, set by each subclass (first, as in every group's config)
    fit_attack: str = "fgsm"
    fit_attack_params: dict[str, Any] = field(default_factory=lambda: {"eps": 0.1})
    fit_samples: int = 1000
    successful_only: bool = True
    lr_c: float = 1.0
    seed: int = 0

    def check_fit_fields(self) -> None:
        """Range checks of these fields; subclasses call it from ``__post_init__``."""
        import math

        check_attack_choice(self.fit_attack, self.fit_attack_params, "defense.fit_attack")
        require(
            self.fit_samples >= 2, "defense.fit_samples", f"must be >= 2, got {self.fit_samples}"
        )
        require(
            math.isfinite(self.lr_c) and self.lr_c > 0,
            "defense.lr_c",
            f"must be a positive float, got {self.lr_c}",
        )


class Probe:
    """``model``'s view of images ``x`` (on the model's device): ``logits`` (prediction view,
    ``logit_sign * Z``), ``embedding`` and ``layers[name]`` for each asked layer. Gradients flow
    back to ``x`` unless built under ``torch.no_grad()``.

    ``derived``: what a detector computed from this probe beyond its layers (feature squeezing's
    forward passes on the squeezed images, BU's dropout predictions), kept so that the attack
    score and the score of one attack iteration share them (:meth:`Probe.derive`)."""

    def __init__(self, model: nn.Module, x: Tensor, layers: tuple[str, ...] = ()) -> None:
        names = tuple(dict.fromkeys((*layers, "embedding")))
        self.model, self.x = model, x
        self.layers: dict[str, Tensor] = model.layer_outputs(x, names)
        self.embedding = self.layers["embedding"]
        self.logits = model.logit_sign * model.head(self.embedding)
        self.derived: dict[str, Any] = {}

    @classmethod
    def known(cls, model: nn.Module, x: Tensor, embedding: Tensor, logits: Tensor) -> Probe:
        """A probe whose embedding and prediction logits were computed already (an evaluation's
        one pass over a split): nothing is recomputed."""
        probe = cls.__new__(cls)
        probe.model, probe.x = model, x
        probe.embedding, probe.logits = embedding, logits
        probe.layers = {"embedding": embedding}
        probe.derived = {}
        return probe

    def derive(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked of this probe, the same value after."""
        if key not in self.derived:
            self.derived[key] = compute()
        return self.derived[key]

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(1)


# the ``defense`` group's options: ``none``, then each Detector subclass that sets ``option``,
# registered by being defined (Detector.__init_subclass__)
OPTIONS: OptionRegistry = OptionRegistry("defense")
OPTIONS.add(NoneConfig())


class Detector(nn.Module):
    """Base of every detector (module docstring). Subclasses set ``config_type`` and implement
    :meth:`fit_on` and :meth:`score_probe`; a class that sets ``option`` is registered in
    :data:`OPTIONS` under that name (the ``defense`` option it implements) by being defined.

    ``layers``: the :class:`Probe` layers ``score_probe`` reads besides the embedding and the
    logits. ``reads_images``: ``score_probe`` runs the model again on transformed images (feature
    squeezing), so scores cannot come from an evaluation's stored outputs alone.
    """

    config_type: ClassVar[type]
    option: ClassVar[str | None] = None
    layers: ClassVar[tuple[str, ...]] = ()
    reads_images: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("option")  # set on this class itself, not inherited
        if name:
            OPTIONS.add(cls.config_type(), cls, name=name)

    @classmethod
    def from_config(cls, cfg: Any) -> Detector:
        return cls(cfg)

    @property
    def needs_forward(self) -> bool:
        """Whether scoring needs a new forward pass (layers beyond the embedding, or images)."""
        return self.reads_images or bool(set(self.layers) - {"embedding"})

    def fit_on(self, inputs: FitInputs) -> Detector:
        """Fit on clean training data (and the other inputs the method needs); returns self."""
        raise NotImplementedError

    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor:
        """[N] adversarial-ness of the probe's images under ``classes`` (larger = more
        adversarial)."""
        raise NotImplementedError

    def score_bound(self, probe: Probe, toward: Tensor) -> Tensor:
        """An upper bound of :meth:`score_probe` that depends on the class ``toward`` a white-box
        attack moves to: bringing it under a threshold brings the score under it, and its
        gradient leads toward that class. The score itself under ``toward`` by default (KDE's
        score is class-conditional already); a class-agnostic score (uncertainty, squeezing)
        bounds itself by its distance from a confident ``toward`` prediction, Mahalanobis by the
        distance to ``toward``'s mean. Without such a bound a class-agnostic score is as low in
        the true class's confident region as in the target's, and the attack's penalty pulls it
        back across the decision boundary."""
        return self.score_probe(probe, toward)

    @property
    def bound_is_score(self) -> bool:
        """Whether :meth:`attack_score` is the score itself (no bound, no change of units), so an
        attack that moves toward the prediction reads the detector's decision off it."""
        cls = type(self)
        return cls.score_bound is Detector.score_bound and cls.attack_score is Detector.attack_score

    def attack_score(self, probe: Probe, toward: Tensor) -> Tensor:
        """What a white-box attack minimizes to evade the detector while moving toward the
        classes ``toward``: :meth:`score_bound` (in the units of :meth:`attack_threshold`)."""
        return self.score_bound(probe, toward)

    def attack_threshold(self, threshold: Tensor) -> Tensor:
        """A threshold on the score in the units of :meth:`attack_score` (the identity unless
        that is a monotone transform of the score)."""
        return threshold

    def held_training_rows(self) -> Tensor:
        """[R] the rows of the training split whose images the fitted detector holds as
        reference points (LID's reference minibatch): an attacker's starting pool of training
        images must not contain them, since a start sitting on a reference point is a start the
        detector sees at its own data. Empty (long) by default: a detector that keeps only
        statistics of the training images (means, kernels fitted on all of them) holds none
        that a pool could avoid."""
        return torch.zeros(0, dtype=torch.long)

    def metrics(self) -> dict[str, float]:
        """The fitted detector's own numbers, to log (``<name>/<quantity>``)."""
        return {}

    def caveats(self) -> dict[str, tuple[str, str]]:
        """Warnings on the fit: tag key -> (tag value, message)."""
        return {}


@runtime_checkable
class AttackableDetector(Protocol):
    """What an adaptive white-box attack (C&W-wb, :mod:`robustctl.threat_models.cw_wb`) needs
    from a detector, and what it may rely on. Every :class:`Detector` provides it.

    - ``layers``: the :class:`Probe` layers the scores read (the attack builds one probe per
      step with them).
    - ``score_probe(probe, classes) -> [N]``: the detector's score (larger = more adversarial)
      of the probe's images under ``classes``; an image is flagged when its score exceeds the
      threshold T (a quantile of the clean scores).
    - ``attack_score(probe, toward) -> [N]``: what the attack minimizes while moving toward
      ``toward``; differentiable with respect to ``probe.x`` (through a surrogate where the
      detector is not: BPDA, an expectation over its randomness). Contract: for every image,
      ``attack_score(probe, t) <= attack_threshold(T)`` implies ``score_probe(probe, t) <= T``
      (it is the score, a monotone transform of it, or an upper bound of it), so an image the
      attack brings under the transformed threshold while classified as ``t`` is undetected.
    - ``attack_threshold(T)``: T in the units of ``attack_score`` (the same monotone transform).
    - ``bound_is_score``: True when ``attack_score`` is ``score_probe`` itself (no bound, no
      transform), so the attack may read the detector's decision off its own objective instead
      of scoring again.
    """

    layers: tuple[str, ...]

    @property
    def bound_is_score(self) -> bool: ...

    def score_probe(self, probe: Probe, classes: Tensor) -> Tensor: ...

    def attack_score(self, probe: Probe, toward: Tensor) -> Tensor: ...

    def attack_threshold(self, threshold: Tensor) -> Tensor: ...


class LogScaleAttack:
    """Mixin for detectors whose clean scores sit near 0 (probability differences, variances:
    1e-6 for a confident image): a white-box attack minimizes log(bound + ``ATTACK_FLOOR``)
    (``Detector.score_bound``) and
    compares it with the log of the threshold. The transform is monotone, so "score <= T" is
    unchanged, but the penalty's gradient no longer vanishes as the score approaches a tiny
    clean score (measured: C&W-wb on feature squeezing stalled at 1e-4 against thresholds of
    1e-6)."""

    ATTACK_FLOOR: ClassVar[float] = 1e-12

    def attack_score(self, probe: Probe, toward: Tensor) -> Tensor:
        bound = self.score_bound(probe, toward)  # type: ignore[attr-defined]
        return torch.log(bound + self.ATTACK_FLOOR)

    def attack_threshold(self, threshold: Tensor) -> Tensor:
        return torch.log(threshold + self.ATTACK_FLOOR)


@dataclass
class FitInputs:
    """What a detector may be fitted on: the model, the data, the evaluation's outputs of each
    split (:class:`~robustctl.inference.ModelOutputs`), the batch size for new forward passes,
    the seeded generator of the fit's randomness (subsets, held-out splits, noise), and
    ``craft`` to make adversarial examples of training images."""

    model: nn.Module
    data: Any  # ImageData
    outputs: Any  # ModelOutputs
    batch_size: int = 512
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    # (attack option, its params, clean images, labels) -> adversarial images against ``model``;
    # given by the threat-model layer (robustctl.threat_models.context), which runs attacks
    craft: Callable[[str, dict[str, Any], Tensor, Tensor], Tensor] | None = None

    def layers(self, split: str, names: tuple[str, ...]) -> dict[str, Tensor]:
        """``names`` layer outputs [N, C] of every image of ``split`` (CPU, no gradient)."""
        x = getattr(self.data, f"x_{split}")
        if set(names) <= {"embedding"}:
            return {"embedding": self.outputs.split(split).embeddings}
        return layer_outputs(self.model, x, names, self.batch_size)

    def adversarial_examples(
        self, split: str, attack: str, params: dict[str, Any], n: int, seed: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(clean images, their adversarial examples, labels) for a seeded subset of at most
        ``n`` images of ``split`` (``train`` or ``val``: never the test images the evaluation
        attacks), crafted with the attack option ``attack`` and its ``params`` against the model
        through ``craft``: the adversarial side of a detector fitted to tell them apart."""
        from robustctl.data.base import seeded_permutation

        if split not in ("train", "val"):
            raise ValueError(f"detectors are fitted on train or val images, not {split!r}")
        if self.craft is None:
            raise ConfigError("this detector is fitted on adversarial examples; none can be made")
        labels = getattr(self.data, f"y_{split}")
        idx = seeded_permutation(len(labels), seed)[:n]
        x, y = getattr(self.data, f"x_{split}")[idx], labels[idx]
        return x, self.craft(attack, params, x, y), y


def crafted_pairs(
    inputs: FitInputs, cfg: Any, split: str = "train"
) -> tuple[Tensor, Tensor, Tensor, str | None]:
    """(clean, adversarial, labels, fallback) on the CPU: the fit set of a detector fitted on
    adversarial examples (``cfg``: an :class:`AdversarialFitConfig`). ``cfg.fit_attack`` with
    ``cfg.fit_attack_params`` on ``cfg.fit_samples`` seeded ``split`` images
    (:meth:`FitInputs.adversarial_examples`). With ``cfg.successful_only``, only the pairs whose
    clean image ``inputs.model`` classifies correctly and whose adversarial example it
    misclassifies, unless fewer than ``MIN_FIT_PAIRS`` are: then all pairs, and ``fallback``
    says so (None otherwise). A :class:`ConfigError` when ``split`` has no images (nothing is
    crafted then)."""
    if len(getattr(inputs.data, f"y_{split}")) == 0:
        where = SPLIT_NAMES.get(split, split)
        hint = " (dataset.val_fraction)" if split == "val" else ""
        raise ConfigError(
            f"defense={cfg.name}: the regression is fitted on adversarial examples of {where} "
            f"images; there are none{hint}"
        )
    clean, adv, y = inputs.adversarial_examples(
        split, cfg.fit_attack, dict(cfg.fit_attack_params), int(cfg.fit_samples), int(cfg.seed)
    )
    clean, adv, y = clean.detach().cpu(), adv.detach().cpu(), y.cpu()
    fallback = None
    if cfg.successful_only:
        pred = predict_labels(inputs.model, torch.cat([clean, adv]), inputs.batch_size)
        keep = (pred[: len(y)] == y) & (pred[len(y) :] != y)
        if int(keep.sum()) >= MIN_FIT_PAIRS:
            clean, adv, y = clean[keep], adv[keep], y[keep]
        else:
            fallback = (
                f"only {int(keep.sum())} of {len(y)} {SPLIT_NAMES.get(split, split)} pairs have "
                f"a correctly classified image and a successful {cfg.fit_attack} example "
                f"(< {MIN_FIT_PAIRS}): the regression was fitted on all {len(y)} pairs"
            )
    return clean, adv, y, fallback


def check_layer_list(layers: Any) -> None:
    """A :class:`ConfigError` naming ``defense.layers`` unless ``layers`` is a non-empty list of
    distinct layer names (a config's ``__post_init__`` check)."""
    names = list(layers)
    require(
        bool(names) and all(isinstance(n, str) for n in names),
        "defense.layers",
        f"must be a non-empty list of layer names, got {names}",
    )
    require(len(set(names)) == len(names), "defense.layers", f"has duplicates: {names}")


def check_layers(model: nn.Module, layers: tuple[str, ...]) -> None:
    """A :class:`ConfigError` naming ``defense.layers`` when ``model`` has no such layer."""
    known = tuple(getattr(model, "layer_names", ("embedding",)))
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ConfigError(f"defense.layers: unknown layer(s) {unknown}; the model has {known}")


def batches(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


@torch.no_grad()
def layer_outputs(
    model: nn.Module, x: Tensor, names: tuple[str, ...], batch_size: int = 512
) -> dict[str, Tensor]:
    """``model``'s ``names`` layers for images ``x``, batch by batch in eval mode (CPU results)."""
    device = model_device(model)
    parts: dict[str, list[Tensor]] = {name: [] for name in names}
    with eval_mode(model):
        for xb in batches(x, batch_size):
            out = model.layer_outputs(xb.to(device), names)
            for name in names:
                parts[name].append(out[name].cpu())
    return {name: torch.cat(values) for name, values in parts.items()}


@torch.no_grad()
def score_images(
    detector: Detector, model: nn.Module, x: Tensor, batch_size: int = 512
) -> tuple[Tensor, Tensor]:
    """(predictions, scores under them) of ``model`` + ``detector`` on images ``x``, batch by
    batch in eval mode; CPU results."""
    device = model_device(model)
    predictions, scores = [], []
    with eval_mode(model):
        for xb in batches(x, batch_size):
            probe = Probe(model, xb.to(device), detector.layers)
            predictions.append(probe.predictions.cpu())
            scores.append(detector.score_probe(probe, probe.predictions).detach().cpu())
    return torch.cat(predictions), torch.cat(scores)


@torch.no_grad()
def score_outputs(
    detector: Detector, model: nn.Module, x: Tensor, outputs: Any, batch_size: int = 512
) -> Tensor:
    """Scores (CPU) of images ``x`` whose evaluation outputs (``SplitOutputs``: embeddings and
    prediction logits) are known, under their predictions. A detector of the embedding and logits
    alone scores them all at once, with no new forward pass (the images stay where they are); one
    that reads other layers or the images runs :func:`score_images`."""
    if detector.needs_forward:
        return score_images(detector, model, x, batch_size)[1]
    device = model_device(model)
    probe = Probe.known(model, x, outputs.embeddings.to(device), outputs.logits.to(device))
    return detector.score_probe(probe, probe.predictions).detach().cpu()
