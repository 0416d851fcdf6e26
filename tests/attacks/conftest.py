"""Fixtures of the attack tests: a tiny ResNet-8 trained for a few seconds on the digits data.

The model is undefended and accurate (~98% on the 8x8 digits test split), so unbounded attacks
must reach ~100% success on it and bounded ones must behave as their formulas say; a wrong
attack fails these tests. Everything runs single-threaded on the CPU (the tensors are tiny;
extra threads only add contention on a shared 2-core machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

from robustctl.data import DatasetConfig
from robustctl.data.digits import load_digits_split
from robustctl.models import ResNet


@dataclass
class Trained:
    model: ResNet
    x: Tensor  # 48 test images the model classifies correctly, [48, 1, 8, 8]
    y: Tensor
    accuracy: float  # on the whole digits test split
    class_names: tuple[str, ...]
    weights: dict[str, Tensor] = field(
        default_factory=dict
    )  # a copy of the state right after training


def train_tiny(seed: int = 0, epochs: int = 6) -> Trained:
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


@pytest.fixture(scope="package", autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def trained(_single_thread) -> Trained:
    return train_tiny()


@pytest.fixture(scope="package")
def reference(trained: Trained) -> ResNet:
    """A separately built copy of the trained model, loaded from the weights saved right after
    training and never attacked: the judge of how an adversarial batch is classified. Re-predicting
    with the attacked model is how ``Attack.__call__`` itself computes ``pred`` and ``success``, so
    it agrees with a wrong mask whenever an attack left that model changed (weights, batch-norm
    statistics, mode); this copy is out of every attack's reach."""
    twin = ResNet(depth=8, num_classes=10, in_channels=1, width=8)
    twin.load_state_dict(trained.weights)
    return twin.eval()


@pytest.fixture(scope="package")
def rce_twin(trained: Trained) -> ResNet:
    """An RCE-style copy (logit_sign = -1, head negated): same predictions, opposite raw
    logits Z."""
    twin = ResNet(depth=8, num_classes=10, in_channels=1, width=8, logit_sign=-1.0)
    state = {k: v for k, v in trained.model.state_dict().items() if k != "logit_sign"}
    twin.load_state_dict(state, strict=False)
    with torch.no_grad():
        twin.head.weight.neg_()
        twin.head.bias.neg_()
    return twin.eval()
