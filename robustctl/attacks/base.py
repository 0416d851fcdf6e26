"""The attack base class: device, eval mode, targets, projection, and the success re-check.

A subclass implements only its update rule in :meth:`Attack.perturb`; everything else lives here
(STYLE habit 4):

1. inputs move to the model's device; the model is put in eval mode and restored afterwards;
2. the target is resolved: ``targeted="none"`` (untargeted), ``"random"`` (uniform over the
   classes != y), ``"least_likely"`` (argmin of the clean logits), or an explicit ``target``
   tensor passed to ``__call__``;
3. ``perturb`` returns a candidate batch, which the base clips to the box [0, 1] and, for
   bounded attacks, projects back onto the eps-ball (never trusting the subclass);
4. success is recomputed from one final prediction on the returned batch:
   ``pred != y`` (untargeted) or ``pred == target`` (targeted).

The attacked function is the model's *prediction view*: ``model.predict_logits(x)`` when the
model has one (so an RCE-trained ResNet, which predicts with ``-Z``, is attacked through the
logits it actually predicts with), else ``model(x)``. Any ``nn.Module`` mapping [0, 1] images
[N, C, H, W] to logits [N, K] can be attacked. Query-based attacks read a target that may
reject queries (a model behind its detector) through :meth:`Attack.answer`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustctl.config.validation import configured, require
from robustctl.inference import eval_mode, model_device, prediction_logits

TARGET_MODES = ("none", "random", "least_likely")
ATTACKS: dict[
    str, type[Attack]
] = {}  # method name -> attack class (filled by Attack.__init_subclass__)


class AttackResult(NamedTuple):
    """What every attack returns; tensors live on the input's device."""

    x_adv: Tensor  # [N, C, H, W] in [0, 1]
    success: Tensor  # [N] bool: pred != y (untargeted) or pred == target (targeted)
    pred: Tensor  # [N] class predicted on x_adv (the final re-check)
    target: Tensor | None  # [N] the target classes, or None for untargeted runs


