"""Shared fixtures: tiny, seeded settings that train in about a second on 2 CPU cores, and the
one tiny trained digits model (:func:`tiny_digits_model`) every test that needs it shares."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests run only where CUDA is available (``make test-gpu`` on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu test: no CUDA device on this machine (make test-gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's MLflow server or writes outside its tmp folder."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ROBUSTCTL_FAULT_KILL_AT_STEP", raising=False)
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")
    yield


def tiny_overrides(work_dir) -> list[str]:
    """Overrides for a ~1 s training run on the synthetic dataset, stored under ``work_dir``."""
    return [
        "dataset=synthetic",
        "dataset.num_samples=240",
        "trainer.epochs=2",
        "trainer.batch_size=32",
        "trainer.device=cpu",
        "trainer.eval_batch_size=64",
        "defense=none",
        "threat_model=none",
        f"work_dir={work_dir}",
    ]


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    """:func:`tiny_overrides` under tmp_path."""
    return tiny_overrides(tmp_path)


@dataclass
class Trained:
    """The tiny ResNet-8 trained on the digits data, with the test images it classifies right."""

    model: nn.Module
    x: Tensor  # 48 test images the model classifies correctly, [48, 1, 8, 8]
    y: Tensor
    accuracy: float  # on the whole digits test split
    class_names: tuple[str, ...]
    weights: dict[str, Tensor] = field(
        default_factory=dict
    )  # a copy of the state right after training


def train_tiny(seed: int = 0, epochs: int = 6) -> Trained:
    """A ResNet-8 (width 8) trained with Adam on the 8x8 digits: undefended and accurate (~98% on
    the test split), so unbounded attacks must reach ~100% success on it."""
    from robustctl.data import DatasetConfig
    from robustctl.data.digits import load_digits_split
    from robustctl.models import ResNet

    raw = load_digits_split(DatasetConfig(), ".")
    torch.manual_seed(seed)
    model = ResNet(depth=8, num_classes=10, in_channels=1, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(raw.y_train), generator=g)
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(
                model.predict_logits(raw.x_train[idx]), raw.y_train[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model.predict_logits(raw.x_test).argmax(1)
    correct = pred == raw.y_test
    weights = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return Trained(
        model,
        raw.x_test[correct][:48].contiguous(),
        raw.y_test[correct][:48].contiguous(),
        correct.float().mean().item(),
        raw.class_names,
        weights,
    )


@pytest.fixture(scope="session")
def tiny_digits_model() -> Trained:
    """The tiny digits model, trained once per test session (single-threaded, so it is the same
    model whatever the machine's core count). Never hand it to a test directly: use
    :func:`fresh_copy` (the packages' ``trained`` fixtures do), so no test sees what another one
    did to it (mode, batch-norm statistics, gradients, weights)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny()
    finally:
        torch.set_num_threads(threads)


def fresh_copy(trained: Trained) -> Trained:
    """A deep copy of ``trained`` (model, images, labels, weights): the state right after
    training, whatever earlier tests did to their copies."""
    return copy.deepcopy(trained)


@pytest.fixture(scope="session")
def digits_test() -> tuple[Tensor, Tensor]:
    """The first 100 images of the digits test split (a few the tiny model misclassifies
    included: every implementation compared on them counts those as not robust)."""
    from robustctl.data import DatasetConfig
    from robustctl.data.digits import load_digits_split

    raw = load_digits_split(DatasetConfig(), ".")
    return raw.x_test[:100], raw.y_test[:100]


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of (x, y) that ``model`` classifies correctly through its prediction view."""
    with torch.no_grad():
        return (model.predict_logits(x).argmax(1) == y).float().mean().item()


class Quantized(nn.Module):
    """A negative control for gradient attacks: rounds its input to 4 levels before ``model``'s
    prediction view, so the input gradient is zero almost everywhere."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.predict_logits((x * 3).round() / 3)
