"""One tiny target model for every threat-model test: a ResNet-20 trained for 4 epochs on the
synthetic data, with the KDE defense and all three stages on small budgets."""

from __future__ import annotations

import pytest

from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.training import fit

BUDGETS = [
    "threat_model.num_samples=40",
    "threat_model.min_pairs=5",
    "threat_model.whitebox.steps=150",
    "threat_model.whitebox.lr=0.05",
    "threat_model.fmn_wb.steps=50",
    "threat_model.convergence.max_doublings=1",
    "threat_model.blackbox.epochs=2",
    "threat_model.blackbox.proxy_model=resnet20",
    "threat_model.attacks=[fgsm-0.1]",
    "threat_model.resiliency_attacks=[fgsm]",
    "threat_model.resiliency_eps=[0.1]",
]


def train_target(work, chash: str, *extra: str):
    """(cfg, trained model, data): the package's target settings (plus ``extra`` overrides)
    trained under ``work``."""
    _, cfg = compose(
        [
            "dataset=synthetic",
            "dataset.num_samples=400",
            "trainer.epochs=4",
            "trainer.batch_size=32",
            "trainer.device=cpu",
            "defense=kde",
            "threat_model=all",
            *BUDGETS,
            *extra,
            f"work_dir={work}",
        ]
    )
    data = load_dataset(cfg.dataset, cfg.work_dir)
    return cfg, fit(cfg, data, chash=chash).model, data


@pytest.fixture(scope="package")
def target(tmp_path_factory):
    """(cfg, trained model, data)."""
    return train_target(tmp_path_factory.mktemp("threat_models"), "threat_models")