def flat_norm(t: Tensor, p: float = 2.0) -> Tensor:
    """Per-example norm of a batch: [N, ...] -> [N]."""
    return t.flatten(1).norm(p=p, dim=1)


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Projection onto {x' : ||x' - x||_inf <= eps} ∩ [0, 1]^n (element-wise min/max, exact)."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def project_l2(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """delta <- delta * min(1, eps / ||delta||_2), then clip to [0, 1] (which only shrinks
    ||delta||)."""
    delta = x_adv - x
    factor = (eps / flat_norm(delta)).clamp(max=1.0)  # ||delta|| = 0 gives inf -> 1
    return (x + delta * factor.view(-1, *([1] * (x.dim() - 1)))).clamp(0.0, 1.0)


PROJECTIONS = {"linf": project_linf, "l2": project_l2}


def random_on_sphere(
    x: Tensor, radius: float, norm: str, generator: torch.Generator | None
) -> Tensor:
    """x + delta clipped to [0, 1], delta a random point at distance ``radius`` in the norm, as
    AutoAttack draws it: Linf radius * u / ||u||_inf with u ~ U(-1, 1)^n, L2 radius * z / ||z||_2
    with z ~ N(0, I)."""
    view = (-1, *([1] * (x.dim() - 1)))
    if norm == "linf":
        u = torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1
        scale = u.flatten(1).abs().amax(1).clamp_min(1e-12)
    else:
        u = torch.randn(x.shape, device=x.device, generator=generator)
        scale = flat_norm(u) + 1e-12
    return (x + radius * u / scale.view(view)).clamp(0.0, 1.0)


@dataclass
class AttackConfig:
    """Options every attack shares; an attack's config subclasses it with its own fields.

    ``name`` labels the attack in metric keys (a preset such as ``fgsm-0.05`` sets it);
    ``targeted`` is none | random | least_likely (those of ``target_modes``); ``seed`` seeds the
    attack's own generator (random targets, random starts), None = the global RNG. Validation
    lives in ``__post_init__`` and names the key (``attack.eps: ...``): it runs when Hydra's
    composed config is turned into the dataclass and when an attack is built in code.
    """

    target_modes: ClassVar[tuple[str, ...]] = TARGET_MODES

    name: str = ""
    targeted: str = "none"
    seed: int | None = 0

    def __post_init__(self) -> None:
        require(
            self.targeted in self.target_modes,
            "attack.targeted",
            f"{self.name or 'this attack'} supports {', '.join(self.target_modes)}; "
            f"got {self.targeted!r}",
        )

    def positive(self, *keys: str) -> None:
        for key in keys:
            value = getattr(self, key)
            require(value is not None and value > 0, f"attack.{key}", f"must be > 0, got {value}")


class Attack:
    """Base class. Call as ``attack(x, y)`` or ``attack(x, y, target=t)`` -> :class:`AttackResult`.

    Build with a config or with its fields as keywords: ``FGSM(model, FgsmConfig(eps=0.1))`` or
    ``FGSM(model, eps=0.1)``. The config (``config_type``, defined beside the attack) is the only
    place an option's default and valid range live; each of its fields is readable as an
    attribute of the attack (``attack.eps``). A subclass with a ``method`` name registers itself
    in :data:`ATTACKS`, so a new attack is one module (config + update rule) plus, for a paper
    preset, one YAML file in ``conf/attack/``.

    Arguments:
        model: module mapping [N, C, H, W] images in [0, 1] to logits [N, K] (see module doc).
        config: the attack's config; keyword ``params`` build one when it is None.
    """

    method: ClassVar[str] = ""
    config_type: ClassVar[type[AttackConfig]] = AttackConfig
    # False for an attack built from more than a model (C&W-wb needs a detector): it keeps its
    # method name (metric keys) but is no option of the ``attack`` group
    group_option: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.method and cls.__dict__.get("group_option", True):
            ATTACKS[cls.method] = cls

    def __init__(
        self, model: nn.Module, config: AttackConfig | None = None, /, **params: Any
    ) -> None:
        config = configured(self.config_type, config, params)
        if not config.name:
            config = replace(config, name=self.method)
        self.model = model
        self.config = config
        for f in fields(config):
            setattr(self, f.name, getattr(config, f.name))
        self._generators: dict[str, torch.Generator] = {}
        # the attack's cost: example-iterations run so far (each one forward and one backward
        # pass of one example), counted by the iterative attacks that report it
        self.passes = 0
        # every attack's cost, counted where the model is called (:meth:`counted`): examples
        # forwarded, and examples whose input gradient was back-propagated
        self.forwards = 0
        self.backwards = 0

    # ------------------------------------------------------------------ helpers for subclasses
    def counted(self, x: Tensor) -> Tensor:
        """``x`` about to go through the model: adds its examples to :attr:`forwards`, and when
        it carries a gradient, returns a view of it whose hook adds them to :attr:`backwards`
        each time a gradient flows back through this call (a view per call, so a tensor fed to
        the model several times, as in an expectation over transformations, counts each)."""
        self.forwards += len(x)
        if not x.requires_grad:
            return x
        n, view = len(x), x.view_as(x)

        def backward(grad: Tensor) -> None:
            self.backwards += n

        view.register_hook(backward)
        return view

    def logits(self, x: Tensor) -> Tensor:
        """Prediction logits [N, K]: ``model.predict_logits(x)`` if present, else ``model(x)``
        (counted: :meth:`counted`)."""
        return prediction_logits(self.model, self.counted(x))

    def answer(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The target's answer to the queries ``x``: (prediction logits [N, K], rejected [N]
        bool). A target with an ``answer`` method (a model behind its detector,
        :class:`robustctl.threat_models.deployed.DeployedSystem`) may reject a query; a bare
        model never does. Query-based attacks read their target through it, so a rejected query
        counts as a failed one (counted: :meth:`counted`)."""
        respond = getattr(self.model, "answer", None)
        if respond is None:
            logits = self.logits(x)
            return logits, torch.zeros(len(x), dtype=torch.bool, device=logits.device)
        return respond(self.counted(x))

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The attack's seeded generator on ``device`` (created once, then advanced), or None."""
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def ascent_grad(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """grad_x of the objective the attack ascends: CE(f(x), y), or -CE(f(x), t) when targeted.

        CE is summed over the batch, so each example's gradient is its own (batch-size free).
        """
        x = x.detach().requires_grad_(True)
        logits = self.logits(x)
        loss = (
            F.cross_entropy(logits, y, reduction="sum")
            if target is None
            else -F.cross_entropy(logits, target, reduction="sum")
        )
        (grad,) = torch.autograd.grad(loss, x)
        return grad

    @staticmethod
    def is_success(pred: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        return pred != y if target is None else pred == target

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Final projection applied by the base to whatever ``perturb`` returns: the box [0, 1]."""
        return x_adv.clamp(0.0, 1.0)

    def perturb(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """The method's update rule: returns a candidate batch (the base clips and re-checks)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ the driver
    def resolve_target(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor | None:
        if target is not None:
            return target.to(y.device, torch.long)
        if self.targeted == "none":
            return None
        with torch.no_grad():
            logits = self.logits(x)
        k = logits.shape[1]
        if self.targeted == "least_likely":
            return logits.argmin(1)
        if k < 2:
            raise ValueError(f"{self.method}: a random target needs at least 2 classes")
        offset = torch.randint(1, k, y.shape, device=y.device, generator=self.generator(y.device))
        return (y + offset) % k

    def __call__(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> AttackResult:
        if x.dim() < 2 or len(x) != len(y):
            raise ValueError(
                f"{self.method}: expected x [N, ...] and y [N], "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        home = x.device
        device = model_device(self.model, default=home)
        x = x.detach().to(device, torch.float32)
        y = y.detach().to(device, torch.long)
        with eval_mode(self.model):
            with torch.enable_grad():
                target = self.resolve_target(x, y, target)
                x_adv = self.project(self.perturb(x, y, target).detach(), x)
            with torch.no_grad():
                pred = self.logits(x_adv).argmax(1)
        success = self.is_success(pred, y, target)
        return AttackResult(
            x_adv.to(home),
            success.to(home),
            pred.to(home),
            None if target is None else target.to(home),
        )

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    def params(self) -> dict[str, object]:
        return asdict(self.config)


@dataclass
class BoundedAttackConfig(AttackConfig):
    """An attack with an eps-ball budget in the ``norm`` distance (pixel units)."""

    eps: float = 0.05
    norm: str = "linf"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.norm in PROJECTIONS,
            "attack.norm",
            f"must be one of {', '.join(PROJECTIONS)}; got {self.norm!r}",
        )
        require(
            self.eps > 0 and (self.norm == "l2" or self.eps <= 1),
            "attack.eps",
            f"must be > 0 (and <= 1 for linf), got {self.eps}",
        )


class BoundedAttack(Attack):
    """An attack whose perturbation the base projects onto ``||x' - x||_norm <= eps``."""

    config_type = BoundedAttackConfig

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return PROJECTIONS[self.norm](x_adv, x, self.eps)

    def with_eps(self, eps: float) -> BoundedAttack:
        """A copy of this attack with another eps (derived step sizes follow); shares the
        generator."""
        clone = copy.copy(self)
        clone.config = replace(self.config, eps=float(eps))
        clone.eps = clone.config.eps
        return clone

    def sweep(
        self,
        x: Tensor,
        y: Tensor,
        eps_list: list[float] | tuple[float, ...],
        target: Tensor | None = None,
    ) -> list[AttackResult]:
        """One result per eps (Foolbox-style batched epsilons)."""
        return [self.with_eps(eps)(x, y, target) for eps in eps_list]
