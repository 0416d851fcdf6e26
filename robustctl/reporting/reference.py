"""The PDM paper's reference numbers (PDM Tables 1-4) as data, in the units our runs log.

Every entry is keyed by ``(dataset, loss, metric)`` where ``metric`` is the MLflow key our runs log
for the same quantity, so the attack (and the threat model) is part of the key:
``("mnist", "pdm", "graybox/fgsm-0.05/auc") -> 0.988``. Dataset and loss names are the config
options (``dataset=mnist``, ``loss=siamese_rvl``); the paper's "Baseline" column is ``ce``.

Units follow our metrics, not the paper's typesetting: Table 1 accuracies are fractions
(the paper's 99.33 % is 0.9933); AUCs, distortions and DBI are as printed.

- Table 1, clean test accuracy: CE / RCE / Siamese+RVL / PDM on CIFAR-10 and MNIST.
- Table 2, gray-box detection AUC of the KDE detector: Baseline / RCE / PDM per attack.
- Table 3, white-box C&W-wb mean normalized distortion L2/sqrt(n): Baseline / RCE / PDM.
- Table 4, black-box (distilled proxy, transferred C&W-wb) detection AUC: Baseline / RCE / PDM.
- Figure 2, DBI of CIFAR-10 embeddings: Siamese+RVL combined 0.23 (RVL alone 0.28 and Siamese
  alone 0.32 have no loss option of their own, so they are kept in :data:`FIGURE2_DBI` only).

fashion_mnist, digits and synthetic have no reference: :func:`reference` returns None.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from robustctl import metric_keys as keys

__all__ = [
    "FIGURE2_DBI",
    "PAPER_ATTACKS",
    "PAPER_DATASETS",
    "PAPER_LOSSES",
    "REFERENCE",
    "reference",
]

PAPER_DATASETS: tuple[str, ...] = ("mnist", "cifar10")
PAPER_LOSSES: tuple[str, ...] = ("ce", "rce", "siamese_rvl", "pdm")
# Table 2's rows, in the paper's order (our attack option names)
PAPER_ATTACKS: tuple[str, ...] = (
    "fgsm-0.05",
    "fgsm-0.1",
    "bim-0.05",
    "bim-0.1",
    "cw",
    "cw_hc",
    "jsma",
)

# Table 1: clean accuracy (fraction), CE / RCE / Siamese+RVL / PDM
_TABLE1 = {
    "cifar10": (0.9362, 0.933, 0.9437, 0.9381),
    "mnist": (0.9933, 0.9932, 0.9937, 0.9952),
}

# Table 2: gray-box detection AUC, Baseline(ce) / RCE / PDM
_TABLE2 = {
    "mnist": {
        "fgsm-0.05": (0.981, 0.983, 0.988),
        "fgsm-0.1": (0.988, 0.99, 0.995),
        "bim-0.05": (0.983, 0.967, 0.987),
        "bim-0.1": (0.945, 0.92, 0.99),
        "cw": (0.994, 1.0, 1.0),
        "cw_hc": (0.88, 0.98, 1.0),
        "jsma": (0.995, 1.0, 1.0),
    },
    "cifar10": {
        "fgsm-0.05": (0.958, 0.898, 0.967),
        "fgsm-0.1": (0.971, 0.926, 0.983),
        "bim-0.05": (1.0, 0.99, 0.95),
        "bim-0.1": (1.0, 0.996, 0.962),
        "cw": (0.874, 0.918, 0.933),
        "cw_hc": (0.637, 0.94, 1.0),
        "jsma": (0.952, 0.96, 0.973),
    },
}

# Table 3: white-box C&W-wb mean distortion, Baseline(ce) / RCE / PDM
_TABLE3 = {"mnist": (0.087, 0.104, 0.162), "cifar10": (0.008, 0.019, 0.026)}

# Table 4: black-box detection AUC, Baseline(ce) / RCE / PDM
_TABLE4 = {"mnist": (0.88, 0.94, 0.99), "cifar10": (0.93, 0.933, 0.952)}

# Figure 2: Davies-Bouldin index of CIFAR-10 test embeddings per training objective
FIGURE2_DBI: Mapping[str, float] = MappingProxyType(
    {"rvl": 0.28, "siamese": 0.32, "siamese_rvl": 0.23}
)

_DETECTION_LOSSES = ("ce", "rce", "pdm")


def _build() -> dict[tuple[str, str, str], float]:
    ref: dict[tuple[str, str, str], float] = {}
    for dataset, values in _TABLE1.items():
        for loss, value in zip(PAPER_LOSSES, values, strict=True):
            ref[(dataset, loss, keys.CLEAN_ACCURACY)] = value
    for dataset, rows in _TABLE2.items():
        for attack, values in rows.items():
            for loss, value in zip(_DETECTION_LOSSES, values, strict=True):
                ref[(dataset, loss, keys.graybox(attack, keys.AUC))] = value
    for dataset, values in _TABLE3.items():
        for loss, value in zip(_DETECTION_LOSSES, values, strict=True):
            ref[(dataset, loss, keys.whitebox("distortion"))] = value
    for dataset, values in _TABLE4.items():
        for loss, value in zip(_DETECTION_LOSSES, values, strict=True):
            ref[(dataset, loss, keys.blackbox(keys.AUC))] = value
    ref[("cifar10", "siamese_rvl", keys.EMBED_DBI)] = FIGURE2_DBI["siamese_rvl"]
    return ref


REFERENCE: Mapping[tuple[str, str, str], float] = MappingProxyType(_build())


def reference(dataset: str, loss: str, metric: str) -> float | None:
    """The paper's number for ``metric`` (an MLflow key) of ``loss`` on ``dataset``, or None."""
    return REFERENCE.get((dataset, loss, metric))
