"""Schema of the ``threat_model`` group: which evaluation stages run, and how.

Stages (PDM Appendix D; ``docs/method.md``), implemented in :mod:`robustctl.threat_models`:
- ``graybox``: the attacker knows the model, not the detector: run ``attacks`` and score them with
  the detector (success rate, distortions, detection AUC), plus resiliency curves.
- ``whitebox``: the attacker also knows the detector: ``cw_wb`` through model + KDE.
- ``blackbox``: the attacker distils a proxy from the target's outputs, attacks proxy + its own
  KDE with ``cw_wb`` and transfers the examples.
- ``robust``: robust accuracy under an attack ensemble (``robust``: AutoAttack's versions), worst
  case per point, with the evaluator's flags.
Option ``graybox`` is :class:`ThreatModelConfig` itself (the paper's budgets); the presets
``whitebox``, ``blackbox``, ``robust``, ``all`` (the paper's three stages) and ``quick`` (small
budgets) are YAML files
in ``conf/threat_model/`` that extend it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustctl.attacks import attack_config
from robustctl.config.validation import require as _require
from robustctl.errors import ConfigError
from robustctl.evaluation.resiliency import RESILIENCY_EPS
from robustctl.evaluation.robust_accuracy import EnsembleConfig
from robustctl.metric_keys import WHITEBOX_ATTACKS
from robustctl.models import OPTIONS as MODEL_OPTIONS
from robustctl.threat_models.convergence import ConvergenceConfig
from robustctl.threat_models.cw_wb import CwWbConfig
from robustctl.threat_models.fmn_wb import FmnConfig
from robustctl.threat_models.stage import STAGES

TABLE2_ATTACKS = ["fgsm-0.05", "fgsm-0.1", "bim-0.05", "bim-0.1", "cw", "cw_hc", "jsma"]


DISTILL_MODES = ("soft", "hard")


BLACKBOX_KINDS = ("transfer", "query", "both")
QUERY_ATTACKS = ("square", "hsj")  # the query-based attacks: scores (Square), labels (HSJ)


@dataclass
class BlackboxConfig:
    """The black-box stage. ``kind``: ``transfer`` (PDM Appendix D: a proxy trained by
    distillation on the target's outputs, its architecture an option of the ``model`` group,
    soft targets at ``temperature`` or hard labels, an SGD budget; C&W-wb from the proxy),
    ``query`` (``query_attacks`` query the target behind its detector, which rejects at the
    threshold of false-positive rate ``fpr`` on clean validation images; each attack's budget is
    its ``attack`` option, overridden by ``threat_model.attack_params``; HopSkipJump starts from
    the nearest of ``start_pool`` training images the system answers with another class), or
    ``both``."""

    kind: str = "transfer"
    proxy_model: str = "resnet32"
    mode: str = "soft"  # soft (temperature) | hard (argmax labels)
    temperature: float = 4.0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    query_attacks: list[str] = field(default_factory=lambda: list(QUERY_ATTACKS))
    fpr: float = 0.05
    start_pool: int = 1000

    def __post_init__(self) -> None:
        _require(
            self.kind in BLACKBOX_KINDS,
            "threat_model.blackbox.kind",
            f"must be one of {', '.join(BLACKBOX_KINDS)}; got {self.kind!r}",
        )
        unknown = [a for a in self.query_attacks if a not in QUERY_ATTACKS]
        _require(
            not unknown and len(set(self.query_attacks)) == len(self.query_attacks) > 0,
            "threat_model.blackbox.query_attacks",
            f"must be distinct names out of {', '.join(QUERY_ATTACKS)}; "
            f"got {list(self.query_attacks)}",
        )
        _require(
            0 < self.fpr < 1, "threat_model.blackbox.fpr", f"must lie in (0, 1), got {self.fpr}"
        )
        _require(
            self.start_pool >= 1,
            "threat_model.blackbox.start_pool",
            f"must be >= 1, got {self.start_pool}",
        )

    def kinds(self) -> tuple[str, ...]:
        """The black-box kinds this config runs, in order."""
        return ("transfer", "query") if self.kind == "both" else (self.kind,)


@dataclass
class ThreatModelConfig:
    """Which stages run on which images, with which attacks and budgets (the paper's by default).

    ``num_samples`` test images (seeded subset by ``seed``; 0 = all) are attacked, ``batch_size``
    at a time; an AUC needs at least ``min_pairs`` (clean-correct, attack-succeeded) pairs, else
    the reason is logged. ``attacks`` are options of the ``attack`` group (PDM Table 2), with
    ``attack_params`` overriding their parameters per attack (e.g. ``{cw_hc: {steps: 100}}``);
    ``resiliency_attacks`` are swept over ``resiliency_eps`` (PDM Figure 3). ``whitebox`` sets
    C&W-wb (white-box and black-box stages), ``blackbox`` the proxy's distillation.
    """

    name: str = "graybox"
    stages: list[str] = field(default_factory=lambda: ["graybox"])
    num_samples: int = 500  # test images attacked (seeded subset); 0 = all
    batch_size: int = 256
    min_pairs: int = 10  # fewer (clean-correct, attack-succeeded) pairs -> no AUC, a reason
    attacks: list[str] = field(default_factory=lambda: list(TABLE2_ATTACKS))
    attack_params: dict[str, Any] = field(
        default_factory=dict
    )  # per-attack overrides, e.g. {cw_hc: {steps: 100}}
    resiliency_attacks: list[str] = field(default_factory=lambda: ["fgsm", "bim"])
    resiliency_eps: list[float] = field(default_factory=lambda: list(RESILIENCY_EPS))
    seed: int = 0
    # white-box sanity check when the convergence ladder is off (convergence.max_doublings=0):
    # C&W-wb rerun with twice the iterations on this many attacked images (0: off); it must not
    # succeed less often (robustctl.evaluation.sanity); with the ladder, its second rung is it
    sanity_samples: int = 16
    whitebox: CwWbConfig = field(default_factory=CwWbConfig)
    # the white-box stage's attacks (cw_wb, fmn_wb), each on a convergence ladder; fmn_wb takes
    # its own settings from fmn_wb and the detector-aware ones (threshold, starts, targets) from
    # whitebox
    whitebox_attacks: list[str] = field(default_factory=lambda: list(WHITEBOX_ATTACKS))
    fmn_wb: FmnConfig = field(default_factory=FmnConfig)
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)
    blackbox: BlackboxConfig = field(default_factory=BlackboxConfig)
    # the robust stage's attack ensemble (AutoAttack's versions), budget and norm
    robust: EnsembleConfig = field(default_factory=EnsembleConfig)

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        _require(
            not bad and len(self.stages) > 0,
            "threat_model.stages",
            f"must be a non-empty subset of {', '.join(STAGES)}; got {list(self.stages)}",
        )
        _require(
            self.num_samples >= 0,
            "threat_model.num_samples",
            f"must be >= 0 (0 = all), got {self.num_samples}",
        )
        _require(
            self.batch_size >= 1, "threat_model.batch_size", f"must be >= 1, got {self.batch_size}"
        )
        _require(
            self.min_pairs >= 2, "threat_model.min_pairs", f"must be >= 2, got {self.min_pairs}"
        )
        _require(
            all(0 < e <= 1 for e in self.resiliency_eps),
            "threat_model.resiliency_eps",
            f"must lie in (0, 1], got {list(self.resiliency_eps)}",
        )
        if not self.attacks and "graybox" in self.stages:
            raise ConfigError(
                "threat_model.attacks: the graybox stage needs at least one attack, got []",
                hint=f"list some, e.g. threat_model.attacks=[{TABLE2_ATTACKS[1]}], or leave "
                "graybox out of threat_model.stages",
            )
        for name in self.attacks:
            attack_config(name, key="threat_model.attacks")
        unknown = [a for a in self.whitebox_attacks if a not in WHITEBOX_ATTACKS]
        _require(
            not unknown and len(set(self.whitebox_attacks)) == len(self.whitebox_attacks) > 0,
            "threat_model.whitebox_attacks",
            f"must be distinct names out of {', '.join(WHITEBOX_ATTACKS)}; "
            f"got {list(self.whitebox_attacks)}",
        )
        capped = sorted(set(self.convergence.attack_max_doublings) - set(WHITEBOX_ATTACKS))
        _require(
            not capped,
            "threat_model.convergence.attack_max_doublings",
            f"names white-box attacks out of {', '.join(WHITEBOX_ATTACKS)}; got {capped}",
        )
        for name, params in self.attack_params.items():
            attack_config(name, params, key=f"threat_model.attack_params.{name}")
        bb = self.blackbox
        _require(
            bb.mode in DISTILL_MODES,
            "threat_model.blackbox.mode",
            f"must be soft or hard, got {bb.mode!r}",
        )
        _require(
            bb.temperature > 0,
            "threat_model.blackbox.temperature",
            f"must be > 0, got {bb.temperature}",
        )
        _require(
            bb.epochs >= 1 and bb.batch_size >= 1 and bb.lr > 0,
            "threat_model.blackbox.epochs",
            "epochs, batch_size must be >= 1 and lr > 0",
        )
        _require(
            bb.proxy_model in MODEL_OPTIONS,
            "threat_model.blackbox.proxy_model",
            f"must be a model option ({', '.join(MODEL_OPTIONS)}); got {bb.proxy_model!r}",
        )
